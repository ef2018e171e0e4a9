"""EnergyLoss, the loss's introspection (value / last), its scale warnings and NaN handling, checked by hand."""

from __future__ import annotations

import warnings

import pytest
import snntorch as snn
import torch
from snntorch import utils as snn_utils
from torch import nn

import synopsloss as sl
from synopsloss.loss import LossScaleWarning, UnreachableTargetWarning

PJ = 1e-12


class _Spike(torch.autograd.Function):
    """Heaviside forward, straight-through backward: spikes whose gradient is known by hand."""

    @staticmethod
    def forward(ctx, z):
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        return g


class SpikeAct(nn.Module):
    def forward(self, z):
        return _Spike.apply(z)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreachableTargetWarning)
        warnings.simplefilter("ignore", LossScaleWarning)
        return fn(*args, **kwargs)


def _snn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6, bias=False), snn.Leaky(beta=0.5, init_hidden=True),
                        nn.Linear(6, 3, bias=False), snn.Leaky(beta=0.5, init_hidden=True))
    with torch.no_grad():
        net[0].weight.abs_().add_(0.5)
        net[2].weight[0, 0] = 0
    return net


def _run_snn(net, counter, steps=5):
    x = torch.rand(2, steps, 4) + 0.5
    snn_utils.reset(net)
    for t in range(steps):
        net(x[:, t])


@pytest.mark.parametrize("preset", ["horowitz45nm", "lemaire2022", "loihi-davies2018", "spinnaker2"])
def test_energy_loss_value_is_the_tables_energy_column(preset):
    net = _snn_net()
    counter = sl.SynOpsCounter(net)
    _run_snn(net, counter)
    table = counter.table(energy=preset)
    all_layers = sl.EnergyLoss(counter, target=1e-9, energy=preset, layers="all")
    driven = sl.EnergyLoss(counter, target=1e-9, energy=preset)
    _quiet(all_layers)
    _quiet(driven)
    assert all_layers.value() == pytest.approx(table.total.energy, rel=1e-12)
    per = all_layers.value(by_layer=True)
    for row in table:
        if row.energy is not None:
            assert per[row.name] == pytest.approx(row.energy, rel=1e-12)
    # the default leaves out the data-fed layer "0" only
    assert driven.value() == pytest.approx(table.total.energy - table["0"].energy, rel=1e-12)
    assert "0" not in driven.value(by_layer=True)


