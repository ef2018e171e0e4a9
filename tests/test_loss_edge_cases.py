"""Edge cases of SynOpsLoss and the schedules: values by hand at every phase, resumes, shapes, errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import synopsloss as sl
from synopsloss import schedules as S

from helpers import linear_pair_synops as _brute_synops
from helpers import quiet_unreachable as _quiet


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 5))


# ---------------------------------------------------------------------------- schedules: values by hand


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: S.Constant(2.5), {0: 2.5, 3: 2.5, 1000: 2.5}),
        (lambda: S.Linear(2.0, 1.0, steps=4), {0: 2.0, 1: 1.75, 2: 1.5, 4: 1.0, 9: 1.0}),
        (lambda: S.Linear(0.0, 3.0, steps=3), {0: 0.0, 1: 1.0, 3: 3.0, 50: 3.0}),
        # end + (start - end)(1 + cos(pi k / n)) / 2
        (lambda: S.Cosine(2.0, 1.0, steps=6), {0: 2.0, 2: 1.75, 3: 1.5, 4: 1.25, 6: 1.0, 7: 1.0, 100: 1.0}),
        (lambda: S.Exponential(8.0, 0.5), {0: 8.0, 1: 4.0, 3: 1.0, 5: 0.25}),
        (lambda: S.Exponential(8.0, 0.5, limit=1.5), {0: 8.0, 2: 2.0, 3: 1.5, 40: 1.5}),
        (lambda: S.Exponential(1.0, 2.0, limit=5.0), {0: 1.0, 2: 4.0, 3: 5.0, 10: 5.0}),
        (lambda: S.Exponential(3.0, 1.0, limit=1.0), {0: 3.0, 7: 3.0}),  # no decay: the limit never binds
        (lambda: S.Milestones(4.0, milestones=[1, 3, 3], gamma=0.5), {0: 4.0, 1: 2.0, 2: 2.0, 3: 0.5, 99: 0.5}),
        (lambda: S.Warmup(S.Constant(2.0), steps=4, start_factor=0.5), {0: 1.0, 2: 1.5, 4: 2.0, 8: 2.0}),
        # warm-up evaluates its child at the same step: Linear(1, 0, 4) x factor k/2
        (lambda: S.Warmup(S.Linear(1.0, 0.0, steps=4), steps=2), {0: 0.0, 1: 0.375, 2: 0.5, 3: 0.25, 6: 0.0}),
        (
            lambda: S.Sequential([S.Warmup(1.0, steps=2), S.Cosine(1.0, 0.5, steps=2), 0.25], milestones=[2, 5]),
            {0: 0.0, 1: 0.5, 2: 1.0, 3: 0.75, 4: 0.5, 5: 0.25, 30: 0.25},
        ),
        (lambda: 3 * S.Linear(1.0, 0.0, steps=2) * S.Milestones(1.0, [1], 0.5), {0: 3.0, 1: 0.75, 2: 0.0}),
    ],
)
def test_schedule_values_at_start_middle_end_and_past_the_end(make, expected):
    for k, v in expected.items():
        assert make().at(k) == pytest.approx(v, abs=1e-12), k
    s = make()
    for k in range(max(expected) + 1):
        if k in expected:
            assert s.value == pytest.approx(expected[k], abs=1e-12), k
        s.step()


RESUMABLE = [
    lambda: S.Linear(1.0, 0.2, steps=7),
    lambda: S.Cosine(1.0, 0.1, steps=9),
    lambda: S.Exponential(2.0, 0.8, limit=0.5),
    lambda: S.Milestones(1.0, [2, 4, 6], 0.3),
    lambda: S.Warmup(S.Cosine(1.0, 0.5, steps=8), steps=3, start_factor=0.1),
    lambda: S.Sequential([S.Warmup(0.6, steps=2), S.Linear(0.6, 0.2, steps=4), S.Exponential(0.2, 0.9)], [3, 6]),
    lambda: S.Warmup(S.Linear(1.0, 0.0, steps=10), steps=4) * S.Milestones(2.0, [5], 0.5),
]


@pytest.mark.parametrize("make", RESUMABLE)
@pytest.mark.parametrize("stop", [1, 4, 7])
def test_a_schedule_resumed_in_a_fresh_object_continues_with_the_same_values(make, stop):
    a = make()
    for _ in range(stop):
        a.step()
    b = make()
    b.load_state_dict(a.state_dict())
    assert b.last_step == stop
    for _ in range(6):
        assert b.value == a.value == pytest.approx(make().at(a.last_step))
        a.step()
        b.step()


def test_a_schedule_inside_a_composite_is_not_stepped_twice_when_shared():
    w = S.Linear(0.0, 1.0, steps=4)
    net = _mlp()
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, target=w * 1000.0, weight=w)
    loss_fn.step()
    loss_fn.step()
    # the weight is w itself, the target is w x 1000: both at step 2
    assert w.last_step == 2 and loss_fn.weight.value == pytest.approx(0.5)
    assert loss_fn.targets()["driven"] == pytest.approx(500.0)


# ---------------------------------------------------------------------------- shapes by hand


def test_l1_is_the_absolute_relative_error_of_counter_synops_with_all_layers():
    net = _mlp(1)
    x = torch.rand(6, 12)
    counter = sl.SynOpsCounter(net)
    hand = _brute_synops(net, x)
    total = hand["0"] + hand["2"]
    for target in (0.5 * total, 1.5 * total):
        counter.reset()
        loss_fn = _quiet(sl.SynOpsLoss, counter, target=target, shape="l1", layers="all", weight=0.4)
        net(x)
        assert float(counter.synops().detach()) == pytest.approx(total, rel=1e-5)
        assert float(_quiet(loss_fn).detach()) == pytest.approx(0.4 * abs(total - target) / target, rel=1e-5)
    # default: only the network-driven layer "2" (the data-fed layer "0" is left out)
    driven = _quiet(sl.SynOpsLoss, counter, target=0.5 * hand["2"], shape="l1")
    assert float(_quiet(driven).detach()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("factor", [0.25, 0.9, 1.0, 1.1, 4.0])
def test_hinge_is_zero_at_or_below_the_target_and_the_relative_excess_above(factor):
    net = _mlp(2)
    x = torch.rand(3, 12)
    counter = sl.SynOpsCounter(net)
    s = _brute_synops(net, x)["2"]
    target = factor * s
    loss_fn = _quiet(sl.SynOpsLoss, counter, target=target, shape="hinge", weight=2.0)
    net(x)
    value = float(_quiet(loss_fn).detach())
    if factor >= 1.0:
        assert value == 0.0
    else:
        assert value == pytest.approx(2.0 * (s - target) / target, rel=1e-5) and value > 0


def test_weight_scales_the_term_linearly_and_zero_weight_gives_zero():
    net = _mlp(3)
    x = torch.rand(4, 12)
    counter = sl.SynOpsCounter(net)
    s = _brute_synops(net, x)["2"]
    net(x)
    values = {}
    for lam in (0.0, 1.0, 3.5):
        loss_fn = _quiet(sl.SynOpsLoss, counter, target=s / 3, weight=lam)
        values[lam] = float(_quiet(loss_fn).detach())
    assert values[1.0] == pytest.approx(4.0, rel=1e-5)  # r = (s - s/3) / (s/3) = 2
    assert values[3.5] == pytest.approx(14.0, rel=1e-5) and values[0.0] == 0.0


def test_per_layer_dict_targets_sum_one_term_per_layer_by_hand():
    net = _mlp(4)
    x = torch.rand(5, 12)
    counter = sl.SynOpsCounter(net)
    hand = _brute_synops(net, x)
    t0, t2 = 0.8 * hand["0"], 3.0 * hand["2"]
    loss_fn = _quiet(sl.SynOpsLoss, counter, target={"0": t0, "2": t2}, shape="squared", weight=0.5)
    net(x)
    expected = 0.5 * (((hand["0"] - t0) / t0) ** 2 + ((hand["2"] - t2) / t2) ** 2)
    assert float(_quiet(loss_fn).detach()) == pytest.approx(expected, rel=1e-5)
    assert loss_fn.targets() == pytest.approx({"0": t0, "2": t2})


def test_fraction_per_layer_is_measured_on_the_first_batches_then_frozen():
    net = _mlp(5)
    xs = [torch.rand(4, 12) * (1 + i) for i in range(3)]
    counter = sl.SynOpsCounter(net)
    hands = [_brute_synops(net, x) for x in xs]
    loss_fn = _quiet(sl.SynOpsLoss, counter, fraction={"0": 0.5, "2": 0.25}, calibration_batches=2, shape="l1")
    got = []
    for x in xs:
        counter.reset()
        net(x)
        got.append(float(_quiet(loss_fn).detach()))
    init = {n: (hands[0][n] + hands[1][n]) / 2 for n in ("0", "2")}
    assert loss_fn.initial() == pytest.approx(init, rel=1e-5)
    # batch 1: running mean of batch 1 alone; batch 2: mean of both; batch 3: frozen
    run1 = {n: hands[0][n] for n in ("0", "2")}
    for k, base in ((0, run1), (1, init), (2, init)):
        t = {"0": 0.5 * base["0"], "2": 0.25 * base["2"]}
        expected = sum(abs(hands[k][n] - t[n]) / t[n] for n in ("0", "2"))
        assert got[k] == pytest.approx(expected, rel=1e-5), k


# ---------------------------------------------------------------------------- step and state


def test_loss_step_moves_target_and_weight_schedules_by_hand():
    net = _mlp(6)
    x = torch.rand(4, 12)
    counter = sl.SynOpsCounter(net)
    s = _brute_synops(net, x)["2"]
    loss_fn = _quiet(
        sl.SynOpsLoss, counter, target=S.Milestones(s, [1, 2], 0.5), weight=S.Exponential(1.0, 2.0), shape="hinge"
    )
    values = []
    for _ in range(4):
        counter.reset()
        net(x)
        values.append(float(_quiet(loss_fn).detach()))
        loss_fn.step()
    # targets s, s/2, s/4, s/4; weights 1, 2, 4, 8; hinge r = s/t - 1
    assert values == pytest.approx([0.0, 2.0 * 1.0, 4.0 * 3.0, 8.0 * 3.0], rel=1e-5)


def test_loss_state_dict_mid_calibration_and_mid_schedule_resumes_in_a_fresh_loss():
    net = _mlp(7)
    xs = [torch.rand(4, 12) * (1 + 0.5 * i) for i in range(5)]

    def make(c):
        return sl.SynOpsLoss(c, fraction=S.Linear(1.0, 0.5, steps=4), weight=S.Warmup(2.0, steps=3),
                             calibration_batches=3)

    counter = sl.SynOpsCounter(net)
    loss_fn = make(counter)
    for x in xs[:2]:
        counter.reset()
        net(x)
        _quiet(loss_fn)
        loss_fn.step()
    state = loss_fn.state_dict()
    expected = []
    for x in xs[2:]:
        counter.reset()
        net(x)
        expected.append(_quiet(loss_fn))
        loss_fn.step()
    counter.remove()

    counter2 = sl.SynOpsCounter(net)
    fresh = make(counter2)
    fresh.load_state_dict(state)
    assert not fresh.calibrated and fresh.last_step == 2
    for x, e in zip(xs[2:], expected):
        counter2.reset()
        net(x)
        got = _quiet(fresh)
        assert got.dtype == e.dtype == torch.get_default_dtype()
        assert float(got.detach()) == pytest.approx(float(e.detach()), rel=1e-5)
        fresh.step()
    assert fresh.initial() == pytest.approx(loss_fn.initial())


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"target": -1.0}, ValueError, r"target must be > 0, got -1.0.*Give a positive number"),
        ({"target": 0.0}, ValueError, "target must be > 0"),
        ({"fraction": {"2": -0.5}}, ValueError, r"fraction\['2'\] must be > 0"),
        ({"target": 1.0, "weight": float("nan")}, ValueError, "weight must be a number >= 0"),
        ({"target": 1.0, "weight": -0.5}, ValueError, "weight must be a number >= 0"),
        ({"target": 1.0, "shape": "quadratic"}, ValueError, r"shape must be one of .*'squared'.*got 'quadratic'"),
        ({"target": {"fc1": 1.0}}, ValueError, r"\['fc1'\] that the counter does not count; counted layers"),
        ({"fraction": 0.5, "layers": ["nope"]}, ValueError, r"\['nope'\] that the counter does not count"),
        ({"budget": {"2": 1e5}, "dt": float("inf")}, ValueError, "needs dt="),
        ({"budget": {"2": 1e5}, "dt": 0.0}, ValueError, "needs dt="),
    ],
)
def test_bad_loss_arguments_say_what_was_wrong_and_what_to_do(kwargs, exc, match):
    counter = sl.SynOpsCounter(_mlp())
    with pytest.raises(exc, match=match):
        sl.SynOpsLoss(counter, **kwargs)


def test_fraction_loss_before_any_forward_pass_fails_without_consuming_calibration():
    net = _mlp(8)
    x = torch.rand(4, 12)
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, fraction=0.5)
    with pytest.raises(RuntimeError, match="before any forward pass.*run the model"):
        loss_fn()
    assert not loss_fn.calibrated
    net(x)
    assert float(_quiet(loss_fn).detach()) == pytest.approx(1.0, rel=1e-5)  # s is twice half of s


def test_a_weight_schedule_going_negative_is_an_error_when_used():
    net = _mlp()
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, target=1.0, weight=S.Linear(1.0, -1.0, steps=2))
    for _ in range(2):
        loss_fn.step()
    net(torch.rand(2, 12))
    with pytest.raises(ValueError, match="weight schedule gave -1.0 < 0 at step 2"):
        _quiet(loss_fn)


# ---------------------------------------------------------------------------- reference-style models


def test_loss_on_an_snntorch_model_called_once_per_time_step():
    snn = pytest.importorskip("snntorch")
    from snntorch import utils as snn_utils

    def make():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 10), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(10, 3),
                            snn.Leaky(beta=0.5, init_hidden=True, output=True))
        with torch.no_grad():
            net[0].bias.fill_(0.5)
        return net

    net, ref = make(), make()
    ref.load_state_dict(net.state_dict())
    x = (torch.rand(4, 2, 6) < 0.5).float()  # T = 4 steps of B = 2 samples
    s0 = s2 = 0.0
    snn_utils.reset(ref)
    with torch.no_grad():
        for t in range(4):
            h = ref[1](ref[0](x[t]))
            ref[3](ref[2](h))
            s0 += float((x[t] * (ref[0].weight != 0).sum(0)).sum())
            s2 += float((h * (ref[2].weight != 0).sum(0)).sum())
    s0, s2 = s0 / 2, s2 / 2  # per sample, never per sample x step
    assert s2 > 0

    counter = sl.SynOpsCounter(net)
    driven = _quiet(sl.SynOpsLoss, counter, target=0.5 * s2, shape="l1", weight=2.0)
    everything = _quiet(sl.SynOpsLoss, counter, target=0.5 * (s0 + s2), shape="squared", layers="all")
    snn_utils.reset(net)
    for t in range(4):
        net(x[t])
    assert counter.data_fed_layers() == ["0"]
    assert float(_quiet(driven).detach()) == pytest.approx(2.0, rel=1e-5)
    assert float(_quiet(everything).detach()) == pytest.approx(1.0, rel=1e-5)


def test_loss_on_a_sinabs_squeeze_model_counts_per_sample():
    sinabs_layers = pytest.importorskip("sinabs.layers")
    torch.manual_seed(0)
    b, steps = 2, 3
    net = nn.Sequential(nn.Linear(5, 7), sinabs_layers.IAFSqueeze(batch_size=b), nn.Linear(7, 2))
    x = (torch.rand(b * steps, 5) < 0.6).float() * 2.0  # [B*T, 5]
    with torch.no_grad():
        spikes = net[1](net[0](x))
        net[1].reset_states()
        s2 = float((spikes * (net[2].weight != 0).sum(0)).sum()) / b
    assert s2 > 0
    counter = sl.SynOpsCounter(net)
    loss_fn = _quiet(sl.SynOpsLoss, counter, target=s2 / 2, shape="hinge", weight=1.5)
    net(x)
    assert counter.samples == b
    assert float(_quiet(loss_fn).detach()) == pytest.approx(1.5, rel=1e-5)


# ---------------------------------------------------------------------------- gradient direction


@pytest.mark.parametrize("shape", ["squared", "hinge", "squared_hinge", "l1"])
def test_sgd_on_the_loss_above_target_lowers_the_synops(shape):
    net = _mlp(9)
    with torch.no_grad():
        net[0].bias.fill_(0.3)
    x = torch.rand(8, 12)
    counter = sl.SynOpsCounter(net)
    start = _brute_synops(net, x)["2"]
    loss_fn = _quiet(sl.SynOpsLoss, counter, target=0.3 * start, shape=shape)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(5):
        counter.reset()
        net(x)
        loss = _quiet(loss_fn)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _brute_synops(net, x)["2"]
    assert after < 0.95 * start and math.isfinite(after)


def test_a_call_without_gradients_does_not_calibrate_a_fraction():
    """A validation pass (the loss read under no_grad) before training reads the running target but does not
    calibrate: the initial synops are the training batch's, by hand (bias-free Linear: sum |x| x fan-out)."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.ReLU(), torch.nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[2].weight.fill_(1.0)
    counter = sl.SynOpsCounter(net, neurons=False)
    loss_fn = sl.SynOpsLoss(counter, fraction=0.5)
    with torch.no_grad():
        net(torch.ones(2, 4))  # hidden 4, 4, 4 per sample: driven synops 12 x 2 = 24 per sample
        with pytest.warns(sl.SynOpsWarning, match="not calibrated yet"):
            loss_fn()
    assert not loss_fn.calibrated and loss_fn.targets()["driven"] is None
    counter.reset()
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])  # hidden 1 and 2: driven (3 + 6) x 2 / 2 = 9
    net(x)
    loss_fn()
    assert loss_fn.calibrated and loss_fn.initial()["driven"] == pytest.approx(9.0)


