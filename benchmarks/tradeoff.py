"""Accuracy vs synops trade-off: SynOpsLoss against the regularisers users would pick instead.

Two tasks that need no download (see ``tasks.py``): scikit-learn's 8x8 digits
with the demo's spiking 2-D CNN (8 rate-coded frames), and MNIST-1D (generated
offline) with a three-layer spiking 1-D CNN (direct input, 4 time steps);
snntorch ``Leaky`` neurons. Each network is trained with cross-entropy plus one
of (``regularizers.py``):

* ``baseline``: nothing (cross-entropy only);
* ``target`` (ours): ``SynOpsLoss(counter, target=t)``, a budget of ``t``
  network-driven synops per sample; strength = ``t``;
* ``synops`` (ours): ``SynOpsLoss(counter, fraction=f)``, the squared relative
  error to ``f`` x the initial network-driven synops; strength = ``f``;
* ``ramp`` (ours): the fraction falls linearly from 1 to ``f`` over 3/4 of training;
* ``iterative``: Sorbaro et al. 2020 with the public ``schedules.Iterative``:
  ``n`` equal stages, each aiming at 0.7 x what the last epoch of the stage
  before reached; strength = ``n``;
* ``l1``: ``lambda`` x the mean hidden firing rate; strength = ``lambda``;
* ``hinge``: lava-dl ``SparsityEnforcer`` style, ``lam`` x sum over neuron
  layers of ``relu(rate - max_rate)**2``; strength = ``lam`` (``max_rate``
  fixed at lava-dl's default 0.01, ``--hinge-max-rate``);
* ``fanout``: Suetake et al. 2023, ``lambda`` x spikes weighted by their
  outgoing synapse count (normalised to a rate); strength = ``lambda``.

Every regulariser's weight rises linearly from 0 over the first quarter of
training (``--warmup``), so all methods get the same schedule; a seed sets the
initialisation, spikes, batch order and the digits split.

Writes ``tradeoff.csv`` (one row per run: test accuracy, network-driven and
total synops per sample, the final target and the budget error
``|achieved / target - 1|``, the code hash, torch version and thread / process
layout), ``tradeoff_<dataset>.png`` (accuracy vs network-driven synops, means
with min/max bars, Pareto fronts) and ``tradeoff.json`` (per-setting means
with 95% t intervals, budget precision, the verdict). The verdict: among the
settings within 1 point of the baseline on the 95% interval of the seed-paired
accuracy difference (at least 3 seeds), which method reaches the fewest
network-driven synops, on each dataset.

Usage::

    python benchmarks/tradeoff.py              # small settings, a check that it runs (a few minutes)
    python benchmarks/tradeoff.py --reduced --jobs 1   # 2 seeds, fewest settings: ~21 CPU-minutes
    python benchmarks/tradeoff.py --full       # 5 seeds, 3-4 strengths per method (several CPU-hours)
    python benchmarks/tradeoff.py --from-csv benchmarks/results/tradeoff.csv   # re-plot, re-judge
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # tasks.py, regularizers.py

METHODS = ("baseline", "target", "synops", "ramp", "iterative", "l1", "hinge", "fanout")
#: The methods of the energy suite (``--energy``; rows in ``energy.csv``, never in ``tradeoff.csv``).
ENERGY_METHODS = ("energy", "energy_loihi", "quantile")
ALL_METHODS = METHODS + ENERGY_METHODS
#: The energy presets every run is priced with on the test set (the table's energy column, joules per sample).
ENERGY_PRESETS = {"energy": "horowitz45nm", "energy_loihi": "loihi-davies2018"}
#: The quantile of the per-sample network-driven synops that the ``quantile`` method budgets.
QUANTILE = 0.95
LABELS = {
    "baseline": "cross-entropy only",
    "target": "SynOpsLoss, absolute target (ours)",
    "synops": "SynOpsLoss, fraction of initial (ours)",
    "ramp": "SynOpsLoss, fraction ramped 1 -> f (ours)",
    "iterative": "iterative target x0.7 per stage (Sorbaro 2020)",
    "l1": "L1 spike rate",
    "hinge": "hinge^2 on rate above 0.01 (lava-dl)",
    "fanout": "fan-out-weighted spikes (Suetake 2023)",
    "energy": "EnergyLoss horowitz45nm, fraction of initial (ours)",
    "energy_loihi": "EnergyLoss loihi-davies2018, fraction of initial (ours)",
    "quantile": "SynOpsLoss, p95 per-sample target (ours)",
}
STRENGTH = {"target": "synops/sample", "synops": "fraction", "ramp": "fraction", "iterative": "stages", "l1": "lambda",
            "hinge": "lam", "fanout": "lambda", "energy": "fraction", "energy_loihi": "fraction",
            "quantile": "synops/sample"}

#: The published sweep (``--full``) and the quick default: per dataset, epochs and the strengths of each method.
#: Absolute targets (network-driven synops per sample on the test set) for MNIST-1D's network.
MNIST1D_TARGETS = (10000.0, 20000.0, 35000.0)   # the cross-entropy-only network: ~94,000 (seed 0, 20 epochs)
#: Protocol: three strengths per method, chosen from exploration runs (one seed at first, then a three-seed
#: run) so that each method's three settings bracket its 1-point line: at least one mean within it and one
#: below it, so that no method's verdict is set by where its grid happened to stop.
FULL: Dict[str, Any] = {
    "seeds": [0, 1, 2, 3, 4],
    "digits": {"epochs": 20, "time_steps": 8, "train_samples": None, "test_samples": None,
               "grid": {"target": [15000.0, 25000.0, 40000.0], "synops": [0.2, 0.3, 0.5], "ramp": [0.2, 0.3, 0.5],
                        "iterative": [3, 4, 5], "l1": [2.0, 4.0, 6.0, 10.0], "hinge": [100.0, 300.0, 1000.0],
                        "fanout": [2.0, 3.0, 4.0]}},
    "mnist1d": {"epochs": 20, "time_steps": 4, "train_samples": None, "test_samples": None,
                "grid": {"target": [MNIST1D_TARGETS[0], MNIST1D_TARGETS[1], MNIST1D_TARGETS[2]],
                         "synops": [0.2, 0.3, 0.5], "ramp": [0.1, 0.2, 0.3], "iterative": [3, 4, 5],
                         "l1": [0.5, 1.0, 2.0, 4.0], "hinge": [3.0, 10.0, 30.0], "fanout": [2.0, 4.0, 6.0]}},
}
#: ``--reduced``: the run that fits a shared machine (about 15 CPU-minutes): 2 seeds, MNIST-1D trained 10 epochs
#: instead of 20, the fewest settings that still show budget precision (two absolute targets, one ramped fraction),
#: the L1 weights tried for the same budgets, and the public iterative target.
REDUCED: Dict[str, Any] = {
    "seeds": [0, 1],
    "digits": dict(FULL["digits"], grid={"target": [15000.0, 40000.0], "ramp": [0.2], "iterative": [4],
                                         "l1": [2.0, 4.0, 10.0]}),
    "mnist1d": dict(FULL["mnist1d"], epochs=10, grid={"target": [MNIST1D_TARGETS[0], MNIST1D_TARGETS[2]],
                                                      "ramp": [0.2], "iterative": [4], "l1": [0.5, 2.0, 4.0]}),
}
SMALL: Dict[str, Any] = {
    "seeds": [0],
    "digits": {"epochs": 4, "time_steps": 8, "train_samples": 512, "test_samples": None,
               "grid": {"target": [30000.0], "synops": [0.3, 0.5], "ramp": [0.3, 0.5], "iterative": [2, 4],
                        "l1": [1.0, 4.0], "hinge": [30.0, 300.0], "fanout": [1.0, 4.0]}},
    "mnist1d": {"epochs": 3, "time_steps": 4, "train_samples": 1024, "test_samples": 500,
                "grid": {"target": [MNIST1D_TARGETS[1]], "synops": [0.5, 0.8], "ramp": [0.2, 0.4],
                         "iterative": [2, 4], "l1": [2.0, 6.0], "hinge": [10.0, 100.0], "fanout": [4.0, 8.0]}},
}
#: The energy suite (``--energy``): ``SynOpsLoss`` (fraction of the initial network-driven synops, and an absolute
#: target) against ``EnergyLoss`` (fraction of the initial energy of the same layers plus the neuron layers) under
#: two presets, and the quantile budget next to the mean target at the same ``B``. ``energy_loihi`` fractions are
#: higher: Loihi's neuron updates (81 pJ per neuron and step, no gradient) are ~40% of the initial energy, so a
#: fraction below that floor cannot be reached.
ENERGY_FULL: Dict[str, Any] = {
    "seeds": [0, 1, 2, 3, 4],
    "digits": dict(FULL["digits"], grid={"synops": [0.3], "energy": [0.3], "energy_loihi": [0.6],
                                         "target": [25000.0], "quantile": [25000.0]}),
    "mnist1d": dict(FULL["mnist1d"], grid={"synops": [0.3], "energy": [0.3], "energy_loihi": [0.6],
                                           "target": [MNIST1D_TARGETS[2]], "quantile": [MNIST1D_TARGETS[2]]}),
}
ENERGY_REDUCED: Dict[str, Any] = {
    "seeds": [0, 1, 2],
    "digits": ENERGY_FULL["digits"],
    "mnist1d": dict(ENERGY_FULL["mnist1d"], epochs=10),
}
ENERGY_SMALL: Dict[str, Any] = {
    "seeds": [0],
    "digits": dict(SMALL["digits"], grid=ENERGY_FULL["digits"]["grid"]),
    "mnist1d": dict(SMALL["mnist1d"], grid=ENERGY_FULL["mnist1d"]["grid"]),
}
#: Tolerance of the budget-precision table: a run "hits" its budget when |achieved / target - 1| <= this.
BUDGET_TOLERANCE = 0.05

Job = Dict[str, Any]
ROW_KEYS = ("dataset", "method", "strength", "seed", "accuracy", "driven_synops", "total_synops", "target",
            "budget_error", "settings", "hidden_rate", "layer_rates", "epochs", "seconds", "cpu_seconds", "warnings",
            "code_hash", "torch", "layout")
#: the extra columns of an energy-suite row (``energy.csv``): test-set energy per sample (the table's total energy)
#: under each preset of :data:`ENERGY_PRESETS`, and the per-sample network-driven synops distribution
ENERGY_KEYS = ("energy_horowitz45nm", "energy_loihi-davies2018", "driven_p50", "driven_p95", "driven_p99",
               "driven_max")
#: the files whose content makes the code hash of a row (with every file under synopsloss/)
HASHED_FILES = ("benchmarks/tradeoff.py", "benchmarks/tasks.py", "benchmarks/regularizers.py")


# ----------------------------------------------------------------------------- one training run

_TASKS: Dict[Tuple[str, int], Any] = {}


def _task(name: str, seed: int):
    from tasks import load_task

    key = (name, seed if name == "digits" else 0)   # mnist1d's split does not depend on the seed
    if key not in _TASKS:
        _TASKS[key] = load_task(name, seed)
    return _TASKS[key]


def settings_of(job: Job) -> str:
    """The training settings of a job besides dataset, method, strength, seed and epochs (a CSV column)."""
    return (f"T={job['time_steps']} batch={job['batch_size']} lr={job['lr']:g} warmup={job['warmup']:g} "
            f"hinge_max_rate={job['hinge_max_rate']:g} train={job.get('train_samples') or 'all'} "
            f"test={job.get('test_samples') or 'all'}")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def code_hash(root: str = ROOT) -> str:
    """sha256 (first 12 hex digits) of every ``.py`` file under ``synopsloss/`` and of :data:`HASHED_FILES`.

    Paths and contents both enter the hash, in sorted order, so any edit, added or removed file changes it.
    """
    import hashlib

    h = hashlib.sha256()
    files = [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(os.path.join(root, "synopsloss"))
             for f in fs if f.endswith(".py")]
    for rel in sorted(files) + list(HASHED_FILES):
        h.update(rel.encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as f:
            h.update(f.read() + b"\0")
    return h.hexdigest()[:12]


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def layout_of(job: Job) -> str:
    """The thread / process layout a run trained in (part of what a reused row must match)."""
    return f"torch_threads=1 processes={job.get('jobs', 1)}"


#: the columns a reused row must match besides dataset, method, strength, seed and epochs
MATCH_KEYS = ("settings", "code_hash", "torch", "layout")


def reusable(rows: Sequence[Dict[str, Any]], jobs: Sequence[Job]) -> Tuple[Dict[int, Dict[str, Any]], List[str]]:
    """Rows of earlier runs that a job would reproduce, by job index, and why the other candidates were refused.

    A row is reused only when dataset, method, strength, seed and epochs match and so do the training settings,
    the code hash (:func:`code_hash`), the torch version and the thread / process layout (:data:`MATCH_KEYS`):
    spiking training amplifies float differences, so a row from other code or another layout is not what a
    rerun gives (the issue-20 rerun moved one seed's accuracy by 4 points). Rows of older CSVs without these
    columns are never reused.
    """
    def key(d: str, m: str, strength: Any, seed: Any, epochs: Any) -> Tuple[str, str, str, int, int]:
        return d, m, "" if strength in ("", None) else f"{float(strength):g}", int(seed), int(epochs)

    index: Dict[Tuple[str, str, str, int, int], Dict[str, Any]] = {}
    for r in rows:
        if r.get("accuracy") in ("", None) or math.isnan(float(r["accuracy"])):
            continue
        index[key(r["dataset"], r["method"], r["strength"], r["seed"], r["epochs"])] = r
    out: Dict[int, Dict[str, Any]] = {}
    refused: List[str] = []
    for i, j in enumerate(jobs):
        k = key(j["dataset"], j["method"], j["strength"], j["seed"], j["epochs"])
        r = index.get(k)
        if r is None:
            continue
        want = {"settings": settings_of(j), "code_hash": j.get("code_hash", ""), "torch": _torch_version(),
                "layout": layout_of(j)}
        diff = [f"{c} {r.get(c) or '(none)'} != {want[c]}" for c in MATCH_KEYS if (r.get(c) or "") != want[c]]
        if diff:
            refused.append(f"{k[0]} {k[1]} {k[2]} seed {k[3]}: " + "; ".join(diff))
            continue
        row = dict(r, strength="" if j["strength"] is None else j["strength"], seed=j["seed"], epochs=j["epochs"])
        for c in ("accuracy", "driven_synops", "total_synops", "hidden_rate", "seconds", "cpu_seconds") + ENERGY_KEYS:
            if c in ENERGY_KEYS and c not in row:   # a tradeoff.csv row has no energy columns
                continue
            row[c] = float(row[c]) if row.get(c) not in (None, "") else float("nan")
        out[i] = row
    return out, refused


def run_one(job: Job) -> Dict[str, Any]:
    """Train one (dataset, method, strength, seed) and measure it on the test set; runs in a worker.

    A run that raises gives a row with NaN figures and the error (the sweep goes on; the report lists it).
    """
    try:
        return _run_one(job)
    except Exception as err:  # noqa: BLE001 -- recorded in the row, reported, never silently averaged
        nan = float("nan")
        return {**({k: nan for k in ENERGY_KEYS} if job.get("energy_suite") else {}),"dataset": job["dataset"], "method": job["method"],
                "strength": "" if job["strength"] is None else job["strength"], "seed": job["seed"],
                "accuracy": nan, "driven_synops": nan, "total_synops": nan, "target": "", "budget_error": "",
                "settings": settings_of(job), "hidden_rate": nan,
                "layer_rates": "", "epochs": job["epochs"], "seconds": 0.0, "cpu_seconds": 0.0,
                "warnings": f"ERROR {type(err).__name__}: {err}",
                "code_hash": job.get("code_hash", ""), "torch": _torch_version(), "layout": layout_of(job)}


def _run_one(job: Job) -> Dict[str, Any]:
    import torch
    import torch.nn.functional as F

    import synopsloss as sl
    from synopsloss.schedules import Iterative, Warmup
    from regularizers import ActivityRecorder, _FanoutCache, fanout_weighted_spikes, hinge_squared_rate, l1_spike_rate

    torch.set_num_threads(1)
    method, value, seed = job["method"], job["strength"], job["seed"]
    task = _task(job["dataset"], seed)
    x_tr, y_tr, x_te, y_te = task.data
    if job.get("train_samples"):
        x_tr, y_tr = x_tr[:job["train_samples"]], y_tr[:job["train_samples"]]
    if job.get("test_samples"):
        x_te, y_te = x_te[:job["test_samples"]], y_te[:job["test_samples"]]
    epochs, T, bs = job["epochs"], job["time_steps"], job["batch_size"]
    encode = task.encode
    batches = math.ceil(len(y_tr) / bs)
    warm = int(round(job["warmup"] * batches))

    torch.manual_seed(seed)
    net = task.make_net()
    start, cpu_start = time.perf_counter(), time.process_time()
    # input [T, B, ...]; neuron updates only where the loss prices them, per-sample synops only for the quantile
    counter = sl.SynOpsCounter(net, batch_dim=1, neurons=method == "energy_loihi", per_sample=method == "quantile")
    weight = Warmup(1.0, steps=warm) if warm >= 1 else sl.schedules.Constant(1.0)
    loss_fn: Any = None
    rec: Optional[ActivityRecorder] = None
    cache = _FanoutCache()
    if method == "target":   # "give me `value` synops per sample": the budget itself, no sweep
        loss_fn = sl.SynOpsLoss(counter, target=value, weight=weight)
    elif method == "synops":
        loss_fn = sl.SynOpsLoss(counter, fraction=value, weight=weight)
    elif method == "ramp":   # the target falls linearly from the initial synops to `value` x them over 3/4 of training
        ramp = sl.schedules.Linear(1.0, value, steps=max(1, int(0.75 * epochs * batches)))
        loss_fn = sl.SynOpsLoss(counter, fraction=ramp, weight=weight)
    elif method == "iterative":   # `value` equal stages; each aims at 0.7 x what the last epoch of the one before reached
        stage = max(1, epochs * batches // int(value))
        loss_fn = sl.SynOpsLoss(counter, weight=weight, target=Iterative(
            factor=0.7, stage_steps=stage, stages=int(value) - 1, window=min(batches, stage)))
    elif method in ("energy", "energy_loihi"):   # `value` x the energy of the first batch (driven + neuron layers)
        loss_fn = sl.EnergyLoss(counter, fraction=value, weight=weight, energy=ENERGY_PRESETS[method])
    elif method == "quantile":   # the p95 of the batch's per-sample network-driven synops at `value`
        loss_fn = sl.SynOpsLoss(counter, target=value, quantile=QUANTILE, weight=weight)
    elif method in ("l1", "hinge", "fanout"):
        rec = ActivityRecorder(net, synaptic_layers=task.driven_layers)
    elif method != "baseline":
        raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS}")

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=job["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    caught: List[str] = []
    net.train()
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always", sl.UnreachableTargetWarning)
        for epoch in range(epochs):
            perm = torch.randperm(len(y_tr), generator=gen)
            for i in range(0, len(y_tr), bs):
                idx = perm[i:i + bs]
                spikes = encode(x_tr[idx], T, gen)
                counter.reset()
                if rec is not None:
                    rec.reset()
                loss = F.cross_entropy(net(spikes), y_tr[idx])
                if loss_fn is not None:
                    loss = loss + loss_fn()
                elif method == "l1":
                    loss = loss + weight.value * value * l1_spike_rate(rec.spikes)
                elif method == "hinge":
                    loss = loss + weight.value * value * hinge_squared_rate(rec.spikes, job["hinge_max_rate"])
                elif method == "fanout":
                    loss = loss + weight.value * value * fanout_weighted_spikes(rec.inputs, rec.layers, cache=cache)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if loss_fn is not None:
                    loss_fn.step()      # steps the shared weight schedule too
                else:
                    weight.step()
            sched.step()
        caught = sorted({str(w.message).partition(":")[2].strip()[:60] for w in wlist
                         if issubclass(w.category, sl.UnreachableTargetWarning)})
    if rec is not None:
        driven = set(counter.layer_names) - set(counter.data_fed_layers())
        if driven != set(task.driven_layers):   # the baselines must weigh what SynOpsLoss regularises
            raise RuntimeError(f"driven layers {sorted(driven)} != the task's {task.driven_layers}")
        rec.remove()
    target: Any = ""
    if loss_fn is not None:   # the target in force at the end of training (joules per sample for EnergyLoss)
        target = loss_fn.targets()["driven"]
    extras: Dict[str, Any] = {}
    if job.get("energy_suite"):   # test-set energy and per-sample synops, read by a counter of its own
        counter.remove()
        counter = sl.SynOpsCounter(net, batch_dim=1, neurons=True, per_sample=True)
    with ActivityRecorder(net) as probe, torch.no_grad():   # firing rates on the test set, for reference
        result = evaluate(net, counter, x_te, y_te, encode, time_steps=T, seed=seed,
                          extras=extras if job.get("energy_suite") else None)
        rates = {n: float(sum(s.sum() for s in v) / sum(s.numel() for s in v)) for n, v in probe.spikes.items()}
        hidden_rate = sum(float(sum(s.sum() for s in v)) for v in probe.spikes.values()) / sum(
            sum(s.numel() for s in v) for v in probe.spikes.values())
    counter.remove()
    budget_error: Any = ""
    if method in ("energy", "energy_loihi"):   # the energy of the loss's layers on the test set against its target
        budget_error = abs(extras["loss_energy_" + ENERGY_PRESETS[method]] / target - 1)
    elif method == "quantile":   # the test set's p95 per-sample network-driven synops against the budget
        budget_error = abs(extras["driven_p95"] / target - 1)
    elif loss_fn is not None:   # how far the test set's mean is from the target
        budget_error = abs(result.driven_synops / target - 1)
    row = {
        "dataset": job["dataset"], "method": method, "strength": "" if value is None else value, "seed": seed,
        "accuracy": result.accuracy, "driven_synops": result.driven_synops, "total_synops": result.synops,
        "target": target, "budget_error": budget_error, "settings": settings_of(job),
        "hidden_rate": round(hidden_rate, 5),
        "layer_rates": " ".join(f"{n}={r:.4f}" for n, r in rates.items()), "epochs": epochs, "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "warnings": "; ".join(caught),
        "code_hash": job.get("code_hash", ""), "torch": torch.__version__, "layout": layout_of(job),
    }
    row.update({k: extras[k] for k in ENERGY_KEYS if k in extras})
    return row


def evaluate(net: Any, counter: Any, x: Any, y: Any, encode: Any, *, time_steps: int, seed: int,
             batch_size: int = 256, extras: Optional[Dict[str, Any]] = None) -> Any:
    """Test accuracy and per-sample counts over ``x`` with the task's encoding (one fixed encoding per seed).

    With ``extras`` (a dict, filled in place; the counter made with ``neurons=True, per_sample=True``): the
    table's total energy per sample under each preset of :data:`ENERGY_PRESETS` (``energy_<preset>``), the
    energy of the layers ``EnergyLoss`` regularises by default (all but the data-fed ones,
    ``loss_energy_<preset>``), and p50 / p95 / p99 / max of the per-sample network-driven synops
    (``driven_<stat>``, from ``snapshot(accumulated=True)``: the per-sample synops of the layers not fed by the
    data, summed per sample, then :func:`synopsloss.snapshot.distribution`).
    """
    from synopsloss.cli.digits import evaluate as run

    result = run(net, counter, x, y, time_steps=time_steps, seed=seed, batch_size=batch_size, encode=encode,
                 keep=True)  # the demo's evaluation loop; the accumulated counts are read here, then reset
    result.table = None
    fed = result.data_fed
    if extras is not None:
        from synopsloss.snapshot import distribution

        snap = counter.snapshot(accumulated=True)
        for preset in ENERGY_PRESETS.values():
            table = counter.table(energy=preset, accumulated=True)
            extras[f"energy_{preset}"] = float(table.total.energy)
            extras[f"loss_energy_{preset}"] = sum(float(r.energy) for r in table.rows
                                                  if r.energy is not None and r.name not in fed)
        driven = [name for name in snap.per_sample if name not in fed]
        dist = distribution([sum(v) for v in zip(*(snap.per_sample[name] for name in driven))])
        extras.update({f"driven_{k}": dist[k] for k in ("p50", "p95", "p99", "max")})
    counter.reset(accumulated=True)
    return result


# ----------------------------------------------------------------------------- aggregation

def _f(r: Dict[str, Any], k: str) -> float:
    return float(r[k])


def ci95(values: Sequence[float]) -> float:
    """Half-width of the 95% confidence interval of the mean (Student's t, ``n - 1`` degrees of freedom).

    ``inf`` for fewer than two values: one run says nothing about the spread.

    Example
    -------
    >>> round(ci95([1.0, 2.0, 3.0]), 4)   # t(0.975, 2) = 4.3027, s = 1, n = 3
    2.4841
    """
    n = len(values)
    if n < 2:
        return math.inf
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)


def means(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per (dataset, method, strength): mean, min, max and 95% CI half-width over seeds of accuracy and synops.

    Also the accuracy difference to the baseline paired by seed (same initialisation and batch order):
    ``acc_diff`` (mean) with its 95% interval ``acc_diff_lo`` / ``acc_diff_hi``, and, for the target
    methods, the budget errors ``|achieved / target - 1|`` of the runs.
    """
    groups: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for r in rows:
        if math.isnan(_f(r, "accuracy")):   # a failed run (listed by report()), not a number to average
            continue
        groups.setdefault((str(r["dataset"]), str(r["method"]), str(r["strength"])), []).append(r)
    base_acc = {(str(r["dataset"]), int(r["seed"])): _f(r, "accuracy")
                for (ds, m, _), rs in groups.items() if m == "baseline" for r in rs}
    out = []
    for (ds, method, strength), rs in groups.items():
        m: Dict[str, Any] = {"dataset": ds, "method": method, "strength": strength, "n": len(rs),
                             "seeds": sorted(int(r["seed"]) for r in rs)}
        for k in ("accuracy", "driven_synops", "total_synops"):
            vals = [_f(r, k) for r in rs]
            m[k], m[k + "_min"], m[k + "_max"] = statistics.mean(vals), min(vals), max(vals)
            m[k + "_ci"] = ci95(vals)
        diffs = [_f(r, "accuracy") - base_acc[(ds, int(r["seed"]))] for r in rs if (ds, int(r["seed"])) in base_acc]
        if diffs:
            h = ci95(diffs)
            m["acc_diff"] = statistics.mean(diffs)
            m["acc_diff_lo"], m["acc_diff_hi"], m["acc_diff_n"] = m["acc_diff"] - h, m["acc_diff"] + h, len(diffs)
        targets = [_f(r, "target") for r in rs if r.get("target") not in ("", None)]
        if targets:
            m["target"] = statistics.mean(targets)
            m["budget_errors"] = [abs(_f(r, "driven_synops") / _f(r, "target") - 1) for r in rs
                                  if r.get("target") not in ("", None)]
        out.append(m)
    order = {k: i for i, k in enumerate(METHODS)}
    out.sort(key=lambda m: (m["dataset"], order.get(m["method"], 99), float(m["strength"] or 0)))
    return out


def decision(m: Dict[str, Any], points: float = 1.0, min_seeds: int = 3) -> str:
    """Whether a setting is within ``points`` of the baseline, judged on the 95% interval of the paired difference.

    ``"within"``: the whole interval is above ``-points``; ``"below"``: the whole interval is below it;
    ``"undecided"``: the interval straddles the line (more seeds needed), there is no paired baseline, or
    fewer than ``min_seeds`` seeds are paired (two seeds that happen to agree give an interval of zero width:
    a decision drawn from one degree of freedom is not one).

    Example
    -------
    >>> decision({"acc_diff_lo": -0.008, "acc_diff_hi": 0.002, "acc_diff_n": 3})
    'within'
    >>> decision({"acc_diff_lo": -0.03, "acc_diff_hi": 0.0, "acc_diff_n": 5}), decision({"acc_diff_lo": 0.0, "acc_diff_hi": 0.0, "acc_diff_n": 2})
    ('undecided', 'undecided')
    """
    if "acc_diff_lo" not in m or m.get("acc_diff_n", 0) < min_seeds:
        return "undecided"
    line = -points / 100
    if m["acc_diff_lo"] >= line - 1e-12:
        return "within"
    if m["acc_diff_hi"] < line - 1e-12:
        return "below"
    return "undecided"


def front(points: Sequence[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """Pareto front of (synops, accuracy) points: fewer synops, higher accuracy.

    Example
    -------
    >>> front([(3, 0.9), (1, 0.5), (2, 0.4), (4, 0.95)])
    [(1, 0.5), (3, 0.9), (4, 0.95)]
    """
    out, best = [], -math.inf
    for s, a in sorted(points):
        if a > best:
            out.append((s, a))
            best = a
    return out


def front_at(points: Sequence[Tuple[float, float]], line: float) -> Tuple[Optional[float], str]:
    """Where a method's Pareto front of (synops, accuracy) means crosses the accuracy ``line``.

    Linear in log synops between the front's last point below the line and its first point at or above it.
    Returns ``(synops, note)``: note ``"interpolated"``; ``"at most"`` when every point is at or above the
    line (the front crosses it somewhere below the fewest synops tested: that value is an upper bound);
    ``"not reached"`` (None) when no point reaches the line.

    Example
    -------
    >>> at, note = front_at([(100.0, 0.90), (10.0, 0.80), (1000.0, 0.95)], 0.85)   # halfway from 10 to 100, in log
    >>> round(at, 2), note
    (31.62, 'interpolated')
    >>> front_at([(100.0, 0.90)], 0.85)
    (100.0, 'at most')
    """
    fr = front(points)
    above = [i for i, (_, a) in enumerate(fr) if a >= line]
    if not above:
        return None, "not reached"
    i = above[0]
    if i == 0:
        return fr[0][0], "at most"
    (s0, a0), (s1, a1) = fr[i - 1], fr[i]
    u = (line - a0) / (a1 - a0)
    return math.exp(math.log(s0) + u * (math.log(s1) - math.log(s0))), "interpolated"


def verdict(mean_rows: List[Dict[str, Any]], points: float = 1.0) -> Dict[str, Any]:
    """Per dataset: each method's fewest mean network-driven synops among its settings that are within
    ``points`` of the baseline on the 95% interval of the seed-paired accuracy difference (:func:`decision`:
    not on the mean), and the method with the fewest (the winner).

    Also each method's Pareto front interpolated at that accuracy line (:func:`front_at`), an estimate
    that depends less on where a method's strengths happen to fall."""
    out: Dict[str, Any] = {}
    for ds in sorted({m["dataset"] for m in mean_rows}):
        ms = [m for m in mean_rows if m["dataset"] == ds]
        base = next((m for m in ms if m["method"] == "baseline"), None)
        if base is None:
            continue
        line = base["accuracy"] - points / 100
        best: Dict[str, Any] = {}
        decisions = {f"{m['method']} {m['strength']}".strip(): decision(m, points) for m in ms if m["method"] != "baseline"}
        for method in METHODS[1:]:
            ok = [m for m in ms if m["method"] == method and decision(m, points) == "within"]
            cand = min(ok, key=lambda m: m["driven_synops"]) if ok else None
            if cand is not None:
                best[method] = {"strength": cand["strength"], "accuracy": cand["accuracy"],
                                "accuracy_ci": cand["accuracy_ci"], "acc_diff": cand["acc_diff"],
                                "acc_diff_lo": cand["acc_diff_lo"], "acc_diff_hi": cand["acc_diff_hi"],
                                "driven_synops": cand["driven_synops"], "driven_synops_ci": cand["driven_synops_ci"],
                                "total_synops": cand["total_synops"],
                                "reduction": base["driven_synops"] / cand["driven_synops"]
                                if cand["driven_synops"] > 0 else math.inf}
            elif any(m["method"] == method for m in ms):
                best[method] = None
        fronts: Dict[str, Any] = {}
        for method in METHODS[1:]:
            pts = [(m["driven_synops"], m["accuracy"]) for m in ms if m["method"] == method and m["driven_synops"] > 0]
            if pts:
                at, note = front_at(pts, line)
                fronts[method] = {"synops": at, "note": note,
                                  "reduction": None if at is None else base["driven_synops"] / at}
        ranked = sorted((k for k, v in best.items() if v), key=lambda k: best[k]["driven_synops"])
        fr_ranked = sorted((k for k, v in fronts.items() if v["synops"] is not None), key=lambda k: fronts[k]["synops"])
        out[ds] = {"baseline_accuracy": base["accuracy"], "baseline_driven_synops": base["driven_synops"],
                   "baseline_total_synops": base["total_synops"], "accuracy_line": line, "points": points,
                   "best": best, "winner": ranked[0] if ranked else None, "ranking": ranked, "decisions": decisions,
                   "front_at_line": fronts, "front_ranking": fr_ranked}
    return out


def budgets(mean_rows: List[Dict[str, Any]], tolerance: float = BUDGET_TOLERANCE) -> List[Dict[str, Any]]:
    """Budget precision: for each target setting, the test-set synops reached against the target asked for.

    One entry per (dataset, target method, strength): the mean target, the achieved network-driven synops
    (mean and 95% CI), the budget error ``|achieved / target - 1|`` of each run, how many runs are within
    ``tolerance``, the accuracy at that budget (mean, CI, paired difference to the baseline), and what L1
    needed for the same budget: how many L1 weights this sweep tried, which of them landed within
    ``tolerance`` of the target (mean over seeds), and the closest one.
    """
    out = []
    for m in mean_rows:
        if "target" not in m or m["method"] not in ("target", "synops", "ramp", "iterative"):
            continue
        t = m["target"]
        l1 = [x for x in mean_rows if x["dataset"] == m["dataset"] and x["method"] == "l1"]
        errs = {str(x["strength"]): abs(x["driven_synops"] / t - 1) for x in l1}
        closest = min(errs, key=errs.get) if errs else None
        out.append({
            "dataset": m["dataset"], "method": m["method"], "strength": m["strength"], "n": m["n"], "target": t,
            "achieved": m["driven_synops"], "achieved_ci": m["driven_synops_ci"],
            "budget_errors": m["budget_errors"], "max_budget_error": max(m["budget_errors"]),
            "hits": sum(e <= tolerance for e in m["budget_errors"]), "tolerance": tolerance,
            "accuracy": m["accuracy"], "accuracy_ci": m["accuracy_ci"], "acc_diff": m.get("acc_diff"),
            "acc_diff_lo": m.get("acc_diff_lo"), "acc_diff_hi": m.get("acc_diff_hi"),
            "l1_tried": sorted(float(k) for k in errs), "l1_within": sorted(float(k) for k, e in errs.items() if e <= tolerance),
            "l1_closest": None if closest is None else {"lambda": float(closest), "error": errs[closest],
                                                        "achieved": next(x["driven_synops"] for x in l1 if str(x["strength"]) == closest),
                                                        "accuracy": next(x["accuracy"] for x in l1 if str(x["strength"]) == closest)},
        })
    return out


def budgets_markdown(rows: List[Dict[str, Any]]) -> str:
    """The budget-precision table as markdown."""
    if not rows:
        return ""
    lines = ["| dataset | method | setting | target | achieved (95% CI) | abs(achieved/target - 1) per run | "
             f"runs within {100 * rows[0]['tolerance']:.0f}% | accuracy (95% CI) | vs baseline (95% CI, points) | "
             "L1 weights (tried; within tolerance) | closest L1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in rows:
        errs = ", ".join(f"{100 * e:.1f}%" for e in b["budget_errors"])
        diff = "" if b["acc_diff"] is None else (f"{100 * b['acc_diff']:+.1f} ({100 * b['acc_diff_lo']:+.1f} to "
                                                 f"{100 * b['acc_diff_hi']:+.1f})")
        c = b["l1_closest"]
        ctxt = "" if c is None else f"lambda {c['lambda']:g}: {c['achieved']:,.0f} ({100 * c['error']:.0f}% off), {100 * c['accuracy']:.1f}%"
        within = ", ".join(f"lambda {v:g}" for v in b["l1_within"]) or "none"
        lines.append(f"| {b['dataset']} | {b['method']} | {STRENGTH[b['method']]} {float(b['strength']):g} | "
                     f"{b['target']:,.0f} | {b['achieved']:,.0f} ± {_pm(b['achieved_ci'], ',.0f')} | {errs} | "
                     f"{b['hits']}/{b['n']} | {100 * b['accuracy']:.1f} ± {_pm(100 * b['accuracy_ci'], '.1f')} | {diff} | "
                     f"{len(b['l1_tried'])} tried; within: {within} | {ctxt} |")
    return "\n".join(lines)


def _pm(h: float, fmt: str) -> str:
    return "inf" if math.isinf(h) else format(h, fmt)


# ----------------------------------------------------------------------------- output

STYLE = {"baseline": ("k", "s"), "target": ("C8", "X"), "synops": ("C0", "o"), "ramp": ("C9", "*"), "iterative": ("C2", "D"), "l1": ("C3", "^"),
         "hinge": ("C1", "v"), "fanout": ("C4", "P")}


def plot(mean_rows: List[Dict[str, Any]], dataset: str, path: str, judged: Optional[Dict[str, Any]] = None) -> None:
    """Accuracy vs network-driven synops for one dataset: means with min/max bars, Pareto fronts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [m for m in mean_rows if m["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    base = next((m for m in ms if m["method"] == "baseline"), None)
    if base is not None:
        ax.axhline(100 * base["accuracy"] - 1, color="k", lw=0.8, ls=":", label="baseline mean - 1 point")
    low_all = []
    for method, (color, marker) in STYLE.items():
        pts = [m for m in ms if m["method"] == method]
        if not pts:
            continue
        xs = [m["driven_synops"] for m in pts]
        ys = [100 * m["accuracy"] for m in pts]
        xerr = [[x - m["driven_synops_min"] for x, m in zip(xs, pts)], [m["driven_synops_max"] - x for x, m in zip(xs, pts)]]
        yerr = [[y - 100 * m["accuracy_min"] for y, m in zip(ys, pts)], [100 * m["accuracy_max"] - y for y, m in zip(ys, pts)]]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt=marker, color=color, ms=5, lw=0.7, capsize=2,
                    label=LABELS[method])
        for m, x, y in zip(pts, xs, ys):
            if m["strength"] != "":
                ax.annotate(f"{float(m['strength']):g}", (x, y), textcoords="offset points", xytext=(4, 3),
                            fontsize=6.5, color=color)
        fr = front(list(zip(xs, ys)))
        if len(fr) > 1:
            ax.plot(*zip(*fr), color=color, lw=1, alpha=0.8)
        low_all += ys
    top = [100 * m["accuracy"] for m in ms if m["method"] in ("baseline", "synops")]
    low = min(top) - 8 if top else 0
    below = [f"{m['method']} {m['strength']}: {100 * m['accuracy']:.0f}%" for m in ms if 100 * m["accuracy"] < low]
    if below:
        ax.set_ylim(bottom=low)
        ax.text(0.01, 0.02, "below the axis (mean): " + "; ".join(below), transform=ax.transAxes, fontsize=6, wrap=True)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    for axis in (ax.xaxis,):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if f"{v:.0e}"[0] in "2358" else ""))
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.set_xlabel("network-driven synops per sample (test set, log scale; mean, bars min/max over seeds)")
    ax.set_ylabel("test accuracy (%)")
    title = {"digits": "8x8 digits, spiking 2-D CNN", "mnist1d": "MNIST-1D, spiking 1-D CNN"}.get(dataset, dataset)
    if judged and judged.get("winner"):
        b = judged["best"][judged["winner"]]
        title += f"\nfewest synops within 1 point: {judged['winner']} ({b['reduction']:.1f}x fewer than baseline)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def verdict_markdown(judged: Dict[str, Any]) -> str:
    """The verdict as a markdown table per dataset."""
    lines = []
    for ds, v in judged.items():
        lines.append(f"**{ds}**: cross-entropy only {100 * v['baseline_accuracy']:.1f}%, "
                     f"{v['baseline_driven_synops']:,.0f} network-driven synops per sample; "
                     f"a setting is within 1 point when the whole 95% interval of its seed-paired accuracy "
                     f"difference to the baseline lies above -1 point (mean line at {100 * v['accuracy_line']:.1f}%).\n")
        lines.append("| method | best setting within 1 point (on the interval) | accuracy (95% CI) | vs baseline, points "
                     "(95% CI) | network-driven synops (95% CI) | x fewer | total synops | front of means at the line |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for method in METHODS[1:]:
            if method not in v["best"]:
                continue
            b = v["best"][method]
            f = v.get("front_at_line", {}).get(method)
            ftxt = ""
            if f and f["synops"] is not None:
                ftxt = ("<= " if f["note"] == "at most" else "") + f"{f['synops']:,.0f} ({f['reduction']:.2f}x)"
            if b is None:
                lines.append(f"| {LABELS[method]} | none within 1 point on the interval | | | | | | {ftxt} |")
                continue
            win = " **(most removed)**" if method == v["winner"] else ""
            lines.append(f"| {LABELS[method]}{win} | {STRENGTH[method]} {float(b['strength']):g} | "
                         f"{100 * b['accuracy']:.1f} ± {_pm(100 * b['accuracy_ci'], '.1f')}% | "
                         f"{100 * b['acc_diff']:+.1f} ({100 * b['acc_diff_lo']:+.1f} to {100 * b['acc_diff_hi']:+.1f}) | "
                         f"{b['driven_synops']:,.0f} ± {_pm(b['driven_synops_ci'], ',.0f')} | {b['reduction']:.2f}x | "
                         f"{b['total_synops']:,.0f} | {ftxt} |")
        lines.append("")
        dec = v.get("decisions", {})
        for kind in ("within", "undecided", "below"):
            names = [k for k, d in dec.items() if d == kind]
            if names:
                lines.append(f"- {kind}: " + ", ".join(names))
        lines.append("")
        if v.get("front_ranking"):
            lines.append("Front at the line: each method's Pareto front of means, interpolated (log synops) where it "
                         "crosses the line; `<=` when every setting stayed above the line. Fewest: "
                         + ", ".join(v["front_ranking"]) + ".")
            lines.append("")
    return "\n".join(lines)


def report(rows: List[Dict[str, Any]], out: str, start: float, write_csv: bool, reused: Any = 0,
           refused: Sequence[str] = ()) -> Dict[str, Any]:
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "tradeoff.csv")
    if write_csv:
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    mean_rows = means(rows)
    judged = verdict(mean_rows)
    failed = [r for r in rows if math.isnan(_f(r, "accuracy"))]
    for r in failed:
        print(f"FAILED RUN {r['dataset']} {r['method']} {r['strength']} seed {r['seed']}: {r['warnings']}")
    pngs = []
    for ds in sorted({m["dataset"] for m in mean_rows}):
        path = os.path.join(out, f"tradeoff_{ds}.png")
        plot(mean_rows, ds, path, judged.get(ds))
        pngs.append(path)
    seeds = sorted({int(r["seed"]) for r in rows})
    print(f"\nmeans over seeds {seeds} ({time.perf_counter() - start:.0f} s):")
    print(f"{'dataset':<8} {'method':<10}{'strength':>9}{'accuracy':>10} {'+-95%CI':>8} {'vs base (95% CI)':>20}"
          f"{'driven synops':>14} {'+-95%CI':>8}{'target':>10}  decision")
    for m in mean_rows:
        tgt = f"{m['target']:>10,.0f}" if "target" in m else f"{'':>10}"
        diff = (f"{100 * m['acc_diff']:+.1f} ({100 * m['acc_diff_lo']:+.1f},{100 * m['acc_diff_hi']:+.1f})"
                if "acc_diff" in m and m["method"] != "baseline" else "")
        print(f"{m['dataset']:<8} {m['method']:<10}{str(m['strength']):>9}{100 * m['accuracy']:>9.1f}% "
              f"{_pm(100 * m['accuracy_ci'], '.1f'):>8} {diff:>20}{m['driven_synops']:>14,.0f} "
              f"{_pm(m['driven_synops_ci'], ',.0f'):>8}{tgt}  {'' if m['method'] == 'baseline' else decision(m)}")
    budget = budgets(mean_rows)
    if budget:
        print("\nbudget precision (test-set network-driven synops per sample against the target):")
        print(budgets_markdown(budget))
    print("\nverdict: fewest network-driven synops within 1 point of the cross-entropy-only accuracy, "
          "on the 95% interval of the seed-paired difference")
    for ds, v in judged.items():
        parts = [f"{k} {float(b['strength']):g}: {100 * b['accuracy']:.1f}%, {b['driven_synops']:,.0f} "
                 f"({b['reduction']:.2f}x)" if b else f"{k}: none" for k, b in v["best"].items()]
        print(f"  {ds}: baseline {100 * v['baseline_accuracy']:.1f}%, {v['baseline_driven_synops']:,.0f}; "
              + "; ".join(parts))
        fr = [f"{k} {'<=' if v['front_at_line'][k]['note'] == 'at most' else ''}"
              f"{v['front_at_line'][k]['synops']:,.0f}" for k in v["front_ranking"]]
        print(f"  {ds}: fronts at the line (fewest first): " + "; ".join(fr))
        print(f"  {ds}: WINNER {v['winner']}")
    reused_list = list(reused) if not isinstance(reused, int) else []
    summary = {"seeds": seeds, "means": mean_rows, "verdict": judged, "budgets": budget, "csv": csv_path, "png": pngs,
               "runs": len(rows), "failed_runs": len(failed),
               "reused_runs": reused if isinstance(reused, int) else len(reused_list), "reused": reused_list,
               "refused_reuse": list(refused),
               "code_hash": sorted({str(r.get("code_hash", "")) for r in rows}),
               "torch": sorted({str(r.get("torch", "")) for r in rows}),
               "layout": sorted({str(r.get("layout", "")) for r in rows}),
               "cpu_seconds_total": round(sum(float(r.get("cpu_seconds") or 0) for r in rows), 1), "seconds": round(time.perf_counter() - start, 1)}
    with open(os.path.join(out, "tradeoff.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"\nwrote {csv_path + ', ' if write_csv else ''}{', '.join(pngs)}, {os.path.join(out, 'tradeoff.json')}")
    return summary


# ----------------------------------------------------------------------------- the energy suite

def _stat(rs: Sequence[Dict[str, Any]], key: str) -> Dict[str, float]:
    vals = [_f(r, key) for r in rs]
    return {"mean": statistics.mean(vals), "ci": ci95(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def energy_summary(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Per (dataset, method, strength): mean, 95% CI half-width, min and max over seeds of every figure.

    Also, per dataset: the matched-accuracy pairs (each ``EnergyLoss`` setting next to the ``SynOpsLoss``
    setting -- ``synops`` or ``target`` -- whose mean accuracy is closest, with the seed-paired energy and synops
    ratios) and the quantile-budget comparison (``quantile`` and ``target`` runs at the same ``B``: how many
    runs keep the test set's p95 per-sample network-driven synops at or under ``B``).

    Example
    -------
    >>> rows = [dict(dataset="d", method=m, strength=s, seed=k, accuracy=a, driven_synops=d, total_synops=d + 1,
    ...              target="", **{"energy_horowitz45nm": e, "energy_loihi-davies2018": 2 * e, "driven_p50": d,
    ...              "driven_p95": p, "driven_p99": p, "driven_max": p})
    ...         for k in (0, 1) for m, s, a, d, e, p in (("synops", 0.3, 0.9, 10.0, 4.0, 12.0),
    ...                                                  ("energy", 0.3, 0.9, 8.0, 3.0, 9.0))]
    >>> pair = energy_summary(rows)["matched"]["d"][0]
    >>> pair["energy"], pair["synops"], pair["energy_ratio"]["horowitz45nm"]["mean"]
    ('energy 0.3', 'synops 0.3', 0.75)
    """
    groups: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for r in rows:
        if math.isnan(_f(r, "accuracy")):
            continue
        groups.setdefault((str(r["dataset"]), str(r["method"]), str(r["strength"])), []).append(r)
    keys = ("accuracy", "driven_synops", "total_synops") + ENERGY_KEYS
    settings: Dict[str, Dict[str, Any]] = {}
    for (ds, m, st), rs in groups.items():
        name = m if st in ("", "None") else f"{m} {float(st):g}"
        entry = {k: _stat(rs, k) for k in keys if all(r.get(k) not in (None, "") for r in rs)}
        entry.update(dataset=ds, method=m, strength=st, seeds=sorted(int(r["seed"]) for r in rs),
                     by_seed={int(r["seed"]): r for r in rs})
        if m == "quantile" or m == "target":
            b = float(st)
            entry["budget"] = b
            entry["p95_held"] = sum(_f(r, "driven_p95") <= b for r in rs)
        settings.setdefault(ds, {})[name] = entry
    matched: Dict[str, List[Dict[str, Any]]] = {}
    quantile: Dict[str, List[Dict[str, Any]]] = {}
    for ds, sets in settings.items():
        ours = {n: e for n, e in sets.items() if e["method"] in ("synops", "target")}
        for n, e in sets.items():
            if e["method"] not in ENERGY_PRESETS or not ours:
                continue
            best = min(ours, key=lambda o: (abs(ours[o]["accuracy"]["mean"] - e["accuracy"]["mean"]),
                                            ours[o]["method"] != "synops"))   # ties: the fraction run
            o = ours[best]
            common = sorted(set(e["by_seed"]) & set(o["by_seed"]))
            pair: Dict[str, Any] = {"energy": n, "synops": best, "seeds": common, "energy_ratio": {}}
            for col, label in (("accuracy", "accuracy_diff"),):
                diffs = [_f(e["by_seed"][k], col) - _f(o["by_seed"][k], col) for k in common]
                pair[label] = {"mean": statistics.mean(diffs), "ci": ci95(diffs)} if diffs else None
            for preset in ENERGY_PRESETS.values():
                ratios = [_f(e["by_seed"][k], f"energy_{preset}") / _f(o["by_seed"][k], f"energy_{preset}")
                          for k in common]
                pair["energy_ratio"][preset] = {"mean": statistics.mean(ratios), "ci": ci95(ratios)} if ratios else None
            ratios = [_f(e["by_seed"][k], "driven_synops") / _f(o["by_seed"][k], "driven_synops") for k in common]
            pair["synops_ratio"] = {"mean": statistics.mean(ratios), "ci": ci95(ratios)} if ratios else None
            matched.setdefault(ds, []).append(pair)
        for n, e in sets.items():
            if e["method"] == "quantile":
                mean_run = next((m for m, o in sets.items() if o["method"] == "target" and o["budget"] == e["budget"]),
                                None)
                quantile.setdefault(ds, []).append({"budget": e["budget"], "quantile": n, "target": mean_run})
    for sets in settings.values():
        for e in sets.values():
            e.pop("by_seed")
    return {"settings": settings, "matched": matched, "quantile": quantile}


def _ms(s: Optional[Dict[str, float]], fmt: str, scale: float = 1.0) -> str:
    if not s:
        return ""
    return (f"{format(scale * s['mean'], fmt)} ± {_pm(scale * s['ci'], fmt)} "
            f"({format(scale * s['min'], fmt)}–{format(scale * s['max'], fmt)})")


def energy_markdown(summary: Dict[str, Any]) -> str:
    """The energy suite's tables (``energy.md``): every setting, the matched-accuracy pairs, the quantile budget."""
    lines = ["Figures per sample on the test set: mean ± 95% t-interval half-width over seeds (min–max). "
             "Energy is the table's total energy column (`counter.table(energy=preset, accumulated=True).total"
             ".energy`, all layers, the data-fed one included), in nJ per sample; synops are network-driven.", ""]
    for ds, sets in summary["settings"].items():
        lines.append(f"**{ds}**")
        lines.append("")
        lines.append("| method | setting | seeds | accuracy % | network-driven synops | p95 per-sample synops | "
                     "energy horowitz45nm (nJ) | energy loihi-davies2018 (nJ) |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for n, e in sets.items():
            lines.append(f"| {LABELS.get(e['method'], e['method'])} | {n} | {len(e['seeds'])} | "
                         f"{_ms(e.get('accuracy'), '.1f', 100)} | {_ms(e.get('driven_synops'), ',.0f')} | "
                         f"{_ms(e.get('driven_p95'), ',.0f')} | {_ms(e.get('energy_horowitz45nm'), '.2f', 1e9)} | "
                         f"{_ms(e.get('energy_loihi-davies2018'), '.1f', 1e9)} |")
        lines.append("")
        if summary["matched"].get(ds):
            lines.append("EnergyLoss against the SynOpsLoss setting of closest mean accuracy (seed-paired: "
                         "accuracy difference in points, and the ratio EnergyLoss / SynOpsLoss of each figure):")
            lines.append("")
            lines.append("| EnergyLoss | SynOpsLoss | seeds | accuracy diff (points) | synops ratio | "
                         "energy ratio horowitz45nm | energy ratio loihi-davies2018 |")
            lines.append("|---|---|---|---|---|---|---|")
            for p in summary["matched"][ds]:
                def r(x: Optional[Dict[str, float]], fmt: str = ".3f", scale: float = 1.0) -> str:
                    return "" if not x else f"{format(scale * x['mean'], fmt)} ± {_pm(scale * x['ci'], fmt)}"
                lines.append(f"| {p['energy']} | {p['synops']} | {len(p['seeds'])} | "
                             f"{r(p['accuracy_diff'], '+.1f', 100)} | {r(p['synops_ratio'])} | "
                             f"{r(p['energy_ratio']['horowitz45nm'])} | {r(p['energy_ratio']['loihi-davies2018'])} |")
            lines.append("")
        for q in summary["quantile"].get(ds, []):
            e = sets[q["quantile"]]
            lines.append(f"Quantile budget B = {q['budget']:,.0f} network-driven synops per sample "
                         f"(SynOpsLoss(target=B, quantile={QUANTILE}), counter per_sample=True):")
            lines.append("")
            lines.append("| run | accuracy % | mean synops | p50 | p95 | p99 | max | runs with p95 <= B |")
            lines.append("|---|---|---|---|---|---|---|---|")
            for label, n in (("p95 target (quantile)", q["quantile"]), ("mean target", q["target"])):
                if n is None:
                    continue
                o = sets[n]
                lines.append(f"| {label}: {n} | {_ms(o.get('accuracy'), '.1f', 100)} | "
                             f"{_ms(o.get('driven_synops'), ',.0f')} | {_ms(o.get('driven_p50'), ',.0f')} | "
                             f"{_ms(o.get('driven_p95'), ',.0f')} | {_ms(o.get('driven_p99'), ',.0f')} | "
                             f"{_ms(o.get('driven_max'), ',.0f')} | {o['p95_held']}/{len(o['seeds'])} |")
            lines.append("")
    return "\n".join(lines)


def energy_report(rows: List[Dict[str, Any]], out: str, start: float, write_csv: bool, reused: Any = (),
                  command: str = "") -> Dict[str, Any]:
    """Write ``energy.csv`` (one row per run), ``energy.json`` (:func:`energy_summary`) and ``energy.md``."""
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "energy.csv")
    if write_csv:
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    summary = energy_summary(rows)
    failed = [r for r in rows if math.isnan(_f(r, "accuracy"))]
    for r in failed:
        print(f"FAILED RUN {r['dataset']} {r['method']} {r['strength']} seed {r['seed']}: {r['warnings']}")
    md = energy_markdown(summary)
    seeds = sorted({int(r["seed"]) for r in rows})
    cpu = sum(float(r.get("cpu_seconds") or 0) for r in rows)
    head = [f"# EnergyLoss vs SynOpsLoss, and the p95 budget (`tradeoff.py --energy`)", "",
            f"Command: `{command}`" if command else "", "",
            f"{len(rows)} runs, seeds {seeds}, {len(failed)} failed, {len(list(reused))} reused; "
            f"{cpu / 60:.1f} CPU-minutes of training and testing; code hash "
            f"{', '.join(sorted({str(r.get('code_hash', '')) for r in rows}))}, "
            f"torch {', '.join(sorted({str(r.get('torch', '')) for r in rows}))}, "
            f"{', '.join(sorted({str(r.get('layout', '')) for r in rows}))}.", ""]
    if len(seeds) < 5:
        head += [f"Reduced run ({len(seeds)} seeds): the issue asks for 5 seeds; that run is "
                 "`python benchmarks/tradeoff.py --energy --full --jobs 1` and it was not run here.", ""]
    text = "\n".join(head) + md
    print(text)
    with open(os.path.join(out, "energy.md"), "w") as f:
        f.write(text + "\n")
    summary.update(csv=csv_path, runs=len(rows), failed_runs=len(failed), seeds=seeds, cpu_seconds_total=round(cpu, 1),
                   seconds=round(time.perf_counter() - start, 1))
    with open(os.path.join(out, "energy.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    return summary


# ----------------------------------------------------------------------------- CLI

def _grid_override(items: Sequence[str]) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {}
    for item in items:
        method, _, values = item.partition("=")
        if method not in ALL_METHODS[1:] or not values:
            raise SystemExit(f"--grid expects METHOD=v1,v2,... with METHOD in {ALL_METHODS[1:]}, got {item!r}")
        out[method] = [float(v) for v in values.split(",")]
    return out


def jobs_for(args: argparse.Namespace) -> List[Job]:
    energy = bool(getattr(args, "energy", False))
    if energy:
        preset = ENERGY_FULL if args.full else ENERGY_REDUCED if args.reduced else ENERGY_SMALL
    else:
        preset = FULL if args.full else REDUCED if args.reduced else SMALL
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    jobs: List[Job] = []
    override = _grid_override(args.grid or [])
    named = set(override) | set(args.methods or [])
    if not energy and named & set(ENERGY_METHODS):
        raise SystemExit(f"methods {sorted(named & set(ENERGY_METHODS))} belong to the energy suite: add --energy "
                         "(their rows go to energy.csv, not tradeoff.csv)")
    for ds in args.datasets:
        p = preset[ds]
        grid = {m: override.get(m, p["grid"].get(m, [])) for m in ALL_METHODS[1:]} if not args.grid_only else override
        common = dict(dataset=ds, epochs=args.epochs or p["epochs"], time_steps=args.time_steps or p["time_steps"],
                      batch_size=args.batch_size, lr=args.lr, hinge_max_rate=args.hinge_max_rate,
                      train_samples=args.train_samples or p["train_samples"],
                      test_samples=args.test_samples or p["test_samples"], jobs=args.jobs,
                      code_hash=getattr(args, "code_hash", ""), energy_suite=energy)
        common["warmup"] = common["epochs"] / 4 if args.warmup is None else args.warmup
        for method in ("baseline",) + ALL_METHODS[1:]:
            if args.methods and method not in args.methods and method != "baseline":
                continue
            for value in ([None] if method == "baseline" else grid.get(method, [])):
                for seed in seeds:
                    jobs.append(dict(common, method=method, strength=value, seed=seed))
    # longest first (mnist1d has more batches), so two workers finish together
    jobs.sort(key=lambda j: -j["epochs"] * (4000 if j["dataset"] == "mnist1d" else 1437) / 1437)
    return jobs


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the published sweep (5 seeds, 3-4 strengths per method)")
    p.add_argument("--reduced", action="store_true",
                   help="2 seeds, the fewest settings (budget precision, L1 for the same budgets); ~30 CPU-minutes")
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"],
                   choices=["digits", "mnist1d"])
    p.add_argument("--energy", action="store_true",
                   help="the energy suite instead: SynOpsLoss vs EnergyLoss (horowitz45nm, loihi-davies2018) and the "
                        "p95 quantile budget; writes energy.csv, energy.json, energy.md")
    p.add_argument("--methods", nargs="+", default=None, choices=list(ALL_METHODS[1:]),
                   help="regularised methods to run (default all; the baseline always runs)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (per dataset)")
    p.add_argument("--grid", nargs="+", default=None, metavar="METHOD=v1,v2",
                   help="override a method's strengths, e.g. synops=0.3,0.5 l1=1")
    p.add_argument("--grid-only", action="store_true", help="run only the methods named in --grid (and the baseline)")
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--test-samples", type=int, default=None)
    p.add_argument("--time-steps", type=int, default=None, help="default: the preset's (digits 8, MNIST-1D 4)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (cosine-annealed per epoch)")
    p.add_argument("--warmup", type=float, default=None,
                   help="epochs over which every regulariser's weight rises from 0 (default: a quarter of the epochs)")
    p.add_argument("--hinge-max-rate", type=float, default=0.01,
                   help="max_rate of the hinge^2 rate term (fixed, lava-dl's default; its lam is swept)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel training processes")
    p.add_argument("--out", default="benchmarks/results", help="folder for tradeoff.csv, tradeoff_*.png, tradeoff.json")
    p.add_argument("--from-csv", default=None, help="skip training: summarise and plot an existing tradeoff.csv")
    p.add_argument("--reuse", nargs="+", default=None, metavar="CSV",
                   help="take the rows of runs these CSVs already hold (e.g. a tradeoff.partial.csv left by an "
                        "interrupted run) instead of training them again; a row is taken only when the code hash, "
                        "settings, torch version and thread/process layout match (see reusable())")
    args = p.parse_args(argv)
    start = time.perf_counter()
    if args.from_csv:
        with open(args.from_csv) as f:
            rows = list(csv.DictReader(f))
        if args.energy:
            energy_report(rows, args.out, start, write_csv=False, command=" ".join(sys.argv))
        else:
            report(rows, args.out, start, write_csv=False)
        return 0
    args.code_hash = code_hash()
    jobs = jobs_for(args)
    old_rows: List[Dict[str, Any]] = []
    for path in args.reuse or []:
        if os.path.exists(path):
            with open(path) as f:
                old_rows += list(csv.DictReader(f))
    reused, refused = reusable(old_rows, jobs)
    for line in refused:
        print(f"  not reused (differs): {line}")
    todo = [j for i, j in enumerate(jobs) if i not in reused]
    preset = "full" if args.full else "reduced" if args.reduced else "small"
    print(f"{len(jobs)} training runs ({preset} settings) on {args.jobs} process(es), 1 torch thread each, code hash "
          f"{args.code_hash}" + (f"; {len(reused)} reused from {', '.join(args.reuse)}" if reused else ""), flush=True)
    rows: List[Dict[str, Any]] = []
    os.makedirs(args.out, exist_ok=True)
    name = "energy" if args.energy else "tradeoff"
    partial = os.path.join(args.out, f"{name}.partial.csv")   # rows so far: --reuse can take them if a run dies
    if args.jobs <= 1:
        results = map(run_one, todo)
    else:
        pool = ProcessPoolExecutor(max_workers=args.jobs)
        results = pool.map(run_one, todo)
    for r in itertools.chain(reused.values(), results):   # lazily: each row is saved as soon as it is done
        r = {k: r[k] for k in ROW_KEYS + (ENERGY_KEYS if args.energy else ()) if k in r}
        rows.append(r)
        with open(partial, "a" if len(rows) > 1 else "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(r))
            if len(rows) == 1:
                w.writeheader()
            w.writerow(r)
        print(f"  {r['dataset']:<8} {r['method']:<10}{str(r['strength']):>6} seed {r['seed']}: "
              f"acc {100 * r['accuracy']:5.1f}%  driven synops {r['driven_synops']:>10,.0f}  "
              f"({r['seconds']} s, cpu {r['cpu_seconds']} s)"
              + (f"  [{r['warnings']}]" if r["warnings"] else ""), flush=True)
    if args.jobs > 1:
        pool.shutdown()
    order = {k: i for i, k in enumerate(ALL_METHODS)}
    rows.sort(key=lambda r: (r["dataset"], order[r["method"]], float(r["strength"] or 0), int(r["seed"])))
    reused_names = [f"{r['dataset']} {r['method']} {r['strength']} seed {r['seed']}: code hash {r['code_hash']}, "
                    f"{r['torch']}, {r['layout']}, settings match" for r in reused.values()]
    if args.energy:
        energy_report(rows, args.out, start, write_csv=True, reused=reused_names,
                      command="python benchmarks/tradeoff.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    else:
        report(rows, args.out, start, write_csv=True, reused=reused_names, refused=refused)
    os.remove(partial)
    return 0


if __name__ == "__main__":
    sys.exit(main())
