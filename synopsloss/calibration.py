"""Energy models compared with and fitted to measured tables: the break-even column and calibration.

:func:`break_even` adds, per spiking synaptic layer, the energy of the equivalent
quantised ANN layer and the input rate below which the spiking layer is cheaper
(:func:`synopsloss.energy.break_even_rate`); :func:`calibrate` fits per-op energies
to measured runs by non-negative least squares. Both read the per-layer table
(:mod:`synopsloss.report`), which reads the energy models of :mod:`synopsloss.energy`:
the dependencies run one way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from .energy import COUNT_FEATURES, CountEnergy, EnergyModel, get_energy_model, row_features
from .report import build_table
from .table import SynOpsTable

__all__ = ["break_even", "Calibration", "calibrate"]


def _ann_row(row: Any, density: float) -> Any:
    """The row of the equivalent ANN layer: one step, every (dense) synapse a MAC at analog inputs."""
    import dataclasses

    steps = row.time_steps or 1.0
    macs = row.dense / steps * density
    events = (row.in_neurons or 0) * density
    return dataclasses.replace(row, eff_acs=0.0, eff_macs=macs, synops=macs, dense=row.dense / steps,
                               input_events=events, time_steps=1.0, in_rate=density, energy_parts={}, energy=None,
                               formal=True)


def break_even(table: Any, ann: Union[str, EnergyModel, Mapping[str, float]] = "horowitz45nm-int8", *,
               ann_density: float = 1.0) -> Any:
    """The table with two more columns per spiking synaptic layer: ``ann_energy`` and ``break_even_rate``.

    For each synaptic row whose input is spikes (no effective MACs) and that
    has an energy (the table was built with ``energy=``):

    * ``ann_energy``: the equivalent quantised ANN layer (Yan et al. 2024,
      arXiv:2409.08290: one time step, ``ceil(log2(T+1))``-bit activations)
      priced by ``ann``: every synapse one MAC at analog inputs,
      ``dense / T * ann_density`` MACs per sample (``ann_density`` < 1 for an
      ANN that skips zero activations);
    * ``break_even_rate``: the input spike rate at which the layer's energy
      equals the ANN's. The energy is affine in the input events (ops, reads
      and addressing grow with them; a bias read per output, or a device
      priced per dense op, does not): the rate on the line through the
      layer's energy with no event and at its own ``in_rate``. The spiking
      layer is cheaper only while ``in_rate`` is below it; ``0.0`` when it
      costs at least the ANN with no event at all (a dense-priced ``cpu``:
      never cheaper), ``inf`` when its energy does not grow and stays below.
      With :class:`OpEnergy` on both sides this is :func:`break_even_rate`
      ``e_mac_ann / (T * e_ac)``; with memory terms (``lemaire2022``) it
      includes them.

    Choose ``ann`` at the ANN's precision: ``"horowitz45nm-int8"`` (default;
    Horowitz has no figure below 8 bits, so for ``T <= 7`` it is an upper
    bound on the ANN's cost), ``"horowitz45nm-fp16"``, ``"horowitz45nm"``, or
    ``"lemaire2022"`` for the ANN equations of Lemaire et al. with memory.

    Returns a new :class:`~synopsloss.table.SynOpsTable`; rows that do not
    apply (neuron layers, analog inputs, silent inputs) keep ``None``.

    Raises
    ------
    ValueError
        When the table has no energy column (build it with ``energy=``), or
        ``ann_density`` is outside (0, 1].

    Example
    -------
    >>> import torch, synopsloss as sl
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False))
    >>> counter = sl.SynOpsCounter(net)
    >>> for t in range(5):
    ...     _ = net(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    >>> row = break_even(counter.table(energy="horowitz45nm"), "horowitz45nm-int8")["0"]
    >>> round(row.break_even_rate, 4), row.in_rate
    (0.0511, 0.25)
    """
    import dataclasses


    model = get_energy_model(ann)
    if model is None:
        raise ValueError("break_even needs an energy model for the ANN side (ann=...)")
    if not (0 < ann_density <= 1):
        raise ValueError(f"ann_density must be in (0, 1], got {ann_density}")
    if not hasattr(table, "rows") or not hasattr(table, "energy_model"):
        raise TypeError(f"break_even takes the table of counter.table(energy=...), got {type(table).__name__}")
    if table.energy_model is None:
        raise ValueError("break_even needs a table with an energy column: counter.table(energy='horowitz45nm') "
                         "(or another preset) prices the spiking side")
    pricer = getattr(table, "pricer", None)
    if pricer is None:  # (a table made by hand: its model by name)
        pricer = get_energy_model(table.energy_model)
    rows = []
    for row in table.rows:
        new = dataclasses.replace(row)
        spiking = row.kind in ("synaptic", "recurrent synapses") and not row.eff_macs and row.dense
        if spiking and row.energy and row.in_rate and row.time_steps:
            e_ann = model.energy(_ann_row(row, ann_density)) or 0.0
            new.ann_energy = e_ann
            new.break_even_rate = _rate_at(pricer, row, e_ann)
        rows.append(new)
    total = dataclasses.replace(table.total)
    priced = [r.ann_energy for r in rows if r.ann_energy is not None]
    total.ann_energy = sum(priced) if priced else None
    notes = list(table.notes) + [f"Break-even: the equivalent quantised ANN priced by {model.name!r} "
                                 "(Yan et al. 2024); a spiking layer is cheaper while In rate < Break-even."]
    return SynOpsTable(rows, total, samples=table.samples, dt=table.dt, energy_model=table.energy_model,
                       per_neuron=table.per_neuron, notes=notes, view=table.view, pricer=pricer)


def _rate_at(model: EnergyModel, row: Any, e_ann: float) -> float:
    """The input rate at which ``row``'s energy equals ``e_ann``: the energy is affine in the input events (their
    ops, reads and addressing grow with them; a bias read or a dense-priced device does not), so it is the line
    through the row's energy at no event and at its own rate. ``0.0`` when the layer costs at least ``e_ann`` with
    no event at all (never cheaper), ``inf`` when it is cheaper at every rate (its energy does not grow)."""
    import dataclasses

    zero = dataclasses.replace(row, eff_acs=0.0, eff_macs=0.0, synops=0.0, input_events=0.0, in_rate=0.0,
                               nonzero_rate=0.0, energy=None, energy_parts={})
    e0 = float(model.energy(zero) or 0.0)
    slope = (float(row.energy) - e0) / float(row.in_rate)
    if e0 >= e_ann:
        return 0.0
    if slope <= 0:
        return math.inf
    return (e_ann - e0) / slope


# ---------------------------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` returns.

    Attributes
    ----------
    model
        The fitted :class:`CountEnergy` (joules per unit of each feature).
    features
        The fitted quantities, in column order.
    counts
        ``counts[i][j]``: run ``i``'s total of feature ``j`` (over all its samples).
    measured, predicted, residuals
        Joules per run; ``residuals = measured - predicted``.
    relative_residuals
        ``residuals / measured``.
    """

    model: "CountEnergy"
    features: tuple
    counts: tuple
    measured: tuple
    predicted: tuple
    residuals: tuple
    relative_residuals: tuple


