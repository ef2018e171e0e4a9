"""SpikingJelly's spiking transformers counted op by op: against SpikingJelly's own SynOpCounter and by hand.

SynOpCounter (SpikingJelly 2.0.0, run live in the same test through tests/sj_reference.py) counts a
convolution / matmul only when an operand is exactly {0, 1}, and counts zero weights and the zero
entries of a product's other operand; synopsloss counts any value and skips zeros. So the two agree
where every input is {0, 1} and no weight is zero -- the convolutions fed by spikes and the first
attention product ``v @ k^T`` (both operands spikes) -- and everywhere else each is checked against
its own definition by hand: ``(v k^T) @ q`` from the recorded spikes, SynOpCounter's
``nnz(q) * rows``. Spikformer's attention computes ``(v @ k^T) @ q`` (SpikingJelly 2.0.0's order);
the Spike-driven Transformer's attention multiplies elementwise (``q * kv``): no synapses, no rows.
"""

from __future__ import annotations

from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import synopsloss as sl

pytest.importorskip("spikingjelly")

import zoo  # noqa: E402
from op_reference import matmul_terms, weight_op_counts  # noqa: E402
from sj_reference import sj_synops  # noqa: E402

from spikingjelly.activation_based import functional, layer  # noqa: E402

B = zoo.BATCH


def record(module: torch.nn.Module, store: List[torch.Tensor], output: bool = True):
    """A forward hook keeping the module's output (or its first input)."""
    if output:
        return module.register_forward_hook(lambda m, a, out: store.append(out))
    return module.register_forward_pre_hook(lambda m, a: store.append(a[0]))


def spikformer_qkv(qkv: torch.Tensor, heads: int):
    """q, k, v as SpikingSelfAttention._ssa_kernel_torch splits its qkv_lif output [T, N, 3C, L]."""
    T, N, C3, L = qkv.shape
    q, k, v = qkv.reshape(T, N, 3, heads, C3 // 3 // heads, L).flatten(2, 3).chunk(3, dim=2)
    return q, k, v


def product_by_hand(a: torch.Tensor, b: torch.Tensor) -> Dict[str, float]:
    """Counts of a @ b (batched): terms with both factors nonzero, sum |a||b|, every term."""
    a, b = a.detach().double(), b.detach().double()
    return {
        "effective": float(((a != 0).double() @ (b != 0).double()).sum()),
        "synops": float((a.abs() @ b.abs()).sum()),
        "dense": float(a[..., 0, 0].numel() * a.shape[-2] * a.shape[-1] * b.shape[-1]),
    }


def run_both(build, x):
    model = build()
    sj = sj_synops(model, x, samples=B)
    counter = sl.SynOpsCounter(model, batch_size=B, neurons=False)
    functional.reset_net(model)
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out, sj.output)  # the same spikes in both runs
    return model, counter, sj


@pytest.mark.parametrize("name", ["spikformer", "spike_driven_transformer"])
def test_layers_equal_spikingjelly_synopcounter_where_definitions_agree(name):
    build = getattr(zoo, name)
    model, counter, sj = run_both(build, zoo.image(spikes=True))
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            assert (m.weight != 0).all()  # no zero weights: SynOpCounter would count them
    got = counter.snapshot().layers
    convs = {c.module: c.value for c in sj.calls if "convolution" in c.op}  # sums over the batch, like LayerStats
    binary = {n for n, s in got.items() if s.kind == "synaptic" and s.eff_macs == 0 and s.input_sum == s.input_nonzero}
    assert binary and binary != set(got)  # both kinds present: spike-fed layers and real-valued ones
    for n in binary:  # {0, 1} input: SynOpCounter's count is ours (effective = synops)
        assert convs[n] == pytest.approx(got[n].eff_acs) == pytest.approx(got[n].synops)
    for n, v in convs.items():  # and SynOpCounter counts nothing else
        assert (v > 0) == (n in binary), n
    products = [n for n, s in got.items() if s.kind == "activation product"]
    bmm = [c.value for c in sj.calls if "bmm" in c.op]
    if name == "spike_driven_transformer":
        assert products == [] and bmm == []  # q * kv: elementwise, no synapse in either tool
        return
    assert products == ["blocks.0.attn.matmul", "blocks.0.attn.matmul.1"]
    first = got["blocks.0.attn.matmul"]
    assert bmm[0] == pytest.approx(first.eff_acs) == pytest.approx(first.synops)  # v @ k^T, both spikes


