"""Per-sample synops: each sample's count, its distribution over a dataset and a quantile budget loss.

References: the same network counted on each sample alone (brute force by separation), numpy's
percentiles and scipy's Student t.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import snntorch as snn
import torch
from snntorch import utils
from torch import nn

import synopsloss as sl


def _snn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), snn.Leaky(beta=0.9, init_hidden=True), nn.Linear(5, 3))


def _run(net: nn.Module, x: torch.Tensor) -> None:
    utils.reset(net)
    for t in range(x.shape[1]):
        net(x[:, t])


def _alone(net: nn.Module, x: torch.Tensor) -> list:
    """Each sample's synops, counted with a batch of that sample alone."""
    out = []
    counter = sl.SynOpsCounter(net, neurons=False)
    for i in range(x.shape[0]):
        counter.reset()
        _run(net, x[i:i + 1])
        out.append(counter.snapshot().total()["synops"])
    counter.remove()
    return out


def test_per_sample_synops_equal_each_sample_counted_alone():
    net = _snn()
    x = (torch.rand(5, 4, 6, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    want = _alone(net, x)
    counter = sl.SynOpsCounter(net, per_sample=True)
    _run(net, x)
    got = counter.per_sample()
    assert got.tolist() == pytest.approx(want)
    assert float(got.mean().detach()) == pytest.approx(float(counter.synops().detach()))
    assert got.requires_grad


def test_time_first_rows_are_split_by_sample():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 3, bias=False))
    x = (torch.rand(3, 2, 4) < 0.5).float()  # [T=3, B=2, 4] in one call
    counter = sl.SynOpsCounter(net, per_sample=True, time_dim=0)
    net(x)
    fan = (net[0].weight != 0).sum(0).float()
    want = [float((x[:, b] * fan).sum()) for b in range(2)]
    assert counter.per_sample().tolist() == pytest.approx(want)


def test_distribution_matches_numpy_and_the_t_interval():
    stats = pytest.importorskip("scipy.stats")
    net = _snn()
    gen = torch.Generator().manual_seed(3)
    batches = [(torch.rand(4, 3, 6, generator=gen) < p).float() for p in (0.2, 0.6)]
    counter = sl.SynOpsCounter(net, per_sample=True)
    want = []
    for x in batches:
        counter.reset()
        _run(net, x)
        want += counter.per_sample().tolist()
    counter.reset()
    d = counter.snapshot(accumulated=True).distribution()
    v = np.array(want)
    assert d["n"] == 8 and d["mean"] == pytest.approx(v.mean())
    for q in (50, 95, 99):
        assert d[f"p{q}"] == pytest.approx(np.percentile(v, q))
    assert d["max"] == v.max()
    assert d["ci95"] == pytest.approx(stats.t.ppf(0.975, 7) * v.std(ddof=1) / np.sqrt(8), rel=1e-9)
    assert d["mean"] == pytest.approx(counter.snapshot(accumulated=True).total()["synops"])


@pytest.mark.filterwarnings("ignore:SynOpsLoss. the target for")  # expected here; the test is about something else
def test_quantile_budget_loss_acts_on_the_quantile():
    net = _snn()
    x = (torch.rand(6, 3, 6, generator=torch.Generator().manual_seed(4)) < 0.5).float()
    counter = sl.SynOpsCounter(net, per_sample=True)
    loss_fn = sl.SynOpsLoss(counter, target=5.0, quantile=0.9, layers="all", shape="hinge")
    _run(net, x)
    term = loss_fn()
    p90 = float(np.percentile(np.array(counter.per_sample().tolist()), 90))
    assert float(term.detach()) == pytest.approx(max(p90 - 5.0, 0.0) / 5.0, rel=1e-5)
    term.backward()
    assert net[0].weight.grad is not None and bool(net[0].weight.grad.abs().sum() > 0)


