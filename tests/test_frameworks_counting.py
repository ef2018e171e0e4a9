"""Counting SpikingJelly 2.0 / norse networks: neuron rows, samples and time steps, the paper estimate.

References are independent of the code under test: hand counts on tiny fixed
inputs, brute-force tap counts (autograd through 0/1 weights, explicit
input x weight pairs), spikes and membranes recorded by the test's own hooks,
and the operation costs derived by hand from each neuron's equations.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sj = pytest.importorskip("spikingjelly.activation_based")

import spikingjelly.activation_based.layer as sjl  # noqa: E402
import spikingjelly.activation_based.neuron as sjn  # noqa: E402
from spikingjelly.activation_based import functional  # noqa: E402

import synopsloss as sl  # noqa: E402
import zoo  # noqa: E402
from synopsloss import frameworks as fw  # noqa: E402
from synopsloss import registry  # noqa: E402

norse = pytest.importorskip("norse.torch")

T, B = 3, 2


# --------------------------------------------------------------------------- references


def _fanout(weight: Tensor, conv: Tuple = None, sample: Tuple[int, ...] = ()) -> Tensor:
    """Nonzero taps per input neuron: d sum(layer_w01(ones)) / d input (Linear: column counts)."""
    w01 = (weight.detach() != 0).double()
    if conv is None:
        return w01.sum(0)
    stride, padding = conv
    ones = torch.ones((1, *sample), dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.conv2d(ones, w01, None, stride, padding).sum(), ones)
    return g[0]


def _record(model: nn.Module, types) -> Dict[str, List[Tuple[Tensor, object]]]:
    """(input, output) of every call of the modules of ``types``, by name (the test's own hooks)."""
    seen: Dict[str, List[Tuple[Tensor, object]]] = {}
    for name, m in model.named_modules():
        if isinstance(m, types):
            m.register_forward_hook(lambda mod, a, o, n=name: seen.setdefault(n, []).append(
                (a[0].detach().clone(), o.detach().clone() if isinstance(o, Tensor) else o)))
    return seen


def _sj_synops(model: nn.Module, seen) -> Dict[str, float]:
    """Per layer: sum over calls of input x nonzero fan-out, per sample."""
    modules = dict(model.named_modules())
    out: Dict[str, float] = {}
    for name, calls in seen.items():
        m = modules[name]
        for x, _ in calls:
            if isinstance(m, nn.Conv2d):
                fan = _fanout(m.weight, (m.stride, m.padding), tuple(x.shape[-3:]))
                s = (x.double().reshape(-1, *x.shape[-3:]) * fan).sum()
            else:
                s = (x.double().reshape(-1, x.shape[-1]) * _fanout(m.weight)).sum()
            out[name] = out.get(name, 0.0) + float(s) / B
    return out


# --------------------------------------------------------------------------- SpikingJelly


def test_sj_multi_step_csnn_learns_samples_and_time_steps_and_counts_neurons():
    net = zoo.csnn("m")
    x = zoo.spike_train((T, B, 1, 12, 12), seed=3)
    syn = _record(net, (nn.Conv2d, nn.Linear))
    neu = _record(net, sjn.LIFNode)
    counter = sl.SynOpsCounter(net)  # no batch_size / batch_dim: dim 0 of the input is T, not B
    net(x)
    assert counter.samples == B and counter.time_steps() == T
    table = counter.table()
    ref = _sj_synops(net, syn)
    for name in ("0", "3", "6"):
        assert table[name].synops == pytest.approx(ref[name], rel=1e-9)
        assert counter.time_steps(name) == T and table[name].time_steps == T
        assert table[name].synops_per_step == pytest.approx(ref[name] / T)
    for name, [(xin, out)] in neu.items():
        row = table[name]
        assert out.shape[:2] == (T, B)
        assert row.kind == "neuron" and row.neurons == out[0, 0].numel() and row.time_steps == T
        assert row.firing_rate == pytest.approx(float(out.mean()))
        assert row.spikes == pytest.approx(float(out.sum()) / B)
        # event-driven updates (the trajectory is not exposed): input or output nonzero
        events = float(((xin != 0) | (out != 0)).sum())
        assert row.membrane_updates == pytest.approx(events / B)
        assert row.membrane_updates_dense == out.numel() / B
        # LIFNode(decay_input=True, v_reset=0): decay, x / tau, add, compare, reset = 5 ops
        assert fw.neuron_ops(net.get_submodule(name)) == 5
        assert row.neuron_ops == pytest.approx(5 * events / B)
    assert table.total.time_steps == T


def test_sj_single_step_loop_matches_multi_step_and_counts_membrane_changes():
    net_m, net_s = zoo.csnn("m"), zoo.csnn("s")
    x = zoo.spike_train((T, B, 1, 12, 12), seed=5)
    c_m = sl.SynOpsCounter(net_m)
    net_m(x)
    trajectories: Dict[str, List[Tensor]] = {}
    for name, m in net_s.named_modules():
        if isinstance(m, sjn.LIFNode):
            m.register_forward_hook(lambda mod, a, o, n=name: trajectories.setdefault(n, []).append(mod.v.clone()))
    c_s = sl.SynOpsCounter(net_s)
    for t in range(T):
        net_s(x[t])
    assert c_s.samples == B and c_s.time_steps() == T
    t_m, t_s = c_m.table(), c_s.table()
    for name in ("0", "3", "6"):  # same weights, same spikes
        assert t_s[name].synops == pytest.approx(t_m[name].synops)
        assert t_s[name].time_steps == T
    for name, vs in trajectories.items():
        assert t_s[name].firing_rate == pytest.approx(t_m[name].firing_rate)
        # NeuroBench: every neuron at the first step, then each neuron whose membrane changed
        changed = vs[0].numel() + sum(int((vs[t] != vs[t - 1]).sum()) for t in range(1, T))
        assert t_s[name].membrane_updates == pytest.approx(changed / B)
        assert t_s[name].neuron_ops == pytest.approx(5 * changed / B)


def _tiny_if(step_mode: str) -> nn.Module:
    lin = sjl.Linear(2, 2, bias=False, step_mode=step_mode)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.6, 0.0], [0.0, 0.6]]))
    return nn.Sequential(lin, sjn.IFNode(v_threshold=1.0, step_mode=step_mode))


