"""Lightning callbacks: train against synops (``SynOpsRegularizer``) and log them (``SynOpsMonitor``).

:class:`SynOpsRegularizer` owns a :class:`~synopsloss.SynOpsCounter` and a
:class:`~synopsloss.SynOpsLoss` for the module the trainer runs. It counts
training batches only; ``training_step`` adds its term with one line::

    loss = task_loss + self.synops.loss()

It resets the counter before each training batch, steps the target and weight
schedules per optimizer step or per epoch, keeps the calibration and the
schedule steps in the checkpoint (so a resumed fit continues exactly), logs
through ``pl_module.log`` (progress bar, loggers, ``ModelCheckpoint`` /
``EarlyStopping``) and takes its hooks off when fitting ends or fails.

:class:`SynOpsMonitor` counts, for each loop it watches (``train``,
``validate``, ``test``), the synops and NeuroBench counts per sample,
accumulated over the epoch, with its own counters (attached only while their
loop runs). Use it for the validation and test loops next to the regularizer.

Under DDP every rank counts its own samples; logged synops are sums and sample
counts added over the ranks before dividing (per-sample averages over all
ranks' samples, not means of per-rank means). Nothing is logged during the
sanity-check validation.

Example
-------
>>> import lightning.pytorch as L  # doctest: +SKIP
>>> from synopsloss.lightning import SynOpsMonitor, SynOpsRegularizer
>>> reg = SynOpsRegularizer(fraction=0.5)   # half the initial network-driven synops
>>> reg.interval, reg.counter is None       # the counter is built when fitting starts
('step', True)
>>> trainer = L.Trainer(callbacks=[reg, SynOpsMonitor(stages=("validate",))])  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .counter import COUNT_KEYS, SynOpsCounter, SynOpsWarning
from .loss import SHAPES, EnergyLoss, SynOpsLoss
from .schedules import Iterative, Schedule

try:  # the unified package first, the standalone one otherwise
    import lightning.pytorch as _pl
except ImportError:  # pragma: no cover - depends on the environment
    import pytorch_lightning as _pl  # type: ignore[no-redef]

__all__ = ["SynOpsRegularizer", "SynOpsMonitor"]

Stage = Literal["train", "validate", "test"]
Interval = Literal["step", "epoch"]
_STAGES = ("train", "validate", "test")
TargetLike = Union[float, int, Schedule]


def _batch_size(batch: Any, dim: int = 0) -> int:
    """Samples in a batch: dim ``dim`` of its first tensor (nested tuples, lists and dicts searched)."""
    if isinstance(batch, Tensor):
        if batch.dim() <= dim:
            raise ValueError(f"synopsloss: the batch is a {batch.dim()}-dim tensor, with no dim {dim}; "
                             "pass batch_size_fn=")
        return int(batch.shape[dim])
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        try:
            return _batch_size(item, dim)
        except ValueError:
            continue
    raise ValueError(
        f"synopsloss cannot find a tensor in a batch of type {type(batch).__name__}; "
        "pass batch_size_fn=lambda batch: ... to the callback"
    )


#: what the callbacks add to a layout error of their counter (its own options are the callback's)
_CALLBACK_LAYOUT = ("With {name}, pass counter_kwargs={{'batch_dim': 1}} (or {{'time_dim': 0}}) for time-first "
                    "[T, B, ...] batches, counter_kwargs={{'batch_dim': 0}} for batch-first ones, or "
                    "batch_size_fn=lambda batch: <its number of samples>.")


def _fallback(batch: Any, dim: int = 0) -> Optional[int]:
    """:func:`_batch_size` (``dim``: the counter's ``batch_dim``), or None for a batch without such a tensor (the
    counter then says what is missing)."""
    try:
        return _batch_size(batch, dim)
    except ValueError:
        return None


def _f64(value: Union[float, Tensor], device: torch.device) -> Tensor:
    """A float64 scalar tensor on ``device`` (Lightning keeps float64 values exact; floats become float32)."""
    if isinstance(value, Tensor):
        return value.detach().to(device=device, dtype=torch.float64).reshape(())
    return torch.tensor(float(value), dtype=torch.float64, device=device)


def _sum_over_ranks(trainer: Any, values: Tensor) -> Tensor:
    """``values`` summed over the DDP ranks (unchanged on one process)."""
    if getattr(trainer, "world_size", 1) > 1:
        return trainer.strategy.reduce(values, reduce_op="sum")
    return values


class SynOpsRegularizer(_pl.Callback):
    """Train a LightningModule against synops: a callback whose :meth:`loss` is added to the task loss.

    It takes :class:`~synopsloss.SynOpsLoss`'s arguments; the counter and the
    loss are built when fitting starts, on the module the trainer runs (or
    its submodule ``module``). Add the term in ``training_step``::

        class Net(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = ...
                self.synops = SynOpsRegularizer(fraction=0.5)

            def configure_callbacks(self):
                return [self.synops]

            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = F.cross_entropy(self(x), y)
                return loss + self.synops.loss()

    (or pass the regularizer to ``Trainer(callbacks=[...])`` and keep a
    reference in the module).

    What it does, per training batch: resets the counter (validation, test and
    predict loops and the sanity check are never counted: the counter is
    detached there, and paused between training batches); learns the batch's
    samples from the batch (``batch_size_fn``); after the batch, logs and steps
    the schedules (``interval="step"``: once per training batch that stepped
    the optimizer, so gradient accumulation counts optimizer steps and several
    optimizers stepped in one batch count once; ``"epoch"``: once per
    training epoch). A second ``fit`` continues the schedules.

    Logged with ``pl_module.log`` (``{prefix}`` default ``synops``), per sample:

    * every training batch (``on_step``, aligned with ``training_step``'s own
      logs): ``{prefix}/train/synops_step`` (all counted layers),
      ``{prefix}/train/regularized_step`` (the layers the loss acts on; on the
      progress bar with ``prog_bar=True``), ``{prefix}/train/loss_step`` (the
      term, mean over ranks), ``{prefix}/train/value_step`` (what the loss
      regularises, as :meth:`SynOpsLoss.value`, mean over ranks; named
      ``energy_step``, in joules per sample, with ``energy=``),
      ``{prefix}/train/target`` (its target; ``{prefix}/train/target/{layer}``
      per term when there are several) and ``{prefix}/train/weight``;
    * at the end of each training epoch (``on_epoch``, over all samples of the
      epoch): ``{prefix}/train/synops``, ``regularized``, ``dense``,
      ``eff_macs``, ``eff_acs``, ``loss`` and, with ``per_layer=True``,
      ``{prefix}/train/layer/{name}``: monitor them with ``ModelCheckpoint`` or
      ``EarlyStopping``.

    Values are float64 tensors (counts stay exact, also under
    ``precision="bf16-mixed"``).

    Resuming: :meth:`state_dict` holds the loss's calibration (``fraction``),
    its step and the schedules' steps, so ``fit(ckpt_path=...)`` continues
    with the same targets and weights as an uninterrupted run.

    DDP: every rank adds the term of its own batch (DDP averages the
    gradients, as for the task loss); logged synops are sums and sample counts
    added over the ranks before dividing. With ``fraction=`` the initial synops
    are measured over all ranks' calibration samples (each rank uses its own
    during the calibration batches, then all switch to the common value), so
    every rank has the same target and checkpoints resume every rank alike.

    Parameters
    ----------
    target, fraction, budget, dt, time_steps, shape, weight, layers, calibration_batches
        As for :class:`~synopsloss.SynOpsLoss` (exactly one of ``target``,
        ``fraction``, ``budget``). ``target=schedules.Iterative(...)`` lowers
        the target stage by stage from the synops achieved (a stage counts
        ``interval`` steps); under DDP its observations are summed over the
        ranks when a stage ends, so every rank sets the same next target.
    interval
        ``"step"`` (default): schedules advance with the optimizer steps;
        ``"epoch"``: once per training epoch.
    module
        Name of the submodule to count (``"net"`` for ``self.net``), when
        ``training_step`` calls it directly rather than ``self(x)``: the
        counter recognises the data-fed layers (``layers="driven"``) from the
        tensors the counted module itself is called with.
    batch_size_fn
        Samples of a batch (``lambda batch: batch[0].shape[1]`` for
        time-first ``[T, B, ...]`` batches). By default the counter learns
        them from the counted module's input, as a plain
        :class:`~synopsloss.SynOpsCounter` does (dim 0, or the ``batch_dim`` /
        ``time_dim`` of ``counter_kwargs``), and refuses an input it cannot
        read (``[T, B, ...]`` and ``[B, T, ...]`` into the same layers) with a
        message; when ``training_step`` calls only the module's submodules,
        dim 0 of the batch's first tensor.
    counter_kwargs
        Passed to the :class:`~synopsloss.SynOpsCounter` (``custom_rules``,
        ``strict``, ``batch_dim``, ``time_dim``, ...); ``neurons=False``
        unless given.
    prefix
        First part of the logged names.
    per_layer
        Also log each layer's synops per sample at the end of each epoch.
    prog_bar
        Show the regularised synops of each step on the progress bar.
    energy
        Train against estimated energy instead of synops: an energy preset
        or model (see :class:`~synopsloss.EnergyLoss`); targets are then joules
        per sample (``budget``: watts), and the counter tracks neurons unless
        ``counter_kwargs`` says otherwise.

    Raises
    ------
    ValueError
        Not exactly one of ``target`` / ``fraction`` / ``budget``; an unknown
        ``interval`` or ``shape``; an empty ``prefix``. When fitting starts: the loss's own errors
        (unknown layer names, a non-positive target, ...), or a ``module``
        that the LightningModule does not have.
    TypeError
        ``module``, ``batch_size_fn``, ``counter_kwargs`` or ``prefix`` of the
        wrong type.

    Example
    -------
    >>> from synopsloss import schedules
    >>> reg = SynOpsRegularizer(fraction=schedules.Linear(1.0, 0.5, steps=100), weight=schedules.Warmup(1.0, 10))
    >>> reg.loss()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: SynOpsRegularizer.loss() was called outside a training batch: call it in training_step ...
    """

    def __init__(
        self,
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
        interval: Interval = "step",
        module: Optional[str] = None,
        batch_size_fn: Optional[Callable[[Any], int]] = None,
        counter_kwargs: Optional[Mapping[str, Any]] = None,
        prefix: str = "synops",
        per_layer: bool = False,
        prog_bar: bool = True,
        energy: Any = None,
    ) -> None:
        given = [n for n, v in (("target", target), ("fraction", fraction), ("budget", budget)) if v is not None]
        if len(given) != 1:
            raise ValueError(
                "SynOpsRegularizer needs exactly one of target= (synops per sample), fraction= (of the initial "
                f"synops) or budget= (synops per second per layer, with dt=); got {given or 'none'}"
            )
        if interval not in ("step", "epoch"):
            raise ValueError(f"interval must be 'step' or 'epoch', got {interval!r}")
        if shape is not None and shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
        if module is not None and not isinstance(module, str):
            raise TypeError(f"module must be the name of a submodule (str) or None, got {type(module).__name__}")
        if batch_size_fn is not None and not callable(batch_size_fn):
            raise TypeError(f"batch_size_fn must be callable, got {type(batch_size_fn).__name__}")
        if counter_kwargs is not None and not isinstance(counter_kwargs, Mapping):
            raise TypeError(f"counter_kwargs must be a dict, got {type(counter_kwargs).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        if not prefix:
            raise ValueError("prefix must be a non-empty str (the first part of the logged names)")
        self._spec = {"target": target, "fraction": fraction, "budget": budget}[given[0]]
        self._kind = given[0]
        self._loss_kwargs: Dict[str, Any] = dict(
            target=target, fraction=fraction, budget=budget, dt=dt, time_steps=time_steps, shape=shape,
            weight=weight, layers=layers, calibration_batches=calibration_batches,
        )
        self.interval = interval
        self.module = module
        self.energy = energy
        kwargs = dict(counter_kwargs or {})
        kwargs.setdefault("neurons", energy is not None)  # EnergyLoss prices the neuron layers too
        self.counter_kwargs = kwargs
        self.batch_size_fn = batch_size_fn
        self.prefix = prefix
        self.per_layer = bool(per_layer)
        self.prog_bar = bool(prog_bar)
        self._last: Dict[str, Union[float, Tensor]] = {}  # tensors until read: no device sync per step
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._counter: Optional[SynOpsCounter] = None
        self._loss_fn: Optional[SynOpsLoss] = None
        self._root: Optional[nn.Module] = None
        self._pending: Optional[Dict[str, Any]] = None
        self._trainer: Any = None
        self._pause: Any = None
        self._in_batch = False
        self._term: Optional[Tensor] = None
        self._cal: Optional[Dict[str, Tensor]] = None  # DDP calibration: per-term synops sums, and "__n__"
        self._epoch_term: Optional[Tensor] = None
        self._epoch_samples = 0  # samples of the epoch's training batches (the loss term's weights)
        self._synced = 0  # the trainer's global_step the schedules were last stepped to
        self._warned: set = set()

    # -------------------------------------------------------------- public

    @property
    def counter(self) -> Optional[SynOpsCounter]:
        """The training counter (``None`` until fitting starts)."""
        return self._counter

    @property
    def loss_fn(self) -> Optional[SynOpsLoss]:
        """The :class:`~synopsloss.SynOpsLoss` (``None`` until fitting starts)."""
        return self._loss_fn

    @property
    def last_metrics(self) -> Dict[str, float]:
        """The last logged value of each name, as plain floats."""
        return {k: float(v) for k, v in self._last.items()}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix)

    def loss(self) -> Tensor:
        """The synops term of the current training batch (0-dim, differentiable): add it to the task loss.

        Call it in ``training_step`` after the forward pass (all time steps).
        Calling it again in the same batch returns the same tensor.

        Raises
        ------
        RuntimeError
            Outside a training batch of a fit that runs this callback, or
            before the forward pass of the batch.
        """
        if self._loss_fn is None or not self._in_batch:
            raise RuntimeError(
                "SynOpsRegularizer.loss() was called outside a training batch: call it in training_step while a "
                "Trainer fits with this callback (pass it in Trainer(callbacks=[...]) or return it from "
                "configure_callbacks()). Validation and test steps have no synops term; count them with SynOpsMonitor."
            )
        if self._term is None:
            calibrating = not self._loss_fn.calibrated
            try:
                self._term = self._loss_fn()
            except ValueError as err:
                if "samples" not in str(err):
                    raise
                raise ValueError(f"{err} {_CALLBACK_LAYOUT.format(name='SynOpsRegularizer')}") from err
            if calibrating and self._kind == "fraction" and getattr(self._trainer, "world_size", 1) > 1:
                self._add_calibration()
        return self._term

    # -------------------------------------------------------------- building

    def _build(self, pl_module: nn.Module) -> None:
        root = pl_module
        if self.module is not None:
            try:
                root = pl_module.get_submodule(self.module)
            except AttributeError as err:
                names = [n for n, _ in pl_module.named_children()]
                raise ValueError(
                    f"SynOpsRegularizer(module={self.module!r}): {type(pl_module).__name__} has no such submodule; "
                    f"its children are {names}"
                ) from err
        if self._counter is not None and self._root is root:
            return
        if self._counter is not None:
            self._detach()
            if self._loss_fn is not None and self._pending is None:
                self._pending = self._loss_fn.state_dict()
        counter = SynOpsCounter(root, **self.counter_kwargs)
        counter.remove()  # attached only while training batches run
        # the callback adds the ranks' calibration itself, through the trainer's strategy (any strategy, not only
        # torch.distributed ones): the loss does not all-reduce it again
        if self.energy is not None:
            loss_fn: SynOpsLoss = EnergyLoss(counter, energy=self.energy, calibration_group=None, **self._loss_kwargs)
        else:
            loss_fn = SynOpsLoss(counter, calibration_group=None, **self._loss_kwargs)
        if self._pending is not None:
            loss_fn.load_state_dict(self._pending)
            self._pending = None
        self._counter, self._loss_fn, self._root = counter, loss_fn, root

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, SynOpsWarning, stacklevel=3)

    # -------------------------------------------------------------- counter on / off

    def _attach(self) -> None:
        assert self._counter is not None
        if not self._counter.attached:
            self._counter.attach()

    def _resume(self) -> None:
        if self._pause is not None:
            self._pause.__exit__(None, None, None)
            self._pause = None

    def _pause_counter(self) -> None:
        if self._pause is None and self._counter is not None and self._counter.attached:
            self._pause = self._counter.paused()
            self._pause.__enter__()

    def _detach(self) -> None:
        self._in_batch = False
        self._resume()
        if self._counter is not None:
            self._counter.remove()

    # -------------------------------------------------------------- schedules

    def _sync_steps(self, trainer: Any) -> None:
        """Step the schedules once when the optimizer stepped since the last call (``interval="step"``): once per
        training batch that stepped, however many optimizers it stepped (Lightning's ``global_step`` counts each
        optimizer's steps: two optimizers of manual optimization made warm-ups half as long)."""
        assert self._loss_fn is not None
        step = int(trainer.global_step)
        if step > self._synced:
            self._step_loss(trainer)
        self._synced = step

    def _step_loss(self, trainer: Any) -> None:
        """One schedule step; an :class:`Iterative` target first sums its observations over the DDP ranks."""
        assert self._loss_fn is not None
        if getattr(trainer, "world_size", 1) > 1:
            specs = self._spec.values() if isinstance(self._spec, Mapping) else [self._spec]
            for spec in specs:
                if isinstance(spec, Iterative):
                    spec.synchronize(lambda t: _sum_over_ranks(trainer, t.to(self._device())).cpu())
        self._loss_fn.step()

    def _device(self) -> torch.device:
        assert self._root is not None
        return next(iter(self._root.parameters()), torch.empty(0)).device

    # -------------------------------------------------------------- layers of the terms

    def _groups(self, names: List[str], fed: List[str]) -> Dict[str, List[str]]:
        """``{term label: layers}`` as the loss resolves them."""
        if isinstance(self._spec, Mapping):
            return {n: [n] for n in self._spec}
        layers = self._loss_kwargs["layers"]
        if layers == "all":
            return {"all": list(names)}
        if layers == "driven":
            return {"driven": [n for n in names if n not in fed]}
        return {"+".join(layers): list(layers)}

    def _regularized(self, names: List[str], fed: List[str]) -> List[str]:
        seen: Dict[str, None] = {}
        for layers in self._groups(names, fed).values():
            seen.update(dict.fromkeys(layers))
        return list(seen)

    # -------------------------------------------------------------- DDP calibration

    def _add_calibration(self) -> None:
        """Sums of this calibration batch's per-term synops and samples (for the all-rank initial synops)."""
        counter = self._counter
        assert counter is not None
        assert self._loss_fn is not None
        with torch.no_grad():
            samples = float(counter.samples)
            sums = {label: v.double() * samples for label, v in self._loss_fn.term_values().items()}
        if self._cal is None:
            self._cal = {label: torch.zeros((), dtype=torch.float64, device=v.device) for label, v in sums.items()}
            self._cal["__n__"] = torch.zeros((), dtype=torch.float64, device=next(iter(sums.values())).device)
        for label, v in sums.items():
            self._cal[label] = self._cal[label] + v
        self._cal["__n__"] = self._cal["__n__"] + samples

    def _finish_calibration(self, trainer: Any) -> None:
        if self._cal is None or self._loss_fn is None or not self._loss_fn.calibrated:
            return
        labels = list(self._cal)
        total = _sum_over_ranks(trainer, torch.stack([self._cal[k] for k in labels]))
        values = dict(zip(labels, total.tolist()))
        n = values.pop("__n__")
        state = self._loss_fn.state_dict()
        for term in state["terms"]:
            if term["kind"] == "fraction" and term["label"] in values:
                term["initial"] = values[term["label"]] / n
        self._loss_fn.load_state_dict(state)
        self._cal = None

    # -------------------------------------------------------------- logging

    def _log(self, pl_module: Any, name: str, value: Union[float, Tensor], *, on_step: bool,
             prog_bar: bool = False, batch_size: int = 1) -> None:
        device = getattr(pl_module, "device", torch.device("cpu"))
        t = _f64(value, device)
        if on_step:
            pl_module.log(name, t, on_step=True, on_epoch=False, prog_bar=prog_bar, batch_size=batch_size)
        else:  # the value is the same on every rank: "max" over ranks keeps it exact
            pl_module.log(name, t, on_step=False, on_epoch=True, prog_bar=prog_bar, reduce_fx="max",
                          sync_dist=True, batch_size=batch_size)
        self._last[name] = t

    def _log_step(self, trainer: Any, pl_module: Any) -> None:
        counter, loss_fn = self._counter, self._loss_fn
        assert counter is not None and loss_fn is not None
        try:
            with torch.no_grad():
                per = counter.synops(by_layer=True, dtype=torch.float64)  # (exact counts: logged in float64)
        except RuntimeError:
            self._warn("noforward", "SynOpsRegularizer: the counted module did not run in this training batch; "
                       "nothing was counted. If training_step calls a submodule directly, pass module='name'.")
            return
        samples = counter.samples
        names = list(per)
        regularized = self._regularized(names, counter.data_fed_layers(accumulated=False))
        device = next(iter(per.values())).device
        zero = torch.zeros((), dtype=torch.float64, device=device)
        total = sum((v.double() for v in per.values()), zero)
        reg = sum((per[n].double() for n in regularized if n in per), zero)
        term = self._term.detach().double().to(device) if self._term is not None else zero
        local = torch.stack([total * samples, reg * samples, term, zero + samples, zero + 1.0])
        sums = _sum_over_ranks(trainer, local)
        p = f"{self.prefix}/train"
        self._log(pl_module, f"{p}/synops_step", sums[0] / sums[3], on_step=True, batch_size=samples)
        self._log(pl_module, f"{p}/regularized_step", sums[1] / sums[3], on_step=True, batch_size=samples,
                  prog_bar=self.prog_bar)
        if self._term is not None:
            self._log(pl_module, f"{p}/loss_step", sums[2] / sums[4], on_step=True, batch_size=samples)
            weighted = self._term.detach().double() * samples  # (the epoch's value: a mean over its samples)
            self._epoch_term = weighted if self._epoch_term is None else (
                self._epoch_term + weighted.to(self._epoch_term.device))
            self._epoch_samples += samples
        if self._term is not None:  # what the loss acts on, in its unit (synops or joules), mean over ranks
            values = loss_fn.term_values()
            value = sum((v.double().to(device) for v in values.values()), zero)
            key = "energy_step" if isinstance(loss_fn, EnergyLoss) else "value_step"
            both = _sum_over_ranks(trainer, torch.stack([value, zero + 1.0]))
            self._log(pl_module, f"{p}/{key}", both[0] / both[1], on_step=True, batch_size=samples)
        targets = loss_fn.targets()
        if all(v is not None for v in targets.values()):
            self._log(pl_module, f"{p}/target", sum(v for v in targets.values() if v is not None), on_step=True,
                      batch_size=samples)
            if len(targets) > 1:
                for label, v in targets.items():
                    self._log(pl_module, f"{p}/target/{label}", v, on_step=True, batch_size=samples)
        self._log(pl_module, f"{p}/weight", loss_fn.weight.value, on_step=True, batch_size=samples)

    def _log_epoch(self, trainer: Any, pl_module: Any) -> None:
        counter = self._counter
        assert counter is not None
        counter.reset()  # fold the last batch into the epoch totals
        try:
            snap = counter.snapshot(accumulated=True)
        except RuntimeError:  # no training batch ran
            return
        snap = snap.all_reduce()
        rows = snap.per_layer()
        fed = [n for n, s in snap.layers.items() if s.data_fed]
        regularized = self._regularized(list(rows), fed)
        p = f"{self.prefix}/train"
        total = snap.total()
        n = snap.samples
        self._log(pl_module, f"{p}/synops", total["synops"], on_step=False, batch_size=n)
        self._log(pl_module, f"{p}/regularized", sum(rows[k]["synops"] for k in regularized if k in rows),
                  on_step=False, batch_size=n)
        for key in ("dense", "eff_macs", "eff_acs"):
            self._log(pl_module, f"{p}/{key}", total[key], on_step=False, batch_size=n)
        if self.per_layer:
            for name, row in rows.items():
                self._log(pl_module, f"{p}/layer/{name}", row["synops"], on_step=False, batch_size=n)
        if self._epoch_term is not None:
            device = self._epoch_term.device
            sums = _sum_over_ranks(trainer, torch.stack([self._epoch_term, _f64(self._epoch_samples, device)]))
            self._log(pl_module, f"{p}/loss", sums[0] / sums[1], on_step=False, batch_size=n)

    # -------------------------------------------------------------- hooks

    def setup(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", stage: str) -> None:
        """Build the counter and the loss on the module the trainer fits (other stages: nothing).

        Raises
        ------
        ValueError
            A SynOpsMonitor with the same prefix also logs the training loop;
            the loss's own argument errors.
        """
        if stage != "fit":
            return
        self._trainer = trainer
        self._build(pl_module)
        clashes = [cb for cb in getattr(trainer, "callbacks", []) if isinstance(cb, SynOpsMonitor)
                   and "train" in cb.stages and cb.prefix == self.prefix]
        if clashes:
            raise ValueError(
                f"SynOpsRegularizer logs the training synops under '{self.prefix}/train/...', and a SynOpsMonitor "
                "with the same prefix and stage 'train' would log the same names (Lightning refuses that). Give "
                "the monitor stages=('validate', 'test') or another prefix."
            )

    def on_train_start(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule") -> None:
        """Schedules step from here on (after a checkpoint restored the trainer's step and this state)."""
        self._synced = int(trainer.global_step)

    def on_train_epoch_start(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule") -> None:
        """Start the epoch's totals."""
        if self._counter is None:
            return
        self._attach()
        self._counter.reset(accumulated=True)
        self._epoch_term, self._epoch_samples = None, 0

    def on_train_batch_start(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        """Reset the counter for this batch and tell it the batch's samples."""
        if self._counter is None:
            return
        self._attach()
        self._resume()
        self._counter.reset()
        if self.batch_size_fn is not None:
            self._counter.batch_size = int(self.batch_size_fn(batch))
        else:  # the counter reads the samples from the module's input; dim 0 of the batch if it is not called
            self._counter.fallback_batch_size = _fallback(batch, self._counter.batch_dim)
        if self.interval == "step":
            self._sync_steps(trainer)
        self._term = None
        self._in_batch = True

    def on_train_batch_end(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """Finish the DDP calibration, log the batch, pause the counter, step the schedules."""
        if self._counter is None or not self._in_batch:
            return
        self._in_batch = False
        if self._term is None:
            self._warn("noloss", "SynOpsRegularizer: training_step did not call .loss() in this batch, so the synops "
                       "term was not added to the loss. Add `loss = loss + self.<regularizer>.loss()`.")
        self._finish_calibration(trainer)
        self._log_step(trainer, pl_module)
        self._pause_counter()
        if self.interval == "step":
            self._sync_steps(trainer)

    def on_train_epoch_end(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule") -> None:
        """Log the epoch's synops over all its samples (and ranks); with ``interval="epoch"``, step the schedules."""
        if self._counter is None:
            return
        self._log_epoch(trainer, pl_module)
        if self.interval == "epoch" and self._loss_fn is not None:
            self._step_loss(trainer)

    def _off(self, *args: Any, **kwargs: Any) -> None:
        self._detach()

    on_sanity_check_start = _off
    on_validation_start = _off
    on_test_start = _off
    on_predict_start = _off
    on_train_end = _off
    on_fit_end = _off

    def on_exception(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", exception: BaseException) -> None:
        """Take the hooks off when fitting fails."""
        self._detach()

    def teardown(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", stage: str) -> None:
        """Take the hooks off."""
        self._detach()
        if stage == "fit":
            self._trainer = None

    # -------------------------------------------------------------- state

    def state_dict(self) -> Dict[str, Any]:
        """The loss's calibration, step and schedule states (plain Python values)."""
        loss_state = self._loss_fn.state_dict() if self._loss_fn is not None else self._pending
        return {"interval": self.interval, "loss": loss_state, "last_metrics": dict(self.last_metrics)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (applied to the loss now, or when it is built)."""
        loss_state = state_dict.get("loss")
        self._last = dict(state_dict.get("last_metrics", {}))
        if loss_state is None:
            return
        if self._loss_fn is not None:
            self._loss_fn.load_state_dict(loss_state)
        else:
            self._pending = loss_state

    def __getstate__(self) -> Dict[str, Any]:
        # a counter holds hooks on a live model: copies and pickles (ddp_spawn, SWA) keep the state, not the counter
        state = dict(self.__dict__)
        pending = self._loss_fn.state_dict() if self._loss_fn is not None else self._pending
        for key in ("_counter", "_loss_fn", "_root", "_trainer", "_pause", "_term", "_cal", "_epoch_term"):
            state[key] = None
        state["_pending"], state["_in_batch"] = pending, False
        return state

    def __repr__(self) -> str:
        spec = f"{self._kind}={self._spec!r}"
        return f"SynOpsRegularizer({spec}, interval={self.interval!r}, prefix={self.prefix!r})"


class SynOpsMonitor(_pl.Callback):
    """Log per-sample synops of a LightningModule, summed correctly across DDP ranks.

    Parameters
    ----------
    logging_interval
        ``"epoch"``: one value per epoch, averaged over all samples of all
        ranks. ``"step"``: additionally each training batch's counts (over
        all ranks' samples of that step), as ``{name}_step``.
    stages
        Which loops to count. Next to a :class:`SynOpsRegularizer` (which
        logs the training synops), use ``("validate", "test")``.
    per_layer
        Also log each layer's synops.
    batch_size_fn
        Samples of a batch; by default the counters read them from the module's input (dim 0, or
        ``counter_kwargs``' ``batch_dim`` / ``time_dim``), refusing an input they cannot read, and take dim 0
        of the batch's first tensor when only the module's submodules are called.
    prefix
        Metric names are ``{prefix}/{stage}/{key}`` (``key`` in ``synops``,
        ``dense``, ``eff_macs``, ``eff_acs``) and
        ``{prefix}/{stage}/layer/{name}`` for ``per_layer``.
    counter_kwargs
        Passed to each :class:`~synopsloss.SynOpsCounter` (e.g. ``custom_rules``).

    Raises
    ------
    ValueError
        For an unknown ``logging_interval`` or stage.

    Example
    -------
    >>> SynOpsMonitor(stages=("validate",)).state_key
    "SynOpsMonitor{prefix='synops'}"
    """

    def __init__(
        self,
        logging_interval: Literal["step", "epoch"] = "epoch",
        stages: Sequence[Stage] = ("train", "validate"),
        per_layer: bool = False,
        batch_size_fn: Optional[Callable[[Any], int]] = None,
        prefix: str = "synops",
        counter_kwargs: Optional[Dict[str, Any]] = None,
    ) -> None:
        if logging_interval not in ("step", "epoch"):
            raise ValueError(f"logging_interval must be 'step' or 'epoch', got {logging_interval!r}")
        bad = [s for s in stages if s not in _STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) {bad}; choose from {list(_STAGES)}")
        self.logging_interval = logging_interval
        self.stages = tuple(stages)
        self.per_layer = per_layer
        self.batch_size_fn = batch_size_fn
        self.prefix = prefix
        self.counter_kwargs = dict(counter_kwargs or {})
        self.counters: Dict[str, SynOpsCounter] = {}
        self._unreadable: set = set()  # stages whose batches' samples could not be read (named once)
        #: the last epoch's metrics per stage, as logged (also kept in ``state_dict``)
        self.last_metrics: Dict[str, Dict[str, float]] = {}

    @property
    def state_key(self) -> str:
        return f"SynOpsMonitor{{prefix={self.prefix!r}}}"

    # -------------------------------------------------------------- helpers

    def _counter(self, pl_module: Any, stage: str) -> SynOpsCounter:
        counter = self.counters.get(stage)
        if counter is None or counter.model is not pl_module:
            kwargs = dict(self.counter_kwargs)
            if self.batch_size_fn is not None:
                kwargs.setdefault("batch_size", 1)  # replaced by each batch's size
            counter = self.counters[stage] = SynOpsCounter(pl_module, **kwargs)
            counter.remove()
        return counter

    def _only(self, stage: str) -> None:
        """Detach the other stages' counters (validation runs inside training)."""
        for name, counter in self.counters.items():
            if name != stage and counter.attached:
                counter.remove()

    def _skip(self, trainer: Any, stage: str) -> bool:
        return stage not in self.stages or bool(getattr(trainer, "sanity_checking", False))

    def _epoch_start(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._skip(trainer, stage):
            return
        counter = self._counter(pl_module, stage)
        self._only(stage)
        counter.attach()
        counter.reset(accumulated=True)

    def _readable(self, counter: SynOpsCounter, stage: str) -> bool:
        """Whether the samples of the batch ``counter`` holds can be read (else one warning that names the
        monitor's options; the batch is then left out of the logged synops)."""
        try:
            counter.samples
        except RuntimeError:  # nothing ran in this batch
            return True
        except ValueError as err:
            if stage not in self._unreadable:
                self._unreadable.add(stage)
                warnings.warn(f"SynOpsMonitor: the {stage} batches are left out of the logged synops: {err} "
                              f"{_CALLBACK_LAYOUT.format(name='SynOpsMonitor')}", SynOpsWarning, stacklevel=4)
            return False
        return True

    def _drop_or_fold(self, counter: SynOpsCounter, stage: str) -> None:
        """``counter.reset()``: the finished batch enters the totals, or is left out (named once) when its samples
        cannot be read."""
        if self._readable(counter, stage):
            counter.reset()
            return
        with warnings.catch_warnings():  # (named above, with the monitor's options)
            warnings.simplefilter("ignore", SynOpsWarning)
            counter.reset()

    def _batch_start(self, trainer: Any, pl_module: Any, stage: str, batch: Any) -> None:
        if self._skip(trainer, stage):
            return
        counter = self._counter(pl_module, stage)
        self._only(stage)
        counter.attach()
        self._drop_or_fold(counter, stage)
        if self.batch_size_fn is not None:
            counter.batch_size = int(self.batch_size_fn(batch))
        else:  # the counter reads the samples from the module's input; dim 0 of the batch if it is not called
            counter.fallback_batch_size = _fallback(batch, counter.batch_dim)

    def _metrics(self, stage: str, counts: Dict[str, Dict[str, float]]) -> Dict[str, float]:
        base = f"{self.prefix}/{stage}"
        metrics = {f"{base}/{k}": sum(row[k] for row in counts.values()) for k in COUNT_KEYS}
        if self.per_layer:
            metrics.update({f"{base}/layer/{name}": row["synops"] for name, row in counts.items()})
        return metrics

    def _batch_end(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._skip(trainer, stage) or self.logging_interval != "step" or stage != "train":
            return
        counter = self.counters[stage]
        try:
            snap = counter.snapshot()
        except RuntimeError:  # nothing ran in this batch
            return
        names = counter.layer_names
        values = [getattr(snap.layers[n], k) if n in snap.layers else 0.0 for n in names for k in COUNT_KEYS]
        device = getattr(pl_module, "device", torch.device("cpu"))
        sums = _sum_over_ranks(trainer, torch.tensor(values + [float(snap.samples)], dtype=torch.float64,
                                                      device=device)).tolist()
        samples = sums.pop()
        table = {n: {k: sums[i * len(COUNT_KEYS) + j] / samples for j, k in enumerate(COUNT_KEYS)}
                 for i, n in enumerate(names)}
        for key, value in self._metrics(stage, table).items():
            pl_module.log(f"{key}_step", _f64(value, device), on_step=True, on_epoch=False,
                          batch_size=snap.samples)

    def _epoch_end(self, trainer: Any, pl_module: Any, stage: str) -> None:
        counter = self.counters.get(stage)
        if self._skip(trainer, stage) or counter is None:
            return
        self._drop_or_fold(counter, stage)  # fold the last batch into the totals
        counter.remove()
        try:
            snap = counter.snapshot(accumulated=True)
        except RuntimeError:  # no batch of this stage ran
            return
        snap = snap.all_reduce()
        metrics = self._metrics(stage, snap.per_layer())
        self.last_metrics[stage] = metrics
        device = getattr(pl_module, "device", torch.device("cpu"))
        for key, value in metrics.items():  # the same on every rank: "max" over ranks keeps it exact
            pl_module.log(key, _f64(value, device), on_step=False, on_epoch=True, reduce_fx="max",
                          sync_dist=True, batch_size=max(snap.samples, 1), add_dataloader_idx=False)

    # -------------------------------------------------------------- hooks

    def on_train_epoch_start(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule") -> None:
        """Attach the training counter and start the epoch's totals."""
        self._epoch_start(trainer, pl_module, "train")

    def on_train_batch_start(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        """Reset the training counter for the batch."""
        self._batch_start(trainer, pl_module, "train", batch)

    def on_train_batch_end(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """Log the batch's counts (``logging_interval="step"``)."""
        self._batch_end(trainer, pl_module, "train")

    def on_train_epoch_end(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule") -> None:
        """Log the training epoch's counts."""
        self._epoch_end(trainer, pl_module, "train")

    def on_validation_epoch_start(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule") -> None:
        """Attach the validation counter (not during the sanity check)."""
        self._epoch_start(trainer, pl_module, "validate")

    def on_validation_batch_start(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        """Reset the validation counter for the batch."""
        self._batch_start(trainer, pl_module, "validate", batch)

    def on_validation_epoch_end(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule") -> None:
        """Log the validation epoch's counts."""
        self._epoch_end(trainer, pl_module, "validate")

    def on_test_epoch_start(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule") -> None:
        """Attach the test counter."""
        self._epoch_start(trainer, pl_module, "test")

    def on_test_batch_start(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:
        """Reset the test counter for the batch."""
        self._batch_start(trainer, pl_module, "test", batch)

    def on_test_epoch_end(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule") -> None:
        """Log the test epoch's counts."""
        self._epoch_end(trainer, pl_module, "test")

    def on_exception(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", exception: BaseException) -> None:
        """Take every hook off when a loop fails."""
        for counter in self.counters.values():
            counter.remove()

    def teardown(self, trainer: "_pl.Trainer", pl_module: "_pl.LightningModule", stage: str) -> None:
        """Take every hook off."""
        for counter in self.counters.values():
            counter.remove()

    def state_dict(self) -> Dict[str, Any]:
        """The last epoch's metrics per stage."""
        return {"logging_interval": self.logging_interval, "stages": list(self.stages), "last_metrics": self.last_metrics}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.last_metrics = {k: dict(v) for k, v in state_dict.get("last_metrics", {}).items()}

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["counters"] = {}  # counters hold hooks on a live model; they are rebuilt when a loop starts
        return state
