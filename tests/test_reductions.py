"""The hooks' block-wise reductions against brute force, for one block and for many (BLOCK made tiny)."""

from __future__ import annotations

import pytest
import torch

from synopsloss import reductions as R


@pytest.fixture(params=["one block", "row blocks", "column blocks"])
def walk(request, monkeypatch):
    """The same tensors walked whole, in blocks of whole rows, and in blocks of columns."""
    if request.param == "row blocks":
        monkeypatch.setattr(R, "BLOCK", 64 * 3)  # n = 3 columns * 64 <= BLOCK: blocks of 64 rows
    elif request.param == "column blocks":
        monkeypatch.setattr(R, "BLOCK", 7)  # few rows, long rows: blocks of 7 // rows columns
    return request.param


def _signed_counts(rows: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, (rows, n), generator=g).float()
    x[0, 0] = -0.0  # a negative zero: |x| = 0, gradient +1
    return x


@pytest.mark.parametrize("shape", [(300, 3), (4, 50), (1, 1)])
def test_row_stats_equal_brute_force_sums(walk, shape):
    x = _signed_counts(*shape)
    st = R.row_stats(x, R.Scratch(), want_min=True)
    assert torch.equal(st.mag_sum, x.abs().sum(0))
    assert torch.equal(st.nonzero, (x != 0).float().sum(0))
    assert float(st.amax) == float(x.abs().max())
    assert float(st.amin) == float(x.min())
    assert st.events is None


@pytest.mark.parametrize("per_element", [False, True])
def test_events_are_rounded_products_with_the_divisors(walk, per_element):
    g = torch.Generator().manual_seed(1)
    counts = torch.randint(0, 10, (6, 40), generator=g).double()
    divisor = torch.randint(1, 10, (6, 40) if per_element else (40,), generator=g).float()
    x = (counts / divisor).float()  # pooled values: events / divisor, rounded to float32
    st = R.row_stats(x, R.Scratch(), scale=divisor)
    expected = (x.double() * divisor.double()).round().sum(0)
    assert torch.equal(st.events.double(), expected)
    assert torch.equal(st.events.double(), counts.sum(0))


def test_half_precision_sums_in_the_given_dtype(walk):
    x = torch.full((300, 3), 1.0, dtype=torch.bfloat16)  # 300 > 256: a bf16 sum would round
    st = R.row_stats(x, R.Scratch(), red=torch.float64)
    assert st.mag_sum.dtype == torch.float64 and st.mag_sum.tolist() == [300.0] * 3
    assert st.nonzero.tolist() == [300.0] * 3


@pytest.mark.parametrize("nonnegative", [True, False])
def test_gradient_is_the_sign_with_plus_one_at_zero(walk, nonnegative):
    x = _signed_counts(6, 40, seed=2)
    if nonnegative:
        x = x.abs()  # the shortcut that returns an expanded gradient
    x.requires_grad_(True)
    w = torch.randn(40, dtype=torch.float64)
    scale = torch.randint(1, 5, (40,)).float()
    st = R.abs_row_sums(x, R.Scratch(), scale=scale)
    (st.mag_sum.double() @ w + st.events.double() @ w).backward()
    sign = torch.where(x.detach() < 0, -1.0, 1.0)  # +1 at 0 and at -0.0
    expected = sign * (w + w * scale.double()).float()
    assert torch.allclose(x.grad, expected.expand_as(x), rtol=1e-6, atol=0)


def test_double_backward_differentiates_the_sign_expression():
    x = _signed_counts(5, 4, seed=3).requires_grad_(True)
    st = R.abs_row_sums(x, R.Scratch())
    (g,) = torch.autograd.grad(st.mag_sum.sum(), x, create_graph=True)
    assert torch.equal(g.detach(), torch.where(x.detach() < 0, -1.0, 1.0))


def test_all_integer_tolerates_float_rounding_only(walk):
    x = torch.randint(0, 4, (50, 3)).float()
    scratch = R.Scratch()
    assert bool(R.all_integer(x + 1e-4, 1e-3, scratch))
    y = x.clone()
    y[37, 2] += 0.25
    assert not bool(R.all_integer(y, 1e-3, scratch))
    assert bool(R.all_integer(torch.empty(0, 3), 1e-3, scratch))


def test_count_nonzero_and_differences(walk):
    a = _signed_counts(40, 5, seed=4)
    b = _signed_counts(40, 5, seed=5)
    a[3, 1] = float("nan")
    scratch = R.Scratch()
    assert float(R.count_nonzero(a, torch.float64, scratch)) == int(torch.count_nonzero(a))
    assert float(R.count_nonzero(a, torch.float64, scratch, minus=b)) == int(torch.count_nonzero(a - b))


@pytest.mark.parametrize("shape", [(30, 7), (300, 40), (1000, 9)])  # below and past a 2040-byte lane group
@pytest.mark.parametrize("contiguous", [True, False])
def test_neuron_counts_equal_brute_force(walk, shape, contiguous):
    """Whole-tensor (contiguous, CPU) and block-wise (strided) walks give the brute-force counts."""
    out = _signed_counts(*shape, seed=6).abs()
    x = _signed_counts(*shape, seed=7)
    x[1, 2] = float("nan")  # NaN is nonzero
    if not contiguous:
        out, x = out.t().contiguous().t(), x.t().contiguous().t()
    per, nz, ev = R.neuron_counts(out, x, torch.float64, None, R.Scratch())
    assert torch.equal(per, out.sum(0).double())
    assert float(nz) == int(torch.count_nonzero(out))
    assert float(ev) == int(torch.count_nonzero(torch.logical_or(out, x)))
    per, nz, ev = R.neuron_counts(out, None, torch.float64, None, R.Scratch())
    assert ev is None and float(nz) == int(torch.count_nonzero(out))


