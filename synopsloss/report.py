"""Builds the per-layer :class:`~synopsloss.table.SynOpsTable` of a counter from its public snapshot."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor

from .table import LayerRow, SynOpsTable

__all__ = ["LayerRow", "SynOpsTable", "build_table"]


def _div(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def build_table(counter: Any, *, dt: Optional[float] = None, energy: Any = "horowitz45nm", accumulated: bool = False) -> SynOpsTable:
    """Build the table of a :class:`~synopsloss.SynOpsCounter` (see :meth:`SynOpsCounter.table`)."""
    import torch

    from .energy import get_energy_model
    from .maps import prod

    if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0):
        raise ValueError(f"dt must be a positive number of seconds per time step, got {dt!r}")
    model = get_energy_model(energy)
    monitor = counter._monitor
    counts = counter.counts(accumulated=accumulated)
    samples = (counter._samples() if counter._batch.layers else 0) + (counter._total_samples if accumulated else 0)
    if not samples:
        raise RuntimeError("counter.table() was called before any forward pass: run the model on a batch first")
    nstats = monitor.stats(accumulated=accumulated) if monitor is not None else {}
    fed = set(counter.data_fed_layers()) if hasattr(counter, "data_fed_layers") else set()
    if not accumulated:
        fed = {n for n, a in counter._batch.layers.items() if getattr(a, "data_fed", False)}

    # synaptic extras (input sums, rows, maps) of the current batch and, accumulated, the finished ones
    extra: Dict[str, Dict[str, Any]] = {}
    sources = [dict(counter._batch.layers)]
    if accumulated and monitor is not None:
        sources.insert(0, monitor.synaptic_totals())
    tensors: List[Tensor] = []
    index: Dict[Tuple[str, str], int] = {}

    def put(name: str, key: str, t: Tensor) -> None:
        index[(name, key)] = len(tensors)
        tensors.append(t.detach().to("cpu", torch.float64).reshape(()))

    for src in sources:
        for name, acc in src.items():
            get = (lambda k: acc.get(k)) if isinstance(acc, dict) else (lambda k: getattr(acc, k))
            e = extra.setdefault(name, {"rows_total": 0, "input_sum": [], "input_nonzero": []})
            e["rows_total"] += get("rows_total")
            e["input_sum"].append(get("input_sum"))
            e["input_nonzero"].append(get("input_nonzero"))
            e["in_shape"], e["out_shape"] = get("in_shape"), get("out_shape")
            if get("maps") is not None:
                e["maps"] = get("maps")
    for name, e in extra.items():
        put(name, "input_sum", sum(t.to("cpu", torch.float64) for t in e["input_sum"]))
        put(name, "input_nonzero", sum(t.to("cpu", torch.float64) for t in e["input_nonzero"]))
        lm = e.get("maps")
        if lm is not None and lm.effective.numel():
            put(name, "fanout_mean", lm.effective.mean())
            put(name, "fanout_max", lm.effective.max())
    values = torch.stack(tensors).tolist() if tensors else []
    val = lambda n, k: values[index[(n, k)]] if (n, k) in index else None  # noqa: E731

    # forward order: the monitor's (all layers), else the counter's own (synaptic layers, first call first)
    order = dict(monitor.order) if monitor is not None else {n: i for i, n in enumerate(counts)}
    names = list(dict.fromkeys([*sorted(set(counts) | set(nstats), key=lambda n: (order.get(n, 1 << 30)))]))
    info = monitor.info if monitor is not None else {}
    rows: List[LayerRow] = []
    for name in names:
        module = counter._modules.get(name)
        if name in counts:
            c, e = counts[name], extra.get(name)
            kind = info.get(name, {}).get("kind", "synaptic")
            kind = kind if kind in ("synaptic", "recurrent synapses") else "synaptic"
            row = LayerRow(name=name, type=type(module).__name__ if module is not None else "?", kind=kind,
                           data_fed=name in fed, synops=c["synops"], dense=c["dense"],
                           eff_macs=c["eff_macs"], eff_acs=c["eff_acs"])
            rule = counter._layer_rules.get(name)
            if module is not None and rule is not None:
                if rule.fanout is not None:
                    w = getattr(module, rule.weight, None)
                    row.weights = int(w.numel()) if isinstance(w, Tensor) else None
                else:
                    row.weights = sum(p.numel() for n, p in module.named_parameters() if n.startswith("weight"))
            if e is not None and e["rows_total"]:
                row.in_shape, row.out_shape = tuple(e["in_shape"]), tuple(e["out_shape"])
                row.in_neurons, row.neurons = prod(row.in_shape), prod(row.out_shape)
                row.time_steps = e["rows_total"] / samples
                row.in_rate = val(name, "input_sum") / (e["rows_total"] * row.in_neurons) if row.in_neurons else None
                row.input_events = val(name, "input_nonzero") / samples
                row.fanout_mean, row.fanout_max = val(name, "fanout_mean"), val(name, "fanout_max")
                row.synops_per_step = _div(row.synops, row.time_steps)
                row.synops_per_s = _div(row.synops_per_step, dt)
        else:
            s = nstats[name]
            row = LayerRow(name=name, type=s["type"] or "?", kind=s["kind"], in_shape=s["in_shape"] or None,
                           out_shape=s["out_shape"] or None)
            for k in ("neurons", "time_steps", "spikes", "firing_rate", "density", "membrane_updates",
                      "membrane_updates_dense", "neuron_ops", "neuron_ops_dense", "leaky"):
                setattr(row, k, s[k])
        rows.append(row)

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
    notes = []
    unknown = [r.name for r in rows if r.kind == "neuron" and r.neuron_ops is None and r.membrane_updates is not None]
    if unknown:
        notes.append("Neuron ops unknown for " + ", ".join(unknown) + " (no operation cost for their type; "
                     "pass costs= to NeuronMonitor / see synopsloss.neurons).")
    per_neuron: Dict[str, Tensor] = {}
    if monitor is not None:
        for r in rows:
            if r.kind == "neuron":
                try:
                    per_neuron[r.name] = monitor.firing_rate_per_neuron(r.name, accumulated=accumulated)
                except (KeyError, ValueError):
                    pass
    return SynOpsTable(rows, total, samples=samples, dt=dt, energy_model=model.name if model is not None else None,
                       per_neuron=per_neuron, notes=notes)
