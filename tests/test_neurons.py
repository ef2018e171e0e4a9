"""Neuron statistics against NeuroBench (NeuronOperations, ActivationSparsity), sinabs and brute force."""

from __future__ import annotations

import pytest
import sinabs
import sinabs.layers as sl_layers
import snntorch as snn
import torch
from snntorch import utils as snn_utils
from torch import nn

import synopsloss as sl
from synopsloss.neurons import neuron_op_cost


def _snn_net(kind: str, reset: str) -> nn.Module:
    def neuron(output: bool = False):
        kw = dict(init_hidden=True, reset_mechanism=reset, output=output)
        if kind == "Leaky":
            return snn.Leaky(beta=0.8, **kw)
        if kind == "Synaptic":
            return snn.Synaptic(alpha=0.7, beta=0.8, **kw)
        if kind == "Alpha":
            return snn.Alpha(alpha=0.8, beta=0.7, **kw)
        return snn.Lapicque(beta=0.8, **kw)

    return _TwoOutputs(nn.Linear(6, 8), neuron(), nn.Linear(8, 3), neuron(output=True))


class _TwoOutputs(nn.Sequential):
    """(spikes, membrane) of the last layer, as NeuroBench's SNNTorchModel expects."""

    def forward(self, x):
        out = super().forward(x)
        return out[0], out[-1]


def _neurobench_neuron_ops(net: nn.Module, data: torch.Tensor):
    from neurobench.metrics.workload import ActivationSparsity, NeuronOperations
    from neurobench.models import SNNTorchModel

    model = SNNTorchModel(net)
    model.register_hooks()
    try:
        preds = model(data)
        ops = NeuronOperations()(model, preds, (data, None))
        sparsity = ActivationSparsity()(model, preds, (data, None))
    finally:
        model.cleanup_hooks()
    return ops, sparsity


