"""Small composable schedules for the synops target and the loss weight.

In the style of ``torch.optim.lr_scheduler``, but not tied to an optimizer:
a schedule holds a step counter, :attr:`Schedule.value` is its value at the
current step and :meth:`Schedule.step` advances it by one. What a step means
is up to you: call ``step()`` once per batch, or once per epoch. Steps are
explicit: nothing advances on its own. :meth:`Schedule.at` gives the value at
any step without changing the state.

Schedules compose: :class:`Warmup` wraps another schedule, :class:`Sequential`
runs several one after the other (like ``torch.optim.lr_scheduler.SequentialLR``)
and ``a * b`` multiplies two schedules (or a schedule and a number).

``state_dict()`` / ``load_state_dict()`` hold the step and the parameters,
nested for composite schedules, so a checkpoint resumes exactly.

One schedule depends on training itself: :class:`Iterative` (Sorbaro et al.
2020) sets each stage's synops target from the synops the network achieved at
the end of the stage before. :class:`~synopsloss.SynOpsLoss` feeds it the
synops of every batch (``target=Iterative(...)``).

Example
-------
>>> from synopsloss import schedules
>>> s = schedules.Warmup(schedules.Cosine(1.0, 0.5, steps=10), steps=2)
>>> [round(s.at(k), 3) for k in (0, 1, 2, 10)]
[0.0, 0.494, 0.952, 0.5]
>>> s.step(); round(s.value, 4)
0.4939
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ._validate import check_int, check_number

__all__ = [
    "Schedule",
    "Constant",
    "Linear",
    "Cosine",
    "Exponential",
    "Milestones",
    "Warmup",
    "Sequential",
    "Product",
    "Iterative",
    "as_schedule",
]

Number = Union[int, float]


def _number(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    return check_number(name, value, positive=positive, nonnegative=nonnegative)


def _steps(name: str, value: Any, minimum: int = 1) -> int:
    return check_int(name, value, minimum=minimum)


class Schedule:
    """Base class: a value as a function of an integer step.

    Subclasses implement :meth:`at` (a pure function of the step) and list
    their parameters in ``_params`` (and child schedules in ``_children``).
    """

    _params: Sequence[str] = ()
    _children: Sequence[str] = ()

    def __init__(self) -> None:
        self.last_step = 0

    def at(self, step: int) -> float:
        """The value at ``step`` (>= 0), without changing the state."""
        raise NotImplementedError

    @property
    def value(self) -> float:
        """The value at the current step."""
        return self.at(self.last_step)

    def step(self) -> None:
        """Advance by one step (one batch or one epoch, as you choose).

        Composite schedules evaluate their children at the parent's own step
        (``child.at(k)``), so children are not stepped: a schedule shared by
        a composite and by another user (e.g. the loss weight) advances once.
        """
        self.last_step += 1

    def state_dict(self) -> Dict[str, Any]:
        """The step, the parameters and the children's state (plain Python values)."""
        state: Dict[str, Any] = {"type": type(self).__name__, "last_step": self.last_step}
        for name in self._params:
            value = getattr(self, name)
            state[name] = list(value) if isinstance(value, (list, tuple)) else value
        for name in self._children:
            child = getattr(self, name)
            state[name] = [c.state_dict() for c in child] if isinstance(child, list) else child.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises
        ------
        ValueError
            When ``state`` was saved from a different kind of schedule.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"{type(self).__name__}.load_state_dict takes the dict state_dict() returned, got "
                            f"{type(state).__name__}")
        kind = state.get("type")
        if kind != type(self).__name__:
            raise ValueError(f"cannot load the state of a {kind} schedule into a {type(self).__name__}")
        self._check_state(state)
        self.last_step = int(state["last_step"])
        for name in self._params:
            if name in state:
                current = getattr(self, name)
                value = state[name]
                setattr(self, name, list(value) if isinstance(current, list) else value)
        for name in self._children:
            child = getattr(self, name)
            if isinstance(child, list):
                if len(state[name]) != len(child):
                    raise ValueError(f"{name}: saved {len(state[name])} schedules, this one has {len(child)}")
                for c, s in zip(child, state[name]):
                    c.load_state_dict(s)
            else:
                child.load_state_dict(state[name])

    def _check_state(self, state: Mapping[str, Any]) -> None:
        """The loaded parameters pass the constructor's checks (a NaN start or zero steps would give NaN or raise
        ZeroDivisionError later); the children check their own states."""
        try:
            step = state["last_step"]
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"last_step must be an int >= 0, got {step!r}")
            kwargs = {("value" if name == "constant" else name): state.get(name, getattr(self, name))
                      for name in self._params}
            for name in self._children:  # placeholders: the children are checked when they load their state
                child = getattr(self, name)
                kwargs[name] = [1.0] * len(child) if isinstance(child, list) else 1.0
            type(self)(**kwargs)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"cannot load this state into a {type(self).__name__}: {err}") from None

    def __mul__(self, other: Union["Schedule", Number]) -> "Product":
        return Product(self, other)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        parts = [f"{n}={getattr(self, n)!r}" for n in self._params]
        parts += [f"{n}={getattr(self, n)!r}" for n in self._children]
        return f"{type(self).__name__}({', '.join(parts)}; step={self.last_step})"


