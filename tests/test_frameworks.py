"""SpikingJelly 2.0 / norse: the literal tables of synopsloss.frameworks, the model fixtures and SJ's SynOpCounter.

References are independent of the code under test: fan-outs by autograd through
0/1 weights (itself checked against a full Jacobian), SynOpCounter run live,
NeuroBench's and sinabs' neuron costs, and the libraries' own equations.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sj = pytest.importorskip("spikingjelly.activation_based")

import spikingjelly.activation_based.base  # noqa: E402,F401  (the tables name classes in these modules)
import spikingjelly.activation_based.layer as sjl  # noqa: E402
import spikingjelly.activation_based.neuron as sjn  # noqa: E402
from spikingjelly.activation_based import functional  # noqa: E402

import zoo  # noqa: E402
from sj_reference import sj_synops  # noqa: E402
from synopsloss import frameworks as fw  # noqa: E402

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.fixture(scope="module")
def norse():
    return pytest.importorskip("norse.torch")


# --------------------------------------------------------------------------- brute force


def _fanout(module: nn.Module, sample_shape: Tuple[int, ...], effective: bool = True) -> Tensor:
    """Each input neuron's number of (nonzero) weight taps: d sum(layer_w01(ones)) / d input, float64."""
    w = module.weight.detach().double()
    w01 = (w != 0).double() if effective else torch.ones_like(w)
    ones = torch.ones((1, *sample_shape), dtype=torch.float64, requires_grad=True)
    if isinstance(module, nn.Linear):
        out = F.linear(ones, w01)
    else:
        assert module.padding_mode == "zeros" and not isinstance(module.padding, str)
        nd = w.dim() - 2
        out = _CONV[nd](ones, w01, None, module.stride, module.padding, module.dilation, module.groups)
    (g,) = torch.autograd.grad(out.sum(), ones)
    return g[0]


def _sample_ndim(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.Linear) else module.weight.dim() - 1


def _capture(model: nn.Module) -> Tuple[List, List[Tuple[str, Tensor]]]:
    """Hooks that keep (name, input) of every Linear / Conv call (SJ layers included: they subclass them)."""
    calls: List[Tuple[str, Tensor]] = []
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(m.register_forward_hook(lambda mod, args, out, n=name: calls.append((n, args[0].detach()))))
    return handles, calls


def _brute(model: nn.Module, calls, effective: bool = True) -> Dict[str, Dict[str, float]]:
    """Per layer: synops of binary calls (sum of input x fan-out), and of all calls."""
    modules = dict(model.named_modules())
    out: Dict[str, Dict[str, float]] = {}
    for name, x in calls:
        m = modules[name]
        k = _sample_ndim(m)
        fan = _fanout(m, tuple(x.shape[-k:]), effective)
        s = float((x.double().reshape(-1, *x.shape[-k:]) * fan).sum())
        binary = bool(((x == 0) | (x == 1)).all())
        acc = out.setdefault(name, {"binary": 0.0, "all": 0.0, "binary_calls": 0, "calls": 0})
        acc["all"] += s
        acc["calls"] += 1
        if binary:
            acc["binary"] += s
            acc["binary_calls"] += 1
    return out


def test_fanout_brute_force_equals_jacobian_tap_count():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=1, groups=1)
    with torch.no_grad():
        conv.weight[0, 1] = 0.0
        conv.weight[2, 0, 1, 1] = 0.0
    shape = (2, 5, 6)
    jac = torch.autograd.functional.jacobian(lambda v: F.conv2d(v, conv.weight, None, 2, 1), torch.rand(1, *shape))
    taps = (jac != 0).reshape(-1, *shape).sum(0).double()
    assert torch.equal(_fanout(conv, shape), taps)


# --------------------------------------------------------------------------- (a) + (b): SynOpCounter vs brute force


