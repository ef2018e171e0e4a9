"""SpikingJelly's ``op_counter.SynOpCounter`` as a reference, in synopsloss units.

What SynOpCounter (SpikingJelly 2.0.0, ``op_counter/synop.py`` + ``ac.py``) does:

* It is a ``TorchDispatchMode`` counter: every aten op run inside
  ``DispatchCounterMode([counter])`` is offered to it; it has rules for
  ``aten.mm``, ``addmm``, ``bmm``, ``baddbmm`` and ``convolution`` only
  (elementwise products such as ``q * kv`` in the Spike-driven Transformer are
  not counted).
* A tensor is a spike tensor when ``dtype == bool`` or every value is exactly
  0 or 1 (``x.eq(0) | x.eq(1)``, one ``.item()``). Signed spikes {-1, 0, 1},
  spike counts (residual sums of spikes: 2) and real values are not spikes.
* Per op: both operands binary -> ``out.sum()`` (the number of 1 x 1 products);
  only the input binary -> nonzero inputs x every tap they reach (``mm``:
  ``nnz * out_features``; convolution: the input convolved with an all-ones
  kernel, so border taps are exact and *zero weights are counted*); only the
  weight binary -> nonzero weights x rows; neither -> 0 (a real-valued input,
  e.g. the image fed to the first layer, gives 0, silently). ``addmm`` /
  ``baddbmm`` with ``alpha != 1`` -> 0. Biases are not counted.
* Each rule ends in ``int(... .item())``: one host sync per counted op, plus
  one per binary check.
* ``get_counts()`` returns ``{scope: {aten op: int}}`` where every op is added
  to *every* active module scope: ``"Global"``, the root's class name and
  ``"<RootClass>.<qualified name>"`` for each module on the call stack. The
  numbers are totals over the batch and all time steps (no normalisation).

:func:`sj_synops` runs it and returns per-sample numbers (divided by the
number of samples, summed over time steps) per module -- exclusive of the
module's children, so a matmul done in an attention module's own ``forward``
is attributed to that module -- per aten op, and per call.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn


@dataclass
class SJCall:
    """One op SynOpCounter counted: the innermost module running it, the aten op, and its raw count."""

    module: str
    op: str
    value: int
    shapes: Tuple[Tuple[int, ...], ...]


@dataclass
class SJCounts:
    """SynOpCounter's counts in synopsloss units (per sample, all time steps)."""

    samples: int
    total: float
    per_module: Dict[str, float]
    per_op: Dict[str, Dict[str, float]]
    calls: List[SJCall] = field(default_factory=list)
    raw: Dict[str, Dict[str, int]] = field(default_factory=dict)
    output: Any = None


def _names(parents: set, prefix: str) -> List[str]:
    out = []
    for p in parents:
        if p == prefix:
            out.append("")
        elif p.startswith(prefix + "."):
            out.append(p[len(prefix) + 1:])
    return out


def _innermost(parents: set, prefix: str) -> str:
    names = _names(parents, prefix)
    return max(names, key=lambda n: (n.count(".") + (1 if n else 0), len(n))) if names else ""


def _tracing_counter():
    from spikingjelly.activation_based.op_counter import SynOpCounter

    class TracingSynOpCounter(SynOpCounter):
        """SynOpCounter that also keeps each counted call (op, value, innermost module, operand shapes)."""

        def __init__(self, prefix: str) -> None:
            super().__init__()
            self.prefix = prefix
            self.calls: List[SJCall] = []

        def count(self, func, args, kwargs, out, active_modules=None, parent_names=None) -> int:
            value = super().count(func, args, kwargs, out, active_modules=active_modules, parent_names=parent_names)
            shapes = tuple(tuple(a.shape) for a in args if isinstance(a, Tensor))
            self.calls.append(SJCall(_innermost(parent_names or set(), self.prefix), str(func), value, shapes))
            return value

    return TracingSynOpCounter