def test_per_sample_needs_the_option():
    net = _snn()
    counter = sl.SynOpsCounter(net)
    with pytest.raises(ValueError, match="per_sample=True"):
        sl.SynOpsLoss(counter, target=1.0, quantile=0.95)
    _run(net, torch.ones(2, 1, 6))
    with pytest.raises(RuntimeError, match="per_sample=True"):
        counter.per_sample()
    with pytest.raises(ValueError, match="per_sample=True"):
        counter.snapshot().distribution()
    with pytest.raises(ValueError, match="quantile must be"):
        sl.SynOpsLoss(sl.SynOpsCounter(net, per_sample=True), target=1.0, quantile=1.5)


def test_the_table_shows_the_distribution():
    net = _snn()
    x = (torch.rand(5, 3, 6, generator=torch.Generator().manual_seed(5)) < 0.4).float()
    counter = sl.SynOpsCounter(net, per_sample=True)
    _run(net, x)
    values = np.array(counter.per_sample().tolist())
    table = counter.table()
    assert table.total.synops_p95 == pytest.approx(np.percentile(values, 95))
    assert table.total.synops_max == pytest.approx(values.max())
    layer2 = np.array(counter.per_sample(by_layer=True)["2"].tolist())
    assert table["2"].synops_p50 == pytest.approx(np.median(layer2))
    assert "Synops p95" in table.render("distribution")


class _Folded(nn.Module):
    """A ``[B, T, C]`` input folded batch-major to ``[B*T, C]`` for a ``Linear`` (no sinabs Squeeze layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.fill_(1.0)  # each input value reaches one synapse

    def forward(self, x):
        return self.fc(x.flatten(0, 1))


@pytest.mark.parametrize("layout", [dict(time_dim=1), dict(batch_dim=0), dict(batch_size=3)])
def test_rows_folded_batch_first_are_split_by_sample(layout):
    x = torch.zeros(3, 2, 2)  # [B=3, T=2, C=2]
    x[1], x[2] = 1.0, 2.0
    net = _Folded()
    counter = sl.SynOpsCounter(net, per_sample=True, **layout)
    net(x)
    assert counter.per_sample().tolist() == [0.0, 4.0, 8.0]  # by hand: sum over T and C of |x| x 1


@pytest.mark.parametrize("layout", [dict(time_dim=0), dict(batch_dim=1)])
def test_time_first_rows_with_as_many_steps_as_samples_are_split_by_sample(layout):
    fc = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        fc.weight.fill_(1.0)
    x = torch.ones(3, 3, 2) * torch.arange(3.0).view(1, 3, 1)  # [T=3, B=3, C]: sample b holds b at every step
    counter = sl.SynOpsCounter(nn.Sequential(fc), per_sample=True, **layout)
    counter.model(x)
    assert counter.per_sample().tolist() == [0.0, 6.0, 12.0]  # by hand: 3 steps x 2 values x b


def test_rows_whose_sample_dim_cannot_be_read_are_left_out_and_named_not_guessed():
    net = _Folded()
    counter = sl.SynOpsCounter(net, per_sample=True, batch_size=3)
    net(torch.ones(3, 3, 2))  # [3, 3, 2]: samples first or time first, nothing says
    with pytest.warns(sl.SynOpsWarning, match=r"leave out layer\(s\) \['fc'\]: their rows fold the samples"):
        per = counter.per_sample(by_layer=True)
    assert per == {}
    counter.remove()
    counter = sl.SynOpsCounter(net, per_sample=True, time_dim=1)  # the fix: the layout of the model's input
    net(torch.ones(3, 3, 2) * torch.arange(3.0).view(3, 1, 1))  # sample b holds b at every step
    assert counter.per_sample().tolist() == [0.0, 6.0, 12.0]  # by hand: 3 steps x 2 values x b


class _SpikeAttention(nn.Module):
    """A spiking self-attention block: projections, then spike x spike products (``[T, B, heads, N, d]``)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.how = how
        self.q, self.k, self.v = (nn.Linear(8, 8, bias=False) for _ in range(3))

    def forward(self, x):  # x: [T, B, N, 8] spikes
        t, b, n, _ = x.shape
        heads = [(p(x) > 0).float().reshape(t, b, n, 2, 4).transpose(2, 3) for p in (self.q, self.k, self.v)]
        q, k, v = heads
        if self.how == "matmul":
            return (q @ k.transpose(-2, -1)) @ v
        if self.how == "einsum":
            attn = torch.einsum("tbhnd,tbhmd->tbhnm", q, k)
            return torch.einsum("tbhnm,tbhmd->tbhnd", attn, v)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)