@pytest.mark.parametrize("kind", ["Leaky", "Synaptic", "Alpha", "Lapicque"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_snntorch_neuron_ops_and_sparsity_match_neurobench(kind, reset):
    torch.manual_seed(0)
    ref_net = _snn_net(kind, reset)
    data = (torch.rand(3, 6, 6) < 0.5).float() * 3.0  # [B, T, F]: strong input, so neurons fire
    ref, sparsity = _neurobench_neuron_ops(ref_net, data)
    torch.manual_seed(0)
    net = _snn_net(kind, reset)
    net.load_state_dict(ref_net.state_dict())
    counter = sl.SynOpsCounter(net)
    snn_utils.reset(net)
    for t in range(data.shape[1]):
        net(data[:, t])
    table = counter.table()
    assert table.total.neuron_ops == pytest.approx(ref["Effective Neuron Ops"])
    assert table.total.neuron_ops_dense == pytest.approx(ref["Neuron Dense Ops"])
    neuron_rows = [r for r in table if r.kind == "neuron"]
    slots = sum(r.neurons * r.time_steps for r in neuron_rows)
    density = sum(r.density * r.neurons * r.time_steps for r in neuron_rows) / slots
    assert 1 - density == pytest.approx(sparsity)
    assert [r.neurons for r in neuron_rows] == [8, 3]
    assert all(r.time_steps == 6 for r in neuron_rows)


def test_recurrent_snntorch_neurons_cost_their_base_type():
    assert neuron_op_cost(snn.RLeaky(beta=0.5, linear_features=4)) == 4
    assert neuron_op_cost(snn.RSynaptic(alpha=0.5, beta=0.5, linear_features=4, reset_mechanism="zero")) == 8
    assert neuron_op_cost(snn.Leaky(beta=0.5, reset_mechanism="none")) is None


def test_accumulated_neuron_ops_match_neurobench_over_two_batches():
    torch.manual_seed(3)
    ref_net = _snn_net("Synaptic", "zero")
    batches = [(torch.rand(2, 4, 6) < 0.6).float() * 2, (torch.rand(3, 4, 6) < 0.3).float() * 2]
    from neurobench.metrics.workload import NeuronOperations
    from neurobench.models import SNNTorchModel

    model = SNNTorchModel(ref_net)
    model.register_hooks()
    metric = NeuronOperations()
    for data in batches:
        preds = model(data)
        ref = metric(model, preds, (data, None))
        model.reset_hooks()
    model.cleanup_hooks()
    net = _snn_net("Synaptic", "zero")
    net.load_state_dict(ref_net.state_dict())
    counter = sl.SynOpsCounter(net)
    for data in batches:
        counter.reset()
        snn_utils.reset(net)
        for t in range(data.shape[1]):
            net(data[:, t])
    counter.reset()
    total = counter.table(accumulated=True).total
    assert total.neuron_ops == pytest.approx(ref["Effective Neuron Ops"])
    assert total.neuron_ops_dense == pytest.approx(ref["Neuron Dense Ops"])


def _sinabs_net(squeeze: bool = False) -> nn.Module:
    if squeeze:
        return nn.Sequential(nn.Linear(5, 7), sl_layers.IAFSqueeze(batch_size=2),
                             nn.Linear(7, 3), sl_layers.LIFSqueeze(tau_mem=5.0, batch_size=2))
    return nn.Sequential(nn.Linear(5, 7), sl_layers.IAF(), nn.Linear(7, 3), sl_layers.LIF(tau_mem=5.0))


def test_sinabs_firing_rates_match_snn_analyzer():
    torch.manual_seed(1)
    net = _sinabs_net()
    analyzer = sinabs.SNNAnalyzer(net)
    counter = sl.SynOpsCounter(net)
    x = (torch.rand(2, 6, 5) < 0.5).float() * 2
    net(x)
    ref = analyzer.get_layer_statistics()["spiking"]
    table = counter.table()
    for name in ("1", "3"):
        assert table[name].firing_rate == pytest.approx(float(ref[name]["firing_rate"].detach()))
        assert torch.allclose(table.per_neuron[name], ref[name]["firing_rate_per_neuron"].double())
        assert table[name].neurons == ref[name]["firing_rate_per_neuron"].numel()
        assert table[name].time_steps == 6


def test_squeeze_variants_report_the_same_as_plain_sinabs_layers():
    torch.manual_seed(2)
    plain, squeezed = _sinabs_net(), _sinabs_net(squeeze=True)
    squeezed.load_state_dict(plain.state_dict())
    x = (torch.rand(2, 6, 5) < 0.5).float() * 2
    c1, c2 = sl.SynOpsCounter(plain), sl.SynOpsCounter(squeezed)
    plain(x)
    squeezed(x.reshape(12, 5))
    t1, t2 = c1.table(), c2.table()
    for name in ("1", "3"):
        for attr in ("firing_rate", "neurons", "time_steps", "membrane_updates", "membrane_updates_dense", "neuron_ops"):
            assert getattr(t1[name], attr) == pytest.approx(getattr(t2[name], attr)), (name, attr)


def test_sinabs_iaf_event_updates_equal_membrane_changes():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, 7), sl_layers.IAF(record_states=True))
    counter = sl.SynOpsCounter(net)
    x = (torch.rand(3, 8, 5) < 0.3).float()
    net(x)
    v = net[1].recordings["v_mem"]  # [B, T, N] after each step
    prev = torch.cat([torch.zeros_like(v[:, :1]), v[:, :-1]], 1)
    changes = (v != prev).sum().item()
    row = counter.table()["1"]
    assert row.membrane_updates == pytest.approx(changes / 3)
    assert row.membrane_updates_dense == 8 * 7
    assert row.neuron_ops == pytest.approx(changes / 3 * 3)  # IAF: 3 ops per update


