"""The rendered tables against expected files (tests/golden/), on small networks with fixed weights and inputs.

The numbers in the expected files are exact for these networks; a separate test recomputes the main ones
by hand (tap enumeration and recorded spikes), so the expected files are not only what the code printed.
Regenerate them with ``pytest --overwrite-golden tests/test_table_golden.py`` and review the diff.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import synopsloss as sl

snn = pytest.importorskip("snntorch")
sinabs_layers = pytest.importorskip("sinabs.layers")
snn_utils = pytest.importorskip("snntorch.utils")

# [T=4, B=2, 1, 4] binary spikes, fixed
X_STEPS = torch.tensor([
    [[[1, 0, 1, 1]], [[0, 1, 1, 0]]],
    [[[1, 1, 0, 1]], [[1, 0, 0, 1]]],
    [[[0, 1, 1, 1]], [[1, 1, 1, 0]]],
    [[[1, 0, 1, 0]], [[0, 1, 1, 1]]],
], dtype=torch.float32)
CONV_W = [[[1.0, 0.0, 1.0]], [[0.5, 1.0, 0.0]]]  # [out 2, in 1, k 3]: two pruned taps
FC_W = [  # [out 3, in 8] (in: 2 channels x 4 positions), zeros are no synapses
    [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
    [0.0, 1.5, 0.0, 1.5, 0.0, 1.5, 0.0, 1.5],
    [0.7, 0.7, 0.0, 0.0, 0.7, 0.7, 0.0, 0.0],
]


class SnnTorchNet(nn.Module):
    """conv_in (Conv1d) -> lif_in (Leaky) -> drop -> flat -> fc_out (Linear) -> lif_out (Leaky); one call per step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv1d(1, 2, 3, padding=1, bias=False)
        self.lif_in = snn.Leaky(beta=0.5, init_hidden=True)
        self.drop = nn.Dropout(0.5)
        self.flat = nn.Flatten()
        self.fc_out = nn.Linear(8, 3, bias=False)
        self.lif_out = snn.Leaky(beta=0.5, init_hidden=True)
        with torch.no_grad():
            self.conv_in.weight.copy_(torch.tensor(CONV_W))
            self.fc_out.weight.copy_(torch.tensor(FC_W))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif_out(self.fc_out(self.flat(self.drop(self.lif_in(self.conv_in(x))))))


def snntorch_table(prune_fc: bool = False, **kwargs) -> sl.SynOpsTable:
    net = SnnTorchNet()
    if prune_fc:
        with torch.no_grad():
            net.fc_out.weight[:, 4:] = 0.0  # drop every synapse from the second channel
    counter = sl.SynOpsCounter(net)
    snn_utils.reset(net)
    for t in range(X_STEPS.shape[0]):
        net(X_STEPS[t])
    return counter.table(**kwargs)


def sinabs_table(**kwargs) -> sl.SynOpsTable:
    """[B=2, T=4, 4] into Linear -> IAF -> Linear -> IAF (sinabs: all steps in one call)."""
    net = nn.Sequential(nn.Linear(4, 3, bias=False), sinabs_layers.IAF(), nn.Linear(3, 2, bias=False),
                        sinabs_layers.IAF())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.6, 0.0, 0.6, 0.0], [0.0, 1.2, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]))
        net[2].weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]]))
    counter = sl.SynOpsCounter(net)
    net(X_STEPS[:, :, 0].transpose(0, 1).contiguous())  # [B, T, 4]
    return counter.table(**kwargs)


def compare_tables() -> sl.SynOpsComparison:
    return sl.compare(snntorch_table(), snntorch_table(prune_fc=True), labels=("dense", "pruned"))


GOLDEN_OUTPUTS = {
    "snntorch_compact.txt": lambda: str(snntorch_table(dt=1e-3)),
    "snntorch_full.txt": lambda: snntorch_table(dt=1e-3).render("full"),
    "snntorch_neurobench.txt": lambda: snntorch_table().render("neurobench"),
    "snntorch_columns.txt": lambda: snntorch_table().render(["in_shape", "neurons", "fanout_mean", "synops"]),
    "snntorch.md": lambda: snntorch_table().to_markdown(),
    "snntorch.tex": lambda: snntorch_table().to_latex(caption="Synaptic operations per layer.", label="tab:synops"),
    "snntorch_blocks.txt": lambda: str(snntorch_table().blocks()),
    "snntorch_blocks.md": lambda: snntorch_table().to_markdown(view="blocks"),
    "snntorch_blocks.tex": lambda: snntorch_table(energy=None).to_latex(view="blocks", notes=False),
    "sinabs_compact.txt": lambda: str(sinabs_table()),
    "sinabs_neurons.txt": lambda: sinabs_table().render("neurons"),
    "compare.txt": lambda: str(compare_tables()),
    "compare.md": lambda: compare_tables().to_markdown(),
    "compare.tex": lambda: compare_tables().to_latex(caption="Before and after pruning.", label="tab:compare"),
    "compare_blocks.txt": lambda: str(sl.compare(snntorch_table(), snntorch_table(prune_fc=True), view="blocks")),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_OUTPUTS))
