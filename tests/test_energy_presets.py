"""Cited presets, the break-even column against the equivalent quantised ANN, and calibrate() on synthetic runs."""

from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
from snntorch import utils as snn_utils
from torch import nn

import synopsloss as sl
from synopsloss.calibration import break_even, calibrate
from synopsloss.energy import (ENERGY_PRESETS, FIDELITIES, break_even_rate, get_energy_model, register_device,
                               register_preset)

PJ = 1e-12


def test_every_preset_is_cited_with_year_node_and_fidelity():
    for name, model in ENERGY_PRESETS.items():
        p = model.provenance()
        assert p["name"] == name
        assert p["source"] and isinstance(p["year"], int) and 2010 <= p["year"] <= 2030, name
        assert p["node"], name
        assert p["fidelity"] in FIDELITIES, name
    assert ENERGY_PRESETS["loihi-davies2018"].fidelity == "simulated"
    assert ENERGY_PRESETS["horowitz45nm-int8"].e_mac == pytest.approx((0.2 + 0.03) * PJ)
    assert ENERGY_PRESETS["horowitz45nm-fp16"].e_mac == pytest.approx((1.1 + 0.4) * PJ)


def test_uncited_user_presets_are_refused():
    with pytest.raises(ValueError, match="needs source="):
        register_device("uncited-chip", 1e-12, 1e-12, spiking=True)
    with pytest.raises(ValueError, match="needs source="):
        register_preset(sl.OpEnergy("uncited-op", 1e-12, 2e-12))
    assert "uncited-chip" not in ENERGY_PRESETS and "uncited-op" not in ENERGY_PRESETS
    m = register_preset(sl.OpEnergy("cited-op", 1e-12, 2e-12, source="my bench, 2026"))
    try:
        assert get_energy_model("cited-op") is m
    finally:
        ENERGY_PRESETS.pop("cited-op")


def test_loihi_davies_prices_synops_neuron_updates_and_output_spikes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5, bias=False), snn.Leaky(beta=0.5, init_hidden=True))
    with torch.no_grad():
        net[0].weight.abs_().add_(0.3)
    counter = sl.SynOpsCounter(net)
    spikes = []
    h = net[1].register_forward_hook(lambda m, a, o: spikes.append(o.detach()))
    x = (torch.rand(3, 4, 4) < 0.6).float()
    snn_utils.reset(net)
    for t in range(4):
        net(x[:, t])
    h.remove()
    table = counter.table(energy="loihi-davies2018")
    synops = float(x.sum() * 5 / 3)
    n_spikes = float(torch.stack(spikes).sum() / 3)
    assert table.total.energy == pytest.approx(synops * 23.6 * PJ + 4 * 5 * 81 * PJ + n_spikes * 1.7 * PJ)
    assert table["1"].energy_parts["spikes"] == pytest.approx(n_spikes * 1.7 * PJ)


def test_break_even_rate_by_hand():
    """Linear(4, 3) fed spikes for T=5 steps: r* = e_mac_ann / (T * e_ac) when every weight is nonzero."""
    net = nn.Sequential(nn.Linear(4, 3, bias=False))
    counter = sl.SynOpsCounter(net)
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    for t in range(5):
        net(x if t % 2 == 0 else torch.zeros(2, 4))
    table = break_even(counter.table(energy="horowitz45nm"), ann="horowitz45nm-int8")
    row = table["0"]
    events = 3 * (2 + 1) / 2  # steps 0, 2, 4: 2 + 1 nonzero inputs over 2 samples
    assert row.in_rate == pytest.approx(events / (4 * 5))
    assert row.energy == pytest.approx(events * 3 * 0.9 * PJ)
    assert row.ann_energy == pytest.approx(12 * 0.23 * PJ)  # dense per step, one MAC each
    assert row.break_even_rate == pytest.approx(0.23 / (5 * 0.9))
    assert row.break_even_rate == pytest.approx(break_even_rate(5, 0.9 * PJ, 0.23 * PJ))
    assert (row.in_rate < row.break_even_rate) == (row.energy < row.ann_energy)
    assert "Break-even" in table.render("break_even")
    with pytest.raises(ValueError, match="energy column"):
        break_even(counter.table(energy=None))


