"""The AvgPool spike-event correction follows pool outputs by identity, or says where it cannot (issue 16).

Every expected number is computed here by brute force: the spike events behind
a pooled value are the spikes summed over its window
(``avg_pool(..., divisor_override=1)`` or an explicit loop), and a layer's
synops are the events times the fan-out of each input neuron.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import synopsloss as sl
from synopsloss.pooling import DIVISOR_CACHE, PoolEvents, avgpool_divisor


def _fan(layer: nn.Linear) -> torch.Tensor:
    return (layer.weight != 0).sum(0).double()


def _synops(counter: sl.SynOpsCounter, name: str) -> float:
    return counter.snapshot().per_layer()[name]["synops"]


def _spikes(*shape: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < 0.5).float()


def _window_sums(x: torch.Tensor, k: int, stride: int, pad: int, ceil: bool) -> torch.Tensor:
    """Spikes in each 1-d window, by an explicit loop (windows clipped to the input, as PyTorch does)."""
    length = x.shape[-1]
    span = length + 2 * pad - k
    n = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (n - 1) * stride >= length + pad:
        n -= 1
    out = torch.zeros(*x.shape[:-1], n, dtype=torch.float64)
    for i in range(n):
        lo, hi = max(i * stride - pad, 0), min(i * stride - pad + k, length)
        out[..., i] = x[..., lo:hi].double().sum(-1)
    return out


# --------------------------------------------------------------------------- 1. functional pools in forward


class _Head(nn.Module):
    """A CIFAR-ResNet head: ``F.avg_pool2d`` in forward, then a view and a Linear."""

    def __init__(self, fn, n_in: int) -> None:
        super().__init__()
        self.fn = fn
        self.linear = nn.Linear(n_in, 3, bias=False)

    def forward(self, x):
        out = F.avg_pool2d(x, 2) if self.fn == "avg2" else self.fn(x)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def test_functional_avg_pool2d_in_forward_is_corrected():
    x = _spikes(2, 2, 4, 4)
    net = _Head("avg2", 2 * 2 * 2)
    counter = sl.SynOpsCounter(net)
    net(x)
    events = F.avg_pool2d(x.double(), 2, divisor_override=1).reshape(2, -1)  # spikes per window
    assert _synops(counter, "linear") == pytest.approx(float((events * _fan(net.linear)).sum()) / 2, rel=1e-12)


class _Functional1d(nn.Module):
    def __init__(self, n_in: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, 2, bias=False)

    def forward(self, x):
        y = F.avg_pool1d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        return self.linear(y.flatten(1))


def test_functional_avg_pool1d_with_clipped_windows_is_corrected_window_by_window():
    x = _spikes(2, 1, 8)
    want_ev = _window_sums(x, 3, 2, 1, True).reshape(2, -1)  # by hand, windows clipped at both ends
    net = _Functional1d(want_ev.shape[1])
    counter = sl.SynOpsCounter(net)
    net(x)
    assert _synops(counter, "linear") == pytest.approx(float((want_ev * _fan(net.linear)).sum()) / 2, rel=1e-12)


class _Adaptive3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * 2 * 3, 2, bias=False)

    def forward(self, x):
        return self.linear(torch.flatten(F.adaptive_avg_pool3d(x, (1, 2, 3)), 1))


def test_functional_adaptive_avg_pool3d_is_corrected():
    x = _spikes(2, 2, 3, 5, 7)
    net = _Adaptive3d()
    counter = sl.SynOpsCounter(net)
    net(x)
    ev = torch.zeros(2, 2, 1, 2, 3, dtype=torch.float64)
    for i in range(2):
        for j in range(3):
            h0, h1 = (i * 5) // 2, -((-(i + 1) * 5) // 2)
            w0, w1 = (j * 7) // 3, -((-(j + 1) * 7) // 3)
            ev[:, :, 0, i, j] = x[:, :, :, h0:h1, w0:w1].double().sum((-1, -2, -3))
    want = float((ev.reshape(2, -1) * _fan(net.linear)).sum()) / 2
    assert _synops(counter, "linear") == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------- 2. what the tag goes through


def test_train_mode_dropout_after_a_pool_counts_the_kept_events():
    x = _spikes(4, 1, 6, 6)
    net = nn.Sequential(nn.AvgPool2d(3), nn.Dropout(0.3), nn.Flatten(), nn.Linear(4, 3, bias=False)).train()
    torch.manual_seed(7)
    kept = net[1](net[0](x)) != 0  # the same dropout mask as below (same seed, same draws)
    counter = sl.SynOpsCounter(net)
    torch.manual_seed(7)
    net(x)
    events = F.avg_pool2d(x.double(), 3, divisor_override=1) * kept  # kept windows carry their spikes
    want = float((events.reshape(4, -1) * _fan(net[3])).sum()) / 4
    assert _synops(counter, "3") == pytest.approx(want, rel=1e-9)


class _FunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool, self.fc = nn.AvgPool1d(2), nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.fc(F.dropout(self.pool(x), 0.5, training=True))


def test_functional_dropout_after_a_pool_counts_the_kept_events():
    x = _spikes(3, 1, 6)
    net = _FunctionalDropout()
    torch.manual_seed(3)
    kept = F.dropout(net.pool(x), 0.5, training=True) != 0
    counter = sl.SynOpsCounter(net)
    torch.manual_seed(3)
    net(x)
    events = F.avg_pool1d(x.double(), 2) * 2 * kept
    assert _synops(counter, "fc") == pytest.approx(float((events.reshape(3, -1) * _fan(net.fc)).sum()) / 3)


def test_train_mode_alpha_dropout_after_a_pool_is_flagged():
    net = nn.Sequential(nn.AvgPool1d(2), nn.AlphaDropout(0.2), nn.Linear(2, 2, bias=False)).train()
    counter = sl.SynOpsCounter(net)  # noqa: F841 (held: a dropped counter removes its hooks)
    with pytest.warns(sl.SynOpsWarning, match=r"layer '2' reads an average-pool output but the training "
                                              r"AlphaDropout '1' changes the values"):
        net(_spikes(2, 1, 4))


class _Cat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p2, self.p3 = nn.AvgPool2d(2), nn.AvgPool2d(3)
        self.fc = nn.Linear(9 + 4 + 5, 2, bias=False)

    def forward(self, x, s):
        joined = torch.cat([self.p2(x).flatten(1), self.p3(x).flatten(1), s], 1)
        return self.fc(joined)


def test_cat_of_two_pools_and_spikes_is_corrected_part_by_part():
    x, s = _spikes(2, 1, 6, 6), _spikes(2, 5, seed=1)
    net = _Cat()
    counter = sl.SynOpsCounter(net)
    net(x, s)
    ev = torch.cat([F.avg_pool2d(x.double(), 2, divisor_override=1).flatten(1),
                    F.avg_pool2d(x.double(), 3, divisor_override=1).flatten(1), s.double()], 1)
    assert _synops(counter, "fc") == pytest.approx(float((ev * _fan(net.fc)).sum()) / 2, rel=1e-12)


class _Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool, self.fc = nn.AvgPool1d(2), nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.fc(torch.stack([self.pool(x), x[..., :3]], 1))  # [B, 2, 1, 3]


def test_stack_of_a_pool_output_and_spikes_is_corrected():
    x = _spikes(2, 1, 6)
    net = _Stack()
    counter = sl.SynOpsCounter(net, batch_dim=0)
    net(x)
    ev = torch.stack([F.avg_pool1d(x.double(), 2) * 2, x[..., :3].double()], 1)
    assert _synops(counter, "fc") == pytest.approx(float((ev.reshape(-1, 3) * _fan(net.fc)).sum()) / 2)


class _Doubling(nn.AvgPool2d):
    def forward(self, x):
        return super().forward(x) * 2.0


class _OwnKernel(nn.AvgPool2d):
    def forward(self, x):
        return F.avg_pool2d(x, 3)  # not self.kernel_size: the divisor is the call's (9), not the module's (4)


def test_pool_subclass_that_changes_its_output_is_flagged():
    net = nn.Sequential(_Doubling(2), nn.Flatten(), nn.Linear(4, 2, bias=False))
    x = _spikes(2, 1, 4, 4)
    counter = sl.SynOpsCounter(net)
    with pytest.warns(sl.SynOpsWarning, match=r"average pool '0' \(_Doubling\) overrides forward and returns"):
        net(x)
    # not corrected: the values the layer read (pooled x 2)
    want = float((F.avg_pool2d(x.double(), 2).reshape(2, -1) * 2 * _fan(net[2])).sum()) / 2
    assert _synops(counter, "2") == pytest.approx(want, rel=1e-6)


def test_pool_subclass_that_pools_itself_is_corrected_with_its_own_divisor():
    net = nn.Sequential(_OwnKernel(2), nn.Flatten(), nn.Linear(4, 2, bias=False))
    x = _spikes(2, 1, 6, 6)
    counter = sl.SynOpsCounter(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.SynOpsWarning)
        net(x)
    ev = F.avg_pool2d(x.double(), 3, divisor_override=1).reshape(2, -1)
    assert _synops(counter, "2") == pytest.approx(float((ev * _fan(net[2])).sum()) / 2, rel=1e-12)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("where", ["pool", "flatten"])
def test_a_user_hook_on_the_pool_path_is_flagged(when, where):
    net = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 2, bias=False))
    target = net[0] if where == "pool" else net[1]

    def hook(module, args, out):
        return out * 3.0

    if when == "before":
        target.register_forward_hook(hook)
    counter = sl.SynOpsCounter(net)
    if when == "after":
        target.register_forward_hook(hook)
    x = _spikes(2, 1, 4, 4)
    match = (r"average pool '0' \(AvgPool2d\) has a forward hook that is not the counter's" if where == "pool" else
             r"layer '1' \(Flatten\) reads an average-pool output and has a forward hook that is not the counter's")
    with pytest.warns(sl.SynOpsWarning, match=match):
        net(x)
    want = float((F.avg_pool2d(x.double(), 2).reshape(2, -1) * 3 * _fan(net[2])).sum()) / 2
    assert _synops(counter, "2") == pytest.approx(want, rel=1e-6)  # the values read, not 3 x the events


# --------------------------------------------------------------------------- 3. the divisor cache is bounded


def test_divisor_cache_is_bounded_and_stays_exact_after_eviction():
    events = PoolEvents()
    pool = nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False)
    hook = events.pool_hook(avgpool_divisor, 1, name="p", module=pool)
    for length in range(4, 4 + 3 * DIVISOR_CACHE):
        x = torch.ones(1, 1, length)
        hook(pool, (x,), pool(x))
        assert events.cache_size <= DIVISOR_CACHE
    assert events.cache_size == DIVISOR_CACHE
    x = _spikes(1, 1, 5)  # its divisors were evicted long ago: recomputed
    y = pool(x)
    hook(pool, (x,), y)
    scale, _ = events.scale_for("fc", y, 1, y.numel(), lambda msg: None)
    want = _window_sums(x, 3, 2, 1, False).reshape(-1)  # events by an explicit loop
    assert torch.equal((y.reshape(-1).double() * scale.double()).round(), want)


# --------------------------------------------------------------------------- 5. TransformerEncoder fast path


def _encoder(nested: bool, batch_first: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's prototype notice for nested tensors
        enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=nested)
    return _Encoded(enc, batch_first).eval()


class _Encoded(nn.Module):
    def __init__(self, enc: nn.Module, batch_first: bool) -> None:
        super().__init__()
        self.enc, self.head, self.batch_first = enc, nn.Linear(8, 2, bias=False), batch_first

    def forward(self, x, mask):
        return self.head(self.enc(x if self.batch_first else x.transpose(0, 1), src_key_padding_mask=mask))


def _encoder_run(net: nn.Module) -> torch.Tensor:
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 3:] = True
    mask[1, 4:] = True
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nested tensors is in prototype.*")
        return net(x, mask)


@pytest.mark.filterwarnings("ignore:synopsloss. layer.s. 'enc")  # expected here; the test is about something else
@pytest.mark.filterwarnings("ignore:synopsloss. module.s. enc")  # expected here; the test is about something else
def test_counter_leaves_the_transformer_encoder_fast_path_output_bit_identical():
    bare = _encoder_run(_encoder(True))
    net = _encoder(True)
    counter = sl.SynOpsCounter(net, batch_dim=0)
    with pytest.warns(sl.SynOpsWarning, match=r"nn.TransformerEncoder 'enc' takes torch's nested-tensor fast path"):
        counted = _encoder_run(net)
    assert torch.equal(bare, counted)
    # the head after the encoder is counted: padded tokens are 0 (torch's fast path), the others real values
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hidden = net.enc(torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(2)),
                         src_key_padding_mask=torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0] * 5]).bool())
    assert bool((hidden[0, 3:] == 0).all())
    rows = counter.snapshot().per_layer()
    assert rows["head"]["synops"] == pytest.approx(float((hidden.abs().double().sum((0, 1)) * _fan(net.head)).sum())
                                                   / 3, rel=1e-6)
    assert all(rows.get(f"enc.layers.{i}.linear1", {"synops": 0.0})["synops"] == 0 for i in range(2))


def test_encoder_off_the_fast_path_is_counted_and_unchanged():
    bare = _encoder_run(_encoder(True, batch_first=False))
    net = _encoder(True, batch_first=False)
    counter = sl.SynOpsCounter(net, batch_dim=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*fast path.*")
        counted = _encoder_run(net)
    assert torch.equal(bare, counted)
    rows = counter.snapshot().per_layer()
    # linear2 reads linear1's ReLU outputs of the 15 tokens: synops = sum |input| x fan-out (brute force below)
    got = {}
    h = net.enc.layers[1].linear2.register_forward_hook(lambda m, a, o: got.update(x=a[0].detach()))
    counter.remove()
    _encoder_run(net)
    h.remove()
    want = float((got["x"].abs().double().reshape(-1, 16).sum(0) * _fan(net.enc.layers[1].linear2)).sum()) / 3
    assert rows["enc.layers.1.linear2"]["synops"] == pytest.approx(want, rel=1e-6)


class _NestedFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.b(self.a(x).to_padded_tensor(0.0))


@pytest.mark.filterwarnings("ignore:synopsloss. layer.s. 'a' did not run")  # expected here; the test is about something else
def test_nested_tensor_into_a_linear_is_skipped_and_named():
    net = _NestedFirst()
    counter = sl.SynOpsCounter(net, batch_size=2, neurons=False)  # (the neuron monitor reads input shapes)
    x = torch.nested.nested_tensor([torch.ones(2, 4), torch.ones(3, 4)])
    with torch.no_grad(), pytest.warns(sl.SynOpsWarning, match=r"layer 'a' \(Linear\) received a nested tensor"):
        net(x)
    rows = counter.snapshot().per_layer()
    assert "a" not in rows or rows["a"]["synops"] == 0
    with torch.no_grad():
        padded = net.a(x).to_padded_tensor(0.0)  # [2, 3, 3]
    assert rows["b"]["synops"] == pytest.approx(float((padded.abs().double().reshape(-1, 3).sum(0)
                                                       * _fan(net.b)).sum()) / 2, rel=1e-6)


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)  # a functional pool in a helper outside the model's class


class _PooledHead(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.fc, self.how = nn.Linear(32, 5), how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "helper":
            return self.fc(_global_pool(x).flatten(1))
        pool = F.avg_pool2d  # a local alias
        return self.fc(pool(x, 2).flatten(1))


@pytest.mark.parametrize("how", ["helper", "alias"])
def test_a_functional_pool_in_a_helper_or_under_an_alias_is_corrected(how):
    torch.manual_seed(0)
    net = _PooledHead(how)
    x = _spikes(3, 2, 8, 8)
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    events = F.avg_pool2d(x, 2, divisor_override=1).flatten(1)  # spike events per pooled position, by hand
    got = counter.snapshot().per_layer()["fc"]
    assert got["synops"] == pytest.approx(float((events.double() @ _fan(net.fc)).sum()) / 3)
    assert got["eff_acs"] == pytest.approx(got["synops"]) and got["eff_macs"] == 0


@pytest.mark.parametrize("chain", ["avg_then_adaptive", "avg_then_avg", "avg_then_max", "avg_then_adaptive_max"])
def test_a_pool_of_an_average_pools_output_passes_on_its_spike_events(chain):
    """Spikes -> AvgPool2d(2) -> a second pool -> Linear: the Linear receives the spike events the second pool
    passes on (summed over its window, or those at the position a max pool picks), by hand."""
    x = _spikes(3, 2, 8, 8, seed=4)
    events = F.avg_pool2d(x, 2, divisor_override=1)  # [3, 2, 4, 4] events after the first pool
    second = {"avg_then_adaptive": nn.AdaptiveAvgPool2d(1), "avg_then_avg": nn.AvgPool2d(2),
              "avg_then_max": nn.MaxPool2d(2), "avg_then_adaptive_max": nn.AdaptiveMaxPool2d(2)}[chain]
    if chain == "avg_then_adaptive":
        want_events = events.sum((2, 3), keepdim=True)
    elif chain == "avg_then_avg":
        want_events = F.avg_pool2d(events, 2, divisor_override=1)
    else:  # the events where the max pool takes its value (the average pool's divisors are all 4 here)
        want_events = F.max_pool2d(events, 2)
    torch.manual_seed(0)
    n_out = want_events[0].numel()
    net = nn.Sequential(nn.AvgPool2d(2), second, nn.Flatten(), nn.Linear(n_out, 5))
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    got = counter.snapshot().per_layer()["3"]
    want = float((want_events.flatten(1).double() @ _fan(net[3])).sum()) / 3
    assert want > 0
    assert got["synops"] == pytest.approx(want)
    assert got["eff_acs"] == pytest.approx(want) and got["eff_macs"] == 0


def test_a_max_pool_after_an_average_pool_with_uneven_divisors_takes_the_events_it_picks():
    """Clipped windows (padding, count_include_pad=False) give the average pool's outputs different divisors: a
    max pool after it passes on the events of the value it picks, not its value times one divisor."""
    x = _spikes(2, 1, 6, 6, seed=5)
    avg = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    pooled = avg(x)
    events = F.avg_pool2d(x, 3, stride=2, padding=1, divisor_override=1)
    _, idx = F.max_pool2d(pooled, 2, return_indices=True)
    want_events = events.flatten(2).gather(2, idx.flatten(2))
    torch.manual_seed(1)
    net = nn.Sequential(avg, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(want_events[0].numel(), 3))
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    got = counter.snapshot().per_layer()["3"]
    assert got["synops"] == pytest.approx(float((want_events.flatten(1).double() @ _fan(net[3])).sum()) / 2)


class _CopiedPool(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.pool, self.fc, self.how = nn.AvgPool2d(2), nn.Linear(32, 5), how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x)
        if self.how == "permute_reshape":
            y = y.permute(0, 2, 3, 1).reshape(y.shape[0], -1)  # a copy in another order
        elif self.how == "permute_contiguous":
            y = y.permute(0, 2, 3, 1).contiguous().flatten(1)
        elif self.how == "to_channels_last":
            y = y.to(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(y.shape[0], -1)
        elif self.how == "flip":
            y = y.permute(0, 2, 3, 1).flip(-1).flip(-1).reshape(y.shape[0], -1)  # (flipped twice: the same order)
        else:
            y = y.flatten(1)  # channels-last input: the pool's output is channels-last, flatten copies
        return self.fc(y)


@pytest.mark.parametrize("how", ["permute_reshape", "permute_contiguous", "channels_last", "to_channels_last",
                                 "flip"])
def test_a_copy_of_a_pool_output_in_another_order_keeps_its_events(how):
    x = _spikes(3, 2, 8, 8, seed=6)
    events = F.avg_pool2d(x, 2, divisor_override=1)
    events = events.flatten(1) if how == "channels_last" else events.permute(0, 2, 3, 1).reshape(3, -1)
    torch.manual_seed(2)
    net = _CopiedPool(how)
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x.to(memory_format=torch.channels_last) if how == "channels_last" else x)
    got = counter.snapshot().per_layer()["fc"]
    assert got["synops"] == pytest.approx(float((events.double() @ _fan(net.fc)).sum()) / 3)
    assert got["eff_macs"] == 0


@pytest.mark.parametrize("dtype,size", [(torch.bfloat16, 30), (torch.float16, 64)])
def test_a_half_precision_global_pool_counts_its_events_exactly(dtype, size):
    """A bf16 / fp16 average of a large window is rounded to 8 / 11 bits: value x divisor can miss the count by
    more than 1/2; the events come from the pool's own integer input instead."""
    x = _spikes(2, 3, size, size, seed=7).to(dtype)
    torch.manual_seed(3)
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).to(dtype)
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    events = x.double().sum((2, 3))
    got = counter.snapshot().per_layer()["2"]
    assert got["synops"] == float((events @ _fan(net[2])).sum()) / 2


