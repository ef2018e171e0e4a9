"""Counting across grad modes, inference mode, gradient checkpointing and a changed layer geometry.

Each number is checked against a hand count: for a bias-free ``Linear`` every input value reaches as
many synapses as its column of the weight has nonzeros, so its synops are ``sum |x| x fan-out`` and the
gradient of the per-sample synops (``counter.synops()``) with respect to ``x`` is ``sign(x) x fan-out /
samples``; the snapshot's layers hold the batch's counts.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.utils.checkpoint as cp
from torch import nn

import synopsloss as sl


def _fanout(layer: nn.Linear) -> torch.Tensor:
    return (layer.weight != 0).sum(0).double()


class _SidePass(nn.Module):
    """A layer also run without gradients inside the forward (a target / teacher pass through it)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            self.fc.weight[0, 1] = 0.0  # fan-outs 3, 2, 3, 3

    def forward(self, x: torch.Tensor, side: torch.Tensor = None) -> torch.Tensor:
        y = self.fc(x)
        if side is not None:
            with torch.no_grad():
                self.fc(side)
        return y


@pytest.mark.parametrize("how", ["a second call of the model without gradients", "a no_grad pass in the forward"])
def test_a_call_without_gradients_keeps_the_gradient_of_a_call_with(how):
    m = _SidePass()
    counter = sl.SynOpsCounter(m, neurons=False)
    x = torch.randn(2, 4, requires_grad=True)
    other = torch.randn(2, 4)
    if how.startswith("a second"):
        m(x)
        with torch.no_grad():
            m(other)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the side pass is named: its input has no gradient to give)
            m(x, side=other)
    fan = _fanout(m.fc)
    if how.startswith("a second"):  # (two forwards of the model, one without gradients: the read names the mix)
        with pytest.warns(sl.SynOpsWarning, match="1 time\\(s\\) without gradients beside 1 time\\(s\\) with them"):
            synops = counter.synops()
    else:
        synops = counter.synops()
    assert synops.requires_grad
    assert synops.item() == pytest.approx(float((x.detach().abs() * fan).sum() + (other.abs() * fan).sum()) / 2,
                                          rel=1e-6)
    grad, = torch.autograd.grad(synops, x)
    assert torch.allclose(grad.double(), torch.sign(x.detach()).double() * fan / 2)


@pytest.mark.parametrize("steps", ["grad nograd grad", "grad inference grad", "nograd grad", "grad nograd"])
def test_steps_with_and_without_gradients_in_one_batch_keep_every_gradient(steps):
    """Time steps of one batch made with gradients, without, or in inference mode: ``synops()`` and its gradient
    equal the hand count through every step (the steps without gradients add constants)."""
    m = _mlp()
    counter = sl.SynOpsCounter(m, neurons=False)
    x = torch.randn(3, 3, 8, requires_grad=True)
    used = []
    for t, kind in enumerate(steps.split()):
        if kind == "grad":
            m(x[t])
            used.append(x[t])
        else:
            with torch.no_grad() if kind == "nograd" else torch.inference_mode():
                m(x[t].detach())
            used.append(x[t].detach())
    with pytest.warns(sl.SynOpsWarning, match="without gradients beside"):  # (steps without gradients on purpose)
        synops = counter.synops()
    ref = _mlp()
    hand = sum((u.abs() * _fanout(ref[0])).sum() + (torch.relu(ref[0](u)).abs() * _fanout(ref[2])).sum()
               for u in used) / 3
    assert synops.item() == pytest.approx(hand.item(), rel=1e-6)
    got, = torch.autograd.grad(synops, x)
    want, = torch.autograd.grad(hand, x)
    assert torch.allclose(got, want.float(), atol=1e-5)


def test_a_weight_pattern_changed_within_a_batch_counts_each_call_with_its_pattern():
    """A weight zeroed in place between two calls of one batch: each call is counted with the nonzero pattern
    its weight had (calls with gradients keep it to the read; calls without are counted when their forward
    returns), with nothing to warn about."""
    for grad in (True, False):
        m = nn.Sequential(nn.Linear(4, 3, bias=False))
        nn.init.constant_(m[0].weight, 1.0)
        counter = sl.SynOpsCounter(m, neurons=False)
        x = torch.ones(2, 4)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with torch.set_grad_enabled(grad):
                m(x)  # 8 inputs x 3 synapses = 24
                with torch.no_grad():
                    m[0].weight[:, :2] = 0.0
                m(x)  # 4 inputs x 3 synapses = 12
            synops = counter.snapshot().layers["0"].synops
        named = [w for w in seen if "was changed in place after the batch's first forward" in str(w.message)]
        assert synops == 36.0 and named == []
    # changed between batches (the counts read, then reset): counted with the new pattern, nothing to say
    counter.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(x)
        assert counter.synops().item() == 2 * 3.0  # per sample: inputs 2 and 3 reach 3 synapses each
        counter.reset()
        with torch.no_grad():
            m[0].weight[:, 2] = 0.0
        m(x)
        assert counter.snapshot().layers["0"].synops == 2 * 3.0  # only input 3 is left, on 2 rows


