"""Op-level counting inside SynOpsCounter (synopsloss.opscope), checked against independent references.

References: the module counter on a module twin, Jacobian tap counts and explicit loops over every
term (tests/op_reference.py, no synopsloss inside), attention maths re-run by hand from the
module's own weights, and closed-form gradients.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import synopsloss as sl
from synopsloss.ops import UncountableOpError

from op_reference import attention_terms, in_pm1, matmul_terms, weight_op_counts

KEYS = ("dense", "eff_macs", "eff_acs", "synops")


def spikes(*shape: int, seed: int = 0, rate: float = 0.4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < rate).float()


def pruned_(w: torch.Tensor, seed: int, frac: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w.mul_((torch.rand(w.shape, generator=g) >= frac).to(w.dtype))


def layers(counter: sl.SynOpsCounter) -> Dict[str, sl.LayerStats]:
    return counter.snapshot().layers


def assert_row(stats: sl.LayerStats, ref: Dict[str, float], rel: float = 1e-9) -> None:
    """``ref`` from op_reference (dense / effective / synops / spiking): the row's sums agree."""
    assert stats.dense == pytest.approx(ref["dense"], rel=rel)
    assert stats.eff_acs + stats.eff_macs == pytest.approx(ref["effective"], rel=rel, abs=1e-9)
    assert stats.synops == pytest.approx(ref["synops"], rel=1e-5, abs=1e-9)
    if "spiking" in ref:
        assert (stats.eff_macs == 0) if ref["spiking"] else (stats.eff_acs == 0)


# ----------------------------------------------------------------------------- functional twin


class ModuleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.deconv = nn.ConvTranspose2d(4, 3, 2, stride=2)
        self.conv1 = nn.Conv1d(3, 2, 3, dilation=2, bias=False)
        self.fc = nn.Linear(2 * 140, 6)
        self.fc2 = nn.Linear(6, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        h = F.relu(self.deconv(h))
        h = F.relu(self.conv1(h.flatten(2)))
        h = F.relu(self.fc(h.flatten(1)))
        return self.fc2(h.unsqueeze(1)).squeeze(1)


class FunctionalNet(nn.Module):
    """The same network with its weights as parameters of the root, applied by functional calls only."""

    def __init__(self, twin: ModuleNet) -> None:
        super().__init__()
        self.w_conv = nn.Parameter(twin.conv.weight.detach().clone())
        self.w_deconv = nn.Parameter(twin.deconv.weight.detach().clone())
        self.b_deconv = nn.Parameter(twin.deconv.bias.detach().clone())
        self.w_conv1 = nn.Parameter(twin.conv1.weight.detach().clone())
        self.w_fc = nn.Parameter(twin.fc.weight.detach().clone())
        self.b_fc = nn.Parameter(twin.fc.bias.detach().clone())
        self.w_fc2 = nn.Parameter(twin.fc2.weight.detach().t().clone())  # [6, 4]: used as h @ w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.conv2d(x, self.w_conv, padding=1))
        h = F.relu(F.conv_transpose2d(h, self.w_deconv, self.b_deconv, stride=2))
        h = F.relu(F.conv1d(h.flatten(2), self.w_conv1, dilation=2))
        h = F.relu(F.linear(h.flatten(1), self.w_fc, self.b_fc))
        return (h.unsqueeze(1) @ self.w_fc2).squeeze(1)


def test_a_functional_model_equals_its_module_twin_layer_by_layer():
    torch.manual_seed(0)
    twin = ModuleNet()
    for i, m in enumerate((twin.conv, twin.deconv, twin.conv1, twin.fc, twin.fc2)):
        pruned_(m.weight, seed=i)
    func = FunctionalNet(twin)
    c_mod = sl.SynOpsCounter(twin, neurons=False)
    c_fun = sl.SynOpsCounter(func, neurons=False)
    x1, x2 = spikes(3, 2, 6, 6, seed=1).requires_grad_(), spikes(3, 2, 6, 6, seed=1).requires_grad_()
    assert torch.allclose(twin(x1), func(x2), atol=1e-5)
    mod, fun = layers(c_mod), layers(c_fun)
    assert list(fun) == ["conv2d", "conv_transpose2d", "conv1d", "linear", "matmul"]
    assert [s.type for s in fun.values()] == list(fun)
    assert all(s.kind == "synaptic" for s in fun.values())
    for (mname, m), (fname, f) in zip(mod.items(), fun.items()):
        for k in KEYS + ("input_sum", "input_nonzero"):
            assert getattr(f, k) == pytest.approx(getattr(m, k), rel=1e-6), (mname, fname, k)
        assert (f.rows, f.in_shape, f.calls) == (m.rows, m.in_shape, m.calls), (mname, fname)
    # differentiable the same way: d synops / d input
    (g_mod,) = torch.autograd.grad(c_mod.synops(), x1)
    (g_fun,) = torch.autograd.grad(c_fun.synops(), x2)
    assert torch.allclose(g_mod, g_fun)
    assert g_mod.abs().sum() > 0


# ----------------------------------------------------------------------------- attention by hand


def mha_by_hand(mha: nn.MultiheadAttention, x: torch.Tensor, need_weights: bool) -> Dict[str, Dict[str, float]]:
    """Brute-force counts of nn.MultiheadAttention(x, x, x) (batch_first, no mask, dropout 0), its maths
    re-run from the module's weights as F.multi_head_attention_forward does."""
    B, L, E = x.shape
    H = mha.num_heads
    hd = E // H
    x = x.detach().double()
    w_in, b_in = mha.in_proj_weight.detach().double(), mha.in_proj_bias.detach().double()
    rows = x.reshape(B * L, E)
    qkv = rows @ w_in.T + b_in

    def heads(t: torch.Tensor) -> torch.Tensor:  # [B*L, E] -> [B*H, L, hd]
        return t.reshape(B, L, H, hd).permute(0, 2, 1, 3).reshape(B * H, L, hd)

    q, k, v = (heads(t) for t in qkv.chunk(3, -1))
    out: Dict[str, Dict[str, float]] = {}
    out["in"] = weight_op_counts(lambda a, w: F.linear(a, w), rows, w_in, 1)
    if need_weights:
        qs = q * (1.0 / math.sqrt(hd))
        attn = torch.softmax(qs @ k.transpose(-2, -1), -1)
        # q @ k^T is counted on the unscaled q, as on the need_weights=False (sdpa) path
        out["qk"] = {**matmul_terms(q, k.transpose(-2, -1)), "spiking": in_pm1(q) or in_pm1(k)}
        out["av"] = {**matmul_terms(attn, v), "spiking": in_pm1(attn) or in_pm1(v)}
    else:
        ref = attention_terms(q, k, v)
        out["qk"], out["av"] = ref["sdpa.qk"], ref["sdpa.av"]
        attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(hd), -1)
    o = (attn @ v).reshape(B, H, L, hd).permute(0, 2, 1, 3).reshape(B * L, E)
    out["out"] = weight_op_counts(lambda a, w: F.linear(a, w), o, mha.out_proj.weight.detach().double(), 1)
    out["attn_out"] = o @ mha.out_proj.weight.detach().double().T + mha.out_proj.bias.detach().double()
    return out


