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

import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .counter import SynOpsCounter
from ._validate import ArgumentTypeError, check_int
from .schedules import Iterative, Schedule, as_schedule

__all__ = ["SynOpsLoss", "UnreachableTargetWarning", "SHAPES"]

#: The loss shapes, as functions of the relative error ``r = (s - t) / t``.
SHAPES = ("squared", "hinge", "squared_hinge", "l1")

TargetLike = Union[float, int, Schedule]


class UnreachableTargetWarning(UserWarning):
    """A synops target the network cannot reach, or one that would push synops up."""


@dataclass
class _Term:
    label: str
    layers: Optional[List[str]]  # None: resolved per call from `layers=` ("driven" / "all")
    schedule: Schedule  # absolute target, fraction of the initial synops, or budget (synops/s)
    kind: str  # "target" | "fraction" | "budget"
    initial_sum: Optional[Tensor] = None  # detached running sum over the calibration batches
    initial: Optional[float] = None  # frozen after calibration (fraction terms)


def _positive(name: str, value: Any) -> None:
    if isinstance(value, Schedule):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a number or a synopsloss.schedules.Schedule, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{name} must be > 0, got {value!r}: a synops target of zero or less can only be approached "
            "by silencing the network. Give a positive number of synops per sample (or fraction=)."
        )


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
        Number of first calls whose synops define the initial synops (``fraction``).

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
        if isinstance(weight, Schedule):
            self.weight = weight
        else:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ArgumentTypeError(f"weight must be a number >= 0 or a Schedule, got {weight!r}")
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

        self.counter = counter
        self.shape = shape
        self.dt = None if dt is None else float(dt)
        self.time_steps = time_steps
        self.calibration_batches = calibration_batches
        self.last_step = 0
        self._calls = 0
        self._warned: set = set()
        #: batches without any loss.step() after which moving schedules warn
        self.unstepped_warning_calls = 100

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
                _positive(f"{kind}[{name!r}]", value)
                self._terms.append(_Term(name, [name], as_schedule(value, f"{kind}[{name!r}]"), kind))
        else:
            _positive(kind, spec)
            if isinstance(layers, str):
                if layers not in ("driven", "all"):
                    raise ValueError(f"layers must be 'driven', 'all' or a list of layer names, got {layers!r}")
                self.layers = layers
                names: Optional[List[str]] = None
                label = layers
            else:
                names = list(layers)
                if not names:
                    raise ValueError(f"layers= is empty; name at least one layer of {known}")
                self._check_names(names, "layers")
                self.layers = names
                label = "+".join(names)
            self._terms = [_Term(label, names, as_schedule(spec, kind), kind)]
        # a schedule shared by several terms is stepped once
        self._schedules: List[Schedule] = []
        for sched in [self.weight] + [t.schedule for t in self._terms]:
            if all(sched is not s for s in self._schedules):
                self._schedules.append(sched)

    # ------------------------------------------------------------------ helpers

    def _check_names(self, names: List[str], what: str) -> None:
        known = self.counter.layer_names
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"SynOpsLoss: {what} names layer(s) {unknown} that the counter does not count; "
                f"counted layers: {known}"
            )

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UnreachableTargetWarning, stacklevel=4)

    def _resolve(self, term: _Term, per_layer: Dict[str, Tensor], fed: List[str]) -> List[str]:
        if term.layers is not None:
            return term.layers
        if self.layers == "all":
            return list(per_layer)
        driven = [n for n in per_layer if n not in fed]
        if not driven:
            raise ValueError(
                f"SynOpsLoss: every counted layer ({list(per_layer)}) is fed directly by the data, so training "
                "cannot lower their synops (only zero weights could). Pass layers='all' to regularise them anyway."
            )
        return driven

    def _time_steps(self, name: str) -> float:
        if self.time_steps is not None:
            return float(self.time_steps)
        return self.counter.time_steps(name)

    # ------------------------------------------------------------------ the loss

    def __call__(self) -> Tensor:
        """The loss for the batch counted since the last ``counter.reset()`` (0-dim, differentiable)."""
        try:
            per_layer = self.counter.synops(by_layer=True)
        except RuntimeError as err:
            raise RuntimeError(
                "SynOpsLoss was called before any forward pass since counter.reset(): run the model on the "
                "batch (every time step) first, then compute the loss"
            ) from err
        fed = self.counter.data_fed_layers()
        calibrating = self._calls < self.calibration_batches
        self._calls += 1
        self._check_stepped()
        weight = self.weight.value
        if weight < 0:
            raise ValueError(f"SynOpsLoss: the weight schedule gave {weight} < 0 at step {self.last_step}")
        total: Optional[Tensor] = None
        for term in self._terms:
            names = self._resolve(term, per_layer, fed)
            s = per_layer[names[0]]
            for n in names[1:]:
                s = s + per_layer[n]
            if isinstance(term.schedule, Iterative) and torch.is_grad_enabled():  # training batches set its targets
                if term.kind != "target":
                    raise ValueError(f"SynOpsLoss: an Iterative schedule sets absolute targets; pass it as target=, not {term.kind}=")
                term.schedule.observe(s.detach())
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
            self._check_gradient(names, per_layer, fed)
            if calibrating and self._calls == self.calibration_batches:
                self._check_reachable(term, names, per_layer, fed, t)
        assert total is not None
        return total * weight

    def _target(self, term: _Term, s: Tensor, names: List[str], calibrating: bool) -> Union[Tensor, float]:
        value = term.schedule.value
        if not value > 0:
            raise ValueError(
                f"SynOpsLoss: the {term.kind} of {term.label!r} is {value} at step {self.last_step}; "
                "it must stay > 0 (a schedule that ends at zero asks to silence the network)"
            )
        if term.kind == "target":
            return value
        if term.kind == "budget":
            steps = self._time_steps(names[0])
            if steps <= 0:
                raise RuntimeError(f"SynOpsLoss: layer {names[0]!r} was not called in this batch; cannot turn its budget into synops")
            return value * self.dt * steps
        # fraction of the initial synops
        if calibrating:
            sd = s.detach()
            term.initial_sum = sd if term.initial_sum is None else term.initial_sum + sd.to(term.initial_sum.device)
            initial: Union[Tensor, float] = term.initial_sum / self._calls
            if self._calls == self.calibration_batches:
                term.initial = float(initial)  # one sync, once
                initial = term.initial
        else:
            initial = term.initial if term.initial is not None else 0.0
        if isinstance(initial, float) and not initial > 0:
            raise ValueError(
                f"SynOpsLoss: the initial synops of {term.label!r} ({names}) measured on the first "
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
                "SynOpsLoss(layers='driven'): no counted layer was recognised as fed directly by the data (the model "
                "may transform its input before the first layer), so every layer is regularised, including the "
                "input layer whose synops training cannot lower. Pass layers=[...] naming the network-driven layers.",
            )
        if fed_sel and t <= s_fed:
            self._warn(
                f"unreachable:{term.label}",
                f"SynOpsLoss: the target for {term.label!r} ({t:.6g} synops per sample) is at or below the synops "
                f"of the data-fed layer(s) {fed_sel} ({s_fed:.6g}), which training cannot lower: the loss can only "
                "approach it by silencing the whole network, which collapses accuracy. Regularise the "
                "network-driven layers (layers='driven', the default, with fraction=) or raise the target.",
            )
        elif fed_sel and term.layers is not None and len(names) == 1:
            self._warn(
                f"fed:{term.label}",
                f"SynOpsLoss: layer {names[0]!r} is fed directly by the data; training can lower its synops only "
                "by zeroing weights.",
            )
        if self.shape in ("squared", "l1") and t > s_sel:
            hint = ""
            if term.kind == "target" and self.layers == "driven" and term.layers is None and fed and t < s_sel + fed_all:
                hint = (
                    f" If it was computed from counter.synops(): that total includes the data-fed layer(s) {fed} "
                    f"({fed_all:.6g} synops per sample), which this loss leaves out by default; the target applies "
                    "to the network-driven synops only. fraction=0.5 asks for half of them."
                )
            self._warn(
                f"above:{term.label}",
                f"SynOpsLoss: the target for {term.label!r} ({t:.6g} synops per sample) is above the current synops "
                f"of those layers ({s_sel:.6g}); with shape {self.shape!r} the loss pushes synops UP to it "
                f"(shape='hinge' only penalises going above).{hint}",
            )

    def _check_gradient(self, names: List[str], per_layer: Dict[str, Tensor], fed: List[str]) -> None:
        """Warn once when regularised synops carry no gradient: the loss could not lower them."""
        if not torch.is_grad_enabled():
            return  # the loss itself is evaluated without gradient (validation): nothing to train
        no_grad = [n for n in names if n not in fed and not per_layer[n].requires_grad]
        if no_grad:
            self._warn(
                "nograd",
                f"SynOpsLoss: the synops of layer(s) {no_grad} carry no gradient, so the loss cannot lower them: "
                "the forward pass ran under torch.no_grad() / inference_mode, or nothing trainable feeds those "
                "layers (a frozen layer before them, requires_grad=False). Run the forward with gradients on, or "
                "regularise other layers (layers=[...]).",
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
                f"SynOpsLoss: {self._calls} batches were computed but loss.step() was never called, so the schedules "
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
        """Advance the target and weight schedules by one step (call it per batch or per epoch)."""
        self.last_step += 1
        for sched in self._schedules:
            sched.step()

    @property
    def calibrated(self) -> bool:
        """Whether the first ``calibration_batches`` calls have been seen."""
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
            partial = None
            if t.initial is None and t.initial_sum is not None:
                partial = float(t.initial_sum)
            terms.append({"label": t.label, "kind": t.kind, "schedule": t.schedule.state_dict(),
                          "initial": t.initial, "initial_sum": partial})
        return {"last_step": self.last_step, "calls": self._calls, "weight": self.weight.state_dict(), "terms": terms}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises
        ------
        ValueError
            When the state comes from a loss with other terms.
        """
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
            t.initial_sum = None if s["initial_sum"] is None else torch.tensor(s["initial_sum"], dtype=torch.get_default_dtype())

    def __repr__(self) -> str:
        kinds = ", ".join(f"{t.label}: {t.kind} {t.schedule!r}" for t in self._terms)
        return f"SynOpsLoss({kinds}; shape={self.shape!r}, weight={self.weight!r}, step={self.last_step})"