#: neuron 0 gets spikes at steps 0, 1, 3 (v: 0.6, 1.2 -> spike, reset 0, 0, 0.6); neuron 1 none
_TINY_X = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 0.0]], [[1.0, 0.0]]])  # [T=4, B=1, 2]


def test_hand_counted_if_layer_multi_step():
    net = _tiny_if("m")
    counter = sl.SynOpsCounter(net)
    out = net(_TINY_X)
    assert out[:, 0, 0].tolist() == [0.0, 1.0, 0.0, 0.0] and out[:, 0, 1].sum() == 0
    table = counter.table()
    assert counter.samples == 1 and counter.time_steps() == 4
    assert table["0"].synops == 3 and table["0"].dense == 16 and table["0"].eff_acs == 3
    row = table["1"]
    assert row.time_steps == 4 and row.neurons == 2
    assert row.firing_rate == 1 / 8  # one spike, 2 neurons x 4 steps
    assert row.membrane_updates == 3  # events at steps 0, 1, 3 of neuron 0
    assert row.neuron_ops == 3 * 3  # IF: add, compare, reset


def test_hand_counted_if_layer_single_step():
    net = _tiny_if("s")
    counter = sl.SynOpsCounter(net)
    for t in range(4):
        net(_TINY_X[t])
    row = counter.table()["1"]
    assert counter.time_steps() == 4 and row.time_steps == 4 and row.firing_rate == 1 / 8
    # both neurons at step 0, then membrane changes: step 1 (0.6 -> 0 after the reset) and step 3 (0 -> 0.6)
    assert row.membrane_updates == 4 and row.neuron_ops == 12


def test_sj_input_layout_given_wrongly_is_refused():
    net = zoo.csnn("m")
    counter = sl.SynOpsCounter(net, batch_dim=0)  # the input is [T, B, ...]
    net(zoo.spike_train((T, B, 1, 12, 12)))
    with pytest.raises(ValueError, match="batch_dim=0 gives 3 samples.*received 2"):
        counter.snapshot()