class _FunctionalMaxAfterAvg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * 2 * 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.avg_pool2d(x, 2), 2).flatten(1))


def test_a_functional_max_pool_after_an_average_pool_passes_on_the_events_it_picks():
    x = _spikes(3, 2, 8, 8, seed=8)
    events = F.max_pool2d(F.avg_pool2d(x, 2, divisor_override=1), 2).flatten(1)  # (divisors all 4: the same pick)
    torch.manual_seed(4)
    net = _FunctionalMaxAfterAvg()
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    got = counter.snapshot().per_layer()["fc"]
    assert got["synops"] == pytest.approx(float((events.double() @ _fan(net.fc)).sum()) / 3)
    assert got["eff_macs"] == 0


class _FunctionalHead(nn.Module):
    """``F.avg_pool2d`` then ``F.conv2d`` in ``forward``: counted by the function mode."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return F.conv2d(F.avg_pool2d(x, 2), self.conv.weight, None, 1, 1)


@pytest.mark.parametrize("path", ["module", "functional"])
@pytest.mark.parametrize("grad", [True, False])
def test_pooled_values_of_only_0_and_1_still_count_each_event_as_an_accumulate(path, grad):
    """Windows all-or-none: the pooled values are 0 and 1, yet each stands for 4 spikes (events mode). Before,
    their ACs were counted as pooled nonzeros (8 for 4 spikes), and 3 spikes in the window gave more (24)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    net = nn.Sequential(nn.AvgPool2d(2), conv) if path == "module" else _FunctionalHead(conv)
    fan = torch.zeros(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    F.conv2d(fan, (conv.weight != 0).double(), None, 1, 1).sum().backward()
    for spikes in (4, 3):
        x = torch.zeros(2, 1, 4, 4)
        x[:, 0, :2, :2] = 1.0
        x.view(2, -1)[:, :4 - spikes] = 0.0  # (the first row of the window loses 4 - spikes of its spikes)
        x[1, 0, 2:, 2:] = 1.0  # a second sample: another full window
        events = x.double().reshape(2, 1, 2, 2, 2, 2).sum((3, 5))  # spikes per window
        want = float((events * fan.grad).sum()) / 2
        counter = sl.SynOpsCounter(net, neurons=False)
        with torch.set_grad_enabled(grad):
            net(x.requires_grad_(grad))
        row = counter.snapshot().total()
        counter.remove()
        assert row["synops"] == pytest.approx(want, rel=1e-12), spikes
        assert row["eff_acs"] == pytest.approx(want, rel=1e-12), spikes
        assert row["eff_macs"] == 0.0


def test_a_multi_step_max_pool_after_an_average_pool_passes_on_the_events_it_picks():
    """SpikingJelly ``step_mode='m'`` pools read ``[T, B, C, H, W]``: the max pool's picks are taken over the
    folded steps (attaching the counter made this forward raise before)."""
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    T, B = 4, 2
    net = nn.Sequential(layer.Conv2d(2, 3, 3, padding=1, step_mode="m"), neuron.IFNode(step_mode="m", v_threshold=0.2),
                        layer.AvgPool2d(2, step_mode="m"), layer.MaxPool2d(2, step_mode="m"),
                        layer.Flatten(step_mode="m"), layer.Linear(3, 2, bias=False, step_mode="m"))
    x = (torch.rand(T, B, 2, 4, 4) < 0.5).float()
    spikes = []
    hook = net[1].register_forward_hook(lambda m, a, out: spikes.append(out.detach().double()))
    plain = net(x).detach()
    hook.remove()
    functional.reset_net(net)
    events = spikes[0].reshape(T, B, 3, 2, 2, 2, 2).sum((4, 6))  # spikes per 2x2 window: [T, B, 3, 2, 2]
    picked = events.amax((-2, -1))  # the max pool picks the largest pooled value, the most events
    want = float((picked * (net[5].weight != 0).sum(0).double()).sum()) / B
    counter = sl.SynOpsCounter(net)
    assert torch.equal(net(x), plain)
    assert want > 0 and counter.synops(by_layer=True)["5"].item() == pytest.approx(want, rel=1e-12)


class _FlatHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3, bias=False)

    def forward(self, x):
        return self.fc(F.avg_pool2d(x, 2).flatten(1))