class Wrapped(nn.Module):
    def __init__(self, E: int = 6, H: int = 2, need_weights: bool = True) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(E, H, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=self.need_weights)[0]


@pytest.mark.parametrize("need_weights", [True, False], ids=["need_weights", "sdpa"])
def test_multihead_attention_counts_projections_and_products_like_brute_force(need_weights):
    torch.manual_seed(1)
    net = Wrapped(need_weights=need_weights)
    pruned_(net.attn.in_proj_weight, seed=3)
    pruned_(net.attn.out_proj.weight, seed=4)
    counter = sl.SynOpsCounter(net, batch_dim=0, neurons=False)
    x = spikes(2, 3, 6, seed=5)
    y = net(x)
    ref = mha_by_hand(net.attn, x, need_weights)
    assert torch.allclose(y.reshape(-1, 6).double(), ref["attn_out"], atol=1e-5)  # the hand maths is the module's
    got = layers(counter)
    prod = ("bmm", "bmm.1") if need_weights else ("sdpa.qk", "sdpa.av")
    names = ["attn.linear", f"attn.{prod[0]}", f"attn.{prod[1]}", "attn.out_proj"]
    assert list(got) == names
    assert_row(got["attn.linear"], ref["in"])
    assert_row(got[names[1]], ref["qk"])
    assert_row(got[names[2]], ref["av"])
    assert_row(got["attn.out_proj"], ref["out"])
    assert got[names[1]].kind == got[names[2]].kind == "activation product"
    assert got["attn.out_proj"].type == "NonDynamicallyQuantizableLinear"  # never called, counted as used
    assert got[names[1]].rows == 2 * 2  # batch x heads, not tokens


def test_transformer_encoder_layer_in_eval_is_counted_not_fused():
    torch.manual_seed(2)
    layer = nn.TransformerEncoderLayer(6, 2, dim_feedforward=8, dropout=0.0, batch_first=True).eval()
    pruned_(layer.linear1.weight, seed=6)
    counter = sl.SynOpsCounter(layer, batch_dim=0, neurons=False)
    x = spikes(2, 4, 6, seed=7)
    with torch.no_grad():  # the conditions of the fused fast path
        y = layer(x)
    got = layers(counter)
    assert list(got) == ["self_attn.linear", "self_attn.sdpa.qk", "self_attn.sdpa.av", "self_attn.out_proj",
                         "linear1", "linear2"]
    ref = mha_by_hand(layer.self_attn, x, need_weights=False)
    for name, key in (("self_attn.linear", "in"), ("self_attn.sdpa.qk", "qk"), ("self_attn.sdpa.av", "av"),
                      ("self_attn.out_proj", "out")):
        assert_row(got[name], ref[key], rel=1e-6)
    def norm(n: nn.LayerNorm, v: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(v, (6,), n.weight.double(), n.bias.double(), n.eps)

    h = norm(layer.norm1, x.double().reshape(-1, 6) + ref["attn_out"])
    assert_row(got["linear1"], weight_op_counts(lambda a, w: F.linear(a, w), h, layer.linear1.weight.double(), 1),
               rel=1e-6)
    h2 = F.relu(F.linear(h, layer.linear1.weight.double(), layer.linear1.bias.double()))
    assert_row(got["linear2"], weight_op_counts(lambda a, w: F.linear(a, w), h2, layer.linear2.weight.double(), 1),
               rel=1e-6)
    out = norm(layer.norm2, h + F.linear(h2, layer.linear2.weight.double(), layer.linear2.bias.double()))
    assert torch.allclose(y.double().reshape(-1, 6), out, atol=1e-4)


# ----------------------------------------------------------------------------- the weight actually used


class MaskedLinear(nn.Linear):
    """Hand-rolled pruning: the forward multiplies the weight by a mask buffer."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", (torch.arange(self.weight.numel()).reshape(self.weight.shape) % 3 != 0).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class FakeQuantConv(nn.Conv2d):
    """QAT: the forward convolves with a fake-quantised weight (small weights round to 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.fake_quantize_per_tensor_affine(self.weight, 0.1, 0, -8, 7)
        return self._conv_forward(x, w, self.bias)


def test_masked_and_fake_quantised_weights_are_counted_as_the_op_received_them():
    torch.manual_seed(3)
    net = nn.Sequential(FakeQuantConv(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), MaskedLinear(3 * 16, 5))
    counter = sl.SynOpsCounter(net, neurons=False)
    x = spikes(2, 2, 4, 4, seed=8)
    net(x)
    got = layers(counter)
    assert list(got) == ["0", "3"]  # the modules' own rows
    assert (got["0"].type, got["3"].type) == ("FakeQuantConv", "MaskedLinear")
    wq = torch.fake_quantize_per_tensor_affine(net[0].weight.detach(), 0.1, 0, -8, 7)
    assert (wq == 0).any() and not (net[0].weight == 0).any()  # the quantised weight has zeros the raw one lacks
    conv = lambda a, w: F.conv2d(a, w, padding=1)  # noqa: E731
    assert_row(got["0"], weight_op_counts(conv, x, wq, 3))
    h = F.relu(F.conv2d(x, wq, net[0].bias, padding=1)).flatten(1)
    assert_row(got["3"], weight_op_counts(lambda a, w: F.linear(a, w), h, net[3].weight.detach() * net[3].mask, 1))
    # module hooks alone count the raw .weight: more effective ops
    counter.remove()
    plain = sl.SynOpsCounter(net, neurons=False, ops="none")
    net(x)
    assert layers(plain)["3"].eff_macs > got["3"].eff_macs


class DerivedMatmul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4))
        self.register_buffer("mask", (torch.rand(5, 4) > 0.3).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.w * self.mask).t()  # x [B, 4]: no batch dims tell the weight apart


