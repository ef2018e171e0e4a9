"""Time overhead of counting synops, measured side by side in one run (issue 12).

Sections (every figure is a median over interleaved repeats; a ratio is the
median of per-round ratios, each round timing every variant once in rotating
order, so drifts of a shared machine hit all variants alike):

1. **Training step** (forward + backward + SGD step) with synops in the loss,
   against the plain step of the same network (same weights):
   the sinabs tutorial SNN (B=32, T=20), an snntorch CSNN (snntorch
   tutorial 6: conv 12-64, ``Leaky``, B=128, T=25 calls) and a Spikformer
   from SpikingJelly's model zoo (T=4). Columns: ``readme`` is the counter
   the README shows for training (``SynOpsCounter(net, neurons=False)`` feeding
   ``SynOpsLoss(counter, fraction=0.5)``); ``default`` is ``SynOpsCounter(net)``
   (neuron statistics too) with ``counter.synops()`` added to the loss. For the
   sinabs network also the forward pass, and sinabs' ``SNNAnalyzer``.
2. **Counting overhead vs NeuroBench** (``no_grad`` forward, then the counts):
   what ``SynOpsCounter`` adds to a plain forward pass against what NeuroBench's
   ``SynapticOperations`` adds (its hooks, its metric), with both tools' numbers
   checked identical (the run stops if they differ), and against two floors:
   one read (``x.sum()``) of every counted layer's input in a forward hook, and
   the counting floor: the least work of any counter of synops and effective
   ops (per layer input: column sums by one product with ones, column nonzeros
   by ``x.bool()``, each times a fan-out map; issue 16's target on the
   ResNet-18: synopsloss adds at most 1.5x what that floor adds).
   Networks: a light 3-conv CNN (conv 3-16-32-64, 3x3, padding 1, ReLU,
   ``Linear(65536, 10)``, B=64, 32x32), the heavier CNN this script used
   before (conv 3-32-64-64 with max pools, B=64), a ResNet-18 (224x224, B=8).
3. **Counting overhead vs SpikingJelly's ``op_counter``** on the Spikformer
   (``SynOpCounter`` under ``DispatchCounterMode``, which sees every aten op).
4. **Memory** held by the counters (fan-out map caches and work buffers).
5. **GPU** (when CUDA is available): the training-step ratio of the sinabs
   network, and counting vs NeuroBench on a ResNet-18 at B=64.

Usage::

    python benchmarks/overhead.py            # default: about 5-10 min on 2 cores
    python benchmarks/overhead.py --quick    # fewer repeats: under 2 min
    python benchmarks/overhead.py --tag run1 # writes results/overhead_run1.{md,csv}
    python benchmarks/overhead.py --aggregate benchmarks/results/overhead_run*.csv

Results are printed and written to ``benchmarks/results/overhead.md`` and
``overhead.csv`` (``--tag`` appends a suffix; ``--no-write`` skips that).
``--aggregate`` reads several CSVs and prints each figure's median and
run-to-run range (``overhead_summary.md``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import inspect
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and __name__ == "__main__":  # pin the allocator, then restart
    os.execve(sys.executable, [sys.executable, *sys.argv],
              dict(os.environ, MALLOC_MMAP_THRESHOLD_="1000000000000", MALLOC_TRIM_THRESHOLD_="1000000000000"))

import torch
import torch.nn as nn
import torch.nn.functional as F

import synopsloss as sl

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CLOCK = time.perf_counter
SYNC: Callable[[], None] = lambda: None  # noqa: E731


# ============================================================================ output


@dataclass
class Figure:
    section: str
    model: str
    metric: str
    value: float
    q1: float = math.nan
    q3: float = math.nan
    unit: str = ""
    target: str = ""
    met: str = ""


LINES: List[str] = []
FIGURES: List[Figure] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def record(section: str, model: str, metric: str, value: float, spread: Sequence[float] = (), unit: str = "",
           target: str = "", met: Optional[bool] = None) -> Figure:
    q1, q3 = (spread[0], spread[1]) if spread else (math.nan, math.nan)
    fig = Figure(section, model, metric, float(value), float(q1), float(q3), unit, target,
                 "" if met is None else ("yes" if met else "NO"))
    FIGURES.append(fig)
    return fig


def machine() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    versions = {}
    for mod in ("sinabs", "snntorch", "spikingjelly", "neurobench"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception:  # pragma: no cover - optional
            versions[mod] = "missing"
    try:
        load = "%.1f %.1f %.1f" % os.getloadavg()
    except OSError:  # pragma: no cover
        load = "?"
    return {
        "cpu": cpu, "logical cores": str(os.cpu_count()), "torch": torch.__version__,
        "threads": str(torch.get_num_threads()), "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "load average (1/5/15 min) at start": load, **versions,
    }


# ============================================================================ timing


def measure(fns: Dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> Dict[str, List[float]]:
    """Times of each function over ``repeats`` rounds; each round runs all once, in rotating order."""
    keys = list(fns)
    for _ in range(warmup):
        for k in keys:
            fns[k]()
    times: Dict[str, List[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            SYNC()
            t0 = CLOCK()
            fns[k]()
            SYNC()
            times[k].append(CLOCK() - t0)
    return times


def quartiles(xs: Sequence[float]) -> Tuple[float, float]:
    if len(xs) < 2:
        return (xs[0], xs[0]) if xs else (math.nan, math.nan)
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def ratios(times: Dict[str, List[float]], k: str, base: str) -> List[float]:
    return [a / b for a, b in zip(times[k], times[base])]


def diffs(times: Dict[str, List[float]], k: str, base: str) -> List[float]:
    return [a - b for a, b in zip(times[k], times[base])]


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def quiet() -> warnings.catch_warnings:
    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("ignore")
    return w


# ============================================================================ networks


def sinabs_tutorial_snn(batch_size: int) -> nn.Sequential:
    import sinabs.layers as sll

    return nn.Sequential(
        nn.Conv2d(1, 16, 5, bias=False), sll.IAFSqueeze(batch_size=batch_size), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 5, bias=False), sll.IAFSqueeze(batch_size=batch_size), nn.AvgPool2d(2),
        nn.Conv2d(32, 120, 4, bias=False), sll.IAFSqueeze(batch_size=batch_size),
        nn.Flatten(), nn.Linear(120, 10, bias=False), sll.IAFSqueeze(batch_size=batch_size),
    )


def snntorch_csnn() -> nn.Sequential:
    """snntorch tutorial 6: 12C5-MP2-64C5-MP2-1024FC10, Leaky neurons (beta 0.5, fast-sigmoid surrogate)."""
    import snntorch as snn
    from snntorch import surrogate

    grad = surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(
        nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10), snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, output=True),
    )


#: the Spikformer of sections 1 and 3: SpikingJelly's model-zoo class at a CPU-sized configuration
SPIKFORMER = dict(T=4, in_channels=3, img_size_h=32, img_size_w=32, patch_size=4, num_classes=10,
                  embed_dims=64, num_heads=4, mlp_ratio=4.0, depths=2)
SPIKFORMER_BATCH = 8


def spikformer() -> nn.Module:
    from spikingjelly.activation_based.model.spikformer import Spikformer

    return Spikformer(**SPIKFORMER)


def light_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 32 * 32, 10),
    )


def three_conv_cnn() -> nn.Sequential:
    """The heavier CNN (conv 3-32-64-64 with max pools); also imported by ``opscope_overhead.py``."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
    )


