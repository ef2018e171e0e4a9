"""Soak test: a long training run with the counter and the synops loss must not leak.

Trains a small snntorch network (Linear-Leaky-Linear-Leaky, 10 time steps, batch 16) for
``--steps`` optimizer steps with ``task loss + SynOpsLoss`` (or the raw ``counter.synops()``
term with ``--loss raw``). Every ``--every`` steps it prints the process' current and peak RSS
and the number of live tensors (objects tracked by the garbage collector that are tensors),
then a verdict: after warm-up (the first report) both must stay flat.

Run::

    python benchmarks/soak.py                 # 1000 steps, SynOpsLoss
    python benchmarks/soak.py --loss raw      # counter.synops() directly in the loss

Exit status 1 when the verdict is "grows".
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

import synopsloss as sl


def live_tensors() -> int:
    """Tensors reachable by the garbage collector (parameters, optimizer state, counters, ...)."""
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some lazily deprecated torch objects warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def build_net() -> nn.Module:
    import snntorch as snn

    return nn.Sequential(
        nn.Linear(20, 64), snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(64, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )


def soak(steps: int = 1000, every: int = 100, loss_kind: str = "synopsloss", seed: int = 0,
         verbose: bool = True, on_step: Optional[Callable[[int, sl.SynOpsCounter], None]] = None,
         ) -> List[Dict[str, float]]:
    """Run the training loop; return one record per report: step, rss_mb, peak_rss_mb, tensors, synops.

    ``on_step(step, counter)`` is called after each optimizer step (the tests use it to plant a
    deliberate leak and check that the measurement sees it).

    Example
    -------
    >>> records = soak(steps=20, every=10, verbose=False)  # doctest: +SKIP
    >>> [r["step"] for r in records]  # doctest: +SKIP
    [10, 20]
    """
    from snntorch import utils as snn_utils

    torch.manual_seed(seed)
    net = build_net()
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, fraction=0.5, weight=0.1) if loss_kind == "synopsloss" else None
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(10, 20, generator=g) < 0.3).float()  # one spike pattern per class
    records: List[Dict[str, float]] = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        labels = torch.randint(0, 10, (16,), generator=g)
        rates = protos[labels] * 0.8 + 0.05
        data = (torch.rand(16, 10, 20, generator=g) < rates[:, None, :]).float()  # [B, T, F]
        snn_utils.reset(net)
        counter.reset()
        spikes = torch.stack([net(data[:, t])[0] for t in range(data.shape[1])]).sum(0)
        task = nn.functional.cross_entropy(spikes, labels)
        reg = loss_fn() if loss_fn is not None else 1e-4 * counter.synops()
        opt.zero_grad()
        (task + reg).backward()
        opt.step()
        if loss_fn is not None:
            loss_fn.step()
        if on_step is not None:
            on_step(step, counter)
        if step % every == 0:
            rec = dict(step=step, rss_mb=rss_mb(), peak_rss_mb=peak_rss_mb(), tensors=live_tensors(),
                       synops=float(counter.synops().detach()), task=float(task.detach()),
                       seconds=time.perf_counter() - t0)
            records.append(rec)
            if verbose:
                print(f"step {step:5d}  rss {rec['rss_mb']:8.1f} MiB  peak {rec['peak_rss_mb']:8.1f} MiB  "
                      f"live tensors {rec['tensors']:5d}  synops/sample {rec['synops']:9.1f}  "
                      f"task loss {rec['task']:.3f}  ({rec['seconds']:.1f} s)", flush=True)
    counter.remove()
    return records


def verdict(records: List[Dict[str, float]], rss_tolerance_mb: float = 8.0) -> Dict[str, object]:
    """Flat after warm-up: live tensors never above the first report's, RSS within a tolerance."""
    first, rest = records[0], records[1:]
    tensor_growth = max((r["tensors"] for r in rest), default=first["tensors"]) - first["tensors"]
    rss_growth = max((r["rss_mb"] for r in rest), default=first["rss_mb"]) - first["rss_mb"]
    peak_growth = records[-1]["peak_rss_mb"] - first["peak_rss_mb"]
    flat = tensor_growth <= 0 and rss_growth <= rss_tolerance_mb and peak_growth <= rss_tolerance_mb
    return dict(flat=flat, tensor_growth=tensor_growth, rss_growth_mb=rss_growth, peak_growth_mb=peak_growth)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--loss", choices=["synopsloss", "raw"], default="synopsloss")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, synopsloss {sl.__version__}, {args.steps} steps, loss={args.loss}")
    records = soak(args.steps, args.every, args.loss)
    v = verdict(records)
    print(f"after warm-up (step {records[0]['step']}): live tensors {v['tensor_growth']:+d}, "
          f"RSS {v['rss_growth_mb']:+.1f} MiB, peak RSS {v['peak_growth_mb']:+.1f} MiB")
    print("verdict:", "FLAT (no leak)" if v["flat"] else "GROWS (possible leak)")
    return 0 if v["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