def _mlp() -> nn.Sequential:
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(8, 6, bias=False), nn.ReLU(), nn.Linear(6, 4, bias=False))
    with torch.no_grad():
        m[2].weight[:, 0] = 0.0  # the first hidden neuron reaches no synapse
    return m


def _hand(m: nn.Sequential, x: torch.Tensor) -> dict:
    """Each layer's synops in a call on ``x`` (all rows: the snapshot's layers hold the batch's counts)."""
    h = torch.relu(x @ m[0].weight.detach().t())
    return {"0": float((x.abs() * _fanout(m[0])).sum()), "2": float((h.abs() * _fanout(m[2])).sum())}


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_inference_mode_is_counted_like_no_grad(mode):
    m = _mlp()
    counter = sl.SynOpsCounter(m, neurons=False)
    x = (torch.rand(3, 8, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    with getattr(torch, mode)():
        m(x)
        m(x)  # a second call takes the repeated-call path
    got = {n: s.synops for n, s in counter.snapshot().layers.items()}
    want = _hand(m, x)
    assert got == pytest.approx({n: 2 * v for n, v in want.items()}, rel=1e-6)


def test_an_inference_tensor_fed_with_gradients_on_is_counted():
    m = _mlp().requires_grad_(False)
    counter = sl.SynOpsCounter(m, neurons=False)
    with torch.inference_mode():
        x = (torch.rand(3, 8, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    m(x)
    got = {n: s.synops for n, s in counter.snapshot().layers.items()}
    assert got == pytest.approx(_hand(m, x), rel=1e-6)


def test_checkpointing_the_whole_model_counts_each_call_once():
    """The backward pass re-runs the checkpointed forward: that re-run is neither counted nor a new call."""
    m = _mlp()
    counter = sl.SynOpsCounter(m, neurons=False)
    xs = (torch.rand(4, 3, 8, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    out = sum(cp.checkpoint(m, xs[t], use_reentrant=False).sum() for t in range(4))
    synops = counter.synops()
    (out + 1e-3 * synops).backward()  # the recomputation runs here
    layers = counter.snapshot().layers
    assert {n: s.calls for n, s in layers.items()} == {"0": 4, "2": 4} and counter.time_steps() == 4.0
    want = {n: sum(_hand(m, xs[t])[n] for t in range(4)) for n in ("0", "2")}
    assert {n: s.synops for n, s in layers.items()} == pytest.approx(want, rel=1e-6)
    assert m[0].weight.grad is not None
    counter.reset()  # the next batch starts normally (the batch was not left half-run)
    m(xs[0])
    assert counter.snapshot().layers["2"].synops == pytest.approx(_hand(m, xs[0])["2"], rel=1e-6)


class _Segment(nn.Module):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.a, self.h = nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False)
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cp.checkpoint(lambda t: self.h(torch.relu(self.a(t))), x, use_reentrant=self.reentrant)


def test_a_layer_run_without_gradients_in_a_forward_with_them_is_named():
    """Reentrant checkpointing runs its segment without gradients: a layer fed from inside the segment has no
    gradient to give, and is named; the segment's first layer, fed the segment's input, keeps its gradient."""
    for reentrant in (False, True):
        m = _Segment(reentrant)
        counter = sl.SynOpsCounter(m, neurons=False)
        x = torch.randn(2, 4, requires_grad=True)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            m(x)
        named = [str(w.message) for w in seen if "ran without gradients" in str(w.message)]
        if reentrant:
            assert len(named) == 1 and "'h'" in named[0] and "use_reentrant=False" in named[0]
        else:
            assert named == []
        grad, = torch.autograd.grad(counter.synops(by_layer=True)["a"], x)
        assert torch.allclose(grad.double(), torch.sign(x.detach()).double() * _fanout(m.a) / 2)


def test_a_changed_conv_geometry_gets_its_own_map():
    """The same weight and shapes with another padding mode or dilation connect other inputs: by hand, a 3x3
    kernel of ones over a 4x4 input of ones reaches 100 synapses with zero padding (border inputs reach fewer
    outputs) and 144 with circular padding (every input reaches 9)."""
    m = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False))
    with torch.no_grad():
        m[0].weight.fill_(1.0)
    counter = sl.SynOpsCounter(m, neurons=False)
    x = torch.ones(1, 1, 4, 4)
    m(x)
    m(x)
    assert counter.snapshot().layers["0"].synops == 200.0
    counter.reset()
    m[0].padding_mode = "circular"
    m(x)
    assert counter.snapshot().layers["0"].synops == 144.0
    counter.reset()
    m[0].padding_mode = "zeros"
    m[0].dilation, m[0].padding = (2, 2), (2, 2)  # outputs 4x4 still; each input reaches 2 x 2 of them
    m(x)
    assert counter.snapshot().layers["0"].synops == 64.0


class _MaskedMatmul(nn.Module):
    """A weight made in the forward from a parameter and a mask buffer, used through ``@``."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(5, 5))
        self.w2 = nn.Parameter(torch.randn(3, 5))
        self.register_buffer("m2", (torch.rand(3, 5) < 0.5).float())

    def forward(self, x):
        h = (torch.nn.functional.linear(x, self.w1) > 0).float()
        return h @ (self.w2 * self.m2).t()


class _PrunedMatmul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 5))

    def forward(self, x):
        return x @ self.weight.t()


def _rows_in_each_mode(net: nn.Module, x: torch.Tensor) -> dict:
    """``{mode: per-layer counts}`` of one forward with gradients, without, and in inference mode (no warning)."""
    out = {}
    for mode, ctx in {"grad": torch.enable_grad, "no_grad": torch.no_grad,
                      "inference_mode": torch.inference_mode}.items():
        counter = sl.SynOpsCounter(net, neurons=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error", sl.SynOpsWarning)
            with ctx():
                net(x)
        out[mode] = counter.snapshot().per_layer()
        counter.remove()
    return out


@pytest.mark.parametrize("batch", [1, 3])
def test_a_weight_made_in_the_forward_is_a_weight_without_gradients_too(batch):
    """Without gradients there is no autograd record to read: the mode follows the ops the frame computes from
    parameters and buffers. Before, batch 1 counted |w| as an activation product (2.65 for 2.0), batch 3 raised."""
    torch.manual_seed(0)
    net = _MaskedMatmul()
    x = (torch.rand(batch, 5) < 0.6).float()
    h = (torch.nn.functional.linear(x, net.w1) > 0).double()
    fan2 = ((net.w2 * net.m2) != 0).double().sum(0)
    want = {"linear": float((x.double() * (net.w1 != 0).sum(0)).sum()) / batch,
            "matmul": float((h * fan2).sum()) / batch}
    assert want["matmul"] > 0
    for mode, rows in _rows_in_each_mode(net, x).items():
        for name, value in want.items():
            assert rows[name]["synops"] == pytest.approx(value, rel=1e-12), (mode, name)
            assert rows[name]["eff_acs"] == pytest.approx(value, rel=1e-12), (mode, name)


def test_a_pruned_weight_used_through_matmul_is_a_weight_without_gradients_too():
    """torch.nn.utils.prune computes ``module.weight`` in a pre-hook, outside the counting frame."""
    torch.manual_seed(1)
    net = _PrunedMatmul()
    torch.nn.utils.prune.random_unstructured(net, "weight", amount=0.5)
    x = (torch.rand(1, 5) < 0.7).float()
    want = float((x.double() * (net.weight != 0).sum(0)).sum())
    for mode, rows in _rows_in_each_mode(net, x).items():
        assert rows["matmul"]["synops"] == pytest.approx(want, rel=1e-12), mode


class _DataMixedWeight(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.w = nn.Parameter(torch.randn(3, 64))

    def forward(self, x):
        if self.how == "mean":
            w = self.w * x.mean()  # (one value of the data: no scalar constant)
        else:
            w = self.w * 1.0
            w[:, :] = x[0]  # (data written into it)
        return x @ w.t()


@pytest.mark.parametrize("how", ["mean", "setitem"])
def test_a_tensor_mixed_with_data_is_no_weight_without_gradients(how):
    """Without gradients, ``w * x.mean()`` or a weight whose entries were overwritten with data were followed as
    weights (counted, silently, as F.linear): as with gradients, they are activations, and the product of two
    samples' activations is refused."""
    torch.manual_seed(0)
    net = _DataMixedWeight(how)
    x = (torch.rand(2, 64) < 0.5).float()
    for ctx in (torch.enable_grad, torch.no_grad):
        counter = sl.SynOpsCounter(net, neurons=False)
        with ctx():
            net(x)
        with pytest.raises(ValueError, match=r"layer 'matmul' received 1 rows"):
            counter.snapshot()
        counter.remove()