heavier_cnn = three_conv_cnn


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs with BatchNorm, identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision's ``resnet18`` (BasicBlock, [2, 2, 2, 2], 1000 classes), initialised as torchvision does."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, cin, layers = (64, 128, 256, 512), 64, []
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def twins(build: Callable[[], nn.Module], names: Sequence[str], device: str = "cpu") -> Dict[str, nn.Module]:
    """One network per variant, all with the same weights."""
    torch.manual_seed(0)
    first = build().to(device)
    nets = {names[0]: first}
    for n in names[1:]:
        nets[n] = copy.deepcopy(first)
    return nets


def reset_states(net: nn.Module) -> None:
    for m in net.modules():
        if hasattr(m, "reset_states"):
            m.reset_states()


def attention_counting() -> Tuple[Dict[str, Any], str]:
    """Counter arguments for the Spikformer rows, and a note on whether attention products are counted."""
    params = inspect.signature(sl.SynOpsCounter).parameters
    if "ops" in params:
        return {}, (f"op-level counting: SynOpsCounter's default ops={params['ops'].default!r} counts the attention "
                    "products (q @ k^T, attn @ v) with the module layers")
    return {}, ("NOTE: this synopsloss counts modules only; the attention products (q @ k^T, attn @ v) are NOT "
                "counted, so these rows measure module-level counting.")


def op_rows(counter: Any) -> int:
    """Layers of the last snapshot that are no modules of the model (op-level rows: attention products)."""
    modules = dict(counter.model.named_modules())
    try:
        names = list(counter.snapshot().layers)
    except Exception:  # pragma: no cover - nothing counted
        return 0
    return sum(1 for n in names if n not in modules)


