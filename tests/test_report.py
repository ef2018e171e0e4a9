"""The per-layer table: every column against an independent computation; the exports agree."""

from __future__ import annotations

import csv
import io

import pytest
import snntorch as snn
import torch
from snntorch import utils as snn_utils
from torch import nn

import synopsloss as sl

from helpers import brute_force_counts, brute_force_map


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), snn.Leaky(beta=0.9, init_hidden=True),
        nn.MaxPool2d(2), nn.Dropout(0.2), nn.Upsample(scale_factor=2), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(12, 5), snn.Leaky(beta=0.9, init_hidden=True),
    )
    with torch.no_grad():
        net[8].weight[net[8].weight.abs() < 0.1] = 0  # some pruned synapses
    return net.eval()


def _run(net, x):
    snn_utils.reset(net)
    for t in range(x.shape[1]):
        net(x[:, t])


def _capture(net, names):
    """Inputs of the named layers, per call (an independent record)."""
    seen = {n: [] for n in names}
    hooks = [net.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen[n].append(a[0].detach().clone()))
             for n in names]
    return seen, hooks


def test_non_synaptic_layers_appear_as_what_they_are_in_forward_order():
    net = _cnn()
    counter = sl.SynOpsCounter(net)
    _run(net, (torch.rand(2, 3, 1, 4, 4) < 0.5).float() * 4)
    table = counter.table()
    assert [(r.name, r.kind) for r in table] == [
        ("0", "synaptic"), ("1", "norm (folded)"), ("2", "neuron"), ("3", "pooling"), ("4", "dropout"),
        ("5", "upsampling"), ("6", "pooling"), ("7", "reshape"), ("8", "synaptic"), ("9", "neuron"),
    ]
    assert [r.type for r in table][:2] == ["Conv2d", "BatchNorm2d"]


class Reordered(nn.Module):
    """Defines b before a but calls a first: the table follows the calls."""

    def __init__(self):
        super().__init__()
        self.b = nn.Linear(4, 2)
        self.relu = nn.ReLU()
        self.a = nn.Linear(3, 4)

    def forward(self, x):
        return self.b(self.relu(self.a(x)))


def test_rows_follow_the_forward_order_not_the_definition_order():
    net = Reordered()
    counter = sl.SynOpsCounter(net)
    net(torch.rand(2, 3))
    assert counter.table().names == ["a", "relu", "b"]


def test_synaptic_columns_match_brute_force():
    net = _cnn()
    counter = sl.SynOpsCounter(net)
    seen, hooks = _capture(net, ["0", "8"])
    x = (torch.rand(2, 3, 1, 4, 4) < 0.5).float() * 4
    _run(net, x)
    for h in hooks:
        h.remove()
    dt = 1e-3
    table = counter.table(dt=dt)
    total = 0.0
    # layer 8 reads spike counts averaged by the AvgPool: its input is counted as events (x 4)
    for name, in_shape, out_n, events in (("0", (1, 4, 4), 3 * 16, 1), ("8", (12,), 5, 4)):
        layer, row = net.get_submodule(name), table[name]
        calls = seen[name]
        emap = brute_force_map(layer, in_shape)
        # (layer 8's pooled values are 0 and 1 here, the upsampled windows being all-or-none: each stands for
        # 4 spike events, each an accumulate, so its ACs are those of the events)
        ref = {k: sum(brute_force_counts(layer, c * events, 2)[k] for c in calls) for k in ("dense", "eff_macs",
                                                                                              "eff_acs")}
        assert row.dense == pytest.approx(ref["dense"])
        assert row.eff_acs == pytest.approx(ref["eff_acs"])
        assert row.eff_macs == pytest.approx(ref["eff_macs"])
        assert row.fanout_mean == pytest.approx(emap.mean().item())
        assert row.fanout_max == pytest.approx(emap.max().item())
        assert row.in_shape == in_shape and row.neurons == out_n
        xs = torch.stack(calls)
        assert row.in_rate == pytest.approx(xs.mean().item() * events)
        assert row.time_steps == 3
        assert row.synops_per_step == pytest.approx(row.synops / 3)
        assert row.synops_per_s == pytest.approx(row.synops / 3 / dt)
        total += row.synops
    # synops of layer 8: its input are pooled spike counts, counted back as spike events (x 4)
    ev = torch.stack(seen["8"]) * 4
    assert table["8"].synops == pytest.approx(float((ev.double() * brute_force_map(net[8], (12,))).sum() / 2))
    assert table.total.synops == pytest.approx(total)
    assert table["0"].share == pytest.approx(table["0"].synops / total)
    assert table.total.share == 1.0