@pytest.mark.parametrize("name", list(zoo.SJ_MODELS))
def test_synopcounter_per_layer_equals_binary_input_times_nonzero_fanout(name):
    build, make_input, samples = zoo.SJ_MODELS[name]
    model, x = build(), make_input()
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            assert torch.count_nonzero(m.weight) == m.weight.numel()  # no zero weights: dense = effective here
    handles, calls = _capture(model)
    try:
        res = sj_synops(model, x, samples=samples)
    finally:
        for h in handles:
            h.remove()
    assert res.total > 0 and set(res.per_op) <= set(dict(model.named_modules()))
    brute = _brute(model, calls)
    nontrivial = 0
    for layer, b in brute.items():
        sj_count = sum(res.per_op.get(layer, {}).values()) * samples
        # binary calls: exactly the spikes x nonzero fan-out; any other input (image, spike sums, means): 0
        assert sj_count == pytest.approx(b["binary"], abs=0.5), layer
        nontrivial += b["binary"] > 0
    assert nontrivial >= 3
    assert res.total == pytest.approx(sum(sum(o.values()) for o in res.per_op.values()))


def test_synopcounter_ignores_spike_sums_and_real_inputs_in_spikformer():
    model, x = zoo.spikformer(), zoo.image()
    handles, calls = _capture(model)
    try:
        res = sj_synops(model, x, samples=zoo.BATCH)
    finally:
        for h in handles:
            h.remove()
    brute = _brute(model, calls)
    # the image (real), residual sums of spikes (0/1/2) and the time-mean fed to the head are not "spikes"
    for layer in ("patch_embed.stages.0.conv_bn.block.0", "blocks.0.attn.qkv_conv_bn.0", "blocks.0.mlp.fc1.0", "head"):
        assert brute[layer]["binary_calls"] == 0 and brute[layer]["all"] > 0, layer
        assert layer not in res.per_op, layer


def test_synopcounter_counts_zero_weights():
    model = zoo.csnn("m")
    with torch.no_grad():
        model[3].weight[:, :2] = 0.0  # half of conv2's input channels pruned
        model[6].weight[:, ::3] = 0.0
    x = zoo.spike_train((zoo.T, zoo.BATCH, 1, 12, 12))
    handles, calls = _capture(model)
    try:
        res = sj_synops(model, x, samples=zoo.BATCH)
    finally:
        for h in handles:
            h.remove()
    dense, effective = _brute(model, calls, effective=False), _brute(model, calls, effective=True)
    for layer in ("3", "6"):
        sj_count = sum(res.per_op[layer].values()) * zoo.BATCH
        assert effective[layer]["binary"] < dense[layer]["binary"]
        assert sj_count == pytest.approx(dense[layer]["binary"], abs=0.5)


def test_synopcounter_counts_signed_spikes_and_spike_counts_as_zero():
    lin = nn.Linear(6, 4)
    signed = torch.tensor([[1.0, -1.0, 0.0, 1.0, 0.0, 0.0]])
    counts = torch.tensor([[2.0, 1.0, 0.0, 0.0, 1.0, 0.0]])
    spikes01 = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0, 0.0]])
    assert sj_synops(lin, signed, samples=1, reset=False).total == 0
    assert sj_synops(lin, counts, samples=1, reset=False).total == 0
    assert sj_synops(lin, spikes01, samples=1, reset=False).total == 3 * 4


def test_harness_reports_per_sample_over_all_time_steps():
    model = zoo.csnn("m")  # no batch norm: samples are independent
    one = zoo.spike_train((4, 1, 1, 12, 12), seed=3)
    two = torch.cat([one, one], dim=1)
    r1, r2 = sj_synops(model, one, samples=1), sj_synops(model, two, samples=2)
    assert r1.total > 0 and r2.total == pytest.approx(r1.total)
    assert sum(r2.raw["Global"].values()) == 2 * sum(r1.raw["Global"].values())
    # multi-step over T equals the sum of T single-step calls
    single = zoo.csnn("s")
    single.load_state_dict(model.state_dict())
    functional.reset_net(single)
    per_step = [sj_synops(single, one[t], samples=1, reset=False).total for t in range(one.shape[0])]
    assert sum(per_step) == pytest.approx(r1.total)


