"""SynOpsLoss: values by hand, gradient direction, targets, schedules, state, collapse avoidance, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import synopsloss as sl
from synopsloss import schedules as S
from synopsloss.loss import UnreachableTargetWarning

from helpers import linear_pair_synops as _brute_synops
from helpers import quiet_unreachable as _quiet


def _mlp(seed: int = 0, n_in: int = 32, hidden: int = 64, n_out: int = 8) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


# ---------------------------------------------------------------------------- values by hand


@pytest.mark.parametrize(
    "shape, f",
    [
        ("squared", lambda r: r * r),
        ("hinge", lambda r: max(0.0, r)),
        ("squared_hinge", lambda r: max(0.0, r) ** 2),
        ("l1", lambda r: abs(r)),
    ],
)
@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_each_shape_of_the_relative_error_matches_hand_computation(shape, f, factor):
    net = _mlp()
    x = torch.rand(5, 32)
    counter = sl.SynOpsCounter(net)
    s = _brute_synops(net, x)["2"]  # default: only the network-driven layer "2"
    target = factor * s
    loss_fn = _quiet(sl.SynOpsLoss, counter, target=target, shape=shape, weight=0.7)
    net(x)
    value = _quiet(loss_fn)
    assert value.dim() == 0 and value.requires_grad
    assert float(value.detach()) == pytest.approx(0.7 * f((s - target) / target), rel=1e-5)


def test_layers_all_covers_the_data_fed_layer_too():
    net = _mlp()
    x = torch.rand(4, 32)
    counter = sl.SynOpsCounter(net)
    bf = _brute_synops(net, x)
    s = bf["0"] + bf["2"]
    loss_fn = sl.SynOpsLoss(counter, target=2 * s, layers="all", shape="l1")
    net(x)
    assert float(_quiet(loss_fn).detach()) == pytest.approx(0.5, rel=1e-6)  # |s - 2s| / 2s


def test_fraction_is_of_the_mean_of_the_calibration_batches_and_then_frozen():
    net = _mlp()
    xs = [torch.rand(6, 32) * (i + 1) for i in range(3)]
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, fraction=0.25, calibration_batches=2)
    driven = [_brute_synops(net, x)["2"] for x in xs]
    values = []
    for x in xs:
        counter.reset()
        net(x)
        values.append(float(loss_fn().detach()))
    # batch 1: target from batch 1 alone; batch 2 and later: the mean of batches 1 and 2
    t1, t2 = 0.25 * driven[0], 0.25 * (driven[0] + driven[1]) / 2
    assert values[0] == pytest.approx(((driven[0] - t1) / t1) ** 2, rel=1e-5)
    assert values[1] == pytest.approx(((driven[1] - t2) / t2) ** 2, rel=1e-5)
    assert values[2] == pytest.approx(((driven[2] - t2) / t2) ** 2, rel=1e-5)
    assert loss_fn.initial()["driven"] == pytest.approx((driven[0] + driven[1]) / 2, rel=1e-6)
    assert loss_fn.targets()["driven"] == pytest.approx(t2, rel=1e-6)


def test_per_layer_targets_give_one_term_per_layer_summed():
    net = _mlp()
    x = torch.rand(3, 32)
    counter = sl.SynOpsCounter(net)
    bf = _brute_synops(net, x)
    loss_fn = _quiet(sl.SynOpsLoss, counter, target={"0": bf["0"] / 2, "2": bf["2"] * 4})
    net(x)
    expected = ((bf["0"] - bf["0"] / 2) / (bf["0"] / 2)) ** 2 + ((bf["2"] - 4 * bf["2"]) / (4 * bf["2"])) ** 2
    assert float(_quiet(loss_fn).detach()) == pytest.approx(expected, rel=1e-5)


def test_budget_in_synops_per_second_uses_dt_and_the_time_steps_of_the_batch():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    counter = sl.SynOpsCounter(net)
    xs = torch.rand(5, 4, 10)  # T = 5 steps of [B=4, 10], snntorch-style loop
    for t in range(5):
        net(xs[t])
    with torch.no_grad():
        fan = (net[2].weight != 0).sum(0).double()
        h = torch.relu(torch.nn.functional.linear(xs, net[0].weight, net[0].bias))  # no hooks
        s = float((h.double() * fan).sum()) / 4
    dt, budget = 1e-3, 1e5  # 1e5 synops/s over 5 ms -> 500 synops per sample
    loss_fn = sl.SynOpsLoss(counter, budget={"2": budget}, dt=dt)
    assert loss_fn.shape == "hinge"  # a budget is a ceiling
    rate = s / (5 * dt)
    assert float(_quiet(loss_fn).detach()) == pytest.approx(max(0.0, (rate - budget) / budget), rel=1e-5)
    assert loss_fn.targets()["2"] == pytest.approx(budget * dt * 5)
    explicit = sl.SynOpsLoss(counter, budget={"2": s / (10 * dt) / 1.5}, dt=dt, time_steps=10, shape="squared")
    assert float(_quiet(explicit).detach()) == pytest.approx(0.5 ** 2, rel=1e-5)


def test_hinge_is_zero_below_the_target_and_has_no_gradient_there():
    net = _mlp()
    x = torch.rand(4, 32)
    counter = sl.SynOpsCounter(net)
    s = _brute_synops(net, x)["2"]
    loss_fn = sl.SynOpsLoss(counter, target=2 * s, shape="hinge")
    net(x)
    value = loss_fn()
    value.backward()
    assert float(value.detach()) == 0.0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in net.parameters())


# ---------------------------------------------------------------------------- gradient direction


def test_loss_above_target_pushes_synops_down_in_a_few_steps():
    net = _mlp(seed=3)
    x = torch.rand(16, 32)
    counter = sl.SynOpsCounter(net)
    s0 = _brute_synops(net, x)["2"]
    loss_fn = sl.SynOpsLoss(counter, target=s0 / 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    seen = []
    for _ in range(5):
        counter.reset()
        net(x)
        loss = loss_fn()
        seen.append(float(counter.synops(by_layer=True)["2"].detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert seen[0] == pytest.approx(s0, rel=1e-6)
    assert all(b < a for a, b in zip(seen, seen[1:])), seen
    assert _brute_synops(net, x)["2"] < 0.9 * s0


def test_loss_below_target_with_squared_shape_pushes_synops_up():
    net = _mlp(seed=4)
    x = torch.rand(16, 32)
    counter = sl.SynOpsCounter(net)
    s0 = _brute_synops(net, x)["2"]
    loss_fn = _quiet(sl.SynOpsLoss, counter, target=2 * s0)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(3):
        counter.reset()
        net(x)
        opt.zero_grad()
        _quiet(loss_fn).backward()
        opt.step()
    assert _brute_synops(net, x)["2"] > s0


def test_spiking_network_synops_fall_with_surrogate_gradients():
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(16, 32), snn.Leaky(beta=0.8)
            self.fc2 = nn.Linear(32, 4)

        def forward(self, x):  # [T, B, 16]
            mem, out = self.lif1.init_leaky(), 0
            for t in range(x.shape[0]):
                spk, mem = self.lif1(self.fc1(x[t]), mem)
                out = out + self.fc2(spk)
            return out

    net = Net()
    with torch.no_grad():
        net.fc1.bias.fill_(0.6)  # plenty of hidden spikes to remove
    x = (torch.rand(6, 8, 16) < 0.5).float()
    counter = sl.SynOpsCounter(net, batch_dim=1)
    loss_fn = sl.SynOpsLoss(counter, fraction=0.3)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    seen = []
    for _ in range(6):
        counter.reset()
        net(x)
        assert counter.data_fed_layers() == ["fc1"]
        seen.append(float(counter.synops(by_layer=True)["fc2"].detach()))
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    assert seen[-1] < 0.8 * seen[0], seen


# ---------------------------------------------------------------------------- collapse avoidance


def _train_synops_only(loss_kwargs: dict, steps: int = 150):
    net = _mlp(seed=5)
    x = torch.rand(32, 32)
    counter = sl.SynOpsCounter(net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss_fn = sl.SynOpsLoss(counter, **loss_kwargs)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(steps):
            counter.reset()
            net(x)
            loss = loss_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
    before = _brute_synops(_mlp(seed=5), x)
    after = _brute_synops(net, x)
    return before, after, [w for w in caught if issubclass(w.category, UnreachableTargetWarning)]


def test_data_fed_layer_dominates_the_toy_network():
    before = _brute_synops(_mlp(seed=5), torch.rand(32, 32))
    assert before["0"] > 5 * before["2"]  # the premise of the collapse tests below


def test_default_half_of_initial_settles_on_the_driven_target_without_collapse():
    before, after, caught = _train_synops_only({"fraction": 0.5})
    assert caught == []
    assert after["2"] == pytest.approx(0.5 * before["2"], rel=0.1)  # reached, not overshot to zero
    assert after["0"] == pytest.approx(before["0"], rel=1e-3)  # the data-fed layer is left alone (weights stay nonzero)


def test_half_of_total_with_all_layers_is_unreachable_warns_and_collapses():
    # the sinabs tutorial's rule on the total: the data-fed layer alone is above the target
    before, after, caught = _train_synops_only({"fraction": 0.5, "layers": "all"})
    assert len(caught) == 1 and "data-fed layer(s) ['0']" in str(caught[0].message)
    assert "collapses accuracy" in str(caught[0].message)
    assert after["2"] < 0.05 * before["2"]  # what the default avoids: the hidden layer is silenced


def test_absolute_target_taken_from_the_total_is_flagged_not_collapsed():
    net = _mlp(seed=5)
    x = torch.rand(32, 32)
    counter = sl.SynOpsCounter(net)
    net(x)
    target = 0.5 * float(counter.synops().detach())  # the tutorial's line, on the total
    counter.reset()
    loss_fn = sl.SynOpsLoss(counter, target=target)
    net(x)
    with pytest.warns(UnreachableTargetWarning, match=r"includes the data-fed layer\(s\) \['0'\]"):
        value = loss_fn()
    bf = _brute_synops(net, x)
    assert float(value.detach()) == pytest.approx(((bf["2"] - target) / target) ** 2, rel=1e-5)
    assert target > bf["2"]  # above the driven synops: the warning says the loss would push them up


@pytest.mark.filterwarnings("ignore:SynOpsLoss. the synops of layer")  # expected here; the test is about something else
def test_no_recognised_data_fed_layer_warns_that_everything_is_regularised():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x):
            return self.net(x * 2.0)  # a new tensor: the first layer no longer reads the model's input

    model = Scaled()
    counter = sl.SynOpsCounter(model)
    loss_fn = sl.SynOpsLoss(counter, fraction=0.5)
    model(torch.rand(3, 32))
    assert counter.data_fed_layers() == []
    with pytest.warns(UnreachableTargetWarning, match="no counted layer was recognised as fed directly by the data"):
        loss_fn()


def test_a_call_without_gradients_during_calibration_reads_the_target_of_the_training_batches_only():
    """calibration_batches=2: after one training batch, a validation batch under no_grad is measured against
    the fraction of the training batch's synops (not of an average that includes its own)."""
    net = _mlp()
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, fraction=0.5, calibration_batches=2)
    train, val = torch.rand(4, 32), torch.rand(3, 32) * 3
    counter.reset()
    net(train)
    loss_fn()
    t = 0.5 * _brute_synops(net, train)["2"]
    counter.reset()
    with torch.no_grad():
        net(val)
        got = float(loss_fn())
    s_val = _brute_synops(net, val)["2"]
    assert got == pytest.approx(((s_val - t) / t) ** 2, rel=1e-6)
    counter.reset()
    net(train * 2)  # the second training batch: the calibration is the mean of the two training batches
    loss_fn()
    assert loss_fn.initial()["driven"] == pytest.approx(
        (_brute_synops(net, train)["2"] + _brute_synops(net, train * 2)["2"]) / 2, rel=1e-6)


