"""Integer spike counts (I-LIF, multi-bit spikes, sum pools) are counted as the events hardware sends.

Numbers come from a brute force (count x fan-out, nonzero x fan-out) and from NeuroBench run live.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import synopsloss as sl
from helpers import brute_force_counts, frozen_copy, neurobench_synops

neuron = pytest.importorskip("spikingjelly.activation_based.neuron")


def _ilif_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), neuron.ILIFNode(), nn.Conv2d(8, 4, 3, padding=1))


def _counts(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net[1](net[0](x))


def test_integer_counts_are_that_many_accumulate_events():
    net = _ilif_net()
    x = torch.rand(2, 2, 6, 6) * 4
    spikes = _counts(net, x)
    net[1].reset()
    assert spikes.max() > 1 and bool((spikes == spikes.round()).all())  # counts beyond {0, 1}
    counter = sl.SynOpsCounter(net, neurons=False)
    with torch.no_grad():
        net(x)
    got = counter.snapshot().per_layer()["2"]
    ref = brute_force_counts(frozen_copy(net[2]), spikes, samples=2)  # synops = count x fan-out
    assert got["synops"] == pytest.approx(ref["synops"])
    assert got["eff_acs"] == pytest.approx(ref["synops"])  # every event an accumulate
    assert got["eff_macs"] == 0.0
    binarised = brute_force_counts(frozen_copy(net[2]), spikes, samples=2, events=False)
    assert got["eff_acs"] > binarised["eff_macs"] > 0  # more events than nonzero inputs


def test_neurobench_mode_reproduces_neurobench_live():
    net = _ilif_net()
    x = torch.rand(2, 2, 6, 6) * 4
    want = neurobench_synops(net, x, snntorch=False)
    net[1].reset()
    counter = sl.SynOpsCounter(net, neurons=False, integer_spikes="neurobench")
    with torch.no_grad():
        net(x)
    got = counter.snapshot().total()
    assert got["dense"] == pytest.approx(want["dense"])
    assert got["eff_macs"] == pytest.approx(want["eff_macs"])
    assert got["eff_acs"] == pytest.approx(want["eff_acs"])
    # and layer by layer against the binarised brute force
    net[1].reset()
    spikes = _counts(net, x)
    ref = brute_force_counts(frozen_copy(net[2]), (spikes != 0).float(), samples=2)
    assert counter.snapshot().per_layer()["2"]["eff_macs"] == pytest.approx(ref["eff_acs"])


def test_integer_spikes_option_is_checked():
    with pytest.raises(ValueError, match="integer_spikes must be"):
        sl.SynOpsCounter(nn.Linear(2, 2), integer_spikes="counts")


def test_integer_events_reach_the_function_mode_path_too():
    torch.manual_seed(1)

    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 5))

        def forward(self, v):
            return torch.nn.functional.linear(v, self.weight)

    fn = Fn()
    x = torch.randint(0, 4, (4, 5)).float()
    counter = sl.SynOpsCounter(fn, neurons=False)
    fn(x)
    got = counter.snapshot().total()
    fan = (fn.weight != 0).sum(0).double()
    assert got["eff_acs"] == pytest.approx(float((x.double() * fan).sum()) / 4)
    assert got["eff_macs"] == 0.0


def _popcount(t: torch.Tensor) -> torch.Tensor:
    v = t.round().long()
    return sum(((v >> b) & 1) for b in range(8)).double()


def test_bitplane_encoding_counts_one_event_per_set_bit():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 4, bias=False), nn.ReLU(), nn.Linear(4, 3, bias=False))
    x = torch.randint(0, 8, (5, 6)).float().requires_grad_()  # counts 0..7: 3 bit planes
    counter = sl.SynOpsCounter(net, neurons=False, encoding={"0": "bitplane"})
    net(x)
    got = counter.snapshot().per_layer()["0"]
    fan = (net[0].weight != 0).sum(0).double()
    events = float((_popcount(x.detach()) * fan).sum()) / 5
    assert got["synops"] == pytest.approx(events) and got["eff_acs"] == pytest.approx(events)
    assert got["synops"] < float((x.detach().double() * fan).sum()) / 5  # fewer events than unary
    counter.synops(by_layer=True)["0"].backward()
    assert torch.allclose(x.grad, (fan / 5).float().expand(5, 6))  # straight through: the fan-out per sample


def test_encoding_names_are_checked():
    net = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="is not one of"):
        sl.SynOpsCounter(net, encoding="binary")
    with pytest.raises(ValueError, match="does not count"):
        sl.SynOpsCounter(net, encoding={"fc9": "bitplane"})


def test_event_rate_and_nonzero_rate_differ_for_counts():
    net = nn.Sequential(nn.Linear(4, 2, bias=False))
    x = torch.tensor([[0.0, 1.0, 3.0, 0.0], [2.0, 0.0, 0.0, 0.0]])  # 6 events in 3 nonzero inputs over 8 values
    counter = sl.SynOpsCounter(net, neurons=False)
    net(x)
    row = counter.table()["0"]
    assert (row.in_rate, row.nonzero_rate) == (6 / 8, 3 / 8)


@pytest.mark.parametrize("mode", ["events", "neurobench"])
def test_integer_counts_into_norse_recurrent_modules_are_events_too(mode):
    """norse's recurrent modules drive two weights (the input and the previous spikes): counts of k on the input
    send k events per synapse, as into an nn.Linear; the recurrent spikes stay ACs; "neurobench" binarises."""
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(0)
    T, B = 4, 2
    x = 3.0 * (torch.rand(T, B, 6) < 0.5).float()  # counts of 3
    rec = norse.LIFRecurrent(input_size=6, hidden_size=5)
    with torch.no_grad():
        rec.input_weights.mul_(20.0)  # the recurrent spikes run too
        rec.input_weights[1].zero_()  # a pruned row: column fan-outs of 4
    counter = sl.SynOpsCounter(rec, integer_spikes=mode)
    with torch.no_grad():
        z, _ = rec(x)
    got = counter.snapshot().per_layer()[""]
    z_prev = torch.cat([torch.zeros(1, B, 5), z[:-1]])  # the spikes the recurrent weights read
    assert z_prev.sum() > 0 and set(z_prev.unique().tolist()) <= {0.0, 1.0}
    fan_in = (rec.input_weights != 0).sum(0).double()
    fan_rec = (rec.recurrent_weights != 0).sum(0).double()
    in_syn = float((x.double() * fan_in).sum()) / B  # count x fan-out
    in_nz = float(((x != 0).double() * fan_in).sum()) / B  # nonzero x fan-out
    rec_syn = float((z_prev.double() * fan_rec).sum()) / B
    assert got["synops"] == pytest.approx(in_syn + rec_syn)
    if mode == "events":
        assert (got["eff_acs"], got["eff_macs"]) == pytest.approx((in_syn + rec_syn, 0.0))
    else:
        assert (got["eff_acs"], got["eff_macs"]) == pytest.approx((rec_syn, in_nz))


class _FunctionalAndModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return F.linear(x, self.w) + self.fc(x)


def test_encoding_can_name_a_functional_op_row_and_a_wrong_name_is_refused_at_the_read():
    """encoding={"linear": "bitplane"} named the F.linear row that the counter lists, and was refused at
    construction ('does not count'). By hand: popcount of each count x fan-out for the op row, count x fan-out for
    the unary module."""
    net = _FunctionalAndModule()
    x = torch.randint(0, 4, (3, 8), generator=torch.Generator().manual_seed(1)).float()
    counter = sl.SynOpsCounter(net, neurons=False, encoding={"linear": "bitplane"})
    net(x)
    pop = torch.tensor([[bin(int(v)).count("1") for v in row] for row in x.tolist()], dtype=torch.float64)
    rows = counter.snapshot().per_layer()
    assert rows["linear"]["synops"] == pytest.approx(float((pop * (net.w != 0).sum(0)).sum()) / 3)
    assert rows["fc"]["synops"] == pytest.approx(float((x.double() * (net.fc.weight != 0).sum(0)).sum()) / 3)
    counter.remove()
    typo = sl.SynOpsCounter(net, neurons=False, encoding={"linaer": "bitplane"})
    net(x)
    with pytest.raises(ValueError, match=r"names layer\(s\) \['linaer'\] that the counter does not count"):
        typo.snapshot()