def test_rendered_table_matches_its_golden_file(name, golden):
    golden(name, GOLDEN_OUTPUTS[name]())


def _conv_fanout(weight, length: int, effective: bool):
    """Taps per input position of a stride-1, padding-1 Conv1d with one input channel, by enumeration."""
    out_ch, _, k = len(weight), len(weight[0]), len(weight[0][0])
    fan = [0] * length
    for c in range(out_ch):
        for i in range(length):  # output position
            for tap in range(k):
                j = i + tap - 1  # input position this tap reads
                if 0 <= j < length and (not effective or weight[c][0][tap] != 0):
                    fan[j] += 1
    return fan


def test_golden_numbers_equal_a_hand_computation():
    seen = {}
    net_table = snntorch_table(dt=1e-3)
    # conv_in: enumerate the taps of the fixed weights; inputs are the fixed spikes
    fan = _conv_fanout(CONV_W, 4, effective=True)
    dense_fan = _conv_fanout(CONV_W, 4, effective=False)
    assert fan == [3, 4, 4, 2] and dense_fan == [4, 6, 6, 4]  # worked out on paper too
    x = X_STEPS[:, :, 0]  # [T, B, 4]
    synops = sum(float(x[t, b, j]) * fan[j] for t in range(4) for b in range(2) for j in range(4)) / 2
    assert synops == 34.5
    row = net_table["conv_in"]
    assert (row.synops, row.eff_acs, row.eff_macs, row.dense) == (34.5, 34.5, 0.0, 4 * sum(dense_fan))
    assert row.synops_per_s == pytest.approx(34.5 / 4 / 1e-3)
    assert row.energy == pytest.approx(34.5 * 0.9e-12)
    # fc_out: its inputs recorded by a hook of our own, times each input's nonzero weights (column counts)
    net = SnnTorchNet()
    net.fc_out.register_forward_pre_hook(lambda m, a: seen.setdefault("fc", []).append(a[0].detach().clone()))
    net.lif_out.register_forward_hook(lambda m, a, o: seen.setdefault("out", []).append(o.detach().clone()))
    snn_utils.reset(net)
    for t in range(4):
        net(X_STEPS[t])
    nnz = [sum(1 for r in range(3) if FC_W[r][j] != 0) for j in range(8)]
    fc_in = torch.stack(seen["fc"])  # [T, B, 8]
    fc_synops = sum(float(fc_in[t, b, j]) * nnz[j] for t in range(4) for b in range(2) for j in range(8)) / 2
    assert net_table["fc_out"].synops == fc_synops == 18.0
    assert net_table["fc_out"].dense == 4 * 3 * 8
    out = torch.stack(seen["out"])
    assert net_table["lif_out"].firing_rate == pytest.approx(float(out.mean()))
    assert net_table.total.synops == 34.5 + 18.0
    # the comparison: after pruning, fc_out keeps only the synapses of input positions 0-3
    comparison = compare_tables()
    pruned = sum(float(fc_in[t, b, j]) * nnz[j] for t in range(4) for b in range(2) for j in range(4)) / 2
    assert comparison["fc_out"].synops_after == pruned == 10.0
    assert comparison["fc_out"].ratio == pytest.approx(18.0 / 10.0)
    assert comparison["Total"].ratio == pytest.approx(52.5 / 44.5)
    assert comparison["Network-driven"].synops_before == 18.0
    # sinabs: the same spikes, [B, T, 4], into a Linear with two nonzero weights per input (one for input 3)
    s = sinabs_table()
    assert s["0"].synops == (5 * 2 + 5 * 2 + 6 * 2 + 5 * 1) / 2  # column sums of X_STEPS times fan-out
    assert s["0"].dense == 4 * 4 * 3


def test_compact_default_fits_120_characters():
    from synopsloss.demo import SpikingCNN

    net = SpikingCNN()
    counter = sl.SynOpsCounter(net, batch_dim=1)
    net((torch.rand(4, 2, 1, 8, 8) < 0.3).float())
    tables = [snntorch_table(dt=1e-3), sinabs_table(dt=1e-3), counter.table(dt=1e-3)]
    for table in tables:
        for text in (str(table), str(table.blocks())):
            assert max(len(line) for line in text.splitlines()) <= 120, text
        assert len(table.render("full").splitlines()[0]) > 120  # the full preset is the wide one
    assert max(len(line) for line in str(compare_tables()).splitlines()) <= 120
if __name__ == "__main__":  # pragma: no cover - a look at the tables while editing
    print(snntorch_table(dt=1e-3))
    print(snntorch_table().blocks())
    print(sinabs_table())
    print(sl.compare(snntorch_table(), snntorch_table(prune_fc=True)))