def test_fraction_calibration_averages_over_samples_not_batches():
    """Two calibration batches of 2 and 1 samples: the initial synops are the per-sample average over the 3
    samples (as under DDP), by hand; a state saved half-way resumes to the same value."""
    def build():
        net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False), torch.nn.ReLU(),
                                  torch.nn.Linear(2, 2, bias=False))
        with torch.no_grad():
            net[0].weight.fill_(1.0)
            net[2].weight.fill_(1.0)
        counter = sl.SynOpsCounter(net, neurons=False)
        return net, counter, sl.SynOpsLoss(counter, fraction=0.5, calibration_batches=2)

    # driven synops per sample: hidden h = sum(x) on both units, each reaching 2 synapses: 4 * sum(x)
    first = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # sums 1 and 3: 4 and 12 synops
    second = torch.tensor([[1.0, 1.0, 1.0]])  # sum 3: 12 synops
    net, counter, loss_fn = build()
    for x in (first, second):
        counter.reset()
        net(x)
        loss_fn()
    assert loss_fn.initial()["driven"] == pytest.approx((4 + 12 + 12) / 3)  # not the batch means' (8 + 12) / 2
    net, counter, half = build()
    counter.reset()
    net(first)
    half()
    net, counter, resumed = build()
    resumed.load_state_dict(half.state_dict())
    counter.reset()
    net(second)
    resumed()
    assert resumed.initial()["driven"] == pytest.approx((4 + 12 + 12) / 3)