def counter_memory(counter: Any) -> Tuple[int, str, int, int]:
    """(map cache bytes, the bound, work-buffer bytes, counted layers) of a counter."""
    maps = getattr(counter, "_maps", {})
    held = int(counter.map_cache_bytes) if hasattr(counter, "map_cache_bytes") else 0
    caches = list(maps.values())
    bound = "?"
    if caches and hasattr(caches[0], "max_bytes"):
        bound = f"{caches[0].max_shapes} shapes, {caches[0].max_bytes / 2 ** 20:.0f} MiB per layer"
    scratch = getattr(counter, "_scratch", None)
    return held, bound, int(getattr(scratch, "nbytes", 0)), len(maps)


COUNTERS: List[Tuple[str, Any]] = []  # (label, counter) for the memory section


# ============================================================================ 1. training steps


def bench_training(name: str, label: str, nets: Dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                   forward: Callable[[nn.Module, torch.Tensor], torch.Tensor], reset: Callable[[nn.Module], None],
                   counter_kw: Dict[str, Any], repeats: int, target: float, extra: Optional[Dict[str, Callable]] = None,
                   fwd_target: Optional[float] = None, section: str = "1") -> None:
    w = quiet()
    counters = {
        "readme": sl.SynOpsCounter(nets["readme"], neurons=False, **counter_kw),
        "default": sl.SynOpsCounter(nets["default"], **counter_kw),
    }
    losses = {"readme": sl.SynOpsLoss(counters["readme"], fraction=0.5)}
    opts = {k: torch.optim.SGD(n.parameters(), lr=1e-3) for k, n in nets.items()}
    COUNTERS.extend((f"{label} ({k})", c) for k, c in counters.items())

    def step(kind: str) -> Callable[[], None]:
        net, opt, counter = nets[kind], opts[kind], counters.get(kind)

        def run() -> None:
            reset(net)
            if counter is not None:
                counter.reset()
            opt.zero_grad()
            loss = F.cross_entropy(forward(net, x), y)
            if kind == "readme":
                loss = loss + losses["readme"]()
            elif kind == "default":
                loss = loss + 1e-9 * counter.synops()
            elif extra and kind in extra:
                loss = loss + extra[kind]()
            loss.backward()
            opt.step()

        return run

    def fwd(kind: str) -> Callable[[], None]:
        net, counter = nets[kind], counters.get(kind)

        def run() -> None:
            reset(net)
            if counter is not None:
                counter.reset()
            with torch.no_grad():
                forward(net, x)
                if counter is not None:
                    counter.synops()
                elif extra and kind in extra:
                    extra[kind]()

        return run

    kinds = list(nets)
    fns = {("step", k): step(k) for k in kinds}
    if fwd_target is not None:
        fns.update({("fwd", k): fwd(k) for k in kinds})
    times = measure(fns, repeats)
    w.__exit__(None, None, None)
    say(f"\n{label}: median of {repeats} interleaved rounds [quartiles of the per-round ratio]")
    say(f"{'':26s}" + "".join(f"{k:>22s}" for k in kinds))
    for what, title, tgt in (("step", "training step", target), ("fwd", "forward pass", fwd_target)):
        if (what, "plain") not in times:
            continue
        ms = [med(times[(what, k)]) * 1e3 for k in kinds]
        say(f"{title + ' [ms]':26s}" + "".join(f"{m:22.1f}" for m in ms))
        cells = []
        for k in kinds:
            r = ratios({kk: v for (wh, kk), v in times.items() if wh == what}, k, "plain")
            m, (q1, q3) = med(r), quartiles(r)
            cells.append(f"{m:.3f} [{q1:.2f}-{q3:.2f}]")
            if k != "plain":
                check = k == ("readme" if what == "step" else "default")
                record(section, name, f"{what} ratio {k}", m, (q1, q3), "x", f"<= {tgt}" if check else "",
                       (m <= tgt) if check else None)
        say(f"{'  ratio to plain':26s}" + "".join(f"{c:>22s}" for c in cells))
    for c in counters.values():
        c.remove()


