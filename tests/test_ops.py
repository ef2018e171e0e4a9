"""synopsloss.ops: counts of functional and tensor ops, checked against brute force.

References (tests/op_reference.py, no synopsloss inside): Jacobian tap counts of the op with its
nonzero weights set to one (weight ops), explicit loops over every term (products, einsum,
attention), closed-form gradients, and the module counter run on a module twin.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.overrides import TorchFunctionMode

import synopsloss as sl
from synopsloss import ops
from synopsloss.ops import OpCount, count_op

from op_reference import (
    attention_terms,
    contraction_terms,
    in_pm1,
    jacobian_map,
    matmul_terms,
    weight_op_counts,
)

KINDS = ("spikes", "counts", "signed", "real")


def make_x(kind: str, shape, gen: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    if kind == "spikes":
        x = torch.randint(0, 2, shape, generator=gen)
    elif kind == "counts":
        x = torch.randint(0, 4, shape, generator=gen)
    elif kind == "signed":
        x = torch.randint(-1, 2, shape, generator=gen)
    else:
        x = torch.randn(shape, generator=gen)
        x = torch.where(x.abs() < 0.4, torch.zeros(()), x)
    return x.to(dtype)


def make_w(shape, gen: torch.Generator, zeros: float = 0.4) -> torch.Tensor:
    w = torch.randn(shape, generator=gen)
    return torch.where(torch.rand(shape, generator=gen) < zeros, torch.zeros(()), w)


def run(func: Callable, *args, is_weight=None, **kwargs) -> List[OpCount]:
    out = func(*args, **kwargs)
    result = count_op(func, args, kwargs, out, is_weight=is_weight)
    assert result is not None
    return result


def check(c: OpCount, ref: Dict[str, Any], rel: float = 1e-6) -> None:
    """Counts equal; synops exactly when integer-valued (spikes, counts), else to float32 rounding
    (32-bit inputs are summed in their own dtype, as the module counter does)."""
    assert float(c.dense) == ref["dense"]
    assert float(c.effective) == ref["effective"]
    if float(ref["synops"]).is_integer():
        assert float(c.synops) == ref["synops"]
    else:
        assert float(c.synops) == pytest.approx(ref["synops"], rel=rel, abs=1e-9)
    if "spiking" in ref:
        assert bool(c.spiking) == ref["spiking"]
    if "rows" in ref:
        assert c.rows == ref["rows"]
    for t in (c.synops, c.dense, c.effective, c.input_sum, c.input_nonzero):
        assert t.dim() == 0 and t.dtype == torch.float64


def add(counts: List[Dict[str, float]]) -> Dict[str, float]:
    return {k: sum(c[k] for c in counts) for k in ("dense", "effective", "synops")}


class Capture(TorchFunctionMode):
    """Counts every op call with count_op; composite ops run transparently (as the counter will)."""

    def __init__(self, is_weight=None) -> None:
        super().__init__()
        self.is_weight = is_weight
        self.counts: List[OpCount] = []
        self.funcs: List[Callable] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.funcs.append(func)
        body = ops.TRANSPARENT_OPS.get(func)
        if body is not None:
            with self:
                return body(*args, **kwargs)
        out = func(*args, **kwargs)
        found = count_op(func, args, kwargs, out, is_weight=self.is_weight)
        if found:
            self.counts.extend(found)
        return out

    def total(self, op: str) -> Dict[str, float]:
        cs = [c for c in self.counts if c.op == op]
        return {"dense": sum(float(c.dense) for c in cs), "effective": sum(float(c.effective) for c in cs),
                "synops": sum(float(c.synops) for c in cs)}


# --------------------------------------------------------------------------- weight ops


@pytest.mark.parametrize("x_shape,w_shape", [((5, 6), (4, 6)), ((2, 3, 6), (4, 6)), ((6,), (4, 6)), ((3, 6), (6,))])
def test_linear_counts_equal_jacobian_tap_counts(x_shape, w_shape):
    gen = torch.Generator().manual_seed(1)
    w = make_w(w_shape, gen)
    for kind in KINDS:
        x = make_x(kind, x_shape, gen)
        (c,) = run(F.linear, x, w, torch.randn(w_shape[0]) if len(w_shape) == 2 else None)
        ref = weight_op_counts(lambda v, ww: F.linear(v, ww), x, w, 1)
        ref["spiking"] = kind in ("spikes", "signed")
        check(c, ref)
        assert c.op == "linear" and c.weighted and c.in_shape == (6,)


CONVS = [
    (F.conv1d, 1, dict(stride=2, padding=1), (2, 3, 9), (4, 3, 3)),
    (F.conv1d, 1, dict(padding="same", dilation=2), (3, 7), (2, 3, 3)),
    (F.conv2d, 2, dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2), (2, 4, 6, 7), (6, 2, 3, 2)),
    (F.conv2d, 2, dict(padding="valid"), (1, 2, 5, 5), (3, 2, 2, 2)),
    (F.conv3d, 3, dict(stride=2, padding=1), (1, 2, 4, 5, 4), (2, 2, 3, 3, 2)),
    (F.conv_transpose1d, 1, dict(stride=2, padding=1, output_padding=1), (2, 3, 5), (3, 2, 3)),
    (F.conv_transpose2d, 2, dict(stride=(2, 3), padding=1, dilation=2, groups=2), (1, 4, 4, 3), (4, 1, 3, 2)),
    (F.conv_transpose3d, 3, dict(stride=2), (1, 2, 3, 2, 3), (2, 2, 2, 2, 2)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("conv,n,kw,x_shape,w_shape", CONVS)
def test_conv_counts_equal_jacobian_tap_counts(conv, n, kw, x_shape, w_shape):
    gen = torch.Generator().manual_seed(2)
    w = make_w(w_shape, gen)
    sample = x_shape[-n - 1:]
    op = lambda v, ww: conv(v, ww, None, **kw)  # noqa: E731
    emap, dmap = jacobian_map(op, w, sample), jacobian_map(op, w, sample, effective=False)
    for kind in KINDS:
        x = make_x(kind, x_shape, gen)
        (c,) = run(conv, x, w, None, **kw)
        xd = x.double().reshape(-1, *sample)
        check(c, {"dense": float(dmap.sum()) * xd.shape[0], "effective": float(((xd != 0) * emap).sum()),
                  "synops": float((xd.abs() * emap).sum()), "spiking": kind in ("spikes", "signed"),
                  "rows": xd.shape[0]})
        assert c.in_shape == tuple(sample) and c.out_shape == tuple(conv(x, w, None, **kw).shape[-n - 1:])


def test_torch_convolution_counts_like_the_conv_it_runs():
    gen = torch.Generator().manual_seed(3)
    x, w = make_x("spikes", (2, 3, 6, 6), gen), make_w((4, 3, 3, 3), gen)
    (a,) = run(torch.convolution, x, w, None, (2, 2), (1, 1), (1, 1), False, (0, 0), 1)
    ref = weight_op_counts(lambda v, ww: F.conv2d(v, ww, stride=2, padding=1), x, w, 3)
    check(a, ref)
    wt = make_w((3, 2, 3, 3), gen)
    (b,) = run(torch.convolution, x, wt, None, (2, 2), (1, 1), (1, 1), True, (1, 1), 1)
    check(b, weight_op_counts(lambda v, ww: F.conv_transpose2d(v, ww, stride=2, padding=1, output_padding=1), x, wt, 3))
    assert b.op == "conv_transpose2d"


@pytest.mark.parametrize("conv,n,kw,x_shape,w_shape", [CONVS[2], CONVS[6]])
def test_weight_op_gradient_is_the_map_at_zero_and_minus_the_map_below(conv, n, kw, x_shape, w_shape):
    gen = torch.Generator().manual_seed(4)
    x = make_x("signed", x_shape, gen).requires_grad_(True)
    w = make_w(w_shape, gen)
    (c,) = run(conv, x, w, None, **kw)
    c.synops.backward()
    emap = jacobian_map(lambda v, ww: conv(v, ww, None, **kw), w, x_shape[1:])
    sign = torch.where(x.detach() < 0, -1.0, 1.0).double()
    assert torch.equal(x.grad.double(), sign * emap)
    assert (x.detach() == 0).any() and (emap > 0).any()


def test_fake_quantised_weight_is_counted_with_its_zeros_and_rebuilt_each_call():
    gen = torch.Generator().manual_seed(5)
    w = nn.Parameter(torch.randn(4, 3, 3, 3, generator=gen))
    x = make_x("spikes", (2, 3, 5, 5), gen)
    mask = (torch.rand(w.shape, generator=gen) < 0.5).float()
    before = ops.MAP_CACHE.builds
    (c1,) = run(F.conv2d, x, w * mask, None, padding=1)
    (c2,) = run(F.conv2d, x, w * (1 - mask), None, padding=1)
    assert ops.MAP_CACHE.builds == before + 2
    for c, m in ((c1, mask), (c2, 1 - mask)):
        check(c, weight_op_counts(lambda v, ww: F.conv2d(v, ww, padding=1), x, w.detach() * m, 3))


def test_parameter_map_is_cached_until_the_weight_changes_in_place():
    gen = torch.Generator().manual_seed(6)
    w = nn.Parameter(make_w((4, 3, 3), gen))
    x = make_x("spikes", (2, 3, 8), gen)
    ops.MAP_CACHE.clear()
    run(F.conv1d, x, w)
    builds = ops.MAP_CACHE.builds
    (same,) = run(F.conv1d, x, w)
    assert ops.MAP_CACHE.builds == builds
    with torch.no_grad():
        w.zero_()
        w[0, 0, 0] = 1.0
    (after,) = run(F.conv1d, x, w)
    assert ops.MAP_CACHE.builds == builds + 1
    check(after, weight_op_counts(lambda v, ww: F.conv1d(v, ww), x, w.detach(), 2))
    assert float(after.effective) == float((x[:, 0, :6] != 0).sum())


@pytest.mark.parametrize("layer,fn", [
    (nn.Linear(6, 5, bias=False), lambda m, x: F.linear(x, m.weight)),
    (nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), lambda m, x: F.conv2d(x, m.weight, None, 2, 1)),
])
@pytest.mark.parametrize("kind", ["spikes", "counts"])
def test_functional_call_counts_like_its_module_twin(layer, fn, kind):
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        layer.weight.mul_((torch.rand(layer.weight.shape, generator=gen) < 0.6).float())
    shape = (4, 6) if isinstance(layer, nn.Linear) else (4, 3, 7, 7)
    x = make_x(kind, shape, gen)
    net = nn.Sequential(layer)
    with sl.SynOpsCounter(net, neurons=False) as counter:
        net(x)
        mod = counter.snapshot().per_layer()["0"]
    func = F.linear if isinstance(layer, nn.Linear) else F.conv2d
    args = (x, layer.weight) if func is F.linear else (x, layer.weight, None, 2, 1)
    (c,) = run(func, *args)
    b = x.shape[0]
    assert float(c.dense) / b == mod["dense"]
    eff = float(c.effective) / b
    events = not bool(c.spiking) and bool((x == x.round()).all())  # integer counts: one accumulate per event
    want = (eff, 0.0) if bool(c.spiking) else (float(c.synops) / b, 0.0) if events else (0.0, eff)
    assert (mod["eff_acs"], mod["eff_macs"]) == pytest.approx(want, rel=1e-12)
    assert float(c.synops) / b == pytest.approx(mod["synops"], rel=1e-12)


def test_weight_preprocessing_counts_nothing():
    a, b = nn.Parameter(torch.randn(4, 2)), nn.Parameter(torch.randn(2, 3))
    assert run(torch.matmul, a, b) == []
    assert run(F.linear, a.t(), nn.Parameter(torch.randn(3, 4))) == []
    plain = torch.randn(3, 4)
    assert run(torch.mm, plain, plain.t(), is_weight=lambda t: True) == []


# --------------------------------------------------------------------------- products


MATMUL_SHAPES = [
    ((3, 4), (4, 2)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (3, 4, 2)),  # broadcast batch
    ((4,), (2, 4, 3)),  # 1-D @ batched (1-D has no batch dims: a weight by rule 3)
    ((2, 3, 4), (4,)),  # batched @ 1-D
    ((4,), (4,)),
    ((1, 3, 4), (2, 4, 3)),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul_counts_equal_explicit_triple_loops(sa, sb, kind):
    gen = torch.Generator().manual_seed(8)
    a, b = make_x(kind, sa, gen), make_x("real" if kind == "counts" else kind, sb, gen)
    (c,) = run(torch.matmul, a, b)
    a_w = len(sa) <= 2 and len(sb) > 2
    b_w = len(sb) <= 2 and len(sa) > 2
    ref = matmul_terms(a, b, a_weight=a_w, b_weight=b_w)
    if a_w or b_w:
        ref["spiking"] = in_pm1(b if a_w else a)
        ref["rows"] = (b if a_w else a).numel() // 4
    else:
        ref["spiking"] = in_pm1(a) or in_pm1(b)
        ref["rows"] = math.prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])) if a.dim() > 2 else 1
    check(c, ref)
    assert c.weighted == (a_w or b_w)


def test_matmul_with_a_shared_weight_counts_exactly_like_linear():
    gen = torch.Generator().manual_seed(9)
    x, w = make_x("counts", (2, 5, 6), gen), make_w((6, 3), gen)
    (lin,) = run(F.linear, x, w.t())
    for weight in (w, nn.Parameter(w)):  # by shape (no batch dims) and by identity
        (mm,) = run(torch.matmul, x, weight)
        for key in ("synops", "dense", "effective", "spiking", "input_sum", "input_nonzero"):
            assert torch.equal(getattr(mm, key), getattr(lin, key)), key
        assert (mm.rows, mm.in_shape, mm.out_shape, mm.weighted) == (10, (6,), (3,), True)
    # weight on the left: W[M,K] @ x[B,K,N], every column of x meets W
    (left,) = run(torch.matmul, w.t(), x.transpose(1, 2))
    check(left, weight_op_counts(lambda v, ww: F.linear(v, ww), x, w.t(), 1))
    assert left.rows == 10


def test_spiking_product_is_ac_when_one_operand_is_binary():
    gen = torch.Generator().manual_seed(10)
    real, spikes = make_x("real", (2, 3, 4), gen), make_x("spikes", (2, 4, 3), gen)
    assert bool(run(torch.bmm, real, spikes)[0].spiking)
    assert bool(run(torch.bmm, spikes.transpose(1, 2), real.transpose(1, 2))[0].spiking)
    assert not bool(run(torch.bmm, real, make_x("real", (2, 4, 3), gen))[0].spiking)
    assert not bool(run(torch.bmm, real, 2 * spikes)[0].spiking)


@pytest.mark.parametrize("kinds", [("signed", "real"), ("spikes", "counts"), ("counts", "spikes")])
@pytest.mark.parametrize("sa,sb", [((2, 3, 4), (2, 4, 5)), ((4,), (2, 4, 3)), ((2, 1, 3, 4), (3, 4, 2))])
def test_product_gradient_reaches_both_operands_with_the_closed_form(sa, sb, kinds):
    """Signed operands (abs, sign mask) and non-negative ones (spikes, counts: no abs) give the closed form."""
    gen = torch.Generator().manual_seed(11)
    a = make_x(kinds[0], sa, gen).double().requires_grad_(True)
    b = make_x(kinds[1], sb, gen).double().requires_grad_(True)
    a_w = len(sa) <= 2 and len(sb) > 2
    (c,) = run(torch.matmul, a, b)
    c.synops.backward()
    # closed form: d/dA[m,k] = s(A) * sum_n |B[k,n]| (a weight operand: its nonzero mask, no gradient)
    a2 = a.detach().unsqueeze(0) if a.dim() == 1 else a.detach()
    batch = torch.broadcast_shapes(a2.shape[:-2], b.shape[:-2])
    bb = b.detach().expand(*batch, *b.shape[-2:])
    aa = a2.expand(*batch, *a2.shape[-2:])
    bval = bb.abs()
    aval = (aa != 0).double() if a_w else aa.abs()
    sign = lambda t: torch.where(t < 0, -1.0, 1.0).double()  # noqa: E731
    grad_b = torch.zeros_like(bb)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in bb.shape]).tolist():
        *bi, k, n = idx
        grad_b[tuple(idx)] = aval[tuple(bi)][:, k].sum() * sign(bb[tuple(idx)])
    expect_b = grad_b.reshape(-1, *b.shape).sum(0) if grad_b.dim() > b.dim() else grad_b
    while expect_b.dim() > b.dim():
        expect_b = expect_b.sum(0)
    assert torch.allclose(b.grad, expect_b)
    if a_w:
        assert a.grad is None
    else:
        grad_a = sign(aa) * bval.sum(-1).unsqueeze(-2)
        while grad_a.dim() > a.dim():
            grad_a = grad_a.sum(0)
        ones = [i for i, s in enumerate(a.shape) if s == 1]
        grad_a = grad_a.sum(dim=ones, keepdim=True) if ones else grad_a
        assert torch.allclose(a.grad, grad_a)


def test_product_synops_pass_gradcheck():
    gen = torch.Generator().manual_seed(12)
    a = (torch.rand(2, 3, 4, generator=gen, dtype=torch.float64) + 0.5) * torch.tensor([1.0, -1.0, 1.0, -1.0])
    b = torch.rand(2, 4, 2, generator=gen, dtype=torch.float64) + 0.5
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: run(torch.bmm, x, y)[0].synops, (a, b))


# spellings: every Python form reaches count_op as a counted callable with the same numbers
SPELLINGS = {
    "x @ w": lambda a, b: a @ b,
    "x.matmul": lambda a, b: a.matmul(b),
    "torch.matmul": lambda a, b: torch.matmul(a, b),
    "w.__rmatmul__": lambda a, b: b.__rmatmul__(a),
    "torch.bmm": lambda a, b: torch.bmm(a, b),
    "x.bmm": lambda a, b: a.bmm(b),
    "einsum": lambda a, b: torch.einsum("bmk,bkn->bmn", a, b),
    "einsum list": lambda a, b: torch.einsum("bmk,bkn->bmn", [a, b]),
    "einsum sublist": lambda a, b: torch.einsum(a, [0, 1, 2], b, [0, 2, 3], [0, 1, 3]),
    "torch.baddbmm": lambda a, b: torch.baddbmm(torch.zeros(()), a, b),
}


@pytest.mark.parametrize("name", list(SPELLINGS))
def test_every_spelling_of_a_product_is_counted_the_same(name):
    gen = torch.Generator().manual_seed(13)
    a, b = make_x("spikes", (2, 3, 4), gen), make_x("real", (2, 4, 2), gen)
    with Capture() as cap:
        SPELLINGS[name](a, b)
    assert len(cap.counts) == 1
    ref = matmul_terms(a, b)
    ref.update(spiking=True, rows=2)
    check(cap.counts[0], ref)


@pytest.mark.parametrize("name,fn,la,lb", [
    ("mm", lambda a, b: torch.mm(a, b), "mk", "kn"),
    ("mv", lambda a, b: a.mv(b), "mk", "k"),
    ("dot", lambda a, b: torch.dot(a, b), "k", "k"),
    ("outer", lambda a, b: torch.outer(a, b), "m", "n"),
    ("inner", lambda a, b: torch.inner(a, b), "xyk", "zk"),
    ("tensordot", lambda a, b: torch.tensordot(a, b, dims=([1, 2], [0, 1])), "xkl", "klz"),
    ("addbmm", lambda a, b: torch.addbmm(torch.zeros(()), a, b), "Bmk", "Bkn"),
])
def test_matrix_vector_family_counts_equal_term_loops(name, fn, la, lb):
    gen = torch.Generator().manual_seed(14)
    sizes = {"m": 3, "k": 4, "n": 2, "x": 2, "y": 3, "z": 3, "l": 2, "B": 2}
    a = make_x("counts", tuple(sizes[c] for c in la), gen)
    b = make_x("real", tuple(sizes[c] for c in lb), gen)
    with Capture() as cap:
        fn(a, b)
    assert len(cap.counts) == 1, name
    check(cap.counts[0], contraction_terms(a, b, la, lb))


def test_additive_minus_inf_input_removes_its_terms():
    gen = torch.Generator().manual_seed(15)
    q, kt = make_x("spikes", (2, 3, 4), gen), make_x("spikes", (2, 4, 3), gen)
    mask = torch.zeros(3, 3).masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1), float("-inf"))
    (c,) = run(torch.baddbmm, mask, q, kt)
    check(c, contraction_terms(q, kt, "Bmk", "Bkn", mask=(mask != float("-inf")), lm="mn"))
    (bias,) = run(torch.addmm, torch.tensor([0.0, float("-inf"), 1.0]), q[0], kt[0])
    check(bias, contraction_terms(q[0], kt[0], "mk", "kn", mask=torch.tensor([True, False, True]), lm="n"))
    (ignored,) = run(torch.baddbmm, mask, q, kt, beta=0)
    check(ignored, matmul_terms(q, kt))
    target = mask.expand(2, 3, 3).clone()
    out = target.baddbmm_(q, kt)
    (inplace,) = count_op(torch.Tensor.baddbmm_, (target, q, kt), {}, out)
    check(inplace, matmul_terms(q, kt))
    assert run(torch.baddbmm, mask, q, kt, alpha=0) == []


EINSUMS = [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 2)]),
    ("ij,jk", [(3, 4), (4, 2)]),  # implicit output
    ("...ij,jk->...ik", [(2, 2, 3, 4), (4, 2)]),
    ("bhid,bhjd->bhij", [(1, 2, 3, 2), (1, 2, 4, 2)]),
    ("ij,ij->", [(1, 4), (3, 4)]),  # size-1 broadcast
    ("ii,i->i", [(3, 3), (3,)]),  # diagonal
    ("ij,jk->k", [(2, 3), (3, 2)]),  # index summed in one operand only
    ("i,j->ij", [(3,), (2,)]),
]


@pytest.mark.parametrize("kind", ["counts", "signed", "real"])
@pytest.mark.parametrize("eq,shapes", EINSUMS)
def test_einsum_counts_equal_term_loops(eq, shapes, kind):
    gen = torch.Generator().manual_seed(16)
    a, b = (make_x(kind, s, gen) for s in shapes)
    (c,) = run(torch.einsum, eq, a, b)
    (la, lb), _ = ops._parse_einsum(eq, (a.dim(), b.dim()))
    ref = contraction_terms(a, b, la, lb)
    ref["spiking"] = in_pm1(a) or in_pm1(b)
    check(c, ref)


def test_einsum_with_a_parameter_counts_like_linear():
    gen = torch.Generator().manual_seed(17)
    x, w = make_x("spikes", (2, 3, 5), gen), nn.Parameter(make_w((4, 5), gen))
    (e,) = run(torch.einsum, "bnc,dc->bnd", x, w)
    (lin,) = run(F.linear, x, w)
    for key in ("synops", "dense", "effective", "spiking"):
        assert torch.equal(getattr(e, key), getattr(lin, key))
    assert (e.rows, e.in_shape, e.out_shape) == (lin.rows, lin.in_shape, lin.out_shape) == (6, (5,), (4,))


def test_einsum_operand_counts():
    x = torch.randn(3, 3)
    assert run(torch.einsum, "ii->i", x) == []
    with pytest.raises(ops.UncountableOpError, match="3 operands"):
        run(torch.einsum, "ij,jk,kl->il", x, x, x)


@settings(max_examples=25, deadline=None)
@given(
    a_dim=st.integers(1, 4), b_dim=st.integers(1, 4), seed=st.integers(0, 10_000),
    kind=st.sampled_from(KINDS), ones=st.lists(st.booleans(), min_size=2, max_size=2),
)
def test_property_matmul_counts_equal_triple_loops(a_dim, b_dim, seed, kind, ones):
    gen = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, 4, (1,), generator=gen))
    nb = max(a_dim, b_dim) - 2
    batch = [int(s) for s in torch.randint(1, 3, (max(nb, 0),), generator=gen)]

    def shape(dim, last2, size1):
        if dim == 1:
            return (k,)
        bdims = batch[len(batch) - (dim - 2):] if dim > 2 else []
        bdims = [1 if (size1 and i == 0) else s for i, s in enumerate(bdims)]
        return (*bdims, *last2)

    a = make_x(kind, shape(a_dim, (int(torch.randint(1, 4, (1,), generator=gen)), k), ones[0]), gen)
    b = make_x("real", shape(b_dim, (k, int(torch.randint(1, 4, (1,), generator=gen))), ones[1]), gen)
    (c,) = run(torch.matmul, a, b)
    a_w, b_w = a.dim() <= 2 < b.dim(), b.dim() <= 2 < a.dim()
    check(c, matmul_terms(a, b, a_weight=a_w, b_weight=b_w))


# --------------------------------------------------------------------------- attention


def _flat(t: torch.Tensor, batch) -> torch.Tensor:
    return t.expand(*batch, *t.shape[-2:]).reshape(-1, *t.shape[-2:])


@pytest.mark.parametrize("case", ["plain", "causal", "bool", "float", "empty_row", "gqa", "broadcast"])
def test_sdpa_counts_equal_explicit_loops(case):
    gen = torch.Generator().manual_seed(18)
    B, H, L, S, E, Ev = 2, 2, 3, 4, 2, 3
    q = make_x("spikes", (B, H, L, E), gen)
    k = make_x("spikes", (B, H, S, E), gen)
    v = make_x("real", (B, H, S, Ev), gen)
    kw: Dict[str, Any] = {}
    allowed: Optional[torch.Tensor] = None
    if case == "causal":
        k, v = k[:, :, :L], v[:, :, :L]
        kw["is_causal"] = True
        allowed = torch.ones(L, L, dtype=torch.bool).tril()
    elif case in ("bool", "empty_row"):
        allowed = torch.rand(B, 1, L, S, generator=gen) < 0.6
        if case == "empty_row":
            allowed[0, 0, 1] = False
        kw["attn_mask"] = allowed
    elif case == "float":
        allowed = torch.rand(L, S, generator=gen) < 0.6
        kw["attn_mask"] = torch.zeros(L, S).masked_fill(~allowed, float("-inf")) + 0.5
    elif case == "gqa":
        q = make_x("spikes", (B, 4, L, E), gen)
        kw["enable_gqa"] = True
    elif case == "broadcast":
        k, v = k[:1], v[:1]
    counts = run(F.scaled_dot_product_attention, q, k, v, **kw)
    assert [c.op for c in counts] == ["sdpa.qk", "sdpa.av"]
    if case == "gqa":
        k, v = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    full = None if allowed is None else _flat(allowed, batch) if allowed.dim() > 2 else allowed.expand(
        math.prod(batch), *allowed.shape)
    ref = attention_terms(_flat(q, batch), _flat(k, batch), _flat(v, batch), full)
    for c in counts:
        check(c, ref[c.op], rel=1e-6)
        assert c.rows == math.prod(batch)
    assert bool(counts[0].spiking) and not bool(counts[1].spiking)


def test_sdpa_synops_are_differentiable_in_q_k_and_v():
    gen = torch.Generator().manual_seed(19)
    q, k, v = (torch.randn(1, 2, 3, 2, generator=gen, dtype=torch.float64).requires_grad_(True) for _ in range(3))
    mask = torch.rand(3, 3, generator=gen) < 0.7
    assert torch.autograd.gradcheck(
        lambda a, b, c: sum(x.synops for x in run(F.scaled_dot_product_attention, a, b, c, attn_mask=mask)),
        (q, k, v),
    )


def test_sdpa_dropout_is_counted_as_its_expectation_with_a_warning():
    gen = torch.Generator().manual_seed(20)
    q, k, v = (make_x("real", (1, 2, 3, 2), gen) for _ in range(3))
    exact = run(F.scaled_dot_product_attention, q, k, v)
    with pytest.warns(ops.ExpectedCountWarning, match="dropout_p=0.25"):
        drop = run(F.scaled_dot_product_attention, q, k, v, dropout_p=0.25)
    assert float(drop[1].effective) == pytest.approx(0.75 * float(exact[1].effective))
    assert float(drop[1].synops) == pytest.approx(float(exact[1].synops))
    assert torch.equal(drop[0].effective, exact[0].effective)


def _linear_ref(x: torch.Tensor, w: torch.Tensor) -> Dict[str, float]:
    return weight_op_counts(lambda v, ww: F.linear(v, ww), x, w, 1)


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    b, n, e = t.shape
    return t.reshape(b, n, h, e // h).transpose(1, 2).reshape(b * h, n, e // h)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_counts_equal_brute_force(mode, need_weights):
    torch.manual_seed(21)
    E, H, B, N = 4, 2, 2, 3
    mha = nn.MultiheadAttention(E, H, batch_first=True)
    getattr(mha, mode)()
    x = make_x("spikes", (B, N, E), torch.Generator().manual_seed(22))
    mask = torch.ones(N, N, dtype=torch.bool).triu(1)  # True: not allowed (nn.MultiheadAttention's convention)
    with torch.no_grad():
        plain = mha(x, x, x, need_weights=need_weights, attn_mask=mask)[0]
        with Capture() as cap:
            out = mha(x, x, x, need_weights=need_weights, attn_mask=mask)[0]
    assert torch.allclose(out, plain, atol=1e-6)
    assert torch._native_multi_head_attention not in cap.funcs
    # brute force: the projections by Jacobian tap counts, the products by loops
    w_in, b_in = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
    qkv = F.linear(x, w_in, b_in)
    q, k, v = (_heads(t, H) for t in qkv.chunk(3, -1))
    allowed = (~mask).expand(B * H, N, N)
    d = E // H
    attn = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(d) + torch.zeros(N, N).masked_fill(mask, -math.inf), -1)
    ctx = (attn @ v).reshape(B, H, N, d).transpose(1, 2).reshape(B, N, E)
    linear = add([_linear_ref(x, w_in), _linear_ref(ctx, mha.out_proj.weight.detach())])
    if need_weights:  # bmm/baddbmm counted on the unscaled q (as sdpa); attn @ v counts every (masked) pair in dense
        qk = contraction_terms(q, k.transpose(1, 2), "Bmk", "Bkn", mask=allowed, lm="Bmn")
        av = contraction_terms(attn, v, "Bmk", "Bkn")
        names = ("baddbmm", "bmm")
    else:
        ref = attention_terms(q, k, v, allowed)
        qk, av = ref["sdpa.qk"], ref["sdpa.av"]
        names = ("sdpa.qk", "sdpa.av")
    for got, want in ((cap.total("linear"), linear), (cap.total(names[0]), qk), (cap.total(names[1]), av)):
        assert got["dense"] == want["dense"]
        assert got["effective"] == want["effective"]
        assert got["synops"] == pytest.approx(want["synops"], rel=1e-5)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_transformer_encoder_layer_counts_equal_brute_force(mode):
    torch.manual_seed(23)
    E, H, B, N, Fd = 4, 2, 2, 3, 6
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=Fd, dropout=0.0, batch_first=True)
    getattr(layer, mode)()
    x = make_x("spikes", (B, N, E), torch.Generator().manual_seed(24))
    with torch.no_grad():
        plain = layer(x)
        with Capture() as cap:
            out = layer(x)
    assert torch.allclose(out, plain, atol=1e-5)
    assert torch._transformer_encoder_layer_fwd not in cap.funcs
    sa = layer.self_attn
    qkv = F.linear(x, sa.in_proj_weight, sa.in_proj_bias).detach()
    q, k, v = (_heads(t, H) for t in qkv.chunk(3, -1))
    ctx = (torch.softmax(q @ k.transpose(1, 2) / math.sqrt(E // H), -1) @ v)
    ctx = ctx.reshape(B, H, N, E // H).transpose(1, 2).reshape(B, N, E)
    with torch.no_grad():
        h1 = layer.norm1(x + sa.out_proj(ctx))
        hidden = F.relu(layer.linear1(h1))
    linear = add([_linear_ref(x, sa.in_proj_weight.detach()), _linear_ref(ctx, sa.out_proj.weight.detach()),
                  _linear_ref(h1, layer.linear1.weight.detach()), _linear_ref(hidden, layer.linear2.weight.detach())])
    ref = attention_terms(q, k, v)
    for got, want in ((cap.total("linear"), linear), (cap.total("sdpa.qk"), ref["sdpa.qk"]),
                      (cap.total("sdpa.av"), ref["sdpa.av"])):
        assert got["dense"] == want["dense"]
        assert got["effective"] == want["effective"]
        assert got["synops"] == pytest.approx(want["synops"], rel=1e-5)


# --------------------------------------------------------------------------- precision, errors, tables


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_counts_are_exact(dtype):
    gen = torch.Generator().manual_seed(25)
    x = make_x("counts", (64, 3, 40), gen, dtype=dtype)
    y = make_x("counts", (64, 40, 30), gen, dtype=dtype)
    (c,) = run(torch.bmm, x, y)
    exact = (x.double().sum(1) * y.double().sum(2)).sum()  # sum_k (sum_m A) (sum_n B), above bf16's 256
    assert float(c.synops) == float(exact) > 2 ** 16
    w = make_w((30, 40), gen).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (lin,) = run(F.linear, x, w)
    assert float(lin.synops) == float((x.double().reshape(-1, 40).sum(0) * (w != 0).double().sum(0)).sum())


def test_flagged_unknown_and_non_synapse_ops():
    x = torch.randn(2, 3)
    flagged = (F.bilinear, torch.linalg.multi_dot, torch._native_multi_head_attention, F.multi_head_attention_forward)
    for func in flagged:
        assert func in ops.FLAGGED_OPS
        with pytest.raises(ops.UncountableOpError, match="cannot count"):
            count_op(func, (x,), {}, x)
    assert count_op(torch.add, (x, x), {}, x + x) is None
    assert count_op(F.embedding, (torch.tensor([0]), x), {}, x[:1]) is None
    assert F.embedding in ops.NOT_SYNAPSE_OPS and F.linear in ops.COUNTED_OPS
    assert set(ops.COUNTED_OPS) == set(ops.OP_HANDLERS)
    assert not set(ops.COUNTED_OPS) & set(ops.FLAGGED_OPS)


def test_bad_operands_get_clear_errors():
    with pytest.raises(TypeError, match="complex"):
        run(torch.matmul, torch.randn(2, 2, dtype=torch.complex64), torch.randn(2, 2, dtype=torch.complex64))
    sparse = torch.eye(3).to_sparse()
    with pytest.raises(TypeError, match="strided"):
        count_op(torch.mm, (sparse, torch.eye(3)), {}, torch.eye(3))
    with pytest.raises(TypeError, match="is_weight"):
        run(torch.matmul, torch.eye(2), torch.eye(2), is_weight=3)
    with pytest.raises(TypeError, match="not a tensor"):
        count_op(F.linear, ([1.0], torch.eye(2)), {}, torch.eye(2))


def test_worked_spikformer_example():
    """The worked example of the report / docs, by hand: B=1, N=4 tokens, d=2."""
    q = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    kt = k.t()
    (qk,) = run(torch.matmul, q[None], kt[None])
    # column sums of q: (2, 2); row sums of k^T = column sums of k: (2, 2) -> 2*2 + 2*2 = 8
    assert (float(qk.effective), float(qk.synops), float(qk.dense), bool(qk.spiking)) == (8.0, 8.0, 32.0, True)
    attn = q @ kt  # [[1,0,1,0],[2,1,1,0],[0,0,0,0],[1,1,0,0]]
    (av,) = run(torch.matmul, attn[None], v[None])
    # nonzeros per column of attn: (3, 2, 2, 0); nonzeros per row of v: (1, 2, 1, 1) -> 3 + 4 + 2 + 0 = 9
    # |attn| column sums: (4, 2, 2, 0); |v| row sums: (1, 2, 1, 1) -> 4 + 4 + 2 + 0 = 10
    # attn holds a 2: not spiking; v is binary: AC
    assert (float(av.effective), float(av.synops), float(av.dense), bool(av.spiking)) == (9.0, 10.0, 32.0, True)


def test_mode_entered_in_a_forward_pre_hook_disables_the_fused_fast_paths():
    torch.manual_seed(26)
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True).eval()
    mha = nn.MultiheadAttention(4, 2, batch_first=True).eval()
    x = make_x("spikes", (2, 3, 4), torch.Generator().manual_seed(27))

    def counted(model: nn.Module, module: nn.Module) -> List[str]:
        cap = Capture()

        def enter(m, a):
            cap.__enter__()  # (returns None: a pre-hook's return value replaces the args)

        def leave(m, a, o):
            cap.__exit__(None, None, None)

        pre, post = module.register_forward_pre_hook(enter), module.register_forward_hook(leave)
        with torch.no_grad():
            model(x) if model is layer else model(x, x, x, need_weights=False)
        pre.remove()
        post.remove()
        return [c.op for c in cap.counts]

    assert counted(layer, layer) == ["linear", "sdpa.qk", "sdpa.av", "linear", "linear", "linear"]
    assert counted(mha, mha) == ["linear", "sdpa.qk", "sdpa.av", "linear"]
    # a hook on any submodule already sends TransformerEncoderLayer down its Python path
    assert counted(layer, layer.self_attn) == ["linear", "sdpa.qk", "sdpa.av", "linear"]


def test_is_weight_marks_tensors_computed_from_buffers():
    gen = torch.Generator().manual_seed(28)
    x, buf = make_x("spikes", (5, 4), gen), make_w((4, 3), gen)
    scaled = buf * 2.0  # computed from a buffer: no parameter, no batch dims on either side
    (as_product,) = run(torch.mm, x, scaled)
    assert not as_product.weighted and as_product.rows == 1
    (as_weight,) = run(torch.mm, x, scaled, is_weight=lambda t: t is scaled)
    check(as_weight, _linear_ref(x, scaled.t()))
    assert as_weight.weighted and as_weight.rows == 5


@pytest.mark.parametrize("padding_mode", ["reflect", "circular"])
def test_conv_after_f_pad_counts_like_the_module_with_its_padding_mode(padding_mode):
    torch.manual_seed(29)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode=padding_mode, bias=False)
    x = make_x("counts", (2, 2, 5, 4), torch.Generator().manual_seed(30))
    net = nn.Sequential(conv)
    with sl.SynOpsCounter(net, neurons=False) as counter:
        net(x)
        mod = counter.snapshot().per_layer()["0"]
    with Capture() as cap:  # nn.Conv2d pads with F.pad, then runs F.conv2d with padding=0
        conv._conv_forward(x, conv.weight, None)
    (c,) = cap.counts
    assert c.op == "conv2d" and c.in_shape == (2, 7, 6)
    assert float(c.dense) / 2 == mod["dense"]
    # spike counts (integers): one accumulate per event, so the ACs are the synops
    assert (float(c.synops) / 2, float(c.synops) / 2) == (mod["eff_acs"], mod["synops"]) and mod["eff_macs"] == 0


def test_products_are_recorded_for_the_read_except_inside_a_transform():
    """The function mode's record of an activation product computes nothing until read (``later``), and gives
    count_op's numbers then; inside a torch.func transform its operands live only there: counted at once."""
    from synopsloss.ops import record_op

    gen = torch.Generator().manual_seed(21)
    a, b = make_x("spikes", (3, 2, 4), gen), make_x("counts", (3, 4, 5), gen)
    (rec,) = record_op(torch.matmul, (a, b), {}, a @ b)
    (now,) = count_op(torch.matmul, (a, b), {}, a @ b)
    assert rec.later is not None and rec.synops is None
    assert (rec.rows, tuple(rec.in_shape), tuple(rec.out_shape)) == (now.rows, tuple(now.in_shape),
                                                                      tuple(now.out_shape))
    for got, want in zip(rec.later(), (now.synops, now.dense, now.effective, now.spiking, now.input_sum,
                                       now.input_nonzero)):
        assert torch.equal(got, want)
    seen = []

    def f(x, y):
        out = x @ y
        seen.extend(record_op(torch.matmul, (x, y), {}, out))
        return out

    torch.func.vmap(f)(a, b)
    assert seen and all(c.later is None and c.synops is not None for c in seen)


class _MatmulWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, 1))

    def forward(self, x):
        return x @ self.w.t()


@pytest.mark.parametrize("grad", [True, False])
def test_x_at_a_weight_counts_spike_counts_exactly_past_2_to_the_24(grad):
    """``x @ W.t()`` is F.linear(x, W): the same record and rule, so a neuron's sum of 20001 counts of 1001 is
    taken in float64 (float32 gave 20021000)."""
    net = _MatmulWeight()
    x = torch.full((20001, 1), 1001.0)
    counter = sl.SynOpsCounter(net, neurons=False)
    with torch.set_grad_enabled(grad):
        net(x)
    total = counter.snapshot().total()
    assert total["eff_acs"] * 20001 == 20021001.0 and total["synops"] * 20001 == 20021001.0
