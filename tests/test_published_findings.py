"""Findings on published networks (issue 16): op scoping, weights, warnings and messages.

Each test rebuilds one situation found by running the counter on published networks and checks
the counter against a number computed independently in the test (every term of a product
enumerated by broadcasting, a hand count), or checks the error class and its words.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import synopsloss as sl


def spikes(*shape: int, seed: int = 0, rate: float = 0.4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < rate).float()


def all_terms(a: torch.Tensor, b: torch.Tensor) -> Tuple[float, float]:
    """``A[..., M, K] @ B[..., K, N]``: (synops, effective) summed over every term ``(m, k, n)`` explicitly."""
    terms = a.detach().double().abs()[..., :, :, None] * b.detach().double().abs()[..., None, :, :]
    pairs = (a.detach() != 0).double()[..., :, :, None] * (b.detach() != 0).double()[..., None, :, :]
    return float(terms.sum()), float(pairs.sum())


class Recorder(torch.overrides.TorchFunctionMode):
    """Records the operands of the named ops of a forward (a reference run, no counter attached)."""

    def __init__(self, names: Tuple[str, ...]) -> None:
        super().__init__()
        self.names = names
        self.calls: List[Tuple[str, tuple]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in self.names:
            self.calls.append((name, tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)))
        return out


def read(counter: sl.SynOpsCounter) -> Dict[str, sl.LayerStats]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return counter.snapshot().layers


def caught(fn) -> List[str]:
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in got]


# ----------------------------------------------------------------------------- 1. neurons with their own products


def _associative(seed: int = 0) -> nn.Module:
    from snntorch import AssociativeLeaky

    torch.manual_seed(seed)
    neuron = AssociativeLeaky(in_dim=4, d_value=2, d_key=3, num_spiking_neurons=6)
    with torch.no_grad():  # positive projections: the matrix state S crosses the threshold, so S is no all-zero
        for lin in (neuron.to_v, neuron.to_k, neuron.to_alpha):
            lin.weight.uniform_(0.5, 1.0)
    return neuron


def test_associative_leaky_einsum_and_bmm_are_counted_and_its_projections_are_feed_forward():
    T, B = 5, 2
    net = nn.Sequential(_associative())
    x = spikes(T, B, 4, seed=1, rate=0.6)
    with torch.no_grad(), Recorder(("einsum", "bmm")) as rec:
        ref_out = net(x)
    (_, (eq, v, k)), (_, (s2d, q2d)) = rec.calls
    assert eq == "tbd,tbn->tbdn" and s2d.abs().sum() > 0
    outer_syn = float((v.double().abs()[..., :, None] * k.double().abs()[..., None, :]).sum())  # every (t,b,d,n)
    bmm_syn, bmm_eff = all_terms(s2d, q2d)

    counter = sl.SynOpsCounter(net, batch_size=B)
    out = net(x)
    assert torch.equal(out, ref_out)
    rows = read(counter)
    assert {"0.einsum", "0.bmm"} <= set(rows)
    assert rows["0.einsum"].kind == "activation product" and rows["0.bmm"].kind == "activation product"
    # snapshot rows hold the batch's totals (the table divides by the samples)
    assert rows["0.einsum"].synops == pytest.approx(outer_syn, rel=1e-6)
    assert rows["0.einsum"].dense == T * B * 2 * 3
    assert rows["0.bmm"].synops == pytest.approx(bmm_syn, rel=1e-6) and bmm_syn > 0
    assert rows["0.bmm"].eff_acs + rows["0.bmm"].eff_macs == pytest.approx(bmm_eff)
    assert counter.table()["0.bmm"].synops == pytest.approx(bmm_syn / B, rel=1e-6)
    # the four projections read the input x, not the neuron's own output: feed-forward synapses
    for name in ("0.to_v", "0.to_k", "0.to_alpha", "0.to_q"):
        assert rows[name].kind == "synaptic", name


def test_recurrent_and_feed_forward_layers_inside_neurons_are_labelled_apart():
    import snntorch as snn

    net = nn.Sequential(nn.Linear(3, 4), snn.RLeaky(beta=0.5, linear_features=4, init_hidden=True))
    counter = sl.SynOpsCounter(net)
    for t in range(3):
        net(spikes(2, 3, seed=t, rate=0.9))
    kinds = {n: s.kind for n, s in read(counter).items()}
    assert kinds == {"0": "synaptic", "1.recurrent": "recurrent synapses"}
    counter.remove()
    leaky = snn.LinearLeaky(beta=0.5, in_features=3, out_features=2)  # [T, B, C] in one call
    counter = sl.SynOpsCounter(leaky, batch_size=2)
    leaky(spikes(4, 2, 3, seed=5))
    assert {n: s.kind for n, s in read(counter).items()} == {"linear": "synaptic"}  # formerly "recurrent synapses"


# ----------------------------------------------------------------------------- 2. a buffer is no weight


class SpikeBuffer(nn.Module):
    """Keeps the spikes of its input in a buffer (state) and projects them with its weight."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
        self.register_buffer("spk", torch.zeros(2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.spk.copy_((x > 0.5).float())
        return F.linear(self.spk, self.w)


def test_a_buffer_holding_spike_state_is_an_activation_not_a_weight():
    net = nn.Sequential(nn.Identity(), SpikeBuffer())
    counter = sl.SynOpsCounter(net, neurons=False)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    net(x)
    rows = read(counter)
    # hand count: column fan-outs of w (nonzero entries per input) are 2, 2, 2, 1;
    # sample 0 spikes on inputs 0, 2, 3 -> 2 + 2 + 1 = 5; sample 1 on input 1 -> 2. The batch: 7 (12 dense)
    assert list(rows) == ["1.linear"]
    assert rows["1.linear"].synops == pytest.approx(7.0) and rows["1.linear"].dense == 24


# ----------------------------------------------------------------------------- 3. embeddings and tokens are no synapses


class TinyViT(nn.Module):
    """A ViT's stem: patch projection, class token and positional embedding, one encoder layer, a head."""

    def __init__(self, d: int = 8, n: int = 4) -> None:
        super().__init__()
        self.patch = nn.Linear(6, d, bias=False)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, d))
        self.enc = nn.TransformerEncoderLayer(d, 2, 16, batch_first=True, dropout=0.0)
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed[:, : x.shape[1]]
        return self.head(self.enc(x)[:, 0])


