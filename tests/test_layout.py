"""synopsloss.layout: samples and time steps from hand-built evidence, every expected number worked out by hand."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

import synopsloss as sl
from synopsloss import layout
from synopsloss.layout import Evidence, Options
from synopsloss.neurons import NeuronMonitor
from synopsloss.state import SynapseState


def _layer(rows, in_shape, leads, samples=None):
    """A layer's state as the counter leaves it: ``leads`` is ``{leading dims of a call: calls}``."""
    leads = Counter(leads)
    rows_total = sum(n * _prod(lead) for lead, n in leads.items() if lead[0] != "T")
    return SynapseState(calls=sum(leads.values()), rows_total=rows_total, rows=set(rows), in_shape=tuple(in_shape),
                        leads=leads, samples=samples)


def _prod(dims):
    out = 1
    for d in dims:
        out *= d
    return out


# ---------------------------------------------------------------- samples: the priority chain


def test_each_source_of_the_chain_wins_over_the_ones_after_it():
    rnn = _layer({6}, (5,), {("T", 3): 1}, samples=2)  # an RNN that read [B=2, T=3, 5]: 6 rows
    ev = Evidence(root_batch=6, root_shape=(6, 2, 5), fold_batch=3, fold_layer="sq", probe_batch=2, probe_layer="lif")
    layers = {"rnn": rnn}
    assert layout.samples(ev, layers, Options(batch_size=1)) == 1  # batch_size= first
    assert layout.samples(ev, layers, Options()) == 3  # then the time-folding layer
    ev.fold_batch = None
    assert layout.samples(ev, layers, Options()) == 2  # then the layer whose layout is known
    ev.probe_batch = None
    ev.root_batch = 3
    assert layout.reading(ev, layers, Options()) == layout.Reading(2, "layer 'rnn', which knows its layout "
                                                                      "(batch_first)", True)
    rnn.samples = None
    assert layout.reading(ev, layers, Options()).samples == 3  # the model's input last


def test_no_source_names_why():
    with pytest.raises(ValueError, match="the model was called without a tensor argument. Pass SynOpsCounter"):
        layout.samples(Evidence(root_note="the model was called without a tensor argument"), {}, Options())
    with pytest.raises(ValueError, match=r"the model itself was not called \(only its submodules were\)"):
        layout.samples(Evidence(), {}, Options())
    assert layout.reading(Evidence(), {}, Options()) is None


def test_zero_samples_raise():
    ev = Evidence(root_batch=0, root_shape=(0, 4))
    with pytest.raises(ValueError, match=r"the batch has 0 samples \(dim 0 of the model's input \(0, 4\)\)"):
        layout.samples(ev, {"fc": _layer({0}, (4,), {(0,): 1})}, Options())


def test_probes_that_disagree_and_a_batch_dim_that_disagrees_raise():
    ev = Evidence(probe_batch=4, probe_layer="a", probe_conflict="'b' saw 3")
    with pytest.raises(ValueError, match="disagree on the number of samples: 'a' saw 4, 'b' saw 3"):
        layout.samples(ev, {}, Options())
    ev = Evidence(probe_batch=4, probe_layer="a", root_batch=10, root_shape=(10, 4, 2))
    with pytest.raises(ValueError, match=r"batch_dim=0 gives 10 samples \(model input \(10, 4, 2\)\), but layer 'a'"):
        layout.samples(ev, {}, Options(batch_dim_given=True, layout_given=True))
    assert layout.samples(ev, {}, Options()) == 4  # batch_dim not given: the probe decides


def test_rows_not_a_multiple_of_the_samples_raise_with_the_right_hint():
    ev = Evidence(root_batch=4, root_shape=(4, 6))
    fc = _layer({6}, (6,), {(6,): 1})
    with pytest.raises(ValueError, match=r"received 6 rows of shape \(6,\) in one call, not a multiple of the 4 "
                                         r"samples.* If your data is time-first"):
        layout.samples(ev, {"fc": fc}, Options())
    ev = Evidence(root_batch=3, root_shape=(3,))  # one sample of 3 features, no batch dim
    fc = _layer({1}, (3,), {(1,): 1})
    with pytest.raises(ValueError, match="without a batch dimension"):
        layout.samples(ev, {"fc": fc}, Options())