def test_ws_conv_counts_the_standardised_weights():
    torch.manual_seed(0)
    conv = sjl.WSConv2d(2, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[0, 0].zero_()  # not a zero synapse once standardised
    net = nn.Sequential(conv)
    counter = sl.SynOpsCounter(net)
    x = zoo.spike_train((B, 2, 5, 5), seed=2)
    net(x)
    w = conv.get_weight().detach()
    assert int((w == 0).sum()) == 0 and int((conv.weight == 0).sum()) == 9
    fan = _fanout(w, (conv.stride, conv.padding), (2, 5, 5))
    assert counter.snapshot().per_layer()["0"]["synops"] == pytest.approx(float((x.double() * fan).sum()) / B)


# --------------------------------------------------------------------------- norse


def test_norse_cell_loop_learns_samples_from_the_cells_and_counts_membrane_changes():
    net = zoo.norse_cell_loop()
    x = zoo.spike_train((zoo.NORSE_T, B, 16), seed=6)  # [T, B, 16], the model loops inside
    seen: Dict[str, List] = {}
    for name in ("lif1", "lif2"):
        net.get_submodule(name).register_forward_hook(
            lambda m, a, kw, o, n=name: seen.setdefault(n, []).append((a[1] if len(a) > 1 else None, o)),
            with_kwargs=True)
    syn = _record(net, nn.Linear)
    counter = sl.SynOpsCounter(net)  # dim 0 of the input is T: the cells tell B
    net(x)
    assert counter.samples == B and counter.time_steps() == zoo.NORSE_T
    table = counter.table()
    ref = _sj_synops(net, syn)
    for name in ("fc1", "fc2"):
        assert table[name].synops == pytest.approx(ref[name])
        assert table[name].time_steps == zoo.NORSE_T
    for name, calls in seen.items():
        spikes = torch.stack([o[0].detach() for _, o in calls])
        changed = calls[0][1][1].v.numel() + sum(int((o[1].v != s.v).sum()) for s, o in calls[1:])
        row = table[name]
        assert row.firing_rate == pytest.approx(float(spikes.mean())) and row.firing_rate > 0
        assert row.membrane_updates == pytest.approx(changed / B)
        # LIFCell: i + x, v decay, scale i, add to v, i decay, compare, reset = 7 ops (v_leak = 0)
        assert row.neuron_ops == pytest.approx(7 * changed / B)


def test_norse_sequence_modules_are_time_first():
    net = zoo.norse_sequence()
    x = zoo.spike_train((zoo.NORSE_T, B, 16), seed=7)
    neu = _record(net, norse.LIF)
    counter = sl.SynOpsCounter(net)
    net(x)
    assert counter.samples == B and counter.time_steps() == zoo.NORSE_T
    table = counter.table()
    assert table["0.lifted_module"].time_steps == zoo.NORSE_T  # Lift calls it once per step
    for name, [(xin, out)] in neu.items():
        z = out[0].detach()
        row = table[name]
        assert row.neurons == z.shape[-1] and row.time_steps == zoo.NORSE_T
        assert row.firing_rate == pytest.approx(float(z.mean()))
        events = float(((xin != 0) | (z != 0)).sum())
        assert row.membrane_updates == pytest.approx(events / B)


def _pairs(x: Tensor, w: Tensor) -> Tuple[float, float]:
    """(synops, effective) by explicit enumeration of (input, nonzero weight) pairs."""
    mask = (w.detach() != 0).double()  # [out, in]
    xs = x.detach().double().reshape(-1, w.shape[1])
    synops = float((xs.abs()[:, None, :] * mask[None]).sum())
    eff = float(((xs != 0).double()[:, None, :] * mask[None]).sum())
    return synops, eff


def test_norse_recurrent_cell_counts_input_and_recurrent_synapses():
    net = zoo.norse_recurrent_loop()
    with torch.no_grad():
        net.rec.input_weights[:, ::3] = 0.0  # pruned inputs
        net.rec.recurrent_weights[::2, 1] = 0.0
    x = zoo.spike_train((zoo.NORSE_T, B, 16), seed=8)
    outs: List[Tensor] = []
    net.rec.register_forward_hook(lambda m, a, o: outs.append(o[0].detach()))
    counter = sl.SynOpsCounter(net)
    net(x)
    z = torch.stack(outs)  # [T, B, 12]
    assert z.sum() > 0
    z_prev = torch.cat([torch.zeros_like(z[:1]), z[:-1]])
    s_in, e_in = _pairs(x, net.rec.input_weights)
    s_rec, e_rec = _pairs(z_prev, net.rec.recurrent_weights)
    row = counter.table()["rec"]
    assert row.kind == "recurrent synapses" and counter.samples == B and row.time_steps == zoo.NORSE_T
    assert row.synops == pytest.approx((s_in + s_rec) / B)
    assert row.eff_acs == pytest.approx((e_in + e_rec) / B) and row.eff_macs == 0
    assert row.dense == zoo.NORSE_T * (16 * 12 + 12 * 12)
    neuron = [r for r in counter.table() if r.name == "rec" and r.kind == "neuron"]
    assert len(neuron) == 1 and neuron[0].firing_rate == pytest.approx(float(z.mean()))
    # the synops are differentiable through both weights' inputs
    counter.reset()
    net(x)
    counter.synops().backward()
    assert net.rec.input_weights.grad is not None


def test_norse_recurrent_spikes_are_acs_when_the_input_is_analog():
    loop = zoo.norse_recurrent_loop()
    with torch.no_grad():
        loop.rec.input_weights.mul_(30.0)  # it fires
        loop.rec.recurrent_weights[::2, 1] = 0.0
    x = torch.rand(zoo.NORSE_T, B, 16, generator=torch.Generator().manual_seed(3))  # analog input
    outs: List[Tensor] = []
    loop.rec.register_forward_hook(lambda m, a, o: outs.append(o[0].detach()))
    counter = sl.SynOpsCounter(loop)
    loop(x)
    z = torch.stack(outs)
    assert z.sum() > 0
    z_prev = torch.cat([torch.zeros_like(z[:1]), z[:-1]])
    s_in, e_in = _pairs(x, loop.rec.input_weights)
    s_rec, e_rec = _pairs(z_prev, loop.rec.recurrent_weights)
    row = counter.table()["rec"]
    # by hand: the analog input's ops are MACs, the recurrent spikes' ops ACs
    assert row.eff_macs == pytest.approx(e_in / B) and row.eff_acs == pytest.approx(e_rec / B)
    assert row.synops == pytest.approx((s_in + s_rec) / B)


def test_norse_recurrent_sequence_module_equals_the_cell_loop():
    loop = zoo.norse_recurrent_loop()
    seq = norse.LIFRecurrent(16, 12)
    seq.load_state_dict(loop.rec.state_dict())
    x = zoo.spike_train((zoo.NORSE_T, B, 16), seed=9)
    c_loop, c_seq = sl.SynOpsCounter(loop.rec), sl.SynOpsCounter(seq)
    z_loop, s = [], None
    for t in range(zoo.NORSE_T):
        z, s = loop.rec(x[t], s)
        z_loop.append(z)
    z_seq, _ = seq(x)
    assert torch.equal(torch.stack(z_loop), z_seq)
    a, b = c_loop.table()[""], c_seq.table()[""]
    assert c_seq.samples == B and c_seq.time_steps() == zoo.NORSE_T and b.time_steps == zoo.NORSE_T
    for k in ("synops", "dense", "eff_acs"):
        assert getattr(a, k) == pytest.approx(getattr(b, k))


def test_norse_lconv2d_counts_as_a_2d_convolution_on_time_times_batch_rows():
    torch.manual_seed(1)
    conv = norse.LConv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight[:, 0, 1, 1] = 0.0
    net = nn.Sequential(conv)
    counter = sl.SynOpsCounter(net, batch_size=B)
    x = zoo.spike_train((T, B, 2, 5, 5), seed=1)
    net(x)
    fan = _fanout(conv.weight[..., 0], ((1, 1), (1, 1)), (2, 5, 5))
    assert counter.snapshot().per_layer()["0"]["synops"] == pytest.approx(float((x.double() * fan).sum()) / B)


def test_framework_neuron_costs_come_from_the_frameworks_table():
    assert registry.neuron_op_cost(sjn.IFNode()) == 3 == fw.neuron_ops(sjn.IFNode())
    assert registry.neuron_op_cost(sjn.LIFNode(decay_input=False)) == 4
    assert registry.neuron_op_cost(norse.LIFCell()) == 7 == fw.neuron_ops(norse.LIFCell())
    assert registry.neuron_op_cost(sjn.PSN(T=4)) is None  # recognised, cost not derived: unknown, never 0
    assert registry.neuron_op_cost(sjn.IFNode(), costs={"IFNode": 9}) == 9
    assert registry.layer_kind(norse.LIFRecurrentCell(2, 3)) is registry.LayerKind.NEURON


def test_membrane_output_neurons_have_no_firing_rate():
    net = norse.SequentialState(norse.Lift(nn.Linear(4, 3)), norse.LI())
    counter = sl.SynOpsCounter(net)
    net(torch.rand(T, B, 4))
    row = counter.table()["1"]
    assert row.kind == "neuron" and row.firing_rate is None and row.spikes is None
    assert row.time_steps == T and row.membrane_updates_dense == T * 3


# --------------------------------------------------------------------------- time steps are not tokens


def test_tokens_are_not_time_steps():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 3, bias=False))
    x = zoo.spike_train((B, 5, 4), seed=2)  # [B, N tokens, C]
    counter = sl.SynOpsCounter(net, batch_dim=0)
    net(x)
    assert counter.time_steps() == 1 and counter.time_steps("0") == 1
    row = counter.table(dt=1e-3)["0"]
    assert row.time_steps == 1 and row.synops_per_step == row.synops and row.synops_per_s == row.synops / 1e-3
    counter.remove()
    steps = sl.SynOpsCounter(net, batch_dim=0)
    net(x)
    net(x)  # a second step of the same batch
    assert steps.time_steps() == 2 and steps.table()["0"].time_steps == 2
    steps.remove()
    timed = sl.SynOpsCounter(net, time_dim=1)  # the same data declared as [B, T, C]
    net(x)
    assert timed.samples == B and timed.time_steps() == 5 and timed.table()["0"].time_steps == 5


