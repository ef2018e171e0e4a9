"""Tensor ops the counter launches per counted layer call (aten calls seen by a ``TorchDispatchMode``).

On a GPU each aten call that runs a kernel is one launch (5-10 us of launch latency each), so the ops a
counted call adds matter more than their arithmetic. This script counts, on any device, the aten calls of

* a plain forward pass of a small snntorch-style loop (a model called once per time step), and the same
  forward with ``SynOpsCounter(net, neurons=False)`` attached: the difference divided by the counted
  layer calls is the counter's **ops per counted call** (the hooks record the call; no tensor op is
  expected there);
* the read (``counter.synops()``, what ``SynOpsLoss`` reads once per batch): its ops do not grow with the
  number of calls, only with the number of distinct input shapes (the calls are reduced together);
* the backward of ``task loss + synops``, against the plain backward.

The count includes view ops (``aten.view``, ``aten.t``) that launch no kernel: an upper bound of launches.
``LAUNCH_BOUND`` is the figure ``tests/test_launches.py`` asserts (measured: see ``benchmarks/results``).

Usage::

    python benchmarks/launches.py               # CPU
    python benchmarks/launches.py --device cuda  # also runs the counted step under set_sync_debug_mode("error")
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import synopsloss as sl

#: measured bounds asserted by tests/test_launches.py (aten calls, CPU, torch 2.13; see docs/scaling.md):
#: forward ops the hooks add per counted call -- none for the layers themselves; the average-pool
#: spike-event check added 9 per pool call (3 per counted call of :func:`snn`), 7 since it reads ``|frac(x)|``
#: (2.33 per counted call); since the first call of each weight in a batch takes its nonzero pattern (one
#: cast of the weight to bool per layer and batch: 3 per 12 calls of :func:`mlp`), 0.25 and 2.58
FORWARD_BOUND = {"mlp": 0.25, "snn": 2.75}
#: extra read ops (``counter.synops()``) per extra counted call: :func:`mlp` one (a reshape per call in the
#: stacked reduction; measured 1.0), :func:`snn` 12.67 measured at 4c7126d and 13.33 at main 7670662
#: (its calls after the average pool are reduced one at a time, about 38-40 ops per step); 15.33 since the
#: CPU sums its per-neuron column sums as one product with ones (``new_ones`` + ``mm``: faster than a sum
#: over the first dim there; on CUDA the sum is kept, one op); 12.33 since a pooled call takes its events
#: from its column sums; 13.33 since the spike test of a pooled call is exact (its max and sums read on the host)
READ_GROWTH_BOUND = {"mlp": 1, "snn": 16}


class AtenCounter(TorchDispatchMode):
    """Counts every aten call dispatched inside the block (``.total``; ``.ops``: per op name)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def mlp(device: str) -> nn.Sequential:
    """Linear - ReLU - Linear - ReLU - Linear: three counted layers, nothing else to watch."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 4)).to(device)


def snn(device: str) -> nn.Sequential:
    """Conv - ReLU - pool - Linear - ReLU - Linear: three counted layers, one AvgPool (the event correction)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 4),
    ).to(device)


MODELS = {"mlp": mlp, "snn": snn}


def measure(model: str = "snn", device: str = "cpu", steps: int = 8, batch: int = 6) -> Dict[str, float]:
    """Aten calls of a plain and a counted forward / read / backward of ``steps`` calls of a model of
    :data:`MODELS` (each has three counted layers)."""
    g = torch.Generator().manual_seed(1)
    xs = [(torch.rand(batch, 2, 8, 8, generator=g) < 0.3).float().to(device) for _ in range(steps)]
    out: Dict[str, float] = {}
    for counted in (False, True):
        net = MODELS[model](device)
        counter = sl.SynOpsCounter(net, neurons=False, check_finite=False) if counted else None
        for _ in range(2):  # the second pass is measured: maps are cached, buffers allocated
            if counter is not None:
                counter.reset()
            net.zero_grad()
            fwd, read, bwd = AtenCounter(), AtenCounter(), AtenCounter()
            with fwd:
                y = sum(net(x) for x in xs)
            with read:
                loss = y.square().mean() + (counter.synops() if counter is not None else 0)
            with bwd:
                loss.backward()
        key = "counted" if counted else "plain"
        out[f"{key}_forward"], out[f"{key}_read"], out[f"{key}_backward"] = fwd.total, read.total, bwd.total
    calls = 3 * steps  # counted layer calls: three per step
    out["calls"] = calls
    out["ops_per_counted_call"] = (out["counted_forward"] - out["plain_forward"]) / calls
    out["read_ops"] = out["counted_read"] - out["plain_read"]
    out["backward_ops_extra"] = out["counted_backward"] - out["plain_backward"]
    return out


def sync_free_step(device: str = "cuda") -> None:
    """A counted training step (forward, SynOpsLoss, backward, SGD) under ``set_sync_debug_mode("error")``."""
    net = snn(device)
    counter = sl.SynOpsCounter(net, neurons=False, check_finite=False)
    loss_fn = sl.SynOpsLoss(counter, target=100.0)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = (torch.rand(6, 2, 8, 8) < 0.3).float().to(device)
    for _ in range(3):
        counter.reset()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss = (net(x) + net(x)).square().mean() + loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad()
        finally:
            torch.cuda.set_sync_debug_mode(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    for model in MODELS:
        for steps in (args.steps, 2 * args.steps):
            res = measure(model, args.device, steps)
            print(json.dumps({"model": model, "device": args.device, "steps": steps, **res}))
    if args.device.startswith("cuda"):
        sync_free_step(args.device)
        print("counted training step under set_sync_debug_mode('error'): no host-device sync")


if __name__ == "__main__":
    main()
