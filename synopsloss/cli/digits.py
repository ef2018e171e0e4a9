"""The demo's data, network and training loop: a small spiking CNN on 8x8 digits, without and with the synops loss.

The data are scikit-learn's 1797 handwritten digits (``load_digits``, shipped
with the package: no download), pixel intensities rate-coded into ``T``
Bernoulli spike frames. The network (snntorch ``Leaky`` neurons)::

    conv1 3x3 (1 -> 16) -> Leaky -> maxpool 2 -> conv2 3x3 (16 -> 32) -> Leaky -> maxpool 2 -> fc (128 -> 10)

is trained twice from the same initialisation: with cross-entropy only, then
with ``SynOpsLoss(counter, target=budget)`` added -- by default a quarter of the
network-driven synops per sample of the first run's network -- whose weight
warms up from 0 to 1 over the first quarter of the epochs. ``conv1`` is fed by the data: its synops
are the input spikes times its fan-out, which training cannot lower, so the
loss leaves it out (see :mod:`synopsloss.loss`). Both per-layer tables, the
test accuracies and the synops reduction are printed.

The functions here (:func:`load_data`, :class:`SpikingCNN`, :func:`train`,
:func:`evaluate`) are reused by ``benchmarks/tradeoff.py``.

``synopsloss demo`` (:mod:`synopsloss.cli.demo`) runs it from the command line.

Example
-------
>>> from synopsloss.cli.digits import SpikingCNN, rate_code
>>> import torch
>>> net = SpikingCNN()
>>> net(rate_code(torch.rand(2, 1, 8, 8), time_steps=3)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SpikingCNN", "load_data", "rate_code", "train", "evaluate", "RunResult", "format_table", "legend", "LEGEND",
           "summary", "warmup_weight"]


# ---------------------------------------------------------------------------- data


def load_data(seed: int = 0, test_fraction: float = 0.2) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 8x8 digits as ``[N, 1, 8, 8]`` intensities in [0, 1], split stratified.

    Returns ``(x_train, y_train, x_test, y_test)``; the split depends on ``seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=digits.target)
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    return x[tr], y[tr], x[te], y[te]


def rate_code(x: Tensor, time_steps: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Bernoulli spikes ``[T, *x.shape]``: each pixel spikes at each step with probability = its intensity."""
    noise = torch.rand((time_steps, *x.shape), generator=generator, device=x.device)
    return (noise < x).to(x.dtype)


# ---------------------------------------------------------------------------- model


class SpikingCNN(nn.Module):
    """Two spiking conv layers and a linear readout; input ``[T, B, 1, 8, 8]`` spikes.

    Returns the readout averaged over time (logits ``[B, 10]``). With
    ``return_spikes=True`` also the hidden spikes per sample (summed over
    neurons and steps), for an activity (L1 spike-rate) regulariser.
    """

    def __init__(self, channels: Tuple[int, int] = (16, 32), beta: float = 0.9) -> None:
        super().__init__()
        import snntorch as snn

        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.lif1 = snn.Leaky(beta=beta)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.lif2 = snn.Leaky(beta=beta)
        self.fc = nn.Linear(c2 * 2 * 2, 10)

    def forward(self, x: Tensor, return_spikes: bool = False):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        out: Tensor = torch.zeros((), device=x.device)
        spikes: Tensor = torch.zeros((), device=x.device)
        for t in range(x.shape[0]):
            s1, mem1 = self.lif1(self.conv1(x[t]), mem1)
            s2, mem2 = self.lif2(self.conv2(F.max_pool2d(s1, 2)), mem2)
            out = out + self.fc(F.max_pool2d(s2, 2).flatten(1))
            if return_spikes:
                spikes = spikes + s1.flatten(1).sum(1) + s2.flatten(1).sum(1)
        out = out / x.shape[0]
        return (out, spikes.mean()) if return_spikes else out


# ---------------------------------------------------------------------------- training


@dataclass
class RunResult:
    """What one training run measured on the test set (per sample, all time steps)."""

    accuracy: float
    counts: Dict[str, Dict[str, float]]
    data_fed: List[str]
    seconds: float
    table: Any = None
    targets: Dict[str, Any] = field(default_factory=dict)
    initial: Dict[str, Any] = field(default_factory=dict)

    @property
    def synops(self) -> float:
        """Total synops per sample."""
        return sum(c["synops"] for c in self.counts.values())

    @property
    def driven_synops(self) -> float:
        """Synops per sample of the layers not fed directly by the data."""
        return sum(c["synops"] for n, c in self.counts.items() if n not in self.data_fed)