def test_a_derived_weight_in_a_2d_matmul_is_a_weight_with_and_without_autograd():
    torch.manual_seed(4)
    net = DerivedMatmul()
    counter = sl.SynOpsCounter(net, neurons=False)
    x = spikes(3, 4, seed=9)
    net(x)
    (row,) = layers(counter).values()
    assert (row.name, row.kind, row.rows) == ("matmul", "synaptic", 3)
    w = (net.w * net.mask).detach()
    assert_row(row, weight_op_counts(lambda a, m: F.linear(a, m), x, w, 1))
    counter.reset()
    with torch.no_grad():
        net(x)  # no graph: the mode followed w * mask and its transpose, made of a parameter and a buffer
    (row,) = layers(counter).values()
    assert (row.name, row.kind, row.rows) == ("matmul", "synaptic", 3)
    assert_row(row, weight_op_counts(lambda a, m: F.linear(a, m), x, w, 1))


# ----------------------------------------------------------------------------- never a silent zero


def read_warnings(counter: sl.SynOpsCounter) -> List[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counter.snapshot()
    return [str(w.message) for w in caught]


def test_a_layer_replaced_after_attach_is_named_when_counts_are_read():
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    counter = sl.SynOpsCounter(net, neurons=False)
    net[2] = nn.Linear(2, 2)
    net(spikes(2, 3))
    msgs = read_warnings(counter)
    assert any("'2'" in m and "replaced after the counter attached" in m for m in msgs), msgs


class CallsForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc.forward(x))  # skips fc's hooks


def test_a_layer_whose_forward_is_called_directly_is_named_when_counts_are_read():
    net = CallsForward()
    counter = sl.SynOpsCounter(net, neurons=False)
    net(spikes(2, 3))
    msgs = read_warnings(counter)
    assert any("'fc'" in m and "layer.forward(x)" in m for m in msgs), msgs
    assert "'out'" not in " ".join(msgs)


def test_a_submodule_compiled_before_attach_is_named_at_attach():
    net = CallsForward()
    net.out = torch.compile(net.out, backend="eager")  # wraps only; never run here
    with pytest.warns(sl.SynOpsWarning, match=r"'out' were compiled with torch.compile before the counter attached"):
        sl.SynOpsCounter(net, neurons=False).remove()


class ElementwiseGate(nn.Module):
    """A weight applied by an op that is no synapse (an elementwise product passed to a call)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.g = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mul(self.fc(x), self.g)


class BilinearMix(nn.Module):
    """A weight applied by an op that cannot be counted (F.bilinear)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.bilinear(x, x, self.w)


