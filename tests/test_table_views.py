"""Column selection, the block view, compare() and the LaTeX export of the per-layer table."""

from __future__ import annotations

import csv
import io

import pytest
import torch
from torch import nn

import synopsloss as sl
from synopsloss.table import COLUMNS, PRESETS, LayerRow, SynOpsTable

snn = pytest.importorskip("snntorch")


def _plain_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),  # conv + its ReLU
        nn.Conv2d(2, 2, 3, padding=1), nn.Flatten(),  # a conv with no activation before the next synaptic layer
        nn.Linear(8, 4), nn.Dropout(0.1), nn.ReLU(), nn.Linear(4, 2),  # linear + ReLU, then a readout
    ).eval()


def _table(net: nn.Module, x: torch.Tensor, **kwargs) -> SynOpsTable:
    counter = sl.SynOpsCounter(net)
    net(x)
    return counter.table(**kwargs)


def test_unknown_columns_raise_a_value_error_listing_the_valid_ones():
    table = _table(_plain_net(), torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="unknown column.*'synapses'.*valid columns: name, type") as err:
        table.render(["synops", "synapses"])
    assert all(k in str(err.value) for k in COLUMNS) and all(p in str(err.value) for p in PRESETS)
    with pytest.raises(ValueError, match="unknown column preset 'tiny'.*presets: compact, neurobench"):
        table.to_markdown("tiny")
    with pytest.raises(ValueError, match=r"a single column: columns=\['synops'\]"):
        table.to_latex("synops")
    with pytest.raises(TypeError, match="columns must be a preset name or a list"):
        table.render(3)
    with pytest.raises(ValueError, match="view must be 'layers' or 'blocks'"):
        table.render(view="block")


def test_presets_drop_empty_columns_and_explicit_columns_keep_them_name_first():
    table = _table(_plain_net(), torch.rand(2, 1, 4, 4), energy=None)
    header = table.render().splitlines()[0].split()
    assert "Synops/s" not in header and "Energy" not in header  # no dt, no energy model
    explicit = table.render(["synops_per_s", "synops"]).splitlines()
    assert explicit[0].split() == ["Layer", "Synops/s", "Synops"]
    assert explicit[2].split() == ["0", "*", "-", f"{table['0'].synops:.3g}"]


def test_block_view_pairs_each_synaptic_layer_with_the_next_activation_and_keeps_every_count():
    table = _table(_plain_net(), torch.rand(2, 1, 4, 4))
    blocks = table.blocks()
    assert [(b.name, b.synaptic, b.neuron) for b in blocks] == [
        ("0 + 2", "0", "2"), ("4", "4", None), ("6 + 8", "6", "8"), ("9", "9", None)]
    assert [b.type for b in blocks] == ["Conv2d + ReLU", "Conv2d", "Linear + ReLU", "Linear"]
    for b in blocks:
        assert b.synops == table[b.synaptic].synops and b.dense == table[b.synaptic].dense
        if b.neuron is not None:
            assert b.density == table[b.neuron].density and b.neurons == table[b.neuron].neurons
    assert sum(b.synops for b in blocks) == pytest.approx(table.total.synops)
    assert sum(b.energy for b in blocks) == pytest.approx(table.total.energy)
    assert blocks.total is table.total and blocks.view == "blocks" and blocks.blocks() is blocks
    assert table.render(view="blocks") == str(blocks)
    rows = list(csv.DictReader(io.StringIO(blocks.to_csv())))
    assert [(r["synaptic"], r["neuron"]) for r in rows[:2]] == [("0", "2"), ("4", "")]


def test_block_view_takes_a_neuron_once_and_keeps_unclaimed_neurons_as_their_own_blocks():
    net = nn.Sequential(snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(3, 3), nn.Linear(3, 3),
                        snn.Leaky(beta=0.5, init_hidden=True))
    table = _table(net, torch.ones(2, 3) * 2)
    assert [(b.synaptic, b.neuron) for b in table.blocks()] == [(None, "0"), ("1", None), ("2", "3")]


