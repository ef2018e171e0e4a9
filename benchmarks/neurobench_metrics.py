"""NeuroBench's workload metrics vs synopsloss' drop-in classes, inside NeuroBench's own Benchmark.run().

Runs the same snntorch network (identical twins) through ``Benchmark.run()``
with no workload metric (plain), with NeuroBench's metrics and with
``synopsloss.neurobench.NeuroBenchMetrics``' classes, checks that the results
are equal, and prints wall-clock medians of interleaved repeats and the ratio
of the metrics' overheads (run time minus the plain run). Two metric sets:
``SynapticOperations`` alone, and all four (plus ``NeuronOperations``,
``MembraneUpdates``, ``ActivationSparsity``).

    python benchmarks/neurobench_metrics.py [--batch 16] [--timesteps 10] [--batches 2] [--size 64] [--width 32]
        [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ALL = ("SynapticOperations", "NeuronOperations", "MembraneUpdates", "ActivationSparsity")


def build(size: int = 32, width: int = 16) -> nn.Module:
    """A DVS-style snntorch CNN: [2, size, size] spikes -> conv(width) -> conv(2 width) -> 10 classes."""
    import snntorch as snn

    return nn.Sequential(
        nn.Conv2d(2, width, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True), nn.AvgPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )


def twins(n: int, size: int = 32, width: int = 16) -> list:
    torch.manual_seed(0)
    nets = [build(size, width) for _ in range(n)]
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    return nets


def same(a: dict, b: dict) -> bool:
    for key, value in a.items():
        other = b[key]
        pairs = value.items() if isinstance(value, dict) else [(None, value)]
        for k, v in pairs:
            w = other[k] if k is not None else other
            if abs(v - w) > 1e-9 * max(1.0, abs(v)):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=10)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    from neurobench.benchmarks import Benchmark
    from neurobench.metrics import workload as nb
    from neurobench.models import SNNTorchModel

    from synopsloss.neurobench import NeuroBenchMetrics

    g = torch.Generator().manual_seed(0)
    n = args.batch * args.batches
    x = (torch.rand(n, args.timesteps, 2, args.size, args.size, generator=g) < 0.15).float()
    loader = DataLoader(TensorDataset(x, torch.zeros(n, dtype=torch.long)), batch_size=args.batch)

    plain, nb_syn, nb_all, our_syn, our_all = (SNNTorchModel(net) for net in twins(5, args.size, args.width))
    syn_metrics = NeuroBenchMetrics(our_syn, neurons=False)
    all_metrics = NeuroBenchMetrics(our_all)
    benches = {
        "plain": Benchmark(plain, loader, [], [], [[], []]),
        "NeuroBench SynapticOperations": Benchmark(nb_syn, loader, [], [], [[], [nb.SynapticOperations]]),
        "synopsloss SynapticOperations": Benchmark(our_syn, loader, [], [], [[], [syn_metrics.SynapticOperations]]),
        "NeuroBench, 4 metrics": Benchmark(nb_all, loader, [], [], [[], [getattr(nb, m) for m in ALL]]),
        "synopsloss, 4 metrics": Benchmark(our_all, loader, [], [], [[], [getattr(all_metrics, m) for m in ALL]]),
    }
    times = {name: [] for name in benches}
    results = {}
    for name, bench in benches.items():  # warm-up, and the results to compare
        results[name] = bench.run(quiet=True)
    for _ in range(args.repeats):
        for name, bench in benches.items():
            start = time.perf_counter()
            bench.run(quiet=True)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}

    equal_syn = same(results["NeuroBench SynapticOperations"], results["synopsloss SynapticOperations"])
    equal_all = same(results["NeuroBench, 4 metrics"], results["synopsloss, 4 metrics"])
    print(f"snntorch CNN 2x{args.size}x{args.size} -> {args.width} -> {2 * args.width} -> 10, B={args.batch}, "
          f"T={args.timesteps}, {args.batches} batches, torch threads="
          f"{args.threads}; medians of {args.repeats} interleaved runs of Benchmark.run()")
    print(f"results equal: SynapticOperations {equal_syn}, 4 metrics {equal_all}")
    print(results["synopsloss, 4 metrics"])
    base = median["plain"]
    print(f"{'configuration':34s} {'seconds':>9s} {'x plain':>8s} {'overhead s':>11s}")
    for name, t in median.items():
        print(f"{name:34s} {t:9.3f} {t / base:8.2f} {t - base:11.3f}")
    for what in ("SynapticOperations", "4 metrics"):
        ours = median[f"synopsloss{' ' if what != '4 metrics' else ', '}{what}"] - base
        theirs = median[f"NeuroBench{' ' if what != '4 metrics' else ', '}{what}"] - base
        total = median[f"NeuroBench{' ' if what != '4 metrics' else ', '}{what}"] / \
            median[f"synopsloss{' ' if what != '4 metrics' else ', '}{what}"]
        print(f"{what}: NeuroBench's overhead / synopsloss' = {theirs / max(ours, 1e-9):.1f}x; "
              f"whole run {total:.1f}x faster")
    syn_metrics.remove()
    all_metrics.remove()
    if not (equal_syn and equal_all):
        raise SystemExit("results differ")


if __name__ == "__main__":
    main()