def test_views_of_an_input_that_requires_gradients_are_data():
    """x[:, t] of an input made with requires_grad (attribution, adversarial training) has the view as its
    history: its layer is still data-fed, and layers='driven' leaves it out."""
    net = _mlp()
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, target=150.0)
    x = torch.rand(4, 3, 32).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(3):
            net(x[:, t])
        loss_fn()
        value = float(loss_fn.value())
    assert counter.data_fed_layers(accumulated=False) == ["0"]
    assert list(loss_fn.value(by_layer=True)) == ["2"]
    assert value == pytest.approx(float(counter.synops(by_layer=True)["2"].detach()), rel=1e-6)


def test_data_fed_layers_follow_views_and_time_steps_of_the_input():
    net = _mlp()
    counter = sl.SynOpsCounter(net)
    x = torch.rand(4, 3, 32)
    for t in range(4):
        net(x[t])  # views of one input tensor
    assert counter.data_fed_layers() == ["0"]
    counter.reset()
    assert counter.data_fed_layers() == ["0"]  # kept for the accumulated counts
    counter.reset(accumulated=True)
    assert counter.data_fed_layers() == []


# ---------------------------------------------------------------------------- schedules and state


def test_step_advances_target_and_weight_schedules():
    net = _mlp()
    x = torch.rand(4, 32)
    counter = sl.SynOpsCounter(net)
    s = _brute_synops(net, x)["2"]
    loss_fn = sl.SynOpsLoss(counter, fraction=S.Linear(1.0, 0.5, steps=2), weight=S.Warmup(2.0, steps=2))
    values = []
    for _ in range(4):
        counter.reset()
        net(x)
        values.append(float(loss_fn().detach()))
        loss_fn.step()
    # weight 0, 1, 2, 2; target s, 0.75 s, 0.5 s, 0.5 s
    expected = [0.0, 1.0 * (1 / 0.75 - 1) ** 2, 2.0 * 1.0, 2.0 * 1.0]
    assert values == pytest.approx(expected, rel=1e-5, abs=1e-12)
    assert loss_fn.last_step == 4 and loss_fn.targets()["driven"] == pytest.approx(0.5 * s, rel=1e-6)