@pytest.mark.parametrize("path", ["module", "functional"])
def test_the_pool_flatten_linear_head_is_corrected_under_inference_mode(path):
    """Under ``torch.inference_mode`` a flatten of the pool's output has no ``_base``: the pool's output was freed
    and its events lost (10.25 synops as MACs for 41 ACs)."""
    torch.manual_seed(0)
    fc = nn.Linear(8, 3, bias=False)
    with torch.no_grad():
        fc.weight[0, :3] = 0.0
    net = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), fc) if path == "module" else _FlatHead()
    if path == "functional":
        net.fc.load_state_dict(fc.state_dict())
    x = _spikes(3, 2, 4, 4)
    events = F.avg_pool2d(x.double(), 2, divisor_override=1).reshape(3, -1)
    want = float((events * _fan(fc)).sum()) / 3
    for mode in (torch.no_grad, torch.inference_mode):
        counter = sl.SynOpsCounter(net, neurons=False)
        with mode():
            net(x)
        total = counter.snapshot().total()
        counter.remove()
        assert total["synops"] == pytest.approx(want, rel=1e-12), mode
        assert total["eff_acs"] == pytest.approx(want, rel=1e-12) and total["eff_macs"] == 0.0, mode


@pytest.mark.parametrize("kernel, ceil", [(5, False), (7, False), (3, True)])
def test_a_sum_pool_counts_the_spike_events_of_its_windows(kernel, ceil):
    """sinabs' SumPool2d is LPPool2d(p=1): avg * k * k rounds (15.000001 for 15 spikes under 5 x 5), and the call
    was counted as 512 MACs for 3803 events. Its windows' sums are the events, each an accumulate; with ceil_mode
    a clipped window's output is more than its sum (scaled by the whole kernel), and the events are still its sum."""
    from sinabs.layers import SumPool2d

    torch.manual_seed(0)
    pool = SumPool2d(kernel, ceil_mode=ceil)
    x = _spikes(2, 2, 17, 17)
    out_hw = pool(x).shape[-2:]
    fc = nn.Linear(2 * out_hw[0] * out_hw[1], 4, bias=False)
    net = nn.Sequential(pool, nn.Flatten(), fc)
    sums = torch.zeros(2, 2, *out_hw, dtype=torch.float64)  # each window's spikes, by explicit loops
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            sums[:, :, i, j] = x[:, :, i * kernel:(i + 1) * kernel, j * kernel:(j + 1) * kernel].double().sum((-2, -1))
    want = float((sums.reshape(2, -1) * _fan(fc)).sum()) / 2
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    total = counter.snapshot().total()
    assert total["synops"] == pytest.approx(want, rel=1e-12)
    assert total["eff_acs"] == pytest.approx(want, rel=1e-12) and total["eff_macs"] == 0.0


