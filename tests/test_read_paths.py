"""The read reduces every recorded call by one rule, whatever path the reduction takes.

Groups of large non-negative calls on the CPU take a path that reads each call
without ``abs`` and without a stacked copy; small groups, negative values, NaN,
integer counts and half precision take the general one. Each case is checked
against an explicit-Jacobian brute force (``tests/helpers.py``): dense,
effective MACs / ACs, synops, nonzero inputs, and the gradient of the synops
(the fan-out of each input, +1 at and above 0, -1 below).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import synopsloss as sl
from synopsloss import records, reductions
from helpers import brute_force_counts, brute_force_map

KINDS: Dict[str, Callable[[torch.Generator, tuple], torch.Tensor]] = {
    "spikes": lambda g, s: (torch.rand(s, generator=g) < 0.3).float(),
    "rate": lambda g, s: torch.rand(s, generator=g),  # in [0, 1], not binary
    "relu": lambda g, s: torch.relu(torch.randn(s, generator=g)) * 3,  # >= 0, above 1
    "signed": lambda g, s: torch.randint(-1, 2, s, generator=g).float(),  # {-1, 0, 1}
    "counts": lambda g, s: torch.randint(0, 4, s, generator=g).float(),  # integer spike counts
    "zeros": lambda g, s: torch.zeros(s),
    # integer counts but for the very last value (past the values an integer test reads first)
    "late": lambda g, s: torch.randint(0, 4, s, generator=g).float().reshape(-1).index_fill(
        0, torch.tensor([math.prod(s) - 1]), 0.5).reshape(s),
    "late_signed": lambda g, s: torch.randint(-2, 3, s, generator=g).float().reshape(-1).index_fill(
        0, torch.tensor([math.prod(s) - 1]), -0.5).reshape(s),
}


def _pruned(layer: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.mul_((torch.rand(layer.weight.shape, generator=g) > 0.4).float())
    return layer


class Steps(nn.Module):
    """Calls one layer once per given input (one group of calls at the read)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, xs: List[torch.Tensor]) -> torch.Tensor:
        return sum(self.layer(x).sum() for x in xs)


def _brute(layer: nn.Module, xs: List[torch.Tensor], samples: int) -> Dict[str, float]:
    out = {"dense": 0.0, "eff_macs": 0.0, "eff_acs": 0.0, "synops": 0.0}
    for x in xs:
        for k, v in brute_force_counts(layer, x, samples).items():
            out[k] += v
    return out


@pytest.mark.parametrize("rows,shape", [(4, (12,)), (96, (40, 30)), (160, (3, 12, 12))])
@pytest.mark.parametrize("kinds", [("spikes",) * 3, ("rate", "spikes", "rate"), ("relu",) * 2, ("signed", "spikes"),
                                   ("counts", "spikes"), ("zeros", "spikes"), ("late", "counts"),
                                   ("late_signed", "signed")])
@pytest.mark.parametrize("vectors", ["stacked", "call by call"])
def test_every_read_path_matches_the_brute_force(rows: int, shape: tuple, kinds: tuple, vectors: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """(Large calls' per-neuron vectors are stacked when small, else dotted call by call: both are run.)"""
    if vectors == "call by call":
        monkeypatch.setattr(records, "_STACK_VECTORS", 0)
    torch.manual_seed(0)
    layer = _pruned(nn.Conv2d(3, 4, 3, padding=1) if len(shape) == 3 else nn.Linear(shape[-1], 5), 1)
    g = torch.Generator().manual_seed(2)
    xs = [KINDS[k](g, (rows, *shape)).requires_grad_() for k in kinds]
    net = Steps(layer)
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=rows)
    net(xs)
    snap = counter.snapshot()
    per = snap.per_layer()["layer"]
    ref = _brute(layer, [x.detach() for x in xs], rows)
    for key, want in ref.items():
        assert per[key] == pytest.approx(want, rel=1e-6, abs=1e-9), key
    nonzero = sum(float((x != 0).sum()) for x in xs)
    assert snap.layers["layer"].input_nonzero == pytest.approx(nonzero)
    assert snap.layers["layer"].input_sum == pytest.approx(sum(float(x.detach().abs().sum()) for x in xs), rel=1e-6)
    # gradient of the synops: each input's fan-out (per sample), +1 at and above 0 and -1 below
    counter.synops().backward()
    fan = brute_force_map(layer, shape[1:] if len(shape) > 1 and len(shape) != 3 else shape, True)
    fan = fan if len(shape) == 3 else brute_force_map(layer, shape[-1:], True)
    for x in xs:
        sign = torch.where(x.detach() < 0, -1.0, 1.0).double()
        want = sign * fan.expand_as(x) / rows
        torch.testing.assert_close(x.grad.double(), want, rtol=1e-6, atol=1e-9)