def test_spikformer_attention_products_equal_the_hand_formula():
    model = zoo.spikformer()
    attn = model.blocks[0].attn
    kept: List[torch.Tensor] = []
    hook = record(attn.qkv_lif, kept)
    counter = sl.SynOpsCounter(model, batch_size=B, neurons=False)
    functional.reset_net(model)
    with torch.no_grad():
        model(zoo.image(spikes=True))
    hook.remove()
    q, k, v = spikformer_qkv(kept[0], attn.num_heads)
    got = counter.snapshot().layers
    a = v @ k.transpose(-2, -1)
    for name, ref in (("blocks.0.attn.matmul", product_by_hand(v, k.transpose(-2, -1))),
                      ("blocks.0.attn.matmul.1", product_by_hand(a, q))):
        s = got[name]
        assert s.dense == ref["dense"] and s.synops == pytest.approx(ref["synops"])
        assert s.eff_acs == pytest.approx(ref["effective"]) and s.eff_macs == 0  # q is spikes: ACs
        assert s.rows == zoo.T * B * attn.num_heads  # T x samples x heads, tokens are not rows
        assert counter.time_steps(name) == zoo.T  # read from the product's leading dims [T, B, heads]
    # the hand formula is the term count: loops over every term of one head of one step
    loop = matmul_terms(a[0, 0, 0], q[0, 0, 0])
    one = product_by_hand(a[0, 0, 0], q[0, 0, 0])
    assert (loop["effective"], loop["synops"], loop["dense"]) == (one["effective"], one["synops"], one["dense"])
    # SynOpCounter's second product: every row of v k^T (zeros too) x q's spikes -- above our effective count
    counter.remove()
    sj = sj_synops(model, zoo.image(spikes=True), samples=B)
    bmm = [c.value / B for c in sj.calls if "bmm" in c.op]
    assert bmm[1] == pytest.approx(float((q != 0).sum()) * a.shape[-2] / B)
    assert bmm[1] > got["blocks.0.attn.matmul.1"].eff_acs / B


def conv1x1_by_hand(x: torch.Tensor, w: torch.Tensor) -> Dict[str, float]:
    """A 1x1 Conv1d on x [rows..., C, L]: input (c, l) reaches the nonzero weights of column c, one tap each."""
    col = (w[..., 0] != 0).double().sum(0)  # [C_in]
    xd = x.detach().double().reshape(-1, x.shape[-2], x.shape[-1])
    return {"dense": float(xd.numel() * w.shape[0]), "effective": float(((xd != 0).double().sum((0, 2)) * col).sum()),
            "synops": float((xd.abs().sum((0, 2)) * col).sum())}


def test_spikformer_attention_convolutions_equal_brute_force():
    model = zoo.spikformer()
    attn = model.blocks[0].attn
    ins: Dict[str, List[torch.Tensor]] = {"qkv": [], "proj": []}
    hooks = [record(attn.qkv_conv_bn[0], ins["qkv"], output=False), record(attn.proj_conv_bn[0], ins["proj"],
                                                                           output=False)]
    counter = sl.SynOpsCounter(model, batch_size=B, neurons=False)
    functional.reset_net(model)
    with torch.no_grad():
        model(zoo.image())
    for h in hooks:
        h.remove()
    got = counter.snapshot().layers
    for key, conv, name in (("qkv", attn.qkv_conv_bn[0], "blocks.0.attn.qkv_conv_bn.0"),
                            ("proj", attn.proj_conv_bn[0], "blocks.0.attn.proj_conv_bn.0")):
        x = ins[key][0]
        assert conv.kernel_size == (1,) and conv.groups == 1
        ref = conv1x1_by_hand(x, conv.weight.detach())
        s = got[name]
        assert s.dense == ref["dense"]
        ternary = bool(((x == 0) | (x.abs() == 1)).all())
        if ternary or not bool((x == x.round()).all()):
            assert s.eff_acs + s.eff_macs == ref["effective"]
        else:  # residual sums of spikes are spike counts: one accumulate per event
            assert (s.eff_acs, s.eff_macs) == (pytest.approx(ref["synops"]), 0.0)
            assert ref["synops"] > ref["effective"]
        assert s.synops == pytest.approx(ref["synops"])