@pytest.mark.parametrize("how", ["matmul", "einsum", "sdpa"])
def test_attention_products_have_per_sample_values_equal_to_each_sample_alone(how):
    net = _SpikeAttention(how)
    x = (torch.rand(3, 4, 5, 8, generator=torch.Generator().manual_seed(4)) < 0.4).float()  # [T=3, B=4, N, C]
    counter = sl.SynOpsCounter(net, per_sample=True, time_dim=0, neurons=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.SynOpsWarning)  # no layer is left out
        net(x)
        per = counter.per_sample(by_layer=True)
    products = [n for n in per if "matmul" in n or "einsum" in n or "sdpa" in n]
    assert products  # the attention products have per-sample values
    total = counter.per_sample()
    assert float(total.sum()) / 4 == pytest.approx(float(counter.synops()))
    with_rows = counter.snapshot().total()
    counter.remove()
    plain = sl.SynOpsCounter(net, time_dim=0, neurons=False)  # keeping rows changes no count (dense of masks too)
    net(x)
    assert plain.snapshot().total() == pytest.approx(with_rows, rel=1e-9)
    plain.remove()
    counter.attach()
    alone = []
    single = sl.SynOpsCounter(net, time_dim=0, neurons=False)
    counter.remove()
    for i in range(4):
        single.reset()
        net(x[:, i:i + 1])
        alone.append(float(single.synops()))
    assert total.tolist() == pytest.approx(alone)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_per_sample_values_equal_each_sample_alone(batch_first):
    """torch's attention folds its output [tokens x batch] for out_proj: split by the fold's own order."""
    torch.manual_seed(5)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first, bias=False)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    net = Net()
    x = (torch.rand(3, 5, 8, generator=torch.Generator().manual_seed(6)) < 0.5).float()  # [B, N, C]
    dim = 0 if batch_first else 1
    data = x if batch_first else x.transpose(0, 1).contiguous()
    counter = sl.SynOpsCounter(net, per_sample=True, batch_dim=dim, neurons=False)
    net(data)
    per = {k: v.detach() for k, v in counter.per_sample(by_layer=True).items()}
    counter.remove()
    for i in range(3):
        single = sl.SynOpsCounter(net, batch_dim=dim, neurons=False)
        net(data[i:i + 1] if batch_first else data[:, i:i + 1])
        alone = {k: float(v) for k, v in single.synops(by_layer=True).items()}
        single.remove()
        assert set(alone) == set(per)
        for name, value in alone.items():
            assert float(per[name][i]) == pytest.approx(value, rel=1e-6), (name, i)


def test_a_time_first_fold_whose_inner_dims_cannot_be_read_is_left_out_and_named():
    T, B, H, N, D = 2, 3, 2, 5, 4

    class Net(nn.Module):
        def forward(self, q):  # q: [T, B, H, N, D] spikes, folded through a copy: [T*B*H, N, D]
            q = q.transpose(3, 4).transpose(3, 4).contiguous().transpose(2, 3).reshape(-1, N, D)
            return torch.bmm(q, q.transpose(1, 2))

    counter = sl.SynOpsCounter(Net(), per_sample=True, time_dim=0, neurons=False, ops="all")
    counter.model((torch.rand(T, B, N, H, D) < 0.5).float().transpose(2, 3))
    with pytest.warns(sl.SynOpsWarning, match=r"leave out layer\(s\) \['bmm'\]: their rows fold the samples"):
        assert counter.per_sample(by_layer=True) == {}