def test_an_lp_pool_of_another_norm_is_no_sum_of_events():
    torch.manual_seed(0)
    net = nn.Sequential(nn.LPPool2d(2, 2), nn.Flatten(), nn.Linear(8, 3, bias=False))
    x = _spikes(2, 2, 4, 4)
    pooled = F.lp_pool2d(x.double(), 2, 2).reshape(2, -1)
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    assert counter.synops().item() == pytest.approx(float((pooled * _fan(net[2])).sum()) / 2, rel=1e-6)


def test_a_bitplane_layer_after_an_average_pool_is_counted_unary_and_named():
    """Its events are the spikes of the neurons before the pool, whose bit planes are not followed: before, the
    encoding was ignored without a word (an AvgPool) or applied to the window sums (a sum pool)."""
    torch.manual_seed(0)
    x = torch.randint(0, 4, (2, 1, 4, 4)).float()  # spike counts 0..3
    for pool in (nn.AvgPool2d(2), nn.LPPool2d(1, 2)):
        fc = nn.Linear(4, 3, bias=False)
        net = nn.Sequential(pool, nn.Flatten(), fc)
        events = F.avg_pool2d(x.double(), 2, divisor_override=1).reshape(2, -1)
        counter = sl.SynOpsCounter(net, neurons=False, encoding={"2": "bitplane"})
        with pytest.warns(sl.SynOpsWarning, match=r"layer '2' has encoding='bitplane' and reads an average-pool"):
            net(x)
        got = counter.snapshot().total()
        counter.remove()
        assert got["synops"] == pytest.approx(float((events * _fan(fc)).sum()) / 2, rel=1e-12), pool