def test_energy_loss_gradient_by_hand_spiking_and_analog_inputs():
    """Layer 2 fed straight-through spikes (ACs), layer 4 fed ReLU values (MACs): dE/dW by hand."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 4, bias=False), SpikeAct(), nn.Linear(4, 2, bias=False), nn.ReLU(),
                        nn.Linear(2, 2, bias=False))
    x = torch.tensor([[1.0, -0.5, 2.0], [0.3, 1.0, -1.0]])
    counter = sl.SynOpsCounter(net)
    t = 1e-12
    loss_fn = sl.EnergyLoss(counter, target=t, energy="horowitz45nm")
    out = net(x)
    loss = _quiet(loss_fn)
    loss.backward()
    # by hand
    with torch.no_grad():
        z1 = x @ net[0].weight.T
        s1 = (z1 > 0).double()                       # spikes into layer 2
        h = torch.relu(s1.float() @ net[2].weight.T).double()  # analog into layer 4
        fan2 = (net[2].weight != 0).sum(0).double()  # fan-out of each input of layer 2
        fan4 = (net[4].weight != 0).sum(0).double()
        acs2 = float((s1 * fan2).sum() / 2)
        macs4 = float(((h != 0).double() * fan4).sum() / 2)
        syn4 = float((h.abs() * fan4).sum() / 2)
        E = acs2 * 0.9 * PJ + macs4 * 4.6 * PJ
    assert loss_fn.value() == pytest.approx(E, rel=1e-12)
    dL_dE = 2 * (E - t) / t ** 2
    # layer 4: dE/dh_bj = (E4 / S4) * fan4_j / B, with E4 / S4 = 4.6 pJ * macs4 / syn4
    # layer 2: dE/ds_bi = 0.9 pJ * fan2_i / B, and ds/dz = 1 (straight-through); relu passes where h > 0
    with torch.no_grad():
        B = 2
        g_h = (4.6 * PJ * macs4 / syn4) * fan4.expand(B, -1) / B * torch.sign(h)
        g_s = 0.9 * PJ * fan2.expand(B, -1) / B + (g_h * (h > 0)) @ net[2].weight.double()
        g_W0 = g_s.T @ x.double()
        g_W2 = (g_h * (h > 0)).T @ s1
    assert torch.allclose(net[0].weight.grad.double(), dL_dE * g_W0, rtol=1e-4, atol=0)
    assert torch.allclose(net[2].weight.grad.double(), dL_dE * g_W2, rtol=1e-4, atol=1e-30)
    assert out.shape == (2, 2)


def test_energy_loss_targets_fraction_and_schedules_like_synops_loss():
    net = _snn_net()
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.EnergyLoss(counter, fraction=sl.schedules.Linear(1.0, 0.5, steps=2), energy="lemaire2022",
                            shape="hinge")
    _run_snn(net, counter)
    first = _quiet(loss_fn)
    e0 = loss_fn.value()
    assert float(first.detach()) == 0.0 and loss_fn.initial()["driven"] == pytest.approx(e0)
    loss_fn.step(); loss_fn.step()
    counter.reset()
    _run_snn(net, counter)
    term = _quiet(loss_fn)
    e1 = loss_fn.value()
    assert loss_fn.targets()["driven"] == pytest.approx(0.5 * e0)
    assert float(term.detach()) == pytest.approx(max(0.0, (e1 - 0.5 * e0) / (0.5 * e0)), rel=1e-5)
    last = loss_fn.last()
    assert last["unit"] == "J" and last["target"] == pytest.approx(0.5 * e0) and last["value"] == pytest.approx(e1)


def test_non_spiking_device_is_refused_and_energy_model_is_required():
    net = _snn_net()
    counter = sl.SynOpsCounter(net)
    with pytest.raises(ValueError, match="does not depend on activity"):
        sl.EnergyLoss(counter, target=1.0, energy="gpu")
    with pytest.raises(ValueError, match="needs an energy model"):
        sl.EnergyLoss(counter, target=1.0, energy=None)


def test_value_and_last_name_what_synops_loss_regularises():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    counter = sl.SynOpsCounter(net)
    x = torch.rand(4, 5)
    loss_fn = sl.SynOpsLoss(counter, target=10.0)
    with pytest.raises(RuntimeError, match="call the loss first"):
        loss_fn.value()
    net(x)
    term = _quiet(loss_fn)
    h = torch.relu(net[0](x)).detach()
    s2 = float(h.abs().sum(1).mean() * 3)  # every weight of layer 2 nonzero: fan-out 3
    assert loss_fn.value() == pytest.approx(s2, rel=1e-6)
    assert loss_fn.value(by_layer=True) == pytest.approx({"2": s2}, rel=1e-6)
    last = loss_fn.last()
    assert last["terms"]["driven"]["target"] == 10.0
    assert last["terms"]["driven"]["relative_error"] == pytest.approx((s2 - 10) / 10, rel=1e-6)
    assert last["loss"] == pytest.approx(float(term.detach())) == pytest.approx(((s2 - 10) / 10) ** 2, rel=1e-5)
    assert counter.synops().item() > loss_fn.value()  # the counter's total includes the data-fed layer


def test_target_far_below_the_measured_value_names_fraction_vs_target():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    counter = sl.SynOpsCounter(net)
    net(torch.rand(4, 20))
    loss_fn = sl.SynOpsLoss(counter, target=0.1)
    with pytest.warns(LossScaleWarning) as rec:
        loss_fn()
    text = " ".join(str(w.message) for w in rec)
    s = loss_fn.value()
    assert s > 100 * 0.1  # the target is below 1% of the measured synops
    assert "fraction=0.1 instead of target=0.1" in text and "below 1%" in text
    assert "more than 100x" in text  # the first term ((s - 0.1) / 0.1)**2 is huge
    counter.reset()
    net(torch.rand(4, 20))
    small = sl.SynOpsLoss(counter, fraction=0.005)
    with pytest.warns(LossScaleWarning) as rec:
        small()
    assert any("fraction=0.005 asks for 0.50%" in str(w.message) for w in rec)


def test_first_term_compared_with_the_given_task_loss():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    counter = sl.SynOpsCounter(net)
    net(torch.rand(4, 6))
    s = counter.synops(by_layer=True)["2"].item()
    loss_fn = sl.SynOpsLoss(counter, target=s / 5)  # r = 4: first term 16
    with warnings.catch_warnings():
        warnings.simplefilter("error", LossScaleWarning)
        _quiet_unreachable_only(loss_fn)  # 16 < 100 x 1.0: no warning
    counter.reset()
    net(torch.rand(4, 6))
    loss2 = sl.SynOpsLoss(counter, target=s / 5)
    with pytest.warns(LossScaleWarning, match="more than 100x the task loss"):
        _quiet_unreachable_only(loss2, task_loss=torch.tensor(0.01))


def _quiet_unreachable_only(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreachableTargetWarning)
        return fn(*args, **kwargs)


def test_nan_reaching_the_loss_raises_the_counters_error():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    counter = sl.SynOpsCounter(net)
    net(torch.tensor([[1.0, float("nan"), 0.0]]))
    with pytest.raises(FloatingPointError) as from_counter:
        counter.synops()
    for loss_fn in (sl.SynOpsLoss(counter, target=1.0), sl.EnergyLoss(counter, target=1e-12)):
        with pytest.raises(FloatingPointError) as from_loss:
            loss_fn()
        assert str(from_loss.value) == str(from_counter.value)


def test_lightning_regularizer_trains_against_energy():
    L = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from synopsloss.lightning import SynOpsRegularizer

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
            self.reg = SynOpsRegularizer(fraction=0.5, energy="horowitz45nm", weight=0.1)

        def configure_callbacks(self):
            return [self.reg]

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.energy_seen = None
            term = self.reg.loss()
            table = self.reg.counter.table(energy="horowitz45nm")
            self.energy_seen = (self.reg.loss_fn.value(), table["net.2"].energy)
            return loss + term

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    g = torch.Generator().manual_seed(0)
    ds = TensorDataset((torch.rand(8, 6, generator=g) < 0.5).float(), torch.randint(0, 3, (8,), generator=g))
    m = Module()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, logger=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(m, DataLoader(ds, batch_size=4))
    value, table_energy = m.energy_seen
    assert value == pytest.approx(table_energy, rel=1e-12)
    assert isinstance(m.reg.loss_fn, sl.EnergyLoss)
    assert m.reg.last_metrics["synops/train/energy_step"] == pytest.approx(value, rel=1e-9)


def test_a_silent_layer_keeps_its_gradient_priced_at_its_next_synop():
    """No spike reaches layer 2 (E/S is undefined there): its term had no gradient, so an energy target above it
    could not raise it. Priced at one AC (0.9 pJ under horowitz45nm), the gradient is SynOpsLoss's for the target
    in synops."""
    import snntorch as snn
    from snntorch import surrogate, utils

    def build():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(4, 6, bias=False), snn.Leaky(beta=0.8, init_hidden=True, threshold=5.0,
                                                   spike_grad=surrogate.fast_sigmoid()),
            nn.Linear(6, 3, bias=False), snn.Leaky(beta=0.8, init_hidden=True, threshold=5.0,
                                                   spike_grad=surrogate.fast_sigmoid()))

    x = torch.rand(3, 2, 4)
    grads = []
    for make in (lambda c: sl.SynOpsLoss(c, target=10.0, shape="squared"),
                 lambda c: sl.EnergyLoss(c, target=10 * 0.9e-12, energy="horowitz45nm", shape="squared")):
        net = build()
        counter = sl.SynOpsCounter(net)
        loss_fn = make(counter)
        utils.reset(net)
        for t in range(3):
            net(x[t])
        assert counter.synops(by_layer=True)["2"].item() == 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sl.UnreachableTargetWarning)
            term = loss_fn()
        assert term.requires_grad
        term.backward()
        grads.append(net[0].weight.grad.clone())
        counter.remove()
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[1], grads[0], rtol=1e-5, atol=0)


def test_layer_names_are_checked_twice_named_and_priced():
    """A layer named twice would be priced twice (the loss was (2E - t)/t); a module without energy in the table
    (a ReLU) raised a bare KeyError at the first call."""
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    counter = sl.SynOpsCounter(net)
    with pytest.raises(ValueError, match=r"names layer\(s\) \['2'\] more than once"):
        sl.EnergyLoss(counter, target=1e-12, energy="horowitz45nm", layers=["2", "2"])
    loss = sl.EnergyLoss(counter, target=1e-12, energy="horowitz45nm", layers=["1"])
    net(torch.rand(4, 4))
    with pytest.raises(ValueError, match=r"layer\(s\) \['1'\] have no energy in this batch's table .* \['0', '2'\]"):
        loss()


def test_a_second_call_in_a_calibrating_batch_gives_the_first_calls_target():
    """fraction= calibrates over 3 batches: read twice per batch (to log, to train), each batch counts once; the
    target at batch k is the fraction of the per-sample mean over batches 0..k (by hand)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    counter = sl.SynOpsCounter(net, neurons=False)
    loss = sl.SynOpsLoss(counter, fraction=0.5, calibration_batches=3)
    sums, samples = 0.0, 0
    for b, n in enumerate((4, 2, 3)):
        counter.reset()
        x = torch.rand(n, 4) * (1 + b)
        net(x)
        h = torch.relu(net[0](x)).detach().double()
        s = float((h * (net[2].weight != 0).sum(0)).sum()) / n  # layer 2 per sample, by hand
        sums, samples = sums + s * n, samples + n
        first, second = _quiet(loss), _quiet(loss)
        assert loss.last()["target"] == pytest.approx(0.5 * sums / samples)
        assert float(first) == pytest.approx(float(second))