def test_merging_a_snapshot_without_per_sample_values_keeps_none_and_says_so():
    net = nn.Sequential(nn.Linear(4, 3, bias=False))  # each sample: 4 inputs x 3 targets = 12 synops
    a = sl.SynOpsCounter(net, per_sample=True)
    net(torch.ones(2, 4))
    sa = a.snapshot()
    a.remove()
    b = sl.SynOpsCounter(net)
    net(torch.ones(3, 4))
    sb = b.snapshot()
    b.remove()
    assert sa.distribution()["mean"] == pytest.approx(12.0)
    with pytest.warns(sl.SynOpsWarning, match="merged snapshot holds none"):
        merged = sa.merge(sb)
    assert merged.samples == 5 and merged.per_layer()["0"]["synops"] == pytest.approx(12.0)
    with pytest.raises(ValueError, match="no per-sample synops"):
        merged.distribution()
    c = sl.SynOpsCounter(net, per_sample=True)
    net(torch.ones(3, 4))
    both = sa.merge(c.snapshot())  # both with per-sample values: all 5 samples, 12 each
    assert both.distribution()["n"] == 5 and both.distribution()["p50"] == pytest.approx(12.0)


def test_switching_per_sample_on_partway_leaves_the_accumulated_distribution_out():
    net = nn.Sequential(nn.Linear(4, 3, bias=False))
    counter = sl.SynOpsCounter(net)
    net(torch.ones(3, 4))
    counter.reset()
    counter.per_sample_counts = True
    net(torch.ones(2, 4))
    assert counter.snapshot().distribution()["n"] == 2  # the current batch: all its samples
    with pytest.warns(sl.SynOpsWarning, match="per-sample synops were kept for 0 of the 3 samples"):
        snap = counter.snapshot(accumulated=True)
    assert snap.samples == 5 and not snap.per_sample
    counter.reset(accumulated=True)
    net(torch.ones(2, 4))
    counter.reset()
    net(torch.ones(1, 4))
    assert counter.snapshot(accumulated=True).distribution()["n"] == 3


def test_an_accumulated_snapshot_read_after_reset_keeps_no_partial_per_sample_values():
    net = nn.Sequential(nn.Linear(4, 3))
    counter = sl.SynOpsCounter(net, per_sample=True)
    net(torch.ones(2, 4))
    counter.reset()
    counter.per_sample_counts = False
    net(torch.ones(3, 4))
    counter.reset()
    counter.per_sample_counts = True
    with pytest.warns(sl.SynOpsWarning, match="kept for 2 of the 5 samples"):
        snap = counter.snapshot(accumulated=True)  # no current batch: as Lightning reads an epoch's end
    assert snap.samples == 5 and not snap.per_sample


def test_the_t_quantile_of_the_confidence_interval_is_students_at_every_sample_count():
    """ci95 takes Student's t with n - 1 degrees of freedom for any n (not the normal 1.96 past 31 samples)."""
    from synopsloss.snapshot import distribution, t_quantile

    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 7, 30, 31, 39, 100, 1000, 100000):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-10)
    v = np.arange(40, dtype=float) ** 1.5
    d = distribution(v.tolist())
    assert d["ci95"] == pytest.approx(stats.t.ppf(0.975, 39) * v.std(ddof=1) / np.sqrt(40), rel=1e-10)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_per_sample_refuses_nan_and_inf_as_synops_does(bad):
    """per_sample() returned [12.0, 12.0, nan] where synops() and snapshot() raise."""
    net = nn.Linear(4, 3)
    x = torch.ones(3, 4)
    x[2, 1] = bad
    counter = sl.SynOpsCounter(net, neurons=False, per_sample=True)
    net(x)
    with pytest.raises(FloatingPointError, match="NaN or inf in the input of layer"):
        counter.per_sample()
    with pytest.raises(FloatingPointError, match="NaN or inf in the input of layer"):
        counter.per_sample(by_layer=True)
    counter.remove()
    unchecked = sl.SynOpsCounter(net, neurons=False, per_sample=True, check_finite=False)
    net(x)
    values = unchecked.per_sample()
    assert values[:2].tolist() == [12.0, 12.0] and not bool(torch.isfinite(values[2]))