def test_sinabs_neuron_costs_follow_the_documented_derivation():
    assert neuron_op_cost(sl_layers.IAF()) == 3
    assert neuron_op_cost(sl_layers.IAFSqueeze(batch_size=1)) == 3
    assert neuron_op_cost(sl_layers.IAF(min_v_mem=-1.0)) == 4
    assert neuron_op_cost(sl_layers.LIF(tau_mem=5.0, norm_input=False)) == 4
    assert neuron_op_cost(sl_layers.LIF(tau_mem=5.0)) == 5
    assert neuron_op_cost(sl_layers.LIF(tau_mem=5.0, tau_syn=3.0, norm_input=False)) == 6
    assert neuron_op_cost(sl_layers.ExpLeak(tau_mem=5.0, norm_input=False)) == 2
    assert neuron_op_cost(sl_layers.ALIF(tau_mem=5.0, tau_adapt=5.0, norm_input=False)) == 8
    assert neuron_op_cost(sl_layers.IAF(), costs={"IAF": 7}) == 7


def test_recurrent_snn_synapses_are_rows_of_their_own():
    torch.manual_seed(5)
    lif = snn.RLeaky(beta=0.5, linear_features=4, init_hidden=True)
    one = snn.RLeaky(beta=0.5, all_to_all=False, V=torch.tensor([0.5, 0.0, 1.0, 2.0]), init_hidden=True)
    net = nn.Sequential(nn.Linear(3, 4), lif, nn.Linear(4, 4), one)
    with torch.no_grad():
        lif.recurrent.weight[0, :2] = 0
    counter = sl.SynOpsCounter(net)
    spikes1, spikes3 = [], []
    h1 = net[1].register_forward_hook(lambda m, a, o: spikes1.append(o.detach()))
    h3 = net[3].register_forward_hook(lambda m, a, o: spikes3.append(o.detach()))
    snn_utils.reset(net)
    x = (torch.rand(2, 5, 3) < 0.7).float() * 3
    for t in range(5):
        net(x[:, t])
    h1.remove()
    h3.remove()
    table = counter.table()
    assert table["1.recurrent"].kind == "recurrent synapses"
    assert table["3.recurrent"].kind == "recurrent synapses"
    fan = (lif.recurrent.weight != 0).sum(0).double()
    prev1 = torch.stack([torch.zeros(2, 4)] + spikes1[:-1]).double()
    assert table["1.recurrent"].synops == pytest.approx(float((prev1 * fan).sum() / 2))
    prev3 = torch.stack([torch.zeros(2, 4)] + spikes3[:-1]).double()
    assert table["3.recurrent"].eff_acs == pytest.approx(float((prev3 * torch.tensor([1.0, 0, 1, 1])).sum() / 2))
    assert table["3.recurrent"].dense == 5 * 4


def test_sinabs_recurrent_rec_connect_is_counted():
    torch.manual_seed(6)
    rec = nn.Linear(4, 4, bias=False)
    net = nn.Sequential(nn.Linear(3, 4), sl_layers.IAFRecurrent(rec_connect=rec))
    counter = sl.SynOpsCounter(net)
    x = (torch.rand(2, 5, 3) < 0.7).float() * 2
    out = net(x)
    table = counter.table()
    # sinabs runs rec_connect on the spikes of every step (the last one's result unused): 4 synapses each
    assert table["1.rec_connect"].kind == "recurrent synapses"
    assert table["1.rec_connect"].synops == pytest.approx(float(out.detach().sum() * 4 / 2))
    assert table["1.rec_connect"].time_steps == 5


def test_the_monitor_writes_nothing_on_modules():
    net = _snn_net("Leaky", "subtract")
    before = {n: set(vars(m)) for n, m in net.named_modules()}
    counter = sl.SynOpsCounter(net)
    snn_utils.reset(net)
    net(torch.ones(2, 6))
    counter.table()
    counter.remove()
    snn_utils.reset(net)
    after = {n: set(vars(m)) for n, m in net.named_modules()}
    assert before.keys() == after.keys()
    for n in before:
        assert {k for k in after[n] - before[n] if "hook" in k or "synops" in k} == set(), n
        assert all(not getattr(net.get_submodule(n), attr) for attr in ("_forward_hooks", "_forward_pre_hooks")), n