def test_a_schedule_shared_by_two_terms_is_stepped_once():
    net = _mlp()
    counter = sl.SynOpsCounter(net)
    shared = S.Linear(1.0, 0.5, steps=10)
    loss_fn = sl.SynOpsLoss(counter, fraction={"0": shared, "2": shared})
    loss_fn.step()
    assert shared.last_step == 1


def test_state_dict_round_trip_restores_calibration_and_schedules():
    net = _mlp()
    x = torch.rand(4, 32)
    counter = sl.SynOpsCounter(net)

    def make(c):
        return sl.SynOpsLoss(c, fraction=S.Cosine(1.0, 0.4, steps=5), weight=S.Exponential(1.0, 0.9),
                             calibration_batches=2)

    loss_fn = make(counter)
    for i in range(3):
        counter.reset()
        net(x * (1 + i))
        loss_fn()
        loss_fn.step()
    state = loss_fn.state_dict()
    counter.reset()
    net(x)
    expected = float(loss_fn().detach())

    counter.remove()
    net2 = _mlp(seed=9)  # other weights: a recalibration would give another target
    net2.load_state_dict(net.state_dict())
    counter2 = sl.SynOpsCounter(net2)
    restored = make(counter2)
    restored.load_state_dict(state)
    assert restored.calibrated and restored.last_step == 3
    net2(x)
    assert float(restored().detach()) == pytest.approx(expected, rel=1e-6)
    assert restored.state_dict()["terms"][0]["initial"] == state["terms"][0]["initial"]


