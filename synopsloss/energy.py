"""Energy estimates from exact operation counts: named presets and user devices.

Every model turns one table row (a layer's per-sample counts, see
:class:`synopsloss.table.LayerRow`) into energy parts in joules per sample;
the table sums them per layer and in total. Presets (``energy=`` of
:meth:`SynOpsCounter.table`):

``"horowitz45nm"`` (default) -- :class:`OpEnergy`
    0.9 pJ per effective AC and 4.6 pJ per effective MAC: 32-bit float add
    (0.9 pJ) and multiply (3.7 pJ) + add at 45 nm, M. Horowitz, "Computing's
    energy problem (and what we can do about it)", ISSCC 2014. The figures SNN
    papers use. Synaptic operations only (neuron updates and memory are not
    counted; pass ``e_neuron_op`` to add the neuron operations).

``"lemaire2022"`` -- :class:`Lemaire2022`
    The analytical model of E. Lemaire, L. Cordone, A. Castagnetti, P.-E.
    Novac, J. Courtois, B. Miramond, "An Analytical Estimation of Spiking Neural
    Networks Energy Efficiency", ICONIP 2022 (doi:10.1007/978-3-031-30105-6_48),
    as implemented by Qualia's ``EnergyEstimationMetric`` /
    ``OperationCounter``: synaptic operations, event addressing and memory
    reads/writes, with its constants: ``E_add = 0.1 pJ`` and ``E_mul = 3.1 pJ``
    (45 nm int32, Horowitz 2014) and a 45 nm SRAM access of ``1.09e-5 * words *
    bits + 13.2`` pJ for a memory of ``words`` entries of ``bits`` bits. Where
    Lemaire estimates events as rate x fan-out, we use the exact effective
    counts (see the class docstring for each term).

``"cpu"``, ``"gpu"``, ``"arm"``, ``"loihi"``, ``"spinnaker"``, ``"spinnaker2"`` -- :class:`DeviceEnergy`
    The device profiles of KerasSpiking's ``ModelEnergy`` (energy per synop and
    per neuron update):

    ==========  =======  =================  ==================  =====================================
    device      spiking  J per synop        J per neuron update source
    ==========  =======  =================  ==================  =====================================
    cpu         no       8.6e-9             8.6e-9              Degnan et al. 2016, Intel i7-4960X
    gpu         no       0.3e-9             0.3e-9              Degnan et al. 2016, Nvidia GTX Titan Black
    arm         no       0.9e-9             0.9e-9              Degnan et al. 2016, ARM Cortex-A
    loihi       yes      (23.6 + 3.5)e-12   81e-12              Davies et al. 2018, IEEE Micro 38(1)
    spinnaker   yes      13.3e-9            26e-9               Hoppner et al. 2019, IEEE TCAS-I 66(8)
    spinnaker2  yes      450e-12            2.19e-9             Hoppner et al. 2019, IEEE TCAS-I 66(8)
    ==========  =======  =================  ==================  =====================================

    A spiking device spends energy per synop (spike event x fan-out, our
    ``synops``) and per neuron update; a non-spiking one computes every
    synapse and every neuron at every time step (our ``dense`` count and
    neurons x time steps), whatever the input.

User devices: :func:`register_device` (name -> :class:`DeviceEnergy`), or pass
any :class:`EnergyModel` instance (or a ``{"e_ac": J, "e_mac": J}`` dict).

Assumptions (all presets): energy of the counted operations only -- no
static/leakage power, no off-chip traffic, no control overhead; neuron
updates are attributed to the neuron (or activation) layers; a model without
neuron layers has no neuron energy.

Example
-------
>>> from synopsloss.energy import get_energy_model
>>> get_energy_model("horowitz45nm").e_ac
9e-13
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Union

__all__ = [
    "EnergyModel",
    "OpEnergy",
    "DeviceEnergy",
    "Lemaire2022",
    "CountEnergy",
    "register_device",
    "register_preset",
    "get_energy_model",
    "ENERGY_PRESETS",
    "FIDELITIES",
    "COUNT_FEATURES",
    "row_features",
    "break_even_rate",
    "prices_neurons",
]

PJ = 1e-12


#: The fidelity labels of a preset's figures.
FIDELITIES = ("published per-op figure", "simulated", "measured", "estimate", "fitted", "user")


class EnergyModel:
    """Base class: ``parts(row) -> {part: joules per sample}`` for one table row.

    Subclasses are dataclasses with ``name`` and the provenance fields
    ``source`` (citation), ``year``, ``node`` (process node) and ``fidelity``
    (one of :data:`FIDELITIES`), plus free ``notes`` (what was not verified,
    what the figure leaves out).
    """

    # subclasses define ``name``, ``source``, ``year``, ``node``, ``fidelity``, ``notes`` (dataclass fields)

    def provenance(self) -> Dict[str, Any]:
        """``{"name", "source", "year", "node", "fidelity", "notes"}`` of the preset.

        Example
        -------
        >>> get_energy_model("horowitz45nm").provenance()["node"]
        '45 nm'
        """
        return {k: getattr(self, k, None) for k in ("name", "source", "year", "node", "fidelity", "notes")}

    def parts(self, row: Any) -> Dict[str, float]:  # pragma: no cover - interface
        raise NotImplementedError

    def energy(self, row: Any) -> Optional[float]:
        """Total joules per sample of one row (``None`` when nothing applies).

        Raises
        ------
        ValueError
            When a part is negative or not finite (a model of yours: a silently wrong total otherwise).
        """
        p = self.checked_parts(row)
        return sum(p.values()) if p else None

    def checked_parts(self, row: Any) -> Dict[str, float]:
        """:meth:`parts`, each a finite number of joules >= 0 (else a ``ValueError`` naming the model and row)."""
        p = self.parts(row)
        bad = {k: v for k, v in p.items() if not (isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"energy model {getattr(self, 'name', type(self).__name__)!r} gave the row "
                             f"{getattr(row, 'name', '?')!r} the parts {bad}: energies are finite joules >= 0. "
                             "Check the model's parts().")
        return p


def _f(v: Optional[float]) -> float:
    return float(v) if v is not None else 0.0


def _check_spiking(what: str, spiking: Any) -> None:
    """``spiking=`` must be a bool: the string ``"False"`` is true, and would price a non-spiking device per synop."""
    if not isinstance(spiking, bool):
        raise TypeError(f"{what}: spiking must be True (priced per synop) or False (per dense op), got "
                        f"{type(spiking).__name__} {spiking!r}")


def _check_joules(what: str, **values: Any) -> None:
    """Energies must be finite joules >= 0: a negative or NaN one would give a silently wrong total."""
    bad = {}
    for k, v in values.items():
        ok = (isinstance(v, numbers.Real) and not isinstance(v, bool)) and math.isfinite(float(v)) and float(v) >= 0
        if not ok:
            bad[k] = v
    if bad:
        raise ValueError(f"{what}: energies must be finite joules >= 0, got {bad}")


@dataclass(frozen=True)
class OpEnergy(EnergyModel):
    """Energy per effective AC / MAC (and optionally per neuron operation).

    ``synaptic = eff_acs * e_ac + eff_macs * e_mac``; ``neuron = neuron_ops * e_neuron_op``.
    """

    name: str
    e_ac: float
    e_mac: float
    e_neuron_op: float = 0.0
    source: str = ""
    year: Optional[int] = None
    node: str = ""
    fidelity: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        _check_joules(f"OpEnergy({self.name!r})", e_ac=self.e_ac, e_mac=self.e_mac, e_neuron_op=self.e_neuron_op)

    def parts(self, row: Any) -> Dict[str, float]:
        out: Dict[str, float] = {}
        if row.eff_acs is not None or row.eff_macs is not None:
            out["synaptic"] = _f(row.eff_acs) * self.e_ac + _f(row.eff_macs) * self.e_mac
        if self.e_neuron_op and row.neuron_ops is not None:
            out["neuron"] = row.neuron_ops * self.e_neuron_op
        return out


@dataclass(frozen=True)
class DeviceEnergy(EnergyModel):
    """A device with an energy per synop and per neuron update (KerasSpiking's model).

    Spiking devices: ``synops * energy_per_synop + neuron updates * energy_per_neuron``.
    Non-spiking devices: ``dense * energy_per_synop + neuron updates * energy_per_neuron``.
    Neuron updates are neurons x time steps of neuron and activation layers;
    ``energy_per_spike`` (optional) adds ``output spikes * energy_per_spike``
    per neuron layer (a chip's spike-routing energy).
    """

    name: str
    energy_per_synop: float
    energy_per_neuron: float
    spiking: bool
    source: str = ""
    year: Optional[int] = None
    node: str = ""
    fidelity: str = ""
    notes: str = ""
    energy_per_spike: float = 0.0

    def __post_init__(self) -> None:
        _check_joules(f"DeviceEnergy({self.name!r})", energy_per_synop=self.energy_per_synop,
                      energy_per_neuron=self.energy_per_neuron, energy_per_spike=self.energy_per_spike)
        _check_spiking(f"DeviceEnergy({self.name!r})", self.spiking)

    def parts(self, row: Any) -> Dict[str, float]:
        out: Dict[str, float] = {}
        ops = row.synops if self.spiking else row.dense
        if ops is not None:
            out["synaptic"] = ops * self.energy_per_synop
        if row.membrane_updates_dense is not None:
            out["neuron"] = row.membrane_updates_dense * self.energy_per_neuron
            if self.energy_per_spike and row.kind == "neuron":
                out["spikes"] = _f(row.spikes) * self.energy_per_spike
        return out


@dataclass(frozen=True)
class Lemaire2022(EnergyModel):
    """Lemaire et al. 2022 (Qualia's ``EnergyEstimationMetric``), with exact event counts.

    Synaptic layers (``eff`` = effective ACs + MACs, ``events`` = input events
    of every row of the sample (tokens too): spikes, a count of ``k`` as ``k``,
    or nonzero analog inputs; ``Nout``
    output neurons, ``T`` time steps; all per sample over all time steps):

    * ``ops``: ``eff_acs * E_add + eff_macs * (E_mul + E_add)`` (Eq. 1-2: one
      accumulate per spike and synapse, a multiply-accumulate per analog input);
    * ``addressing``: ``eff * E_add`` (Eq. 16.3 / 17.2: one address
      accumulation per synaptic event), plus ``2 * events * (E_mul + E_add)``
      for a convolution (Eq. 16.2: the event's position in the output map);
    * ``mem_weights``: ``eff * E_mem(weights)`` (Eq. 7f / 8f: one weight read per event);
    * ``mem_bias``: ``Nout * T * E_mem(biases)`` for a layer with biases
      (Eq. 7s / 8s: each output's bias read at every time step; a layer fed
      tokens ``[B, N, C]`` has ``N * Nout`` outputs per step);
    * ``mem_potentials``: ``2 * eff * E_mem(output neurons)`` (Eq. 14 / 15: the
      target potential is read and written per event);
    * ``mem_io``: ``events * E_mem(input neurons)`` (Eq. 5: one input read per event).

    Neuron layers (``N`` neurons, ``T`` time steps, ``S`` output spikes):

    * ``ops``: ``N*T*E_add`` (+ ``N*T*(E_mul + E_add)`` for the leak of leaky
      neurons, Eq. 1.3 / 2.3: not for a decay of 1, such as snntorch
      ``Leaky(beta=1)``) ``+ S*E_add`` (reset);
    * ``mem_potentials``: ``2 * N*T * E_mem(N)`` (one read and write per update);
    * ``mem_io``: ``S * E_mem(N)`` (Eq. 13: output spike writes).

    The equivalent ANN layer of :func:`synopsloss.calibration.break_even` is
    priced by the formal-network equations (``M`` MACs, ``Nin`` / ``Nout``
    inputs / outputs, ``K`` kernel taps per output channel): ``ops`` ``M *
    (E_mul + E_add) + Nout * E_add`` (Eq. 1.1-2.2); ``mem_io`` its inputs read
    (``Nin``, a convolution once per MAC: Eq. 3 / 4) and ``Nout`` outputs written
    (Eq. 11 / 12); ``mem_weights`` ``M * E_mem(weights)`` (Eq. 6.1f / 6.2f);
    ``mem_bias`` ``Nout * E_mem(biases)`` (Eq. 6.1s / 6.2s); ``addressing``
    ``(Nin + Nout + Cout * K) * E_add`` for a convolution, ``Nin * Nout * E_add``
    for a dense layer; no potentials.

    Lemaire's formal-network equations count every MAC (dense); in spiking
    networks we count effective operations for analog inputs too (zero inputs
    skipped).

    Parameters
    ----------
    bits
        Memory word width (32 for float32 weights and potentials).
    e_add, e_mul
        Energy per add / multiply in joules.
    """

    name: str = "lemaire2022"
    bits: int = 32
    e_add: float = 0.1 * PJ
    e_mul: float = 3.1 * PJ
    source: str = "Lemaire et al., ICONIP 2022; Horowitz, ISSCC 2014 (45 nm)"
    year: Optional[int] = 2022
    node: str = "45 nm"
    fidelity: str = "estimate"
    notes: str = "analytical model; op energies from Horowitz 2014 (int32 add 0.1 pJ, mult 3.1 pJ), SRAM fit from Qualia"

    def e_mem(self, words: float) -> float:
        """Energy of one 45 nm SRAM access (J) in a memory of ``words`` entries (Qualia's fit)."""
        return (1.09e-5 * float(words) * self.bits + 13.2) * PJ

    def parts(self, row: Any) -> Dict[str, float]:
        out: Dict[str, float] = {}
        conv = "conv" in str(row.type).lower()
        if getattr(row, "formal", False) and row.dense is not None:
            return self._formal(row, conv)
        if row.kind in ("synaptic", "recurrent synapses") and row.dense is not None:
            acs, macs = _f(row.eff_acs), _f(row.eff_macs)
            eff = acs + macs
            # input events: the spikes (a count of k: k events) when every op is an accumulate, else the nonzeros
            events = _f(row.input_events)
            if not macs and row.in_rate is not None and row.nonzero_rate:
                # (spike counts: k events for a count of k; the nonzero inputs times the mean count per nonzero)
                events = events * row.in_rate / row.nonzero_rate
            out["ops"] = acs * self.e_add + macs * (self.e_mul + self.e_add)
            out["addressing"] = eff * self.e_add + (2 * events * (self.e_mul + self.e_add) if conv else 0.0)
            out["mem_weights"] = eff * self.e_mem(row.weights or 0)
            if getattr(row, "biases", None):  # (each output value's bias read once: every step and token)
                outputs = row.output_values if row.output_values is not None else (
                    (row.neurons or 0) * (row.time_steps or 1.0))
                out["mem_bias"] = outputs * self.e_mem(row.biases)
            out["mem_potentials"] = 2 * eff * self.e_mem(row.neurons or 0)
            out["mem_io"] = events * self.e_mem(row.in_neurons or 0)
        elif row.kind == "neuron" and row.membrane_updates_dense is not None:
            nt = row.membrane_updates_dense
            spikes = _f(row.spikes)
            out["ops"] = nt * self.e_add + (nt * (self.e_mul + self.e_add) if row.leaky else 0.0) + spikes * self.e_add
            out["mem_potentials"] = 2 * nt * self.e_mem(row.neurons or 0)
            out["mem_io"] = spikes * self.e_mem(row.neurons or 0)
        return out

    def _formal(self, row: Any, conv: bool) -> Dict[str, float]:
        """The formal-network (ANN) equations for one inference of a synaptic layer (see the class docstring)."""
        macs, nin, nout = _f(row.eff_macs), float(row.in_neurons or 0), float(row.neurons or 0)
        out = {"ops": macs * (self.e_mul + self.e_add) + nout * self.e_add,
               "mem_weights": macs * self.e_mem(row.weights or 0),
               "mem_io": (macs if conv else nin) * self.e_mem(nin) + nout * self.e_mem(nout)}
        if getattr(row, "biases", None):
            out["mem_bias"] = nout * self.e_mem(row.biases)
        if conv:
            cin = float(row.in_shape[0]) if row.in_shape else 0.0
            taps = float(row.weights or 0) / cin if cin else 0.0  # Cout x kernel taps
            out["addressing"] = (nin + nout + taps) * self.e_add
        else:
            out["addressing"] = nin * nout * self.e_add
        return out


@dataclass(frozen=True)
class CountEnergy(EnergyModel):
    """A price per counted quantity: ``sum(costs[q] * row.q)`` (what :func:`calibrate` fits).

    Quantities (:data:`COUNT_FEATURES`): ``eff_acs``, ``eff_macs``, ``synops``,
    ``dense``, ``input_events`` (synaptic rows) and ``neuron_updates`` (neurons
    x time steps), ``spikes`` (neuron rows); joules per unit.

    Example
    -------
    >>> m = CountEnergy("fit", {"eff_acs": 1e-12, "spikes": 2e-12}, source="bench run 3")
    >>> m.costs["spikes"]
    2e-12
    """

    name: str
    costs: Mapping[str, float] = field(default_factory=dict)
    source: str = ""
    year: Optional[int] = None
    node: str = ""
    fidelity: str = "fitted"
    notes: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.costs) - set(COUNT_FEATURES))
        if unknown:
            raise ValueError(f"CountEnergy: unknown quantities {unknown}; choose from {list(COUNT_FEATURES)}")
        _check_joules("CountEnergy costs", **dict(self.costs))  # (a string, a bool or NaN is refused here)

    def parts(self, row: Any) -> Dict[str, float]:
        feats = row_features(row)
        out: Dict[str, float] = {}
        syn = sum(self.costs.get(k, 0.0) * feats[k] for k in _SYNAPTIC_FEATURES)
        neu = sum(self.costs.get(k, 0.0) * feats[k] for k in _NEURON_FEATURES)
        if row.kind in ("synaptic", "recurrent synapses") and row.dense is not None:
            out["synaptic"] = syn
        if row.kind == "neuron" and row.membrane_updates_dense is not None:
            out["neuron"] = neu
        return out


#: The per-row quantities :class:`CountEnergy` prices and :func:`calibrate` fits.
COUNT_FEATURES = ("eff_acs", "eff_macs", "synops", "dense", "input_events", "neuron_updates", "spikes")
_SYNAPTIC_FEATURES = COUNT_FEATURES[:5]
_NEURON_FEATURES = COUNT_FEATURES[5:]


def row_features(row: Any) -> Dict[str, float]:
    """The :data:`COUNT_FEATURES` of one table row, per sample (0 where a quantity does not apply)."""
    out = {k: 0.0 for k in COUNT_FEATURES}
    if row.kind in ("synaptic", "recurrent synapses") and row.dense is not None:
        out.update(eff_acs=_f(row.eff_acs), eff_macs=_f(row.eff_macs), synops=_f(row.synops), dense=_f(row.dense),
                   input_events=_f(row.input_events))
    elif row.kind == "neuron" and row.membrane_updates_dense is not None:
        out.update(neuron_updates=_f(row.membrane_updates_dense), spikes=_f(row.spikes))
    return out


_HOROWITZ = "M. Horowitz, \"Computing's energy problem (and what we can do about it)\", ISSCC 2014, Fig. 1.1.9"
_KS = "via KerasSpiking's ModelEnergy device table"

ENERGY_PRESETS: Dict[str, EnergyModel] = {
    "horowitz45nm": OpEnergy(
        "horowitz45nm", e_ac=0.9 * PJ, e_mac=4.6 * PJ,
        source=_HOROWITZ + ": 45 nm fp32 add 0.9 pJ, mult 3.7 pJ", year=2014, node="45 nm",
        fidelity="published per-op figure", notes="32-bit float; arithmetic only (no memory access)",
    ),
    "horowitz45nm-fp16": OpEnergy(
        "horowitz45nm-fp16", e_ac=0.4 * PJ, e_mac=1.5 * PJ,
        source=_HOROWITZ + ": 45 nm fp16 add 0.4 pJ, mult 1.1 pJ", year=2014, node="45 nm",
        fidelity="published per-op figure",
        notes="16-bit float; arithmetic only. Figures checked against secondary quotes of the table, not the slide.",
    ),
    "horowitz45nm-int8": OpEnergy(
        "horowitz45nm-int8", e_ac=0.03 * PJ, e_mac=0.23 * PJ,
        source=_HOROWITZ + ": 45 nm int8 add 0.03 pJ, mult 0.2 pJ", year=2014, node="45 nm",
        fidelity="published per-op figure",
        notes="8-bit integer; arithmetic only (an upper bound for the <8-bit ANNs of a break-even comparison). "
              "Figures checked against secondary quotes of the table, not the slide.",
    ),
    "horowitz45nm-int32": OpEnergy(
        "horowitz45nm-int32", e_ac=0.1 * PJ, e_mac=3.2 * PJ,
        source=_HOROWITZ + ": 45 nm int32 add 0.1 pJ, mult 3.1 pJ", year=2014, node="45 nm",
        fidelity="published per-op figure", notes="32-bit integer; arithmetic only",
    ),
    "lemaire2022": Lemaire2022(),
    "cpu": DeviceEnergy("cpu", 8.6e-9, 8.6e-9, False, "Degnan, Marr, Hasler, IEEE TVLSI 24(1), 2016 " + _KS,
                        2016, "22 nm (Intel i7-4960X)", "measured",
                        "Intel i7-4960X; every synapse and neuron one MAC; not spike-driven"),
    "gpu": DeviceEnergy("gpu", 0.3e-9, 0.3e-9, False, "Degnan, Marr, Hasler, IEEE TVLSI 24(1), 2016 " + _KS,
                        2016, "28 nm (Nvidia GTX Titan Black)", "measured",
                        "Nvidia GTX Titan Black, large batches; every synapse and neuron one MAC"),
    "arm": DeviceEnergy("arm", 0.9e-9, 0.9e-9, False, "Degnan, Marr, Hasler, IEEE TVLSI 24(1), 2016 " + _KS,
                        2016, "unknown", "measured",
                        "ARM Cortex-A; process node not stated in the table this package read"),
    "loihi": DeviceEnergy("loihi", (23.6 + 3.5) * PJ, 81 * PJ, True,
                          "Davies et al., \"Loihi\", IEEE Micro 38(1), 2018, Table 2 " + _KS, 2018, "14 nm",
                          "simulated",
                          "KerasSpiking's sum: synaptic spike op 23.6 pJ + 3.5 pJ of spike routing per synop; "
                          "active neuron update 81 pJ. Pre-silicon figures (see 'loihi-davies2018')."),
    "loihi-davies2018": DeviceEnergy(
        "loihi-davies2018", 23.6 * PJ, 81 * PJ, True,
        "Davies et al., \"Loihi: a neuromorphic manycore processor with on-chip learning\", IEEE Micro 38(1), "
        "2018, Table 2, as used by SANA-FE (Boyle et al.), whose Loihi architecture file notes the figures come "
        "from SPICE simulations", 2018, "14 nm", "simulated",
        "synaptic spike op 23.6 pJ per synop, active neuron update 81 pJ per neuron and step, within-tile spike "
        "1.7 pJ per output spike (SANA-FE's Loihi file: 1.7 pJ / 2.1 ns). Cross-tile hops (3.0 pJ east-west, "
        "4.2 pJ north-south per hop in SANA-FE) depend on the placement and are left out; inactive-neuron and "
        "learning energies are not modelled. SANA-FE's later, measurement-fitted figures differ.",
        energy_per_spike=1.7 * PJ,
    ),
    "spinnaker": DeviceEnergy("spinnaker", 13.3e-9, 26e-9, True,
                              "Hoppner et al., IEEE TCAS-I 66(8), 2019 (SpiNNaker 1 figures quoted there) " + _KS,
                              2019, "130 nm", "measured",
                              "SpiNNaker 1 (ARM968 cores, 130 nm UMC); the per-synop and per-neuron figures are "
                              "KerasSpiking's reading of the paper, not checked against its table here"),
    "spinnaker2": DeviceEnergy("spinnaker2", 450 * PJ, 2.19e-9, True,
                               "Hoppner et al., \"Dynamic power management for neuromorphic many-core systems\", "
                               "IEEE TCAS-I 66(8), 2019 " + _KS, 2019, "28 nm SLP (prototype)", "measured",
                               "SpiNNaker 2 prototype test chip in 28 nm SLP CMOS with DVFS (the production chip "
                               "is 22 nm FDSOI); figures as KerasSpiking reads them, not checked against the table here"),
}


def _require_source(source: Any, what: str) -> str:
    if not isinstance(source, str) or not source.strip() or source.strip().lower() == "user":
        raise ValueError(
            f"{what} needs source= citing where its figures come from (a paper, a datasheet, a measurement: "
            "e.g. source='Davies et al., IEEE Micro 2018, Table 2'); uncited energy presets are refused so that "
            "every energy number can be traced"
        )
    return source


def register_device(
    name: str, energy_per_synop: float, energy_per_neuron: float, spiking: bool, source: Optional[str] = None,
    *, year: Optional[int] = None, node: str = "", fidelity: str = "user", notes: str = "",
    energy_per_spike: float = 0.0,
) -> DeviceEnergy:
    """Add a device preset (joules per synop, per neuron update and optionally per output spike).

    Raises
    ------
    ValueError
        If ``name`` is taken, ``source`` is missing (uncited presets are
        refused), ``fidelity`` is unknown or an energy is negative.

    Example
    -------
    >>> from synopsloss.energy import register_device, ENERGY_PRESETS
    >>> dev = register_device("my-chip-doc", 1e-12, 5e-12, spiking=True, source="datasheet rev. B")
    >>> ENERGY_PRESETS.pop("my-chip-doc").energy_per_neuron
    5e-12
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_device: the preset's name must be a non-empty str, got {name!r}")
    if name in ENERGY_PRESETS:
        raise ValueError(f"energy preset {name!r} already exists; choose another name")
    _require_source(source, f"register_device({name!r})")
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
    _check_joules(f"register_device({name!r})", energy_per_synop=energy_per_synop,
                  energy_per_neuron=energy_per_neuron, energy_per_spike=energy_per_spike)
    _check_spiking(f"register_device({name!r})", spiking)
    dev = DeviceEnergy(name, float(energy_per_synop), float(energy_per_neuron), spiking, str(source), year,
                       node, fidelity, notes, float(energy_per_spike))
    ENERGY_PRESETS[name] = dev
    return dev


def register_preset(model: EnergyModel) -> EnergyModel:
    """Add any :class:`EnergyModel` under ``model.name`` (it must carry ``source``).

    Raises
    ------
    ValueError
        If the name is taken or the model has no ``source``.

    Example
    -------
    >>> m = register_preset(OpEnergy("int8-doc", 0.03e-12, 0.23e-12, source="Horowitz ISSCC 2014"))
    >>> ENERGY_PRESETS.pop("int8-doc") is m
    True
    """
    if not isinstance(model, EnergyModel):
        raise TypeError(f"register_preset expects an EnergyModel, got {type(model).__name__}")
    name = getattr(model, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError("the energy model needs a name")
    if name in ENERGY_PRESETS:
        raise ValueError(f"energy preset {name!r} already exists; choose another name")
    _require_source(getattr(model, "source", None), f"register_preset({name!r})")
    fidelity = getattr(model, "fidelity", "")
    if fidelity and fidelity not in FIDELITIES:
        raise ValueError(f"register_preset({name!r}): fidelity must be one of {FIDELITIES}, got {fidelity!r}")
    ENERGY_PRESETS[name] = model
    return model


def get_energy_model(energy: Union[None, str, EnergyModel, Mapping[str, float]]) -> Optional[EnergyModel]:
    """Resolve ``energy=``: a preset name, an :class:`EnergyModel`, ``{"e_ac", "e_mac"}`` or ``None``."""
    if energy is None:
        return None
    if isinstance(energy, EnergyModel):
        return energy
    if isinstance(energy, str):
        model = ENERGY_PRESETS.get(energy)
        if model is None:
            raise ValueError(f"unknown energy preset {energy!r}; choose one of {sorted(ENERGY_PRESETS)} "
                             "or register one with synopsloss.energy.register_device")
        return model
    if isinstance(energy, Mapping):
        unknown = set(energy) - {"e_ac", "e_mac", "e_neuron_op"}
        if unknown or not {"e_ac", "e_mac"} <= set(energy):
            raise ValueError(f"an energy dict needs keys 'e_ac' and 'e_mac' (joules), optional 'e_neuron_op'; got {sorted(energy)}")
        costs = {k: energy.get(k, 0.0) for k in ("e_ac", "e_mac", "e_neuron_op")}
        _check_joules("the energy dict", **costs)
        return OpEnergy("custom", *(float(v) for v in costs.values()), "user")
    raise TypeError(f"energy must be a preset name, an EnergyModel or a dict, got {type(energy).__name__}")


# ---------------------------------------------------------------------------------------------- break-even


def break_even_rate(time_steps: float, e_ac: float, e_mac_ann: float) -> float:
    """The input spike rate below which a spiking layer costs less than the equivalent quantised ANN layer.

    Compute-only form of Yan, Bai, Tang & Wong's comparison ("Reconsidering
    the energy efficiency of spiking neural networks", arXiv:2409.08290,
    2024): an SNN layer running ``T`` time steps at input spike rate ``r``
    (spikes per input neuron per step) performs ``r * T`` accumulates per
    synapse; the functionally equivalent quantised ANN (``ceil(log2(T+1))``-bit
    activations) performs one multiply-accumulate per synapse. So the SNN is
    cheaper when ``r * T * e_ac < e_mac_ann``:

    ``r* = e_mac_ann / (T * e_ac)``

    Yan et al.'s full model adds data movement (memory, network-on-chip),
    which lowers ``r*`` a lot (below 5.7% at ``T = 5`` on their typical
    neuromorphic hardware): price those terms with an energy model that has
    them (e.g. ``lemaire2022``) and use :func:`break_even`.

    Example
    -------
    >>> round(break_even_rate(5, e_ac=0.9e-12, e_mac_ann=0.23e-12), 4)   # fp32 adds vs int8 MACs
    0.0511
    """
    if not (time_steps > 0 and e_ac > 0 and e_mac_ann >= 0):
        raise ValueError(f"break_even_rate needs time_steps > 0, e_ac > 0 and e_mac_ann >= 0; got "
                         f"{time_steps}, {e_ac}, {e_mac_ann}")
    return e_mac_ann / (time_steps * e_ac)


def prices_neurons(model: Any) -> bool:
    """Whether energy model ``model`` gives neuron layers an energy (updates, spike writes): then a counter made
    with ``neurons=False``, which keeps no neuron statistics, leaves that energy out.

    Example
    -------
    >>> prices_neurons(get_energy_model("horowitz45nm")), prices_neurons(get_energy_model("loihi"))
    (False, True)
    """
    if isinstance(model, (DeviceEnergy, Lemaire2022)):
        return True
    if isinstance(model, OpEnergy):
        return bool(model.e_neuron_op)
    if isinstance(model, CountEnergy):
        return any(model.costs.get(k) for k in ("neuron_updates", "spikes"))
    return True