class _HalveInPlace(nn.Module):
    def forward(self, x):
        return x.mul_(0.5)


def _frac_ops(fn) -> int:
    """The ``frac`` ops launched by ``fn()`` (the integer test of a pool's input)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "frac" in str(func):
                Ops.n += 1
            return func(*args, **(kwargs or {}))

    with Ops():
        fn()
    return Ops.n


@pytest.mark.parametrize("halve", [False, True])
def test_the_spikes_of_a_whole_spike_neuron_reach_a_pool_as_events_without_an_integer_pass(halve):
    """sinabs' MultiSpike makes whole numbers by construction: its output, unchanged, is not read for integers
    (about 5% of the sinabs tutorial's no_grad forward). Changed in place after the neuron, it is read, and
    halved spikes are no events."""
    import sinabs.layers as sll

    torch.manual_seed(0)
    fc = nn.Linear(2 * 4 * 4, 3, bias=False)
    layers = [nn.Conv2d(1, 2, 3, padding=1, bias=False), sll.IAFSqueeze(batch_size=2, min_v_mem=-1.0)]
    net = nn.Sequential(*layers, *([_HalveInPlace()] if halve else []), nn.AvgPool2d(2), nn.Flatten(), fc)
    x = (torch.rand(6, 1, 8, 8) < 0.5).float() * 3  # B=2 x T=3 folded
    spikes = []
    hook = layers[1].register_forward_hook(lambda m, a, out: spikes.append(out.detach().clone()))
    with torch.no_grad():
        net(x)
    hook.remove()
    layers[1].reset_states()
    s = spikes[0].double() * (0.5 if halve else 1.0)
    assert bool((s == s.round()).all()) is not halve and spikes[0].max() > 1  # multi-spikes reach the pool
    pooled = F.avg_pool2d(s, 2).reshape(6, -1)
    per_value = pooled * (1.0 if halve else 4.0)  # halved spikes are no events: the pooled values themselves
    want = float((per_value * _fan(fc)).sum()) / 2
    counter = sl.SynOpsCounter(net, neurons=False)
    with torch.no_grad():
        launched = _frac_ops(lambda: net(x))
    assert counter.synops(by_layer=True)["5" if halve else "4"].item() == pytest.approx(want, rel=1e-6)
    assert (launched > 0) is halve


class _ScaleThroughData(nn.Module):
    def forward(self, x):
        x.data.mul_(0.3)  # (no version bump)
        return x


def test_whole_spikes_scaled_through_data_before_a_pool_are_no_events():
    """A whole-spike neuron's output is trusted by identity, version and range: scaled through .data (which no
    version counter sees) its range shows it (a max that is no whole number), and the pool's input is read (4x
    the synops before). An edit that keeps min 0 and a whole max is not seen (docs/counting.md)."""
    import sinabs.layers as sll

    torch.manual_seed(0)
    fc = nn.Linear(2 * 4 * 4, 3, bias=False)
    iaf = sll.IAFSqueeze(batch_size=2, min_v_mem=-1.0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), iaf, _ScaleThroughData(), nn.AvgPool2d(2),
                        nn.Flatten(), fc)
    x = (torch.rand(6, 1, 8, 8) < 0.5).float() * 3
    seen = []
    fc.register_forward_hook(lambda m, a, o: seen.append(a[0].detach().double().clone()))
    net(x)
    iaf.reset_states()
    want = float((seen[0] * _fan(fc)).sum()) / 2  # the pooled scaled values themselves: no events
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    assert counter.synops(by_layer=True)["5"].item() == pytest.approx(want, rel=1e-6)


def test_a_functional_pool_in_a_class_whose_code_cannot_be_read_is_corrected():
    """A class made by ``exec`` has no source to read: its forward is followed anyway (it may call a pool), and
    the pooled spike events are counted, not the pooled values."""
    namespace = {"nn": nn, "F": F, "torch": torch}
    exec(  # noqa: S102 - the point of the test: a class without readable source
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(16, 5, bias=False)\n"
        "    def forward(self, x):\n"
        "        return self.fc(F.avg_pool2d(x, 2).flatten(1))\n", namespace)
    net = namespace["Net"]()
    x = _spikes(3, 1, 8, 8, seed=4)
    counter = sl.SynOpsCounter(net)
    net(x)
    events = F.avg_pool2d(x, 2, divisor_override=1).flatten(1)  # spikes per window, by torch's own sum
    assert _synops(counter, "fc") == pytest.approx(float((events * _fan(net.fc)).sum()) / 3)


class _Moved(nn.Module):
    """spikes -> AvgPool2d(2) -> a move (a module, or a call in this forward: the function-mode path) -> conv."""

    def __init__(self, how, conv: nn.Module) -> None:
        super().__init__()
        self.pool, self.conv = nn.AvgPool2d(2), conv
        self.how = how if isinstance(how, str) else "module"
        self.move = how if isinstance(how, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_move(self.how, self.move, self.pool(x)))


def _move(how: str, module: nn.Module, p: torch.Tensor) -> torch.Tensor:
    if how == "double":
        return p.double()
    if how == "half_then_float":
        return p.half().float()
    if how == "F.pad":
        return F.pad(p, (1, 1, 1, 1))
    if how == "F.pad_reflect":
        return F.pad(p, (1, 1, 1, 1), mode="reflect")
    if how == "interpolate_nearest":
        return F.interpolate(p, scale_factor=2)
    if how == "pixel_shuffle":
        return F.pixel_shuffle(p, 2)
    return module(p)


_MOVES = {  # name: (the op between the pool and the conv: a name of _move or a module; the float64 conv?)
    "double": ("double", True),
    "half_then_float": ("half_then_float", False),
    "F.pad": ("F.pad", False),
    "F.pad_reflect": ("F.pad_reflect", False),
    "interpolate_nearest": ("interpolate_nearest", False),
    "pixel_shuffle": ("pixel_shuffle", False),
    "ZeroPad2d": (nn.ZeroPad2d((1, 0, 2, 1)), False),
    "ReplicationPad2d": (nn.ReplicationPad2d(1), False),
    "Upsample": (nn.Upsample(scale_factor=2), False),
    "PixelUnshuffle": (nn.PixelUnshuffle(2), False),
}


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("name", sorted(_MOVES))
def test_pads_upsamplings_shuffles_and_casts_after_a_pool_keep_its_events(name, grad):
    """Ops that move values without mixing them keep each pooled value's spike events: the brute force applies
    the same op to the window sums of the spikes (the events) and counts them times the conv's fan-out."""
    from helpers import brute_force_counts, frozen_copy

    move, wide = _MOVES[name]
    x = _spikes(2, 4, 8, 8, seed=3)
    events = F.avg_pool2d(x, 2, divisor_override=1)  # spikes per window
    moved = _move(move, move, events) if isinstance(move, str) else move(events)
    channels = moved.shape[1]
    conv = nn.Conv2d(channels, 3, 3, padding=1, bias=False)
    torch.manual_seed(0)
    with torch.no_grad():
        conv.weight.mul_((torch.rand_like(conv.weight) < 0.7).float())  # pruned taps
    if wide:
        conv = conv.double()
    net = _Moved(move, conv)
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.SynOpsWarning)
        with torch.set_grad_enabled(grad):
            net(x.requires_grad_(grad))
        got = counter.snapshot().per_layer()["conv"]
    want = brute_force_counts(frozen_copy(conv), moved.to(conv.weight.dtype), samples=2)
    assert got["synops"] == pytest.approx(want["synops"])
    assert (got["eff_acs"], got["eff_macs"]) == pytest.approx((want["synops"], 0.0))  # every event an AC


