"""Counter options: ``neurons=False`` counts the same synapses and skips the neuron bookkeeping."""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from snntorch import utils as snn_utils
from torch import nn

import synopsloss as sl

from helpers import brute_force_counts


def make_net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.8, init_hidden=True),
        nn.Flatten(), nn.Linear(4 * 6 * 6, 5), snn.Leaky(beta=0.8, init_hidden=True),
    )


def run(counter: sl.SynOpsCounter, net: nn.Module, x: torch.Tensor) -> None:
    snn_utils.reset(net)
    counter.reset()
    for t in range(x.shape[1]):
        net(x[:, t])


def test_synapses_only_counter_gives_the_same_counts_and_gradients():
    x = (torch.rand(3, 4, 1, 6, 6, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    full_net, lean_net = make_net(), make_net()
    lean_net.load_state_dict(full_net.state_dict())
    full, lean = sl.SynOpsCounter(full_net), sl.SynOpsCounter(lean_net, neurons=False)
    run(full, full_net, x)
    run(lean, lean_net, x)
    assert lean.snapshot().per_layer() == full.snapshot().per_layer()
    full.synops().backward()
    lean.synops().backward()
    for a, b in zip(full_net.parameters(), lean_net.parameters()):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)
    # the first layer sees the raw spikes: brute force over the 4 calls
    want = sum(brute_force_counts(lean_net[0], x[:, t], samples=3)["eff_acs"] for t in range(4))
    assert lean.snapshot().per_layer()["0"]["eff_acs"] == pytest.approx(want, rel=1e-12)


def test_synapses_only_counter_hooks_no_neuron_layer_and_its_table_lists_synapses():
    net = make_net()
    counter = sl.SynOpsCounter(net, neurons=False)
    assert counter.neurons is None
    # no neuron statistics: at most the one forward hook that notes the neurons' 0/1 spikes for the layers reading
    # them (a snntorch surrogate's spikes: no integer pass there)
    for lif in (net[1], net[4]):
        assert len(lif._forward_hooks) <= 1
    run(counter, net, (torch.rand(2, 3, 1, 6, 6) < 0.5).float())
    table = counter.table()
    assert [row.name for row in table.rows] == ["0", "3"]
    assert table.total.synops == pytest.approx(sum(c["synops"] for c in counter.snapshot().per_layer().values()))


def test_pool_correction_follows_spikes_through_a_relu():
    """AvgPool -> ReLU -> Linear counts the same spike events as AvgPool -> Linear (by hand)."""
    torch.manual_seed(0)
    fc = nn.Linear(4, 3, bias=False)
    with_relu = nn.Sequential(nn.AvgPool1d(2), nn.ReLU(), nn.Flatten(), fc)
    counter = sl.SynOpsCounter(with_relu, neurons=False)
    x = torch.tensor([[[1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]]])  # 1 sample, 1 channel, 8 steps
    with_relu(x)
    # window sums 2, 1, 0, 2 = 5 spike events, each reaching 3 outputs (fc's columns are nonzero)
    assert counter.snapshot().per_layer()["3"]["synops"] == pytest.approx(15.0)


def test_auto_reset_on_a_model_called_once_per_step_is_named():
    """auto_reset=True with an snntorch loop counted the last step as the batch (22.75 for 149.25): the neurons'
    membranes carried from call to call say so. A model reset before each call is not named."""
    import warnings

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), snn.Leaky(beta=0.8, init_hidden=True))
    x = (torch.rand(5, 4, 6) < 0.5).float()
    counter = sl.SynOpsCounter(net, auto_reset=True)
    snn_utils.reset(net)
    with pytest.warns(sl.SynOpsWarning, match=r"auto_reset=True counts each call of the model as a whole batch, "
                                              r"but neuron '1' started a call with the membrane"):
        for t in range(5):
            net(x[t])
    counter.remove()
    counter = sl.SynOpsCounter(net, auto_reset=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.SynOpsWarning)
        for t in range(3):
            snn_utils.reset(net)  # a whole batch per call: the neurons start at rest
            net(x[t])
    assert counter.synops().item() == pytest.approx(float((x[2] * (net[0].weight != 0).sum(0)).sum()) / 4)