def test_state_dict_of_a_loss_with_other_terms_is_refused():
    counter = sl.SynOpsCounter(_mlp())
    a = sl.SynOpsLoss(counter, target={"0": 1.0})
    b = sl.SynOpsLoss(counter, target=1.0)
    with pytest.raises(ValueError, match="state has terms"):
        b.load_state_dict(a.state_dict())


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs",
    [{"target": 0}, {"target": -5.0}, {"fraction": 0.0}, {"target": {"2": 0.0}}, {"target": float("nan")}],
)
def test_target_at_or_below_zero_is_refused(kwargs):
    counter = sl.SynOpsCounter(_mlp())
    with pytest.raises(ValueError, match="must be > 0"):
        sl.SynOpsLoss(counter, **kwargs)


def test_a_schedule_reaching_zero_is_refused_when_used():
    net = _mlp()
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, fraction=S.Linear(1.0, 0.0, steps=2))
    loss_fn.step()
    loss_fn.step()
    net(torch.rand(2, 32))
    with pytest.raises(ValueError, match="is 0.0 at step 2; it must stay > 0"):
        loss_fn()


def test_loss_before_any_forward_pass_is_an_error():
    net = _mlp()
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, target=10.0)
    with pytest.raises(RuntimeError, match="before any forward pass"):
        loss_fn()
    net(torch.rand(2, 32))
    counter.reset()
    with pytest.raises(RuntimeError, match="before any forward pass since counter.reset"):
        loss_fn()