def calibrate(
    snapshots: Any,
    measured_joules: Any,
    *,
    features: Optional[Any] = None,
    name: str = "calibrated",
    source: Optional[str] = None,
) -> Calibration:
    """Fit per-op energies to measured runs by non-negative least squares.

    Each run is a :class:`~synopsloss.snapshot.CounterSnapshot` (e.g.
    ``counter.snapshot(accumulated=True)`` after the run) and the joules a
    meter measured over it (dynamic energy: subtract the idle power x time
    first). The model is ``joules = sum_j cost_j * count_j`` with ``count_j``
    the run's total of feature ``j`` (:data:`COUNT_FEATURES`, summed over
    layers and samples) and ``cost_j >= 0``, solved with
    ``scipy.optimize.nnls`` on column-scaled counts.

    Parameters
    ----------
    snapshots
        One snapshot per run.
    measured_joules
        Energy of each run, joules.
    features
        Which quantities to fit; default ``("eff_acs", "eff_macs",
        "neuron_updates", "spikes")`` less those that are zero in every run.
    name, source
        Name and citation of the fitted preset (``source`` defaults to a
        description of the fit).

    Raises
    ------
    ValueError
        Fewer runs than features, runs whose counts cannot separate the
        features (linearly dependent columns), negative or non-finite
        joules, or unknown features.

    Example
    -------
    >>> import torch, synopsloss as sl
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
    >>> counter = sl.SynOpsCounter(net)
    >>> snaps = []
    >>> for x in ([1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, 1.0, 1.0]):
    ...     counter.reset(); _ = net(torch.tensor([x])); snaps.append(counter.snapshot())
    >>> acs = [s.total()["eff_acs"] for s in snaps]; macs = [s.total()["eff_macs"] for s in snaps]
    >>> joules = [a * 2e-12 + m * 5e-12 for a, m in zip(acs, macs)]
    >>> fit = calibrate(snaps, joules)
    >>> {k: round(v * 1e12, 6) for k, v in fit.model.costs.items()}
    {'eff_acs': 2.0, 'eff_macs': 5.0}
    """
    import numpy as np
    from scipy.optimize import nnls


    snaps = list(snapshots)
    wrong = [type(x).__name__ for x in snaps if not hasattr(x, "layers") or not hasattr(x, "samples")]
    if wrong:
        raise TypeError(f"calibrate takes counter snapshots (counter.snapshot(), one per measured run), got {wrong}")
    joules = [float(j) for j in measured_joules]
    if len(snaps) != len(joules):
        raise ValueError(f"calibrate needs one measurement per snapshot: got {len(snaps)} snapshots and "
                         f"{len(joules)} measurements")
    if not snaps:
        raise ValueError("calibrate needs at least one run (snapshot and measured joules)")
    if any(not (math.isfinite(j) and j >= 0) for j in joules):
        raise ValueError(f"measured joules must be finite and >= 0, got {joules}")
    explicit = features is not None
    feats = list(features) if explicit else ["eff_acs", "eff_macs", "neuron_updates", "spikes"]
    unknown = [f for f in feats if f not in COUNT_FEATURES]
    if unknown:
        raise ValueError(f"calibrate: unknown features {unknown}; choose from {list(COUNT_FEATURES)}")
    rows = []
    for snap in snaps:
        table = build_table(snap, energy=None)
        tot = {k: 0.0 for k in COUNT_FEATURES}
        for row in table.rows:
            for k, v in row_features(row).items():
                tot[k] += v * table.samples
        rows.append(tot)
    if not explicit:
        feats = [f for f in feats if any(r[f] for r in rows)]
    if not feats:
        raise ValueError("calibrate: every feature is zero in every run (nothing was counted)")
    A = np.array([[r[f] for f in feats] for r in rows], dtype=np.float64)
    b = np.array(joules, dtype=np.float64)
    if len(snaps) < len(feats):
        raise ValueError(f"calibrate fits {len(feats)} costs {feats} and needs at least as many runs; got "
                         f"{len(snaps)}. Measure more runs (different inputs, spike rates, batch sizes).")
    scale = np.linalg.norm(A, axis=0)
    if np.any(scale == 0) or np.linalg.matrix_rank(A / np.where(scale == 0, 1, scale)) < len(feats):
        raise ValueError(f"calibrate: the runs' counts of {feats} are linearly dependent, so their costs cannot be "
                         "told apart. Vary what the runs do (input rates, analog vs spike inputs, time steps) or "
                         "fit fewer features.")
    bscale = float(np.linalg.norm(b)) or 1.0
    x, _ = nnls(A / scale, b / bscale)
    costs = x * bscale / scale
    predicted = A @ costs
    residuals = b - predicted
    rel = tuple(float(r / m) if m else math.inf if r else 0.0 for r, m in zip(residuals, b))
    model = CountEnergy(
        name, {f: float(c) for f, c in zip(feats, costs)},
        source=source or f"synopsloss.energy.calibrate: non-negative least squares on {len(snaps)} measured runs",
        fidelity="fitted", notes=f"max relative residual {max(abs(r) for r in rel):.3g}",
    )
    return Calibration(model, tuple(feats), tuple(tuple(float(v) for v in r) for r in A), tuple(joules),
                       tuple(float(p) for p in predicted), tuple(float(r) for r in residuals), rel)