@pytest.mark.parametrize("n", [0, 1, 2039, 2040, 2041, 6000, 100_003])
def test_count_true_counts_every_byte_lane(n):
    g = torch.Generator().manual_seed(n)
    mask = torch.rand(n, generator=g) < 0.4
    assert int(R.count_true(mask)) == int(mask.sum())
    assert int(R.count_true(torch.ones(n, dtype=torch.bool))) == n  # every lane full (255 per word group)
    if n > 1:  # a view starting off an 8-byte boundary
        assert int(R.count_true(mask[1:])) == int(mask[1:].sum())
        assert int(R.count_true(mask.reshape(-1, 1)[::2])) == int(mask[::2].sum())


def test_all_integer_reads_a_witness_then_every_block(monkeypatch):
    """A non-integer found after the witness values and across block boundaries; NaN is no integer."""
    monkeypatch.setattr(R, "_INT_WITNESS", 16)
    monkeypatch.setattr(R, "_INT_BLOCK", 100)
    scratch = R.Scratch()
    x = torch.randint(0, 4, (1000,)).float()
    assert bool(R.all_integer(x, 0.0, scratch))
    for where in (3, 16, 115, 999):
        y = x.clone()
        y[where] += 0.5
        assert not bool(R.all_integer(y, 0.0, scratch)), where
        y[where] = float("nan")
        assert not bool(R.all_integer(y, 0.0, scratch)), where
    assert bool(R.all_integer(x + 1e-4, 1e-3, scratch)) and not bool(R.all_integer(x + 1e-4, 0.0, scratch))


def test_scratch_is_reused_and_bounded():
    scratch = R.Scratch()
    a = scratch.get(10, torch.float32, torch.device("cpu"))
    b = scratch.get(4, torch.float32, torch.device("cpu"))
    assert a.data_ptr() == b.data_ptr() and scratch.nbytes == 40
    x = torch.ones(R.BLOCK // 100 * 300, 100)  # three blocks of whole rows
    R.row_stats(x, scratch)
    assert scratch.nbytes <= 40 + R.BLOCK * 4


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().numpy().tobytes()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bool, torch.uint8, torch.int32])
@pytest.mark.parametrize("layout", ["contiguous", "odd length", "offset view", "transposed", "0-dim"])
def test_same_bytes_agrees_with_a_comparison_of_the_raw_bytes(dtype, layout):
    from synopsloss.reductions import same_bytes

    g = torch.Generator().manual_seed(0)
    base = (torch.rand(6, 10, generator=g) * 3).round()
    if layout == "odd length":
        base = base[:, :7].contiguous()
    a = base.to(dtype)
    if layout == "offset view":
        a = a.reshape(-1)[3:]
    elif layout == "transposed":
        a = a.t()
    elif layout == "0-dim":
        a = a[0, 0]
    b = a.clone()
    assert same_bytes(a, b) and _bytes(a) == _bytes(b)
    flipped = a.clone()
    last = (-1,) * flipped.dim()
    flipped[last] = (~flipped[last]) if dtype == torch.bool else flipped[last] + 1
    assert same_bytes(a, flipped) == (_bytes(a) == _bytes(flipped)) == False  # noqa: E712
    if dtype.is_floating_point:
        zero = torch.zeros_like(a)
        assert not same_bytes(zero, -zero) and torch.equal(zero, -zero)  # (-0.0: other bytes, an equal value)
        nan = torch.full_like(a, float("nan"))
        assert same_bytes(nan, nan.clone()) and not torch.equal(nan, nan.clone())


@pytest.mark.parametrize("shape", [(300, 3), (4, 50), (1, 1)])
def test_membrane_updates_count_as_neurobench_counts_them(walk, shape):
    """``count_nonzero(pre, minus=post)`` is NeuroBench's ``count_nonzero(pre - post)``: a changed value, NaN, and
    inf - inf (NaN) count; -0.0 against 0.0 does not."""
    pre = _signed_counts(*shape, seed=3)
    post = pre.clone()
    post.view(-1)[::2] += 1.0
    pre.view(-1)[-1], post.view(-1)[-1] = float("inf"), float("inf")
    if pre.numel() > 2:
        pre.view(-1)[1], post.view(-1)[1] = -0.0, 0.0
        pre.view(-1)[-2] = float("nan")
    want = int(torch.count_nonzero(pre - post))
    got = R.count_nonzero(pre, torch.float64, R.Scratch(), minus=post)
    assert got.dtype == torch.float64 and int(got) == want


def test_same_bytes_compares_lazily_negated_and_conjugated_tensors_by_value():
    from synopsloss.reductions import same_bytes

    z = torch.tensor([1 + 2j, 3 - 1j, 0j, 2j])
    neg = torch._neg_view(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    assert neg.is_neg() and same_bytes(neg, neg.clone()) and not same_bytes(neg, -neg.clone())
    assert z.conj().is_conj() and same_bytes(z.conj(), z.conj().resolve_conj())
    assert not same_bytes(z.conj(), z)