def section_training(args: argparse.Namespace) -> None:
    say("\n" + "=" * 100)
    say("[1] Training step with synops in the loss (and the sinabs forward pass)")
    say("    readme  = SynOpsCounter(net, neurons=False) + SynOpsLoss(counter, fraction=0.5), as the README trains")
    say("    default = SynOpsCounter(net) (neuron statistics too) + 1e-9 * counter.synops() in the loss")
    r = args.repeats
    # sinabs tutorial
    import sinabs

    B, T = 32, 20
    torch.manual_seed(0)
    x = (torch.rand(B * T, 1, 28, 28) < 0.25).float()
    y = torch.randint(0, 10, (B,))
    nets = twins(lambda: sinabs_tutorial_snn(B), ["plain", "readme", "default", "sinabs"])
    w = quiet()
    analyzer = sinabs.SNNAnalyzer(nets["sinabs"])
    w.__exit__(None, None, None)
    bench_training("sinabs tutorial SNN", f"[1a] sinabs tutorial SNN, B={B}, T={T} (IAFSqueeze, [B*T, 1, 28, 28])",
                   nets, x, y, lambda n, v: n(v).reshape(B, T, -1).sum(1), reset_states, {}, r, 1.04,
                   extra={"sinabs": lambda: 1e-9 * analyzer.get_model_statistics()["synops"]}, fwd_target=1.08)
    # snntorch CSNN
    import snntorch as snn

    def snn_reset(net: nn.Module) -> None:  # per instance: snntorch.utils.reset misses deep copies
        for m in net.modules():
            if isinstance(m, snn.Leaky):
                m.reset_mem()

    B, T = (128, 25)
    torch.manual_seed(0)
    x = torch.rand(B, 1, 28, 28)
    y = torch.randint(0, 10, (B,))

    def snn_forward(net: nn.Module, v: torch.Tensor) -> torch.Tensor:
        spikes = 0
        for _ in range(T):
            spk, _mem = net(v)
            spikes = spikes + spk
        return spikes

    bench_training("snntorch CSNN", f"[1b] snntorch CSNN (tutorial 6), B={B}, T={T} calls of the network",
                   twins(snntorch_csnn, ["plain", "readme", "default"]), x, y, snn_forward, snn_reset, {},
                   r, 1.02, fwd_target=1.04)
    # Spikformer
    from spikingjelly.activation_based import functional

    B = SPIKFORMER_BATCH
    torch.manual_seed(0)
    x = torch.rand(B, 3, 32, 32)
    y = torch.randint(0, 10, (B,))
    kw, note = attention_counting()
    nets = twins(spikformer, ["plain", "readme", "default"])
    for n in nets.values():
        n.train()
    say(f"\n    Spikformer: {note}")
    bench_training("Spikformer", f"[1c] SpikingJelly zoo Spikformer {SPIKFORMER}, B={B}", nets, x, y,
                   lambda n, v: n(v).mean(0), functional.reset_net, dict(batch_size=B, **kw), r, 1.08,
                   fwd_target=1.08)


# ============================================================================ 2. counting vs NeuroBench


def floor_hooks(net: nn.Module) -> None:
    """One read of every counted layer's input (the least any hook must do)."""
    def read(_module: nn.Module, args: tuple) -> None:
        args[0].sum()  # returns None: the input is left as it is

    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            m.register_forward_pre_hook(read)


def counting_floor_hooks(net: nn.Module) -> None:
    """The least work of a counter of synops and effective ops, hand-written for these networks: per counted
    layer input ``[rows, n]`` (rows: the batch, or every leading dim of a ``Linear``'s input), its column sums
    (one product with ones; no ``abs``, as if every input were >= 0) and its column nonzeros (``x.bool()`` summed
    over the rows), each times a fan-out map made once (float32), read at once. No spike test, no weight-pattern
    check, no per-sample or per-layer bookkeeping: a floor, not a counter."""
    maps: Dict[int, torch.Tensor] = {}

    def count(module: nn.Module, args: tuple) -> None:
        x = args[0]
        n = x.shape[-1] if isinstance(module, nn.Linear) else x[0].numel()
        flat = x.reshape(-1, n)
        fan = maps.get(id(module))
        if fan is None or fan.numel() != n:
            fan = maps[id(module)] = torch.ones(n, dtype=x.dtype, device=x.device)
        sums = torch.matmul(flat.new_ones(1, flat.shape[0]), flat).reshape(-1)
        nonzeros = flat.bool().sum(0, dtype=x.dtype)
        torch.stack([torch.dot(sums, fan), torch.dot(nonzeros, fan)]).tolist()

    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            m.register_forward_pre_hook(count)


