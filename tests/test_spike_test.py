"""A call is spikes (its effective ops ACs) only when EVERY value is in {-1, 0, 1}.

The quick test (``max |x| <= 1`` and ``sum |x| == nonzeros``) alone is not exact: a float32 sum over many rows of
spikes rounds a value such as 0.9999 up to 1. Each way into the counter is checked with one such value among
4000 rows of spikes (its ops must be MACs), against the same input made of spikes only (ACs). The expected
numbers are by hand: every input value of column 0 is nonzero and reaches every output (dense weights).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import synopsloss as sl

ROWS = 4000


class FunctionalLinear(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, n))

    def forward(self, x):
        return F.linear(x, self.weight)


class MatmulWeight(FunctionalLinear):
    def forward(self, x):
        return x @ self.weight.t()


class EinsumWeight(FunctionalLinear):
    def forward(self, x):
        return torch.einsum("bi,oi->bo", x, self.weight)


def _input(n: int, last: float) -> torch.Tensor:
    x = torch.zeros(ROWS, n)
    x[:, 0] = 1.0
    x[-1, 0] = last
    return x


#: (name, model factory, input width, with gradients)
PATHS = [
    ("Linear, grad", lambda n: nn.Linear(n, 3), 4, True),
    ("Linear, no grad (held, small)", lambda n: nn.Linear(n, 3), 4, False),
    ("Linear, grad (large call)", lambda n: nn.Linear(n, 3), 32, True),
    ("Linear, no grad (reduced at the call)", lambda n: nn.Linear(n, 3), 32, False),
    ("F.linear (function mode)", FunctionalLinear, 4, True),
    ("x @ W.t() (function mode)", MatmulWeight, 4, True),
    ("einsum with a weight (function mode)", EinsumWeight, 4, False),
]


@pytest.mark.parametrize("name, make, n, grad", PATHS, ids=[p[0] for p in PATHS])
@pytest.mark.parametrize("last", [0.9999, 1 - 2 ** -24])
def test_one_value_just_below_one_among_many_spikes_makes_the_call_macs(name, make, n, grad, last):
    torch.manual_seed(0)
    net = make(n)
    with torch.no_grad():  # no zero weight: every input reaches the 3 outputs
        net.weight.copy_(torch.randn(3, n).abs() + 0.1)
    for value, spikes in ((1.0, True), (last, False)):
        with sl.SynOpsCounter(net, neurons=False) as counter:
            with torch.set_grad_enabled(grad):
                net(_input(n, value))
            got = counter.snapshot().total()
        eff = 3.0  # ROWS nonzero values x fan-out 3, per sample (ROWS samples)
        assert got["synops"] == pytest.approx(3.0 * (ROWS - 1 + value) / ROWS, rel=1e-6)
        assert (got["eff_acs"], got["eff_macs"]) == ((eff, 0.0) if spikes else (0.0, eff)), (name, value)


def test_the_same_holds_for_a_spike_product_of_two_activations():
    """``q @ k^T``: ACs when at least one operand is spikes; here neither is, by one value each."""
    q, k = torch.zeros(2, ROWS, 4), torch.zeros(2, 4, 3)
    q[..., 0], k[:, 0, :] = 1.0, 1.0
    q[0, -1, 0] = k[1, 0, 2] = 1 - 2 ** -24

    class Attn(nn.Module):
        def forward(self, a, b):
            return a @ b

    m = Attn()
    with sl.SynOpsCounter(m, neurons=False, batch_dim=0) as counter:
        m(q, k)
        got = counter.snapshot().total()
    # triples with both factors nonzero: each of the ROWS rows of a sample meets its 3 key columns once
    assert got["eff_macs"] == pytest.approx(ROWS * 3) and got["eff_acs"] == 0.0


PRODUCTS = {
    "x @ W.t()": lambda x, w: x @ w.t(),
    "matmul": lambda x, w: torch.matmul(x, w.t()),
    "mm": lambda x, w: torch.mm(x, w.t()),
    "addmm": lambda x, w: torch.addmm(torch.zeros(w.shape[0]), x, w.t()),
    "einsum": lambda x, w: torch.einsum("bi,oi->bo", x, w),
    "tensordot": lambda x, w: torch.tensordot(x, w, dims=([1], [1])),
    "bmm": lambda x, w: torch.bmm(x.unsqueeze(0), w.t().unsqueeze(0))[0],
}


class Product(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.weight = nn.Parameter(torch.randn(6, 10))

    def forward(self, x):
        return self.fn(x, self.weight)


@pytest.mark.parametrize("mode", ["events", "neurobench"])
@pytest.mark.parametrize("op", list(PRODUCTS))
def test_spike_counts_through_a_weight_product_follow_the_layer_rule(op, mode):
    """Integer spike counts are ``|x|`` accumulate events each (NeuroBench's mode: nonzeros x fan-out MACs), the
    same through ``x @ W`` or ``einsum`` as through ``nn.Linear``."""
    torch.manual_seed(0)
    m = Product(PRODUCTS[op])
    with torch.no_grad():
        m.weight[0, 2] = 0.0  # input 2 reaches 5 outputs, the others 6
    x = torch.tensor([[2.0, 0, 1, 0, 3, 0, 0, 1, 0, 2]] * 2)
    fan = (m.weight != 0).sum(0).double()
    events = float((x.double().abs() * fan).sum()) / 2  # 9 events per sample: 2*6 + 1*5 + 3*6 + 1*6 + 2*6
    nonzero = float(((x != 0).double() * fan).sum()) / 2
    assert (events, nonzero) == (53.0, 29.0)
    lin = nn.Linear(10, 6, bias=False)
    lin.weight = m.weight
    for net in (m, lin):
        with sl.SynOpsCounter(net, neurons=False, integer_spikes=mode) as counter:
            net(x)
            got = counter.snapshot().total()
        assert got["synops"] == pytest.approx(events)
        if mode == "events":
            assert (got["eff_acs"], got["eff_macs"]) == (pytest.approx(events), 0.0), (op, type(net).__name__)
        else:
            assert (got["eff_acs"], got["eff_macs"]) == (0.0, pytest.approx(nonzero)), (op, type(net).__name__)