def test_time_dim_is_validated():
    net = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(TypeError, match="time_dim"):
        sl.SynOpsCounter(net, time_dim="1")
    with pytest.raises(ValueError, match="time_dim"):
        sl.SynOpsCounter(net, time_dim=-1)
    with pytest.raises(ValueError, match="different dims"):
        sl.SynOpsCounter(net, time_dim=0, batch_dim=0)
    counter = sl.SynOpsCounter(net, time_dim=2)
    with pytest.raises(ValueError, match="time_dim=2"):
        net(torch.ones(2, 4))
    counter.remove()


def test_budget_uses_the_real_time_steps():
    net = zoo.csnn("m")
    counter = sl.SynOpsCounter(net)
    net(zoo.spike_train((T, B, 1, 12, 12), seed=4))
    dt, budget = 1e-3, 2e5
    loss = sl.SynOpsLoss(counter, budget={"3": budget}, dt=dt)
    assert loss.targets()["3"] == pytest.approx(budget * dt * T)  # T steps, not T x B rows
    tokens = nn.Sequential(nn.Linear(4, 3))
    c2 = sl.SynOpsCounter(tokens, batch_dim=0)
    tokens(torch.ones(B, 5, 4))
    loss2 = sl.SynOpsLoss(c2, budget={"0": budget}, dt=dt)
    assert loss2.targets()["0"] == pytest.approx(budget * dt * 1)  # one step, 5 tokens