def bench_counting(name: str, label: str, build: Callable[[], nn.Module], x: torch.Tensor, repeats: int,
                   target: Optional[float], device: str = "cpu", section: str = "2",
                   floor_target: Optional[float] = None) -> None:
    from neurobench.metrics.workload import SynapticOperations
    from neurobench.models import TorchModel

    nets = twins(build, ["plain", "ours", "neurobench", "floor", "counting floor"], device)
    for n in nets.values():
        n.eval()
    x = x.to(device)
    floor_hooks(nets["floor"])
    counting_floor_hooks(nets["counting floor"])
    w = quiet()
    counter = sl.SynOpsCounter(nets["ours"], neurons=False)  # synapses only, like SynapticOperations
    COUNTERS.append((label, counter))
    model = TorchModel(nets["neurobench"])
    model.register_hooks()

    def plain() -> None:
        with torch.no_grad():
            nets["plain"](x)

    def floor() -> None:
        with torch.no_grad():
            nets["floor"](x)

    def counting_floor() -> None:
        with torch.no_grad():
            nets["counting floor"](x)

    def ours() -> Dict[str, float]:
        counter.reset()
        with torch.no_grad():
            nets["ours"](x)
        return counter.snapshot().total()

    def neurobench() -> Dict[str, float]:
        model.reset_hooks()
        with torch.no_grad():
            preds = model(x)
        return SynapticOperations()(model, preds, (x, None))

    ours_counts, nb_counts = ours(), neurobench()
    times = measure({"plain": plain, "ours": ours, "neurobench": neurobench, "floor": floor,
                     "counting floor": counting_floor}, repeats)
    w.__exit__(None, None, None)
    counter.remove()
    p = med(times["plain"])
    add = {k: med(diffs(times, k, "plain")) for k in ("ours", "neurobench", "floor", "counting floor")}
    spread = {k: quartiles(diffs(times, k, "plain")) for k in add}
    say(f"\n{label}: median of {repeats} interleaved rounds (added time: median of per-round differences)")
    say(f"  plain forward                     {p * 1e3:9.2f} ms")
    for k, title in (("ours", "synopsloss counts"), ("neurobench", "NeuroBench SynapticOperations"),
                     ("floor", "floor: x.sum() per layer input"),
                     ("counting floor", "counting floor (sums, nonzeros)")):
        q1, q3 = spread[k]
        say(f"  + {title:31s} {add[k] * 1e3:9.2f} ms  [{q1 * 1e3:.2f}-{q3 * 1e3:.2f}]  = {add[k] / p:6.3f}x the forward")
    nb_ratio = add["neurobench"] / add["ours"] if add["ours"] > 0 else math.inf
    floor_ratio = add["ours"] / add["floor"] if add["floor"] > 0 else math.inf
    met = None if target is None else nb_ratio >= target
    say(f"  NeuroBench overhead / synopsloss overhead: {nb_ratio:6.1f}x" + (f"   (target >= {target:g}x: "
        f"{'met' if met else 'NOT met'})" if target is not None else ""))
    say(f"  synopsloss overhead / floor:               {floor_ratio:6.1f}x")
    work = add["counting floor"]
    work_ratio = add["ours"] / work if work > 0 else math.inf
    work_met = None if floor_target is None else work_ratio <= floor_target
    say(f"  synopsloss overhead / counting floor:      {work_ratio:6.2f}x" + (
        f"   (target <= {floor_target:g}x: {'met' if work_met else 'NOT met'})" if floor_target is not None else ""))
    record(section, name, "plain forward", p * 1e3, unit="ms")
    record(section, name, "ours added", add["ours"] * 1e3, [v * 1e3 for v in spread["ours"]], "ms")
    record(section, name, "neurobench added", add["neurobench"] * 1e3, [v * 1e3 for v in spread["neurobench"]], "ms")
    record(section, name, "floor added", add["floor"] * 1e3, [v * 1e3 for v in spread["floor"]], "ms")
    record(section, name, "neurobench/ours overhead", nb_ratio, unit="x",
           target="" if target is None else f">= {target:g}", met=met)
    record(section, name, "ours/floor overhead", floor_ratio, unit="x")
    record(section, name, "counting floor added", work * 1e3, [v * 1e3 for v in spread["counting floor"]], "ms")
    record(section, name, "ours/counting floor overhead", work_ratio, unit="x",
           target="" if floor_target is None else f"<= {floor_target:g}", met=work_met)
    keys = (("dense", "Dense"), ("eff_macs", "Effective_MACs"), ("eff_acs", "Effective_ACs"))
    say("  numbers per sample              Dense             Eff_MACs          Eff_ACs")
    say("    synopsloss          " + "".join(f"{ours_counts[a]:18.1f}" for a, _ in keys))
    say("    NeuroBench          " + "".join(f"{nb_counts[b]:18.1f}" for _, b in keys))
    worst = max(abs(ours_counts[a] - nb_counts[b]) / max(abs(nb_counts[b]), 1.0) for a, b in keys)
    same = all(ours_counts[a] == nb_counts[b] for a, b in keys)
    say("    identical: " + ("yes (bit for bit)" if same else
        f"to {worst:.1e} relative: NeuroBench sums each layer's float32 output (.sum() in float32, inexact "
        "above 2**24 per layer); synopsloss counts are exact integers"))
    record(section, name, "numbers identical", float(same), unit="bool")
    record(section, name, "numbers max relative difference", worst, unit="")
    if worst > 1e-6:
        raise SystemExit(f"FAIL: {label}: synopsloss and NeuroBench counts differ (relative {worst:.2e})")