class BilinearToken(nn.Module):
    """A token joined like a class token, and a weight used by an op that cannot be counted."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 4))
        self.w = nn.Parameter(torch.randn(2, 4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.token.expand(x.shape[0], -1), x], dim=0)
        return F.bilinear(x, x, self.w)


def test_a_vit_positional_embedding_and_class_token_are_no_synapses_and_raise_no_warning():
    torch.manual_seed(0)
    net = TinyViT()
    x = spikes(2, 4, 6, seed=3)
    msgs = caught(lambda: sl.SynOpsCounter(net, neurons=False, batch_dim=0))
    counter = sl.SynOpsCounter(net, neurons=False, batch_dim=0)
    net(x)
    msgs += caught(counter.snapshot)
    assert not [m for m in msgs if "NOT included" in m or "cannot count" in m], msgs
    assert counter.unsupported == []
    # the patch projection (brute force: every input spike times the nonzero weights of its column)
    w01 = (net.patch.weight != 0).double()
    assert read(counter)["patch"].synops == pytest.approx(float((x.double().reshape(-1, 6) @ w01.sum(0)).sum()))


def test_a_parameter_used_by_an_uncountable_op_is_still_named():
    net = nn.Sequential(BilinearToken())
    counter = sl.SynOpsCounter(net, neurons=False, batch_dim=0)
    msgs = caught(lambda: net(spikes(2, 4, seed=4)))
    assert any("'0' ran" in m and "bilinear" in m and "NOT counted" in m for m in msgs), msgs
    counter.remove()

    class Gain(nn.Module):  # an elementwise product stays named: it may be a one-to-one synapse layer
        def __init__(self) -> None:
            super().__init__()
            self.g = nn.Parameter(torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.g

    net = nn.Sequential(nn.Linear(4, 4), Gain())
    with pytest.warns(sl.UnsupportedLayerWarning, match=r"1 \(Gain\).*NOT included"):
        sl.SynOpsCounter(net, neurons=False)


# ----------------------------------------------------------------------------- 4. the input layer's warning


class EncodesItsInput(nn.Module):
    """Rate-codes its input inside the model, so the first layer's input is no tensor the caller passed."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1((x > 0.5).float())))