def test_snapshot_time_steps_average_over_batches():
    net = zoo.csnn("m")
    counter = sl.SynOpsCounter(net)
    net(zoo.spike_train((2, 2, 1, 12, 12)))  # T=2, B=2
    assert counter.snapshot().time_steps == 2
    counter.reset()
    functional.reset_net(net)
    net(zoo.spike_train((4, 1, 1, 12, 12)))  # T=4, B=1
    snap = counter.snapshot(accumulated=True)
    assert snap.samples == 3 and snap.time_steps == pytest.approx((2 * 2 + 4 * 1) / 3)
    assert snap.layers["0"].sample_steps == 2 * 2 + 4 * 1


# --------------------------------------------------------------------------- the paper estimate


def test_paper_estimate_is_rate_times_dense_and_its_error_shows():
    net = _tiny_if("m")  # half of the Linear's weights are zero
    counter = sl.SynOpsCounter(net)
    net(_TINY_X)
    table = counter.table()
    row = table["0"]
    # input rate: 3 spikes / (2 neurons x 4 steps); FLOPs per step: 4; T = 4 -> 0.375 x 4 x 4 = 6
    assert row.in_rate == 3 / 8
    assert row.synops_estimate == pytest.approx(6.0) and row.synops == 3
    assert row.estimate_error == pytest.approx(1.0)  # the zero weights are no synapses
    assert row.energy_paper == pytest.approx(0.9e-12 * 6) and row.energy == pytest.approx(0.9e-12 * 3)
    assert "Est. fr*T*FLOPs" in table.render("paper") and "Est. fr*T*FLOPs" in table.render("full")
    assert table.total.synops_estimate == pytest.approx(6.0)


