"""Energy presets: each computed by hand from the counted operations and the cited constants."""

from __future__ import annotations

import warnings

import pytest
import snntorch as snn
import torch
from snntorch import utils as snn_utils
from torch import nn

import synopsloss as sl
from synopsloss.energy import ENERGY_PRESETS, Lemaire2022, get_energy_model, register_device

PJ = 1e-12


def _mixed_net():
    """An analog first layer (MACs) and a spiking second one (ACs)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6, bias=False), snn.Leaky(beta=0.5, init_hidden=True),
                        nn.Linear(6, 3, bias=False), snn.Leaky(beta=0.5, init_hidden=True))
    with torch.no_grad():
        net[0].weight.abs_().add_(0.5)  # positive drive, so the first neurons spike
        net[2].weight[0, 0] = 0
    return net


def _run(energy):
    net = _mixed_net()
    counter = sl.SynOpsCounter(net)
    x = torch.rand(2, 5, 4) + 0.5
    spikes = []
    h = net[1].register_forward_hook(lambda m, a, o: spikes.append(o.detach()))
    snn_utils.reset(net)
    for t in range(5):
        net(x[:, t])
    h.remove()
    return net, x, torch.stack(spikes), counter.table(energy=energy)


def test_horowitz_preset_prices_macs_and_acs_at_45nm():
    net, x, s1, table = _run("horowitz45nm")
    macs = 5 * 4 * 6  # every analog input reaches 6 nonzero weights, per sample and step
    acs = float((s1.double() * (net[2].weight != 0).sum(0)).sum() / 2)
    assert table["0"].eff_macs == pytest.approx(macs) and table["2"].eff_acs == pytest.approx(acs)
    assert table["0"].energy == pytest.approx(macs * 4.6 * PJ)
    assert table["2"].energy == pytest.approx(acs * 0.9 * PJ)
    assert table.total.energy == pytest.approx(macs * 4.6 * PJ + acs * 0.9 * PJ)
    assert table["1"].energy is None  # neuron updates are not priced by this preset


@pytest.mark.parametrize("device,e_syn,e_neuron,spiking", [
    ("cpu", 8.6e-9, 8.6e-9, False), ("gpu", 0.3e-9, 0.3e-9, False), ("arm", 0.9e-9, 0.9e-9, False),
    ("loihi", 27.1e-12, 81e-12, True), ("spinnaker", 13.3e-9, 26e-9, True), ("spinnaker2", 450e-12, 2.19e-9, True),
])
def test_kerasspiking_device_profiles(device, e_syn, e_neuron, spiking):
    net, x, s1, table = _run(device)
    synops0 = float((x.double().abs() * 6).sum() / 2)  # input value x fan-out 6
    synops2 = float((s1.double() * (net[2].weight != 0).sum(0)).sum() / 2)
    dense = 5 * (4 * 6 + 6 * 3)
    neuron_updates = 5 * (6 + 3)
    syn = (synops0 + synops2) if spiking else dense
    assert table.total.energy == pytest.approx(syn * e_syn + neuron_updates * e_neuron)
    assert table["3"].energy == pytest.approx(5 * 3 * e_neuron)
    assert ENERGY_PRESETS[device].source


def test_lemaire_model_terms():
    net, x, s1, table = _run("lemaire2022")
    e_add, e_mul = 0.1 * PJ, 3.1 * PJ
    mem = lambda words: (1.09e-5 * words * 32 + 13.2) * PJ  # noqa: E731
    acs = float((s1.double() * (net[2].weight != 0).sum(0)).sum() / 2)
    events = float((s1 != 0).double().sum() / 2)
    p = table["2"].energy_parts
    assert p["ops"] == pytest.approx(acs * e_add)
    assert p["addressing"] == pytest.approx(acs * e_add)
    assert p["mem_weights"] == pytest.approx(acs * mem(18))
    assert p["mem_potentials"] == pytest.approx(2 * acs * mem(3))
    assert p["mem_io"] == pytest.approx(events * mem(6))
    macs = 5 * 4 * 6
    assert table["0"].energy_parts["ops"] == pytest.approx(macs * (e_mul + e_add))
    n1 = table["1"].energy_parts
    spikes = float(s1.double().sum() / 2)
    assert n1["ops"] == pytest.approx(30 * e_add + 30 * (e_mul + e_add) + spikes * e_add)
    assert n1["mem_potentials"] == pytest.approx(2 * 30 * mem(6))
    assert n1["mem_io"] == pytest.approx(spikes * mem(6))
    assert table.total.energy == pytest.approx(sum(sum(r.energy_parts.values()) for r in table))
    assert Lemaire2022(bits=8).e_mem(100) == pytest.approx((1.09e-5 * 800 + 13.2) * PJ)


def test_user_devices_and_custom_energies():
    dev = register_device("test-chip", 2e-12, 3e-12, spiking=True, source="datasheet")
    try:
        net, x, s1, table = _run("test-chip")
        ref = sl.DeviceEnergy("ref", 2e-12, 3e-12, True)
        assert table.total.energy == pytest.approx(sum(ref.energy(r) or 0 for r in table))
        with pytest.raises(ValueError, match="already exists"):
            register_device("test-chip", 1, 1, True)
    finally:
        ENERGY_PRESETS.pop("test-chip")
    _, _, _, t2 = _run({"e_ac": 1e-12, "e_mac": 2e-12})
    assert t2.total.energy == pytest.approx(t2.total.eff_acs * 1e-12 + t2.total.eff_macs * 2e-12)
    _, _, _, t3 = _run(sl.OpEnergy("mine", 0.0, 0.0, e_neuron_op=1e-12))
    assert t3.total.energy == pytest.approx(t3.total.neuron_ops * 1e-12)
    assert dev.spiking and dev.source == "datasheet"


def test_unknown_energy_preset_is_named():
    with pytest.raises(ValueError, match="unknown energy preset 'tpu'.*loihi"):
        get_energy_model("tpu")
    with pytest.raises(ValueError, match="e_ac"):
        get_energy_model({"e_mac": 1.0})


@pytest.mark.parametrize("bad", [-1e-12, float("nan"), float("inf")])
def test_negative_or_nan_energies_are_refused(bad):
    """A negative or NaN energy would give a silently wrong total: every way of giving one is refused."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    counter = sl.SynOpsCounter(net, neurons=False)
    net(torch.ones(1, 2))
    with pytest.raises(ValueError, match="energies must be finite joules >= 0"):
        counter.table(energy={"e_ac": bad, "e_mac": 4.6e-12})
    with pytest.raises(ValueError, match="energies must be finite joules >= 0"):
        sl.OpEnergy("bad", 0.9e-12, bad)
    with pytest.raises(ValueError, match="energies must be finite joules >= 0"):
        register_device("bad-device-test", bad, 1e-12, spiking=True, source="a test")
    assert "bad-device-test" not in ENERGY_PRESETS