class Constant(Schedule):
    """Always ``value``.

    Example
    -------
    >>> Constant(0.3).at(100)
    0.3
    """

    _params = ("constant",)

    def __init__(self, value: Number) -> None:
        super().__init__()
        self.constant = _number("value", value)

    def at(self, step: int) -> float:
        return self.constant


class _Ramp(Schedule):
    """A schedule from ``start`` (step 0) to ``end`` (step ``steps``), ``end`` afterwards."""

    _params = ("start", "end", "steps")

    def __init__(self, start: Number, end: Number, steps: int) -> None:
        super().__init__()
        self.start, self.end = _number("start", start), _number("end", end)
        self.steps = _steps("steps", steps)


class Linear(_Ramp):
    """From ``start`` at step 0 to ``end`` at step ``steps``, linearly; ``end`` afterwards.

    Example
    -------
    >>> Linear(1.0, 0.5, steps=10).at(4)
    0.8
    """

    def at(self, step: int) -> float:
        f = min(step, self.steps) / self.steps
        return self.start + (self.end - self.start) * f


class Cosine(_Ramp):
    """Half a cosine from ``start`` (step 0) to ``end`` (step ``steps``); ``end`` afterwards.

    ``end + (start - end) * (1 + cos(pi * k / steps)) / 2``, as
    ``torch.optim.lr_scheduler.CosineAnnealingLR`` without restarts.

    Example
    -------
    >>> Cosine(1.0, 0.0, steps=4).at(2)
    0.5
    """

    def at(self, step: int) -> float:
        k = min(step, self.steps)
        return self.end + (self.start - self.end) * (1.0 + math.cos(math.pi * k / self.steps)) / 2.0


class Exponential(Schedule):
    """``start * gamma ** k``, optionally bounded by ``limit`` (a floor when decaying, a ceiling when growing).

    Example
    -------
    >>> Exponential(1.0, 0.5).at(3)
    0.125
    >>> Exponential(1.0, 0.5, limit=0.3).at(3)
    0.3
    """

    _params = ("start", "gamma", "limit")

    def __init__(self, start: Number, gamma: Number, limit: Union[Number, None] = None) -> None:
        super().__init__()
        self.start = _number("start", start)
        self.gamma = _number("gamma", gamma, positive=True)
        self.limit = None if limit is None else _number("limit", limit)

    def at(self, step: int) -> float:
        try:
            v = self.start * self.gamma ** step
        except OverflowError:  # (gamma > 1 over very many steps)
            v = math.inf
        if v == math.inf and (self.limit is None or self.gamma < 1):
            raise OverflowError(f"Exponential: start * gamma ** {step} overflows; give limit= (a ceiling) for a "
                                "growing schedule")
        if self.limit is None or self.gamma == 1.0:
            return v
        return max(v, self.limit) if self.gamma < 1 else min(v, self.limit)