def test_paper_estimate_is_exact_for_dense_weights_and_uses_macs_for_analog_input():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.add_(torch.sign(net[0].weight) * 0.1)  # no zero weights
    counter = sl.SynOpsCounter(net, batch_dim=0)
    spikes = zoo.spike_train((T, B, 6), seed=3)
    for t in range(T):
        net(spikes[t])
    table = counter.table()
    rate = float(spikes.mean())
    assert table["0"].in_rate == pytest.approx(rate)
    assert table["0"].synops_estimate == pytest.approx(rate * T * 6 * 4) == pytest.approx(table["0"].synops)
    assert table["2"].eff_macs > 0  # ReLU outputs are not spikes: the paper counts dense MACs
    assert table["2"].energy_paper == pytest.approx(4.6e-12 * T * 4 * 2)


class _LoopInside(nn.Module):
    """snntorch-style: [B, T, F] in, one Linear + Leaky call per step inside forward."""

    def __init__(self) -> None:
        super().__init__()
        import snntorch as snn

        self.fc = nn.Linear(6, 4)
        self.lif = snn.Leaky(0.9, init_hidden=True)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.lif(self.fc(xt)) for xt in x.unbind(1)])


class _LSTMHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.lstm(x)[0])  # the Linear sees [B, T, 4]


def _sinabs(squeeze: bool) -> nn.Module:
    sinabs = pytest.importorskip("sinabs.layers")
    neuron = sinabs.IAFSqueeze(batch_size=B) if squeeze else sinabs.IAF()
    return nn.Sequential(nn.Linear(6, 4), neuron, nn.Linear(4, 3))


@pytest.mark.parametrize("case", ["sinabs", "sinabs_squeeze", "snntorch_calls", "snntorch_inside", "lstm"])
def test_time_steps_are_learned_from_each_librarys_layout(case):
    steps = 5
    x = zoo.spike_train((B, steps, 6), seed=11)
    if case == "sinabs":
        net, run = _sinabs(False), lambda n: n(x)  # [B, T, ...]
    elif case == "sinabs_squeeze":
        net, run = _sinabs(True), lambda n: n(x.flatten(0, 1))  # [B*T, ...]
    elif case == "snntorch_calls":
        pytest.importorskip("snntorch")
        net = _LoopInside()
        net = nn.Sequential(net.fc, net.lif)
        run = lambda n: [n(x[:, t]) for t in range(steps)]  # noqa: E731
    elif case == "snntorch_inside":
        pytest.importorskip("snntorch")
        net, run = _LoopInside(), lambda n: n(x)
    else:
        net, run = _LSTMHead(), lambda n: n(x)
    counter = sl.SynOpsCounter(net)
    run(net)
    assert counter.samples == B and counter.time_steps() == steps
    assert all(counter.time_steps(n) == steps for n in counter.layer_names)
    assert counter.snapshot().time_steps == steps