# ---------------------------------------------------------------- [T, B] vs [B, T]


def test_rows_that_fit_both_readings_are_refused_unless_the_layout_is_given():
    # model input [4, 2, 8] fed to a Linear: 8 rows of 8; [B=4, T=2] and [T=4, B=2] both fit every layer's rows
    ev = Evidence(root_batch=4, root_shape=(4, 2, 8))
    layers = {"fc": _layer({8}, (8,), {(4, 2): 1})}
    with pytest.raises(ValueError, match=r"received 8 rows of shape \(8,\) in one call from a model input of shape "
                                         r"\(4, 2, 8\), so the input has 2 more entries per sample .*\[B, T, \.\.\.\] "
                                         r"cannot be told from \[T, B, \.\.\.\]"):
        layout.samples(ev, layers, Options())
    assert layout.samples(ev, layers, Options(batch_dim_given=True, layout_given=True)) == 4  # batch_dim=0
    ev.root_batch = 2  # batch_dim=1: the root hook reads shape[1]
    assert layout.samples(ev, layers, Options(batch_dim=1, batch_dim_given=True, layout_given=True)) == 2
    assert layout.samples(Evidence(root_batch=4, root_shape=(4, 2, 8)), layers, Options(batch_first_layers=True)) == 4


def test_an_image_repeated_over_time_inside_the_model_is_read_batch_first():
    # [B=2, C=3, 8, 8] repeated to T=4 inside the model: the conv reads [T*B=8] rows of one (3, 8, 8) image, so
    # dim 1 lies inside a row: only B=2 is consistent with the conv's rows
    ev = Evidence(root_batch=2, root_shape=(2, 3, 8, 8))
    layers = {"conv": _layer({8}, (3, 8, 8), {(8,): 1}), "fc": _layer({8}, (48,), {(8,): 1})}
    assert layout.rows_span_dim1((2, 3, 8, 8), layers)
    assert layout.samples(ev, layers, Options()) == 2
    # without the conv, the Linear's 8 rows of 48 could be [B=2, T=4] or [T=2, B=4]
    assert not layout.rows_span_dim1((2, 3, 8, 8), {"fc": layers["fc"]})
    with pytest.raises(ValueError, match="cannot be told from"):
        layout.samples(ev, {"fc": layers["fc"]}, Options())


# ---------------------------------------------------------------- time steps


def test_an_in_model_time_loop_gives_the_same_steps_per_layer_and_in_total():
    # the model is called once with [B=2, T=5, 3] and loops over t inside: fc and its neuron run 5 times on
    # [2, 3]; the head runs once on the time-averaged output
    ev = Evidence(root_batch=2, root_shape=(2, 5, 3), root_calls=1)
    layers = {"fc": _layer({2}, (3,), {(2,): 5}), "fc2": _layer({2}, (4,), {(2,): 5}),
              "head": _layer({2}, (4,), {(2,): 1})}
    assert layout.samples(ev, layers, Options()) == 2
    steps, tc, source = layout.time_layout(ev, layers, Options())
    assert (steps, tc, source) == (5.0, 5, "the calls of the model")
    assert [layout.layer_steps(s, 2, tc) for s in layers.values()] == [5, 5, 1]
    # samples x steps per layer: 2 x 5, 2 x 5, 2 x 1
    assert layout.sample_steps(ev, layers, 2, Options()) == (5.0, {"fc": 10.0, "fc2": 10.0, "head": 2.0})


