"""The synops loss: one term to add to the task loss to train a network towards fewer synaptic operations.

Why only the *network-driven* synops by default
-----------------------------------------------
The layer fed directly by the data receives the data's spikes: its synops are
those spikes times its fan-out, and training cannot lower them (only zero
weights could). On a small digits network they are often more than half of
the total. The sinabs tutorial's rule ``target = 0.5 * initial synops`` then
asks for something the network can only approach by silencing every hidden
neuron, and accuracy collapses (measured on a 64-128-128-10 snntorch network:
94% -> 35% with a squared-relative-error term of weight 0.3).

So, by default (``layers="driven"``), :class:`SynOpsLoss` regularises only the
layers whose input comes from the network, not from the data
(:meth:`SynOpsCounter.data_fed_layers` tells them apart), and ``fraction=0.5``
means half of the *network-driven* synops measured on the first batch(es):
a target the network can reach. Targets that cannot be reached, or that lie
above the current synops (so the loss would push synops *up*), are named in
an :class:`UnreachableTargetWarning` once the first batches are measured.
``layers="all"`` restores the tutorial's behaviour.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Union

import torch
from torch import Tensor

from .counter import SynOpsCounter
from ._validate import ArgumentTypeError, check_int
from .errors import LossScaleWarning, SynOpsWarning, UnreachableTargetWarning
from .energy import prices_neurons
from .schedules import Iterative, Schedule, as_schedule, plain_number

__all__ = ["SynOpsLoss", "EnergyLoss", "UnreachableTargetWarning", "LossScaleWarning", "SHAPES"]

#: The loss shapes, as functions of the relative error ``r = (s - t) / t``.
SHAPES = ("squared", "hinge", "squared_hinge", "l1")

TargetLike = Union[float, int, Schedule]


@dataclass
class _Term:
    label: str
    layers: Optional[List[str]]  # None: resolved per call from `layers=` ("driven" / "all")
    schedule: Schedule  # absolute target, fraction of the initial synops, or budget (synops/s)
    kind: str  # "target" | "fraction" | "budget"
    initial_sum: Optional[Tensor] = None  # detached running sum over the calibration batches, x their samples
    initial_samples: int = 0  # the samples of those batches (the initial synops are a per-sample average)
    initial: Optional[float] = None  # frozen after calibration (fraction terms)


def _positive(name: str, value: Any, unit: str = "synops") -> None:
    if isinstance(value, Schedule):
        return
    number = plain_number(value)
    if number is None:
        raise ArgumentTypeError(f"{name} must be a number or a synopsloss.schedules.Schedule, got {type(value).__name__}"
                                + (" (pass float(value))" if hasattr(value, "item") else ""))
    value = number
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{name} must be > 0, got {value!r}: a target of zero or less can only be approached "
            f"by silencing the network. Give a positive number of {unit} per sample (or fraction=)."
        )


def _active_group(group: Any) -> Any:
    """The process group that ``group`` (``"world"``, a group or ``None``) names when ``torch.distributed`` runs
    with more than one process in it (``None``: the default group), else ``False``."""
    import torch.distributed as dist

    if group is None or not (dist.is_available() and dist.is_initialized()):
        return False
    pg = None if isinstance(group, str) else group
    return pg if dist.get_world_size(pg) > 1 else False


def _over_ranks(total: Tensor, samples: int, group: Any = "world") -> float:
    """``total / samples`` summed over the processes of ``group`` (``"world"``: the default group, when
    ``torch.distributed`` is initialised; DDP, accelerate: every rank calibrates on the same call), else this
    process's own (``group=None``)."""
    import torch.distributed as dist

    pg = _active_group(group)
    if pg is False:
        return float(total / samples)
    both = torch.stack([total.detach().double(), torch.full_like(total.detach().double(), float(samples))])
    dist.all_reduce(both, group=pg)
    return float(both[0] / both[1])


def _sum_in_group(values: Tensor, group: Any) -> Tensor:
    """``values`` (CPU float64) summed over the processes of ``group`` (on the GPU for NCCL), returned on the CPU."""
    import torch.distributed as dist

    device = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl"
              else torch.device("cpu"))
    out = values.to(device).clone()
    dist.all_reduce(out, group=group)
    return out.cpu()