@pytest.mark.parametrize("fraction, warns", [(0.3, True), (0.9, False)])
def test_a_target_below_the_neuron_energy_without_gradient_is_named(fraction, warns):
    """loihi-davies2018 prices every neuron update: the default layers' energy has a part without gradient (the
    neuron rows). A target below it could only be approached by silencing the synaptic layers (training drove
    layer '2' to 0 J, with no warning). Reference: the neuron rows' energy in the counter's own table, by hand."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 64), snn.Leaky(beta=0.8, init_hidden=True), nn.Linear(64, 64),
                        snn.Leaky(beta=0.8, init_hidden=True), nn.Linear(64, 3))
    with torch.no_grad():
        net[0].bias.fill_(0.2)
    x = (torch.rand(4, 5, 8, generator=torch.Generator().manual_seed(3)) < 0.3).float()
    counter = sl.SynOpsCounter(net)
    loss_fn = sl.EnergyLoss(counter, fraction=fraction, energy="loihi-davies2018")
    snn_utils.reset(net)
    for t in range(5):
        net(x[:, t])
    table = counter.table(energy="loihi-davies2018")
    neurons = table["1"].energy + table["3"].energy
    driven = neurons + table["2"].energy + table["4"].energy
    assert (fraction * driven <= neurons) == warns  # the case is what it claims to be
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loss_fn()
    said = [str(w.message) for w in seen if "no gradient for" in str(w.message)]
    assert len(said) == int(warns)
    if warns:
        assert f"({neurons:.6g} J" in said[0] and "['1', '3']" in said[0]