def test_a_readout_of_the_stacked_steps_of_an_in_model_loop_runs_every_step():
    # the model loops over T=5 steps inside one call ([B=2] per step); a readout then reads the stacked spikes
    # [T=5, B=2, 4] in one call, a conv the folded [T*B=10, ...]: each carries the time dim (5 steps), as a per-step
    # layer called 5 times does
    ev = Evidence(root_batch=2, root_shape=(2, 5, 3), root_calls=1)
    layers = {"fc": _layer({2}, (3,), {(2,): 5}), "fc2": _layer({2}, (4,), {(2,): 5}),
              "readout": _layer({10}, (4,), {(5, 2): 1}), "folded": _layer({10}, (4,), {(10,): 1}),
              "head": _layer({2}, (4,), {(2,): 1})}
    steps, tc, _ = layout.time_layout(ev, layers, Options())
    assert steps == 5.0
    assert [layout.layer_steps(s, 2, tc) for s in layers.values()] == [5, 5, 5, 5, 1]


def test_a_loop_over_calls_of_the_model_counts_its_calls():
    # snntorch style: the model is called 4 times with [B=3, 2]
    ev = Evidence(root_batch=3, root_shape=(3, 2), root_calls=4)
    layers = {"fc": _layer({3}, (2,), {(3,): 4})}
    assert layout.time_layout(ev, layers, Options()) == (4.0, 4, "the calls of the model")
    assert layout.layer_steps(layers["fc"], 3, 1) == 4


def test_n_tokens_equal_to_t_are_not_read_as_t_times_t():
    # time_dim=1: the model is called once with [B=2, T=3, N=3, C] and loops over t, calling fc on [2, N=3, C];
    # each call's leading dims (2, 3) look like [B, T] but are [B, N]: fc ran 3 steps, not 3 x 3 = 9
    ev = Evidence(root_batch=2, root_shape=(2, 3, 3, 4), root_calls=1, root_steps=3, root_tc=3)
    opts = Options(time_dim=1, batch_dim_given=False, layout_given=False)
    per_step = _layer({6}, (4,), {(2, 3): 3})
    whole = _layer({18}, (4,), {(2, 3, 3): 1})  # one call on the whole [B=2, T=3, N=3, 4]: all 3 steps at once
    layers = {"per_step": per_step, "whole": whole}
    assert layout.time_layout(ev, layers, opts) == (3.0, 3, "dim 1 of the model's input")
    assert layout.layer_steps(per_step, 2, 3) == 3
    assert layout.layer_steps(whole, 2, 3) == 3
    # without the cap each per-step call would read as T=3 steps
    assert sum(n * layout.call_steps(lead, 2, 3) for lead, n in per_step.leads.items()) == 9


def test_call_steps_by_leading_dims():
    # samples 2, T 4: [T, B], [B, T], [T*B] carry the time dim; [B], [B, N] and [] do not
    assert [layout.call_steps(lead, 2, 4) for lead in [(4, 2), (2, 4), (8,), (2,), (2, 7), ()]] == [4, 4, 4, 1, 1, 1]
    assert layout.call_steps(("T", 6), 2, 4) == 6  # a rule that knows its steps
    assert layout.call_steps((4, 2), 2, 1) == 1  # no time dim in this batch: tokens


def test_time_sources_in_order():
    opts = Options(time_dim=0)
    ev = Evidence(root_steps=6, root_tc=3, probe_steps={"lif": 5, "lif2": 7}, probe_tc=5,
                  fold_steps={"sq": 4}, fold_tc=4, root_calls=2)
    assert layout.time_layout(ev, {}, opts) == (6.0, 3, "dim 0 of the model's input")
    assert layout.time_layout(ev, {}, Options()) == (5.0, 5, "layer 'lif', whose input layout is known")
    ev.probe_steps = {}
    assert layout.time_layout(ev, {}, Options()) == (4.0, 4, "the time-folding layer 'sq'")
    ev.fold_steps = {}
    rnn = _layer({14}, (5,), {("T", 7): 1}, samples=2)  # [B=2, T=7]: 14 rows
    rnn.rows_total = 14
    assert layout.time_layout(ev, {"rnn": rnn}, Options()) == (7.0, 7, "layer 'rnn', which knows its layout")
    assert layout.time_layout(ev, {}, Options()) == (2.0, 2, "the calls of the model")