def test_recurrent_synapses_join_their_neurons_block():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(4, 3)
            self.lif = snn.RLeaky(beta=0.9, linear_features=3)
            with torch.no_grad():
                self.fc.weight.fill_(1.0)  # every neuron spikes: the recurrent synapses carry spikes

        def forward(self, x):
            spk, mem = self.lif.init_rleaky()
            for t in range(x.shape[0]):
                spk, mem = self.lif(self.fc(x[t]) * 3, spk, mem)
            return spk

    net = Recurrent()
    counter = sl.SynOpsCounter(net, batch_dim=1)
    net(torch.ones(4, 2, 4))
    table = counter.table()
    assert table["lif.recurrent"].synops > 0
    (block,) = table.blocks()
    assert (block.synaptic, block.neuron, block.recurrent) == ("fc", "lif", ("lif.recurrent",))
    assert block.synops == pytest.approx(table["fc"].synops + table["lif.recurrent"].synops)
    assert block.firing_rate == table["lif"].firing_rate
    assert "Recurrent synapses counted in their neuron's block: lif (lif.recurrent)." in str(table.blocks())


def test_compare_refuses_what_is_not_a_table():
    table = _table(_plain_net(), torch.rand(2, 1, 4, 4))
    with pytest.raises(TypeError, match="after must be a SynOpsTable"):
        sl.compare(table, {"synops": 1})
    with pytest.raises(ValueError, match="view must be"):
        sl.compare(table, table, view="all")
    with pytest.raises(ValueError, match="labels must be two non-empty strings"):
        sl.compare(table, table, labels=("a",))


def test_compare_matches_layers_by_name_and_marks_what_one_table_lacks():
    small = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    big = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False), nn.Linear(1, 1))
    for net in (small, big):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(1.0)
    with torch.no_grad():
        small[2].weight.zero_()  # no synapse left: the ratio is infinite
    a, b = _table(big, torch.ones(1, 2)), _table(small, torch.ones(1, 2))
    comparison = sl.compare(a, b, labels=("big", "small"))
    assert [r.name for r in comparison] == ["0", "2", "3"]
    assert comparison["2"].ratio == float("inf") and comparison["3"].synops_after is None
    # big: 0 reads the data; 2 gets the ReLU's [2, 2] (fan-out 1 each: 4); 3 gets 4 (fan-out 1)
    assert comparison["Network-driven"].synops_before == 4 + 4 and comparison["Network-driven"].synops_after == 0
    text = str(comparison).splitlines()
    assert text[0].split()[:6] == ["Layer", "Type", "Synops", "big", "Synops", "small"]
    # two inputs of value 2 (integer: 2 spike events each), one weight each: synops 4, 4 ACs x 0.9 pJ
    assert text[3].split() == ["2", "Linear", "4", "0", "inf", "3.6", "pJ", "0", "J"]
    assert text[4].split()[:5] == ["3", "Linear", "4", "-", "-"]


def test_latex_escapes_special_characters_and_checks_its_arguments():
    rows = [LayerRow(name="enc_1.conv%a", type="My_Conv", kind="synaptic", synops=1.5e3, energy=2e-6, share=1.0)]
    table = SynOpsTable(rows, LayerRow(name="Total", type="", kind="", synops=1.5e3, energy=2e-6, share=1.0),
                        samples=1, energy_model="x_y")
    tex = table.to_latex(caption="Per-layer $E$", label="tab:x")
    assert r"enc\_1.conv\%a & My\_Conv & synaptic & 1.5k & 100.0\% & 2 $\mu$J \\" in tex
    assert r"\caption{Per-layer $E$}" in tex and r"energy: x\_y model" in tex
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1 and tex.count(r"\midrule") == 2
    with pytest.raises(TypeError, match="caption must be a string"):
        table.to_latex(caption=1)