class _BatchFirstIntoMultiStep(nn.Module):
    """``[B, T, F]`` data read by a plain Linear, then transposed for a SpikingJelly multi-step neuron."""

    def __init__(self) -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron

        self.a = nn.Linear(4, 5, bias=False)
        self.lif = neuron.IFNode(step_mode="m", v_threshold=0.2)

    def forward(self, x):
        return self.lif(self.a(x).transpose(0, 1).contiguous())


def test_data_with_as_many_steps_as_samples_is_not_split_by_a_transposed_neurons_order():
    """The multi-step neuron reads [T, B] of a transpose made in the model: that says nothing of the data's order.
    With T == B the data's rows were split as [T, B] (20, 20, 20 for 60, 0, 0); now the layer is named and left
    out, and batch_dim= splits it."""
    from spikingjelly.activation_based import functional

    torch.manual_seed(0)
    x = torch.zeros(3, 3, 4)
    x[0] = 1.0  # only sample 0 has spikes
    net = _BatchFirstIntoMultiStep()
    fan = (net.a.weight != 0).sum(0).double()
    want = [float((x[b].double() @ fan).sum()) for b in range(3)]
    assert want[0] > 0 and want[1:] == [0.0, 0.0]
    counter = sl.SynOpsCounter(net, per_sample=True)
    net(x)
    with pytest.warns(sl.SynOpsWarning, match=r"per-sample synops leave out layer\(s\) \['a'\]"):
        assert "a" not in counter.per_sample(by_layer=True)
    assert counter.synops().item() == pytest.approx(sum(want) / 3)
    counter.remove()
    functional.reset_net(net)
    declared = sl.SynOpsCounter(net, per_sample=True, batch_dim=0)
    net(x)
    assert declared.per_sample(by_layer=True)["a"].tolist() == pytest.approx(want)


class _TimeFirstLinearIntoMultiStep(nn.Module):
    """[T, B, F] data read by a plain Linear, whose output (same leading dims) a multi-step neuron reads."""

    def __init__(self) -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron

        self.a = nn.Linear(4, 5, bias=False)
        self.lif = neuron.IFNode(step_mode="m", v_threshold=0.2)

    def forward(self, x):
        return self.lif(self.a(x))


def test_data_with_as_many_steps_as_samples_is_split_by_a_neuron_reading_a_layer_of_it():
    """The neuron reads the Linear's output, which keeps the data's [T, B] order: its layout is the data's, and the
    data-fed layer is split per sample (T == B)."""
    torch.manual_seed(0)
    x = torch.zeros(3, 3, 4)  # [T, B, F]
    x[:, 0] = 1.0  # only sample 0 has spikes, at every step
    net = _TimeFirstLinearIntoMultiStep()
    fan = (net.a.weight != 0).sum(0).double()
    want = [float((x[:, b].double() @ fan).sum()) for b in range(3)]
    assert want[0] > 0 and want[1:] == [0.0, 0.0]
    counter = sl.SynOpsCounter(net, per_sample=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.SynOpsWarning)
        net(x)
        assert counter.per_sample(by_layer=True)["a"].tolist() == pytest.approx(want)


def test_per_sample_says_when_every_layer_is_left_out():
    """A [T, B, F] view folded to [T*B, F] inside the model: both layers are left out of the per-sample values (a
    warning names them); per_sample() then says so, not 'no layer with a fan-out map ran'."""
    class Fold(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))

        def forward(self, x):
            t, b = x.shape[:2]
            return self.n(x.reshape(t * b, -1)).reshape(t, b, -1)

    torch.manual_seed(0)
    net = Fold()
    counter = sl.SynOpsCounter(net, per_sample=True, batch_dim=1, neurons=False)
    net(torch.rand(4, 4, 8).transpose(0, 1))
    with pytest.warns(sl.SynOpsWarning, match="per-sample synops leave out layer"):
        with pytest.raises(RuntimeError, match=r"every counted layer of this batch is left out .*'n.0', 'n.2'"):
            counter.per_sample()