# ---------------------------------------------------------------- evidence writers


def test_time_folding_layers_add_their_steps_and_must_agree():
    ev = Evidence()
    layout.add_fold(ev, "sq", 2, 10)  # [B*T=10, ...] with B=2: 5 steps
    layout.add_fold(ev, "sq", 2, 6)  # then 3 more
    assert (ev.fold_batch, ev.fold_steps, ev.fold_tc) == (2, {"sq": 8}, 5)
    with pytest.raises(ValueError, match=r"time-folding layers disagree on the batch size \('sq': 2, 'sq2': 3\)"):
        layout.add_fold(ev, "sq2", 3, 9)


def test_probes_record_steps_and_the_first_conflict():
    ev = Evidence()
    layout.add_probe(ev, "a", 4, 3, True)
    layout.add_probe(ev, "b", 5, 3, False)  # a layer that gives steps but not samples
    layout.add_probe(ev, "c", 6, 1, True)
    layout.add_probe(ev, "d", 7, 1, True)
    assert (ev.probe_batch, ev.probe_layer, ev.probe_conflict) == (4, "a", "'c' saw 6")
    assert (ev.probe_steps, ev.probe_tc) == ({"a": 3, "b": 3, "c": 1, "d": 1}, 3)


# ---------------------------------------------------------------- declared batch_size


def test_a_short_last_batch_with_a_declared_batch_size_raises():
    opts = Options(batch_size=32, layout_given=True)
    layout.check_declared_batch((32, 10), opts)
    layout.check_declared_batch((96, 10), opts)  # [B*T = 32 x 3, ...]
    layout.check_declared_batch((5, 32, 10), opts)  # [T, B, ...]: some dim holds 32
    with pytest.raises(ValueError, match=r"batch_size=32, but the model's input has shape \(20, 10\) \(neither dim 0 "
                                         r"nor dim 1 holds 32 samples .*divided by 32.*counter.batch_size = 20\)"):
        layout.check_declared_batch((20, 10), opts)
    # 20 samples of 64 time steps ([B, T, ...]): the 64 in dim 1 is no multiple of samples to accept
    with pytest.raises(ValueError, match=r"shape \(20, 64, 10\) \(neither dim 0 nor dim 1 holds 32 samples"):
        layout.check_declared_batch((20, 64, 10), opts)
    opts = Options(batch_size=32, batch_dim=1, batch_dim_given=True, layout_given=True)
    layout.check_declared_batch((5, 32, 10), opts)
    with pytest.raises(ValueError, match=r"\(dim 1 holds 32 samples .*counter.batch_size = 20\)"):
        layout.check_declared_batch((32, 20, 10), opts)  # dim 0 holds 32, but batch_dim=1 says dim 1
    layout.check_declared_batch(None, opts)  # no tensor (or a nested one): nothing to check
    layout.check_declared_batch((), opts)


def test_the_counter_refuses_a_short_last_batch_it_was_told_the_size_of():
    net = nn.Sequential(nn.Linear(3, 2))
    counter = sl.SynOpsCounter(net, batch_size=4)
    net(torch.ones(4, 3))
    counter.reset()
    with pytest.raises(ValueError, match="a shorter last batch would be divided by 4"):
        net(torch.ones(3, 3))
    counter.reset()
    counter.batch_size = 3
    net(torch.ones(3, 3))
    assert counter.samples == 3


# ---------------------------------------------------------------- through the hooks