def test_data_fed_layers_are_marked():
    net = _cnn()
    counter = sl.SynOpsCounter(net)
    _run(net, torch.ones(1, 2, 1, 4, 4))
    table = counter.table()
    assert [r.name for r in table if r.data_fed] == ["0"]
    assert "0 *" in str(table) and "fed directly by the data" in str(table)


def test_neuron_columns_match_the_recorded_spikes():
    net = _cnn()
    counter = sl.SynOpsCounter(net)
    outs = []
    h = net[9].register_forward_hook(lambda m, a, o: outs.append(o.detach()))
    _run(net, (torch.rand(2, 4, 1, 4, 4) < 0.6).float() * 4)
    h.remove()
    row = counter.table()["9"]
    spikes = torch.stack(outs)  # [T, B, 5]
    assert row.neurons == 5 and row.time_steps == 4
    assert row.firing_rate == pytest.approx(spikes.mean().item())
    assert row.density == pytest.approx((spikes != 0).double().mean().item())
    assert row.membrane_updates_dense == 4 * 5
    assert torch.allclose(counter.table().per_neuron["9"], spikes.double().mean((0, 1)))


def test_accumulated_table_equals_one_batch_of_all_samples():
    torch.manual_seed(1)
    x = (torch.rand(5, 3, 1, 4, 4) < 0.5).float() * 4
    net = _cnn()
    counter = sl.SynOpsCounter(net)
    for part in (x[:2], x[2:]):
        counter.reset()
        _run(net, part)
    counter.reset()
    acc = counter.table(accumulated=True)
    net2 = _cnn()
    net2.load_state_dict(net.state_dict())
    c2 = sl.SynOpsCounter(net2)
    _run(net2, x)
    whole = c2.table()
    assert acc.samples == whole.samples == 5
    for a, w in zip(acc, whole):
        for attr in ("synops", "dense", "eff_acs", "in_rate", "time_steps", "firing_rate", "density",
                     "membrane_updates", "neuron_ops", "energy"):
            va, vw = getattr(a, attr), getattr(w, attr)
            assert (va is None) == (vw is None), (a.name, attr)
            if va is not None:
                assert va == pytest.approx(vw), (a.name, attr)


def test_text_markdown_csv_and_dataframe_hold_the_same_numbers():
    net = _cnn()
    counter = sl.SynOpsCounter(net)
    _run(net, (torch.rand(2, 3, 1, 4, 4) < 0.5).float() * 4)
    table = counter.table(dt=0.01)
    text = table.render("full")
    lines = text.splitlines()
    assert lines[0].startswith("Layer") and "Synops/s" in lines[0]
    # fixed width: header, rule, every layer row and the total are equally long (the last column is right-aligned)
    # and each number sits under its title: slicing a row at its column's span gives that row's value
    grid = lines[:2 + len(table)] + [lines[3 + len(table)]]
    assert {len(line) for line in grid} == {len(lines[1])}
    start = lines[0].index("Synops/step") + len("Synops/step")
    end = lines[0].index("Synops/s", start) + len("Synops/s")
    for line, r in zip(lines[2:2 + len(table)], table):
        assert line.startswith(r.name + (" *" if r.data_fed else "") + " ")
        want = "-" if r.synops_per_s is None else f"{r.synops_per_s / 1e3:.3g}k"
        assert line[start:end].strip() == want, (r.name, line)
    md = table.to_markdown().splitlines()
    assert md[0].startswith("| Layer |") and len([m for m in md if m.startswith("| ")]) == len(table) + 2
    rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert [r["name"] for r in rows] == table.names + ["Total"]
    for r, row in zip(rows, list(table) + [table.total]):
        for attr in ("synops", "dense", "eff_acs", "firing_rate", "neuron_ops", "energy"):
            v = getattr(row, attr)
            assert (r[attr] == "") if v is None else float(r[attr]) == pytest.approx(v)
    df = table.to_dataframe()
    assert list(df.index) == table.names + ["Total"]
    assert df.loc["8", "synops"] == pytest.approx(table["8"].synops)
    assert df.loc["Total", "energy"] == pytest.approx(table.total.energy)
    assert table.to_dicts()[0]["name"] == "0"