def test_an_interpolating_upsampling_after_a_pool_is_read_as_values():
    """A bilinear upsampling mixes pooled values: its outputs are values of their own (MACs, |x| x fan-out)."""
    from helpers import brute_force_counts, frozen_copy

    x = _spikes(2, 2, 8, 8, seed=4)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    up = nn.Upsample(scale_factor=2, mode="bilinear")
    net = _Moved(up, conv)
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=2)
    net(x)
    got = counter.snapshot().per_layer()["conv"]
    want = brute_force_counts(frozen_copy(conv), up(F.avg_pool2d(x, 2)), samples=2)
    assert got["synops"] == pytest.approx(want["synops"]) and got["eff_acs"] == 0.0
    assert got["eff_macs"] == pytest.approx(want["eff_macs"])


def test_a_constant_pad_of_another_value_after_a_pool_is_named():
    net = _Moved(nn.ConstantPad2d(1, 0.5), nn.Conv2d(2, 3, 3, bias=False))
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=2)
    with pytest.warns(sl.SynOpsWarning, match=r"layer 'conv' reads an average-pool output but the layer 'move' "
                                              r"\(ConstantPad2d\) pads it with the value 0.5"):
        net(_spikes(2, 2, 8, 8, seed=5))
    assert counter.snapshot().per_layer()["conv"]["eff_acs"] == 0.0  # the pooled values, as the warning says