def test_a_neuron_that_outputs_its_membrane_has_no_firing_rate():
    """sinabs ``ExpLeak`` emits its membrane, not spikes: no Out rate (a negative membrane sum is no rate), and
    the Total rate is the spiking layers' alone (by hand: IAF output spikes / (neurons x steps x samples))."""
    sinabs_layers = pytest.importorskip("sinabs.layers")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 16, bias=False), sinabs_layers.ExpLeak(tau_mem=5.0),
                              torch.nn.Linear(16, 8, bias=False), sinabs_layers.IAF())
    with torch.no_grad():
        net[0].weight.mul_(3)
    seen = []
    net[3].register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    counter = sl.SynOpsCounter(net)
    net((torch.rand(3, 6, 20, generator=torch.Generator().manual_seed(1)) < 0.3).float())
    table = counter.table()
    assert table["1"].firing_rate is None and table["1"].kind == "neuron"
    want = float(seen[0].sum()) / (8 * 6 * 3)
    assert table["3"].firing_rate == pytest.approx(want) and table.total.firing_rate == pytest.approx(want)


@pytest.mark.parametrize("kind", ["StateLeaky", "LeakyParallel"])
def test_snntorch_neurons_of_a_whole_sequence_are_read_time_first(kind):
    """StateLeaky / LinearLeaky / LeakyParallel take [T, B, C] in one call: one sample's neurons are C (15 = B * C
    and T = 2 before), and LeakyParallel, no SpikingNeuron, had no neuron row at all."""
    import snntorch as snn

    torch.manual_seed(0)
    T, B, C = 6, 3, 5
    neuron = snn.StateLeaky(beta=0.8, channels=C) if kind == "StateLeaky" else snn.LeakyParallel(4, C)
    net = nn.Sequential(nn.Linear(4, C if kind == "StateLeaky" else 4), neuron)
    x = (torch.rand(T, B, 4) < 0.5).float()
    outs = []
    neuron.register_forward_hook(lambda m, a, o: outs.append((o[0] if isinstance(o, tuple) else o).detach()))
    counter = sl.SynOpsCounter(net, time_dim=0, batch_dim=1)
    net(x)
    spikes = outs[0]
    assert spikes.shape == (T, B, C)
    row = counter.neurons.stats()["1"]
    assert (row["neurons"], row["time_steps"]) == (C, T)
    assert row["spikes"] == pytest.approx(float(spikes.sum()) / B)
    assert row["firing_rate"] == pytest.approx(float(spikes.sum()) / (B * T * C))


def test_a_binary_spike_neurons_density_comes_from_its_sums_exactly():
    """A SpikingJelly IF neuron's spikes are 0 and 1 by construction: its nonzeros are read from its per-neuron
    sums (no mask of its output); density and firing rate equal a hand count."""
    from spikingjelly.activation_based import functional, neuron

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 40), neuron.IFNode(step_mode="m", v_threshold=0.3))
    x = torch.rand(5, 7, 6)  # [T, B, F]
    out = net(x).detach()
    functional.reset_net(net)
    counter = sl.SynOpsCounter(net)
    net(x)
    row = counter.neurons.stats()["1"]
    assert 0 < float(out.mean()) < 1
    assert row["spikes"] == pytest.approx(float(out.sum()) / 7)
    assert row["density"] == pytest.approx(float((out != 0).double().mean()))
    assert row["firing_rate"] == pytest.approx(float(out.double().mean()))


def test_a_binary_spike_neuron_with_a_users_hook_is_counted_from_its_output():
    """A user's forward hook that halves the spikes runs before the monitor's: the output is no 0/1 spikes any
    more, and its nonzeros are counted, not taken from its sums (half the density before)."""
    from spikingjelly.activation_based import functional, neuron

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 40), neuron.IFNode(step_mode="m", v_threshold=0.3))
    net[1].register_forward_hook(lambda m, a, o: o.mul_(0.5))
    x = torch.rand(5, 7, 6)
    with torch.no_grad():
        out = net(x).clone()
    functional.reset_net(net)
    counter = sl.SynOpsCounter(net)
    net(x)
    row = counter.neurons.stats()["1"]
    assert row["density"] == pytest.approx(float((out != 0).double().mean())) and row["density"] > 0
    assert row["spikes"] == pytest.approx(float(out.sum()) / 7)


