"""Precision: exact integer counts far beyond float32, accurate differentiable synops, autocast safety.

Expected values are computed by hand with Python integers (exact at any size) or in float64
from the weights directly; each test also checks that float32 could *not* have produced the
expected number, so that the test discriminates.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import synopsloss as sl
from synopsloss.registry import register_rule



def _jacobian_column_sums(layer: nn.Module, shape: tuple, effective: bool) -> torch.Tensor:
    """``helpers.brute_force_map`` in one backward pass: the column sums of the Jacobian of the
    layer (nonzero weights set to one, no bias) are the gradient of its output's sum."""
    ref = copy.deepcopy(layer).double()
    with torch.no_grad():
        ref.weight.copy_((ref.weight != 0).double() if effective else torch.ones_like(ref.weight))
        if ref.bias is not None:
            ref.bias.zero_()
    x = torch.zeros(1, *shape, dtype=torch.float64, requires_grad=True)
    ref(x).sum().backward()
    return x.grad[0]


def _not_float32_exact(n: int) -> bool:
    return int(torch.tensor(float(n), dtype=torch.float32).item()) != n


# ----------------------------------------------------------------------------- float64 accumulation


def test_counts_beyond_2_to_the_24_are_exact_integers() -> None:
    n = 4097  # 4097 x 4097 taps: an odd number above 2^24, which float32 cannot hold
    layer = nn.Linear(n, n, bias=False)
    zeros = [(0, 0), (5, 7), (4096, 4096)]
    with torch.no_grad():
        layer.weight.fill_(0.5)
        for r, c in zeros:
            layer.weight[r, c] = 0.0
    net = nn.Sequential(layer)
    steps = 3
    x = torch.ones(1, steps, n)  # one sample, three rows (time steps) in one call
    counter = sl.SynOpsCounter(net, batch_dim=0)
    net(x)
    dense, eff = steps * n * n, steps * (n * n - len(zeros))
    assert dense > 2**24 and _not_float32_exact(dense) and _not_float32_exact(eff)
    got = counter.snapshot().per_layer()["0"]
    assert (got["dense"], got["eff_acs"], got["eff_macs"], got["synops"]) == (dense, eff, 0.0, eff)
    # and summed over batches (running totals are float64 too)
    counter.reset()
    net(x)
    counter.reset()
    acc = counter.snapshot(accumulated=True).per_layer()["0"]
    assert (acc["dense"], acc["eff_acs"]) == (dense, eff)  # per sample: 2 batches of 1 sample


class _Fan(nn.Module):
    """Stands in for a layer whose neurons have very large fan-outs (its rule states them)."""

    FANOUT = (2.0**50, 2.0**26, 1.0)  # powers of two: exact even as the rule's float32 map

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def test_accumulation_is_exact_up_to_2_to_the_53() -> None:
    rules: dict = {}

    @register_rule(_Fan, sample_ndim=1, registry=rules)
    def _fan(module, w01, in_shape, out_shape):
        return w01 * torch.tensor(_Fan.FANOUT, dtype=torch.float32)

    net = nn.Sequential(_Fan())
    counter = sl.SynOpsCounter(net, custom_rules=rules)
    calls = 7
    for _ in range(calls):  # seven time steps of one sample
        net(torch.ones(1, 3))
    per_call = 2**50 + 2**26 + 1
    expected = calls * per_call
    assert 2**52 < expected < 2**53 and _not_float32_exact(expected)
    got = counter.snapshot().per_layer()["0"]
    assert int(got["dense"]) == got["dense"] == expected
    assert int(got["eff_acs"]) == got["eff_acs"] == expected
    assert got["synops"] == expected
    # one more odd step still registers exactly (float64 has a unit in the last place of 1 here); calling the
    # model after a read without reset() is counted as more steps of the batch, and says so
    with pytest.warns(sl.SynOpsWarning, match="called again after this batch's counts were read"):
        net(torch.ones(1, 3))
    assert counter.snapshot().per_layer()["0"]["eff_acs"] == expected + per_call


# ----------------------------------------------------------------------------- differentiable synops


def test_differentiable_synops_above_1e9_are_within_1e_minus_6_of_float64() -> None:
    torch.manual_seed(0)
    n, rows = 4096, 64
    layer = nn.Linear(n, n, bias=False)
    with torch.no_grad():
        layer.weight.mul_((torch.rand(n, n) > 0.1).float())  # random zeros: fan-outs differ per neuron
    net = nn.Sequential(layer)
    x = (1.0 + 2.0 * torch.rand(1, rows, n)).requires_grad_(True)  # real values in [1, 3)
    fanout = (layer.weight.detach() != 0).sum(0).double()  # by hand: nonzero weights per input column
    reference = float(x.detach().double().reshape(rows, n).sum(0) @ fanout)
    assert reference > 1e9
    counter = sl.SynOpsCounter(net, batch_dim=0)
    net(x)
    synops = counter.synops()
    assert synops.dtype == torch.get_default_dtype()
    assert abs(float(synops.detach()) - reference) <= 1e-6 * reference
    assert abs(counter.snapshot().per_layer()["0"]["synops"] - reference) <= 1e-6 * reference
    synops.backward()  # d synops / d x = fan-out: integers up to 4096, exact in float32
    assert torch.equal(x.grad[0], fanout.float().expand(rows, n))


