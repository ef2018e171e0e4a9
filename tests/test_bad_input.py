"""Bad input found by an audit of the public API: each gets a clear error instead of a wrong number or a raw one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import synopsloss as sl


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.weight * x


@pytest.mark.parametrize("bad", [lambda w: -w, lambda w: w * float("nan"), lambda w: w * math.inf])
def test_a_rule_whose_fanouts_are_negative_or_not_finite_is_named(bad):
    rules = {}

    @sl.register_rule(Scale, registry=rules)
    def fan(module, w01, in_shape, out_shape):
        return bad(w01)

    net = nn.Sequential(Scale())
    with pytest.raises(ValueError, match="rule for Scale returned negative, NaN or infinite fan-outs"):
        counter = sl.SynOpsCounter(net, custom_rules=rules)  # noqa: F841 (held: its hooks hold it weakly)
        net(torch.rand(5, 3))


def test_a_rule_that_returns_no_tensor_is_named():
    rules = {}
    sl.register_rule(Scale, registry=rules)(lambda module, w01, i, o: None)
    net = nn.Sequential(Scale())
    with pytest.raises(TypeError, match="returned NoneType, not a tensor of fan-outs"):
        counter = sl.SynOpsCounter(net, custom_rules=rules)  # noqa: F841 (held: its hooks hold it weakly)
        net(torch.rand(5, 3))


def test_time_steps_of_a_misspelt_layer_raise():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    counter = sl.SynOpsCounter(net)
    net(torch.rand(5, 4))
    assert counter.time_steps("0") == 1.0
    with pytest.raises(KeyError, match=r"no counted layer named 'fc1'; layers: \['0', '2'\]"):
        counter.time_steps("fc1")


def test_snapshots_of_different_models_are_not_merged():
    x = torch.rand(5, 4)
    a, b = (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, n)) for n in (2, 9))
    ca, cb = sl.SynOpsCounter(a), sl.SynOpsCounter(b)
    a(x)
    b(x)
    sa = ca.snapshot()
    with pytest.raises(ValueError, match="layer '2' is a Linear with 6 weights in one snapshot and a Linear with 27"):
        sa.merge(cb.snapshot())
    ca.remove()
    c = sl.SynOpsCounter(a)
    a(torch.rand(2, 4))
    assert sa.merge(c.snapshot()).samples == 7  # the same model: merged


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -50.0])
def test_iterative_refuses_observed_tensors_that_are_no_synops(value):
    s = sl.schedules.Iterative(0.5, 1, start=100.0)
    s.observe(torch.tensor(value))  # (a tensor stays on its device: checked when the stage ends)
    with pytest.raises(ValueError, match="observe\\(\\) takes the synops per sample"):
        s.step()


def test_a_capped_growing_exponential_stays_at_its_cap():
    w = sl.schedules.Exponential(0.01, 1.1, limit=1.0)
    assert w.at(100) == 1.0 and w.at(8000) == 1.0 and w.at(10 ** 7) == 1.0
    assert w.at(10) == pytest.approx(0.01 * 1.1 ** 10)
    with pytest.raises(OverflowError, match="give limit="):
        sl.schedules.Exponential(0.01, 1.1).at(8000)


@pytest.mark.parametrize("value", [0, -1, "8", 2.5])
def test_batch_size_set_between_batches_is_checked(value):
    counter = sl.SynOpsCounter(nn.Sequential(nn.Linear(4, 3)), batch_size=8)
    with pytest.raises((ValueError, TypeError), match="batch_size"):
        counter.batch_size = value
    counter.batch_size = None
    assert counter.batch_size is None


@pytest.mark.parametrize("flag", ["strict", "check_finite", "neurons", "auto_reset", "per_sample"])
@pytest.mark.parametrize("value", [None, "no", 1])
def test_switches_take_only_true_or_false(flag, value):
    with pytest.raises(TypeError, match=f"{flag} must be True or False"):
        sl.SynOpsCounter(nn.Sequential(nn.Linear(4, 3)), **{flag: value})


@pytest.mark.parametrize("rules", [{1: 2}, {nn.Linear: "x"}, {"Linear": None}])
def test_custom_rules_hold_module_classes_and_rules(rules):
    with pytest.raises(TypeError, match="custom_rules maps nn.Module subclasses to rules"):
        sl.SynOpsCounter(nn.Sequential(nn.Linear(4, 3)), custom_rules=rules)


@pytest.mark.parametrize("change, match", [({"start": float("nan")}, "start must be a finite number"),
                                           ({"steps": 0}, "steps must be an int >= 1"),
                                           ({"last_step": -1}, "last_step must be an int >= 0")])
def test_a_schedule_state_with_bad_values_is_refused(change, match):
    s = sl.schedules.Linear(1.0, 0.0, steps=3)
    state = s.state_dict()
    with pytest.raises(ValueError, match=match):
        s.load_state_dict({**state, **change})
    with pytest.raises(TypeError, match="takes the dict state_dict\\(\\) returned"):
        s.load_state_dict(None)
    s.step()
    s.load_state_dict(state)
    assert s.last_step == 0 and s.value == 1.0


@pytest.mark.parametrize("schedule", [sl.schedules.Constant(2.0), sl.schedules.Warmup(1.0, 3),
                                      sl.schedules.Sequential([1.0, 0.5], [3]), sl.schedules.Linear(1.0, 0.0, 3) * 2,
                                      sl.schedules.Iterative(0.5, 10, start=10.0), sl.schedules.Cosine(1.0, 0.0, 5)])
def test_every_schedule_reloads_its_own_state(schedule):
    schedule.step()
    value, state = schedule.value, schedule.state_dict()
    schedule.step()
    schedule.load_state_dict(state)
    assert schedule.value == value and schedule.last_step == 1


def test_a_loss_state_that_is_not_one_is_named():
    net = nn.Sequential(nn.Linear(4, 2))
    loss_fn = sl.SynOpsLoss(sl.SynOpsCounter(net), target=5.0, layers="all")
    with pytest.raises(ValueError, match="this state lacks \\['terms', 'last_step', 'calls'\\]"):
        loss_fn.load_state_dict({"weight": {}})


def test_register_rule_arguments_are_checked():
    rules = {}
    with pytest.raises(ValueError, match="sample_ndim=\\) is the number of trailing dims"):
        sl.register_rule(Scale, registry=rules, sample_ndim=-1)
    with pytest.raises(TypeError, match="registry=\\) takes a dict"):
        sl.register_rule(Scale, registry=[])
    with pytest.raises(TypeError, match="weight=\\) names the weight attribute"):
        sl.register_rule(Scale, registry=rules, weight=None)
    with pytest.raises(TypeError, match="decorates the rule's function"):
        sl.register_rule(Scale, registry=rules)(5)
    sl.register_rule(Scale, registry=rules, counts=True)(lambda module, args, kwargs, out: 3.0)
    net = nn.Sequential(Scale())
    counter = sl.SynOpsCounter(net, custom_rules=rules)  # noqa: F841 (held: its hooks hold it weakly)
    with pytest.raises(TypeError, match="returned float; a rule registered with counts=True returns"):
        net(torch.rand(2, 3))


def test_energy_presets_take_a_name_and_numbers():
    with pytest.raises(TypeError, match="preset's name must be a non-empty str"):
        sl.register_device(None, 1e-12, 1e-12, True, source="datasheet")
    with pytest.raises(ValueError, match="energies must be finite joules >= 0, got {'e_ac': '1e-12'}"):
        sl.OpEnergy("text-cost", "1e-12", 1e-12)


def test_connection_map_of_a_shape_the_layer_cannot_take_is_named():
    with pytest.raises(ValueError, match="Linear cannot take an input sample of shape \\(3,\\)"):
        sl.connection_map(nn.Linear(4, 2), (3,))


def test_loss_and_schedule_arguments_of_the_wrong_kind_are_named():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    counter = sl.SynOpsCounter(net)
    with pytest.raises(TypeError, match=r"layers must be 'driven', 'all' or a list of layer names \(str\), got None"):
        sl.SynOpsLoss(counter, target=5.0, layers=None)
    with pytest.raises(TypeError, match="milestones must be a list of steps"):
        sl.schedules.Milestones(1.0, None, 0.5)
    with pytest.raises(TypeError, match="Sequential: schedules must be a list"):
        sl.schedules.Sequential(None, None)
    net(torch.rand(4, 4))
    loss_fn = sl.SynOpsLoss(counter, target=1e9, layers=["2"], shape="hinge")  # (a ceiling: no warning)
    with pytest.raises(TypeError, match=r"task_loss=\) takes the task loss of the batch"):
        loss_fn(task_loss="x")


def test_calibration_helpers_name_what_they_take():
    from synopsloss import calibration

    with pytest.raises(TypeError, match="calibrate takes counter snapshots"):
        calibration.calibrate([1, 2], [1.0, 2.0])
    with pytest.raises(TypeError, match="break_even takes the table"):
        calibration.break_even("table")
    net = nn.Sequential(nn.Linear(4, 3))
    counter = sl.SynOpsCounter(net)
    net(torch.rand(2, 4))
    with pytest.raises(ValueError, match="the energy dict: energies must be finite joules >= 0, got {'e_ac': None}"):
        counter.table(energy={"e_ac": None, "e_mac": 1e-12})


def test_a_torchscript_model_or_submodule_is_refused_with_the_fix():
    """A scripted model raised torch's 'register_forward_pre_hook is not supported on ScriptModules' (a scripted
    submodule first got an UnsupportedLayerWarning advising register_rule)."""
    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(nn.Linear(8, 6))
    for model, named in ((scripted, "'<root>'"), (nn.Sequential(scripted, nn.ReLU(), nn.Linear(6, 3)), "['0']")):
        with _w.catch_warnings():
            _w.simplefilter("error", sl.UnsupportedLayerWarning)
            with pytest.raises(TypeError, match="TorchScript") as err:
                sl.SynOpsCounter(model)
        assert named in str(err.value) and "Count the eager model" in str(err.value)