def test_weights_applied_by_uncounted_ops_are_named_with_the_module_and_op():
    net = nn.Sequential(ElementwiseGate(), BilinearMix())
    counter = sl.SynOpsCounter(net, neurons=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net(spikes(2, 4))
        net(spikes(2, 4))  # warned once per module and op
    flagged = [str(w.message) for w in caught if issubclass(w.category, sl.UnsupportedLayerWarning)]
    assert len(flagged) == 1 and "'1'" in flagged[0] and "bilinear" in flagged[0] and "NOT counted" in flagged[0]
    msgs = read_warnings(counter)
    assert any("0 (ElementwiseGate)" in m and "1 (BilinearMix)" in m and "NOT included" in m for m in msgs), msgs
    assert list(layers(counter)) == ["0.fc"]  # the Linear inside the gate is counted, once
    counter.remove()
    strict = sl.SynOpsCounter(net, neurons=False, strict=True)
    with pytest.raises(UncountableOpError, match=r"module '1' ran .*bilinear"):
        net(spikes(2, 4))
    strict.remove()
    strict = sl.SynOpsCounter(nn.Sequential(ElementwiseGate()), neurons=False, strict=True)
    strict.model(spikes(2, 4))
    with pytest.raises(TypeError, match=r"0 \(ElementwiseGate\)"):
        strict.snapshot()


def test_a_weight_used_only_in_arithmetic_is_named_at_attach_as_before():
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w

    with pytest.warns(sl.UnsupportedLayerWarning, match=r"1 \(Scale\)"):
        counter = sl.SynOpsCounter(nn.Sequential(nn.Linear(3, 3), Scale()))
    assert not counter._scope.active  # nothing to count op by op: no frame, no cost


# ----------------------------------------------------------------------------- products and gradients


def spike(h: torch.Tensor) -> torch.Tensor:
    """Spikes (h > 0) with a straight-through gradient: values exactly 0 / 1."""
    return (h > 0).to(h.dtype) + (h - h.detach())


class SpikeAttention(nn.Module):
    """q, k, v projections as child modules, then two spike products in its own forward."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.kept: list = []  # (q, k, v) of each call, for the references

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (spike(f(x)) for f in (self.q, self.k, self.v))
        self.kept.append((q, k, v))
        a = q @ k.transpose(-2, -1)
        return a @ v


def test_products_count_by_hand_and_backpropagate_to_both_operands():
    torch.manual_seed(5)
    net = nn.Sequential(SpikeAttention())
    counter = sl.SynOpsCounter(net, batch_size=2, neurons=False)
    x = spikes(2, 5, 4, seed=10)
    net(x)
    ((q, k, v),) = net[0].kept
    for t in (q, k, v):
        t.retain_grad()
    got = layers(counter)
    assert list(got) == ["0.q", "0.k", "0.v", "0.matmul", "0.matmul.1"]  # q/k/v once each (module hooks)
    a = (q @ k.transpose(-2, -1)).detach()
    assert_row(got["0.matmul"], {**matmul_terms(q, k.transpose(-2, -1)), "spiking": True})
    assert_row(got["0.matmul.1"], {**matmul_terms(a, v), "spiking": True})
    # hand formula: S = sum_{b,m,c,n} |q[b,m,c]| |k[b,n,c]|; dS/dq = s(q) * sum_n |k[b,n,c]|, s = +1 at 0
    counter.synops(by_layer=True)["0.matmul"].backward()
    s = lambda t: torch.where(t < 0, -1.0, 1.0)  # noqa: E731
    want_q = s(q) * k.detach().abs().sum(1, keepdim=True) / 2  # per sample: / batch
    want_k = s(k) * q.detach().abs().sum(1, keepdim=True) / 2
    assert torch.allclose(q.grad, want_q) and torch.allclose(k.grad, want_k)


def test_attention_synops_backpropagate_to_the_projection_weights():
    torch.manual_seed(6)
    net = Wrapped(need_weights=False)
    counter = sl.SynOpsCounter(net, batch_dim=0, neurons=False)
    net(spikes(2, 3, 6, seed=11))
    per = counter.synops(by_layer=True)
    per["attn.sdpa.qk"].backward()
    g = net.attn.in_proj_weight.grad
    assert g is not None and torch.isfinite(g).all()
    assert g[:12].abs().sum() > 0  # q and k rows of the in-projection get a gradient
    assert g[12:].abs().sum() == 0  # v does not take part in q @ k^T


# ----------------------------------------------------------------------------- options and mechanics


def test_ops_none_leaves_attention_uncounted_and_says_so_auto_counts_it():
    net = Wrapped()
    with pytest.warns(sl.UnsupportedLayerWarning, match=r"attn \(MultiheadAttention\)"):
        none = sl.SynOpsCounter(net, batch_dim=0, neurons=False, ops="none")
    net(spikes(2, 3, 6))
    with pytest.raises(RuntimeError, match="none of its counted layers"):  # the model ran, nothing was counted
        none.snapshot()
    none.remove()
    auto = sl.SynOpsCounter(net, batch_dim=0, neurons=False)
    assert auto.unsupported == []
    net(spikes(2, 3, 6))
    assert "attn.bmm" in layers(auto) and "attn.bmm" in auto.layer_names


def test_ops_all_counts_the_whole_forward_with_the_same_module_rows():
    class Root(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(x)
            return h @ h.transpose(-2, -1)  # the root's own product

    torch.manual_seed(7)
    net = Root()
    x = spikes(2, 5, 4, seed=12)
    auto = sl.SynOpsCounter(net, batch_size=2, neurons=False)
    every = sl.SynOpsCounter(net, batch_size=2, neurons=False, ops="all")
    net(x)
    a, e = layers(auto), layers(every)
    assert list(a) == list(e) == ["fc", "matmul"]
    for name in a:
        for k in KEYS:
            assert getattr(a[name], k) == pytest.approx(getattr(e[name], k))
    h = net.fc(x).detach()
    assert_row(e["matmul"], matmul_terms(h, h.transpose(-2, -1)))


@pytest.mark.parametrize("bad, err", [("some", ValueError), (True, TypeError)])
def test_bad_ops_value_is_refused(bad, err):
    with pytest.raises(err, match="ops must be one of"):
        sl.SynOpsCounter(nn.Linear(2, 2), ops=bad)


def test_a_plain_module_model_gets_no_op_level_hooks():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    auto = sl.SynOpsCounter(net, neurons=False)
    hooks_auto = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())
    auto.remove()
    none = sl.SynOpsCounter(net, neurons=False, ops="none")
    hooks_none = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())
    assert not auto._scope.active and hooks_auto == hooks_none
    none.remove()


class Raises(nn.Module):
    fail = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ x.transpose(-2, -1)
        if self.fail:
            raise RuntimeError("boom")
        return y


def test_an_exception_inside_a_scoped_forward_pops_the_mode():
    net = nn.Sequential(nn.Linear(3, 3), Raises())
    counter = sl.SynOpsCounter(net, batch_size=1, neurons=False)
    depth = torch._C._len_torch_function_stack()
    with pytest.raises(RuntimeError, match="boom"):
        net(torch.ones(1, 2, 3))
    assert torch._C._len_torch_function_stack() == depth and not counter._scope._stack
    counter.reset()
    net[1].fail = False
    net(torch.ones(1, 2, 3))  # counting works again
    assert "1.matmul" in layers(counter)


def test_rows_are_stable_across_time_steps_of_a_loop():
    torch.manual_seed(8)
    att = SpikeAttention()

    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.att = att

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([self.att(xt) for xt in x.unbind(1)], 1)

    net = Loop()
    counter = sl.SynOpsCounter(net, batch_size=2, neurons=False)
    x = spikes(2, 3, 5, 4, seed=13)  # [B, T, tokens, d]
    net(x)
    got = layers(counter)
    assert [n for n in got if "matmul" in n] == ["att.matmul", "att.matmul.1"]
    assert got["att.matmul"].calls == 3 and got["att.matmul"].rows == 3 * 2
    assert len(att.kept) == 3
    want = sum(matmul_terms(q, k.transpose(-2, -1))["synops"] for q, k, _ in att.kept)
    assert got["att.matmul"].synops == pytest.approx(want)


def test_paused_counter_counts_no_op_and_two_counters_count_the_same_rows():
    net = Wrapped()
    x = spikes(2, 3, 6, seed=14)
    first = sl.SynOpsCounter(net, batch_dim=0, neurons=False)
    with first.paused():
        net(x)
    with pytest.raises(RuntimeError, match="before any forward pass"):
        first.snapshot()
    second = sl.SynOpsCounter(net, batch_dim=0, neurons=False)
    depth = torch._C._len_torch_function_stack()
    net(x)
    assert torch._C._len_torch_function_stack() == depth  # one shared mode, pushed and popped once
    a, b = layers(first), layers(second)
    assert list(a) == list(b) == ["attn.linear", "attn.bmm", "attn.bmm.1", "attn.out_proj"]
    for n in a:
        assert a[n].synops == b[n].synops and a[n].dense == b[n].dense


class _AtenOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten ops run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.n += 1
        return func(*args, **(kwargs or {}))


def test_an_activation_product_is_recorded_in_the_forward_and_reduced_at_read():
    """The function mode records q @ k^T and attn @ v as they run (no tensor op for their counts in the
    forward, as a weight op's hook); the read gives the brute-force counts."""
    torch.manual_seed(5)
    plain, net = nn.Sequential(SpikeAttention()), nn.Sequential(SpikeAttention())
    net.load_state_dict(plain.state_dict())
    counter = sl.SynOpsCounter(net, batch_size=2, neurons=False)
    x = spikes(2, 5, 4, seed=10)
    net(x)  # (the first call of each layer builds its map)
    counter.reset()
    net[0].kept.clear()
    with _AtenOps() as base:
        plain(x)
    with _AtenOps() as counted:
        net(x)
    weights = sum(isinstance(m, nn.Linear) for m in net.modules())
    assert weights == 3
    # nothing but the model's own ops ran in the forward, and each weight's nonzero pattern (once per batch)
    assert counted.n == base.n + weights
    ((q, k, v),) = net[0].kept
    got = layers(counter)
    assert_row(got["0.matmul"], {**matmul_terms(q, k.transpose(-2, -1)), "spiking": True})


def test_an_operand_changed_in_place_before_the_read_is_reported():
    net = nn.Sequential(SpikeAttention())
    counter = sl.SynOpsCounter(net, batch_size=2, neurons=False)
    net(spikes(2, 5, 4, seed=11))
    ((q, _, _),) = net[0].kept
    with torch.no_grad():
        q.mul_(2.0)
    with pytest.warns(sl.SynOpsWarning, match="modified in place after the layer read it"):
        counter.snapshot()


def test_products_without_gradients_hold_no_operand_after_the_forward():
    import weakref

    net = nn.Sequential(SpikeAttention())
    counter = sl.SynOpsCounter(net, batch_size=2, neurons=False)
    x = spikes(2, 5, 4, seed=12)
    with torch.no_grad():
        net(x)
    ((q, k, v),) = net[0].kept
    refs = [weakref.ref(t) for t in (q, k, v)]
    net[0].kept.clear()
    del q, k, v
    assert all(r() is None for r in refs)  # reduced when the forward returned: nothing holds the spikes
    got = layers(counter)
    counter.reset()
    net(x)
    want = layers(counter)
    for row in ("0.matmul", "0.matmul.1"):
        for key in ("synops", "dense", "eff_acs", "eff_macs"):
            assert getattr(got[row], key) == pytest.approx(getattr(want[row], key)), (row, key)


def test_a_weight_held_in_a_buffer_is_named_and_a_parameter_counts():
    """``x[B,K] @ W[K,N]`` with ``W`` a buffer: an activation (a buffer may hold a neuron's state), so the product
    has one row, and the error says to make it a parameter; as a frozen ``nn.Parameter`` it counts like a
    ``Linear`` (by hand: sum |x| x nonzeros of W's row)."""

    class Net(nn.Module):
        def __init__(self, as_parameter: bool) -> None:
            super().__init__()
            w = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])  # rows: fan-outs 1, 2, 0
            if as_parameter:
                self.W = nn.Parameter(w, requires_grad=False)
            else:
                self.register_buffer("W", w)
            self.fc = nn.Linear(2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x @ self.W)

    x = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    net = Net(as_parameter=False)
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    with pytest.raises(ValueError, match="must be an nn.Parameter"):
        counter.snapshot()
    net = Net(as_parameter=True)
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    assert counter.snapshot().layers["matmul"].synops == float((x.abs() * torch.tensor([1.0, 2.0, 0.0])).sum())


