"""Accuracy vs synops trade-off: the synops loss against a plain L1 spike-rate regulariser.

Trains the demo's spiking CNN (``synopsloss.demo``: 8x8 digits, 8 time steps,
snntorch ``Leaky``) with several seeds:

* ``baseline``: cross-entropy only;
* ``synops``: + ``SynOpsLoss(counter, fraction=f)`` for each target fraction
  ``f`` of the initial network-driven synops (default shape; weight rising
  from 0 to 1 over the first quarter of training, as in the demo);
* ``l1``: + ``lambda * mean hidden firing rate`` for each ``lambda`` (the usual
  activity regulariser, which does not know the fan-outs).

Writes ``tradeoff.csv`` (one row per run) and ``tradeoff.png`` (test accuracy
vs synops per sample, mean over seeds with the Pareto front of each method),
and prints the per-setting means and three checks:

1. some synops-loss setting reaches >= 2x fewer network-driven synops than the
   baseline at <= 2 points of accuracy loss;
2. the trained network-driven synops land within 10% of the target;
3. at equal accuracy (no more than 2 points below the baseline) the synops
   loss reaches fewer synops than the best L1 setting.

Usage::

    python benchmarks/tradeoff.py                 # defaults: 3 seeds, ~10 min on 2 idle cores
    python benchmarks/tradeoff.py --seeds 0 --epochs 2 --fractions 0.5 --l1 1   # smoke test
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Tuple


def _one(job: Tuple[str, Optional[float], int, int, float]) -> Dict[str, object]:
    """Train one configuration; runs in a worker process."""
    method, value, seed, epochs, warmup = job
    import torch

    torch.set_num_threads(1)
    from synopsloss import SynOpsLoss, demo

    torch.manual_seed(seed)
    data = demo.load_data(seed)
    net = demo.SpikingCNN()
    kwargs: Dict[str, object] = dict(epochs=epochs, seed=seed, progress=False)
    if method == "synops":
        weight = demo.warmup_weight(1.0, warmup, len(data[1]), 64)
        kwargs["make_loss"] = lambda c: SynOpsLoss(c, fraction=value, weight=weight)
    elif method == "l1":
        kwargs["activity_l1"] = value
    result = demo.train(net, data, **kwargs)
    target = next(iter(result.targets.values()), None) if result.targets else None
    return {
        "method": method,
        "value": "" if value is None else value,
        "seed": seed,
        "accuracy": result.accuracy,
        "driven_synops": result.driven_synops,
        "total_synops": result.synops,
        "target": "" if target is None else target,
        "seconds": round(result.seconds, 1),
    }


def _mean_rows(rows: List[Dict[str, object]]) -> List[Dict[str, object]]:
    groups: Dict[Tuple[str, str], List[Dict[str, object]]] = {}
    for r in rows:
        groups.setdefault((str(r["method"]), str(r["value"])), []).append(r)
    out = []
    for (method, value), rs in groups.items():
        m: Dict[str, object] = {"method": method, "value": value, "n": len(rs)}
        for k in ("accuracy", "driven_synops", "total_synops"):
            vals = [float(r[k]) for r in rs]
            m[k] = statistics.mean(vals)
            m[k + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        if method == "synops":
            errs = [abs(float(r["driven_synops"]) - float(r["target"])) / float(r["target"]) for r in rs]
            m["target"] = statistics.mean(float(r["target"]) for r in rs)
            m["target_error"] = statistics.mean(errs)
            m["target_error_max"] = max(errs)
        out.append(m)
    return out


def _front(points: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """Pareto front of (synops, accuracy): fewer synops, higher accuracy."""
    front, best = [], -1.0
    for s, a in sorted(points):
        if a > best:
            front.append((s, a))
            best = a
    return front


def _synops_at(front: List[Tuple[float, float]], acc: float) -> Optional[float]:
    """Synops of a (synops, accuracy) front at accuracy ``acc``, linearly interpolated; None outside it."""
    for (s0, a0), (s1, a1) in zip(front, front[1:]):
        if a0 <= acc <= a1:
            return s0 if a1 == a0 else s0 + (s1 - s0) * (acc - a0) / (a1 - a0)
    return None


def _plot(means: List[Dict[str, object]], rows: List[Dict[str, object]], path: str, key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = {"baseline": ("k", "s"), "synops": ("C0", "o"), "l1": ("C3", "^")}
    labels = {"baseline": "cross-entropy only", "synops": "SynOpsLoss (fraction of initial)", "l1": "L1 spike rate"}
    for method, (color, marker) in styles.items():
        runs = [r for r in rows if r["method"] == method]
        ax.scatter([float(r[key]) for r in runs], [100 * float(r["accuracy"]) for r in runs], s=10, alpha=0.3,
                   color=color, marker=marker)
        ms = [m for m in means if m["method"] == method]
        if not ms:
            continue
        pts = [(float(m[key]), 100 * float(m["accuracy"])) for m in ms]
        ax.scatter(*zip(*pts), color=color, marker=marker, s=40, label=labels[method])
        for m, (x, y) in zip(ms, pts):
            if m["value"] != "":
                ax.annotate(f"{float(m['value']):g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7,
                            color=color)
        fr = _front(pts)
        if len(fr) > 1:
            ax.plot(*zip(*fr), color=color, lw=1)
    # zoom on the useful range; runs far below it (collapsed networks) are listed instead
    top = [100 * float(m["accuracy"]) for m in means if m["method"] in ("baseline", "synops")]
    low = min(top) - 6 if top else 0
    below = [f"{r['method']} {r['value']} seed {r['seed']}: {100 * float(r['accuracy']):.0f}%"
             for r in rows if 100 * float(r["accuracy"]) < low]
    if below:
        ax.set_ylim(low, 100)
        ax.text(0.02, 0.03, "below the axis: " + "; ".join(below), transform=ax.transAxes, fontsize=6, wrap=True)
    ax.set_xlabel(f"{key.replace('_', ' ')} per sample (test set)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("8x8 digits, spiking CNN: accuracy vs synops (mean over seeds)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.35, 0.5, 0.6, 0.7],
                   help="SynOpsLoss targets as fractions of the initial network-driven synops")
    p.add_argument("--l1", type=float, nargs="+", default=[0.3, 1.0, 1.5, 2.0, 3.0],
                   help="weights of the L1 spike-rate regulariser")
    p.add_argument("--warmup", type=float, default=None,
                   help="epochs over which the SynOpsLoss weight rises from 0 to 1 (default: a quarter of --epochs)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel training processes")
    p.add_argument("--out", default="benchmarks/results", help="folder for tradeoff.csv and tradeoff.png")
    p.add_argument("--from-csv", default=None, help="skip training: summarise and plot an existing tradeoff.csv")
    args = p.parse_args(argv)
    if args.from_csv:
        with open(args.from_csv) as f:
            rows_in = list(csv.DictReader(f))
        return _report(rows_in, args, time.perf_counter())

    warmup = args.epochs / 4 if args.warmup is None else args.warmup
    jobs = [("baseline", None, s, args.epochs, 0.0) for s in args.seeds]
    jobs += [("synops", f, s, args.epochs, warmup) for f in args.fractions for s in args.seeds]
    jobs += [("l1", lam, s, args.epochs, 0.0) for lam in args.l1 for s in args.seeds]
    print(f"{len(jobs)} training runs ({args.epochs} epochs each) on {args.jobs} process(es)", flush=True)
    start = time.perf_counter()
    rows: List[Dict[str, object]] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(_one, jobs):
            rows.append(r)
            print(f"  {r['method']:<8} {str(r['value']):>5} seed {r['seed']}: acc {100 * float(r['accuracy']):5.1f}%  "
                  f"driven synops {float(r['driven_synops']):>9,.0f}  ({r['seconds']} s)", flush=True)
    return _report(rows, args, start, write=True)


def _report(rows: List[Dict[str, object]], args: argparse.Namespace, start: float, write: bool = False) -> int:
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "tradeoff.csv")
    if write:
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    means = _mean_rows(rows)
    png_path = os.path.join(args.out, "tradeoff.png")
    _plot(means, rows, png_path, "driven_synops")
    _plot(means, rows, os.path.join(args.out, "tradeoff_total.png"), "total_synops")

    print(f"\nmeans over seeds {sorted({int(r['seed']) for r in rows})} ({time.perf_counter() - start:.0f} s):")
    print(f"{'method':<9}{'value':>6}{'accuracy':>10}{'driven synops':>15}{'total synops':>14}{'target':>10}{'|err|':>7}")
    for m in means:
        tgt = f"{float(m['target']):>10,.0f}{100 * float(m['target_error']):>6.1f}%" if "target" in m else ""
        print(f"{m['method']:<9}{str(m['value']):>6}{100 * float(m['accuracy']):>9.1f}%"
              f"{float(m['driven_synops']):>15,.0f}{float(m['total_synops']):>14,.0f}{tgt}")

    base = next(m for m in means if m["method"] == "baseline")
    acc0, drv0 = float(base["accuracy"]), float(base["driven_synops"])
    ok_acc = [m for m in means if float(m["accuracy"]) >= acc0 - 0.02]
    syn_ok = [m for m in ok_acc if m["method"] == "synops"]
    l1_ok = [m for m in ok_acc if m["method"] == "l1"]
    best_syn = min(syn_ok, key=lambda m: float(m["driven_synops"])) if syn_ok else None
    best_l1 = min(l1_ok, key=lambda m: float(m["driven_synops"])) if l1_ok else None
    print("\nchecks (means over seeds):")
    if best_syn:
        ratio = drv0 / float(best_syn["driven_synops"])
        print(f"1. fraction {best_syn['value']}: {ratio:.2f}x fewer network-driven synops than the baseline at "
              f"{100 * (float(best_syn['accuracy']) - acc0):+.1f} accuracy points -> {'PASS' if ratio >= 2 else 'FAIL'}")
    else:
        print("1. no synops-loss setting within 2 accuracy points of the baseline -> FAIL")
    errs = [(m["value"], float(m["target_error"]), float(m["target_error_max"])) for m in means if m["method"] == "synops"]
    within = all(e <= 0.10 for _, e, _ in errs)
    print("2. |trained - target| / target (mean, max over seeds): "
          + ", ".join(f"{v}: {100 * e:.1f}% ({100 * mx:.1f}%)" for v, e, mx in errs)
          + f" -> {'PASS' if within else 'not all within 10%'}")
    if best_syn and best_l1:
        better = float(best_syn["driven_synops"]) < float(best_l1["driven_synops"])
        print(f"3. fewest driven synops within 2 points of the baseline: SynOpsLoss {float(best_syn['driven_synops']):,.0f} "
              f"(fraction {best_syn['value']}, {100 * float(best_syn['accuracy']):.1f}%) vs L1 "
              f"{float(best_l1['driven_synops']):,.0f} (lambda {best_l1['value']}, {100 * float(best_l1['accuracy']):.1f}%)"
              f" -> {'PASS' if better else 'FAIL'}")
    else:
        print("3. cannot compare: " + ("no L1 setting" if not best_l1 else "no SynOpsLoss setting")
              + " within 2 points of the baseline")
    # the whole fronts: the SynOpsLoss front's synops at each L1 point's accuracy (linear interpolation)
    front = _front([(float(m["driven_synops"]), float(m["accuracy"])) for m in means if m["method"] == "synops"])
    for m in (m for m in means if m["method"] == "l1"):
        acc, syn = float(m["accuracy"]), float(m["driven_synops"])
        at = _synops_at(front, acc)
        if at is None:
            print(f"   L1 lambda {m['value']}: {100 * acc:.1f}%, {syn:,.0f} synops (outside the SynOpsLoss front's range)")
        else:
            print(f"   L1 lambda {m['value']}: {100 * acc:.1f}%, {syn:,.0f} synops; SynOpsLoss front at that accuracy: "
                  f"{at:,.0f} ({syn / at:.2f}x {'more' if syn > at else 'FEWER'} for L1)")
    print(f"\nwrote {csv_path}, {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
