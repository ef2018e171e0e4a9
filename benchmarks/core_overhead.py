"""Per-call cost of the counting core (issue 16), measured side by side in one run.

For a 20-layer network of ``Linear(16, 16)`` (batch 8) and of ``Conv2d(16, 16, 3, padding=1)``
(batch 8, 8x8), each followed by a ReLU, this prints:

* **forward us per counted call**: (counted forward - plain forward) / 20, with the counter
  attached (grad on: the hook records the call), against a bare forward hook that only appends
  its input to a list (the floor); for a batch's first forward (the counter reset before it: the
  batch's setup, the layers' states and each weight's nonzero pattern are made there) and for a
  second forward of the same batch (each call repeats its layer's previous one: a time step);
* **read us per layer**: ``counter.synops()`` after the forward (the recorded calls of all
  layers reduced together), divided by 20;
* **tensor ops launched per counted call**: aten ops seen by a ``TorchDispatchMode`` during a
  counted forward minus a plain one, / 20 (the hook), and during the read, / 20;
* ``no_grad`` forward + read against the plain ``no_grad`` forward (calls reduced at once).

Timing rules: one thread, variants interleaved in rotating order, >= 25 rounds (``--rounds``),
medians with quartiles; the allocator is pinned (``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_``: the script re-executes itself with them set) so that freed
buffers are not returned to the system between variants.

Usage::

    python benchmarks/core_overhead.py            # ~1 min
    python benchmarks/core_overhead.py --rounds 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # pin the allocator, then start again
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1000000000000", MALLOC_TRIM_THRESHOLD_="1000000000000",
               OMP_NUM_THREADS="1")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import synopsloss as sl  # noqa: E402

torch.set_num_threads(1)
LAYERS = 20


class OpCount(TorchDispatchMode):
    """Counts the aten ops launched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        self.n += 1
        return func(*args, **(kwargs or {}))


def network(kind: str) -> nn.Sequential:
    torch.manual_seed(0)
    layer = (lambda: nn.Linear(16, 16)) if kind == "linear" else (lambda: nn.Conv2d(16, 16, 3, padding=1))
    return nn.Sequential(*[m for _ in range(LAYERS) for m in (layer(), nn.ReLU())])


def quart(xs: List[float]) -> str:
    q = statistics.quantiles(xs, n=4)
    return f"{statistics.median(xs):8.1f} [{q[0]:.1f}, {q[2]:.1f}]"


def measure(fns: Dict[str, Callable[[], Any]], rounds: int) -> Dict[str, List[float]]:
    names = list(fns)
    out: Dict[str, List[float]] = {k: [] for k in names}
    for f in fns.values():
        f()
        f()
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            fns[k]()
            out[k].append(time.perf_counter() - t)
    return out


def bench(kind: str, rounds: int) -> None:
    net, cnet, hnet = network(kind), network(kind), network(kind)  # same weights (seeded)
    x = torch.rand(8, 16) if kind == "linear" else torch.rand(8, 16, 8, 8)
    x = (x < 0.3).float()
    seen: List[torch.Tensor] = []
    for m in hnet:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.register_forward_hook(lambda m, a, o: seen.append(a[0]))  # the floor: a hook that appends
    counter = sl.SynOpsCounter(cnet, neurons=False)

    def plain() -> None:
        net(x)

    def hooked() -> None:
        t = time.perf_counter()
        hnet(x)
        hooked.t = time.perf_counter() - t  # type: ignore[attr-defined]
        seen.clear()

    def counted() -> None:
        counter.reset()
        t = time.perf_counter()
        cnet(x)
        counted.t = time.perf_counter() - t  # type: ignore[attr-defined]
        t = time.perf_counter()
        counter.synops()
        counted.read = time.perf_counter() - t  # type: ignore[attr-defined]

    def repeated() -> None:  # a second forward in the batch: each call repeats its layer's previous one
        counter.reset()
        cnet(x)
        t = time.perf_counter()
        cnet(x)
        repeated.t = time.perf_counter() - t  # type: ignore[attr-defined]

    fwd: Dict[str, List[float]] = {"plain": [], "hook": [], "counted": [], "read": [], "repeated": []}
    for r in range(rounds + 2):
        order = [("plain", plain), ("hook", hooked), ("counted", counted), ("repeated", repeated)]
        order = order[r % 4:] + order[:r % 4]
        for name, f in order:
            t = time.perf_counter()
            f()
            dt = time.perf_counter() - t
            if r < 2:
                continue
            if name == "plain":
                fwd["plain"].append(dt)
            elif name == "hook":
                fwd["hook"].append(hooked.t)  # type: ignore[attr-defined]
            elif name == "repeated":
                fwd["repeated"].append(repeated.t)  # type: ignore[attr-defined]
            else:
                fwd["counted"].append(counted.t)  # type: ignore[attr-defined]
                fwd["read"].append(counted.read)  # type: ignore[attr-defined]
    per = lambda k: [(a - b) / LAYERS * 1e6 for a, b in zip(fwd[k], fwd["plain"])]  # noqa: E731
    print(f"\n{kind}: 20 x {'Linear(16,16), B=8' if kind == 'linear' else 'Conv2d(16,16,3,p=1), B=8, 8x8'}")
    print(f"  plain forward            {quart([t * 1e3 for t in fwd['plain']])} ms")
    print(f"  bare hook, us per call   {quart(per('hook'))}")
    print(f"  counted, us per call     {quart(per('counted'))}  (a batch's first forward: its setup too)")
    print(f"  repeated, us per call    {quart(per('repeated'))}  (a second forward of the batch)")
    print(f"  read (synops()), us/layer{quart([t / LAYERS * 1e6 for t in fwd['read']])}")

    # tensor ops launched
    counter.reset()
    with OpCount() as fw:
        cnet(x)
    with OpCount() as rd:
        counter.synops()
    counter.reset()
    with OpCount() as base:
        net(x)
    print(f"  tensor ops per counted call: forward {(fw.n - base.n) / LAYERS:.2f}, read {rd.n / LAYERS:.2f}")

    # no_grad forward + read
    def ng_plain() -> None:
        with torch.no_grad():
            net(x)

    def ng_counted() -> None:
        counter.reset()
        with torch.no_grad():
            cnet(x)
            counter.snapshot()

    t = measure({"plain": ng_plain, "counted": ng_counted}, rounds)
    ratio = [a / b for a, b in zip(t["counted"], t["plain"])]
    added = [(a - b) * 1e3 for a, b in zip(t["counted"], t["plain"])]
    print(f"  no_grad forward + snapshot: ratio {quart(ratio)}, added ms {quart(added)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    print(f"torch {torch.__version__}, 1 thread, {args.rounds} interleaved rounds; medians [quartiles]")
    for kind in ("linear", "conv"):
        bench(kind, args.rounds)


if __name__ == "__main__":
    main()