def train(
    net: nn.Module,
    data: Tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    epochs: int = 20,
    lr: float = 1e-2,
    batch_size: int = 64,
    time_steps: int = 8,
    seed: int = 0,
    make_loss: Optional[Callable[[Any], Any]] = None,
    activity_l1: float = 0.0,
    progress: bool = True,
    desc: str = "train",
) -> RunResult:
    """Train ``net`` with Adam (cosine learning rate) on cross-entropy [+ synops loss] [+ L1 activity].

    ``make_loss(counter)`` builds the synops loss (e.g. ``lambda c: SynOpsLoss(c, fraction=0.5)``),
    whose ``step()`` is called after every batch (schedules count batches);
    ``activity_l1`` weights the mean hidden spike count per sample divided by the number
    of hidden neurons (a plain spike-rate regulariser, for comparison).
    Returns the test-set :class:`RunResult`.
    """
    from tqdm.auto import tqdm

    from ..counter import SynOpsCounter

    x_tr, y_tr, x_te, y_te = data
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    counter = SynOpsCounter(net, batch_dim=1)  # input is [T, B, ...]
    loss_fn = make_loss(counter) if make_loss is not None else None
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    hidden = None
    batches = math.ceil(len(y_tr) / batch_size)
    bar = tqdm(total=epochs * batches, desc=desc, disable=not progress, leave=False, file=sys.stderr)
    try:
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(y_tr), generator=gen)
            for i in range(0, len(y_tr), batch_size):
                idx = perm[i:i + batch_size]
                spikes = rate_code(x_tr[idx], time_steps, gen)
                counter.reset()
                if activity_l1:
                    logits, hidden_spikes = net(spikes, return_spikes=True)
                else:
                    logits = net(spikes)
                loss = F.cross_entropy(logits, y_tr[idx])
                if loss_fn is not None:
                    loss = loss + loss_fn()
                if activity_l1:
                    if hidden is None:
                        with counter.paused():
                            hidden = _hidden_neurons(net, spikes)
                    loss = loss + activity_l1 * hidden_spikes / (hidden * time_steps)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if loss_fn is not None:
                    loss_fn.step()  # its schedules advance per batch
                bar.update(1)
                if loss_fn is not None:
                    bar.set_postfix(target=_short(loss_fn.targets()), refresh=False)
            sched.step()
    finally:
        bar.close()
    result = evaluate(net, counter, x_te, y_te, time_steps=time_steps, seed=seed)
    counter.remove()
    result.seconds = time.perf_counter() - start
    if loss_fn is not None:
        result.targets, result.initial = loss_fn.targets(), loss_fn.initial()
    return result


def _short(targets: Dict[str, Any]) -> str:
    return ", ".join(f"{v:.4g}" for v in targets.values() if v is not None)


def _hidden_neurons(net: nn.Module, spikes: Tensor) -> int:
    with torch.no_grad():
        s1 = net.conv1(spikes[0, :1])
        s2 = net.conv2(F.max_pool2d(s1, 2))
    return s1[0].numel() + s2[0].numel()


def evaluate(net: nn.Module, counter: Any, x: Tensor, y: Tensor, *, time_steps: int = 8, seed: int = 0,
             batch_size: int = 256, encode: Optional[Callable[[Tensor, int, torch.Generator], Tensor]] = None,
             keep: bool = False) -> RunResult:
    """Test accuracy and per-sample counts over ``x`` (one fixed encoding per ``seed``: ``encode(x, T, gen)``,
    rate coding by default). ``keep=True`` leaves the accumulated counts in the counter for the caller."""
    encode = rate_code if encode is None else encode
    gen = torch.Generator().manual_seed(10_000 + seed)
    net.eval()
    counter.reset(accumulated=True)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            counter.reset()
            logits = net(encode(x[i:i + batch_size], time_steps, gen))
            correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    table = counter.table(accumulated=True) if hasattr(counter, "table") else None
    counts = counter.snapshot(accumulated=True).per_layer()
    fed = counter.data_fed_layers()
    if not keep:
        counter.reset(accumulated=True)
    net.train()
    return RunResult(accuracy=correct / len(y), counts=counts, data_fed=fed, seconds=0.0, table=table)


# ---------------------------------------------------------------------------- reporting


def _plain_table(result: RunResult) -> str:
    """Per-layer table from ``counts()`` (used when ``counter.table()`` is not available)."""
    total = result.synops or 1.0
    lines = [f"{'layer':<8} {'synops':>12} {'share':>7} {'eff ACs':>12} {'dense':>12}"]
    for name, c in result.counts.items():
        mark = "*" if name in result.data_fed else ""
        lines.append(f"{name + mark:<8} {c['synops']:>12,.0f} {c['synops'] / total:>7.1%} {c['eff_acs']:>12,.0f} {c['dense']:>12,.0f}")
    lines.append(f"{'total':<8} {result.synops:>12,.0f} {1:>7.0%}")
    lines.append("* fed directly by the data: training cannot lower these synops")
    return "\n".join(lines)


