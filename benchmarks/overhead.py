"""Time overhead of counting synops, measured side by side in one run.

1. A training step (forward + backward + optimizer) of the sinabs tutorial SNN
   (B=32, T=20, 28x28 input) plain, with ``SynOpsCounter.synops()`` added to
   the loss, and with sinabs' ``SNNAnalyzer`` synops added the same way.
2. On a 3-conv CNN (B=64, 32x32 input): the time ``counts()`` adds beyond a
   plain forward pass, against the time NeuroBench's ``SynapticOperations``
   adds (hooks + metric), with the numbers of both printed for comparison.

Runs are interleaved and repeated; medians are reported (the machine is
shared and noisy).

Usage: ``python benchmarks/overhead.py [--repeats 15] [--threads 2]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn as nn

import synopsloss as sl


def sinabs_tutorial_snn(batch_size: int) -> nn.Sequential:
    import sinabs.layers as sll

    return nn.Sequential(
        nn.Conv2d(1, 16, 5, bias=False), sll.IAFSqueeze(batch_size=batch_size), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 5, bias=False), sll.IAFSqueeze(batch_size=batch_size), nn.AvgPool2d(2),
        nn.Conv2d(32, 120, 4, bias=False), sll.IAFSqueeze(batch_size=batch_size),
        nn.Flatten(), nn.Linear(120, 10, bias=False), sll.IAFSqueeze(batch_size=batch_size),
    )


def reset_states(net: nn.Module) -> None:
    for m in net.modules():
        if hasattr(m, "reset_states"):
            m.reset_states()


def three_conv_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
    )


CLOCK = time.perf_counter


def timed(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def bench_training(repeats: int, B: int = 32, T: int = 20) -> None:
    import sinabs

    torch.manual_seed(0)
    x = (torch.rand(B * T, 1, 28, 28) < 0.25).float()
    y = torch.randint(0, 10, (B,))
    kinds = ("plain", "synopsloss", "lean", "sinabs")
    nets = {k: sinabs_tutorial_snn(B) for k in kinds}
    state = nets["plain"].state_dict()
    for n in nets.values():
        n.load_state_dict(state)
    opts = {k: torch.optim.SGD(n.parameters(), lr=1e-3) for k, n in nets.items()}
    counters = {
        "synopsloss": sl.SynOpsCounter(nets["synopsloss"]),  # default: synapses and neurons
        "lean": sl.SynOpsCounter(nets["lean"], neurons=False),  # what a synops loss needs
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analyzer = sinabs.SNNAnalyzer(nets["sinabs"])

    def step(kind: str) -> None:
        net, opt = nets[kind], opts[kind]
        reset_states(net)
        counter = counters.get(kind)
        if counter is not None:
            counter.reset()
        opt.zero_grad()
        out = net(x).reshape(B, T, -1).sum(1)
        loss = nn.functional.cross_entropy(out, y)
        if counter is not None:
            loss = loss + 1e-9 * counter.synops()
        elif kind == "sinabs":
            loss = loss + 1e-9 * analyzer.get_model_statistics()["synops"]
        loss.backward()
        opt.step()

    def forward(kind: str) -> None:
        net = nets[kind]
        reset_states(net)
        counter = counters.get(kind)
        if counter is not None:
            counter.reset()
        with torch.no_grad():
            net(x)
        if counter is not None:
            counter.synops()
        elif kind == "sinabs":
            analyzer.get_model_statistics()["synops"]

    for kind in nets:  # warm-up (maps, allocator)
        step(kind)
        forward(kind)
    times = {("step", k): [] for k in nets}
    times.update({("fwd", k): [] for k in nets})
    for _ in range(repeats):
        for kind in nets:
            times[("step", kind)].append(timed(lambda: step(kind)))
            times[("fwd", kind)].append(timed(lambda: forward(kind)))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n[1] sinabs tutorial SNN, B={B}, T={T}: median of {repeats} interleaved repeats")
    print("synopsloss: SynOpsCounter(net) (synapses + neuron statistics for the table);")
    print("lean: SynOpsCounter(net, neurons=False) (synapses only: what a synops loss needs)")
    print(f"{'':24s}{'plain':>10s}{'synopsloss':>12s}{'lean':>10s}{'sinabs':>10s}")
    for what, label in (("step", "training step [ms]"), ("fwd", "forward pass [ms]")):
        p, o, l, s = (med[(what, k)] * 1e3 for k in kinds)
        print(f"{label:24s}{p:10.1f}{o:12.1f}{l:10.1f}{s:10.1f}")
        print(f"{'  ratio to plain':24s}{1.0:10.3f}{o / p:12.3f}{l / p:10.3f}{s / p:10.3f}")
    for counter in counters.values():
        counter.remove()


def bench_counting(repeats: int, B: int = 64) -> None:
    from neurobench.metrics.workload import SynapticOperations
    from neurobench.models import TorchModel

    torch.manual_seed(0)
    x = torch.relu(torch.randn(B, 3, 32, 32))
    nets = {k: three_conv_cnn().eval() for k in ("plain", "ours", "neurobench")}
    for n in nets.values():
        n.load_state_dict(nets["plain"].state_dict())

    def plain() -> None:
        with torch.no_grad():
            nets["plain"](x)

    # Both tools are set up once, as in an evaluation loop; each timed call is one batch.
    counter = sl.SynOpsCounter(nets["ours"], neurons=False)  # synapses only, like SynapticOperations

    def ours() -> dict:
        counter.reset()
        with torch.no_grad():
            nets["ours"](x)
        return counter.totals()

    model = TorchModel(nets["neurobench"])
    model.register_hooks()

    def neurobench() -> dict:
        model.reset_hooks()
        with torch.no_grad():
            preds = model(x)
        return SynapticOperations()(model, preds, (x, None))

    ours_counts, nb_counts = ours(), neurobench()
    plain()
    t = {"plain": [], "ours": [], "neurobench": []}
    for _ in range(repeats):
        t["plain"].append(timed(plain))
        t["ours"].append(timed(ours))
        t["neurobench"].append(timed(neurobench))
    med = {k: statistics.median(v) for k, v in t.items()}
    ours_add = med["ours"] - med["plain"]
    nb_add = med["neurobench"] - med["plain"]
    print(f"\n[2] 3-conv CNN, B={B}, 32x32: median of {repeats} interleaved repeats")
    print(f"plain forward                 {med['plain'] * 1e3:9.2f} ms")
    print(f"forward + synopsloss counts() {med['ours'] * 1e3:9.2f} ms  (adds {ours_add * 1e3:.2f} ms = {ours_add / med['plain']:.3f}x the forward)")
    print(f"forward + NeuroBench SynOps   {med['neurobench'] * 1e3:9.2f} ms  (adds {nb_add * 1e3:.2f} ms = {nb_add / med['plain']:.2f}x the forward)")
    print(f"NeuroBench overhead / synopsloss overhead: {nb_add / max(ours_add, 1e-9):.1f}x")
    print("numbers (per sample)          Dense          Eff_MACs       Eff_ACs")
    print(f"  synopsloss               {ours_counts['dense']:14.1f} {ours_counts['eff_macs']:14.1f} {ours_counts['eff_acs']:14.1f}")
    print(f"  NeuroBench               {nb_counts['Dense']:14.1f} {nb_counts['Effective_MACs']:14.1f} {nb_counts['Effective_ACs']:14.1f}")
    same = (
        ours_counts["dense"] == nb_counts["Dense"]
        and ours_counts["eff_macs"] == nb_counts["Effective_MACs"]
        and ours_counts["eff_acs"] == nb_counts["Effective_ACs"]
    )
    print(f"  identical: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["training", "counting"], default=None)
    parser.add_argument(
        "--clock", choices=["wall", "process"], default="wall",
        help="process: CPU time of this process (steadier on a busy shared machine)",
    )
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock")
    if args.only in (None, "training"):
        bench_training(args.repeats)
    if args.only in (None, "counting"):
        bench_counting(args.repeats)


if __name__ == "__main__":
    main()