def test_spikformer_attention_matmuls_are_attributed_to_the_attention_module():
    model, x = zoo.spikformer(), zoo.image()
    res = sj_synops(model, x, samples=zoo.BATCH)
    bmm = [c for c in res.calls if c.op == "aten.bmm.default"]
    assert [c.module for c in bmm] == ["blocks.0.attn", "blocks.0.attn"]
    # SJ 2.0.0 computes (v @ k^T) @ q: [T*B*heads, Cph, L] @ [.., L, Cph], then [.., Cph, Cph] @ [.., Cph, L]
    assert [c.shapes for c in bmm] == [((8, 16, 64), (8, 64, 16)), ((8, 16, 16), (8, 16, 64))]
    assert res.per_op["blocks.0.attn"]["aten.bmm.default"] * zoo.BATCH == sum(c.value for c in bmm)
    # check both values against the spikes themselves
    qkv = {}
    h = model.blocks[0].attn.qkv_lif.register_forward_hook(lambda m, a, o: qkv.setdefault("s", o.detach()))
    functional.reset_net(model)
    with torch.no_grad():
        model(x)
    h.remove()
    s = qkv["s"]  # [T, B, 3C, L]
    T_, B_, C3, L = s.shape
    q, k, v = s.reshape(T_, B_, 3, 2, C3 // 6, L).flatten(2, 3).chunk(3, dim=2)
    assert bmm[0].value == int((v.double() @ k.double().transpose(-2, -1)).sum())  # 1 x 1 coincidences
    assert bmm[1].value == int(q.count_nonzero()) * (C3 // 6)  # spikes of q x rows of (v k^T)


@pytest.mark.parametrize("name", ["spikformer", "spike_driven_transformer", "qkformer", "csnn_multi_step"])
def test_torch_rules_count_sj_layers_through_their_mro(name):
    # SYNAPSE_TYPES says SJ layers need no rule of their own; with the samples given, the counter equals brute force
    import synopsloss as sl

    build, make_input, samples = zoo.SJ_MODELS[name]
    model, x = build(), make_input()
    handles, calls = _capture(model)
    counter = sl.SynOpsCounter(model, neurons=False, batch_size=samples)
    try:
        functional.reset_net(model)
        with torch.no_grad():
            model(x)
        ours = {k: float(v) for k, v in counter.synops(by_layer=True).items()}
    finally:
        counter.remove()
        for h in handles:
            h.remove()
    brute = _brute(model, calls)
    # the attention products (SpikingSelfAttention's two matmuls) are rows of their own: tests/test_transformers.py
    assert set(brute) <= set(ours) and all(".attn.matmul" in n for n in set(ours) - set(brute))
    for layer, b in brute.items():
        assert ours[layer] == pytest.approx(b["all"] / samples, rel=1e-6), layer


# --------------------------------------------------------------------------- (c) the tables resolve


def test_every_table_path_resolves_in_the_installed_versions(norse):
    for path, row in fw.NEURON_TYPES.items():
        assert fw.resolve(path) is not None, path
        assert row.path == path
    for path, row in fw.SYNAPSE_TYPES.items():
        cls = fw.resolve(path)
        assert cls is not None, path
        if row.rule_base is not None:
            assert issubclass(cls, fw.resolve(row.rule_base)), path


def test_norse_recurrent_weights_are_out_by_in_parameters(norse):
    rows = [r for r in fw.SYNAPSE_TYPES.values() if r.library == "norse" and r.weights and r.rule_base is None]
    assert len(rows) >= 10
    for row in rows:
        module = fw.resolve(row.path)(3, 4)  # input_size 3, hidden_size 4
        shapes = {"input_weights": (4, 3), "recurrent_weights": (4, 4)}
        for param, _, _ in row.weights:
            assert isinstance(getattr(module, param), nn.Parameter) and getattr(module, param).shape == shapes[param]


def test_every_exported_neuron_class_has_a_row(norse):
    from norse.torch.module.snn import SNN, SNNCell, SNNRecurrent, SNNRecurrentCell

    classes = [getattr(sjn, n) for n in dir(sjn) if isinstance(getattr(sjn, n), type)]
    classes = [c for c in classes if issubclass(c, nn.Module)]
    classes += [getattr(norse, n) for n in dir(norse) if isinstance(getattr(norse, n), type)
                and issubclass(getattr(norse, n), (SNN, SNNCell, SNNRecurrent, SNNRecurrentCell))]
    rows = {fw.resolve(p) for p in fw.NEURON_TYPES}
    missing = [c.__name__ for c in classes if not any(b in rows for b in c.__mro__)]
    assert not missing


@pytest.mark.parametrize("name", ["spikformer", "spike_driven_transformer", "qkformer", "csnn_multi_step"])
def test_every_zoo_neuron_has_a_row_with_a_known_cost(name):
    model = zoo.SJ_MODELS[name][0]()
    neurons = [m for m in model.modules() if isinstance(m, (sjn.BaseNode, sjn.SimpleBaseNode))]
    assert neurons
    for m in neurons:
        row = fw.find_neuron(m)
        assert row is not None and fw.resolve(row.path) is type(m)
        assert fw.neuron_ops(m) == 5  # LIFNode(decay_input=True, v_reset=0.0)


def test_norse_fixtures_neurons_have_rows(norse):
    for build in (zoo.norse_cell_loop, zoo.norse_sequence, zoo.norse_recurrent_loop):
        net = build()
        cells = [m for m in net.modules() if fw.find_neuron(m) is not None]
        assert cells and all(fw.neuron_ops(m) == 7 for m in cells)


def test_importing_the_tables_imports_neither_library():
    code = ("import sys, torch, synopsloss.frameworks as f; f.time_layout(torch.nn.Linear(2, 2)); "
            "f.find_neuron(torch.nn.ReLU()); assert f.resolve('norse.torch.LIFCell') is None; "
            "print('spikingjelly' in sys.modules, 'norse' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- neuron costs


def test_equal_dynamics_cost_equal_ops_across_libraries(norse):
    sinabs_layers = pytest.importorskip("sinabs.layers")
    from synopsloss.neurons import NEUROBENCH_NEURON_OPS, neuron_op_cost

    iaf = neuron_op_cost(sinabs_layers.IAF())
    assert fw.neuron_ops(sjn.IFNode()) == fw.neuron_ops(norse.IAFCell()) == fw.neuron_ops(sjn.SimpleIFNode()) == iaf
    leaky = NEUROBENCH_NEURON_OPS["Leaky"]["subtract"]  # beta * mem + x, compare, reset
    assert fw.neuron_ops(sjn.LIFNode(decay_input=False, v_reset=None)) == leaky
    lif_norm = neuron_op_cost(sinabs_layers.LIF(tau_mem=10.0))  # norm_input: x scaled by 1 - alpha
    assert fw.neuron_ops(sjn.LIFNode()) == fw.neuron_ops(norse.LIFBoxCell()) == lif_norm
    assert fw.neuron_ops(sjn.ParametricLIFNode()) == lif_norm
    assert fw.neuron_ops(sjn.CUBALIFNode()) == NEUROBENCH_NEURON_OPS["Synaptic"]["subtract"]


def test_neuron_costs_follow_their_parameters(norse):
    from norse.torch.functional.lif import LIFParameters, default_bio_parameters

    assert fw.neuron_ops(sjn.LIFNode(v_reset=-0.1)) == 6  # + leak target v_reset / tau
    assert fw.neuron_ops(sjn.LIFNode(v_reset=None)) == 5  # soft reset leaks to 0
    assert (fw.neuron_ops(sjn.KLIFNode()), fw.neuron_ops(sjn.KLIFNode(scale_reset=True))) == (7, 8)
    assert (fw.neuron_ops(sjn.QIFNode()), fw.neuron_ops(sjn.QIFNode(v_rest=0.0, v_c=0.0, v_reset=-0.1))) == (8, 7)
    assert fw.neuron_ops(sjn.EIFNode()) == 10
    izh = sjn.IzhikevichNode()
    assert fw.neuron_ops(izh) == 12  # a = b = 0: recovery only decays
    assert fw.neuron_ops(sjn.IzhikevichNode(a=0.5, b=0.1)) == 12 + 3 + 1
    assert fw.neuron_ops(sjn.LIAFNode(torch.relu, True)) == 7
    assert fw.neuron_ops(sjn.LIAFNode(torch.relu, False)) == 6
    assert fw.neuron_ops(sjn.TernaryLIFNode()) == 6 and fw.neuron_ops(sjn.TernaryIFNode()) == 4
    otttt = sjn.OTTTLIFNode()  # decay_input=False, soft reset
    assert (fw.neuron_ops(otttt.eval()), fw.neuron_ops(otttt.train())) == (4, 6)
    assert fw.neuron_ops(norse.LIFCell()) == 7
    assert fw.neuron_ops(norse.LIFCell(default_bio_parameters)) == 8  # v_leak = -65 mV
    assert fw.neuron_ops(norse.LIF(LIFParameters(v_leak=torch.tensor(0.1)))) == 8
    assert (fw.neuron_ops(norse.LICell()), fw.neuron_ops(norse.LSNNCell()), fw.neuron_ops(norse.LIFAdExCell())) == (5, 11, 18)
    assert (fw.neuron_ops(norse.LIFExCell()), fw.neuron_ops(norse.LIFRecurrentCell(2, 3))) == (12, 7)
    assert fw.neuron_ops(sjn.PSN(T=2)) is None and fw.neuron_ops(norse.LIFRefracCell()) is None


def test_a_subclass_that_changes_the_update_has_unknown_cost():
    class MyLIF(sjn.LIFNode):
        def single_step_functional_forward(self, inputs, states, **kwargs):
            return super().single_step_functional_forward(inputs, states, **kwargs)

    class Renamed(sjn.LIFNode):
        pass

    assert fw.find_neuron(MyLIF()) is fw.NEURON_TYPES["spikingjelly.activation_based.neuron.LIFNode"]
    assert fw.neuron_ops(MyLIF()) is None and fw.neuron_ops(Renamed()) == 5


def test_spikes_and_membrane_are_read_where_the_rows_say(norse):
    x = torch.tensor([[0.4, 3.0, -1.0]])
    lif = sjn.LIFNode(step_mode="s")
    out = lif(x)
    row = fw.find_neuron(lif)
    assert torch.equal(fw.spikes(row, out), out) and torch.equal(out, torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.equal(fw.membrane(row, lif, out), torch.tensor([[0.2, 0.0, -0.5]]))  # v + (x - v) / 2, hard reset
    cell = norse.LIFCell()
    res = cell(torch.tensor([[50.0, 0.0]]))
    nrow = fw.find_neuron(cell)
    assert torch.equal(fw.spikes(nrow, res), res[0])
    assert torch.equal(fw.membrane(nrow, cell, res), res[1].v)
    with pytest.raises(ValueError, match="LIFCell"):
        fw.spikes(nrow, torch.zeros(2))


# --------------------------------------------------------------------------- synapse layouts


def test_sj_multi_step_layers_are_their_torch_layer_on_time_times_batch_rows():
    torch.manual_seed(0)
    conv = sjl.Conv2d(2, 3, 3, padding=1, step_mode="m")
    lin = sjl.Linear(5, 4, step_mode="m")
    x = torch.rand(3, 2, 2, 6, 6)
    ref = nn.Conv2d.forward(conv, x.flatten(0, 1)).reshape(3, 2, 3, 6, 6)
    assert torch.allclose(conv(x), ref)
    y = torch.rand(3, 2, 5)
    assert torch.allclose(lin(y), (y.reshape(6, 5) @ lin.weight.T + lin.bias).reshape(3, 2, 4))
    for path, cls in (("Conv2d", nn.Conv2d), ("Linear", nn.Linear), ("WSConv2d", nn.Conv2d)):
        assert fw.SYNAPSE_TYPES["spikingjelly.activation_based.layer." + path].rule_base == f"torch.nn.{cls.__name__}"


def test_ws_conv_uses_standardised_weights_so_zero_weights_are_not_zero_synapses():
    torch.manual_seed(0)
    ws = sjl.WSConv2d(2, 3, 3)
    with torch.no_grad():
        ws.weight[0, 0] = 0.0
    assert torch.count_nonzero(ws.get_weight()[0, 0]) == 9
    x = torch.rand(1, 2, 5, 5)
    assert torch.allclose(ws(x), F.conv2d(x, ws.get_weight(), ws.bias))
    assert "get_weight()" in fw.SYNAPSE_TYPES["spikingjelly.activation_based.layer.WSConv2d"].weights[0][0]


def test_norse_recurrent_weights_multiply_the_input_and_the_previous_spikes(norse):
    from norse.torch.functional.lif import LIFParameters

    torch.manual_seed(0)
    p = LIFParameters()
    keep = 1 - 1e-3 * float(p.tau_syn_inv)  # i_decayed = keep * i_jump
    seq = norse.LIFRecurrent(6, 5, record_states=True)
    with torch.no_grad():
        seq.input_weights.mul_(15.0)
        seq.recurrent_weights.mul_(15.0)
    x = zoo.spike_train((zoo.NORSE_T, 2, 6), seed=4, rate=0.5)
    out = seq(x)
    z, states = out
    assert z.sum() > 0
    feeds = fw.recurrent_inputs(seq, (x,), out)
    assert torch.equal(feeds["input_weights"], x)
    i_prev = torch.zeros(2, 5)
    for t in range(zoo.NORSE_T):
        i_jump = states.i[t] / keep
        syn = F.linear(x[t], seq.input_weights) + F.linear(feeds["recurrent_weights"][t], seq.recurrent_weights)
        assert torch.allclose(i_jump - i_prev, syn, atol=1e-4)
        i_prev = states.i[t]
    assert torch.equal(feeds["recurrent_weights"][1:], z[:-1])
    # the cell: the state passed in carries the previous spikes
    cell = norse.LIFRecurrentCell(6, 5)
    cell.load_state_dict(seq.state_dict())
    s0 = type(states)(z=z[2], v=states.v[2], i=states.i[2])
    res = cell(x[3], s0)
    feeds = fw.recurrent_inputs(cell, (x[3], s0), res)
    syn = F.linear(x[3], cell.input_weights) + F.linear(feeds["recurrent_weights"], cell.recurrent_weights)
    assert torch.equal(feeds["recurrent_weights"], z[2])
    assert torch.allclose(res[1].i / keep - states.i[2], syn, atol=1e-4)


def test_norse_lconv2d_is_a_2d_convolution_per_time_step(norse):
    torch.manual_seed(0)
    conv = norse.LConv2d(2, 3, 3, padding=1)
    x = torch.rand(4, 2, 2, 5, 5)
    ref = F.conv2d(x.flatten(0, 1), conv.weight[..., 0], None, 1, 1).reshape(4, 2, 3, 5, 5)
    assert torch.allclose(conv(x), ref, atol=1e-6)
    assert fw.SYNAPSE_TYPES["norse.torch.LConv2d"].rule_base == "torch.nn.Conv3d"


# --------------------------------------------------------------------------- time layout


def _probe_inputs(model: nn.Module, probes) -> Tuple[List, Dict[str, List[Tensor]]]:
    seen: Dict[str, List[Tensor]] = {}
    modules = dict(model.named_modules())
    hs = [modules[n].register_forward_hook(lambda m, a, o, n=n: seen.setdefault(n, []).append(a[0])) for n in probes]
    return hs, seen


@pytest.mark.parametrize("five_d", [False, True])
def test_spikformer_probes_give_samples_and_steps_whatever_the_input_layout(five_d):
    model = zoo.spikformer()
    lay = fw.time_layout(model)
    assert lay["time_first"] and lay["batch_dim"] == 1 and lay["root_batch_dim"] is None
    assert "patch_embed.stages.0.conv_bn.block" in lay["probes"]
    assert lay["libraries"] == ("spikingjelly",)
    x = zoo.image()
    if five_d:
        x = x.unsqueeze(0).repeat(zoo.T, 1, 1, 1, 1)
    hs, seen = _probe_inputs(model, lay["probes"])
    functional.reset_net(model)
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    assert len(seen) >= 10
    for name, xs in seen.items():
        for xi in xs:
            assert fw.probe_sizes(lay["probes"][name], xi) == (zoo.BATCH, zoo.T), name


def test_children_of_a_folding_container_are_not_probes():
    net = nn.Sequential(sjl.SeqToANNContainer(sjl.Conv2d(1, 2, 3), nn.ReLU()), sjn.LIFNode(step_mode="m"))
    lay = fw.time_layout(net)
    assert set(lay["probes"]) == {"0", "1"}
    hs, seen = _probe_inputs(net, lay["probes"])
    net(torch.rand(3, 2, 1, 5, 5))
    for h in hs:
        h.remove()
    assert {fw.probe_sizes(lay["probes"][n], seen[n][0]) for n in seen} == {(2, 3)}
    assert net[0][0].step_mode == "s"  # called on [T*B, ...]: its own layout would say 6 samples


def test_single_step_and_time_last_layouts():
    net = zoo.csnn("s")
    lay = fw.time_layout(net)
    assert not lay["time_first"] and lay["batch_dim"] == 0
    assert set(lay["probes"].values()) == {("per_step", 0, None)}
    assert fw.probe_sizes(lay["probes"]["0"], torch.zeros(2, 1, 12, 12)) == (2, 1)
    tl = nn.Sequential(sjl.TLastMultiStepContainer(sjn.IFNode()))
    lay = fw.time_layout(tl)
    assert lay["probes"]["0"] == ("time_last", 0, -1) and lay["batch_dim"] == 0
    assert fw.probe_sizes(lay["probes"]["0"], torch.zeros(2, 7, 4)) == (2, 4)
    both = nn.Sequential(sjl.TLastMultiStepContainer(sjn.IFNode()), sjn.IFNode(step_mode="m"))
    assert fw.time_layout(both)["batch_dim"] is None
    with pytest.raises(ValueError, match="batch_size="):
        fw.probe_sizes(("time_first", 1, 0), torch.zeros(3))
    assert fw.time_layout(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) is None


def test_norse_sequence_and_cell_loop_layouts(norse):
    seq = zoo.norse_sequence()
    lay = fw.time_layout(seq)
    assert lay["time_first"] and lay["batch_dim"] == 1 and lay["libraries"] == ("norse",)
    x = zoo.spike_train((zoo.NORSE_T, 2, 16))
    hs, seen = _probe_inputs(seq, lay["probes"])
    out, _ = seq(x)
    for h in hs:
        h.remove()
    assert out.sum() > 0 and set(seen) == {"0", "1", "2", "3"}
    assert {fw.probe_sizes(lay["probes"][n], xs[0]) for n, xs in seen.items()} == {(2, zoo.NORSE_T)}
    loop = zoo.norse_cell_loop()
    lay = fw.time_layout(loop)
    assert not lay["time_first"] and set(lay["probes"]) == {"lif1", "lif2"}
    hs, seen = _probe_inputs(loop, lay["probes"])
    assert loop(x).sum() > 0
    for h in hs:
        h.remove()
    assert all(len(xs) == zoo.NORSE_T for xs in seen.values())
    assert {fw.probe_sizes(lay["probes"][n], xi) for n, xs in seen.items() for xi in xs} == {(2, 1)}


def test_zoo_forwards_are_fast():
    import time

    for name, (build, make_input, _) in zoo.SJ_MODELS.items():
        model, x = build(), make_input()
        functional.reset_net(model)
        t0 = time.perf_counter()
        with torch.no_grad():
            model(x)
        assert time.perf_counter() - t0 < 2.0, name
