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

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union

__all__ = [
    "EnergyModel",
    "OpEnergy",
    "DeviceEnergy",
    "Lemaire2022",
    "register_device",
    "get_energy_model",
    "ENERGY_PRESETS",
]

PJ = 1e-12


class EnergyModel:
    """Base class: ``parts(row) -> {part: joules per sample}`` for one table row."""

    # subclasses define ``name`` and ``source`` (dataclass fields)

    def parts(self, row: Any) -> Dict[str, float]:  # pragma: no cover - interface
        raise NotImplementedError

    def energy(self, row: Any) -> Optional[float]:
        """Total joules per sample of one row (``None`` when nothing applies)."""
        p = self.parts(row)
        return sum(p.values()) if p else None


def _f(v: Optional[float]) -> float:
    return float(v) if v is not None else 0.0


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
    Neuron updates are neurons x time steps of neuron and activation layers.
    """

    name: str
    energy_per_synop: float
    energy_per_neuron: float
    spiking: bool
    source: str = ""

    def parts(self, row: Any) -> Dict[str, float]:
        out: Dict[str, float] = {}
        ops = row.synops if self.spiking else row.dense
        if ops is not None:
            out["synaptic"] = ops * self.energy_per_synop
        if row.membrane_updates_dense is not None:
            out["neuron"] = row.membrane_updates_dense * self.energy_per_neuron
        return out


@dataclass(frozen=True)
class Lemaire2022(EnergyModel):
    """Lemaire et al. 2022 (Qualia's ``EnergyEstimationMetric``), with exact event counts.

    Synaptic layers (``eff`` = effective ACs + MACs, ``events`` = nonzero
    inputs, all per sample over all time steps):

    * ``ops``: ``eff_acs * E_add + eff_macs * (E_mul + E_add)`` (Eq. 1-2: one
      accumulate per spike and synapse, a multiply-accumulate per analog input);
    * ``addressing``: ``eff * E_add`` (Eq. 16.3 / 17.2: one address
      accumulation per synaptic event);
    * ``mem_weights``: ``eff * E_mem(weights)`` (Eq. 7f / 8f: one weight read per event);
    * ``mem_potentials``: ``2 * eff * E_mem(output neurons)`` (Eq. 14 / 15: the
      target potential is read and written per event);
    * ``mem_io``: ``events * E_mem(input neurons)`` (Eq. 5: one input read per event).

    Neuron layers (``N`` neurons, ``T`` time steps, ``S`` output spikes):

    * ``ops``: ``N*T*E_add`` (+ ``N*T*(E_mul + E_add)`` for the leak of leaky
      neurons, Eq. 1.3 / 2.3) ``+ S*E_add`` (reset);
    * ``mem_potentials``: ``2 * N*T * E_mem(N)`` (one read and write per update);
    * ``mem_io``: ``S * E_mem(N)`` (Eq. 13: output spike writes).

    Lemaire's formal-network equations count every MAC (dense); we count
    effective operations for analog inputs too (zero inputs skipped).

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

    def e_mem(self, words: float) -> float:
        """Energy of one 45 nm SRAM access (J) in a memory of ``words`` entries (Qualia's fit)."""
        return (1.09e-5 * float(words) * self.bits + 13.2) * PJ

    def parts(self, row: Any) -> Dict[str, float]:
        out: Dict[str, float] = {}
        if row.kind in ("synaptic", "recurrent synapses") and row.dense is not None:
            acs, macs = _f(row.eff_acs), _f(row.eff_macs)
            eff = acs + macs
            out["ops"] = acs * self.e_add + macs * (self.e_mul + self.e_add)
            out["addressing"] = eff * self.e_add
            out["mem_weights"] = eff * self.e_mem(row.weights or 0)
            out["mem_potentials"] = 2 * eff * self.e_mem(row.neurons or 0)
            out["mem_io"] = _f(row.input_events) * self.e_mem(row.in_neurons or 0)
        elif row.kind == "neuron" and row.membrane_updates_dense is not None:
            nt = row.membrane_updates_dense
            spikes = _f(row.spikes)
            out["ops"] = nt * self.e_add + (nt * (self.e_mul + self.e_add) if row.leaky else 0.0) + spikes * self.e_add
            out["mem_potentials"] = 2 * nt * self.e_mem(row.neurons or 0)
            out["mem_io"] = spikes * self.e_mem(row.neurons or 0)
        return out


ENERGY_PRESETS: Dict[str, EnergyModel] = {
    "horowitz45nm": OpEnergy(
        "horowitz45nm", e_ac=0.9 * PJ, e_mac=4.6 * PJ,
        source="Horowitz, ISSCC 2014: 45 nm fp32 add 0.9 pJ, mult 3.7 pJ",
    ),
    "lemaire2022": Lemaire2022(),
    "cpu": DeviceEnergy("cpu", 8.6e-9, 8.6e-9, False, "Degnan et al. 2016 (KerasSpiking): Intel i7-4960X"),
    "gpu": DeviceEnergy("gpu", 0.3e-9, 0.3e-9, False, "Degnan et al. 2016 (KerasSpiking): Nvidia GTX Titan Black"),
    "arm": DeviceEnergy("arm", 0.9e-9, 0.9e-9, False, "Degnan et al. 2016 (KerasSpiking): ARM Cortex-A"),
    "loihi": DeviceEnergy("loihi", (23.6 + 3.5) * PJ, 81 * PJ, True, "Davies et al. 2018 (KerasSpiking): Intel Loihi"),
    "spinnaker": DeviceEnergy("spinnaker", 13.3e-9, 26e-9, True, "Hoppner et al. 2019 (KerasSpiking): SpiNNaker"),
    "spinnaker2": DeviceEnergy("spinnaker2", 450 * PJ, 2.19e-9, True, "Hoppner et al. 2019 (KerasSpiking): SpiNNaker 2"),
}


def register_device(
    name: str, energy_per_synop: float, energy_per_neuron: float, spiking: bool, source: str = "user"
) -> DeviceEnergy:
    """Add a device preset (joules per synop and per neuron update).

    Raises
    ------
    ValueError
        If ``name`` is taken or an energy is negative.

    Example
    -------
    >>> from synopsloss.energy import register_device, ENERGY_PRESETS
    >>> dev = register_device("my-chip-doc", 1e-12, 5e-12, spiking=True)
    >>> ENERGY_PRESETS.pop("my-chip-doc").energy_per_neuron
    5e-12
    """
    if name in ENERGY_PRESETS:
        raise ValueError(f"energy preset {name!r} already exists; choose another name")
    if energy_per_synop < 0 or energy_per_neuron < 0:
        raise ValueError("energies must be non-negative (joules)")
    dev = DeviceEnergy(name, float(energy_per_synop), float(energy_per_neuron), bool(spiking), source)
    ENERGY_PRESETS[name] = dev
    return dev


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
        return OpEnergy("custom", float(energy["e_ac"]), float(energy["e_mac"]), float(energy.get("e_neuron_op", 0.0)), "user")
    raise TypeError(f"energy must be a preset name, an EnergyModel or a dict, got {type(energy).__name__}")
