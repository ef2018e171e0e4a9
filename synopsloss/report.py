"""Builds the per-layer :class:`~synopsloss.table.SynOpsTable` of a counter from its public snapshot.

Time steps
    A synaptic row's ``time_steps`` are the steps the layer ran per sample
    (:meth:`SynOpsCounter.time_steps`: a call covers ``T`` steps when its input
    carries the time dim, else one; tokens are not time). ``synops_per_step``
    and ``synops_per_s`` divide by them; the total row uses the batch's time
    steps (``CounterSnapshot.time_steps``).

The paper estimate
    Most spiking-transformer papers report a layer's synaptic operations as
    *firing rate x T x FLOPs*: the mean rate of the layer's input spikes
    (spikes per input neuron per step) times the time steps times the dense
    operations of one step. Per sample that is ``in_rate x dense``
    (``synops_estimate``; ``estimate_error`` = ``estimate / synops - 1``). It
    equals the exact synops only when every input neuron has the same fan-out
    and no weight is zero: convolution borders (fewer taps), pruned or zero
    weights and rates that differ between neurons of different fan-out make
    it drift. ``energy_paper`` is those papers' energy, ``E_AC x estimate``
    (``E_MAC x dense`` for a layer whose input is not spikes, e.g. the image
    stem) with ``E_AC = 0.9 pJ``, ``E_MAC = 4.6 pJ`` (the ``horowitz45nm``
    preset's numbers), next to ``energy`` of the exact counts. Layers counted
    by a whole-call rule (recurrent layers) have no estimate.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from torch import Tensor

from ._validate import check_number
from .energy import ENERGY_PRESETS
from .neurons import neuron_row
from .snapshot import CounterSnapshot, LayerStats
from .table import LayerRow, SynOpsTable

__all__ = ["LayerRow", "SynOpsTable", "build_table"]


#: the energies per AC / MAC that spiking-transformer papers use (Horowitz 2014, 45 nm)
_PAPER = ENERGY_PRESETS["horowitz45nm"]


def _synaptic_row(s: LayerStats, samples: int, dt: Optional[float]) -> LayerRow:
    row = LayerRow(name=s.name, type=s.type, kind=s.kind, data_fed=s.data_fed, synops=s.synops / samples,
                   dense=s.dense / samples, eff_macs=s.eff_macs / samples, eff_acs=s.eff_acs / samples,
                   weights=s.weights, biases=s.biases)
    if s.rows:
        row.in_shape, row.out_shape = tuple(s.in_shape), tuple(s.out_shape)
        row.in_neurons = math.prod(row.in_shape)
        row.neurons = math.prod(row.out_shape)
        row.time_steps = s.sample_steps / samples if s.sample_steps else None
        values = s.in_values or s.rows * row.in_neurons  # every call at its own input size
        row.in_rate = s.input_sum / values if values else None
        row.nonzero_rate = s.input_nonzero / values if values else None
        row.input_events = s.input_nonzero / samples
        row.output_values = values / row.in_neurons * row.neurons / samples if row.in_neurons else None
        row.fanout_mean, row.fanout_max = s.fanout_mean, s.fanout_max
        row.synops_per_step = _div(row.synops, row.time_steps)
        row.synops_per_s = _div(row.synops_per_step, dt)
        if row.in_rate is not None and s.fanout_mean is not None:  # a fan-out map: the paper's estimate applies
            row.synops_estimate = row.in_rate * row.dense
            row.estimate_error = _div(row.synops_estimate - row.synops, row.synops)
            spiking = not row.eff_macs
            row.energy_paper = _PAPER.e_ac * row.synops_estimate if spiking else _PAPER.e_mac * row.dense
    return row


def _total_row(rows: List[LayerRow], dt: Optional[float], model: Any, time_steps: Optional[float]) -> LayerRow:
    """Shares and energies of the rows (set in place), and the total row: sums; rates weighted over neurons."""
    total_synops = sum(r.synops for r in rows if r.synops is not None)
    for r in rows:
        if r.synops is not None:
            r.share = r.synops / total_synops if total_synops else 0.0
        if model is not None:
            r.energy_parts = model.checked_parts(r)
            r.energy = sum(r.energy_parts.values()) if r.energy_parts else None

    def tsum(attr: str) -> Optional[float]:
        vals = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
        return sum(vals) if vals else None

    neuron_rows = [r for r in rows if r.kind == "neuron" and r.neurons and r.time_steps and r.spikes is not None]
    slots = sum(r.neurons * r.time_steps for r in neuron_rows)
    total = LayerRow(name="Total", type="", kind="", synops=total_synops, dense=tsum("dense"),
                     eff_macs=tsum("eff_macs"), eff_acs=tsum("eff_acs"), neuron_ops=tsum("neuron_ops"),
                     neuron_ops_dense=tsum("neuron_ops_dense"), membrane_updates=tsum("membrane_updates"),
                     membrane_updates_dense=tsum("membrane_updates_dense"), spikes=tsum("spikes"),
                     neurons=sum(r.neurons for r in rows if r.kind == "neuron" and r.neurons) or None,
                     share=1.0 if total_synops else None, energy=tsum("energy"))
    if slots:
        total.firing_rate = sum(r.spikes for r in neuron_rows) / slots
    steps = [r.time_steps for r in rows if r.synops is not None and r.time_steps]
    if (time_steps or steps) and total_synops is not None:
        total.time_steps = time_steps or max(steps)
        total.synops_per_step = total_synops / total.time_steps
        total.synops_per_s = _div(total.synops_per_step, dt)
    estimated = [r for r in rows if r.synops_estimate is not None]
    if estimated:
        total.synops_estimate = sum(r.synops_estimate for r in estimated)
        total.estimate_error = _div(total.synops_estimate - sum(r.synops for r in estimated),
                                    sum(r.synops for r in estimated))
        total.energy_paper = sum(r.energy_paper for r in estimated)
    if model is not None:
        parts: Dict[str, float] = {}
        for r in rows:
            for k, v in r.energy_parts.items():
                parts[k] = parts.get(k, 0.0) + v
        total.energy_parts = parts
    return total


def _div(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def build_table(
    snapshot: CounterSnapshot,
    *,
    dt: Optional[float] = None,
    energy: Any = "horowitz45nm",
    per_neuron: Optional[Dict[str, Tensor]] = None,
) -> SynOpsTable:
    """Build the table of a counter's :class:`~synopsloss.snapshot.CounterSnapshot` (see :meth:`SynOpsCounter.table`).

    Example
    -------
    >>> import torch, synopsloss as sl
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3, bias=False), torch.nn.ReLU())
    >>> counter = sl.SynOpsCounter(net)
    >>> _ = net(torch.ones(2, 2))
    >>> [r.name for r in build_table(counter.snapshot(), energy=None)]
    ['0', '1']
    """
    from .energy import get_energy_model

    if dt is not None:
        check_number("dt (seconds per time step)", dt, positive=True)
    model = get_energy_model(energy)
    samples = snapshot.samples
    if not samples:
        raise RuntimeError("counter.table() was called before any forward pass: run the model on a batch first")
    order = snapshot.order()
    names = sorted(order, key=order.__getitem__)
    rows: List[LayerRow] = []
    for name in names:
        if name in snapshot.layers:
            rows.append(_synaptic_row(snapshot.layers[name], samples, dt))
        if name in snapshot.neurons:  # both: a neuron with synapses of its own (norse LIFRecurrentCell)
            s = neuron_row(snapshot.neurons[name], samples, snapshot.time_steps)
            row = LayerRow(name=name, type=s["type"] or "?", kind=s["kind"], in_shape=s["in_shape"] or None,
                           out_shape=s["out_shape"] or None)
            for k in ("neurons", "time_steps", "spikes", "firing_rate", "density", "membrane_updates",
                      "membrane_updates_dense", "neuron_ops", "neuron_ops_dense", "leaky"):
                setattr(row, k, s[k])
            rows.append(row)

    total = _total_row(rows, dt, model, snapshot.time_steps)
    if snapshot.per_sample:  # per-sample distributions (the counter's per_sample=True)
        for row in [*rows, total]:
            name = None if row is total else row.name
            if name is None or name in snapshot.per_sample:
                d = snapshot.distribution(name)
                row.synops_p50, row.synops_p95, row.synops_p99, row.synops_max = d["p50"], d["p95"], d["p99"], d["max"]
    notes = []
    unknown = [r.name for r in rows if r.kind == "neuron" and r.neuron_ops is None and r.membrane_updates is not None]
    if unknown:
        notes.append("Neuron ops unknown for " + ", ".join(unknown) + " (no operation cost for their type; "
                     "pass costs= to NeuronMonitor / see synopsloss.neurons).")
    return SynOpsTable(rows, total, samples=samples, dt=dt, energy_model=model.name if model is not None else None,
                       pricer=model,
                       per_neuron=per_neuron or {}, notes=notes)