def test_a_fraction_loss_read_without_gradients_before_training_says_it_has_no_target():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False))
    counter = sl.SynOpsCounter(net, neurons=False)
    loss = sl.SynOpsLoss(counter, fraction=0.5)
    with torch.no_grad():
        net(torch.rand(4, 6))
        with pytest.warns(sl.SynOpsWarning, match="not calibrated yet"):
            loss()
    assert loss.targets() == {"driven": None} and not loss.calibrated


def test_a_layer_named_twice_is_refused():
    net = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False))
    counter = sl.SynOpsCounter(net, neurons=False)
    with pytest.raises(ValueError, match=r"names layer\(s\) \['2'\] more than once"):
        sl.SynOpsLoss(counter, target=1.0, layers=["2", "2"])


def test_a_regularised_layer_that_did_not_run_is_named_as_such():
    """A branch not taken: the loss names the layer as idle, not as fed by the data or frozen."""

    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x, use_b=True):
            h = torch.relu(self.a(x))
            return self.c(torch.relu(self.b(h)) if use_b else h)

    torch.manual_seed(0)
    net = Branch()
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.SynOpsLoss(counter, target={"b": 10.0})
    x = (torch.rand(4, 8) < 0.5).float()
    net(x, use_b=False)
    assert counter.idle_layers() == ["b"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = loss_fn()
    messages = [str(w.message) for w in caught]
    assert any("layer(s) ['b'] did not run in this batch" in m for m in messages), messages
    assert not any("does not depend on any trainable parameter" in m for m in messages)
    assert float(value) == pytest.approx(1.0)  # ((0 - 10) / 10) ** 2: synops 0 against the target
    counter.reset()
    net(x)
    assert counter.idle_layers() == []


def _cast_net() -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x.float())))  # x.float() is x itself for float input

    torch.manual_seed(0)
    return Net()


