"""torch.compile: a compiled model counts and trains as in eager mode; fullgraph=True says what to change.

The counter's hooks run eagerly between the compiled graphs (``torch.compiler.disable`` with a reason);
under ``fullgraph=True`` there is no eager gap, and the error carries ``synopsloss.hooks.COMPILE_NOTE``.
Tiny models: compiling takes seconds on two cores.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import synopsloss as sl
from synopsloss.hooks import COMPILE_NOTE

dynamo = pytest.importorskip("torch._dynamo")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """No compiled graph crosses tests: a graph of a hook-free Sequential would be reused for a counted one."""
    dynamo.reset()
    yield
    dynamo.reset()


def new_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        net[2].weight[:, :3] = 0
    return net


def batches():
    g = torch.Generator().manual_seed(3)
    return [((torch.rand(4, 2, 6, generator=g) < 0.5).float(), torch.randint(0, 3, (4,), generator=g))
            for _ in range(2)]


def train(compiled: bool):
    net = new_net()
    counter = sl.SynOpsCounter(net, neurons=False)  # attach first, then compile
    loss_fn = sl.SynOpsLoss(counter, fraction=0.5)
    model = torch.compile(net) if compiled else net
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    log = []
    for x, y in batches():
        counter.reset()
        out = model(x[:, 0]) + model(x[:, 1])  # two time steps
        loss = nn.functional.cross_entropy(out, y) + loss_fn()
        loss.backward()
        log.append((counter.snapshot().per_layer(), float(loss.detach()),
                    [p.grad.clone() for p in net.parameters()]))
        opt.step()
        opt.zero_grad()
    return log


def test_default_compile_counts_and_gradients_equal_eager():
    eager, compiled = train(False), train(True)
    for (counts_e, loss_e, grads_e), (counts_c, loss_c, grads_c) in zip(eager, compiled):
        assert list(counts_c) == list(counts_e)
        for name, want in counts_e.items():
            assert counts_c[name] == pytest.approx(want, rel=1e-6), name
        assert loss_c == pytest.approx(loss_e, rel=1e-5)
        for ge, gc in zip(grads_e, grads_c):
            assert torch.allclose(gc, ge, atol=1e-5)
    # by hand: layer 0 is fed by the data, every input drives 8 synapses; layer 2's three zero columns drive none
    x = batches()[0][0]
    assert eager[0][0]["0"]["synops"] == pytest.approx(float(x.sum()) * 8 / x.shape[0])
    assert eager[0][0]["2"]["dense"] == pytest.approx(2 * 8 * 3)


def test_fullgraph_compile_says_what_to_change():
    net = new_net()
    counter = sl.SynOpsCounter(net, neurons=False)
    model = torch.compile(net, fullgraph=True, backend="eager")
    with pytest.raises(Exception) as info:
        model(torch.ones(2, 6))
    msg = str(info.value)
    assert "without fullgraph=True" in msg and "counter.remove()" in msg, msg
    assert COMPILE_NOTE in msg
    # the advice works: after counter.remove() the same fullgraph compile runs
    counter.remove()
    dynamo.reset()
    out = torch.compile(net, fullgraph=True, backend="eager")(torch.ones(2, 6))
    assert torch.allclose(out, net(torch.ones(2, 6)))


@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace")
def test_a_module_counted_op_by_op_says_its_products_are_not_counted_under_compile():
    """Its ops run in compiled code, where the function mode sees none: the counter says so (the module layers
    are still counted, by their hooks), rather than leaving the product rows out silently."""

    class QK(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(4, 4, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = self.q(x)
            return q @ q.transpose(-2, -1)

    torch.manual_seed(0)
    net = QK()
    counter = sl.SynOpsCounter(net, neurons=False, batch_dim=0)
    x = (torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    torch._dynamo.reset()
    with pytest.warns(sl.SynOpsWarning, match="cannot run inside torch.compile"):
        torch.compile(net, backend="eager")(x)
    layers = counter.snapshot().layers
    assert layers["q"].synops == float((x * (net.q.weight != 0).sum(0)).sum())  # by hand: |x| x fan-out


@pytest.mark.parametrize("paused", [False, True])
def test_torch_export_of_a_counted_model_traces_and_counts_nothing_then_the_model_counts_as_before(paused):
    """``torch.export`` (non-strict) traces the model with fake tensors: the counter's hooks do nothing there (they
    ran into each other until the recursion limit), and the next real forward is counted by hand."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    counter = sl.SynOpsCounter(net)
    x = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    if paused:
        with counter.paused():
            program = torch.export.export(net, (x,), strict=False)
    else:
        program = torch.export.export(net, (x,), strict=False)
    assert torch._C._len_torch_function_stack() == 0
    with counter.paused():
        h = torch.relu(net[0](x)).detach()
    assert torch.allclose(program.module()(x), net(x))  # (the one counted forward)
    want = float(x.abs().sum() * 3 + h.abs().sum() * 2) / 2  # (no zero weight: fan-outs 3 and 2)
    assert counter.snapshot().total()["synops"] == pytest.approx(want)
