"""A call like the layer's last one is recorded with only what differs per call read again.

Every check the first call passed must still hold when something changes between
calls: the weight object (``functional_call``), the input's shape, dtype or kind,
the data identity, a ``torch.func`` transform, gradient checkpointing, grad mode.
Each case is compared with a counter that saw the same calls without repetition
(a fresh counter per call) or with a hand count.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import synopsloss as sl


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.ones(5, 6))
        net[2].weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 1, 1, 1, 1]]))
    return net


def test_repeated_calls_count_like_single_calls() -> None:
    """T calls in one batch (the repeated path) == the sum of T batches of one call each."""
    net = _net()
    xs = [(torch.rand(4, 6, generator=torch.Generator().manual_seed(t)) < 0.5).float() for t in range(5)]
    counter = sl.SynOpsCounter(net, neurons=False)
    for x in xs:
        net(x)
    got = counter.snapshot().layers
    want = {"0": 0.0, "2": 0.0}
    for x in xs:
        h = torch.relu(x @ net[0].weight.detach().t())  # (not through the counted layer)
        want["0"] += float(x.sum()) * 5  # every input reaches 5 outputs
        want["2"] += float(h[:, 0].sum() * 2 + h[:, 1].sum() * 2 + h[:, 2:].sum())  # fan-outs 2, 2, 1, 1, 1
    assert got["0"].synops == pytest.approx(want["0"]) and got["0"].calls == 5
    assert got["2"].synops == pytest.approx(want["2"]) and got["2"].calls == 5
    assert got["0"].rows == 20 and counter.time_steps() == 5.0


def test_a_replaced_weight_between_calls_is_read() -> None:
    """functional_call swaps the weight object: the call after it uses the swapped weight's map."""
    net = _net()
    counter = sl.SynOpsCounter(net, neurons=False)
    x = torch.ones(2, 6)
    net(x)
    pruned = {"0.weight": torch.zeros(5, 6).index_fill_(1, torch.tensor([0]), 1.0), "2.weight": net[2].weight}
    torch.func.functional_call(net, pruned, (x,))
    net(x)
    layer0 = counter.snapshot().layers["0"]
    assert layer0.synops == pytest.approx(2 * 6 * 5 + 2 * 1 * 5 + 2 * 6 * 5)  # full, one column, full


def test_an_input_of_another_shape_or_dtype_takes_its_own_record() -> None:
    net = _net()
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=2)
    net(torch.ones(2, 6))
    net(torch.ones(2, 3, 6))  # 6 rows in one call
    net.double()
    net(torch.ones(2, 6, dtype=torch.float64))  # the same Parameter objects, now float64
    layer0 = counter.snapshot().layers["0"]
    assert layer0.calls == 3 and layer0.synops == pytest.approx((2 + 6 + 2) * 6 * 5)


def test_data_identity_is_read_at_every_call() -> None:
    """A layer fed the data at one call and a computed tensor at the next is not data-fed."""

    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.lin(x)
            return self.lin(torch.relu(h) + 0.5)

    net = Loop()
    counter = sl.SynOpsCounter(net, neurons=False)
    net(torch.ones(3, 4))
    assert counter.data_fed_layers() == [] and not counter.snapshot().layers["lin"].data_fed
    counter.reset()
    only = nn.Sequential(nn.Linear(4, 4))
    c2 = sl.SynOpsCounter(only, neurons=False)
    for _ in range(3):
        only(torch.ones(3, 4))
    assert c2.data_fed_layers() == ["0"]


def test_a_transform_after_plain_calls_still_raises() -> None:
    net = _net()
    counter = sl.SynOpsCounter(net, neurons=False)
    net(torch.ones(4, 6))
    net(torch.ones(4, 6))
    with pytest.raises(RuntimeError, match=r"torch.func transform"):
        torch.func.vmap(net)(torch.ones(4, 4, 6))
    counter.remove()