def sj_synops(model: nn.Module, x: Any, samples: int, *, reset: bool = True, trace: bool = True) -> SJCounts:
    """Run ``model(x)`` under SpikingJelly's SynOpCounter; counts per sample, over all time steps.

    Parameters
    ----------
    model, x
        The network and its input (a tuple / list / dict is expanded as SJ's ``call_model`` does).
    samples
        Number of samples in ``x`` (SynOpCounter does not know it).
    reset
        Call ``spikingjelly.activation_based.functional.reset_net(model)`` first.
    trace
        Keep every counted call (``SJCounts.calls``); off for timing.
    """
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter
    from spikingjelly.activation_based.op_counter.base import call_model

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    prefix = type(model).__name__
    counter = _tracing_counter()(prefix) if trace else SynOpCounter()
    if reset:
        functional.reset_net(model)
    with torch.no_grad(), DispatchCounterMode([counter]):
        output = call_model(model, x)
    raw = {scope: {str(op): int(v) for op, v in ops.items()} for scope, ops in counter.get_counts().items()}
    by_name: Dict[str, Dict[str, int]] = {}
    for scope, ops in raw.items():
        names = _names({scope}, prefix)
        if names:
            by_name[names[0]] = ops
    per_op: Dict[str, Dict[str, float]] = {}
    for name, ops in by_name.items():
        # subtract the nearest descendants that ran (a ModuleList is never called: it has no scope)
        below = [d for d in by_name if d != name and (name == "" or d.startswith(name + "."))]
        nearest = [d for d in below if not any(d.startswith(e + ".") for e in below if e != d)]
        own = dict(ops)
        for d in nearest:
            for op, v in by_name[d].items():
                own[op] = own.get(op, 0) - v
        if any(v < 0 for v in own.values()):
            raise RuntimeError(f"SynOpCounter attributed more to modules inside {name!r} than to it: {own}")
        own = {op: v / samples for op, v in own.items() if v}
        if own:
            per_op[name] = own
    total = sum(raw.get("Global", {}).values()) / samples
    per_module = {n: sum(ops.values()) for n, ops in per_op.items()}
    calls = list(getattr(counter, "calls", []))
    return SJCounts(samples, total, per_module, per_op, calls, raw, output)


def median_times(model: nn.Module, x: Tensor, repeats: int = 5) -> Tuple[float, float]:
    """Median wall time (s) of a plain forward and of a forward under SynOpCounter, interleaved, after a warm-up."""
    from spikingjelly.activation_based import functional

    def plain() -> None:
        functional.reset_net(model)
        with torch.no_grad():
            model(x)

    def counted() -> None:
        sj_synops(model, x, samples=1, trace=False)

    plain(), counted()
    t_plain, t_count = [], []
    for _ in range(repeats):
        for fn, acc in ((plain, t_plain), (counted, t_count)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(t_plain), statistics.median(t_count)


def main() -> None:  # pragma: no cover - a measurement script: PYTHONPATH=. python tests/sj_reference.py
    import zoo
    import synopsloss as sl
    from spikingjelly.activation_based import functional

    torch.set_num_threads(1)
    model, x = zoo.spikformer(), zoo.image()
    plain, counted = median_times(model, x)
    print(f"small Spikformer, B={zoo.BATCH}, T={zoo.T}, 32x32, 1 thread: plain forward {plain * 1e3:.1f} ms, "
          f"under SynOpCounter {counted * 1e3:.1f} ms ({counted / plain:.1f}x), median of 5 interleaved")
    res = sj_synops(model, x, samples=zoo.BATCH)
    for call in res.calls:
        if call.op in ("aten.bmm.default", "aten.baddbmm.default"):
            print(f"  {call.module:16s} {call.op:18s} {call.shapes} -> {call.value} ({call.value / res.samples} per sample)")
    print("model | SynOpCounter per sample | of which matmuls | synopsloss synops per sample | layers SJ counts 0 "
          "(synopsloss synops there)")
    for name, (build, make_input, samples) in zoo.SJ_MODELS.items():
        model, x = build(), make_input()
        res = sj_synops(model, x, samples=samples)
        counter = sl.SynOpsCounter(model, neurons=False, batch_size=samples)
        functional.reset_net(model)
        with torch.no_grad():
            model(x)
        ours = {k: float(v) for k, v in counter.synops(by_layer=True).items()}
        counter.remove()
        mm = sum(v for ops in res.per_op.values() for op, v in ops.items() if "bmm" in op)
        zero = {k: v for k, v in ours.items() if v > 0 and k not in res.per_op}
        print(f"{name} | {res.total:,.1f} | {mm:,.1f} | {sum(ours.values()):,.1f} | {len(zero)} of {len(ours)} "
              f"({sum(zero.values()):,.1f}: {', '.join(zero)})")


if __name__ == "__main__":  # pragma: no cover
    main()