def test_plot_draws_the_table_numbers(tmp_path):
    net = _cnn()
    counter = sl.SynOpsCounter(net)
    _run(net, (torch.rand(2, 3, 1, 4, 4) < 0.5).float() * 4)
    table = counter.table()
    path = tmp_path / "synops.png"
    fig = table.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax1, ax2 = fig.axes
    assert [p.get_width() for p in ax1.patches] == pytest.approx([table["0"].synops, table["8"].synops])
    assert [p.get_width() for p in ax2.patches] == pytest.approx([table["2"].firing_rate, table["9"].firing_rate])
    assert [t.get_text() for t in ax1.get_yticklabels()] == ["0 (Conv2d) *", "8 (Linear)"]
    assert [t.get_text() for t in ax2.get_yticklabels()] == ["2 (Leaky)", "9 (Leaky)"]


def test_plot_keeps_every_label_inside_the_figure(tmp_path):
    """Long layer names, many layers, a small figure and a log axis: no text is clipped at the figure edges."""
    FigureCanvasAgg = pytest.importorskip("matplotlib.backends.backend_agg").FigureCanvasAgg
    net = nn.Sequential(*[m for _ in range(5) for m in (nn.Linear(6, 6), snn.Leaky(beta=0.9, init_hidden=True))])
    wrapper = nn.Module()
    wrapper.a_rather_long_encoder_name = net
    wrapper.forward = lambda x: net(x)
    counter = sl.SynOpsCounter(wrapper)
    snn_utils.reset(net)
    for _ in range(3):
        wrapper(torch.ones(2, 6))
    table = counter.table()
    for kwargs in ({}, {"log": True}, {"figsize": (5.0, 4.0)}):
        fig = table.plot(str(tmp_path / "p.png"), **kwargs)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()  # lays the figure out as savefig does
        renderer = canvas.get_renderer()
        width, height = fig.bbox.width, fig.bbox.height
        labels = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
        assert "a_rather_long_encoder_name.0 (Linear) *" in labels and "a_rather_long_encoder_name.9 (Leaky)" in labels
        for ax in fig.axes:  # everything drawn for an axes: tick labels, axis labels, title, percentages
            box = ax.get_tightbbox(renderer)
            assert box.x0 >= -0.5 and box.y0 >= -0.5 and box.x1 <= width + 0.5 and box.y1 <= height + 0.5, \
                (kwargs, box, width, height)
            assert all(t.get_window_extent(renderer).x1 <= width + 0.5 for t in ax.texts)
        titles = [sf._suptitle for sf in fig.subfigs]
        assert [t.get_text().splitlines()[0] for t in titles] == [
            f"Synops per sample and layer{' (log scale)' if kwargs.get('log') else ''}; total {table.total.synops:.3g}",
            "Firing rate per neuron layer (spikes per neuron per time step)"]
        for t in titles:
            box = t.get_window_extent(renderer)
            assert box.x0 >= -0.5 and box.x1 <= width + 0.5 and box.y1 <= height + 0.5, (kwargs, t.get_text())


def test_table_before_any_forward_pass_says_what_to_do():
    counter = sl.SynOpsCounter(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(RuntimeError, match="forward pass"):
        counter.table()
    with pytest.raises(ValueError, match="dt"):
        counter.model(torch.ones(1, 2))
        counter.table(dt=-1)