def test_the_input_layer_warning_says_data_fed_not_no_grad():
    torch.manual_seed(0)
    net = EncodesItsInput()
    counter = sl.SynOpsCounter(net, neurons=False)
    loss = sl.SynOpsLoss(counter, target=1.0)
    net(torch.rand(2, 4))
    msgs = [m for m in caught(loss) if "carry no gradient" in m]
    assert len(msgs) == 1 and "['fc1']" in msgs[0], msgs
    assert "fed by the data" in msgs[0] and "layers=[...]" in msgs[0] and "no_grad" not in msgs[0]
    counter.reset()
    with torch.no_grad():  # a forward without gradients is still named as such
        net(torch.rand(2, 4))
    loss2 = sl.SynOpsLoss(counter, target=1.0)
    msgs = [m for m in caught(loss2) if "carry no gradient" in m]
    assert len(msgs) == 1 and "torch.no_grad()" in msgs[0], msgs


# ----------------------------------------------------------------------------- 6. MHA's q @ k^T on both paths


class SelfAttention(nn.Module):
    def __init__(self, need_weights: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, bias=False)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=self.need_weights)[0]


def test_multihead_attention_qk_synops_are_equal_with_and_without_need_weights():
    x = spikes(2, 3, 8, seed=6, rate=0.5)
    got = {}
    for need_weights in (True, False):
        torch.manual_seed(1)
        net = SelfAttention(need_weights)
        counter = sl.SynOpsCounter(net, neurons=False, batch_dim=0)
        net(x)
        rows = read(counter)
        got[need_weights] = rows["attn.bmm" if need_weights else "attn.sdpa.qk"]
    # by hand: q and k of each head from the in-projection, every (head, m, k, n) term of |q| |k| (unscaled q)
    w = net.attn.in_proj_weight.detach().double()
    q, k, _ = (x.double() @ w.t()).chunk(3, -1)
    heads = lambda t: t.reshape(2, 3, 2, 4).permute(0, 2, 1, 3).reshape(4, 3, 4)  # noqa: E731  [B*H, L, hd]
    syn, eff = all_terms(heads(q), heads(k).transpose(1, 2))
    for row in got.values():
        assert row.synops == pytest.approx(syn, rel=1e-6)
        assert row.eff_acs + row.eff_macs == pytest.approx(eff) and row.dense == 4 * 3 * 4 * 3
    assert got[True].synops == pytest.approx(got[False].synops, rel=1e-9)


# ----------------------------------------------------------------------------- 7. quantized, sparse, complex, lazy