def test_break_even_against_an_ann_that_skips_zero_activations_and_analog_rows():
    net = nn.Sequential(nn.Linear(2, 2, bias=False))
    counter = sl.SynOpsCounter(net)
    for t in range(2):
        net(torch.tensor([[0.5, 0.0]]))  # analog input: MACs, no break-even
    row = break_even(counter.table(energy="horowitz45nm"))["0"]
    assert row.break_even_rate is None and row.ann_energy is None
    counter.reset()
    for t in range(2):
        net(torch.tensor([[1.0, 0.0]]))
    row = break_even(counter.table(energy="horowitz45nm"), "horowitz45nm-fp16", ann_density=0.5)["0"]
    assert row.ann_energy == pytest.approx(4 * 0.5 * 1.5 * PJ)
    assert row.break_even_rate == pytest.approx(row.in_rate * row.ann_energy / row.energy)


def _snapshots(n_runs=6):
    """Runs with different input rates and an analog first layer: ACs, MACs, neuron updates and spikes vary."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6, bias=False), snn.Leaky(beta=0.6, init_hidden=True),
                        nn.Linear(6, 4, bias=False), snn.Leaky(beta=0.6, init_hidden=True))
    with torch.no_grad():
        net[0].weight.abs_().add_(0.2)
    counter = sl.SynOpsCounter(net)
    snaps = []
    for i in range(n_runs):
        counter.reset()
        g = torch.Generator().manual_seed(i)
        steps = 2 + i % 3
        batch = 1 + i % 2
        scale = 0.3 + 0.3 * i
        snn_utils.reset(net)
        for t in range(steps):
            net(torch.rand(batch, 5, generator=g) * scale * (torch.rand(batch, 5, generator=g) < 0.7))
        snaps.append(counter.snapshot())
    return snaps


def test_calibrate_recovers_known_costs_from_synthetic_measurements():
    snaps = _snapshots()
    true = {"eff_acs": 0.7 * PJ, "eff_macs": 3.1 * PJ, "neuron_updates": 20 * PJ, "spikes": 5 * PJ}
    truth = sl.CountEnergy("truth", true, source="synthetic")
    joules = [sum(truth.energy(r) or 0 for r in sl.report.build_table(s, energy=None)) * s.samples for s in snaps]
    fit = calibrate(snaps, joules)
    assert set(fit.features) == set(true)
    for k, v in true.items():
        assert fit.model.costs[k] == pytest.approx(v, rel=1e-6)
    assert max(abs(r) for r in fit.relative_residuals) < 1e-9
    # the fitted preset prices a table like the truth
    t_fit = sl.report.build_table(snaps[0], energy=fit.model)
    assert t_fit.total.energy * snaps[0].samples == pytest.approx(joules[0], rel=1e-6)
    # 0.1% meter noise: costs within 20%, residuals at the noise level and reported
    rng = np.random.default_rng(0)
    noisy = [j * (1 + 0.001 * rng.standard_normal()) for j in joules]
    fit2 = calibrate(snaps, noisy)
    for k, v in true.items():
        assert fit2.model.costs[k] == pytest.approx(v, rel=0.2)
    assert max(abs(r) for r in fit2.relative_residuals) < 0.005
    assert fit2.residuals == pytest.approx([m - p for m, p in zip(noisy, fit2.predicted)])
    assert fit2.model.fidelity == "fitted" and "least squares" in fit2.model.source


def test_calibrate_refuses_what_cannot_be_fitted():
    snaps = _snapshots(3)
    with pytest.raises(ValueError, match="at least as many runs"):
        calibrate(snaps, [1e-9, 2e-9, 3e-9])
    with pytest.raises(ValueError, match="one measurement per snapshot"):
        calibrate(snaps, [1e-9])
    with pytest.raises(ValueError, match="linearly dependent"):
        calibrate([snaps[0], snaps[0]], [1e-9, 1e-9], features=["eff_acs", "spikes"])
    with pytest.raises(ValueError, match="unknown features"):
        calibrate(snaps, [1e-9] * 3, features=["flops"])
    with pytest.raises(ValueError, match="finite"):
        calibrate(snaps, [1e-9, float("nan"), 1e-9])