class _ScaledReLU(nn.ReLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) * 3


class _Gain(nn.Identity):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 3


class _ScaledFlatten(nn.Flatten):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 3


class _ScaledDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 3


class _ScaledPad(nn.ZeroPad2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 3


class _NamedReLU(nn.ReLU):  # (no forward of its own: the library's, followed)
    pass


@pytest.mark.parametrize("cls", [_ScaledReLU, _Gain, _ScaledFlatten, _ScaledDropout, _ScaledPad, _NamedReLU])
def test_a_subclass_of_a_followed_layer_that_changes_values_is_read_as_values(cls):
    """A subclass of ReLU / Identity / Flatten / Dropout / a pad whose own forward scales the values: the layer
    after it reads those values (|x| x fan-out, MACs), not the pool's events times the divisor (3 x 4 too many)."""
    from helpers import brute_force_counts, frozen_copy

    torch.manual_seed(0)
    mid = cls() if cls not in (_ScaledDropout, _ScaledPad) else (cls(0.0) if cls is _ScaledDropout else cls(1))
    lin = nn.Linear(2 * 4 * 4 if cls is not _ScaledPad else 2 * 6 * 6, 5, bias=False)
    net = nn.Sequential(nn.AvgPool2d(2), mid, nn.Flatten(), lin).train()
    x = _spikes(3, 2, 8, 8, seed=6)
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=3)
    with torch.no_grad():
        seen = net[2](mid(net[0](x)))
        net(x)
    got = counter.snapshot().per_layer()["3"]
    if cls is _NamedReLU:  # the pool's events: window sums x fan-out, ACs
        events = F.avg_pool2d(x, 2, divisor_override=1).flatten(1)
        want = brute_force_counts(frozen_copy(lin), events, samples=3)
        assert (got["synops"], got["eff_acs"]) == pytest.approx((want["synops"], want["synops"]))
    else:
        want = brute_force_counts(frozen_copy(lin), seen, samples=3)
        assert (got["synops"], got["eff_macs"], got["eff_acs"]) == pytest.approx(
            (want["synops"], want["eff_macs"], 0.0))