def test_spikformer_synops_backpropagate_to_the_parameters_and_through_both_operands():
    model = zoo.spikformer()
    attn = model.blocks[0].attn
    kept: List[torch.Tensor] = []
    def keep(m, a, out):
        out.retain_grad()
        kept.append(out)

    hook = attn.qkv_lif.register_forward_hook(keep)
    counter = sl.SynOpsCounter(model, batch_size=B, neurons=False)
    functional.reset_net(model)
    model(zoo.image(spikes=True))
    hook.remove()
    counter.synops(by_layer=True)["blocks.0.attn.matmul"].backward(retain_graph=True)
    qkv = kept[0]
    q, k, v = spikformer_qkv(qkv.detach(), attn.num_heads)
    # S = sum |v[c, l]| |k[c', l]| over c, c', l: dS/dv = s(v) sum_c' |k[c', l]|, dS/dk = s(k) sum_c |v[c, l]|
    s = lambda t: torch.where(t < 0, -1.0, 1.0)  # noqa: E731
    want = torch.stack([torch.zeros_like(q), s(k) * v.abs().sum(-2, keepdim=True),
                        s(v) * k.abs().sum(-2, keepdim=True)], 2) / B
    T, N, C3, L = qkv.shape
    got = qkv.grad.reshape(T, N, 3, attn.num_heads, C3 // 3 // attn.num_heads, L)
    assert torch.allclose(got, want.reshape(got.shape))
    model.zero_grad()
    counter.synops().backward()
    for p in (attn.qkv_conv_bn[0].weight, model.patch_embed.stages[0].conv_bn.block[0].weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_multi_step_sj_convolutions_keep_the_module_hook_and_ws_convolutions_count_the_standardised_weight():
    net = zoo.csnn("m")
    counter = sl.SynOpsCounter(net, batch_size=B, neurons=False)
    assert not counter._scope.active  # layer.Conv2d's forward only folds time: RULE_FORWARD_AS_IS
    counter.remove()
    torch.manual_seed(0)
    ws = layer.WSConv2d(2, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        ws.weight[0, 0].zero_()  # a zero slice of .weight is not a zero synapse once standardised
    seq = torch.nn.Sequential(ws)
    counter = sl.SynOpsCounter(seq, neurons=False)
    x = zoo.spike_train((B, 2, 5, 5), seed=3)
    seq(x)
    (row,) = counter.snapshot().layers.values()
    w_used = ws.get_weight().detach()
    assert (row.name, row.type) == ("0", "WSConv2d")
    ref = weight_op_counts(lambda a, w: F.conv2d(a, w, padding=1), x, w_used, 3)
    assert row.eff_acs == ref["effective"] and row.synops == pytest.approx(ref["synops"])
    assert (w_used == 0).sum() < (ws.weight == 0).sum()


class _MaskedAttention(nn.Module):
    """A projection, then ``F.scaled_dot_product_attention`` with a causal bool mask, in the module's own forward
    (so the root module is counted op by op: its frame is open when the forward returns)."""

    def __init__(self, e: int) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.fc = nn.Linear(e, e, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.fc(x)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)


@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference_mode"])
def test_masked_attention_counts_the_same_in_every_grad_mode(mode):
    """With gradients off the products are summed when the root's forward returns, inside its open frame: the
    counter's own reduction ops are not counted as the model's (no extra rows). By hand: the projection's synops
    are sum |x| x fan-out, a product's sum(|A| @ |B|) over the allowed (query, key) pairs."""
    b, n, e = 3, 5, 4
    x = (torch.rand(b, n, e, generator=torch.Generator().manual_seed(8)) < 0.5).float()
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    m = _MaskedAttention(e)
    counter = sl.SynOpsCounter(m, neurons=False, batch_dim=0)
    ctx = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[mode]
    with ctx():
        m(x, mask)
    with torch.no_grad():
        q = x @ m.fc.weight.t()
        scores = q @ q.transpose(-2, -1) / e ** 0.5
        attn = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        fc = (x.abs() * (m.fc.weight != 0).sum(0)).sum()
        qk = ((q.abs() @ q.abs().transpose(-2, -1)) * mask).sum()
        av = (attn.abs() @ q.abs()).sum()
    layers = counter.snapshot().layers
    assert sorted(layers) == ["fc", "sdpa.av", "sdpa.qk"]
    assert layers["fc"].synops == pytest.approx(float(fc), rel=1e-5)
    assert layers["sdpa.qk"].synops == pytest.approx(float(qk), rel=1e-5)
    assert layers["sdpa.av"].synops == pytest.approx(float(av), rel=1e-5)


def test_a_module_whose_only_synapses_are_products_is_counted():
    """No parameter, one activation product: the counter attaches (op by op) and counts sum(|q| @ |k|^T)."""

    class QK(nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return q @ k.transpose(-2, -1)

    m = QK()
    counter = sl.SynOpsCounter(m, neurons=False, batch_dim=0)
    q = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]]])  # 1 sample, 2 tokens, 3 features (a count of 2)
    k = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    m(q, k)
    # |q| @ |k|^T = [[1, 2], [1, 1]]: 5 synops
    assert counter.synops().item() == 5.0


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        return self.fc(self.attn(x, x, x, need_weights=False)[0])