def section_counting(args: argparse.Namespace) -> None:
    say("\n" + "=" * 100)
    say("[2] Counting overhead vs NeuroBench 2.3 SynapticOperations (no_grad forward + counts)")
    say("    ours = counter.reset(); net(x); counter.snapshot().total()  (SynOpsCounter(net, neurons=False))")
    say("    NeuroBench = model.reset_hooks(); model(x); SynapticOperations()(model, preds, (x, None))")
    r = args.repeats
    torch.manual_seed(0)
    bench_counting("light 3-conv CNN", "[2a] light 3-conv CNN (3-16-32-64, Linear(65536, 10)), B=64, 32x32",
                   light_cnn, torch.relu(torch.randn(64, 3, 32, 32)), r, 20.0)
    bench_counting("heavier CNN", "[2b] heavier CNN (3-32-64-64, max pools), B=64, 32x32", heavier_cnn,
                   torch.relu(torch.randn(64, 3, 32, 32)), r, None)
    bench_counting("ResNet-18", "[2c] ResNet-18 (BasicBlock [2, 2, 2, 2], 1000 classes), B=8, 224x224", ResNet18,
                   torch.randn(8, 3, 224, 224), r, 100.0, floor_target=1.5)


# ============================================================================ 3. vs SpikingJelly op_counter