def test_one_snntorch_neuron_on_layers_of_two_widths_counts_each_call_as_a_new_membrane():
    """An snntorch neuron (init_hidden=False) applied to two layers of other widths: the membrane before a call has
    another shape than after it, so each call starts a membrane of its own, every neuron updated (the difference
    of the two raised from the hook, or broadcast to more updates than neurons)."""
    import snntorch as snn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc1, self.fc2, self.lif = nn.Linear(4, 6), nn.Linear(6, 3), snn.Leaky(beta=0.9)

        def forward(self, x):
            m1, m2, out = torch.zeros(x.shape[0], 6), torch.zeros(x.shape[0], 3), []
            for t in range(x.shape[1]):
                s1, m1 = self.lif(self.fc1(x[:, t]), m1)
                s2, m2 = self.lif(self.fc2(s1), m2)
                out.append(s2)
            return torch.stack(out, 1)

    batch, steps = 2, 4
    x = torch.rand(batch, steps, 4, generator=torch.Generator().manual_seed(1))
    plain, net = Net(), Net()
    counter = sl.SynOpsCounter(net)
    assert torch.equal(net(x), plain(x))
    lif = counter.snapshot().neurons["lif"]
    assert lif.updates_dense == steps * batch * (6 + 3)
    assert lif.updates == lif.updates_dense  # (every call a membrane of its own: all its neurons)


def test_a_neuron_module_used_at_two_widths_rates_over_every_output():
    """One snntorch Leaky after fc1 (6 wide) and fc2 (4 wide): its firing rate and density are over every output
    value of both places (they used the last width, 4, for both: 0.219 for 0.175); no single width is given."""
    import snntorch as snn
    from snntorch import utils as snn_utils

    class Reuse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(5, 6), nn.Linear(6, 4)
            self.lif = snn.Leaky(beta=0.9, init_hidden=True, threshold=0.3)

        def forward(self, x):
            return self.lif(self.fc2(self.lif(self.fc1(x))))

    torch.manual_seed(0)
    net = Reuse()
    outs = []
    net.lif.register_forward_hook(lambda m, a, o: outs.append(o.detach().clone()))
    counter = sl.SynOpsCounter(net)
    snn_utils.reset(net)
    for _ in range(4):
        net((torch.rand(3, 5) < 0.5).float())
    spikes = sum(float(o.sum()) for o in outs)
    values = sum(o.numel() for o in outs)
    row = counter.neurons.stats()["lif"]
    assert row["firing_rate"] == pytest.approx(spikes / values)
    assert row["density"] == pytest.approx(sum(float((o != 0).sum()) for o in outs) / values)
    assert row["neurons"] is None


def test_a_standalone_monitor_refuses_samples_that_do_not_divide_a_neurons_rows():
    """[T, B, C] input fed step by step to a standalone NeuronMonitor: it took dim 0 (T = 3) as the samples (9.33
    spikes per sample for 7, T = 4 for 3), silently. Now refused; with batch_dim=1 the numbers are the brute
    force ones: spikes / B, T steps."""
    import snntorch as snn
    from snntorch import utils

    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 6)
            self.lif = snn.Leaky(beta=0.9, threshold=0.3, init_hidden=True)

        def forward(self, x):
            return torch.stack([self.lif(self.fc(x[t])) for t in range(x.shape[0])])

    torch.manual_seed(1)
    net = Loop()
    x = (torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    monitor = sl.NeuronMonitor(net)
    utils.reset(net)
    net(x)
    with pytest.raises(ValueError, match="received 4 rows in one call, not a multiple of the 3 samples"):
        monitor.stats()
    monitor.remove()
    monitor = sl.NeuronMonitor(net, batch_dim=1)
    utils.reset(net)
    y = net(x).detach()
    stats = monitor.stats()["lif"]
    assert stats["spikes"] == pytest.approx(float(y.sum()) / 4) and stats["time_steps"] == 3