class _Loop(nn.Module):
    """Loops over time inside its forward: [B, T, 3] in, a head on the time-averaged output."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        outs = [torch.relu(self.fc(x[:, t])) for t in range(x.shape[1])]
        return self.head(torch.stack(outs).mean(0))


def test_the_counter_reads_the_same_steps_per_layer_and_in_total():
    net = _Loop()
    counter = sl.SynOpsCounter(net)
    net(torch.ones(2, 5, 3))  # B=2, T=5
    assert counter.samples == 2
    assert (counter.time_steps(), counter.time_steps("fc"), counter.time_steps("head")) == (5.0, 5.0, 1.0)


def test_the_counter_refuses_t_b_versus_b_t_and_reads_it_once_told():
    net = nn.Sequential(nn.Linear(8, 2))
    counter = sl.SynOpsCounter(net)
    net(torch.ones(4, 2, 8))
    with pytest.raises(ValueError, match=r"\[B, T, \.\.\.\] cannot be told from \[T, B, \.\.\.\]"):
        counter.samples
    counter = sl.SynOpsCounter(nn.Sequential(nn.Linear(8, 2)), batch_dim=1)
    counter.model(torch.ones(4, 2, 8))
    assert counter.samples == 2


# ---------------------------------------------------------------- the neuron monitor


class _ListInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act = nn.Linear(2, 2), nn.ReLU()

    def forward(self, xs):
        return self.act(self.fc(xs[0]))


def test_the_standalone_monitor_reads_samples_by_the_same_chain():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    monitor = NeuronMonitor(net)
    for _ in range(4):
        net(torch.ones(3, 2))  # 4 calls of B=3: the ReLU saw 12 rows, 4 per sample
    assert monitor.stats()["1"]["time_steps"] == 12 / 3
    monitor.remove()
    monitor = NeuronMonitor(net, batch_size=6)  # batch_size= first: 24 rows over 6 samples
    for _ in range(4):
        net(torch.ones(6, 2))
    assert monitor.stats()["1"]["time_steps"] == 24 / 6
    monitor.remove()
    monitor = NeuronMonitor(net, batch_size=6)  # calls of 3 rows hold no whole samples of 6: refused, as the
    net(torch.ones(3, 2))                       # counter refuses them
    with pytest.raises(ValueError, match="received 3 rows in one call, not a multiple of the 6 samples"):
        monitor.stats()
    monitor.remove()
    listed = _ListInput()
    monitor = NeuronMonitor(listed)
    listed([torch.ones(3, 2)])
    with pytest.raises(ValueError, match="NeuronMonitor cannot tell how many samples the batch has"):
        monitor.stats()


def test_the_monitor_of_a_counter_gets_the_counters_samples():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    counter = sl.SynOpsCounter(net, batch_dim=1)
    net(torch.ones(4, 2, 2))  # [T=4, B=2, 2]; the monitor's rows are dim 0 of the ReLU's output: 4
    assert counter.samples == 2
    assert counter.neurons.stats()["1"]["time_steps"] == 4 / 2
    counter.remove()
    alone = NeuronMonitor(net)  # standalone, with the default batch_dim=0: 4 samples
    net(torch.ones(4, 2, 2))
    assert alone.stats()["1"]["time_steps"] == 4 / 4


class _Gain(nn.Module):
    """``forward(gain, x)``: a per-feature gain ``[1, C]`` first, the batch ``[B, C]`` second."""

    def __init__(self, read_x: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.read_x = read_x
        self.fc = nn.Linear(6, 5, bias=False)

    def forward(self, first, x):
        return self.fc(x) if self.read_x else self.fc(x * first.mean(0))


@pytest.mark.parametrize("first, read_x", [((1, 6), False), ((2, 6), True), ((2, 6), False)])
def test_a_first_argument_that_is_not_the_batch_is_refused_not_counted_as_samples(first, read_x):
    net = _Gain(read_x)
    counter = sl.SynOpsCounter(net, neurons=False)
    x = torch.rand(4, 6)
    net(torch.ones(*first), x)
    with pytest.raises(ValueError, match=r"first tensor argument .* batch_size=B"):
        counter.synops()
    counter.remove()
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=4)  # the fix the message names
    net(torch.ones(*first), x)
    fan = (net.fc.weight != 0).sum(0).float()
    assert counter.synops().item() == pytest.approx(float((x @ fan).sum()) / 4)  # by hand (the gain is 1)


def test_a_second_argument_that_no_layer_rows_fit_leaves_the_first_as_the_batch():
    """``model(x[4, 6], memory[8, 6])`` whose layer reads ``x * memory.mean(0)``: 4 rows fit 4 samples, not 8; the
    batch is the first argument (no refusal)."""
    net = _Gain(False)
    counter = sl.SynOpsCounter(net, neurons=False)
    x = torch.rand(4, 6)

    class Swapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, x, memory):
            return self.inner(memory, x)

    wrapped = Swapped()
    counter.remove()
    counter = sl.SynOpsCounter(wrapped, neurons=False)
    wrapped(x, torch.ones(8, 6))
    fan = (net.fc.weight != 0).sum(0).float()
    assert counter.samples == 4
    assert counter.synops().item() == pytest.approx(float((x @ fan).sum()) / 4)


def test_a_mask_argument_does_not_change_the_samples():
    enc = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)
    counter = sl.SynOpsCounter(enc, batch_dim=0, neurons=False)
    mask = torch.zeros(5, 5)
    enc(torch.rand(1, 5, 8), mask)
    assert counter.samples == 1
    counter.reset()
    enc(torch.rand(3, 5, 8), src_mask=mask)
    assert counter.samples == 3


def test_time_folded_input_runs_its_steps_in_every_row():
    """``[B*T, C]`` of a plain model declared as folded: T = rows / B for the synaptic and the activation rows."""
    B, T = 2, 5
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    x = (torch.rand(B * T, 6) < 0.5).float()
    counter = sl.SynOpsCounter(net, batch_size=B, time_folded=True)
    net(x)
    table = counter.table()
    assert counter.time_steps() == T and counter.time_steps("0") == T and counter.time_steps("2") == T
    assert table["0"].time_steps == table["1"].time_steps == table["2"].time_steps == T
    fan = (net[0].weight != 0).sum(0).double()
    assert table["0"].synops == pytest.approx(float((x.double() * fan).sum()) / B)  # per sample, all steps
    with pytest.raises(ValueError, match="time_folded=True .* give batch_size=B"):
        sl.SynOpsCounter(net, time_folded=True)
    with pytest.raises(TypeError, match="time_folded must be True or False"):
        sl.SynOpsCounter(net, batch_size=B, time_folded=1)


@pytest.mark.parametrize("first", ["batch", "time"])
def test_an_activation_called_once_on_the_time_dim_runs_the_same_steps_as_the_synaptic_rows(first):
    B, T = 2, 5
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    x = (torch.rand(B, T, 6) < 0.5).float()
    if first == "time":
        x, kw = x.transpose(0, 1).contiguous(), dict(time_dim=0)
    else:
        kw = dict(time_dim=1)
    counter = sl.SynOpsCounter(net, **kw)
    net(x)
    table = counter.table()
    assert [table[n].time_steps for n in ("0", "1", "2")] == [T, T, T]
    assert table["1"].neurons == 4 and table["1"].membrane_updates_dense == 4 * T  # 4 outputs at each step
    with torch.no_grad():
        h = torch.relu(net[0](x))
    assert table["1"].density == pytest.approx(float((h != 0).double().mean()))


def test_a_declared_time_dim_inside_the_rows_of_the_data_fed_layer_is_refused():
    """An snntorch-style loop of [B=4, 16] calls with time_dim=1: dim 1 holds the first layer's 16 features, not
    time; the read refuses it (T would be 16 x calls and every per-step figure divided by 16)."""
    net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    counter = sl.SynOpsCounter(net, time_dim=1, neurons=False)
    for _ in range(5):
        net(torch.rand(4, 16))
    with pytest.raises(ValueError, match=r"time_dim=1 was declared, but dim 1 of the model's input \(shape \(4, 16\)\) "
                                         r"lies inside one row of layer '0'"):
        counter.time_steps()
    counter.remove()
    whole = sl.SynOpsCounter(net, time_dim=1, neurons=False)  # [B=4, T=5, 16] in one call: dim 1 is time
    net(torch.rand(4, 5, 16))
    assert whole.time_steps() == 5.0


def test_a_layer_of_known_layout_whose_rows_the_input_does_not_hold_is_refused():
    """A SpikingJelly single-step layer on x.flatten(0, 1) of a [T=3, B=2, 4] input read 6 rows as 6 samples (12
    synops per sample for 36): the model's input holds no dim of 6, so its rows are no samples."""
    ev = Evidence(root_batch=3, root_shape=(3, 2, 4), probe_batch=6, probe_layer="fc")
    with pytest.raises(ValueError, match=r"layer 'fc'.* received 6 rows, but the model's input \(3, 2, 4\) holds no "
                                         r"dim of 6.*batch_size=B"):
        layout.samples(ev, {}, Options())
    assert layout.samples(ev, {}, Options(batch_size=2)) == 2
    ev.probe_batch = 2  # the same layer on [B, ...] rows: the input's dim 1
    assert layout.samples(ev, {}, Options()) == 2