class Milestones(Schedule):
    """``start`` multiplied by ``gamma`` at each milestone reached (``torch``'s ``MultiStepLR``).

    Example
    -------
    >>> s = Milestones(1.0, milestones=[2, 5], gamma=0.5)
    >>> [s.at(k) for k in (0, 1, 2, 4, 5, 9)]
    [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """

    _params = ("start", "milestones", "gamma")

    def __init__(self, start: Number, milestones: Sequence[int], gamma: Number) -> None:
        super().__init__()
        self.start = _number("start", start)
        self.gamma = _number("gamma", gamma, positive=True)
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
            raise TypeError(f"milestones must be a list of steps (ints), got {milestones!r}")
        ms = [_steps("milestones[i]", m, 0) for m in milestones]
        if ms != sorted(ms):
            raise ValueError(f"milestones must be increasing, got {list(milestones)!r}")
        self.milestones = ms

    def at(self, step: int) -> float:
        return self.start * self.gamma ** sum(1 for m in self.milestones if step >= m)


class Warmup(Schedule):
    """Scale ``schedule`` by a factor rising linearly from ``start_factor`` (step 0) to 1 (step ``steps``).

    ``schedule.at(k) * (start_factor + (1 - start_factor) * min(k, steps) / steps)``:
    e.g. a loss weight that starts at zero so the network first learns the task.

    Example
    -------
    >>> Warmup(Constant(0.4), steps=4).at(1)
    0.1
    """

    _params = ("steps", "start_factor")
    _children = ("schedule",)

    def __init__(self, schedule: Union[Schedule, Number], steps: int, start_factor: Number = 0.0) -> None:
        super().__init__()
        self.schedule = _child(schedule, "schedule", "Warmup")
        self.steps = _steps("steps", steps)
        self.start_factor = _number("start_factor", start_factor, nonnegative=True)
        if self.start_factor > 1:
            raise ValueError(f"Warmup: start_factor must be in [0, 1] (the factor rises from it to 1), got "
                             f"{self.start_factor}; to start high and come down use Linear(start, end, steps)")

    def at(self, step: int) -> float:
        f = self.start_factor + (1.0 - self.start_factor) * min(step, self.steps) / self.steps
        return self.schedule.at(step) * f


class Sequential(Schedule):
    """Run ``schedules[i]`` from ``milestones[i-1]`` to ``milestones[i]``, each restarting at its own step 0.

    Like ``torch.optim.lr_scheduler.SequentialLR``: ``len(milestones) ==
    len(schedules) - 1``.

    Example
    -------
    >>> s = Sequential([Constant(1.0), Linear(1.0, 0.5, steps=5)], milestones=[3])
    >>> [s.at(k) for k in (0, 2, 3, 4, 8, 20)]
    [1.0, 1.0, 1.0, 0.9, 0.5, 0.5]
    """

    _params = ("milestones",)
    _children = ("schedules",)

    def __init__(self, schedules: Sequence[Union[Schedule, Number]], milestones: Sequence[int]) -> None:
        super().__init__()
        for what, seq in (("schedules", schedules), ("milestones", milestones)):
            if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
                raise TypeError(f"Sequential: {what} must be a list, got {seq!r}")
        self.schedules = [_child(s, f"schedules[{i}]", "Sequential") for i, s in enumerate(schedules)]
        ms = [_steps("milestones[i]", m, 1) for m in milestones]
        if len(ms) != len(self.schedules) - 1:
            raise ValueError(
                f"Sequential needs len(milestones) == len(schedules) - 1, got {len(ms)} milestones "
                f"for {len(self.schedules)} schedules"
            )
        if ms != sorted(set(ms)):
            raise ValueError(f"milestones must be strictly increasing, got {list(milestones)!r}")
        self.milestones = ms

    def at(self, step: int) -> float:
        begin = 0
        for sched, end in zip(self.schedules, self.milestones + [None]):
            if end is None or step < end:
                return sched.at(step - begin)
            begin = end
        raise AssertionError("unreachable")  # pragma: no cover

    def step(self) -> None:
        # children are evaluated at local steps from the parent's counter: they hold no own progress
        self.last_step += 1