def format_table(result: RunResult) -> str:
    """The per-layer table of a run as text."""
    return str(result.table) if result.table is not None else _plain_table(result)


#: The demo table's columns in words; ``docs/table.md#glossary`` quotes the same lines (a test checks it).
LEGEND = {
    "Synops": "input spikes x their effective fan-out (nonzero outgoing weights): what SynOpsLoss trains down",
    "Dense": "every weight tap of every input neuron, whatever the input (the synops of a dense, always-on network)",
    "Eff MACs": "nonzero non-spike input x nonzero weight (multiply-accumulates); 0 when every input is a spike",
    "Eff ACs": "nonzero spike input x nonzero weight (accumulates); equals Synops for 0/1 spikes",
    "Out rate": "output spikes per neuron per time step of a neuron layer",
    "Share": "the layer's share of the total synops",
    "Energy": "Eff ACs x 0.9 pJ + Eff MACs x 4.6 pJ (the horowitz45nm energy model, 45 nm float ops)",
}


def legend() -> str:
    """The legend printed under the demo's table: one line per column (:data:`LEGEND`)."""
    width = max(len(k) for k in LEGEND)
    lines = ["Columns (per sample, all time steps):"]
    lines += [f"  {k:<{width}}  {v}" for k, v in LEGEND.items()]
    return "\n".join(lines)


def summary(base: RunResult, reg: RunResult, budget_of: Optional[float] = None) -> str:
    """Accuracies and synops reductions of the two runs, as text, and how close the second came to its target.

    ``budget_of``: the target was that fraction of the first run's network-driven synops (the demo's
    ``--target``); else it is read as given in synops per sample (or a fraction of the first batch's).
    """
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x fewer" if b > 0 else "n/a"

    rows = [
        ("", "without loss", "with loss", "change"),
        ("test accuracy", f"{base.accuracy:.1%}", f"{reg.accuracy:.1%}",
         f"{100 * (reg.accuracy - base.accuracy):+.1f} points"),
        ("network-driven synops / sample", f"{base.driven_synops:,.0f}", f"{reg.driven_synops:,.0f}",
         ratio(base.driven_synops, reg.driven_synops)),
        ("total synops / sample", f"{base.synops:,.0f}", f"{reg.synops:,.0f}", ratio(base.synops, reg.synops)),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    target = reg.targets.get("driven") if reg.targets else None
    if target:
        if budget_of is not None:
            source = f"{budget_of:.2f} x the {base.driven_synops:,.0f} of the run without loss"
        else:
            source = _fraction_note(reg)
        out.append(f"synops target per sample (driven: {target:,.0f}) = {source}")
        off = reg.driven_synops / target - 1
        out.append(f"reached {reg.driven_synops:,.0f} network-driven synops per sample on the test set: "
                   f"{off:+.1%} from the target")
    elif reg.targets:
        t = ", ".join(f"{k}: {v:,.0f}" for k, v in reg.targets.items() if v is not None)
        out.append(f"synops target per sample ({t}) = {_fraction_note(reg)}")
    out.append(f"data-fed layer(s), not regularised: {', '.join(base.data_fed) or 'none'}")
    return "\n".join(out)


def _fraction_note(reg: RunResult) -> str:
    init = {k: v for k, v in reg.initial.items() if v is not None}
    if not init:
        return "as given"
    parts = [f"{reg.targets[k] / v:.2f} x the initial {v:,.0f}" for k, v in init.items() if reg.targets.get(k)]
    return "; ".join(parts)


def _plot(base: RunResult, reg: RunResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(base.counts)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    w = 0.38
    xs = range(len(names))
    ax.bar([i - w / 2 for i in xs], [base.counts[n]["synops"] for n in names], w,
           label=f"without loss ({base.accuracy:.1%})")
    ax.bar([i + w / 2 for i in xs], [reg.counts[n]["synops"] for n in names], w,
           label=f"with synops loss ({reg.accuracy:.1%})")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([n + (" (data-fed)" if n in base.data_fed else "") for n in names])
    ax.set_ylabel("synops per sample")
    ax.set_title("synopsloss demo: per-layer synops (test accuracy)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def warmup_weight(weight: float, epochs: float, samples: int, batch_size: int):
    """The loss weight rising linearly from 0 over ``epochs`` epochs of batches (a number when ``epochs`` is 0).

    Letting the network learn the task before the synops term acts costs less
    accuracy at the same synops (see ``benchmarks/tradeoff.py``).
    """
    from ..schedules import Warmup

    steps = int(round(epochs * math.ceil(samples / batch_size)))
    return Warmup(weight, steps=steps) if steps >= 1 else weight