class _HeadsFirst(nn.Module):
    """Spike q / k of [T, B, N, H*d], split into heads before the batch: [T, H, B, N, d] (a permuted view)."""

    def __init__(self, heads: int, d: int = 4) -> None:
        super().__init__()
        self.h, self.d = heads, d
        self.q_l, self.k_l = nn.Linear(heads * d, heads * d), nn.Linear(heads * d, heads * d)

    def forward(self, x):
        t, b, n, _ = x.shape
        q, k = (self.q_l(x) > 0).float(), (self.k_l(x) > 0).float()
        split = lambda v: v.reshape(t, b, n, self.h, self.d).permute(0, 3, 1, 2, 4)  # noqa: E731
        return split(q) @ split(k).transpose(-2, -1)


def test_an_attention_product_with_heads_before_the_batch_is_split_by_sample():
    """[T, H, B, N, d] with 2 heads and 3 samples: the samples are the one dim of size 3 (it was refused as 'none of
    which is the batch's 3 samples'). By hand: the q k^T terms of each sample, over steps and heads."""
    torch.manual_seed(0)
    net = _HeadsFirst(heads=2)
    counter = sl.SynOpsCounter(net, time_dim=0, per_sample=True)
    x = (torch.rand(2, 3, 3, 8, generator=torch.Generator().manual_seed(1)) < 0.6).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sl.SynOpsWarning)  # (the projections' rows fold tokens: left out, named)
        net(x)
        got = counter.per_sample(by_layer=True)["matmul"].tolist()
    want = [0.0, 0.0, 0.0]
    with torch.no_grad():
        q, k = (net.q_l(x) > 0).double(), (net.k_l(x) > 0).double()
        for b in range(3):
            for h in range(2):
                qs, ks = q[:, b, :, 4 * h:4 * h + 4], k[:, b, :, 4 * h:4 * h + 4]
                want[b] += float((qs @ ks.transpose(-2, -1)).sum())
    assert got == pytest.approx(want)