def _lemaire_mem(words: float) -> float:
    return (1.09e-5 * words * 32 + 13.2) * PJ


def test_lemaire_conv_addressing_bias_reads_and_count_events_follow_the_paper():
    """Eq. 16.2 (a conv event's position: 2 x (mul + add)), Eq. 7s (each output's bias read at every step) and
    one input read per event of a count (a count of 3 is 3 reads, as its 3 x fan-out ACs): all missing before."""
    e_add, e_mul = 0.1 * PJ, 3.1 * PJ
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3, padding=1)
    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, 1, 2], x[1, 0, 0, 0] = 3.0, 1.0  # a count of 3 and a spike: 4 events over 2 samples
    counter = sl.SynOpsCounter(nn.Sequential(conv), neurons=False)
    counter.model(x)
    p = counter.table(energy="lemaire2022")["0"].energy_parts
    fan = torch.zeros(1, 1, 4, 4, requires_grad=True)
    torch.nn.functional.conv2d(fan, (conv.weight != 0).float(), None, 1, 1).sum().backward()
    acs = float((x * fan.grad).sum()) / 2
    events = 4 / 2
    assert p["addressing"] == pytest.approx(acs * e_add + 2 * events * (e_mul + e_add))
    assert p["mem_bias"] == pytest.approx(2 * 16 * 1 * _lemaire_mem(2))  # Nout x T x E_mem(2 biases)
    assert p["mem_io"] == pytest.approx(events * _lemaire_mem(16))
    assert p["ops"] == pytest.approx(acs * e_add)


