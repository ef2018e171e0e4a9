"""The package's function modes (the pools', the op scope's) see the model's ops, never the package's own.

While a hook of the package runs, its modes are popped from the top of the function-mode stack
(:func:`synopsloss.hooks.pop_package_modes`) and pushed back afterwards: its reductions do not pass through a
Python ``__torch_function__`` per op. A user's mode keeps seeing what it saw; the stack is the same after a
hook that raised; and the counts are those of a hand count.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import synopsloss as sl
from synopsloss import opscope, pooling
from synopsloss.hooks import made_by_package


class _PooledNet(nn.Module):
    """Calls a functional average pool in its own forward: the pool mode is open for the whole forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4 * 4 * 4, 5, bias=False)

    def forward(self, x):
        y = F.avg_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(y.flatten(1))


class _Attention(nn.Module):
    """A product of two activations (counted by the op scope's mode)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.q = nn.Linear(6, 6, bias=False)
        self.k = nn.Linear(6, 6, bias=False)

    def forward(self, x):
        q, k = (self.q(x) > 0).float(), (self.k(x) > 0).float()
        return q @ k.transpose(-2, -1)


def _callers(monkeypatch, mode_cls) -> list:
    """Record, for each op the mode is offered, whether the package's own code made it."""
    seen: list = []
    original = mode_cls.__torch_function__

    def spy(self, func, types, args=(), kwargs=None):
        seen.append(made_by_package(sys._getframe(1)))
        return original(self, func, types, args, kwargs)

    monkeypatch.setattr(mode_cls, "__torch_function__", spy)
    return seen


@pytest.mark.parametrize("grad", [False, True])
def test_the_pool_mode_is_offered_the_models_ops_and_none_of_the_counters(monkeypatch, grad):
    seen = _callers(monkeypatch, pooling._PoolMode)
    net = _PooledNet()
    counter = sl.SynOpsCounter(net)
    x = (torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(2)) < 0.4).float()
    with torch.set_grad_enabled(grad):
        net(x)
    total = counter.snapshot().total()
    assert seen and not any(seen)  # (the model's relu, avg_pool2d, flatten: the mode saw them)
    # the hand count: the conv's fan-out (edges clipped), then the fc's (5 outputs) over the pooled values (real
    # values, no spike counts: each counts its magnitude)
    fan = torch.ones(1, 2, 8, 8, requires_grad=True)
    F.conv2d(fan, torch.ones(4, 2, 3, 3), padding=1).sum().backward()
    pooled = F.avg_pool2d(torch.relu(net.conv(x)), 2).detach()
    assert not bool((pooled == pooled.round()).all())
    assert total["synops"] == pytest.approx(float((x * fan.grad).sum() + pooled.sum() * 5) / 3)
    assert torch._C._len_torch_function_stack() == 0


def test_the_op_modes_counts_match_a_hand_count_and_it_sees_no_counter_op(monkeypatch):
    seen = _callers(monkeypatch, opscope._Mode)
    net = _Attention()
    x = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        q, k = (net.q(x) > 0).float(), (net.k(x) > 0).float()
    counter = sl.SynOpsCounter(net)
    with torch.no_grad():
        net(x)
    per_layer = counter.snapshot().per_layer()
    products = [v["synops"] for n, v in per_layer.items() if n not in dict(net.named_modules())]
    # sum(|q| @ |k|^T) per sample: each spike q[b, i, d] meets the spikes of k[b, :, d]
    hand = float(sum(q[b, i, d] * k[b, j, d] for b in range(2) for i in range(5) for j in range(5)
                     for d in range(6))) / 2
    assert hand > 0 and sum(products) == pytest.approx(hand)
    assert seen and not any(seen)


def test_a_users_mode_on_top_sees_what_it_saw_and_keeps_its_place():
    class Recorder(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    class Net(_PooledNet):
        def forward(self, x):
            with self.recorder:  # opened inside the model, above the pool mode
                return super().forward(x)

    net = Net()
    net.recorder = Recorder()
    counter = sl.SynOpsCounter(net)
    x = (torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    with torch.no_grad():
        net(x)
    assert {"relu", "avg_pool2d", "linear"} <= set(net.recorder.names)
    assert counter.snapshot().total()["synops"] > 0
    assert torch._C._len_torch_function_stack() == 0


def test_a_hook_that_raises_leaves_the_mode_stack_as_it_was():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.weight

    rules: dict = {}

    @sl.register_rule(Gate, registry=rules, counts=True)
    def _broken(module, args, kwargs, output):
        return 1.0  # (not an OpCounts: the counter's hook raises, with the pool mode open)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = Gate()

        def forward(self, x):
            return F.avg_pool1d(self.gate(x).unsqueeze(1), 1)

    net = Net()
    counter = sl.SynOpsCounter(net, custom_rules=rules)  # noqa: F841 (held: its hooks live with it)
    before = torch._C._len_torch_function_stack()
    with pytest.raises(TypeError, match="returned float"):
        net(torch.ones(2, 3))
    assert torch._C._len_torch_function_stack() == before
    with torch.no_grad():
        assert torch.equal(F.avg_pool1d(torch.ones(2, 1, 3), 1), torch.ones(2, 1, 3))  # plain torch again


def test_two_counters_on_one_model_close_their_modes_after_each_forward():
    """Each counter's pool mode is closed when its last frame returns, wherever it sits on the stack (another
    counter's mode above it kept its place): none stays open for the rest of the process, where torch's fast
    paths would see a mode (an unrelated encoder's padded tokens came out nonzero)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
            self.q = nn.Linear(16, 16, bias=False)

        def forward(self, x):
            t = F.avg_pool2d((self.conv(x) > 0).float(), 2).flatten(2)
            q = (self.q(t) > 0).float()
            return q @ q.transpose(-2, -1)

    net = Net()
    x = (torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    first, second = sl.SynOpsCounter(net), sl.SynOpsCounter(net)
    for _ in range(2):
        net(x)
        assert torch._C._len_torch_function_stack() == 0
        assert first.snapshot().total() == second.snapshot().total()
        first.reset()
        second.reset()
    first.remove()
    second.remove()
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0), 1,
                                enable_nested_tensor=True).eval()
    src = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (torch: "nested tensors ... prototype stage")
        out = enc(src, src_key_padding_mask=torch.tensor([[False, False, True]]))
    assert torch.equal(out[0, 2], torch.zeros(8))  # (the fast path: a padded token comes out as zeros)


def test_op_scoped_layers_counted_in_several_threads_at_once_count_as_in_one():
    """torch keeps one function-mode stack per thread: the op scope's mode keeps its scopes and its place on the
    stack per thread too, so that a thread's products go to its own counter (they went to another thread's, or
    twice to its own, and a counter found no forward at all)."""
    import threading

    def make() -> nn.MultiheadAttention:
        torch.manual_seed(0)
        return nn.MultiheadAttention(16, 2, batch_first=True).eval()

    x = torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(1))

    def count(m: nn.Module) -> float:
        counter = sl.SynOpsCounter(m, batch_size=4)
        with torch.no_grad():
            m(x, x, x)
        return counter.snapshot().total()["synops"]

    want = count(make())
    models = [make() for _ in range(4)]
    results: list = []

    def work(m: nn.Module) -> None:
        for _ in range(15):
            try:
                results.append(count(m))
            except Exception as err:  # (reported by the assertion below)
                results.append(repr(err))

    threads = [threading.Thread(target=work, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [want] * 60
    assert torch._C._len_torch_function_stack() == 0