class _TokenMLP(nn.Module):
    """Spikformer's MLP: a Linear over tokens with time and samples folded, ``fc(x.flatten(0, 1))`` of
    ``[T, B, N, C]``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        t, b, n, _ = x.shape
        return self.fc(x.flatten(0, 1)).reshape(t, b, n, 5)


@pytest.mark.parametrize("kw", [{"batch_dim": 1}, {"batch_size": 3}])
def test_tokens_with_time_and_samples_folded_are_split_by_sample_and_reset_works(kw):
    """``[T*B, N, C]`` rows (a view of ``[T, B, N, C]``) were refused ('none of which is the batch's 3 samples'), and
    reset() raised the same error, so the batch was never cleared. By hand: each sample's spikes x fan-out 5."""
    x = (torch.rand(2, 3, 7, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    net = _TokenMLP()
    counter = sl.SynOpsCounter(net, neurons=False, per_sample=True, **kw)
    for _ in range(2):  # two batches: reset() starts the second one
        with torch.no_grad():
            net(x)
        want = [float(x[:, i].sum()) * 5 for i in range(3)]
        assert counter.per_sample().tolist() == pytest.approx(want)
        assert float(counter.synops()) == pytest.approx(sum(want) / 3)
        counter.reset()
    assert counter.snapshot(accumulated=True).per_sample["fc"] == pytest.approx(want * 2)


def test_reset_keeps_the_counts_when_a_batch_cannot_be_split_by_sample():
    """A batch whose rows cannot be split by sample: the layer is left out of the per-sample values and named (it
    raised, in per_sample() and in reset(), and every later batch piled onto the unreset one); reset() adds the
    counts to the totals and starts the next batch. By hand: spikes x fan-out 5."""
    class Refold(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 5)

        def forward(self, x):  # rows folded as [2, 9]: neither dim is the batch's 3 samples
            return self.fc(x.reshape(2, 9, 4))

    net = Refold()
    counter = sl.SynOpsCounter(net, neurons=False, per_sample=True, batch_dim=0)
    x = (torch.rand(3, 6, 4, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    for i in range(2):
        with torch.no_grad():
            net(x)
        assert float(counter.synops()) == pytest.approx(float(x.sum()) * 5 / 3)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            counter.reset()
        said = [str(w.message) for w in seen if "per-sample synops leave out layer(s) ['fc']" in str(w.message)]
        assert len(said) == (1 if i == 0 else 0)  # (once per counter)
    acc = counter.snapshot(accumulated=True)
    assert acc.total()["synops"] == pytest.approx(float(x.sum()) * 5 / 3) and not acc.per_sample
    with pytest.raises(ValueError, match="every layer was left out of the per-sample values"):
        acc.distribution()


def _sj_net(t_last: bool = False):
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1)), neuron.IFNode(),
                        layer.Flatten(), layer.Linear(4 * 8 * 8, 5))
    functional.set_step_mode(net, "m")
    return net


def _sj_alone(net, frames):
    """Each sample's synops, counted with that sample alone (brute force by separation)."""
    from spikingjelly.activation_based import functional

    out = []
    counter = sl.SynOpsCounter(net, neurons=False)
    for i in range(frames.shape[1]):
        counter.reset()
        functional.reset_net(net)
        with torch.no_grad():
            net(frames[:, i:i + 1].contiguous())
        out.append(float(counter.synops()))
    counter.remove()
    return out


@pytest.mark.parametrize("steps", [2, 3])
def test_a_copy_folded_by_a_spikingjelly_container_is_split_by_sample(steps):
    """SpikingJelly's recipe ``frames.transpose(0, 1)`` ([B, T] -> [T, B], not contiguous): SeqToANNContainer's
    ``flatten(0, 1)`` is then a copy, whose rows were left out ('an order that cannot be read'); with as many steps
    as samples (T == B == 3) every multi-step layer was. Each sample's synops equal it counted alone."""
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional

    net = _sj_net()
    frames = (torch.rand(3, steps, 2, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    x = frames.transpose(0, 1)
    assert not x.is_contiguous()
    want = _sj_alone(net, x)
    counter = sl.SynOpsCounter(net, neurons=False, per_sample=True)
    functional.reset_net(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.SynOpsWarning)
        with torch.no_grad():
            net(x)
        got = counter.per_sample().tolist()
    assert got == pytest.approx(want)
    assert float(counter.synops()) == pytest.approx(sum(want) / 3)


class _FoldedHeads(nn.Module):
    """q @ k^T of ``[T*B, H, N, d]`` heads split from a new tensor (a copy): the samples' order cannot be read."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)

    def forward(self, x):  # x: [T, B, N, C] spikes
        t, b, n, _ = x.shape
        q, k = (self.fc(x.flatten(0, 1)) > 0).float().chunk(2, -1)
        q, k = (z.reshape(t * b, n, 2, 4).transpose(1, 2) for z in (q, k))
        return q @ k.transpose(-2, -1)


def test_a_product_whose_rows_fold_the_samples_is_left_out_and_named_not_refused():
    """per_sample() raised 'none of which is the batch's 4 samples' for the [T*B, H] rows (with batch_dim= and
    time_dim= given), so no layer had per-sample values. Now the product is left out and named; the Linear is
    split. By hand: each sample's spikes x the Linear's fan-out."""
    torch.manual_seed(0)
    x = (torch.rand(3, 4, 5, 8, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    net = _FoldedHeads()
    counter = sl.SynOpsCounter(net, batch_dim=1, time_dim=0, neurons=False, per_sample=True)
    net(x)
    with pytest.warns(sl.SynOpsWarning, match=r"leave out layer\(s\) \['matmul'\]"):
        got = counter.per_sample(by_layer=True)
    fan = (net.fc.weight != 0).sum(0).double()
    want = [float((x[:, b].double() * fan).sum()) for b in range(4)]
    assert list(got) == ["fc"] and got["fc"].tolist() == pytest.approx(want)