def test_one_batch_whose_input_the_model_computed_changes_no_later_loss():
    """A validation batch stored as bool (cast inside forward: fc1 is not fed by the data in that batch) must not
    make the input layer count as network-driven in later training batches."""
    net = _cast_net()
    counter = sl.SynOpsCounter(net, neurons=False)
    loss_fn = sl.SynOpsLoss(counter, fraction=0.5)
    x = (torch.rand(4, 6) < 0.5).float()
    fan2 = (net.fc2.weight != 0).sum(0).double()

    def train_batch() -> float:
        counter.reset()
        net(x)
        return float(loss_fn())

    first = train_batch()
    with torch.no_grad():
        counter.reset()
        net(torch.rand(4, 6) < 0.5)
    assert counter.data_fed_layers(accumulated=False) == [] and counter.data_fed_layers() == []
    for _ in range(2):
        got = train_batch()
        assert counter.data_fed_layers(accumulated=False) == ["fc1"]
        assert loss_fn.last()["terms"]["driven"]["layers"] == ["fc2"]
        with torch.no_grad():  # by hand: fc2's synops against half the calibrated fc2 synops
            s = float((torch.relu(net.fc1(x)).double() @ fan2).sum() / 4)
        target = 0.5 * loss_fn.initial()["driven"]
        assert loss_fn.initial()["driven"] == pytest.approx(s, rel=1e-6)  # calibrated on fc2 alone
        assert got == pytest.approx(((s - target) / target) ** 2, rel=1e-5) == pytest.approx(first, rel=1e-5)


