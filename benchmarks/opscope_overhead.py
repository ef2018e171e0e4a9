"""What op-level counting (synopsloss.opscope) costs, measured side by side in one run.

1. Plain module models must not pay for it: the sinabs tutorial SNN training
   step (B=32, T=20) and a 3-conv CNN forward, with ``SynOpsCounter(ops="auto")``
   (the default) and ``ops="none"`` (module hooks only, run twice: the spread
   between the two ``none`` runs is the noise). No module of these models is
   scoped (asserted), so ``auto`` and ``none`` run the same code.
2. A small SpikingJelly Spikformer training step (B=2, T=2, 32x32, embed 32):
   plain, counter with ``ops="none"`` (no attention rows), ``ops="auto"``
   (attention products counted), ``ops="all"`` (every op of the forward), and
   a forward under SpikingJelly's own ``SynOpCounter`` for scale.

Interleaved repeats, medians. Usage:
``PYTHONPATH=.:tests python benchmarks/opscope_overhead.py [--repeats 15] [--threads 1]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict

import torch
import torch.nn as nn

import synopsloss as sl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from overhead import reset_states, sinabs_tutorial_snn, three_conv_cnn  # noqa: E402


def medians(fns: Dict[str, Callable[[], None]], repeats: int) -> Dict[str, float]:
    for fn in fns.values():
        fn()
    times: Dict[str, list] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def report(title: str, med: Dict[str, float]) -> None:
    base = med["plain"]
    print(title)
    for k, v in med.items():
        print(f"  {k:22s} {v * 1e3:8.2f} ms  {v / base:5.2f}x")


def bench_plain(repeats: int) -> None:
    B, T = 32, 20
    torch.manual_seed(0)
    x = (torch.rand(B * T, 1, 28, 28) < 0.25).float()
    y = torch.randint(0, 10, (B,))
    nets = {k: sinabs_tutorial_snn(B) for k in ("plain", "none", "auto", "none (again)")}
    state = nets["plain"].state_dict()
    for n in nets.values():
        n.load_state_dict(state)
    opts = {k: torch.optim.SGD(n.parameters(), lr=1e-3) for k, n in nets.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counters = {k: sl.SynOpsCounter(nets[k], neurons=False, ops=k.split()[0]) for k in list(nets)[1:]}
    assert not counters["auto"]._scope.active, "a plain module model must not be scoped"

    def step(kind: str) -> Callable[[], None]:
        def run() -> None:
            net = nets[kind]
            reset_states(net)
            c = counters.get(kind)
            if c is not None:
                c.reset()
            out = net(x).reshape(B, T, -1).sum(1)
            loss = nn.functional.cross_entropy(out, y)
            if c is not None:
                loss = loss + 1e-6 * c.synops()
            opts[kind].zero_grad()
            loss.backward()
            opts[kind].step()
        return run

    report(f"sinabs tutorial SNN training step (B={B}, T={T})",
           medians({k: step(k) for k in nets}, repeats))

    cnn = {k: three_conv_cnn() for k in ("plain", "none", "auto", "none (again)")}
    for n in cnn.values():
        n.load_state_dict(cnn["plain"].state_dict())
    cc = {k: sl.SynOpsCounter(cnn[k], neurons=False, ops=k.split()[0]) for k in list(cnn)[1:]}
    xi = torch.rand(64, 3, 32, 32)

    def fwd(kind: str) -> Callable[[], None]:
        def run() -> None:
            c = cc.get(kind)
            if c is not None:
                c.reset()
            with torch.no_grad():
                cnn[kind](xi)
        return run

    report("3-conv CNN forward (B=64, 32x32)", medians({k: fwd(k) for k in cnn}, repeats))


def bench_spikformer(repeats: int) -> None:
    import zoo
    from sj_reference import sj_synops
    from spikingjelly.activation_based import functional

    kinds = ("plain", "none", "auto", "all")
    nets = {k: zoo.spikformer() for k in kinds}
    counters = {k: sl.SynOpsCounter(nets[k], batch_size=zoo.BATCH, neurons=False, ops=k) for k in kinds[1:]}
    x = zoo.image(spikes=True)
    y = torch.randint(0, 10, (zoo.BATCH,))
    opts = {k: torch.optim.SGD(n.parameters(), lr=1e-4) for k, n in nets.items()}

    def step(kind: str) -> Callable[[], None]:
        def run() -> None:
            net = nets[kind]
            functional.reset_net(net)
            c = counters.get(kind)
            if c is not None:
                c.reset()
            out = net(x)
            loss = nn.functional.cross_entropy(out.mean(0) if out.dim() == 3 else out, y)
            if c is not None:
                loss = loss + 1e-9 * c.synops()
            opts[kind].zero_grad()
            loss.backward()
            opts[kind].step()
        return run

    fns = {k: step(k) for k in kinds}
    sj_net = zoo.spikformer()
    fns["SJ SynOpCounter (fwd)"] = lambda: sj_synops(sj_net, x, samples=zoo.BATCH, trace=False)
    report(f"SJ Spikformer training step (B={zoo.BATCH}, T={zoo.T}, embed 32, 1 block)", medians(fns, repeats))
    rows = [n for n in counters["auto"].snapshot().layers if ".matmul" in n]
    print(f"  attention rows with ops='auto': {rows}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=["plain", "spikformer"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), medians of {args.repeats} interleaved repeats")
    if args.only in (None, "plain"):
        bench_plain(args.repeats)
    if args.only in (None, "spikformer"):
        bench_spikformer(args.repeats)


if __name__ == "__main__":
    main()