def test_nan_input_is_reported_on_the_fast_path_too() -> None:
    layer = nn.Linear(300, 4)
    x = torch.rand(256, 300)
    x[3, 5] = float("nan")
    net = Steps(layer)
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=256)
    net([x])
    with pytest.raises(FloatingPointError, match="NaN or inf in the input of layer"):
        counter.synops()


def test_large_and_small_groups_give_the_same_numbers() -> None:
    """The same spikes read as one large call and as many small calls of the same layer."""
    torch.manual_seed(3)
    layer = _pruned(nn.Linear(64, 8), 4)
    x = (torch.rand(32, 16, 64) < 0.25).float()  # 16 steps of [32, 64]: one group of 32k values
    big, small = Steps(layer), Steps(layer)
    c_big = sl.SynOpsCounter(big, neurons=False, batch_size=32)
    big(list(x.unbind(1)))
    s_big = c_big.snapshot().per_layer()["layer"]
    c_big.remove()
    c_small = sl.SynOpsCounter(small, neurons=False, batch_size=32)
    small([x[:, 0]])  # one call: 2k values, the general path
    s_small = c_small.snapshot().per_layer()["layer"]
    ref_one = brute_force_counts(layer, x[:, 0], 32)
    assert s_small["synops"] == pytest.approx(ref_one["synops"])
    ref_all = _brute(layer, list(x.unbind(1)), 32)
    assert s_big["synops"] == pytest.approx(ref_all["synops"])
    assert s_big["eff_acs"] == pytest.approx(ref_all["eff_acs"]) and s_big["eff_macs"] == 0.0


class SharedInput(nn.Module):
    """Three projections of one input (q / k / v), each called at every step with the same tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (_pruned(nn.Linear(48, 6), s) for s in (5, 6, 7))

    def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        return sum(self.q(x).sum() + self.k(x).sum() + self.v(x).sum() for _ in range(steps))


@pytest.mark.parametrize("kind", ["spikes", "rate", "signed"])
@pytest.mark.parametrize("rows", [8, 1024])
def test_an_input_read_by_many_calls_counts_once_per_call(kind: str, rows: int) -> None:
    g = torch.Generator().manual_seed(8)
    x = KINDS[kind](g, (rows, 48))
    h = x.clone().requires_grad_()  # the model input (data-fed layers: still in synops())
    net = SharedInput()
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=rows)
    net(h, 3)
    per = counter.snapshot().per_layer()
    fan = {}
    for name in ("q", "k", "v"):
        layer = getattr(net, name)
        ref = _brute(layer, [x] * 3, rows)
        for key, want in ref.items():
            assert per[name][key] == pytest.approx(want, rel=1e-6, abs=1e-9), (name, key)
        fan[name] = brute_force_map(layer, (48,), True)
    counter.synops().backward()
    sign = torch.where(x < 0, -1.0, 1.0).double()
    want = 3 * sign * (fan["q"] + fan["k"] + fan["v"]).expand_as(x) / rows
    torch.testing.assert_close(h.grad.double(), want, rtol=1e-6, atol=1e-9)


class PoolThenLayer(nn.Module):
    """Spike counts -> average pool -> a pruned layer: the layer's input is counted as spike events."""

    def __init__(self, pool: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.pool, self.layer = pool, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.pool(x))


POOLS: Dict[str, Callable[[], nn.Module]] = {
    "2x2": lambda: nn.AvgPool2d(2),
    "3x3-pad-excluded": lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    "3x3-pad-included": lambda: nn.AvgPool2d(3, stride=2, padding=1),
    "adaptive": lambda: nn.AdaptiveAvgPool2d(5),
}