def test_lemaire_charges_no_leak_to_a_neuron_that_does_not_decay():
    e_add, e_mul = 0.1 * PJ, 3.1 * PJ
    for beta, leak in ((1.0, False), (0.9, True)):
        net = nn.Sequential(nn.Linear(3, 2, bias=False), snn.Leaky(beta=beta, init_hidden=True))
        counter = sl.SynOpsCounter(net)
        snn_utils.reset(net)
        out = net(torch.ones(1, 3))
        row = counter.table(energy="lemaire2022")["1"]
        spikes = float(out.sum())
        want = 2 * e_add + (2 * (e_mul + e_add) if leak else 0.0) + spikes * e_add
        assert row.energy_parts["ops"] == pytest.approx(want), beta


def test_break_even_prices_the_ann_by_lemaires_formal_equations():
    """No potentials in a formal network: inputs read (Eq. 4), weights read per MAC (Eq. 6.2f), biases (6.2s),
    outputs written (Eq. 12), Nin x Nout address adds; before, the spiking equations (2x with potentials)."""
    from synopsloss.calibration import break_even

    e_add, e_mul = 0.1 * PJ, 3.1 * PJ
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.5, init_hidden=True))
    counter = sl.SynOpsCounter(net)
    snn_utils.reset(net)
    for _ in range(5):
        net((torch.rand(2, 4) < 0.5).float())
    row = break_even(counter.table(energy="horowitz45nm"), ann="lemaire2022")["0"]
    macs, nin, nout = 12.0, 4.0, 3.0
    want = (macs * (e_mul + e_add) + nout * e_add + macs * _lemaire_mem(12) + nout * _lemaire_mem(3)
            + nin * _lemaire_mem(nin) + nout * _lemaire_mem(nout) + nin * nout * e_add)
    assert row.ann_energy == pytest.approx(want)


@pytest.mark.parametrize("bad", ["1e-12", True, float("nan"), -1.0])
def test_count_energy_refuses_costs_that_are_no_joules(bad):
    """A string failed only inside table(); True was priced at 1 J per op."""
    with pytest.raises(ValueError, match=r"CountEnergy costs: energies must be finite joules >= 0"):
        sl.CountEnergy("fit", {"eff_acs": bad})