@pytest.mark.parametrize("stack", [False, True, "mha"], ids=["layer", "encoder", "attention"])
def test_encoder_layers_keep_their_fused_output_and_are_still_counted(stack):
    """Eval mode under no_grad: torch runs an encoder layer's fused kernel, whose output differs in the last bits
    from the Python path the counter needs to see every product. The output stays that of the fused kernel,
    bit for bit; the counts equal those with torch's fast path switched off (within float rounding: after the
    first fused module, inputs are the fused outputs, as without the counter)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0)
    if stack == "mha":
        model = SelfAttention().eval()
    else:
        model = (nn.TransformerEncoder(layer, 2, enable_nested_tensor=False) if stack else layer).eval()
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        plain = model(x)
    counts = []
    for fast in (True, False):
        torch.backends.mha.set_fastpath_enabled(fast)
        try:
            with sl.SynOpsCounter(model, neurons=False, batch_dim=0) as counter, torch.no_grad():
                for _ in range(2):  # the hooks are back after the guard's second run: the next call is counted too
                    counter.reset()
                    out = model(x)
                    if fast:
                        assert torch.equal(out, plain)
                counts.append(counter.snapshot().per_layer())
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    assert counts[0].keys() == counts[1].keys() and len(counts[0]) >= 4
    for name, row in counts[0].items():
        for key, value in row.items():
            assert value == pytest.approx(counts[1][name][key], rel=1e-6), (name, key)
    with torch.no_grad():
        assert torch.equal(model(x), plain)  # and after remove()


def test_the_fused_output_keeps_the_users_hooks_applied_once():
    """Torch's attention fast path checks no hooks: a user's pre-hook that scales the input and a forward hook
    added after the counter each act once, as without the counter."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16)
    m = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    calls = []

    def pre(mod, args, kwargs):
        calls.append(1)
        y = args[0] * 2
        return (y, y, y), kwargs

    m.register_forward_pre_hook(pre, with_kwargs=True)
    with torch.no_grad():
        plain = m(x, x, x, need_weights=False)[0] * 3
    counter = sl.SynOpsCounter(m, neurons=False, batch_dim=0)
    m.register_forward_hook(lambda mod, i, o: (o[0] * 3, o[1]))
    calls.clear()
    with torch.no_grad():
        out = m(x, x, x, need_weights=False)[0]
    assert calls == [1] and torch.equal(out, plain)
    assert counter.snapshot().total()["dense"] > 0