def test_single_step_spikingjelly_layers_on_folded_steps_are_refused_not_divided_by_the_rows():
    from spikingjelly.activation_based import layer, neuron

    class Folded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.lif = layer.Linear(4, 3, bias=False), neuron.IFNode()

        def forward(self, x):
            return self.lif(self.fc(x.flatten(0, 1)))

    net = Folded()
    x = torch.ones(3, 2, 4)
    counter = sl.SynOpsCounter(net)
    net(x)
    with pytest.raises(ValueError, match="holds no dim of 6"):
        counter.synops()
    counter.remove()
    declared = sl.SynOpsCounter(net, batch_size=2)
    net(x)
    assert declared.synops().item() == pytest.approx(float((x * (net.fc.weight != 0).sum(0)).sum()) / 2)


def test_a_layer_of_known_layout_reading_the_second_arguments_samples_is_not_refused():
    """model(mask, x): the first argument holds no dim of the samples, the second does (no fold)."""
    from spikingjelly.activation_based import layer, neuron

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.lif = layer.Linear(4, 3, bias=False), neuron.IFNode()

        def forward(self, mask, x):
            return self.lif(self.fc(x * mask[0, 0]))

    net = Masked()
    x = torch.ones(5, 4)
    counter = sl.SynOpsCounter(net)
    net(torch.ones(7, 7), x)
    assert counter.synops().item() == pytest.approx(float((x * (net.fc.weight != 0).sum(0)).sum()) / 5)