class Checkpointed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.inner, x, use_reentrant=False)  # recomputed in backward: not counted again


def test_checkpointed_calls_are_counted_once_after_plain_calls() -> None:
    net = Checkpointed()
    counter = sl.SynOpsCounter(net, neurons=False)
    x = torch.ones(2, 6, requires_grad=True)
    net(x * 1.0)
    counter.reset()
    y = net(x * 1.0)
    synops = counter.synops()
    (y.sum() + synops).backward()
    snap = counter.snapshot().layers["inner.0"]
    assert snap.calls == 1 and snap.synops == pytest.approx(2 * 6 * 5)


def test_no_grad_calls_after_grad_calls_are_reduced_at_once() -> None:
    net = _net()
    counter = sl.SynOpsCounter(net, neurons=False)
    x = torch.ones(2, 6)
    net(x)
    counter.reset()
    with torch.no_grad():
        net(x)
        net(x)
    snap = counter.snapshot().layers["0"]
    assert snap.synops == pytest.approx(2 * 2 * 6 * 5)


def test_no_grad_calls_are_reduced_when_the_forward_returns() -> None:
    """Evaluation holds no input once the model's forward has returned; the numbers equal a grad-mode count."""
    import weakref

    net = _net()
    counter = sl.SynOpsCounter(net, neurons=False)
    seen = []
    handle = net[1].register_forward_hook(lambda m, a, o: seen.append(weakref.ref(o)))  # the input of layer "2"
    x = (torch.rand(3, 6, generator=torch.Generator().manual_seed(4)) < 0.5).float()
    with torch.no_grad():
        net(x)
    assert seen and seen[0]() is None  # reduced when the forward returned: nothing holds the hidden spikes
    handle.remove()
    got = counter.snapshot().per_layer()
    counter.reset()
    net(x)
    want = counter.snapshot().per_layer()
    assert got == want


def test_calls_outside_the_model_hold_at_most_the_byte_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer called directly (no forward of the model to return) is reduced once its held inputs pass the cap."""
    import synopsloss.counter as counter_module

    monkeypatch.setattr(counter_module, "HELD_BYTES", 100)
    net = nn.Sequential(nn.Linear(6, 5, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=4)
    import weakref

    with torch.no_grad():
        net[0](torch.ones(4, 6))  # 96 bytes: held
        assert counter.snapshot().layers["0"].synops == 4 * 6 * 5  # a read reduces what is held
        x = torch.ones(4, 6)
        net[0](x)
        gone = weakref.ref(x)
        del x
        assert gone() is not None  # held: 96 bytes
        net[0](torch.ones(4, 6))  # 192 bytes > 100: both reduced at this call
        assert gone() is None
    assert counter.snapshot().layers["0"].synops == 3 * 4 * 6 * 5


def test_a_setting_changed_between_calls_applies_to_the_next_call() -> None:
    """``integer_spikes`` set between two calls of one batch: the second call, a repeat of the first in every
    other way, is counted under the new setting (events: a count of k is k ACs; neurobench: nonzero x fan-out,
    as MACs)."""
    net = _net()
    counter = sl.SynOpsCounter(net, neurons=False)
    x = torch.tensor([[2.0, 0, 1, 0, 3, 0]] * 2)  # integer spike counts: 6 per row, 3 nonzero
    net(x)
    net(x)  # repeated call, events
    counter.integer_spikes = "neurobench"
    net(x)
    layer0 = counter.snapshot().layers["0"]
    assert layer0.synops == pytest.approx(3 * 2 * 6 * 5)  # count x fan-out either way
    assert layer0.eff_acs == pytest.approx(2 * 2 * 6 * 5)  # the two events-mode calls
    assert layer0.eff_macs == pytest.approx(2 * 3 * 5)  # the neurobench call: 3 nonzero inputs per row
    with pytest.raises(ValueError, match="integer_spikes must be"):
        counter.integer_spikes = "binary"