# ----------------------------------------------------------------------------- autocast


AUTOCAST = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", AUTOCAST, ids=str)
def test_maps_under_autocast_stay_float64_and_exact(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 29, 3, padding=1, padding_mode="circular")  # 29 x 9 = 261 taps: not a bf16 number
    convt = nn.ConvTranspose2d(3, 33, 3, stride=1)  # 297 taps per input neuron
    lin = nn.Linear(5, 2053)  # 2053 > 2048: not a float16 number
    for layer, shape in ((conv, (3, 5, 5)), (convt, (3, 4, 4)), (lin, (5,))):
        with torch.autocast("cpu", dtype=dtype):
            maps = [sl.connection_map(layer, shape, effective=e) for e in (True, False)]
        for m, effective in zip(maps, (True, False)):
            assert m.dtype == torch.float64
            assert torch.equal(m, _jacobian_column_sums(layer, shape, effective))
    assert float(_jacobian_column_sums(conv, (3, 5, 5), True).max()) == 261.0
    assert torch.tensor(261.0).to(torch.bfloat16).item() != 261.0  # (the discriminating value)


@pytest.mark.parametrize("dtype", AUTOCAST, ids=str)
def test_counts_under_autocast_are_exact_and_do_not_overflow(dtype: torch.dtype) -> None:
    """70 000 rows of ones: per-neuron sums of 280 000 overflow float16 (65504) and round in bf16."""
    net = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2049, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)  # layer 1 outputs 4.0 (exact in both) for an input of ones
        net[1].weight.fill_(1.0)
        net[1].weight[7, 1] = 0.0
    rows = 70_000
    x = torch.ones(rows, 4)
    counter = sl.SynOpsCounter(net)
    with torch.autocast("cpu", dtype=dtype):
        out = net(x)
        synops = counter.synops()
        counts = counter.snapshot().per_layer()
    assert out.dtype == dtype  # autocast really ran the layers in half precision
    eff1 = 3 * 2049 - 1  # nonzero taps of layer 1
    per_sample = {
        "0": {"dense": 4 * 3, "eff_macs": 0.0, "eff_acs": 4 * 3, "synops": 4 * 3},
        # layer 1's inputs are all 4.0: integer counts, so 4 accumulate events each (integer_spikes="events")
        "1": {"dense": 3 * 2049, "eff_macs": 0.0, "eff_acs": 4.0 * eff1, "synops": 4.0 * eff1},
    }
    assert counts == per_sample
    assert synops.dtype == torch.float32
    assert float(synops.detach()) == 4 * 3 + 4.0 * eff1
    assert torch.isfinite(synops)


@pytest.mark.parametrize("dtype", AUTOCAST, ids=str)
def test_spike_counts_above_256_are_not_rounded_under_autocast(dtype: torch.dtype) -> None:
    """257 rows of one sample: a bf16 sum would round 257 to 256."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[1].weight.fill_(2.0)
    x = torch.ones(1, 257, 2)  # one sample with 257 time steps folded into its rows
    counter = sl.SynOpsCounter(net, batch_dim=0)
    with torch.autocast("cpu", dtype=dtype):
        net(x)
        counts = counter.snapshot().per_layer()
    assert counts["1"] == {"dense": 257 * 6, "eff_macs": 0.0, "eff_acs": 257 * 6, "synops": 257 * 6}


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("kind", ["spike counts", "real values"])
def test_per_neuron_sums_beyond_float32_exactness_are_taken_in_float64(grad, kind):
    """131072 rows of counts up to 255 (or values in [1, 2)): a neuron's sum passes 2^24, where float32 rounds."""
    import synopsloss as sl

    fc = torch.nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        fc.weight.fill_(1.0)  # fan-out 1: the synops are the sum of |x|
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (1 << 17, 8), generator=g).float() if kind == "spike counts"
         else 1.0 + torch.rand(1 << 17, 8, generator=g))
    counter = sl.SynOpsCounter(fc, neurons=False, batch_size=1)
    with torch.set_grad_enabled(grad):
        fc(x.requires_grad_(grad))
    want = float(x.detach().double().sum())  # float64 sum of the same float32 values
    got = counter.snapshot().total()
    assert got["synops"] == pytest.approx(want, rel=1e-12)
    if kind == "spike counts":
        assert got["eff_acs"] == pytest.approx(want, rel=1e-12)  # each count is that many events
