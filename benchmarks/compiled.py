"""The overhead of counting inside a ``torch.compile``-d training step, against the same step uncounted.

Four variants of one training step (forward over ``T`` time steps, loss, backward, SGD step) of the same
network with the same weights: eager and ``torch.compile(net)`` (default settings), each without and
with ``SynOpsCounter(net, neurons=False)`` + ``SynOpsLoss(counter, fraction=0.5)`` in the loss. Under
compile the counter's hooks run eagerly between the compiled graphs (graph breaks at every counted
layer), so the counted compiled step also loses the fusion across layers; this measures what that costs.
Times are medians over interleaved rounds (every variant once per round, in rotating order); the compile
time itself (first call) is reported apart.

Usage::

    python benchmarks/compiled.py                 # CPU, about 1 min on 2 cores (most of it compiling)
    python benchmarks/compiled.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch
from torch import nn

import synopsloss as sl


class CountedNet(nn.Sequential):
    """The counted variants' class. torch.compile reuses a graph compiled for another instance of the same
    class without re-checking its hooks (``torch._dynamo.config.skip_nnmodule_hook_guards``, True by
    default), so a counted instance compiled after an uncounted one of the same class would run none of
    the counter's hooks (docs/scaling.md)."""


def build(device: str, counted: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    cls = CountedNet if counted else nn.Sequential
    return cls(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).to(device)


def variant(compiled: bool, counted: bool, device: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    net = build(device, counted)
    counter = sl.SynOpsCounter(net, neurons=False, check_finite=False) if counted else None
    loss_fn = sl.SynOpsLoss(counter, fraction=0.5) if counter is not None else None
    model = torch.compile(net) if compiled else net
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step() -> None:
        if counter is not None:
            counter.reset()
        out = sum(model(x[:, t]) for t in range(x.shape[1]))
        loss = nn.functional.cross_entropy(out, y)
        if loss_fn is not None:
            loss = loss + loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad()
        sync()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="time steps (calls of the model) per training step")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, args.steps, 128, generator=g) < 0.2).float().to(args.device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(args.device)
    names = ["eager plain", "eager counted", "compiled plain", "compiled counted"]
    fns: Dict[str, Callable[[], None]] = {}
    for name in names:
        fns[name] = variant(name.startswith("compiled"), name.endswith("counted"), args.device, x, y)
        t0 = time.perf_counter()
        fns[name]()  # first call: compiles
        fns[name]()
        print(f"{name}: first two calls (compile) {time.perf_counter() - t0:.1f} s")
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % 4:] + names[:r % 4]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"\n{args.device}, torch {torch.__version__}, B={args.batch}, T={args.steps}, {args.rounds} rounds")
    for n in names:
        print(f"  {n:17s} {med[n] * 1e3:8.2f} ms")
    print(f"  counted / plain, eager:    {med['eager counted'] / med['eager plain']:.2f}x")
    print(f"  counted / plain, compiled: {med['compiled counted'] / med['compiled plain']:.2f}x")
    print(f"  compiled counted / eager counted: {med['compiled counted'] / med['eager counted']:.2f}x")


if __name__ == "__main__":
    main()