def test_compare_keeps_two_rows_of_one_name():
    """A norse recurrent cell has a synapse row and a neuron row of one name: compare kept only the second, its
    rows no longer summed to its total and its network-driven row was empty."""
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(0)
    cell = norse.LIFRecurrentCell(4, 6)
    with torch.no_grad():
        cell.input_weights.mul_(8.0)
    net = nn.Sequential(nn.Linear(3, 4))
    net.add_module("cell", cell)

    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.cell = net[0], cell

        def forward(self, x):
            state = None
            for t in range(x.shape[0]):
                _, state = self.cell(self.lin(x[t]), state)
            return state.v

    model = Loop()
    counter = sl.SynOpsCounter(model)
    model((torch.rand(5, 2, 3, generator=torch.Generator().manual_seed(3)) < 0.5).float())
    table = counter.table()
    cmp = sl.compare(table, table)
    kinds = sorted(r.kind for r in table if r.name == "cell")
    assert kinds == ["neuron", "recurrent synapses"]
    rows = [r for r in cmp.rows if r.name == "cell"]
    assert len(rows) == 2
    assert sum(r.synops_before or 0.0 for r in cmp.rows) == pytest.approx(table.total.synops)
    assert cmp.driven is not None and cmp.driven.synops_before == pytest.approx(
        sum(r.synops for r in table if r.synops is not None and not r.data_fed))


def test_values_that_round_up_to_1000_of_their_unit_print_in_the_next_unit():
    net = nn.Sequential(nn.Linear(1000, 1000, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].weight.view(-1)[:400] = 0.0  # 999,600 synapses
    counter = sl.SynOpsCounter(net)
    net(torch.ones(1, 1000))
    table = counter.table(energy={"e_ac": 1e-15, "e_mac": 1e-15})  # 999.6 pJ
    text = table.render(["synops", "energy"])
    assert "1M" in text and "1 nJ" in text and "e+03" not in text
    tex = table.to_latex(["synops", "energy"], notes=False)
    assert "1M" in tex and "1 nJ" in tex and "e+03" not in tex


def test_markdown_escapes_what_would_format_a_layer_name():
    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.add_module("conv_in", nn.Linear(2, 2))

        def forward(self, x):
            return self.conv_in(x)

    net = Named()
    counter = sl.SynOpsCounter(net)
    net(torch.ones(1, 2))
    md = counter.table().to_markdown()
    assert "conv\\_in" in md and "| conv_in" not in md


def test_the_blocks_view_keeps_the_estimate_and_energy_columns():
    """Blocks summed synops and energy but dropped the paper's estimate, its energy and the break-even columns
    (the Total kept them)."""
    import snntorch as snn

    from synopsloss.calibration import break_even

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), snn.Leaky(beta=0.9, init_hidden=True), nn.Linear(5, 3),
                        snn.Leaky(beta=0.9, init_hidden=True))
    counter = sl.SynOpsCounter(net)
    for _ in range(4):
        net((torch.rand(2, 6) < 0.5).float())
    table = break_even(counter.table(energy="horowitz45nm"))
    blocks = table.blocks()
    syn = [r for r in table if r.kind == "synaptic"]
    for col in ("synops_estimate", "energy_paper", "ann_energy"):
        assert [getattr(b, col) for b in blocks] == pytest.approx([getattr(r, col) for r in syn])
    assert [b.break_even_rate for b in blocks] == pytest.approx([r.break_even_rate for r in syn])


def test_compare_names_layers_that_differ_between_the_two_tables():
    """compare() of two different networks matched 'Leaky' against 'ReLU' by their shared name and printed
    ratios, silently. Tables of one network compare without a warning."""
    import warnings

    import snntorch as snn

    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(8, 6), snn.Leaky(beta=0.9, init_hidden=True), nn.Linear(6, 3))
    b = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3), nn.Linear(3, 2))
    x = (torch.rand(4, 8, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    ca, cb = sl.SynOpsCounter(a), sl.SynOpsCounter(b)
    a(x)
    b(x)
    with pytest.warns(sl.SynOpsWarning, match=r"layer\(s\) 1 \(Leaky / ReLU\) are different layers"):
        sl.compare(ca.table(), cb.table())
    first = ca.table()
    ca.reset()
    a(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.SynOpsWarning)
        sl.compare(first, ca.table())