class _PoolCast(nn.Module):
    """Integer counts -> F.avg_pool2d(30) in float32 -> a cast to half precision -> Linear."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.avg_pool2d(x, 30)
        if self.how == "half":
            p = p.half()
        elif self.how == "bfloat16":
            p = p.bfloat16()
        else:
            p = p.to(torch.bfloat16)
        return self.fc.to(p.dtype)(p.flatten(1))


@pytest.mark.parametrize("how", ["half", "bfloat16", "to"])
def test_a_half_precision_cast_of_a_pool_output_keeps_each_windows_events(how):
    """A 30 x 30 window's average rounded to 11 / 8 bits misses its count by more than 1/2 (6293 events read as
    6300): the events are taken from the average before the cast (window sums, by brute force)."""
    g = torch.Generator().manual_seed(8)
    x = torch.randint(0, 8, (2, 1, 60, 60), generator=g).float()
    net = _PoolCast(how)
    with torch.no_grad():
        net.fc.weight.fill_(1.0)
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=2)
    with torch.no_grad():
        net(x)
    events = F.avg_pool2d(x, 30, divisor_override=1).double()
    got = counter.snapshot().per_layer()["fc"]
    assert got["synops"] == float(events.sum()) * 3 / 2  # every weight nonzero: fan-out 3
    assert got["eff_acs"] == got["synops"] and got["eff_macs"] == 0.0


def test_a_forward_set_on_a_relu_instance_is_read_as_values():
    """relu.forward = lambda t: 3 * t: the instance's forward is not the library's; its values are read."""
    from helpers import brute_force_counts, frozen_copy

    relu = nn.ReLU()
    relu.forward = lambda t: 3 * t
    lin = nn.Linear(2 * 4 * 4, 5, bias=False)
    net = nn.Sequential(nn.AvgPool2d(2), relu, nn.Flatten(), lin)
    x = _spikes(3, 2, 8, 8, seed=9)
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=3)
    with torch.no_grad():
        net(x)
    want = brute_force_counts(frozen_copy(lin), 3 * F.avg_pool2d(x, 2).flatten(1), samples=3)
    got = counter.snapshot().per_layer()["3"]
    assert (got["synops"], got["eff_macs"], got["eff_acs"]) == pytest.approx((want["synops"], want["eff_macs"], 0.0))


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_a_training_dropout_after_spikes_counts_each_kept_spike_once(p, grad):
    """Dropout(p) in training keeps a spike as 1/(1-p): the layer after it counts each kept spike as one event, an
    AC (it counted 2 accumulates per spike at p=0.5, and MACs at p=0.3). By hand: the kept spikes x fan-out. The
    synops' gradient reaches the spikes as the fan-out (through the dropout's 1/(1-p))."""
    torch.manual_seed(0)
    lin = nn.Linear(8, 3, bias=False)
    drop = nn.Dropout(p).train()
    seen = []
    lin.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))  # (the dropout's output)
    net = nn.Sequential(drop, lin)
    counter = sl.SynOpsCounter(net, neurons=False)
    x = _spikes(6, 8, seed=11).requires_grad_(grad)
    rng = torch.get_rng_state()
    with torch.set_grad_enabled(grad):
        net(x)
    torch.set_rng_state(rng)
    mask = (F.dropout(torch.ones(6, 8), p, True) != 0).double()  # the dropout's keep mask (the same draw)
    assert torch.allclose(mask * x.detach().double() / (1 - p), seen[0].double())
    kept = mask * x.detach().double()  # the spikes that survived
    fan = (lin.weight != 0).sum(0).double()
    got = counter.snapshot().per_layer()["1"]
    want = float((kept * fan).sum()) / 6
    assert (got["synops"], got["eff_acs"], got["eff_macs"]) == pytest.approx((want, want, 0.0))
    if grad:
        counter.synops().backward()
        assert torch.allclose(x.grad.double(), mask * fan / 6)


def test_a_training_dropout_after_real_values_keeps_its_scaled_values():
    torch.manual_seed(0)
    lin = nn.Linear(8, 3, bias=False)
    drop = nn.Dropout(0.5).train()
    seen = []
    lin.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    net = nn.Sequential(drop, lin)
    counter = sl.SynOpsCounter(net, neurons=False)
    net(torch.rand(6, 8, generator=torch.Generator().manual_seed(12)) + 0.1)
    fan = (lin.weight != 0).sum(0).double()
    got = counter.snapshot().per_layer()["1"]
    assert got["synops"] == pytest.approx(float((seen[0].double() * fan).sum()) / 6) and got["eff_acs"] == 0.0


@pytest.mark.parametrize("chain", ["inplace_0.5", "inplace_0.3", "dropout_dropout", "dropout_relu"])
def test_dropouts_inplace_or_chained_after_spikes_count_each_kept_spike_once(chain):
    """An in-place dropout (its output is its scaled input), two dropouts, a dropout then a ReLU, with no pool in
    the model: the kept spikes x fan-out, as ACs (by hand, from the values the layer received x (1-p) per dropout)."""
    torch.manual_seed(0)
    lin = nn.Linear(8, 3, bias=False)
    mods = {"inplace_0.5": [nn.Dropout(0.5, inplace=True)], "inplace_0.3": [nn.Dropout(0.3, inplace=True)],
            "dropout_dropout": [nn.Dropout(0.5), nn.Dropout(0.5)], "dropout_relu": [nn.Dropout(0.5), nn.ReLU()]}[chain]
    keep = 1.0
    for m in mods:
        keep *= 1 - getattr(m, "p", 0.0)
    seen = []
    lin.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    net = nn.Sequential(*mods, lin).train()
    counter = sl.SynOpsCounter(net, neurons=False)
    net(_spikes(6, 8, seed=13))
    events = (seen[0].double() * keep).round()  # the kept spikes (0 or 1)
    assert set(events.unique().tolist()) <= {0.0, 1.0}
    fan = (lin.weight != 0).sum(0).double()
    got = counter.snapshot().per_layer()[str(len(mods))]
    want = float((events * fan).sum()) / 6
    assert (got["synops"], got["eff_acs"], got["eff_macs"]) == pytest.approx((want, want, 0.0))


def test_a_user_hook_on_a_training_dropout_after_spikes_is_named():
    drop = nn.Dropout(0.5)
    drop.register_forward_hook(lambda m, a, o: None)
    net = nn.Sequential(drop, nn.Linear(8, 3)).train()
    counter = sl.SynOpsCounter(net, neurons=False)
    with pytest.warns(sl.SynOpsWarning, match=r"the training dropout '0' \(Dropout\) has a forward hook .* 1/\(1-p\) = 2"):
        net(_spikes(6, 8, seed=14))
    assert counter.snapshot().per_layer()["1"]["synops"] > 0


class _MovedPool(nn.Module):
    """A pool output indexed, repeated or detached in the module's own forward before a Linear."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how, self.pool, self.fc = how, nn.AvgPool2d(2), nn.Linear(32, 3)

    def forward(self, x):
        p = self.pool(x)
        q = {"clone().detach()": lambda: p.clone().detach(), "index_select": lambda: p.index_select(1, _ORDER),
             "fancy index": lambda: p[:, [1, 0]], "repeat": lambda: p[:, :1].repeat(1, 2, 1, 1),
             "gather": lambda: p.gather(1, _ORDER.view(1, 2, 1, 1).expand_as(p))}[self.how]()
        return self.fc(q.flatten(1))


_ORDER = torch.tensor([1, 0])


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("how", ["clone().detach()", "index_select", "fancy index", "repeat", "gather"])
def test_pool_events_are_followed_through_indexing_repeats_and_detached_copies(how, grad):
    """These ops move values without mixing them; the Linear after them counted the pooled values (a quarter of
    the events, as MACs), silently. By hand: the windows' spike counts moved by the same op, x fan-out."""
    torch.manual_seed(0)
    net = _MovedPool(how)
    x = (torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    counter = sl.SynOpsCounter(net)
    with torch.set_grad_enabled(grad):
        net(x)
    events = F.avg_pool2d(x, 2, divisor_override=1)
    moved = {"clone().detach()": events, "index_select": events[:, [1, 0]], "fancy index": events[:, [1, 0]],
             "repeat": events[:, :1].repeat(1, 2, 1, 1), "gather": events[:, [1, 0]]}[how].flatten(1)
    want = float((moved.double() @ (net.fc.weight != 0).double().sum(0)).sum()) / 2
    row = counter.snapshot().per_layer()["fc"]
    assert row["synops"] == pytest.approx(want) and row["eff_acs"] == pytest.approx(want) and row["eff_macs"] == 0
