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
from typing import Any, Dict, Sequence, Union

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
        kind = state.get("type")
        if kind != type(self).__name__:
            raise ValueError(f"cannot load the state of a {kind} schedule into a {type(self).__name__}")
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
        v = self.start * self.gamma ** step
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
        self.schedule = as_schedule(schedule, "schedule")
        self.steps = _steps("steps", steps)
        self.start_factor = _number("start_factor", start_factor, nonnegative=True)

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
        self.schedules = [as_schedule(s, f"schedules[{i}]") for i, s in enumerate(schedules)]
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
        self.a, self.b = as_schedule(a, "a"), as_schedule(b, "b")

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
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Constant(value)
    raise TypeError(f"{name} must be a number or a synopsloss.schedules.Schedule, got {type(value).__name__}")