def test_a_wrong_time_dim_against_a_known_layout_names_time_dim():
    """sinabs IAF reads [B, T, C]; time_dim=0 makes batch_dim 1: the message named batch_dim=, never passed."""
    sl_layers = pytest.importorskip("sinabs.layers")
    net = nn.Sequential(nn.Linear(4, 4), sl_layers.IAF())
    counter = sl.SynOpsCounter(net, time_dim=0, neurons=False)
    net(torch.rand(3, 5, 4))
    with pytest.raises(ValueError, match=r"time_dim=0 \(so batch_dim=1\) gives 5 samples .* Drop time_dim="):
        counter.synops()


@pytest.mark.parametrize("chunks", [1, 2, 4])
def test_a_sequence_fed_in_chunks_runs_every_step_in_each_layer(chunks):
    """[T=4, B, C] fed as two chunks of 2 steps: the batch had T = 4 but the Linear T = 2 (synops per step doubled),
    silently. By hand: every layer ran the 4 steps; synops per step = synops / 4."""
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(8, 8, step_mode="m"), neuron.IFNode(step_mode="m"))
    x = (torch.rand(4, 3, 8, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    functional.reset_net(net)
    counter = sl.SynOpsCounter(net, batch_dim=1)
    for part in x.chunk(chunks, 0):
        net(part)
    row = counter.table(energy=None)["0"]
    assert counter.time_steps() == counter.time_steps("0") == 4.0
    assert row.synops == pytest.approx(float(x.sum()) * 8 / 3) and row.synops_per_step == pytest.approx(row.synops / 4)
