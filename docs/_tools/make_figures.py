"""Draw the figures of the documentation (docs/img/*.svg). Run: python docs/_tools/make_figures.py

The numbers in the picture are those of the worked example on the home page; the test
tests/test_docs.py recomputes them with synopsloss.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "img"

# the worked example: 3 input neurons, 4 time steps, 3 output neurons; weight c->z is zero
SPIKES = {"a": [1, 0, 1, 0], "b": [0, 0, 0, 0], "c": [0, 1, 0, 0]}
ZERO = {("c", "z")}


plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "synopsloss", "font.size": 10})


def table_plot(path: Path) -> None:
    """``SynOpsTable.plot`` of the network on the table page (same seed, same spikes)."""
    import torch
    import snntorch as snn
    from snntorch import utils
    from torch import nn

    import synopsloss as sl

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 10), snn.Leaky(beta=0.9, init_hidden=True))
    counter = sl.SynOpsCounter(net)
    utils.reset(net)
    for _ in range(8):
        net((torch.rand(16, 1, 8, 8) < 0.3).float())
    counter.table(dt=1e-3).plot(str(path), figsize=(7.0, 4.0))


def synops_figure(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8.2, 3.4))
    ax.set_xlim(0, 10.4)
    ax.set_ylim(-0.3, 4.1)
    ax.axis("off")
    ins = {"a": 3.2, "b": 2.0, "c": 0.8}
    outs = {"x": 3.2, "y": 2.0, "z": 0.8}
    x_in, x_out = 3.2, 5.6
    for n, y in ins.items():  # spike trains over 4 time steps
        ax.plot([0.3, 2.5], [y, y], color="#888", lw=0.8)
        for t, s in enumerate(SPIKES[n]):
            if s:
                ax.plot([0.6 + 0.5 * t] * 2, [y - 0.02, y + 0.32], color="#d62728", lw=2.2)
        ax.text(0.15, y, n, ha="right", va="center", fontsize=11, fontweight="bold")
    ax.text(1.4, 3.85, "input spikes, T = 4 steps", ha="center", fontsize=9, color="#444")
    for n, yi in ins.items():
        for m, yo in outs.items():
            zero = (n, m) in ZERO
            ax.plot([x_in, x_out], [yi, yo], color="#bbb" if zero else "#1f77b4", lw=1.0 if zero else 1.4,
                    ls=(0, (3, 3)) if zero else "-", zorder=1)
    for y in ins.values():
        ax.add_patch(plt.Circle((x_in, y), 0.22, color="#444", zorder=2))
    for m, y in outs.items():
        ax.add_patch(plt.Circle((x_out, y), 0.22, color="#444", zorder=2))
    ax.text(4.4, 3.85, "synapses (weights)", ha="center", fontsize=9, color="#444")
    ax.text(4.4, 0.05, "dashed: weight 0, no synapse", ha="center", fontsize=8, color="#777")
    rows = [
        ("a", "2 spikes x fan-out 3", "= 6"),
        ("b", "0 spikes (silent)", "= 0"),
        ("c", "1 spike x fan-out 2", "= 2"),
    ]
    for (n, what, val), y in zip(rows, ins.values()):
        ax.text(6.3, y, f"{n}: {what}", va="center", fontsize=10)
        ax.text(10.3, y, val, va="center", ha="right", fontsize=10)
    ax.plot([6.3, 10.3], [0.35, 0.35], color="#444", lw=0.8)
    ax.text(6.3, 0.05, "synops per sample", va="center", fontsize=10, fontweight="bold")
    ax.text(10.3, 0.05, "8", va="center", ha="right", fontsize=10, fontweight="bold")
    ax.text(6.3, -0.25, "dense (every tap, every step): 9 x 4 = 36", va="center", fontsize=8, color="#555")
    fig.tight_layout(pad=0.2)
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    synops_figure(OUT / "synops.svg")
    table_plot(OUT / "table_plot.svg")
    print("wrote", OUT / "synops.svg", OUT / "table_plot.svg")
