"""Recurrent ANN layers: cells against NeuroBench live, full layers against their unrolled cells."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import synopsloss as sl

from helpers import neurobench_synops

CELLS = [nn.RNNCell, nn.LSTMCell, nn.GRUCell]


class CellWithState(nn.Module):
    """Calls a cell once with an explicit (sparse, random) hidden state, as NeuroBench sees it."""

    def __init__(self, cell: nn.Module, seed: int) -> None:
        super().__init__()
        self.cell = cell
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        b, hdim = x.shape[0], self.cell.hidden_size
        h = (torch.rand(b, hdim, generator=g) < 0.5).float() * torch.randn(b, hdim, generator=g)
        if isinstance(self.cell, nn.LSTMCell):
            c = (torch.rand(b, hdim, generator=g) < 0.5).float() * torch.randn(b, hdim, generator=g)
            return self.cell(x, (h, c))[0]
        return self.cell(x, h)


def _sparse_cell(cls, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    cell = cls(6, 5)
    with torch.no_grad():
        cell.weight_ih[torch.rand_like(cell.weight_ih) < 0.3] = 0
        cell.weight_hh[torch.rand_like(cell.weight_hh) < 0.3] = 0
        cell.bias_ih[:3] = 0
        cell.bias_hh[1:4] = 0
    return cell


def _ours(net: nn.Module, x: torch.Tensor, name: str):
    with sl.SynOpsCounter(net) as counter:
        net(x)
        return counter.snapshot().per_layer()[name]


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("spiking", [True, False])
def test_recurrent_cells_match_neurobench_with_a_hidden_state(cls, spiking):
    net = CellWithState(_sparse_cell(cls, 1), seed=3)
    x = (torch.rand(4, 6, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    if not spiking:
        x = x * torch.randn(4, 6, generator=torch.Generator().manual_seed(5))
    ref = neurobench_synops(net, x, snntorch=False)
    ours = _ours(net, x, "cell")
    for key in ("dense", "eff_macs", "eff_acs"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
    assert (ours["eff_acs"] > 0) == spiking


def test_rnn_cell_without_state_matches_neurobench_on_one_sample():
    # without a state NeuroBench reads only the first sample (inputs[0]); with one sample it agrees
    net = nn.Sequential(_sparse_cell(nn.RNNCell, 4))
    x = (torch.rand(1, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    ref = neurobench_synops(net, x, snntorch=False)
    ours = _ours(net, x, "0")
    assert ours["dense"] == ref["dense"] == 6 * 5
    assert ours["eff_acs"] == ref["eff_acs"]


def test_cell_synops_are_input_and_state_times_fanout():
    cell = _sparse_cell(nn.GRUCell, 7)
    x = torch.rand(3, 6, requires_grad=True)
    h = torch.rand(3, 5)
    with sl.SynOpsCounter(cell) as counter:
        cell(x, h)
        synops = counter.synops()
    expected = (x.detach() @ (cell.weight_ih != 0).double().sum(0).float()).sum()
    expected += (h @ (cell.weight_hh != 0).double().sum(0).float()).sum()
    assert synops.item() == pytest.approx(expected.item() / 3, rel=1e-6)
    synops.backward()
    assert torch.allclose(x.grad, (cell.weight_ih != 0).sum(0).float().expand(3, 6) / 3)


class Unrolled(nn.Module):
    """A multi-layer (bidirectional) recurrent layer rebuilt from cells called with explicit states."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        cls = {nn.RNN: nn.RNNCell, nn.LSTM: nn.LSTMCell, nn.GRU: nn.GRUCell}[type(layer)]
        self.lstm = isinstance(layer, nn.LSTM)
        self.dirs = 2 if layer.bidirectional else 1
        self.hidden = layer.hidden_size
        self.cells = nn.ModuleList()
        for lyr in range(layer.num_layers):
            for d in range(self.dirs):
                sfx = f"_l{lyr}" + ("_reverse" if d else "")
                w_ih = getattr(layer, "weight_ih" + sfx)
                cell = cls(w_ih.shape[1], layer.hidden_size)
                with torch.no_grad():
                    for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        getattr(cell, n).copy_(getattr(layer, n + sfx))
                self.cells.append(cell)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, F]
        b, t_steps = x.shape[0], x.shape[1]
        seq = x
        for lyr in range(len(self.cells) // self.dirs):
            outs = []
            for d in range(self.dirs):
                cell = self.cells[lyr * self.dirs + d]
                h = seq.new_zeros(b, self.hidden)
                c = seq.new_zeros(b, self.hidden)
                hs = [None] * t_steps
                for t in (range(t_steps - 1, -1, -1) if d else range(t_steps)):
                    if self.lstm:
                        h, c = cell(seq[:, t], (h, c))
                    else:
                        h = cell(seq[:, t], h)
                    hs[t] = h
                outs.append(torch.stack(hs, 1))
            seq = torch.cat(outs, -1)
        return seq


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_full_layers_count_as_their_unrolled_cells_counted_by_neurobench(cls):
    torch.manual_seed(0)
    layer = cls(4, 3, num_layers=2, bidirectional=True, batch_first=True)
    with torch.no_grad():
        layer.weight_ih_l0[torch.rand_like(layer.weight_ih_l0) < 0.4] = 0
        layer.weight_hh_l1_reverse[torch.rand_like(layer.weight_hh_l1_reverse) < 0.4] = 0
    layer.eval()
    x = (torch.rand(2, 5, 4) < 0.5).float() * torch.randn(2, 5, 4)
    unrolled = Unrolled(layer).eval()
    out = layer(x)[0]
    assert torch.allclose(unrolled(x), out, atol=1e-5)  # the reference computes the same network
    ref = neurobench_synops(unrolled, x, snntorch=False)
    ours = _ours(layer, x, "")
    assert ours["dense"] == pytest.approx(ref["dense"])
    assert ours["eff_macs"] == pytest.approx(ref["eff_macs"])
    assert ours["eff_acs"] == ref["eff_acs"] == 0


def test_time_first_and_batch_first_layers_count_the_same():
    torch.manual_seed(1)
    a = nn.LSTM(3, 4, batch_first=True)
    b = nn.LSTM(3, 4, batch_first=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 6, 3)
    ca = _ours(a, x, "")
    with sl.SynOpsCounter(b, batch_dim=1) as counter:
        b(x.transpose(0, 1))
        cb = counter.snapshot().per_layer()[""]
    assert ca == pytest.approx(cb)


def test_full_layer_synops_are_inputs_and_previous_states_times_fanout():
    torch.manual_seed(2)
    rnn = nn.RNN(3, 4, batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0[0, 1] = 0
    x = torch.rand(2, 5, 3, requires_grad=True)
    with sl.SynOpsCounter(rnn) as counter:
        out, _ = rnn(x)
        synops = counter.synops()
    h_prev = torch.cat([torch.zeros(2, 1, 4), out[:, :-1].detach()], 1)
    f_ih = (rnn.weight_ih_l0 != 0).sum(0).float()
    f_hh = (rnn.weight_hh_l0 != 0).sum(0).float()
    expected = ((x.detach().abs() * f_ih).sum() + (h_prev.abs() * f_hh).sum()) / 2
    assert synops.item() == pytest.approx(expected.item(), rel=1e-6)
    synops.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_packed_sequences_are_refused_with_a_clear_error():
    rnn = nn.GRU(3, 2)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(4, 2, 3), [4, 2])
    with sl.SynOpsCounter(rnn, batch_size=2):
        with pytest.raises(ValueError, match="PackedSequence"):
            rnn(packed)


def test_recurrent_rules_are_registered_on_import():
    from synopsloss.registry import find_rule

    for cls in (nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell):
        rule = find_rule(cls.__new__(cls))
        assert rule is not None and rule.count is not None, cls


@pytest.mark.parametrize("cls", ["RLeaky", "RSynaptic"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_snntorch_recurrent_spikes_are_delivered_once_per_step_whatever_the_reset(cls, reset):
    """snntorch's zero reset evaluates ``recurrent(self.spk)`` twice per step: the spikes cross once."""
    import snntorch as snn

    torch.manual_seed(0)
    kw = dict(alpha=0.5) if cls == "RSynaptic" else {}
    neuron = getattr(snn, cls)(beta=0.5, linear_features=3, reset_mechanism=reset, threshold=0.5, **kw)
    with torch.no_grad():
        neuron.recurrent.weight.fill_(1.0)
        neuron.recurrent.weight[0, 1] = 0.0  # fan-outs 3, 2, 3
    net = nn.Sequential(nn.Linear(4, 3, bias=False), neuron)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    spikes = []
    net[1].register_forward_hook(lambda m, a, o: spikes.append(o[0].detach()))
    counter = sl.SynOpsCounter(net, neurons=False)
    x = (torch.rand(5, 2, 4, generator=torch.Generator().manual_seed(1)) < 0.6).float()  # [T, B, C]
    for t in range(5):
        net(x[t])
    z = torch.stack(spikes)  # [T, B, 3]
    assert z.sum() > 0
    z_prev = torch.cat([torch.zeros_like(z[:1]), z[:-1]])  # the spikes each step's recurrent synapses carry
    fan = torch.tensor([3.0, 2.0, 3.0])
    row = counter.table()["1.recurrent"]
    assert row.synops == pytest.approx(float((z_prev * fan).sum()) / 2)
    assert row.dense == 5 * 9  # every tap once per step
    assert row.time_steps == 5


@pytest.mark.parametrize("kind", ["SLSTM", "SConv2dLSTM"])
def test_a_zero_reset_lstm_neuron_counts_its_cell_once_per_step(kind):
    """snntorch's zero reset runs the neuron's LSTM cell (or conv of cat(input, mem)) a second time on the same
    values in each step: the same spikes over the same synapses, counted once (784 for 392, and 2x the dense ops,
    before)."""
    import snntorch as snn
    import torch.nn.functional as F
    from snntorch import utils

    torch.manual_seed(0)
    B, T = 2, 4
    if kind == "SLSTM":
        neuron = snn.SLSTM(5, 4, init_hidden=True, reset_mechanism="zero", threshold=0.05)
        x = (torch.rand(B, T, 5) < 0.5).float()
        child, row_name = neuron.lstm_cell, "0.lstm_cell"
    else:
        neuron = snn.SConv2dLSTM(1, 3, 3, init_hidden=True, reset_mechanism="zero", threshold=0.05)
        x = (torch.rand(B, T, 1, 6, 6) < 0.5).float()
        child, row_name = neuron.conv, "0.conv"
    net = nn.Sequential(neuron)
    seen = []
    hook = child.register_forward_hook(lambda m, a, o: seen.append([t.detach().clone() for t in
                                                                    (a[0], *(a[1] if len(a) > 1 else ()))]))
    counter = sl.SynOpsCounter(net)
    utils.reset(net)
    for t in range(T):
        net(x[:, t])
    hook.remove()
    firsts = seen[::2]
    assert len(seen) == 2 * T and all(torch.equal(a[0], b[0]) for a, b in zip(seen[::2], seen[1::2]))
    row = counter.snapshot().per_layer()[row_name]
    if kind == "SLSTM":  # input over weight_ih, the membrane (hidden state) over weight_hh, once per step
        fan_ih, fan_hh = (child.weight_ih != 0).sum(0).double(), (child.weight_hh != 0).sum(0).double()
        want = sum(float((i.abs().double() * fan_ih).sum() + (h.abs().double() * fan_hh).sum())
                   for i, h, _ in firsts) / B
        twin = nn.Sequential(snn.SLSTM(5, 4, init_hidden=True, reset_mechanism="subtract", threshold=0.05))
        twin.load_state_dict(net.state_dict())
        once = sl.SynOpsCounter(twin)
        utils.reset(twin)
        for t in range(T):  # one evaluation per step: the same cell, its dense taps once
            twin(x[:, t])
        dense = once.snapshot().per_layer()[row_name]["dense"]
    else:
        mask = (child.weight != 0).double()
        want = sum(F.conv2d(a[0].abs().double(), mask, None, child.stride, child.padding).sum().item()
                   for a in firsts) / B
        ones = torch.ones_like(firsts[0][0][:1], dtype=torch.float64)
        dense = T * F.conv2d(ones, torch.ones_like(mask), None, child.stride, child.padding).sum().item()
    assert want > 0 and row["synops"] == pytest.approx(want, rel=1e-6)
    assert row["dense"] == pytest.approx(dense)


def test_a_readout_of_the_recurrent_layer_after_the_neuron_returned_is_counted_even_when_it_repeats_its_input():
    """snntorch's zero reset evaluates ``recurrent(spk)`` twice inside one call of the neuron (counted once); a
    call of that layer by the user's code after the neuron returned is a call of its own, counted, even when it
    reads the same spikes as the neuron's last evaluation (it was taken for the repeat)."""
    import snntorch as snn

    torch.manual_seed(0)
    batch, steps, width = 2, 5, 4
    lif = snn.RLeaky(beta=0.9, linear_features=width, reset_mechanism="zero", threshold=0.5)
    log: list = []
    lif.register_forward_pre_hook(lambda m, a: log.append("enter"))
    lif.register_forward_hook(lambda m, a, o: log.append("exit"))
    lif.recurrent.register_forward_pre_hook(lambda m, a: log.append(a[0].detach().clone()))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = lif

        def forward(self, cur):
            spk, mem = torch.zeros(batch, width), torch.zeros(batch, width)
            outs = []
            for _ in range(steps):
                prev = spk
                spk, mem = self.lif(cur, spk, mem)
                outs.append(self.lif.recurrent(prev.clone()))  # a readout of the spikes the neuron just read
            return torch.stack(outs)

    net = Net()
    counter = sl.SynOpsCounter(net, batch_size=batch)
    with torch.no_grad():
        net(torch.full((batch, width), 5.0))
    fan = (lif.recurrent.weight != 0).sum(0).double()
    total, inside, seen = 0.0, False, 0
    for entry in log:  # by hand: every call but the second evaluation within one call of the neuron
        if isinstance(entry, str):
            inside, seen = entry == "enter", 0
            continue
        seen += inside
        if not (inside and seen == 2):
            total += float((entry.abs().double() * fan).sum())
    readouts = sum(1 for i, e in enumerate(log) if not isinstance(e, str) and log[i - 1] == "exit")
    assert readouts == steps and total > 0
    assert counter.snapshot().total()["synops"] == pytest.approx(total / batch)


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_spike_events_through_an_average_pool_into_a_recurrent_layer(cls):
    """Spikes -> AvgPool1d(2) -> RNN / LSTM / GRU: the input synapses counted the pooled values (half the events
    here), silently, where a Linear counts the events. By hand: events x input fan-out, plus the recurrent part
    from the layer's own hidden states (its output, h_0 = 0) x recurrent fan-out."""
    torch.manual_seed(31)
    T, B, F = 5, 3, 8
    x = (torch.rand(T, B, F) < 0.4).float()
    layer = cls(F // 2, 4)
    net = nn.Sequential(nn.AvgPool1d(2), layer)
    counter = sl.SynOpsCounter(net, batch_dim=1)
    out = net(x)[0]
    got = counter.snapshot().per_layer()["1"]["synops"]
    events = x.reshape(T, B, F // 2, 2).sum(-1).double()  # spikes per pool window
    fan_ih = (layer.weight_ih_l0 != 0).sum(0).double()
    fan_hh = (layer.weight_hh_l0 != 0).sum(0).double()
    h_prev = torch.cat([torch.zeros(1, B, 4), out[:-1]]).detach().double()
    want = float((events * fan_ih).sum() + (h_prev.abs() * fan_hh).sum()) / B
    assert got == pytest.approx(want, rel=1e-7)  # (the counter re-runs the steps: float32 states)


def test_spike_events_through_an_average_pool_into_a_recurrent_cell():
    """The same for nn.RNNCell without a state: events x input fan-out (it counted the pooled values)."""
    torch.manual_seed(3)
    x = (torch.rand(3, 8) < 0.5).float()
    cell = nn.RNNCell(4, 5)
    net = nn.Sequential(nn.AvgPool1d(2), cell)
    counter = sl.SynOpsCounter(net)
    net(x)
    events = x.reshape(3, 4, 2).sum(-1).double()
    want = float((events * (cell.weight_ih != 0).sum(0).double()).sum()) / 3
    assert counter.snapshot().per_layer()["1"]["synops"] == pytest.approx(want, rel=1e-12)


def test_an_empty_batch_through_a_recurrent_layer_runs_and_the_read_says_so():
    """nn.LSTM / nn.GRU on 0 samples run without the counter; with it the forward raised torch's 'cannot reshape
    tensor of 0 elements'. The forward now runs (outputs as without the counter) and the read names the batch."""
    lstm = nn.LSTM(4, 3, batch_first=True)
    x = torch.zeros(0, 5, 4)
    want = lstm(x)[0]
    counter = sl.SynOpsCounter(lstm)
    assert torch.equal(lstm(x)[0], want)
    with pytest.raises(ValueError, match="a batch of 0 samples"):
        counter.snapshot()
    gru = nn.GRU(4, 3)
    counter = sl.SynOpsCounter(gru)
    assert gru(torch.zeros(5, 0, 4))[0].shape == (5, 0, 3)