def section_spikingjelly(args: argparse.Namespace) -> None:
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    say("\n" + "=" * 100)
    say("[3] Counting overhead vs SpikingJelly 2.0 op_counter.SynOpCounter (dispatch level), Spikformer")
    B = SPIKFORMER_BATCH
    torch.manual_seed(0)
    x = torch.rand(B, 3, 32, 32)
    kw, note = attention_counting()
    nets = twins(spikformer, ["plain", "ours", "sj"])
    for n in nets.values():
        n.train()  # batch statistics: the neurons fire (the zoo's BatchNorms start as the identity)
    w = quiet()
    counter = sl.SynOpsCounter(nets["ours"], neurons=False, batch_size=B, **kw)
    COUNTERS.append(("[3] Spikformer", counter))
    sj_total = [0.0]

    def plain() -> None:
        functional.reset_net(nets["plain"])
        with torch.no_grad():
            nets["plain"](x)

    def ours() -> Dict[str, float]:
        functional.reset_net(nets["ours"])
        counter.reset()
        with torch.no_grad():
            nets["ours"](x)
        return counter.snapshot().total()

    def sj() -> None:
        functional.reset_net(nets["sj"])
        c = SynOpCounter()
        with torch.no_grad(), DispatchCounterMode([c]):
            nets["sj"](x)
        sj_total[0] = sum(c.get_counts().get("Global", {}).values()) / B

    totals = ours()
    rows = op_rows(counter)
    times = measure({"plain": plain, "ours": ours, "sj": sj}, max(3, args.repeats // 2))
    w.__exit__(None, None, None)
    counter.remove()
    p = med(times["plain"])
    add = {k: med(diffs(times, k, "plain")) for k in ("ours", "sj")}
    say(f"  {note}; op-level rows in the snapshot: {rows}")
    say(f"  Spikformer {SPIKFORMER}, B={B}: median of {len(times['plain'])} interleaved rounds")
    say(f"  plain forward                     {p * 1e3:9.2f} ms")
    say(f"  + synopsloss counts               {add['ours'] * 1e3:9.2f} ms = {add['ours'] / p:6.3f}x the forward")
    say(f"  + SpikingJelly SynOpCounter       {add['sj'] * 1e3:9.2f} ms = {add['sj'] / p:6.3f}x the forward")
    ratio = add["sj"] / add["ours"] if add["ours"] > 0 else math.inf
    say(f"  SpikingJelly overhead / synopsloss overhead: {ratio:.1f}x")
    say(f"  per sample: synopsloss synops {totals['synops']:,.0f} (eff_acs {totals['eff_acs']:,.0f}, eff_macs "
        f"{totals['eff_macs']:,.0f}); SynOpCounter {sj_total[0]:,.0f} (different definitions: it counts only ops "
        "with a binary operand, and zero weights; see tests/sj_reference.py)")
    record("3", "Spikformer", "ours added", add["ours"] * 1e3, unit="ms")
    record("3", "Spikformer", "spikingjelly added", add["sj"] * 1e3, unit="ms")
    record("3", "Spikformer", "spikingjelly/ours overhead", ratio, unit="x")


# ============================================================================ 4. memory


def section_memory() -> None:
    say("\n" + "=" * 100)
    say("[4] Memory held by the counters of this run: fan-out map caches (LRU, bounded per layer) and work buffers")
    say(f"  {'counter':62s}{'layers':>7s}{'maps KiB':>11s}{'work KiB':>10s}  bound of the maps")
    for label, c in COUNTERS:
        held, bound, scratch, n = counter_memory(c)
        say(f"  {label[:62]:62s}{n:7d}{held / 1024:11.1f}{scratch / 1024:10.1f}  {bound}")
        record("4", label, "map cache KiB", held / 1024, unit="KiB")
        if scratch:
            record("4", label, "work buffers KiB", scratch / 1024, unit="KiB")
    say("  work = buffers the hooks reuse on every call (absent without the hot-path patch)")


# ============================================================================ 5. GPU


def section_launches(device: str) -> None:
    """[5c] Tensor ops (aten calls, each a kernel launch at most) per counted call, and a counted training
    step under ``torch.cuda.set_sync_debug_mode("error")`` (benchmarks/launches.py)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import launches

    say(f"[5c] aten calls per counted layer call on {device} (benchmarks/launches.py; 3 counted layers, 8 steps)")
    for model in launches.MODELS:
        res = launches.measure(model, device, steps=8)
        for key in ("ops_per_counted_call", "read_ops", "backward_ops_extra"):
            record("5", f"launches {model} ({device})", key, float(res[key]), unit="aten calls")
        say(f"  {model}: forward +{res['ops_per_counted_call']:.1f} per counted call, read {res['read_ops']:.0f}, "
            f"backward +{res['backward_ops_extra']:.0f} ({res['calls']:.0f} counted calls)")
    if device.startswith("cuda"):
        launches.sync_free_step(device)
        say("  counted training step (forward, SynOpsLoss, backward, SGD) under set_sync_debug_mode('error'): no sync")


def section_gpu(args: argparse.Namespace, device: Optional[str] = None) -> None:
    global SYNC
    say("\n" + "=" * 100)
    if device is None:
        if not torch.cuda.is_available():
            say("[5] GPU: skipped, CUDA is not available here (torch.cuda.is_available() is False). On a machine with "
                "CUDA this section times the sinabs training step and ResNet-18 (B=64) counting vs NeuroBench, "
                "counts the tensor ops per counted call and runs a counted step under set_sync_debug_mode('error'); "
                "the op counts on this machine's CPU follow.")
            section_launches("cpu")
            return
        device = "cuda"
        SYNC = torch.cuda.synchronize
    say(f"[5] GPU ({torch.cuda.get_device_name(0) if device == 'cuda' else device})")
    try:
        B, T = 32, 20
        torch.manual_seed(0)
        x = (torch.rand(B * T, 1, 28, 28, device=device) < 0.25).float()
        y = torch.randint(0, 10, (B,), device=device)
        bench_training("sinabs tutorial SNN (GPU)", f"[5a] sinabs tutorial SNN on {device}, B={B}, T={T}",
                       twins(lambda: sinabs_tutorial_snn(B), ["plain", "readme", "default"], device), x, y,
                       lambda n, v: n(v).reshape(B, T, -1).sum(1), reset_states, {}, args.repeats, 1.05, section="5")
        bench_counting("ResNet-18 B=64 (GPU)", f"[5b] ResNet-18, B=64, 224x224 on {device}", ResNet18,
                       torch.randn(64, 3, 224, 224), max(3, args.repeats // 2), 100.0, device, section="5")
        section_launches(device)
    finally:
        SYNC = lambda: None  # noqa: E731


# ============================================================================ files


def write(tag: str, info: Dict[str, str]) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = "overhead" + (f"_{tag}" if tag else "")
    with open(RESULTS_DIR / f"{stem}.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["section", "model", "metric", "value", "q1", "q3", "unit", "target", "met"])
        for g in FIGURES:
            wr.writerow([g.section, g.model, g.metric, f"{g.value:.6g}", f"{g.q1:.6g}", f"{g.q3:.6g}", g.unit,
                         g.target, g.met])
    with open(RESULTS_DIR / f"{stem}.md", "w") as f:
        f.write("# Counting overhead (`python benchmarks/overhead.py`)\n\n")
        f.write("| machine | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in info.items()))
        f.write("\n## Targets\n\n| section | model | figure | value | target | met |\n|---|---|---|---|---|---|\n")
        for g in FIGURES:
            if g.target:
                f.write(f"| {g.section} | {g.model} | {g.metric} | {g.value:.3f} | {g.target} | {g.met} |\n")
        f.write("\n## Output\n\n```\n" + "\n".join(LINES) + "\n```\n")
    print(f"\nwrote {RESULTS_DIR / (stem + '.md')} and .csv")


def aggregate(paths: Sequence[str], name: str = "overhead_summary") -> None:
    """Median and range of every figure over several runs' CSVs."""
    rows: Dict[Tuple[str, str, str], List[float]] = {}
    meta: Dict[Tuple[str, str, str], Tuple[str, str]] = {}
    for p in paths:
        with open(p) as f:
            for r in csv.DictReader(f):
                key = (r["section"], r["model"], r["metric"])
                rows.setdefault(key, []).append(float(r["value"]))
                meta[key] = (r["unit"], r["target"])
    lines = [f"Figures over {len(paths)} runs ({', '.join(Path(p).name for p in paths)}): median [min - max]", "",
             "| section | model | figure | median | min | max | unit | target | met in all runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, vals in rows.items():
        unit, target = meta[key]
        met = ""
        if target:
            op, bound = target.split()
            ok = [v <= float(bound) if op == "<=" else v >= float(bound) for v in vals]
            met = "yes" if all(ok) else f"{sum(ok)} of {len(ok)}"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {med(vals):.3f} | {min(vals):.3f} | {max(vals):.3f} | "
                     f"{unit} | {target} | {met} |")
    text = "\n".join(lines)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.md").write_text("# Counting overhead over several runs\n\n" + text + "\n")
    print(f"\nwrote {RESULTS_DIR / (name + '.md')}")


# ============================================================================ main


def main() -> None:
    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats (under 2 min) instead of 15")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per measurement (default 15, quick 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["training", "counting", "spikingjelly", "gpu"], default=None)
    parser.add_argument("--clock", choices=["wall", "process"], default="wall",
                        help="process: CPU time of this process (steadier on a busy shared machine)")
    parser.add_argument("--tag", default="", help="suffix of the result files (overhead_<tag>.md/.csv)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--aggregate", nargs="+", metavar="CSV", help="summarise the CSVs of several runs")
    parser.add_argument("--summary", default="overhead_summary", help="file name (no suffix) of --aggregate's table")
    parser.add_argument("--gpu-section-on", default=None, help=argparse.SUPPRESS)  # test the GPU code on 'cpu'
    args = parser.parse_args()
    if args.aggregate:
        aggregate(args.aggregate, args.summary)
        return
    args.repeats = args.repeats or (5 if args.quick else 15)
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    info = machine()
    info["clock"] = f"{args.clock} ({'time.perf_counter' if args.clock == 'wall' else 'time.process_time'})"
    info["repeats"] = str(args.repeats)
    info["synopsloss"] = f"{getattr(sl, '__version__', '?')} from {Path(sl.__file__).parent}"
    say("synopsloss counting overhead (issue 12), " + time.strftime("%Y-%m-%d %H:%M"))
    for k, v in info.items():
        say(f"  {k:38s} {v}")
    if args.only in (None, "training"):
        section_training(args)
    if args.only in (None, "counting"):
        section_counting(args)
    if args.only in (None, "spikingjelly"):
        section_spikingjelly(args)
    if args.only is None:
        section_memory()
    if args.only in (None, "gpu"):
        section_gpu(args, args.gpu_section_on)
    try:
        info["load average at end"] = "%.1f %.1f %.1f" % os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    say("\n" + "=" * 100)
    say("Targets:")
    for g in FIGURES:
        if g.target:
            say(f"  [{g.section}] {g.model:28s} {g.metric:28s} {g.value:8.3f}  target {g.target:8s} met: {g.met}")
    say(f"\ntotal time {time.perf_counter() - t0:.0f} s; load average at end {info.get('load average at end', '?')}")
    if not args.no_write:
        write(args.tag, info)


if __name__ == "__main__":
    sys.exit(main())