@pytest.mark.parametrize(
    "kwargs",
    [{"target": {"fc9": 1.0}}, {"target": 1.0, "layers": ["2", "fc9"]}, {"budget": {"fc9": 1.0}, "dt": 1e-3}],
)
def test_unknown_layer_name_is_named_with_the_counted_layers(kwargs):
    counter = sl.SynOpsCounter(_mlp())
    with pytest.raises(ValueError, match=r"\['fc9'\] that the counter does not count; counted layers: \['0', '2'\]"):
        sl.SynOpsLoss(counter, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of target="),
        ({"target": 1.0, "fraction": 0.5}, "exactly one of target="),
        ({"budget": {"2": 1.0}}, "needs dt="),
        ({"target": 1.0, "shape": "cubic"}, "shape must be one of"),
        ({"target": 1.0, "weight": -1.0}, "weight must be a number >= 0"),
        ({"target": 1.0, "layers": "hidden"}, "layers must be 'driven', 'all'"),
        ({"fraction": 0.5, "calibration_batches": 0}, "calibration_batches must be an int >= 1"),
    ],
)
def test_bad_arguments_are_explained(kwargs, match):
    counter = sl.SynOpsCounter(_mlp())
    with pytest.raises(ValueError, match=match):
        sl.SynOpsLoss(counter, **kwargs)


def test_a_network_with_only_data_fed_layers_cannot_use_driven():
    net = nn.Sequential(nn.Linear(4, 2))
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, target=1.0)
    net(torch.rand(2, 4))
    with pytest.raises(ValueError, match="every counted layer .* is fed directly by the data"):
        loss_fn()


def test_a_forward_without_gradients_beside_the_training_one_is_named_and_paused_away():
    """An accuracy pass under no_grad before the training forward is counted as a second time step of the batch:
    the loss's synops are twice the training forward's. The read says so; inside counter.paused() the pass is not
    counted and the loss sees the training forward's synops (by hand)."""
    net = _mlp(3)
    x = (torch.rand(4, 32, generator=torch.Generator().manual_seed(3)) < 0.3).float()
    want = _brute_synops(net, x)["2"]
    counter = sl.SynOpsCounter(net, neurons=False)
    loss = sl.SynOpsLoss(counter, target=want)
    with torch.no_grad():
        net(x)  # the metric pass
    net(x)
    with pytest.warns(sl.SynOpsWarning, match=r"ran the model 1 time\(s\) without gradients beside 1 time\(s\) "
                                              r"with them .* counter.paused\(\)"):
        loss()
    assert loss.value() == pytest.approx(2 * want)  # as the warning says: both forwards, as two time steps
    counter.reset()
    with counter.paused(), torch.no_grad():
        net(x)
    net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.SynOpsWarning)
        loss()
    assert loss.value() == pytest.approx(want)
