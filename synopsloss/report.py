"""Builds the per-layer :class:`~synopsloss.table.SynOpsTable` of a counter from its public snapshot."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from torch import Tensor

from ._validate import check_number
from .neurons import neuron_row
from .snapshot import CounterSnapshot, LayerStats
from .table import LayerRow, SynOpsTable

__all__ = ["LayerRow", "SynOpsTable", "build_table"]


def _synaptic_row(s: LayerStats, samples: int, dt: Optional[float]) -> LayerRow:
    row = LayerRow(name=s.name, type=s.type, kind=s.kind, data_fed=s.data_fed, synops=s.synops / samples,
                   dense=s.dense / samples, eff_macs=s.eff_macs / samples, eff_acs=s.eff_acs / samples,
                   weights=s.weights)
    if s.rows:
        row.in_shape, row.out_shape = tuple(s.in_shape), tuple(s.out_shape)
        row.in_neurons = math.prod(row.in_shape)
        row.neurons = math.prod(row.out_shape)
        row.time_steps = s.rows / samples
        row.in_rate = s.input_sum / (s.rows * row.in_neurons) if row.in_neurons else None
        row.input_events = s.input_nonzero / samples
        row.fanout_mean, row.fanout_max = s.fanout_mean, s.fanout_max
        row.synops_per_step = _div(row.synops, row.time_steps)
        row.synops_per_s = _div(row.synops_per_step, dt)
    return row


def _total_row(rows: List[LayerRow], dt: Optional[float], model: Any) -> LayerRow:
    """Shares and energies of the rows (set in place), and the total row: sums; rates weighted over neurons."""
    total_synops = sum(r.synops for r in rows if r.synops is not None)
    for r in rows:
        if r.synops is not None:
            r.share = r.synops / total_synops if total_synops else 0.0
        if model is not None:
            r.energy_parts = model.parts(r)
            r.energy = sum(r.energy_parts.values()) if r.energy_parts else None

    def tsum(attr: str) -> Optional[float]:
        vals = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
        return sum(vals) if vals else None

    neuron_rows = [r for r in rows if r.kind == "neuron" and r.neurons and r.time_steps]
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
    if steps and total_synops is not None:
        total.time_steps = max(steps)
        total.synops_per_step = total_synops / total.time_steps
        total.synops_per_s = _div(total.synops_per_step, dt)
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
        else:
            s = neuron_row(snapshot.neurons[name], samples)
            row = LayerRow(name=name, type=s["type"] or "?", kind=s["kind"], in_shape=s["in_shape"] or None,
                           out_shape=s["out_shape"] or None)
            for k in ("neurons", "time_steps", "spikes", "firing_rate", "density", "membrane_updates",
                      "membrane_updates_dense", "neuron_ops", "neuron_ops_dense", "leaky"):
                setattr(row, k, s[k])
            rows.append(row)

    total = _total_row(rows, dt, model)
    notes = []
    unknown = [r.name for r in rows if r.kind == "neuron" and r.neuron_ops is None and r.membrane_updates is not None]
    if unknown:
        notes.append("Neuron ops unknown for " + ", ".join(unknown) + " (no operation cost for their type; "
                     "pass costs= to NeuronMonitor / see synopsloss.neurons).")
    return SynOpsTable(rows, total, samples=samples, dt=dt, energy_model=model.name if model is not None else None,
                       per_neuron=per_neuron or {}, notes=notes)