def test_the_loss_read_twice_in_a_batch_calibrates_on_that_batch_once():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    counter = sl.SynOpsCounter(net, neurons=False)
    loss_fn = sl.SynOpsLoss(counter, fraction=0.5, calibration_batches=2)
    seen = []
    for i, n in enumerate((4, 2)):
        counter.reset()
        x = torch.randn(n, 6) * (1 + 3 * i)
        net(x)
        loss_fn()  # read to log it
        loss_fn()  # the term added to the task loss
        with torch.no_grad():
            h = torch.relu(net[0](x)).abs().double()
            seen.append((float((h @ (net[2].weight != 0).sum(0).double()).sum()), n))
    assert loss_fn.calibrated
    # the per-sample average over both batches' samples (by hand), not over the first batch read twice
    assert loss_fn.initial()["driven"] == pytest.approx(sum(s for s, _ in seen) / sum(n for _, n in seen), rel=1e-6)


def test_numpy_scalars_are_numbers_and_an_iterative_fraction_is_refused_at_construction():
    """A target read from a numpy array (np.float32, np.int64) is a number (it was refused as 'got float32'); an
    array is not, and the message says float(value); fraction=Iterative(...) is refused when the loss is made."""
    import numpy as np

    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    counter = sl.SynOpsCounter(net, neurons=False)
    for v in (np.float32(1000.0), np.int64(1000)):
        loss = sl.SynOpsLoss(counter, target=v, weight=np.float32(0.5), shape="squared")
        net(torch.rand(4, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(loss())
        s = loss.value()
        assert value == pytest.approx(0.5 * ((s - 1000.0) / 1000.0) ** 2)  # squared relative error, by hand
        counter.reset()
    for bad in (np.array([1000.0]), np.array(1000.0)):
        with pytest.raises(TypeError, match=r"got ndarray \(pass float\(value\)\)"):
            sl.SynOpsLoss(counter, target=bad)
    with pytest.raises(ValueError, match="an Iterative schedule sets absolute targets; pass it as target=, not fraction="):
        sl.SynOpsLoss(counter, fraction=sl.schedules.Iterative(0.5, 2))