def test_a_dynamically_quantized_linear_is_counted_with_its_int8_zero_pattern():
    torch.manual_seed(0)
    float_net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        float_net[2].weight[0, :2] = 0.0
        float_net[2].weight[1, 3] = 1e-4  # rounds to 0 in int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        net = torch.ao.quantization.quantize_dynamic(float_net, {nn.Linear}, dtype=torch.qint8)
    net[0] = nn.Linear(4, 4)  # one float layer, one quantized
    counter = sl.SynOpsCounter(net, neurons=False)
    x = spikes(3, 4, seed=7, rate=0.6)
    net(x)
    rows = read(counter)
    assert set(rows) == {"0", "2"}
    h = torch.relu(net[0](x)).double()
    w01 = (net[2].weight().dequantize() != 0).double()
    assert w01.sum() <= 12 - 3  # the pruned and the rounded-away weights
    assert rows["2"].synops == pytest.approx(float((h.abs() @ w01.sum(0)).sum()), rel=1e-6)
    assert rows["2"].dense == 3 * 12


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")  # expected here; the test is about something else
@pytest.mark.parametrize("make", [lambda: torch.eye(4).to_sparse(), lambda: torch.eye(4).to_sparse_csr()])
def test_a_sparse_input_is_refused_with_the_layer_and_the_fix(make):
    net = nn.Sequential(nn.Linear(4, 3))
    counter = sl.SynOpsCounter(net, neurons=False)  # noqa: F841  (kept alive while the model runs)
    with pytest.raises(TypeError, match=r"layer '0' \(Linear\) received a torch.sparse_\w+ tensor.*to_dense\(\)"):
        net(make())


def test_a_complex_input_is_refused_with_the_layer_and_the_fix():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice on complex modules
        net = nn.Sequential(nn.Linear(4, 3).to(torch.cfloat))
    counter = sl.SynOpsCounter(net, neurons=False)  # noqa: F841  (kept alive while the model runs)
    with pytest.raises(TypeError, match=r"layer '0' \(Linear\) received a complex tensor.*real"):
        net(torch.ones(2, 4, dtype=torch.cfloat))


@pytest.mark.parametrize("ops", ["auto", "all"])
def test_a_lazy_layer_attached_before_its_first_call_is_counted(ops):
    torch.manual_seed(0)
    net = nn.Sequential(nn.LazyLinear(3))
    counter = sl.SynOpsCounter(net, neurons=False, ops=ops)
    x = spikes(2, 5, seed=8, rate=0.5)
    net(x)
    w01 = (net[0].weight != 0).double()
    assert read(counter)["0"].synops == pytest.approx(float((x.double() @ w01.sum(0)).sum()))


# ----------------------------------------------------------------------------- 8. an image repeated over T inside


class RepeatsItsImage(nn.Module):
    """snntorch Spikformer-style stem: ``[B, C, H, W]`` images repeated to ``[T, B, C, H, W]`` inside the model."""

    def __init__(self, T: int = 4) -> None:
        super().__init__()
        import snntorch as snn

        self.T = T
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.lif = snn.Leaky(beta=0.5, init_hidden=True)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B = x.shape[:2]
        y = self.lif(self.conv(x.flatten(0, 1)))
        return self.fc(y.flatten(1)).reshape(T, B, -1).mean(0)


def test_an_image_repeated_over_time_inside_the_model_is_read_batch_first():
    from helpers import brute_force_map

    torch.manual_seed(0)
    net = RepeatsItsImage()
    counter = sl.SynOpsCounter(net)
    x = spikes(3, 2, 5, 5, seed=9, rate=0.5)  # B=3, C=2: only B=3 is consistent with the conv's (2, 5, 5) rows
    net(x)
    snap = counter.snapshot()
    assert snap.samples == 3
    fan = brute_force_map(net.conv, (2, 5, 5))
    per_image = (x.double() * fan).sum() / 3  # each image counted T=4 times, per sample
    assert snap.layers["conv"].synops == pytest.approx(4 * float(per_image) * 3)
    assert counter.table()["conv"].synops == pytest.approx(4 * float(per_image))
    counter.remove()
    # a [B, T, C] input read by a Linear(C) stays ambiguous: both readings fit its rows
    seq = nn.Sequential(nn.Linear(5, 2))
    counter = sl.SynOpsCounter(seq, neurons=False)
    seq(spikes(3, 4, 5, seed=10))
    with pytest.raises(ValueError, match=r"cannot tell how many samples.*batch_dim=0"):
        counter.snapshot()