class Product(Schedule):
    """The product of two schedules (or a schedule and a number): ``a * b``.

    Example
    -------
    >>> (Linear(1.0, 0.0, steps=10) * 2).at(5)
    1.0
    """

    _children = ("a", "b")

    def __init__(self, a: Union[Schedule, Number], b: Union[Schedule, Number]) -> None:
        super().__init__()
        self.a, self.b = _child(a, "a", "Product"), _child(b, "b", "Product")

    def at(self, step: int) -> float:
        return self.a.at(step) * self.b.at(step)


def as_schedule(value: Union[Schedule, Number], name: str = "value") -> Schedule:
    """A :class:`Schedule` as is; a number as :class:`Constant`.

    Raises
    ------
    TypeError
        For anything else.
    """
    if isinstance(value, Schedule):
        return value
    number = plain_number(value)
    if number is not None:
        return Constant(number)
    raise TypeError(f"{name} must be a number or a synopsloss.schedules.Schedule, got {type(value).__name__}"
                    + (" (pass float(value))" if hasattr(value, "item") else ""))


def plain_number(value: Any) -> Optional[Union[int, float]]:
    """``value`` as a Python int or float when it is a real number (a NumPy scalar too: ``np.float32(0.5)``), else
    ``None`` (bools, arrays and tensors are no numbers here).

    Example
    -------
    >>> import numpy as np
    >>> plain_number(np.float32(0.5)), plain_number(3), plain_number(True), plain_number(np.array([1.0]))
    (0.5, 3, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or hasattr(value, "shape") and value.shape:
        return None
    if isinstance(value, (int, float)):
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _child(value: Union[Schedule, Number], name: str, parent: str) -> Schedule:
    """``as_schedule`` for the child of a composite: an :class:`Iterative` cannot be one."""
    sched = as_schedule(value, name)
    if isinstance(sched, Iterative):
        raise TypeError(
            f"{parent}: {name} is an Iterative schedule, which sets its targets from the synops it observes and "
            "advances with its own step; it cannot be wrapped. Pass it directly as SynOpsLoss(target=...) and put "
            "warm-ups or factors on the weight= schedule instead."
        )
    return sched


class Iterative(Schedule):
    """Sorbaro et al. 2020's iterative target: each stage aims at ``factor`` x the synops achieved in the stage before.

    Training is split into stages of ``stage_steps`` steps (a step is whatever
    you call :meth:`step` on: a batch, or an epoch). While a stage runs,
    :meth:`observe` receives the synops per sample of each batch
    (:class:`~synopsloss.SynOpsLoss` does this itself when this schedule is its
    ``target=``). When a stage ends, the next stage's target becomes
    ``factor`` x the per-sample mean of the observations made during the
    stage's last ``window`` steps (each batch weighs as its samples),
    floored at ``min_target``. After ``stages`` stages the
    last target is kept.

    The first stage's target is ``start`` (synops per sample) or, with
    ``start=None``, ``factor`` x the first observation (the loss observes a
    batch before it reads the target, so the first batch sets it).

    Source: M. Sorbaro, Q. Liu, M. Bortone, S. Sheik, "Optimizing the energy
    consumption of spiking neural networks for neuromorphic applications",
    Front. Neurosci. 14:662 (2020): train towards a synops target, then lower
    the target from what was reached, stage after stage.

    :meth:`at` gives the target of a stage already reached; for a later stage
    it gives the plan assuming every stage reaches its target exactly (the
    current target x ``factor`` per stage ahead). Use it as the ``target=`` of
    a loss only: it cannot be wrapped by :class:`Warmup`, :class:`Sequential`
    or a product (its targets come from observations, not from the step).

    Parameters
    ----------
    factor
        Each stage's target as a fraction of what the stage before achieved, in (0, 1].
    stage_steps
        Steps per stage (>= 1).
    start
        The first stage's target in synops per sample (> 0), or ``None``: ``factor`` x the first observation.
    stages
        Number of stages whose target is lowered; afterwards the target stays (``None``: no limit).
    window
        Steps at the end of a stage whose observations define "achieved" (1 to ``stage_steps``;
        default 1: the stage's last step, e.g. its last epoch when a step is an epoch).
    min_target
        The target never goes below this (synops per sample; default 0: no floor).

    Raises
    ------
    ValueError
        On a ``factor`` outside (0, 1], non-positive ``stage_steps`` / ``start``, or a ``window``
        outside 1..``stage_steps``.

    Example
    -------
    >>> it = Iterative(factor=0.5, stage_steps=2, start=100.0)
    >>> for synops in (90.0, 60.0, 40.0):   # one batch per step
    ...     it.observe(synops); it.step()
    >>> it.stage_targets, it.achieved     # stage 2 aims at 0.5 x 60 (the last step of stage 1)
    ([100.0, 30.0], [60.0])
    >>> it.value, it.at(4)                # the plan for stage 3: 0.5 x 30
    (30.0, 15.0)
    """

    _params = ("factor", "stage_steps", "start", "stages", "window", "min_target")

    def __init__(self, factor: Number = 0.5, stage_steps: int = 1, *, start: Optional[Number] = None,
                 stages: Optional[int] = None, window: int = 1, min_target: Number = 0.0) -> None:
        super().__init__()
        self.factor = _number("factor", factor, positive=True)
        if self.factor > 1:
            raise ValueError(f"factor must be in (0, 1] (each stage asks for at most what was achieved), got {factor!r}")
        self.stage_steps = _steps("stage_steps", stage_steps)
        self.start = None if start is None else _number("start", start, positive=True)
        self.stages = None if stages is None else _steps("stages", stages)
        self.window = _steps("window", window)
        if self.window > self.stage_steps:
            raise ValueError(f"window ({window}) must be at most stage_steps ({stage_steps}): it counts the last "
                             "steps of a stage")
        self.min_target = _number("min_target", min_target, nonnegative=True)
        self.stage_targets: List[float] = [] if start is None else [float(self.start)]  # type: ignore[arg-type]
        self.achieved: List[float] = []   # achieved synops per sample at the end of each finished stage
        self._steps: List[List[Any]] = []  # [sum, count] of the observations of the stage's recent steps
        self._current: List[Any] = [0.0, 0]
        # start=None: [sum, count] of the observation that set the first target, until synchronize() reads it
        self._first: Optional[List[Any]] = None

    # ------------------------------------------------------------------ observations

    def observe(self, synops: Union[Number, Any], samples: int = 1) -> None:
        """Record the synops per sample of one batch (a number or a 0-dim tensor; tensors stay on their device)
        and its number of samples: what a stage achieved is the per-sample average over the samples of its last
        ``window`` steps, so a short last batch of an epoch weighs as its samples (``SynOpsLoss`` passes them).

        Raises
        ------
        ValueError
            On a negative or non-finite number.
        """
        if hasattr(synops, "detach"):
            value: Any = synops.detach().double().reshape(())
        else:
            value = _number("synops", synops, nonnegative=True)
        if not self.stage_targets:  # start=None: the first batch sets the first target
            first = float(value)
            if not (math.isfinite(first) and first > 0):
                raise ValueError(
                    f"Iterative: the first observed synops are {first}: factor x zero is no usable target. Give "
                    "start= (synops per sample) or check that the network spikes."
                )
            self.stage_targets.append(max(self.factor * first, self.min_target))
            self._first = [value * check_int("samples", samples, minimum=1), samples]
        n = check_int("samples", samples, minimum=1)
        self._current = [self._current[0] + value * n, self._current[1] + n]

    def synchronize(self, reduce: Callable[[Any], Any]) -> None:
        """Sum the observations over processes before the step that ends a stage (data parallel training).

        ``reduce`` takes a float64 tensor ``[k, 2]`` (sums and counts of the
        stage's recent steps) and returns its sum over processes. It is
        called only when the next :meth:`step` ends a stage, which every
        process reaches at the same step, so the ranks agree on the next
        target. With ``start=None`` it is also called once after the first
        observation, which every process makes on its first batch: the first
        target is then ``factor`` x the mean over every process's samples.
        Otherwise this does nothing.
        """
        import torch

        if self._first is not None:
            s, c = reduce(torch.tensor([[float(self._first[0]), float(self._first[1])]], dtype=torch.float64)
                          ).reshape(-1).tolist()
            self._first = None
            if len(self.stage_targets) == 1 and c > 0:
                self.stage_targets[0] = max(self.factor * s / c, self.min_target)
        if not self._ends_stage(self.last_step + 1):
            return

        entries = self._steps + [self._current]
        rows = [torch.stack([torch.as_tensor(s, dtype=torch.float64).reshape(()).cpu(),
                             torch.tensor(float(c), dtype=torch.float64)]) for s, c in entries]
        total = reduce(torch.stack(rows)).tolist()
        *self._steps, self._current = [[float(s), int(round(c))] for s, c in total]

    # ------------------------------------------------------------------ schedule

    def _ends_stage(self, step: int) -> bool:
        finished = step // self.stage_steps
        return step % self.stage_steps == 0 and (self.stages is None or finished <= self.stages)

    def step(self) -> None:
        """Advance one step; at the end of a stage set the next stage's target from what it achieved.

        Raises
        ------
        RuntimeError
            When a stage ends without any observation in its last ``window`` steps.
        """
        self._steps.append(self._current)
        self._current = [0.0, 0]
        self._steps = self._steps[-self.window:]
        self.last_step += 1
        if not self._ends_stage(self.last_step):
            return
        total = sum(float(s) for s, _ in self._steps)
        count = sum(c for _, c in self._steps)
        if count == 0 or not self.stage_targets:
            raise RuntimeError(
                f"Iterative: stage {len(self.achieved) + 1} ended at step {self.last_step} with no synops observed in "
                f"its last {self.window} step(s). Pass it as SynOpsLoss(target=...), which observes each batch, "
                "or call observe(synops) per batch."
            )
        achieved = total / count
        if not (math.isfinite(achieved) and achieved >= 0):
            raise ValueError(f"Iterative: the synops observed in stage {len(self.achieved) + 1} average {achieved}; "
                             "observe() takes the synops per sample of each batch (finite, >= 0)")
        self.achieved.append(achieved)
        self.stage_targets.append(max(self.factor * achieved, self.min_target))
        self._steps = []

    def at(self, step: int) -> float:
        """The target of the stage holding ``step`` (for a stage not reached yet: the plan, see the class)."""
        if not self.stage_targets:
            raise RuntimeError(
                "Iterative(start=None) has no target before its first observation: use it as "
                "SynOpsLoss(target=...), which observes each training batch (a loss call with gradients on) before "
                "reading the target; a call without gradients (validation) before the first training batch has "
                "none: run a training batch first, or give start="
            )
        stage = step // self.stage_steps
        if self.stages is not None:
            stage = min(stage, self.stages)
        known = len(self.stage_targets) - 1
        if stage <= known:
            return self.stage_targets[stage]
        return max(self.stage_targets[-1] * self.factor ** (stage - known), self.min_target)

    @property
    def stage(self) -> int:
        """The stage of the current step, from 0 (stays at ``stages`` once every stage is done)."""
        k = self.last_step // self.stage_steps
        return k if self.stages is None else min(k, self.stages)

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["stage_targets"] = list(self.stage_targets)
        state["achieved"] = list(self.achieved)
        state["observations"] = [[float(s), int(c)] for s, c in self._steps + [self._current]]
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.stage_targets = [float(v) for v in state["stage_targets"]]
        self.achieved = [float(v) for v in state["achieved"]]
        *steps, current = [[float(s), int(c)] for s, c in state["observations"]]
        self._steps, self._current = steps, current