def test_a_module_whose_source_cannot_be_read_has_its_products_counted():
    scope = {"nn": nn, "torch": torch}
    exec("class Attn(nn.Module):\n"  # noqa: S102 - a class without readable source, as notebooks and exec make
         "    def forward(self, q, k):\n"
         "        return q @ k.transpose(-2, -1)\n", scope)
    class Root(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4, bias=False)
            self.attn = scope["Attn"]()

        def forward(self, x):
            s = (self.lin(x) > 0).float()
            return self.attn(s, s)

    root = Root()
    counter = sl.SynOpsCounter(root, neurons=False, batch_dim=0)
    x = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0))
    root(x)
    got = counter.synops(by_layer=True)
    s = (root.lin(x) > 0).float().detach()
    assert "attn.matmul" in got
    assert got["attn.matmul"].item() == pytest.approx(float((s @ s.transpose(-2, -1)).sum()) / 2)  # by hand


# ---------------------------------------------------------------- products and pools in helper functions


def _attend(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ k.transpose(-2, -1)


def _attend_twice_removed(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return _attend(q, k)


_tools = __import__("types").SimpleNamespace(attend=_attend)
_mm = torch.matmul  # an alias at module level
_partial_mm = __import__("functools").partial(torch.matmul)
_tensor_bmm = torch.Tensor.bmm
_operator_mm = __import__("operator").matmul


class _Scorer:
    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return q @ k.transpose(-2, -1)


_scorer = _Scorer()


@torch.no_grad()
def _attend_without_grad(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ k.transpose(-2, -1)


class _SpikeScores(torch.autograd.Function):
    """A custom autograd function running the product (its own backward)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(q, k)
        return q @ k.transpose(-2, -1)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        q, k = ctx.saved_tensors
        return g @ k, g.transpose(-2, -1) @ q


class _Score:
    def __call__(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return q @ k.transpose(-2, -1)


class _ParameterFreeAttention(nn.Module):
    """Attention without parameters of its own, reaching its product through an attribute or a Function."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        if how == "callable_attribute":
            self.score = _Score()
        elif how == "lambda_attribute":
            self.score = lambda q, k: q @ k.transpose(-2, -1)
        elif how == "partial_attribute":
            self.score = __import__("functools").partial(torch.matmul)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.how == "autograd_function":
            return _SpikeScores.apply(q, k)
        if self.how == "getattr":
            return getattr(torch, "matmul")(q, k.transpose(-2, -1))
        if self.how == "partial_attribute":
            return self.score(q, k.transpose(-2, -1))
        return self.score(q, k)


class _WithParameterFreeAttention(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.q, self.k, self.attn = nn.Linear(4, 4), nn.Linear(4, 4), _ParameterFreeAttention(how)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn((self.q(x) > 0).float(), (self.k(x) > 0).float())


@pytest.mark.parametrize("how", ["autograd_function", "callable_attribute", "lambda_attribute", "partial_attribute",
                                 "getattr"])
def test_a_parameter_free_attention_module_reaching_its_product_indirectly_is_counted(how):
    torch.manual_seed(0)
    got, want = _counted_product(_WithParameterFreeAttention(how))
    assert got == pytest.approx(want)


def _counted_product(net: nn.Module) -> tuple:
    """(the counted q @ k^T row's synops, sum(|q| @ |k|^T) per sample by hand) of ``net`` (q, k: spiking Linears)."""
    x = torch.rand(2, 5, 4)
    counter = sl.SynOpsCounter(net, batch_size=2, neurons=False)
    net(x)
    rows = counter.snapshot().per_layer()
    products = {k: v for k, v in rows.items() if k not in ("q", "k")}
    assert len(products) == 1, rows
    q, k = (net.q(x) > 0).double(), (net.k(x) > 0).double()
    want = float((q.abs() @ k.abs().transpose(-2, -1)).sum()) / 2
    assert want > 0
    return next(iter(products.values()))["synops"], want


class _HelperAttention(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.q, self.k, self.how = nn.Linear(4, 4), nn.Linear(4, 4), how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = (self.q(x) > 0).float(), (self.k(x) > 0).float()
        if self.how == "helper":
            return _attend(q, k)
        if self.how == "nested":
            return _attend_twice_removed(q, k)
        if self.how == "namespace":
            return _tools.attend(q, k)
        if self.how == "global_alias":
            return _mm(q, k.transpose(-2, -1))
        if self.how == "partial":
            return _partial_mm(q, k.transpose(-2, -1))
        if self.how == "tensor_method":
            return _tensor_bmm(q, k.transpose(-2, -1))
        if self.how == "operator":
            return _operator_mm(q, k.transpose(-2, -1))
        if self.how == "bound_method":
            return _scorer.scores(q, k)
        if self.how == "decorated":
            return _attend_without_grad(q, k)
        prod = torch.bmm  # a local alias
        return prod(q, k.transpose(-2, -1))


@pytest.mark.parametrize("how", ["helper", "nested", "namespace", "global_alias", "local_alias", "partial",
                                 "tensor_method", "operator", "bound_method", "decorated"])
def test_a_product_in_a_helper_function_or_under_an_alias_is_counted(how):
    """q @ k^T written in a function the forward calls (or under another name) is found in the module's code:
    its synops are sum(|q| @ |k|^T) per sample, by hand, not silently left out."""
    torch.manual_seed(0)
    got, want = _counted_product(_HelperAttention(how))
    assert got == pytest.approx(want)


class _Product(nn.Module):
    """``a @ b^T`` with ``b`` passed as ``[B, n, c]``: the second operand is a transposed view (not contiguous)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.transpose(-2, -1)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("kind", ["spikes", "half_steps", "counts_and_reals"])
def test_products_of_transposed_views_count_by_hand(kind, grad):
    """Spikes (0 and 1), values in {0, 0.5, 1} (an operand in the spike range that is no spikes) and integer counts
    times reals, the second operand a transposed view: synops, effective ops and AC / MAC as the brute force of
    op_reference says, with and without gradients, and the gradient of the synops that of the hand formula."""
    gen = torch.Generator().manual_seed(41)
    a = (torch.rand(2, 3, 4, generator=gen) < 0.5).float()
    b = (torch.rand(2, 5, 4, generator=gen) < 0.4).float()
    if kind == "half_steps":
        a = a * torch.randint(1, 3, a.shape, generator=gen) / 2  # 0, 0.5, 1: a test of the range alone is fooled
    if kind == "counts_and_reals":
        a = a * torch.randint(1, 4, a.shape, generator=gen)  # 0..3
        b = b * torch.rand(b.shape, generator=gen)  # reals in [0, 1)
    a.requires_grad_(grad)
    b.requires_grad_(grad)
    counter = sl.SynOpsCounter(_Product(), batch_size=2, neurons=False, ops="all")
    with torch.set_grad_enabled(grad):
        counter.model(a, b)
    (row,) = layers(counter).values()
    # one operand of 0 and 1 makes the products ACs (half steps times spikes: still ACs); counts x reals: MACs
    assert_row(row, {**matmul_terms(a.detach(), b.detach().transpose(-2, -1)), "spiking": kind != "counts_and_reals"})
    if grad:  # S = sum_{s,m,n,c} |a[s,m,c]| |b[s,n,c]| / B: dS/da = sum_n |b[s,n,c]| / 2 (a >= 0: slope 1)
        counter.synops().backward()
        assert torch.allclose(a.grad, b.detach().sum(1, keepdim=True).expand_as(a) / 2)
        assert torch.allclose(b.grad, a.detach().sum(1, keepdim=True).expand_as(b) / 2)


def test_a_nan_in_a_transposed_operand_is_reported_at_read():
    a, b = torch.ones(2, 3, 4), torch.ones(2, 5, 4)
    b[0, 1, 2] = float("nan")
    counter = sl.SynOpsCounter(_Product(), batch_size=2, neurons=False, ops="all")
    counter.model(a, b)
    with pytest.raises(FloatingPointError, match="NaN or inf in the input of layer 'matmul'"):
        counter.snapshot()


class _QK(nn.Module):
    """Two Linear(6, 6) projections of spikes, thresholded to binary q and k (the attention tests' operands)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(6, 6), nn.Linear(6, 6)

    def spikes(self, x):
        return (self.q(x) > 0).float(), (self.k(x) > 0).float()


def _qk_product(net: nn.Module):
    """(the counted q @ k^T synops per sample, the binary product's sum per sample) of a _QK-style module."""
    x = (torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    counter = sl.SynOpsCounter(net, neurons=False, batch_dim=0)
    out = net(x)
    return counter.snapshot().per_layer()["matmul"]["synops"], float(out.sum()) / 2


class _TempAttn(_QK):
    """Attention with a learnable temperature: parameters that are no synapses, and a spike x spike product."""

    def __init__(self) -> None:
        super().__init__()
        self.temp = nn.Parameter(torch.ones(()))

    def forward(self, x):
        q, k = self.spikes(x)
        return (q @ k.transpose(-2, -1)) * self.temp


def test_a_module_declared_synapse_free_keeps_its_activation_products(monkeypatch):
    """register_no_synapse -- the fix the counter's own warning names for the temperature -- dropped the module's
    q @ k^T row (synops 0, no warning). By hand: the sum of the binary product per sample."""
    from synopsloss import registry

    monkeypatch.setitem(registry.NO_SYNAPSE, _TempAttn, "a temperature is no synapse")
    torch.manual_seed(0)
    net = _TempAttn()
    x = (torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.UnsupportedLayerWarning)  # (declared: not named as unsupported)
        counter = sl.SynOpsCounter(net, neurons=False, batch_dim=0)
    net(x)
    with counter.paused(), torch.no_grad():
        q, k = net.spikes(x)
    assert counter.snapshot().per_layer()["matmul"]["synops"] == pytest.approx(float((q @ k.transpose(-2, -1)).sum()) / 2)


class _LinalgAttn(_QK):
    def forward(self, x):
        q, k = self.spikes(x)
        return torch.linalg.matmul(q, k.transpose(-2, -1))


def test_torch_linalg_matmul_is_counted_as_matmul():
    """torch.linalg.matmul was not in the op table: the product had no row, silently. By hand: the sum of the
    binary product per sample."""
    torch.manual_seed(0)
    net = _LinalgAttn()
    got, want = _qk_product(net)
    assert got == pytest.approx(want)


def test_a_linear_whose_forward_is_set_on_the_instance_is_counted_with_the_weight_it_uses():
    """A masking tool's patch: ``layer.forward = masked forward`` on an nn.Linear instance was counted with
    ``.weight`` (every tap), silently, where a subclass doing the same was right. By hand: x . nonzero taps of
    the masked weight, per sample."""
    import types

    torch.manual_seed(0)
    mask = (torch.rand(5, 8) < 0.3).float()
    x = (torch.rand(3, 8) < 0.5).float()
    layer = nn.Linear(8, 5, bias=False)
    layer.forward = types.MethodType(lambda self, v: F.linear(v, self.weight * mask), layer)
    net = nn.Sequential(layer)
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    want = float((x * ((layer.weight * mask) != 0).sum(0)).sum()) / 3
    assert counter.snapshot().per_layer()["0"]["synops"] == pytest.approx(want)


class _PerHead(nn.Module):
    """A per-head projection ``q[B, H, N, D] @ f(P)[H, D, M]`` with a weight computed from a parameter."""

    def __init__(self, make) -> None:
        super().__init__()
        self.P = nn.Parameter(torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(5)))
        self.make = make

    def forward(self, q):
        return q @ self.make(self.P)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("make", [lambda p: p * 2, lambda p: p * (p.abs() > 0.5),
                                  lambda p: torch.where(p.abs() > 0.5, p, 0.0)], ids=["scaled", "masked", "where"])
def test_a_weight_made_of_a_parameter_with_scalars_and_masks_is_a_weight_in_every_grad_mode(make, grad):
    """Autograd's record shows neither the scalar of ``P * 2`` nor the mask of ``P * (P.abs() > t)``: with
    gradients the 3-D weight was counted as an activation product (its magnitudes: 103.8 synops for 61), and
    ``torch.where(..., P, 0.)`` before ``x @ W.T`` was refused. By brute force: nonzero spike x nonzero tap."""
    q = (torch.rand(3, 2, 5, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    net = _PerHead(make)
    counter = sl.SynOpsCounter(net, batch_dim=0, neurons=False)
    with torch.set_grad_enabled(grad):
        net(q)
    with torch.no_grad():
        taps = (make(net.P) != 0).double()  # [H, D, M]
        want = float(torch.einsum("bhnd,hdm->", (q != 0).double(), taps)) / 3
    row = counter.snapshot().per_layer()["matmul"]
    assert row["synops"] == pytest.approx(want) and row["eff_acs"] == pytest.approx(want)


class _LowRankMixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(6, 6, generator=g))
        self.U = nn.Parameter(torch.randn(2, 4, 2, generator=g) * 0.1)
        self.V = nn.Parameter(torch.randn(2, 2, 4, generator=g) * 0.1)

    def forward(self, x):  # x: [B, H, N, d] spikes
        y = (F.linear(x, self.proj) > 0).float()
        return (self.U @ self.V) @ y


@pytest.mark.parametrize("grad", [True, False])
def test_a_weight_that_is_a_product_of_parameters_is_a_weight(grad):
    """W = U @ V (per-head low rank) applied to spikes was counted as an activation product, by |W| (0.91 synops
    per sample for 89.3), silently. By hand: spikes x nonzero taps of W."""
    net = _LowRankMixer()
    x = (torch.rand(3, 2, 4, 6, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    counter = sl.SynOpsCounter(net, neurons=False, batch_dim=0)
    with torch.set_grad_enabled(grad):
        net(x)
    with torch.no_grad():
        y = (F.linear(x, net.proj) > 0).double()
        want = float((((net.U @ net.V) != 0).double() @ y).sum()) / 3
    assert counter.snapshot().per_layer()["matmul"]["synops"] == pytest.approx(want)


def test_vmap_inside_a_forward_is_named_with_the_documented_fix():
    """torch.func.vmap inside a counted forward crashed with torch's 'Cannot access storage of BatchedTensorImpl'.
    Now the documented message names the module and the fix; with counter.paused() the model runs as without."""
    from torch.func import vmap

    class PerSample(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 6))

        def forward(self, x):
            return vmap(lambda r: F.linear(r, self.w))(x)

    net = PerSample()
    x = (torch.rand(3, 6) < 0.4).float()
    want = net(x)
    counter = sl.SynOpsCounter(net, neurons=False)
    with pytest.raises(RuntimeError, match="ran inside a torch.func transform"):
        net(x)
    with counter.paused():
        assert torch.equal(net(x), want)


class _Proj(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 8, generator=torch.Generator().manual_seed(2)))

    def forward(self, x):
        return F.linear(x, self.weight)


class _Mask(nn.Module):
    def __init__(self, m) -> None:
        super().__init__()
        self.register_buffer("m", m)

    def forward(self, w):
        return w * self.m


def test_a_parametrized_custom_module_is_still_counted_op_by_op():
    """register_parametrization makes the class ParametrizedProj (a torch module name): its F.linear was no longer
    counted (row gone, named as unsupported). By hand: |h| x nonzero taps of the masked weight."""
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), _Proj())
    parametrize.register_parametrization(net[2], "weight", _Mask((torch.rand(5, 8) < 0.5).float()))
    x = torch.rand(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.UnsupportedLayerWarning)
        counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    with counter.paused(), torch.no_grad():
        h, w = torch.relu(net[0](x)), net[2].weight
    want = float((h.abs().double() * (w != 0).sum(0).double()).sum()) / 3
    assert counter.snapshot().per_layer()["2.linear"]["synops"] == pytest.approx(want)


def test_an_fx_traced_model_keeps_its_activation_products():
    """torch.fx.symbolic_trace's GraphModule has a torch module name: its q @ k^T was not counted, silently. By
    hand: the sum of the binary product per sample, as for the eager model."""
    torch.manual_seed(0)
    eager = _LinalgAttn()
    traced = torch.fx.symbolic_trace(eager)
    got, want = _qk_product(traced)
    assert got == pytest.approx(want)


class _Backbone(_QK):
    def forward_features(self, x):
        q, k = self.spikes(x)
        return q @ k.transpose(-2, -1)

    def forward(self, x):
        return self.forward_features(x)


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.head = _Backbone(), nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.backbone.forward_features(x))  # (timm's pattern: not the child's forward)


def test_a_childs_method_called_by_its_parent_has_its_products_counted():
    """self.backbone.forward_features(x) runs the child's q @ k^T outside the child's forward (no hook of it runs):
    the product was not counted, silently. It is now counted in the parent's frame. By hand: the binary product
    per sample."""
    torch.manual_seed(0)
    net = _Head()
    x = (torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    counter = sl.SynOpsCounter(net, neurons=False, batch_dim=0)
    net(x)
    with counter.paused(), torch.no_grad():
        prod = net.backbone.forward_features(x)
    assert counter.snapshot().per_layer()["matmul"]["synops"] == pytest.approx(float(prod.sum()) / 2)


def _logged(f):
    def wrapper(*args, **kwargs):  # (no functools.wraps)
        return f(*args, **kwargs)
    return wrapper


class _LoggedAttn(_QK):
    @_logged
    def forward(self, x):
        q, k = self.spikes(x)
        return q @ k.transpose(-2, -1)


def test_a_forward_wrapped_by_a_decorator_without_wraps_has_its_products_counted():
    """The wrapper's source was read instead of the forward it calls (a closure): q @ k^T was not counted,
    silently. By hand: the binary product per sample."""
    torch.manual_seed(0)
    net = _LoggedAttn()
    got, want = _qk_product(net)
    assert got == pytest.approx(want)


_SCORES = {
    "dot": lambda q, k: q @ k.transpose(-2, -1),
}


class _Ops:
    def attend(self, q, k):
        return q @ k.transpose(-2, -1)


class _HeldScore(_QK):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how, self.score, self.ops = how, _SCORES["dot"], _Ops()

    def forward(self, x):
        q, k = self.spikes(x)
        return self.score(q, k) if self.how == "dict lambda" else self.ops.attend(q, k)


@pytest.mark.parametrize("how", ["dict lambda", "helper method"])
def test_a_product_in_a_lambda_of_a_dict_or_a_helper_objects_method_is_counted(how):
    """A lambda written as a dict value (its source line does not parse alone) and a method of a helper object
    (self.ops.attend(q, k)) were not read: q @ k^T uncounted, silently. By hand: the binary product per sample."""
    torch.manual_seed(0)
    net = _HeldScore(how)
    got, want = _qk_product(net)
    assert got == pytest.approx(want)


class _SelfAsS(nn.Module):
    def __init__(s) -> None:  # noqa: N805 (the first argument named s, as some code does)
        super().__init__()
        s.w = nn.Parameter(torch.randn(4, 6, generator=torch.Generator().manual_seed(3)))
        s.fn = lambda a, b: F.linear(a, b)

    def forward(s, x):  # noqa: N805
        return s.fn(x, s.w)


def test_methods_whose_first_argument_is_not_named_self_are_read():
    """``def forward(s, x): return s.fn(x, s.w)``: the class reader looked for ``self.`` only, so the layer was named
    unsupported and not counted. By hand: spikes x nonzero taps."""
    net = _SelfAsS()
    x = (torch.rand(3, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.UnsupportedLayerWarning)
        counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    want = float((x * (net.w != 0).sum(0)).sum()) / 3
    assert counter.snapshot().per_layer()["linear"]["synops"] == pytest.approx(want)


class _ListMLP(nn.Module):
    def __init__(self, used: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(4)
        self.used, self.fc = used, (None if used else nn.Linear(4, 2))
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(8, 4, generator=g)),
                                         nn.Parameter(torch.randn(3, 8, generator=g))])

    def forward(self, x):
        if not self.used:  # (elementwise only: no synapse that a counted op uses)
            return self.fc(x) * self.weights[0].sum()
        for w in self.weights:
            x = (F.linear(x, w) > 0).float()
        return x


def test_a_parameter_list_used_by_its_parents_code_is_counted_without_a_false_warning():
    """Weights in an nn.ParameterList applied with F.linear were counted right but named at attach as 'NOT
    included'. Now no warning; a list whose parameters no counted op uses is named when the counts are read.
    By hand: spikes x fan-out of each weight."""
    net = _ListMLP(True)
    x = (torch.rand(2, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.UnsupportedLayerWarning)
        counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    with counter.paused():
        h = (F.linear(x, net.weights[0]) > 0).float()
    want = float(x.sum() * 8 + h.sum() * 3) / 2
    assert float(counter.synops()) == pytest.approx(want)
    unused = _ListMLP(False)
    counter = sl.SynOpsCounter(unused, neurons=False)
    unused(x)
    with pytest.warns(sl.SynOpsWarning, match=r"weights \(ParameterList\)"):
        counter.snapshot()