@pytest.mark.parametrize("pool_kind", list(POOLS))
@pytest.mark.parametrize("kind", ["counts", "relu", "late"])
@pytest.mark.parametrize("rows", [4, 300])
@pytest.mark.parametrize("path", ["column-sums", "per-value"])
def test_pooled_inputs_count_the_events_of_their_window(pool_kind: str, kind: str, rows: int, path: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pooled call of integer spike counts sends the window sums of the pool's input as events (by hand);
    any other pooled call counts its values. Every path (events from column sums for non-negative CPU inputs,
    or value by value) gives these numbers and the gradient through the pool."""
    if path == "per-value":
        monkeypatch.setattr(records, "_pooled_fast", lambda *args: None)
    g = torch.Generator().manual_seed(11)
    x = KINDS[kind](g, (rows, 3, 12, 12)).requires_grad_()
    pool = POOLS[pool_kind]()
    layer = _pruned(nn.Conv2d(3, 4, 3, padding=1), 12)
    net = PoolThenLayer(pool, layer)
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=rows)
    net(x)
    syn = counter.synops()
    got = counter.snapshot().per_layer()["layer"]
    counter.remove()
    with torch.no_grad():
        y = pool(x)
        fan = brute_force_map(layer, y.shape[1:], True)
        integer = bool((x == x.round()).all())
        ones = torch.ones(1, *x.shape[1:])
        divisor = (_window_sums(pool, ones) / pool(ones))[0]  # y = window sum / divisor (padding included or not)
        per_value = _window_sums(pool, x) if integer else y
    # (float32 sums of real values: 1e-6)
    assert got["synops"] == pytest.approx(float((per_value.double() * fan).sum()) / rows, rel=1e-12 if integer else 1e-6)
    if integer:  # counts: each event an accumulate
        assert got["eff_acs"] == pytest.approx(got["synops"], rel=1e-12) and got["eff_macs"] == 0.0
    else:  # values: nonzero pooled values x fan-out, multiply-accumulates
        assert got["eff_macs"] == pytest.approx(float(((y != 0).double() * fan).sum()) / rows, rel=1e-12)
        assert got["eff_acs"] == 0.0
    syn.backward()
    ref = x.detach().clone().requires_grad_()  # d events / d y = the divisor (straight through the rounding)
    (pool(ref) * fan.float() * (divisor if integer else 1.0)).sum().div(rows).backward()
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-5, atol=1e-7)


def _window_sums(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The sum of the values in each pooling window (padding adds nothing)."""
    if isinstance(pool, nn.AvgPool2d):
        return F.avg_pool2d(x, pool.kernel_size, pool.stride, pool.padding, divisor_override=1)
    n, out = x.shape[-1], pool.output_size
    spans = [((i * n) // out, -((-(i + 1) * n) // out)) for i in range(out)]
    return torch.stack([torch.stack([x[..., a0:a1, b0:b1].sum((-2, -1)) for b0, b1 in spans], -1)
                        for a0, a1 in spans], -2)


@pytest.mark.parametrize("rows", [1, 255, 256, 1000])
@pytest.mark.parametrize("n", [8, 13, 40])
def test_column_nonzeros_is_exact_at_every_lane_boundary(rows: int, n: int) -> None:
    """Per-column nonzero counts equal ``(x != 0).sum(0)``, also for columns with every row nonzero (a full
    lane), NaN, negative zero and stacked inputs."""
    g = torch.Generator().manual_seed(rows * 100 + n)
    x = torch.randn(rows, n, generator=g) * (torch.rand(rows, n, generator=g) < 0.5)
    x[:, 0] = 1.0  # every row nonzero
    x[0, -1] = float("nan")
    x[-1, 1 % n] = -0.0
    assert torch.equal(reductions.column_nonzeros(x).long(), (x != 0).sum(0))
    stacked = torch.stack([x, x.flip(0).abs()])
    assert torch.equal(reductions.column_nonzeros(stacked).long(), (stacked != 0).sum(1))