def test_lemaire_counts_every_token_of_a_sample_as_input_events_and_bias_reads():
    """A Linear(4, 3) fed spike counts as tokens [B=2, N=5, C=4]: mem_io reads one input per event of every token
    (x.sum() / B, a count of k as k events; it was per token row: 5x too few) and mem_bias one bias per output
    value (N * Nout per sample, not Nout)."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 3, (2, 5, 4), generator=g).float()  # counts 0..2: events
    counter = sl.SynOpsCounter(lin, batch_dim=0)
    lin(x)
    row = counter.table(energy="lemaire2022")[""]  # (the model is the layer: its name is "")
    events = float(x.sum()) / 2
    assert row.energy_parts["mem_io"] == pytest.approx(events * _lemaire_mem(4))
    assert row.energy_parts["mem_bias"] == pytest.approx(5 * 3 * _lemaire_mem(3))


def _lemaire_bias_layer(density: float):
    torch.manual_seed(0)
    lin = nn.Linear(512, 8)
    g = torch.Generator().manual_seed(2)
    counter = sl.SynOpsCounter(lin)
    for _ in range(4):  # 4 time steps of spikes
        lin((torch.rand(8, 512, generator=g) < density).float())
    return counter.table(energy="lemaire2022")


def test_break_even_rate_is_where_an_affine_energy_meets_the_ann():
    """With a bias the Lemaire energy is affine in the input rate (a bias read per output whatever the rate): the
    break-even rate is where the line through two measured rates meets the ANN's energy (it was in_rate *
    E_ann / E, as if the energy were proportional); a dense-priced device never gets cheaper: 0.0."""
    from synopsloss.calibration import break_even

    lo, hi = _lemaire_bias_layer(0.1), _lemaire_bias_layer(0.4)
    (r1, e1), (r2, e2) = ((t[""].in_rate, t[""].energy) for t in (lo, hi))
    be = break_even(lo, "horowitz45nm-int8")[""]
    assert be.break_even_rate > 0
    want = r1 + (be.ann_energy - e1) * (r2 - r1) / (e2 - e1)  # the line through the two measurements
    assert be.break_even_rate == pytest.approx(want, rel=1e-6)
    assert be.break_even_rate == pytest.approx(break_even(hi, "horowitz45nm-int8")[""].break_even_rate, rel=1e-6)
    torch.manual_seed(0)
    lin = nn.Linear(64, 16)
    counter = sl.SynOpsCounter(lin)
    lin((torch.rand(8, 64) < 0.2).float())
    assert break_even(counter.table(energy="cpu"), "horowitz45nm-int8")[""].break_even_rate == 0.0


def test_device_spiking_must_be_a_bool_and_custom_energies_nonnegative():
    with pytest.raises(TypeError, match="spiking must be True .* got str 'False'"):
        register_device("str-spiking-doc", 1e-12, 1e-12, "False", source="test")
    assert "str-spiking-doc" not in ENERGY_PRESETS
    with pytest.raises(TypeError, match="spiking must be True"):
        sl.DeviceEnergy("dev-doc", 1e-12, 1e-12, 0)

    class Negative(sl.EnergyModel):
        name, source = "negative-doc", "test"

        def parts(self, row):
            return {"synaptic": -1e-12}

    lin = nn.Linear(2, 2)
    counter = sl.SynOpsCounter(lin)
    lin(torch.ones(1, 2))
    with pytest.raises(ValueError, match="gave the row .* the parts \\{'synaptic': -1e-12\\}"):
        counter.table(energy=Negative())


def test_break_even_of_a_table_priced_by_an_unregistered_model():
    """A table priced by an EnergyModel of yours that is no preset: break_even prices it with that model (it looked
    the model up by name and raised). OpEnergy on both sides: e_mac_ann / (T * e_ac), by hand."""
    from synopsloss.calibration import break_even

    net = nn.Sequential(nn.Linear(4, 3, bias=False))
    counter = sl.SynOpsCounter(net)
    for _ in range(5):
        net(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    mine = sl.OpEnergy("mine-not-registered", e_ac=0.9e-12, e_mac=4.6e-12, source="test")
    table = counter.table(energy=mine)
    ann = sl.OpEnergy("ann-int8-test", e_ac=0.03e-12, e_mac=0.23e-12, source="test")
    row = break_even(table, ann)["0"]
    assert row.break_even_rate == pytest.approx(0.23e-12 / (5 * 0.9e-12))


def test_a_table_of_a_counter_without_neuron_statistics_names_the_neuron_energy_it_leaves_out():
    """SynOpsCounter(neurons=False).table(energy="loihi") gave 45% less energy than the same network's full table
    (the Leaky row's updates gone), silently. By hand: the missing part is the neuron row's energy."""
    import snntorch as snn
    from snntorch import utils

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), snn.Leaky(beta=0.9, init_hidden=True), nn.Linear(6, 3))
    x = (torch.rand(4, 5, 8, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    tables = {}
    for neurons in (True, False):
        counter = sl.SynOpsCounter(net, neurons=neurons)
        utils.reset(net)
        for t in range(5):
            net(x[:, t])
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            tables[neurons] = counter.table(energy="loihi")
        said = [str(w.message) for w in seen if "leaves out the neuron layers ['1']" in str(w.message)]
        assert len(said) == (0 if neurons else 1)
        counter.remove()
    assert tables[True].total.energy - tables[False].total.energy == pytest.approx(tables[True]["1"].energy)