class SynOpsLoss:
    """A 0-dim tensor that grows as the counted synops leave their target.

    Call it after the forward pass of a batch (all time steps) and add it to
    the task loss. With ``s`` the synops per sample of the regularised layers
    and ``t`` the target, ``r = (s - t) / t`` and the term is ``weight * f(r)``
    with ``f`` one of

    * ``"squared"`` (default): ``r**2``, the sinabs tutorial's term (Sorbaro et
      al. 2020); it also pulls synops *up* to the target, so they settle on it;
    * ``"hinge"``: ``max(0, r)``, only going above the target costs (a ceiling);
    * ``"squared_hinge"``: ``max(0, r)**2``;
    * ``"l1"``: ``|r|``.

    Being relative, every shape is independent of the network's size.

    Parameters
    ----------
    counter
        The :class:`~synopsloss.SynOpsCounter` attached to the model.
    target
        Synops per sample of the regularised layers: a number, a
        :class:`~synopsloss.schedules.Schedule`, or a dict ``{layer name:
        number or schedule}`` for one term per layer (summed).
    fraction
        Instead of ``target``: the target as a fraction of the synops measured
        on the first ``calibration_batches`` calls (a number, a schedule, e.g.
        ``Linear(1.0, 0.5, steps=...)`` to lower the target gradually, or a
        dict per layer). Until calibration ends, the running mean is used.
    budget
        Instead of ``target``: ``{layer name: synops per second}``, e.g. a
        chip's limit; needs ``dt`` (seconds per time step). The target per
        sample is ``budget * dt * T``, with ``T`` the time steps the layer ran
        in the batch (:meth:`SynOpsCounter.time_steps`: time steps, never
        tokens; or ``time_steps=``). Default shape
        ``"hinge"``.
    dt, time_steps
        Time step in seconds, and (optional) number of time steps, for ``budget``.
    shape
        One of :data:`SHAPES`; default ``"squared"`` (``"hinge"`` with ``budget``).
    weight
        The factor lambda (a number >= 0 or a schedule, e.g. ``Warmup``).
    layers
        Which layers a scalar ``target``/``fraction`` covers: ``"driven"``
        (default: every counted layer except those fed directly by the data,
        see the module docstring), ``"all"``, or a list of layer names.
    calibration_batches
        Number of first training calls (made with gradients on) whose synops define the initial synops
        (``fraction``: their per-sample average over those batches' samples); a call without gradients (a
        validation pass) reads the running target and calibrates nothing.
    quantile
        Regularise a quantile of the batch's *per-sample* synops instead of
        their mean: ``quantile=0.95`` with ``target=B`` asks that 95% of the
        samples stay under ``B`` synops (a chip's per-inference event budget is
        broken by the hard inputs, not by the mean). Needs
        ``SynOpsCounter(model, per_sample=True)``; differentiable through
        ``torch.quantile``.
    calibration_group
        Under ``torch.distributed`` (DDP, accelerate), the processes whose calibration batches ``fraction=``
        averages over: ``"world"`` (default: every rank, when a process group is initialised; one
        ``all_reduce`` at the last calibration call, which every rank of the group must make), a process
        group, or ``None`` (this process only: ranks that train separate models).

    Raises
    ------
    ValueError
        A target, fraction or budget <= 0; an unknown layer name (the message
        lists the counted layers); a bad shape; ``budget`` without ``dt``.
    RuntimeError
        When called before any forward pass since ``counter.reset()``.

    Example
    -------
    >>> import torch, synopsloss as sl
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> counter = sl.SynOpsCounter(net)
    >>> loss_fn = sl.SynOpsLoss(counter, fraction=0.5)   # half the initial network-driven synops
    >>> _ = net(torch.ones(2, 4))
    >>> loss_fn()   # synops are twice the target: r = 1
    tensor(1., grad_fn=<MulBackward0>)
    """

    #: what the loss regularises, per sample (messages, :meth:`last`)
    _unit = "synops"

    @property
    def _name(self) -> str:
        return type(self).__name__

    def __init__(
        self,
        counter: SynOpsCounter,
        target: Union[TargetLike, Mapping[str, TargetLike], None] = None,
        *,
        fraction: Union[TargetLike, Mapping[str, TargetLike], None] = None,
        budget: Optional[Mapping[str, TargetLike]] = None,
        dt: Optional[float] = None,
        time_steps: Optional[int] = None,
        shape: Optional[str] = None,
        weight: Union[float, Schedule] = 1.0,
        layers: Union[str, Sequence[str]] = "driven",
        calibration_batches: int = 1,
        quantile: Optional[float] = None,
        calibration_group: Any = "world",
    ) -> None:
        if not isinstance(counter, SynOpsCounter):
            raise TypeError(f"SynOpsLoss expects a SynOpsCounter, got {type(counter).__name__}")
        given = [n for n, v in (("target", target), ("fraction", fraction), ("budget", budget)) if v is not None]
        if len(given) != 1:
            raise ValueError(
                "SynOpsLoss needs exactly one of target= (synops per sample), fraction= (of the initial synops) "
                f"or budget= (synops per second per layer, with dt=); got {given or 'none'}"
            )
        kind = given[0]
        spec = {"target": target, "fraction": fraction, "budget": budget}[kind]
        if shape is None:
            shape = "hinge" if kind == "budget" else "squared"
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
        check_int("calibration_batches", calibration_batches, minimum=1)
        if isinstance(calibration_group, str) and calibration_group != "world":
            raise ValueError(f"calibration_group must be 'world', a process group or None, got {calibration_group!r}")
        self.calibration_group = calibration_group
        if isinstance(weight, Schedule):
            self.weight = weight
        else:
            number = plain_number(weight)  # (a NumPy scalar too)
            if number is None:
                raise ArgumentTypeError(f"weight must be a number >= 0 or a Schedule, got {weight!r}")
            weight = number
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"weight must be a number >= 0 or a Schedule, got {weight!r}")
            self.weight = as_schedule(weight, "weight")
        if kind == "budget":
            if not isinstance(budget, Mapping):
                raise ArgumentTypeError("budget= must be a dict {layer name: synops per second}")
            why = f"budget= needs dt=, the duration of one time step in seconds (> 0), got {dt!r}"
            if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float))):
                raise ArgumentTypeError(why)
            if dt is None or not (0 < dt < math.inf):
                raise ValueError(why)
        check_int("time_steps", time_steps, minimum=1, optional=True)

        if quantile is not None:
            if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile <= 1:
                raise ValueError(f"quantile must be a number in (0, 1] (0.95: the 95th percentile of the "
                                 f"batch's per-sample synops), got {quantile!r}")
            if not counter.per_sample_counts:
                raise ValueError("quantile= regularises a quantile of per-sample synops: create the counter "
                                 "with SynOpsCounter(model, per_sample=True)")
        self.quantile = None if quantile is None else float(quantile)
        self._unsampled: Set[str] = set()  # layers of the last batch with synops but no per-sample values
        self._training_call = True  # the last call was made with gradients on (it calibrates)
        self.counter = counter
        self.shape = shape
        self.dt = None if dt is None else float(dt)
        self.time_steps = time_steps
        self.calibration_batches = calibration_batches
        self.last_step = 0
        self._calls = 0
        self._last_batch: Optional[int] = None  # the counter's batch_index at the last training call
        self._repeat = False
        self._warned: set = set()
        self._last: Optional[Dict[str, Any]] = None
        #: batches without any loss.step() after which moving schedules warn
        self.unstepped_warning_calls = 100
        #: the task-loss scale the first term is compared with when no ``task_loss`` is passed
        self.typical_task_loss = 1.0

        known = counter.layer_names
        if isinstance(spec, Mapping):
            if not spec:
                raise ValueError(f"{kind}= is an empty dict; name at least one layer of {known}")
            self._check_names(list(spec), kind)
            if layers != "driven":
                raise ValueError(f"layers= applies to a scalar {kind}; a dict {kind}= already names its layers")
            self.layers: Union[str, List[str]] = list(spec)
            self._terms = []
            for name, value in spec.items():
                _positive(f"{kind}[{name!r}]", value, self._unit)
                self._terms.append(_Term(name, [name], as_schedule(value, f"{kind}[{name!r}]"), kind))
        else:
            _positive(kind, spec, self._unit)
            if isinstance(layers, str):
                if layers not in ("driven", "all"):
                    raise ValueError(f"layers must be 'driven', 'all' or a list of layer names, got {layers!r}")
                self.layers = layers
                names: Optional[List[str]] = None
                label = layers
            else:
                if not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers):
                    raise TypeError(f"layers must be 'driven', 'all' or a list of layer names (str), got {layers!r}; "
                                    f"layers: {known}")
                names = list(layers)
                if not names:
                    raise ValueError(f"layers= is empty; name at least one layer of {known}")
                self._check_names(names, "layers")
                self.layers = names
                label = "+".join(names)
            self._terms = [_Term(label, names, as_schedule(spec, kind), kind)]
        # a schedule shared by several terms is stepped once
        for term in self._terms:
            if isinstance(term.schedule, Iterative) and term.kind != "target":
                raise ValueError(f"{self._name}: an Iterative schedule sets absolute targets; pass it as target=, "
                                 f"not {term.kind}=")
        self._schedules: List[Schedule] = []
        for sched in [self.weight] + [t.schedule for t in self._terms]:
            if all(sched is not s for s in self._schedules):
                self._schedules.append(sched)

    # ------------------------------------------------------------------ helpers

    def _check_names(self, names: List[str], what: str) -> None:
        known = self.counter.layer_names
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{self._name}: {what} names layer(s) {twice} more than once; each layer's synops would "
                             "be counted that many times. Name each layer once.")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"{self._name}: {what} names layer(s) {unknown} that the counter does not count; "
                f"counted layers: {known}"
            )

    def _warn(self, key: str, message: str, category: type = None) -> None:  # type: ignore[assignment]
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, category or UnreachableTargetWarning, stacklevel=4)

    def _resolve(self, term: _Term, per_layer: Dict[str, Tensor], fed: List[str]) -> List[str]:
        if term.layers is not None:
            missing = [n for n in term.layers if n not in per_layer]
            if missing:  # (EnergyLoss: a module of the model that the table gives no energy, a ReLU or a Dropout)
                raise ValueError(
                    f"{self._name}: layer(s) {missing} have no {'energy' if self._unit == 'J' else 'synops'} in this "
                    f"batch's table (no synapses, and no neurons that the counter prices): name layers among "
                    f"{list(per_layer)}")
            return term.layers
        if self.layers == "all":
            return list(per_layer)
        driven = [n for n in per_layer if n not in fed]
        if not driven:
            raise ValueError(
                f"{self._name}: every counted layer ({list(per_layer)}) is fed directly by the data, so training "
                "cannot lower their synops (only zero weights could). Pass layers='all' to regularise them anyway."
            )
        return driven

    def _time_steps(self, name: str) -> float:
        if self.time_steps is not None:
            return float(self.time_steps)
        return self.counter.time_steps(name)

    # ------------------------------------------------------------------ the loss

    def _measure(self) -> Dict[str, Tensor]:
        """The regularised quantity per layer for the batch (``{layer: 0-dim tensor}``, differentiable).

        :class:`SynOpsLoss`: ``counter.synops(by_layer=True)``, synops per sample.
        """
        if self.quantile is not None:
            flat = self._synops()  # the checks (no forward pass, NaN / inf) and their messages
            per = self.counter.per_sample(by_layer=True)
            missing = [n for n in flat if n not in per]
            # layers with synops but no per-sample values (recurrent layers, products without batch dims): a term that
            # covers one is refused when the loss is computed; layers that did not run are 0 for every sample
            self._unsampled = {n for n in missing if bool(flat[n].detach() != 0)}
            samples = len(next(iter(per.values()))) if per else 1
            for n in missing:
                per[n] = flat[n].detach().new_zeros(samples)
            return per
        return self._synops()

    def _synops(self) -> Dict[str, Tensor]:
        """``counter.synops(by_layer=True)``, checked: no forward pass, NaN or inf raise clear errors."""
        try:
            per_layer = self.counter.synops(by_layer=True)
        except RuntimeError as err:
            if "before any forward pass" not in str(err):
                raise  # (the counter's own message: a detached counter, a forward that raised, ...)
            raise RuntimeError(
                f"{self._name} was called before any forward pass since counter.reset(): run the model on the "
                "batch (every time step) first, then compute the loss"
            ) from err
        if self.counter.check_finite and per_layer:
            values = list(per_layer.values())
            total = values[0].detach()
            for v in values[1:]:
                total = total + v.detach().to(total.device)
            if not bool(torch.isfinite(total)):  # one sync per call, as counter.synops()
                self.counter.synops()  # raises the counter's FloatingPointError naming the layers
                raise FloatingPointError(
                    f"synopsloss: NaN or inf in the synops of layer(s) "
                    f"{[n for n, v in per_layer.items() if not bool(torch.isfinite(v.detach()))]} since the last "
                    "reset(); the synops are undefined. Check the data and the layers before them "
                    "(torch.autograd.set_detect_anomaly can help)."
                )
        return per_layer

    def __call__(self, task_loss: Union[Tensor, float, None] = None) -> Tensor:
        """The loss for the batch counted since the last ``counter.reset()`` (0-dim, differentiable).

        Parameters
        ----------
        task_loss
            Optional: the batch's task loss. While calibrating, a first term
            more than 100x larger (100x :attr:`typical_task_loss` when not
            given) raises a :class:`LossScaleWarning`.

        Raises
        ------
        RuntimeError
            Before any forward pass since ``counter.reset()``.
        FloatingPointError
            When an input of a counted layer held NaN or inf (the message of
            ``counter.synops()``; with the counter's ``check_finite=True``).
        """
        per_layer = self._measure()
        # per-sample values ([samples], quantile=) are checked and reported by their mean over the batch
        means = {n: (v.mean() if v.dim() else v) for n, v in per_layer.items()}
        fed = self.counter.data_fed_layers(accumulated=False)
        calibrating = self._calls < self.calibration_batches
        # training calls (gradients on) calibrate; a call without (a validation pass) reads the running target.
        # A second call in the same batch (the loss read once to log it, once to train) counts that batch once
        self._training_call = torch.is_grad_enabled()
        batch = self.counter.batch_index
        self._repeat = self._training_call and batch == self._last_batch
        if self._training_call and not self._repeat:
            self._calls += 1
            self._last_batch = batch
        self._check_stepped()
        weight = self.weight.value
        if weight < 0:
            raise ValueError(f"{self._name}: the weight schedule gave {weight} < 0 at step {self.last_step}; a loss "
                             "weight must stay >= 0: end the schedule at 0 or above (e.g. "
                             "sl.schedules.Linear(1.0, 0.0, steps=N))")
        total: Optional[Tensor] = None
        last: Dict[str, Any] = {}
        for term in self._terms:
            names = self._resolve(term, per_layer, fed)
            unsampled = [n for n in names if n in self._unsampled]
            if unsampled:
                raise ValueError(
                    f"{self._name}(quantile=): layer(s) {unsampled} have synops but no per-sample values (recurrent "
                    "layers, and activation products without batch dims, are counted per batch, not per sample), so "
                    "the quantile would "
                    "leave them out. Name the layers the quantile acts on (target={layer: ...}), or drop quantile= "
                    "(the batch mean covers every layer).")
            s = per_layer[names[0]]
            for n in names[1:]:
                s = s + per_layer[n].to(s.device)
            if s.dim():  # quantile=: per-sample synops [samples] -> their quantile over the batch
                s = torch.quantile(s, self.quantile)
            if isinstance(term.schedule, Iterative) and self._training_call and not self._repeat:  # training batches set its targets
                term.schedule.observe(s.detach(), samples=self.counter.samples)
            t = self._target(term, s, names, calibrating)
            r = (s - t) / t
            if self.shape == "squared":
                f = r * r
            elif self.shape == "hinge":
                f = torch.relu(r)
            elif self.shape == "squared_hinge":
                f = torch.relu(r) ** 2
            else:
                f = r.abs()
            total = f if total is None else total + f
            last[term.label] = (names, s.detach(), t, f.detach())
            self._check_gradient(names, means, fed)
            if calibrating and self._training_call and not self._repeat and self._calls == self.calibration_batches:
                self._check_reachable(term, names, means, fed, t)
        assert total is not None
        out = (total * weight).to(torch.get_default_dtype())
        self._last = {"terms": last, "per_layer": {n: v.detach() for n, v in means.items()},
                      "loss": out.detach(), "weight": weight}
        if calibrating:
            self._check_scale(total.detach(), task_loss)
        return out

    def _check_scale(self, unweighted: Tensor, task_loss: Union[Tensor, float, None]) -> None:
        """While calibrating: warn once when the first term dwarfs the task loss (100x)."""
        w = self.weight.value
        for k in (10, 100, 1000, 10000):  # a warm-up weight that starts at 0: the weight it reaches
            if w > 0:
                break
            w = self.weight.at(self.last_step + k)
        first = float(unweighted) * w
        if task_loss is not None and not (isinstance(task_loss, (int, float)) and not isinstance(task_loss, bool)
                                          or isinstance(task_loss, Tensor) and task_loss.numel() == 1):
            raise TypeError(f"{self._name}(task_loss=) takes the task loss of the batch (a number or a one-element "
                            f"tensor), got {type(task_loss).__name__}")
        ref = self.typical_task_loss if task_loss is None else abs(float(task_loss))
        if not first > 100 * ref:
            return
        kinds = {t.kind for t in self._terms}
        hint = ""
        if "target" in kinds:
            hint = (" target= is an absolute number of " + self._unit + " per sample, not a fraction: for "
                    "a fraction of the measured value pass fraction= instead (e.g. fraction=0.5).")
        elif "fraction" in kinds:
            hint = " A small fraction= asks for a large relative cut: lower it gradually (a Linear schedule)."
        what = "the task loss" if task_loss is not None else "a typical task loss (loss.typical_task_loss)"
        self._warn(
            "scale",
            f"{self._name}: the first loss term is {first:.6g} (weight {w:g}), more than 100x {what} ({ref:.4g}): "
            f"it will dominate training and can silence the network in a few steps.{hint} Lower weight= or use "
            f"shape='hinge'. What is regularised and its target: loss.last().",
            LossScaleWarning,
        )

    # ------------------------------------------------------------------ what the loss acts on

    def _require_last(self) -> Dict[str, Any]:
        if self._last is None:
            raise RuntimeError(f"{self._name}.value() / last() read the last call of the loss: call the loss first")
        return self._last

    def value(self, by_layer: bool = False) -> Union[float, Dict[str, float]]:
        """What the loss regularised at its last call, per sample: the sum over its terms' layers, or per layer.

        Unlike ``counter.synops()`` (every counted layer), this is the quantity
        the loss acts on (by default the network-driven layers only): synops
        for :class:`SynOpsLoss`, joules for :class:`EnergyLoss`. With
        ``quantile=`` the total is the terms' quantiles over the batch's samples
        (what the loss acts on) and ``by_layer`` each layer's batch mean. One
        device sync per call.

        Example
        -------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(),
        ...                           torch.nn.Linear(2, 1, bias=False))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(1.0)
        >>> counter = sl.SynOpsCounter(net)
        >>> loss_fn = sl.SynOpsLoss(counter, target=1.0)
        >>> _ = net(torch.ones(1, 2)); _ = loss_fn()
        >>> counter.synops().item(), loss_fn.value(), loss_fn.value(by_layer=True)
        (8.0, 4.0, {'2': 4.0})
        """
        last = self._require_last()
        names: Dict[str, None] = {}
        for layers, *_ in last["terms"].values():
            names.update(dict.fromkeys(layers))
        per = {n: float(last["per_layer"][n]) for n in names}
        if by_layer:
            return per
        if self.quantile is not None:  # the loss acts on each term's quantile over the batch's samples
            return float(sum(float(v) for _, v, _, _ in last["terms"].values()))
        return float(sum(per.values()))

    def term_values(self) -> Dict[str, Tensor]:
        """The regularised value of each term at the last call, as detached 0-dim tensors (no device sync).

        ``{term label: value per sample}`` (synops, or joules for
        :class:`EnergyLoss`); what the Lightning regularizer logs.
        """
        return {label: s for label, (_, s, _, _) in self._require_last()["terms"].items()}

    def last(self) -> Dict[str, Any]:
        """The last call in plain numbers: what was regularised, against which target, and the term.

        Returns ``{"unit", "value", "target", "loss", "weight", "per_layer",
        "terms"}``: ``value`` and ``target`` summed over the terms (per
        sample), ``loss`` the returned term, ``per_layer`` the regularised
        value of each layer, and ``terms[label] = {"layers", "value",
        "target", "relative_error", "term"}`` (``term``: the unweighted
        ``f(r)``). One device sync per call.
        """
        last = self._require_last()
        terms = {}
        for label, (layers, s, t, f) in last["terms"].items():
            sv, tv = float(s), float(t)
            terms[label] = {"layers": list(layers), "value": sv, "target": tv, "relative_error": (sv - tv) / tv,
                            "term": float(f)}
        return {"unit": self._unit, "value": sum(x["value"] for x in terms.values()),
                "target": sum(x["target"] for x in terms.values()), "loss": float(last["loss"]),
                "weight": last["weight"], "per_layer": self.value(by_layer=True), "terms": terms}

    def _target(self, term: _Term, s: Tensor, names: List[str], calibrating: bool) -> Union[Tensor, float]:
        value = term.schedule.value
        if not value > 0:
            raise ValueError(
                f"{self._name}: the {term.kind} of {term.label!r} is {value} at step {self.last_step}; "
                "it must stay > 0 (a schedule that ends at zero asks to silence the network)"
            )
        if term.kind == "target":
            return value
        if term.kind == "budget":
            steps = self._time_steps(names[0])
            if steps <= 0:
                raise RuntimeError(f"{self._name}: layer {names[0]!r} was not called in this batch; cannot turn its budget into synops")
            return value * self.dt * steps
        # fraction of the initial synops
        if calibrating:
            # a per-sample average over the calibration batches' samples (as under DDP: a short batch weighs
            # less); a call without gradients reads the running average with its batch and keeps nothing
            n = self.counter.samples
            sd = s.detach() * n
            if term.initial_sum is None and not self._training_call:
                self._warn("uncalibrated", (
                    f"{self._name}: the fraction= target of {term.label!r} is not calibrated yet (it is measured on "
                    "the first batch(es) with gradients); this call without gradients has no target to compare "
                    "with, so it is measured against its own synops and its value means nothing. Read the loss "
                    "once training has started, or give an absolute target=."), SynOpsWarning)
            if not self._training_call and term.initial_sum is not None:
                # the running average of the calibration batches so far: this batch's own synops are not in it
                initial: Union[Tensor, float] = term.initial_sum / term.initial_samples
                return value * initial
            if self._repeat and term.initial_sum is not None:
                # a second call in this batch: the running sum holds the batch already (it is not added twice)
                return value * (term.initial_sum / term.initial_samples)
            total = sd if term.initial_sum is None else term.initial_sum + sd.to(term.initial_sum.device)
            initial = total / (term.initial_samples + n)
            if self._training_call and not self._repeat:
                term.initial_sum, term.initial_samples = total, term.initial_samples + n
                if self._calls == self.calibration_batches:
                    # one sync, once; under DDP the per-sample average over every rank's samples
                    term.initial = _over_ranks(total, term.initial_samples, self.calibration_group)
                    initial = term.initial
        else:
            initial = term.initial if term.initial is not None else 0.0
        if isinstance(initial, float) and not initial > 0:
            raise ValueError(
                f"{self._name}: the initial synops of {term.label!r} ({names}) measured on the first "
                f"{self.calibration_batches} batch(es) are {initial}: no fraction of zero is a usable target. "
                "Give an absolute target= or check that the network spikes."
            )
        return value * initial

    def _check_reachable(self, term: _Term, names: List[str], per_layer: Dict[str, Tensor], fed: List[str], t: Any) -> None:
        """Once, after calibration: warn about targets that cannot be reached or that push synops up."""
        t = float(t)
        with torch.no_grad():
            s_sel = float(sum(per_layer[n].detach() for n in names))
            fed_sel = [n for n in names if n in fed]
            s_fed = float(sum(per_layer[n].detach() for n in fed_sel)) if fed_sel else 0.0
            fed_all = float(sum(per_layer[n].detach() for n in fed)) if fed else 0.0
        if self.layers == "driven" and term.layers is None and not fed:
            self._warn(
                "nofed",
                f"{self._name}(layers='driven'): no counted layer was recognised as fed directly by the data (the model "
                "may transform its input before the first layer), so every layer is regularised, including the "
                "input layer whose synops training cannot lower. Pass layers=[...] naming the network-driven layers.",
            )
        if fed_sel and t <= s_fed:
            self._warn(
                f"unreachable:{term.label}",
                f"{self._name}: the target for {term.label!r} ({t:.6g} {self._unit} per sample) is at or below the synops "
                f"of the data-fed layer(s) {fed_sel} ({s_fed:.6g}), which training cannot lower: the loss can only "
                "approach it by silencing the whole network, which collapses accuracy. Regularise the "
                "network-driven layers (layers='driven', the default, with fraction=) or raise the target.",
            )
        elif fed_sel and term.layers is not None and len(names) == 1:
            self._warn(
                f"fed:{term.label}",
                f"{self._name}: layer {names[0]!r} is fed directly by the data; training can lower its synops only "
                "by zeroing weights.",
            )
        if self.shape in ("squared", "l1") and t > s_sel:
            hint = ""
            if term.kind == "target" and self.layers == "driven" and term.layers is None and fed and t < s_sel + fed_all:
                hint = (
                    f" If it was computed from counter.synops(): that total includes the data-fed layer(s) {fed} "
                    f"({fed_all:.6g} {self._unit} per sample), which this loss leaves out by default; the target applies "
                    "to the network-driven synops only. fraction=0.5 asks for half of them."
                )
            self._warn(
                f"above:{term.label}",
                f"{self._name}: the target for {term.label!r} ({t:.6g} {self._unit} per sample) is above the current synops "
                f"of those layers ({s_sel:.6g}); with shape {self.shape!r} the loss pushes synops UP to it "
                f"(shape='hinge' only penalises going above).{hint}",
            )

        if t < 0.01 * s_sel:
            value = term.schedule.value
            if term.kind == "target":
                hint = (f" target= is an absolute number of {self._unit} per sample; if you meant "
                        f"{value:g} of the measured value, pass fraction={value:g} instead of target={value:g}.")
            elif term.kind == "fraction":
                hint = (f" fraction={value:g} asks for {value:.2%} of the calibrated value; lower it gradually "
                        "(fraction=schedules.Linear(1.0, ..., steps=...)) or check that you did not mean target=.")
            else:
                hint = " Check the budget's units (per second) and dt."
            self._warn(
                f"tiny:{term.label}",
                f"{self._name}: the target for {term.label!r} ({t:.6g} {self._unit} per sample) is below 1% of what "
                f"those layers have now ({s_sel:.6g}): the loss can only approach it by silencing them.{hint}",
                LossScaleWarning,
            )

    def _check_gradient(self, names: List[str], per_layer: Dict[str, Tensor], fed: List[str]) -> None:
        """Warn once when regularised synops carry no gradient: the loss could not lower them."""
        if not torch.is_grad_enabled():
            return  # the loss itself is evaluated without gradient (validation): nothing to train
        no_grad = [n for n in names if n not in fed and not per_layer[n].requires_grad]
        idle = [n for n in no_grad if n in self.counter.idle_layers()]
        if idle:
            self._warn(
                "idle",
                f"SynOpsLoss: layer(s) {idle} did not run in this batch: their synops are 0 and their part of the "
                "loss is a constant, with no gradient. Expected when the model skips them for some inputs (a "
                "branch); otherwise they were called as layer.forward(x) (call layer(x)) or replaced after the "
                "counter attached (re-create the counter).",
            )
            no_grad = [n for n in no_grad if n not in idle]
        if no_grad and any(v.requires_grad for v in per_layer.values()):
            # other layers carry a gradient, so the forward ran with gradients on: these layers' inputs are the
            # data (transformed inside the model, so not recognised as data-fed) or come from frozen layers
            self._warn(
                "nograd",
                f"SynOpsLoss: the synops of layer(s) {no_grad} carry no gradient, so the loss cannot lower them: "
                "their input does not depend on any trainable parameter. They are fed by the data (after the "
                "model encodes, repeats or scales its input, so the counter did not recognise them as data-fed "
                "layers) or by frozen layers (requires_grad=False). Leave them out of the loss: name the "
                "network-driven layers with layers=[...].",
            )
        elif no_grad:
            self._warn(
                "nograd",
                f"SynOpsLoss: the synops of layer(s) {no_grad} carry no gradient, so the loss cannot lower them: "
                "the forward pass ran under torch.no_grad() / inference_mode (or nothing trainable feeds those "
                "layers: frozen layers, requires_grad=False). Run the forward with gradients on, or regularise "
                "other layers (layers=[...]).",
            )

    def _check_stepped(self) -> None:
        """Warn once when schedules that change with the step were never stepped."""
        if self.last_step or self._calls < self.unstepped_warning_calls:
            return
        moving = [s for s in self._schedules if s.at(0) != s.at(10 ** 9) or s.at(0) != s.at(1)]
        if moving:
            zero = self.weight.value == 0
            self._warn(
                "unstepped",
                f"{self._name}: {self._calls} batches were computed but loss.step() was never called, so the schedules "
                f"{moving} stay at step 0" + (" and the loss weight is 0: the loss has no effect" if zero else "")
                + ". Call loss.step() after each optimizer step (or once per epoch).",
            )

    def __deepcopy__(self, memo: Dict[int, Any]) -> Any:
        raise TypeError(
            "a SynOpsLoss is bound to a SynOpsCounter on a live model and cannot be copied. Create a new "
            "SynOpsLoss on a new counter and restore its state with loss.load_state_dict(old.state_dict())."
        )

    def __reduce_ex__(self, protocol: int) -> Any:
        raise TypeError(
            "a SynOpsLoss cannot be pickled (it is bound to a SynOpsCounter on a live model). Save "
            "loss.state_dict() (plain data) and load it into a new SynOpsLoss."
        )

    # ------------------------------------------------------------------ schedules and state

    def step(self) -> None:
        """Advance the target and weight schedules by one step (call it per batch or per epoch).

        Under data parallel training (``torch.distributed`` initialised, ``calibration_group`` not ``None``) an
        :class:`~synopsloss.schedules.Iterative` target first sums its observations over the group's processes
        (every process calls ``step()`` at the same step), so that every rank sets the same next target.
        """
        self.last_step += 1
        group = _active_group(self.calibration_group)
        for sched in self._schedules:
            if group is not False and isinstance(sched, Iterative):
                sched.synchronize(functools.partial(_sum_in_group, group=group))
            sched.step()

    @property
    def calibrated(self) -> bool:
        """Whether the first ``calibration_batches`` training calls (with gradients on) have been seen."""
        return self._calls >= self.calibration_batches

    def targets(self) -> Dict[str, Optional[float]]:
        """The current target of each term, in synops per sample (``None`` while not yet known).

        Budget terms give their target for the time steps of the last batch.
        """
        out: Dict[str, Optional[float]] = {}
        for term in self._terms:
            value = term.schedule.value
            if term.kind == "target":
                out[term.label] = value
            elif term.kind == "fraction":
                out[term.label] = None if term.initial is None else value * term.initial
            else:
                try:
                    steps = self._time_steps(term.label)
                except RuntimeError:
                    steps = 0.0
                out[term.label] = value * self.dt * steps if steps else None
        return out

    def initial(self) -> Dict[str, Optional[float]]:
        """The synops per sample measured during calibration, per term (``fraction`` terms only)."""
        return {t.label: t.initial for t in self._terms if t.kind == "fraction"}

    def state_dict(self) -> Dict[str, Any]:
        """Step, calibration and schedule states (plain Python values), for checkpoints."""
        terms = []
        for t in self._terms:
            partial, dtype = None, None
            if t.initial is None and t.initial_sum is not None:
                partial = float(t.initial_sum)
                dtype = str(t.initial_sum.dtype).replace("torch.", "")  # (float64 joules for EnergyLoss)
            terms.append({"label": t.label, "kind": t.kind, "schedule": t.schedule.state_dict(),
                          "initial": t.initial, "initial_sum": partial, "initial_sum_dtype": dtype,
                          "initial_samples": t.initial_samples})
        return {"last_step": self.last_step, "calls": self._calls, "weight": self.weight.state_dict(), "terms": terms}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises
        ------
        ValueError
            When the state comes from a loss with other terms.
        """
        missing = [k for k in ("terms", "last_step", "calls", "weight") if not isinstance(state, Mapping) or k not in state]
        if missing:
            raise ValueError(f"{self._name}.load_state_dict takes the dict its state_dict() returned; this state lacks "
                             f"{missing}")
        saved = [(t["label"], t["kind"]) for t in state["terms"]]
        mine = [(t.label, t.kind) for t in self._terms]
        if saved != mine:
            raise ValueError(f"SynOpsLoss state has terms {saved}, this loss has {mine}")
        self.last_step = int(state["last_step"])
        self._calls = int(state["calls"])
        self.weight.load_state_dict(state["weight"])
        for t, s in zip(self._terms, state["terms"]):
            t.schedule.load_state_dict(s["schedule"])
            t.initial = s["initial"]
            dtype = getattr(torch, s.get("initial_sum_dtype") or "", None) or torch.get_default_dtype()
            t.initial_sum = None if s["initial_sum"] is None else torch.tensor(s["initial_sum"], dtype=dtype)
            # (a state saved before the per-sample average: a sum of batch means, one weight per batch)
            t.initial_samples = int(s.get("initial_samples", self._calls))

    def __repr__(self) -> str:
        kinds = ", ".join(f"{t.label}: {t.kind} {t.schedule!r}" for t in self._terms)
        return f"SynOpsLoss({kinds}; shape={self.shape!r}, weight={self.weight!r}, step={self.last_step})"


class EnergyLoss(SynOpsLoss):
    """A 0-dim tensor that grows as the estimated energy per sample leaves its target.

    :class:`SynOpsLoss` with joules per sample in place of synops: the same
    ``target=`` (joules per sample), ``fraction=`` (of the energy measured on
    the first batches), ``budget=`` (watts per layer, with ``dt``), shapes,
    schedules, ``layers=`` selection (default: the network-driven layers, plus
    every neuron layer), :meth:`value` / :meth:`last` and state dicts.

    The energy of each layer is exactly the table's energy column
    (``counter.table(energy=energy)[layer].energy``, all parts of the model:
    ACs and MACs at their op energies, neuron updates, Lemaire's memory and
    addressing terms). Its gradient flows through the layer's differentiable
    synops (``counter.synops(by_layer=True)``): per synaptic layer ``l`` the
    term is

    ``E_l + (s_l - stopgrad(s_l)) * E_l / S_l``

    with ``E_l`` the layer's energy and ``S_l`` its synops on this batch (from
    ``counter.snapshot()``), so its value is ``E_l`` and its gradient is
    ``E_l / S_l`` joules per synop times the gradient of the synops: the op
    energy of an accumulate for a layer fed spikes (``e_ac`` under
    ``horowitz45nm``), that of a multiply-accumulate (scaled by effective MACs
    per synop) for a layer fed analog values, plus the memory terms that grow
    with the events. Neuron-layer energies (updates of every neuron at every
    step, spike writes) enter the value but carry no gradient: they do not
    depend on the weights through anything the counter differentiates.

    Each call takes one ``counter.snapshot()`` (one device-to-host copy).

    Parameters
    ----------
    counter
        The :class:`~synopsloss.SynOpsCounter` (create it with
        ``neurons=True``, the default, when the model prices neurons).
    target, fraction, budget, dt, time_steps, shape, weight, layers, calibration_batches
        As for :class:`SynOpsLoss`, in joules per sample (``budget``: watts).
    energy
        The energy model: a preset name (:mod:`synopsloss.energy`), an
        :class:`~synopsloss.energy.EnergyModel` or ``{"e_ac", "e_mac"}``.

    Raises
    ------
    ValueError
        As :class:`SynOpsLoss`; an energy model whose energy does not depend
        on activity (a non-spiking device prices every synapse at every step).

    Example
    -------
    >>> import torch, synopsloss as sl
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(),
    ...                           torch.nn.Linear(2, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(0.75)  # layer "2" reads 1.5, 1.5: analog values, so MACs
    >>> counter = sl.SynOpsCounter(net)
    >>> loss_fn = sl.EnergyLoss(counter, target=1e-12, energy="horowitz45nm")
    >>> _ = net(torch.ones(1, 2)); term = loss_fn()
    >>> loss_fn.value(), counter.table(energy="horowitz45nm")["2"].energy   # 2 MACs at 4.6 pJ
    (9.2e-12, 9.2e-12)
    """

    _unit = "J"

    def __init__(
        self,
        counter: SynOpsCounter,
        target: Union[TargetLike, Mapping[str, TargetLike], None] = None,
        *,
        energy: Any = "horowitz45nm",
        fraction: Union[TargetLike, Mapping[str, TargetLike], None] = None,
        budget: Optional[Mapping[str, TargetLike]] = None,
        dt: Optional[float] = None,
        time_steps: Optional[int] = None,
        shape: Optional[str] = None,
        weight: Union[float, Schedule] = 1.0,
        layers: Union[str, Sequence[str]] = "driven",
        calibration_batches: int = 1,
        calibration_group: Any = "world",
    ) -> None:
        from .energy import DeviceEnergy, get_energy_model

        model = get_energy_model(energy)
        if model is None:
            raise ValueError("EnergyLoss needs an energy model (energy='horowitz45nm', 'lemaire2022', ...)")
        if isinstance(model, DeviceEnergy) and not model.spiking:
            raise ValueError(
                f"EnergyLoss(energy={model.name!r}): this device computes every synapse and neuron at every time "
                "step, so its energy does not depend on activity and training cannot lower it. Choose a spiking "
                "device or an op-level model (horowitz45nm, lemaire2022)."
            )
        self.energy_model = model
        super().__init__(counter, target, fraction=fraction, budget=budget, dt=dt, time_steps=time_steps,
                         shape=shape, weight=weight, layers=layers, calibration_batches=calibration_batches,
                         calibration_group=calibration_group)
        if counter.neurons is None and prices_neurons(model):
            warnings.warn(
                f"EnergyLoss: the counter was created with neurons=False, so the neuron-update energy of model "
                f"{model.name!r} is left out (as in the table of that counter). Create the counter with "
                "neurons=True to include it.", UnreachableTargetWarning, stacklevel=2)

    def _check_names(self, names: List[str], what: str) -> None:
        known = dict(self.counter.model.named_modules())
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{self._name}: {what} names layer(s) {twice} more than once; each layer's energy would "
                             "be counted that many times. Name each layer once.")
        unknown = [n for n in names if n not in known or not n]
        if unknown:
            raise ValueError(
                f"EnergyLoss: {what} names layer(s) {unknown} that the model does not have; counted synaptic "
                f"layers: {self.counter.layer_names}"
            )

    def _measure(self) -> Dict[str, Tensor]:
        from .report import build_table

        synops = self._synops()
        table = build_table(self.counter.snapshot(), energy=self.energy_model)
        ref = next(iter(synops.values()))
        out: Dict[str, Tensor] = {}
        self._constant = set()
        for row in table.rows:
            if row.energy is None:
                continue
            # float64: the value is the table's number exactly (joules are ~1e-12)
            e = torch.tensor(float(row.energy), dtype=torch.float64, device=ref.device)
            s = synops.get(row.name) if row.kind in ("synaptic", "recurrent synapses") else None
            if s is not None and row.synops:
                s = s.to(torch.float64)
                term = e + (s - s.detach()) * (float(row.energy) / float(row.synops))
            elif s is not None and s.requires_grad:  # a silent layer: the price of its next synop (an AC)
                term = e + (s.to(torch.float64) - s.detach().to(torch.float64)) * self._unit_price(row)
            else:
                term = e
            out[row.name] = term if row.name not in out else out[row.name] + term
        for name in out:
            if not out[name].requires_grad:
                self._constant.add(name)
        for name in synops:  # counted layers that did not run or have no energy: zero, as in the table
            if name not in out:
                out[name] = torch.zeros((), dtype=torch.float64, device=ref.device)
        return out

    def _unit_price(self, row: Any) -> float:
        """Joules of one more synop (an AC) of a layer with none: ``E/S`` is undefined there, and the synops keep
        their gradient (the fan-out map at zero input) so that a loss can raise them."""
        import dataclasses

        zero = dataclasses.replace(row, eff_acs=0.0, eff_macs=0.0, synops=0.0, input_events=0.0, in_rate=0.0,
                                   energy=None, energy_parts={})
        one = dataclasses.replace(zero, eff_acs=1.0, synops=1.0)
        return float(self.energy_model.energy(one) or 0.0) - float(self.energy_model.energy(zero) or 0.0)

    def _check_gradient(self, names: List[str], per_layer: Dict[str, Tensor], fed: List[str]) -> None:
        syn = set(self.counter.layer_names)
        super()._check_gradient([n for n in names if n in syn], per_layer, fed)

    def _check_reachable(self, term: _Term, names: List[str], per_layer: Dict[str, Tensor], fed: List[str],
                         t: Any) -> None:
        """As :class:`SynOpsLoss`, and a target at or below the energy the loss has no gradient for: the neuron
        rows it regularises (updates, spike writes), with the data-fed layers."""
        super()._check_reachable(term, names, per_layer, fed, t)
        const = [n for n in names if n in self._constant and n not in fed]
        if not const:
            return
        with torch.no_grad():
            floor = float(sum(per_layer[n].detach() for n in names if n in const or n in fed))
        if float(t) <= floor:
            self._warn(
                f"unreachable:{term.label}",
                f"EnergyLoss: the target for {term.label!r} ({float(t):.6g} J per sample) is at or below the energy "
                f"that the loss has no gradient for ({floor:.6g} J: the neuron row(s) {const}, whose updates and spike "
                "writes do not depend on the weights through the synops, with the data-fed layers): the loss can "
                "only approach it by silencing the network-driven layers, which collapses accuracy. Raise the "
                "target (fraction= above that share of the measured energy), or leave the neuron rows out "
                "(layers=[the synaptic layers]).")

    def __repr__(self) -> str:
        return super().__repr__().replace("SynOpsLoss(", "EnergyLoss(", 1)[:-1] + f", energy={self.energy_model.name!r})"