@pytest.mark.parametrize("first", ["s", "m"])
def test_a_step_mode_set_after_attaching_is_read_at_each_call(first):
    from spikingjelly.activation_based import layer, neuron

    T, B = 5, 3
    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(20, 12, bias=False), neuron.IFNode(), layer.Linear(12, 4, bias=False),
                        neuron.IFNode())
    x = (torch.rand(T, B, 20, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    functional.set_step_mode(net, first)
    counter = sl.SynOpsCounter(net)
    functional.set_step_mode(net, "m" if first == "s" else "s")  # the usual SpikingJelly workflow
    functional.reset_net(net)
    if first == "s":
        net(x)
    else:
        for t in range(T):
            net(x[t])
    assert counter.samples == B and counter.time_steps() == T
    assert counter.synops(by_layer=True)["0"].item() == pytest.approx(float(x.sum()) * 12 / B)  # by hand


@pytest.mark.parametrize("train", [False, True])
def test_spikingjelly_dropout_after_an_average_pool_keeps_the_spike_events(train):
    from spikingjelly.activation_based import layer

    T, B = 5, 3
    x = (torch.rand(T, B, 2, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    net = nn.Sequential(layer.AvgPool2d(2, step_mode="m"), layer.Dropout(0.5, step_mode="m"),
                        layer.Flatten(step_mode="m"), layer.Linear(8, 3, bias=False, step_mode="m"))
    net.train(train)
    functional.reset_net(net)
    counter = sl.SynOpsCounter(net)
    seen = []
    net[3].register_forward_hook(lambda m, a, o: seen.append(a[0].detach()))
    net(x)
    row = counter.snapshot().per_layer()["3"]
    # by hand: a kept window sends its spikes, pooled value x 4 (its dropout scale 1/(1-p) undone), to 3 outputs
    events = float((seen[0] * 4 * (0.5 if train else 1.0)).sum()) * 3 / B
    assert row["synops"] == pytest.approx(events) and row["eff_acs"] == pytest.approx(events)
    assert row["eff_macs"] == 0


def test_a_sinabs_from_model_network_counts_its_spiking_model_only():
    sinabs = pytest.importorskip("sinabs")
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3, bias=False),
                        nn.ReLU())
    net = sinabs.from_model(ann, input_shape=(1, 8, 8), batch_size=2)
    x = (torch.rand(2 * 5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    counter = sl.SynOpsCounter(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.SynOpsWarning)  # the unrun source ANN is not named as a layer that did not run
        net(x)
        got = counter.synops(by_layer=True)
    assert sorted(got) == ["spiking_model.0", "spiking_model.3"]
    # by hand: each input spike reaches the conv's 4 x (taps that cover it) synapses, 10 = B x T rows over 2 samples
    fan = torch.nn.functional.conv_transpose2d(torch.ones(1, 4, 6, 6), (net.spiking_model[0].weight != 0).float())
    assert got["spiking_model.0"].item() == pytest.approx(float((x * fan).sum()) / 2)


@pytest.mark.parametrize("training", [False, True])
def test_a_drop_connect_linear_is_named_as_unsupported_not_counted_op_by_op(training):
    """SpikingJelly's DropConnectLinear samples its weights at every call (in eval it also runs
    F.linear(x ** 2, w ** 2)): its products were counted op by op, 60 for 30 in eval. It is named instead, and the
    layers around it keep their exact counts."""
    import warnings

    import torch.nn.functional as F
    from spikingjelly.activation_based import layer

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 6, bias=False)
            self.dc = layer.DropConnectLinear(6, 5, p=0.5, bias=False)
            self.w = nn.Parameter(torch.randn(4, 5))

        def forward(self, x):
            return F.linear(self.dc(self.fc(x)), self.w)

    torch.manual_seed(0)
    net = Net().train(training)
    x = (torch.rand(3, 6) < 0.5).float()
    with pytest.warns(sl.UnsupportedLayerWarning, match=r"dc \(DropConnectLinear"):
        counter = sl.SynOpsCounter(net)
    assert counter.unsupported == ["dc (DropConnectLinear: its weights are sampled anew at every call)"]
    seen = []
    hook = net.dc.register_forward_hook(lambda m, a, out: seen.append(out.detach().double()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.SynOpsWarning)
        net(x)
    hook.remove()
    rows = counter.synops(by_layer=True)
    assert set(rows) == {"fc", "linear"}
    assert rows["fc"].item() == pytest.approx(float((x.double() * (net.fc.weight != 0).sum(0)).sum()) / 3)
    want = float((seen[0].abs() * (net.w != 0).sum(0)).sum()) / 3
    assert rows["linear"].item() == pytest.approx(want, rel=1e-6)


def test_a_multi_step_model_fed_its_steps_in_chunks_counts_them_as_one_batch():
    """[T, B, ...] data in two calls of 1 and 3 steps: the multi-step layers read the samples in dim 1 (the second
    call raised "called with 3 samples (dim 0 of its input) after 1")."""
    from spikingjelly.activation_based import layer, neuron

    torch.manual_seed(0)
    T, B = 4, 3
    net = nn.Sequential(layer.Linear(6, 5, bias=False, step_mode="m"), neuron.IFNode(step_mode="m", v_threshold=0.2))
    x = (torch.rand(T, B, 6) < 0.5).float()
    want = float((x.double() * (net[0].weight != 0).sum(0)).sum()) / B
    counter = sl.SynOpsCounter(net)
    net(x[:1])
    net(x[1:])
    assert counter.synops(dtype=torch.float64).item() == pytest.approx(want, rel=1e-12)
    assert counter.time_steps("0") == T
