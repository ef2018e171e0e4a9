"""Run every benchmark and write ``benchmarks/results/`` (CSV + PNG) and ``benchmarks/results/summary.md``.

Runs, each as a subprocess (so one failing does not stop the others, and each
gets a fresh process):

1. ``overhead.py`` (time overhead of counting; small: ``--repeats 3``),
2. ``soak.py`` (memory over a long training run; small: 200 steps, full: 1000),
3. ``tradeoff.py`` (accuracy vs synops against other regularisers; small
   settings by default, ``--full`` for the published sweep).

Each benchmark's output is kept verbatim in ``<name>.txt``; its key figures
are parsed from what it prints (``overhead``, ``soak``) or read from the JSON
it writes (``tradeoff``) into ``overhead.csv``, ``soak.csv`` / ``soak.png``
and ``summary.md``, next to a description of the machine (CPU model, cores,
memory, load, torch version and threads, date, git commit). A benchmark that
fails or whose output cannot be parsed is recorded as such in the summary;
the run goes on.

Usage::

    python benchmarks/run_all.py            # small settings (a few minutes on 2 cores)
    python benchmarks/run_all.py --full     # the published figures (trade-off: 5 seeds)
    python benchmarks/run_all.py --only tradeoff --reduced   # trade-off on 2 seeds, fewest settings, 1 process
    python benchmarks/run_all.py --only tradeoff --full
    python benchmarks/run_all.py --from-results   # run nothing: summarise the outputs already in --out

``--from-results`` re-writes ``summary.md`` (and ``overhead.csv``, ``soak.csv``,
their plots) from each benchmark's earlier record (``<name>.run.json`` and
``<name>.txt``, plus ``tradeoff.json`` / ``tradeoff.csv``): nothing is trained or
timed, and each section says when and at which commit its benchmark ran.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BENCHMARKS = ("overhead", "soak", "tradeoff")


# ----------------------------------------------------------------------------- the machine

def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def machine() -> Dict[str, Any]:
    """CPU model, cores, memory, load, OS, Python / torch versions and threads, date, git commit."""
    cpuinfo = _read("/proc/cpuinfo")
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    info: Dict[str, Any] = {
        "cpu_model": models[0].strip() if models else (platform.processor() or "unknown"),
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": _load(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_default_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = "not installed"
    try:
        import synopsloss

        info["synopsloss"] = getattr(synopsloss, "__version__", "?")
    except ImportError:
        info["synopsloss"] = "not importable"
    commit = machine_commit()
    if commit:
        info["git_commit"] = commit
    return info


def machine_commit() -> str:
    """The short git commit of the checkout, with "(with uncommitted changes)" when tracked files outside
    ``benchmarks/results`` differ from it; ``""`` outside a git checkout."""
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return ""
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
    return commit + (" (with uncommitted changes)" if dirty else "")


def _load() -> Optional[str]:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return None


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# ----------------------------------------------------------------------------- running

def commands(full: bool, out: str, reduced: bool = False) -> Dict[str, List[str]]:
    """The command line of each benchmark (small, reduced or full settings)."""
    py = sys.executable
    return {
        "overhead": [py, os.path.join(HERE, "overhead.py")] + ([] if full else ["--repeats", "3"]),
        "soak": [py, os.path.join(HERE, "soak.py"), "--threads", "1"]
        + (["--steps", "1000", "--every", "100"] if full else ["--steps", "200", "--every", "50"]),
        "tradeoff": [py, os.path.join(HERE, "tradeoff.py"), "--out", out]
        + (["--full"] if full else ["--reduced", "--jobs", "1"] if reduced else []),
    }


def run(name: str, cmd: List[str], out: str, timeout: Optional[float]) -> Dict[str, Any]:
    """Run one benchmark; its stdout and stderr go to ``<out>/<name>.txt``. Never raises."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    print(f"[{name}] {' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[1:])}", flush=True)
    start = time.perf_counter()
    rec: Dict[str, Any] = {"name": name, "command": " ".join(["python"] + [os.path.relpath(c, ROOT)
                                                                            if c.startswith(ROOT) else c
                                                                            for c in cmd[1:]])}
    commit = machine_commit()
    if commit:
        rec["git_commit"] = commit
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rec["returncode"], stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        rec["returncode"] = "timeout"
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = (err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")) + \
            f"\nkilled after {timeout:.0f} s"
    except OSError as err:
        rec["returncode"], stdout, stderr = "not started", "", str(err)
    rec["seconds"] = round(time.perf_counter() - start, 1)
    with open(os.path.join(out, f"{name}.txt"), "w") as f:
        f.write(stdout)
        if stderr.strip():
            f.write("\n--- stderr ---\n" + stderr)
    rec["stderr_tail"] = "\n".join(stderr.strip().splitlines()[-8:])
    rec["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with open(os.path.join(out, f"{name}.run.json"), "w") as f:
        json.dump(rec, f, indent=1)
    rec["stdout"] = stdout
    status = "ok" if rec["returncode"] == 0 else f"FAILED ({rec['returncode']})"
    print(f"[{name}] {status} in {rec['seconds']:.0f} s", flush=True)
    return rec


def earlier(name: str, out: str) -> Optional[Dict[str, Any]]:
    """The record of an earlier run of benchmark ``name`` in ``out`` (``<name>.run.json`` + ``<name>.txt``)."""
    try:
        with open(os.path.join(out, f"{name}.run.json")) as f:
            rec = json.load(f)
        with open(os.path.join(out, f"{name}.txt")) as f:
            rec["stdout"] = f.read().split("\n--- stderr ---\n")[0]
    except (OSError, ValueError):
        return None
    rec["earlier"] = True
    return rec


# ----------------------------------------------------------------------------- parsing

_NUM = r"([-+]?\d[\d,]*\.?\d*(?:e[-+]?\d+)?)"


def parse_overhead(text: str) -> Dict[str, Any]:
    """Figures printed by overhead.py: per network, the ratios to the plain step / forward (medians and quartiles
    of the per-round ratios); per counted network, the time synopsloss and NeuroBench add to a forward.

    Example
    -------
    >>> t = ("[1a] net, B=2: median of 3 rounds\\n              plain     readme\\n"
    ...      "training step [ms]    10.0     11.0\\n  ratio to plain   1.000 [1.00-1.00]   1.100 [1.05-1.20]\\n")
    >>> s = parse_overhead(t)["sections"][0]
    >>> s["columns"], s["ratios"]["training step"], s["quartiles"]["training step"][1]
    (['plain', 'readme'], [1.0, 1.1], (1.05, 1.2))
    """
    figures: Dict[str, Any] = {"sections": [], "counting": [], "lines": []}
    lines = text.splitlines()
    section: Optional[Dict[str, Any]] = None
    count: Optional[Dict[str, Any]] = None
    for i, line in enumerate(lines):
        head = re.match(r"^\[(\d[a-z]?)\]\s+(.*)$", line)
        if head:
            label = re.split(r":\s+median of", head.group(2))[0].strip()
            section, count = None, None
            if head.group(1).startswith("1") and len(head.group(1)) > 1:
                section = {"id": head.group(1), "label": label, "columns": [], "ratios": {}, "quartiles": {}}
                figures["sections"].append(section)
            elif head.group(1).startswith("2") and len(head.group(1)) > 1:
                count = {"id": head.group(1), "label": label}
                figures["counting"].append(count)
            figures["lines"].append(line)
            continue
        if section is not None and re.match(r"^\s+plain\s+", line):
            section["columns"] = line.split()
            figures["lines"].append(line)
        m = re.match(r"^(\S.*?)\s*\[ms\]", line)
        if section is not None and m and i + 1 < len(lines) and "ratio" in lines[i + 1]:
            cells = re.findall(r"(\d+\.\d+)(?:\s*\[(\d+\.\d+)-(\d+\.\d+)\])?", lines[i + 1])
            section["ratios"][m.group(1).strip()] = [float(c[0]) for c in cells]
            section["quartiles"][m.group(1).strip()] = [(float(c[1]), float(c[2])) if c[1] else None for c in cells]
            figures["lines"] += [line, lines[i + 1]]
        if count is not None:
            for key, pattern in (("ours", r"\+ synopsloss counts"), ("neurobench", r"\+ NeuroBench \w+"),
                                 ("floor", r"\+ floor"), ("plain", r"plain forward")):
                m = re.search(pattern + r".*?\s" + _NUM + r" ms(?:.*?=\s*" + _NUM + "x)?", line)
                if m and key + "_ms" not in count:
                    count[key + "_ms"] = float(m.group(1).replace(",", ""))
                    if m.group(2) is not None:
                        count[key + "_x"] = float(m.group(2))
                    figures["lines"].append(line)
            m = re.search(r"NeuroBench overhead / synopsloss overhead:\s*" + _NUM + "x", line)
            if m:
                count["neurobench_over_ours"] = float(m.group(1))
                figures["lines"].append(line)
            m = re.search(r"identical:\s*(.*)$", line)
            if m:
                count["identical"] = m.group(1).strip()
                figures["lines"].append(line)
        if re.match(r"^torch |^\s*torch\s+\d", line):
            figures["lines"].append(line)
    return figures


def parse_soak(text: str) -> Dict[str, Any]:
    """Per report: step, RSS, peak RSS, live tensors, synops; and the verdict line.

    Example
    -------
    >>> t = "step   100  rss    300.0 MiB  peak    301.0 MiB  live tensors    94  synops/sample  12.0  task loss 1.0  (1 s)"
    >>> parse_soak(t)["records"][0]["tensors"]
    94
    """
    records = []
    for m in re.finditer(r"^step\s+(\d+)\s+rss\s+" + _NUM + r" MiB\s+peak\s+" + _NUM +
                         r" MiB\s+live tensors\s+(\d+)\s+synops/sample\s+" + _NUM, text, re.M):
        records.append({"step": int(m.group(1)), "rss_mib": float(m.group(2)), "peak_rss_mib": float(m.group(3)),
                        "tensors": int(m.group(4)), "synops": float(m.group(5).replace(",", ""))})
    out: Dict[str, Any] = {"records": records}
    m = re.search(r"^after warm-up.*$", text, re.M)
    if m:
        out["growth"] = m.group(0)
    m = re.search(r"^verdict:\s*(.+)$", text, re.M)
    if m:
        out["verdict"] = m.group(1).strip()
    return out


# ----------------------------------------------------------------------------- writing

def _write_csv(path: str, rows: Sequence[Dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _soak_png(records: List[Dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, [r["rss_mib"] for r in records], "o-", label="RSS")
    ax.plot(steps, [r["peak_rss_mib"] for r in records], "s--", label="peak RSS")
    ax.set_xlabel("training step")
    ax.set_ylabel("MiB")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["tensors"] for r in records], "^:", color="C3", label="live tensors")
    ax2.set_ylabel("live tensors")
    ax2.set_ylim(0, max(r["tensors"] for r in records) * 1.3)
    fig.legend(loc="lower right", fontsize=8)
    ax.set_title("soak: memory over a training run with SynOpsLoss", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _overhead_png(sections: List[Dict[str, Any]], path: str) -> None:
    """One bar group per network and measurement: each counter's median ratio to the plain network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(f"{sec['label'].split(',')[0]}\n{what}", sec["columns"], vals)
              for sec in sections for what, vals in sec["ratios"].items()]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups)), 3.4))
    names = list(dict.fromkeys(c for _, cols, _ in groups for c in cols if c != "plain"))
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        xs, ys = [], []
        for i, (_, cols, vals) in enumerate(groups):
            if name in cols and cols.index(name) < len(vals):
                xs.append(i + k * width)
                ys.append(vals[cols.index(name)])
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(groups))])
    ax.set_xticklabels([g[0] for g in groups], fontsize=7)
    ax.axhline(1.0, color="k", lw=0.7)
    ax.set_ylabel("time / plain")
    ax.set_title("overhead: time relative to the plain network (median of per-round ratios)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _status(rec: Dict[str, Any]) -> str:
    when = f" (an earlier invocation, finished {rec.get('finished', '?')})" if rec.get("earlier") else ""
    if rec["returncode"] == 0:
        return f"ok, {rec['seconds']:.0f} s{when}"
    return f"**FAILED** (exit status {rec['returncode']}, after {rec['seconds']:.0f} s){when}"


def _provenance(rec: Dict[str, Any]) -> List[str]:
    """The commit the benchmark ran at (when its record has one) and its record's note, as summary lines."""
    lines = []
    if rec.get("git_commit"):
        lines += ["", f"Ran at commit {rec['git_commit']}."]
    if rec.get("note"):
        lines += ["", f"Note: {rec['note']}."]
    return lines


def _kind(full: bool, args: str, recs: Dict[str, Dict[str, Any]], from_results: bool) -> str:
    """"full", "reduced" or "small": from this invocation's options, or (``--from-results``) from the command
    the trade-off benchmark was run with."""
    if from_results and "tradeoff" in recs:
        cmd = recs["tradeoff"].get("command", "").split()
        return "full" if "--full" in cmd else "reduced" if "--reduced" in cmd else "small"
    return "full" if full else "reduced" if "--reduced" in args else "small"


def _epochs(out: str) -> str:
    """Epochs and time steps per dataset as the rows of ``<out>/tradeoff.csv`` record them ("" without the CSV)."""
    try:
        with open(os.path.join(out, "tradeoff.csv")) as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return ""
    per: Dict[str, set] = {}
    for r in rows:
        t = re.search(r"\bT=(\d+)", r.get("settings", ""))
        per.setdefault(r.get("dataset", "?"), set()).add((r.get("epochs", "?"), t.group(1) if t else "?"))
    return "; ".join(f"{ds}: " + ", ".join(f"{e} epochs, {t} time steps" for e, t in sorted(v))
                     for ds, v in sorted(per.items()))


def _failure(rec: Dict[str, Any]) -> List[str]:
    if rec["returncode"] == 0:
        return []
    return ["", "Last lines of its error output:", "", "```", rec["stderr_tail"] or "(none)", "```"]


def settings_markdown(means: Sequence[Dict[str, Any]]) -> str:
    """Every trade-off setting (``tradeoff.json``'s ``means``): accuracy and network-driven synops as mean ± 95%
    half-width (min–max over seeds), the seed-paired accuracy difference to the baseline with its 95% interval, and
    the 1-point decision taken on that interval (``tradeoff.decision``).

    Example
    -------
    >>> m = {"dataset": "d", "method": "l1", "strength": "2.0", "n": 3, "accuracy": 0.9, "accuracy_ci": 0.01,
    ...      "accuracy_min": 0.89, "accuracy_max": 0.91, "driven_synops": 100.0, "driven_synops_ci": 5.0,
    ...      "driven_synops_min": 96.0, "driven_synops_max": 104.0, "acc_diff": -0.002, "acc_diff_lo": -0.006,
    ...      "acc_diff_hi": 0.002, "acc_diff_n": 3}
    >>> print(settings_markdown([m]).splitlines()[-1])
    | d | l1 2 | 3 | 90.0 ± 1.0 (89.0–91.0) | 100 ± 5 (96–104) | -0.2 (-0.6 to +0.2) | within |
    """
    sys.path.insert(0, HERE)
    from tradeoff import _pm, decision

    lines = ["| dataset | method, setting | seeds | accuracy % (95% CI; min–max) | network-driven synops (95% CI; "
             "min–max) | vs baseline, points (95% CI) | within 1 point? |", "|---|---|---|---|---|---|---|"]
    for m in means:
        name = m["method"] + ("" if m["strength"] in ("", None) else f" {float(m['strength']):g}")
        base = m["method"] == "baseline"
        diff = "" if base or "acc_diff" not in m else (f"{100 * m['acc_diff']:+.1f} ({100 * m['acc_diff_lo']:+.1f} "
                                                        f"to {100 * m['acc_diff_hi']:+.1f})")
        lines.append(f"| {m['dataset']} | {name} | {m['n']} | {100 * m['accuracy']:.1f} ± "
                     f"{_pm(100 * m['accuracy_ci'], '.1f')} ({100 * m['accuracy_min']:.1f}–{100 * m['accuracy_max']:.1f}) | "
                     f"{m['driven_synops']:,.0f} ± {_pm(m['driven_synops_ci'], ',.0f')} "
                     f"({m['driven_synops_min']:,.0f}–{m['driven_synops_max']:,.0f}) | {diff} | "
                     f"{'' if base else decision(m)} |")
    return "\n".join(lines)


def summarize(recs: Dict[str, Dict[str, Any]], info: Dict[str, Any], full: bool, out: str,
              info_end: Optional[str] = None, argv: Optional[Sequence[str]] = None,
              from_results: bool = False) -> str:
    """Write overhead.csv, soak.csv/png and summary.md from the runs; return the markdown.

    ``from_results``: the records are earlier invocations' and nothing ran now; the summary says so, takes the
    settings (full / reduced / small) from the trade-off command, and names each benchmark's own commit.
    """
    args = " ".join(argv) if argv is not None else ("--full" if full else "")
    kind = _kind(full, args, recs, from_results)
    md = [f"# Benchmark results ({kind} settings)", "",
          f"Written by `python benchmarks/run_all.py{' ' + args if args else ''}`. "
          "Every figure below is parsed from the benchmarks' own output (kept verbatim in `<name>.txt`).", ""]
    if from_results:
        md += ["Nothing was run by this invocation: each section below re-summarises the outputs an earlier "
               "invocation left in this folder, and says when and (where recorded) at which commit it ran. The "
               "machine table describes the machine and checkout at the time of writing this summary; the load "
               "average is not the one during the runs.", ""]
    md += ["## Machine", "",
          "| | |", "|---|---|",
          f"| CPU | {info['cpu_model']} |",
          f"| cores | {info['logical_cpus']} logical, {info['cpus_available']} available to this process |",
          f"| memory | {info['memory_gib']} GiB |",
          f"| OS | {info['os']} |",
          f"| Python / torch | {info['python']} / {info.get('torch')} (default {info.get('torch_default_threads')} threads) |",
          f"| synopsloss | {info.get('synopsloss')}, commit {info.get('git_commit', '?')} |",
          f"| date | {info['date']} |",
          f"| load average | at start {info['load_average']}; at end {info_end} |",
          ]
    md += ["", "The machine is shared: the load average says how busy it was. Threads: overhead.py sets its own "
          "(`--threads`, default 2); soak.py runs with 1; tradeoff.py trains in processes of 1 thread each "
          "(2 with `--full`, 1 with `--reduced`; each row records its layout).", ""]

    if "overhead" in recs:
        rec = recs["overhead"]
        md += ["## Overhead (`overhead.py`)", "", f"`{rec['command']}`: {_status(rec)}."] + _provenance(rec)
        figures = parse_overhead(rec["stdout"]) if rec["stdout"] else {"sections": [], "counting": [], "lines": []}
        rows = []
        for sec in figures["sections"]:
            cols = sec["columns"] or [f"col{i}" for i in range(len(next(iter(sec["ratios"].values()), [])))]
            if not sec["ratios"]:
                continue
            md += ["", f"{sec['label']}: time relative to the plain network (median of the per-round ratios "
                   "[quartiles]):", "", "| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            for what, vals in sec["ratios"].items():
                qs = sec["quartiles"].get(what) or [None] * len(vals)
                md.append(f"| {what} | " + " | ".join(f"{v:.2f}" + (f" [{q[0]:.2f}-{q[1]:.2f}]" if q else "")
                                                   for v, q in zip(vals, qs)) + " |")
                rows.append(dict({"network": sec["label"], "measurement": what},
                                 **{c: v for c, v in zip(cols, vals)}))
        if rows:
            _write_csv(os.path.join(out, "overhead.csv"), rows)
            try:
                _overhead_png(figures["sections"], os.path.join(out, "overhead.png"))
            except Exception as err:  # a plot must not lose the figures
                md.append(f"(overhead.png not drawn: {err})")
        counted = [c for c in figures["counting"] if "ours_ms" in c and "neurobench_ms" in c]
        if counted:
            md += ["", "Counting (`no_grad` forward + counts) against NeuroBench's `SynapticOperations`, time added "
                   "to a forward pass:", "", "| network | synopsloss | NeuroBench | NeuroBench / synopsloss | "
                   "counts identical |", "|---|---|---|---|---|"]
            for c in counted:
                if c["ours_ms"] <= 0:
                    ratio = "not meaningful (synopsloss' added time at or below zero: timing noise)"
                else:
                    ratio = f"**{c['neurobench_ms'] / c['ours_ms']:.1f}x**"
                md.append(f"| {c['label']} | {c['ours_ms']:.2f} ms ({c.get('ours_x', float('nan')):.3f}x) | "
                          f"{c['neurobench_ms']:.2f} ms ({c.get('neurobench_x', float('nan')):.2f}x) | {ratio} | "
                          f"{c.get('identical', '?')} |")
        if figures["lines"]:
            md += ["", "Key lines as printed:", "", "```"] + figures["lines"] + ["```"]
        elif rec["returncode"] == 0:
            md += ["", "(no figure could be parsed from its output: see `overhead.txt`)"]
        md += _failure(rec) + [""]

    if "soak" in recs:
        rec = recs["soak"]
        md += ["## Soak (`soak.py`)", "", f"`{rec['command']}`: {_status(rec)}."] + _provenance(rec)
        figures = parse_soak(rec["stdout"]) if rec["stdout"] else {"records": []}
        if figures["records"]:
            r = figures["records"]
            _write_csv(os.path.join(out, "soak.csv"), r)
            try:
                _soak_png(r, os.path.join(out, "soak.png"))
            except Exception as err:
                md.append(f"(soak.png not drawn: {err})")
            md += ["", f"Live tensors at each report from step {r[0]['step']} to {r[-1]['step']}: "
                   f"{', '.join(str(x['tensors']) for x in r)}; RSS {r[0]['rss_mib']:.1f} -> {r[-1]['rss_mib']:.1f} MiB, "
                   f"peak RSS {r[0]['peak_rss_mib']:.1f} -> {r[-1]['peak_rss_mib']:.1f} MiB (`soak.csv`, `soak.png`)."]
            if "growth" in figures:
                md += ["", f"`{figures['growth']}`"]
            md += ["", f"Verdict: **{figures.get('verdict', 'not printed')}**."]
        elif rec["returncode"] == 0:
            md += ["", "(no figure could be parsed from its output: see `soak.txt`)"]
        md += _failure(rec) + [""]

    if "tradeoff" in recs:
        rec = recs["tradeoff"]
        md += ["## Accuracy vs synops (`tradeoff.py`)", "", f"`{rec['command']}`: {_status(rec)}."] + _provenance(rec)
        path = os.path.join(out, "tradeoff.json")
        data = None
        if rec["returncode"] == 0 and os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
        if data:
            sys.path.insert(0, HERE)
            from tradeoff import budgets_markdown, verdict_markdown

            cpu = data.get("cpu_seconds_total")
            if cpu:
                md += ["", f"Training and testing took {cpu / 60:.0f} CPU-minutes in all (sum over runs of each "
                       f"process' CPU time)."]
            md += ["", f"Code hash {', '.join(data.get('code_hash', [])) or '?'} (synopsloss/ and the trade-off "
                   f"files), torch {', '.join(data.get('torch', []))}, layout {', '.join(data.get('layout', []))}."]
            trained = _epochs(out)
            if trained:
                md += ["", f"Trained (as the rows of `tradeoff.csv` record it): {trained}."]
            if data.get("reused"):
                md += ["", f"{len(data['reused'])} of the {data['runs']} rows were reused from an earlier CSV "
                       "(`--reuse`), each because its code hash, settings, torch version and thread/process layout all "
                       "match this run:", ""] + [f"- {r}" for r in data["reused"]]
            else:
                md += ["", "No row was reused: every row was trained by the command above."]
            if data.get("refused_reuse"):
                md += ["", f"{len(data['refused_reuse'])} earlier rows were not reused because they differ:", ""] + \
                      [f"- {r}" for r in data["refused_reuse"][:20]] + \
                      ([f"- ... and {len(data['refused_reuse']) - 20} more"] if len(data["refused_reuse"]) > 20 else [])
            md += ["", f"{data['runs']} training runs, seeds {data['seeds']}; `tradeoff.csv` (one row per run), "
                   + ", ".join(f"`{os.path.basename(p)}`" for p in data["png"]) + " (Pareto fronts).", "",
                   "Fewest network-driven synops per sample (test set, mean over seeds) among the settings that are "
                   "within 1 point of the cross-entropy-only accuracy on the 95% interval (Student's t) of the "
                   "seed-paired difference:", "",
                   verdict_markdown(data["verdict"])]
            if data.get("means"):
                md += ["", "### Every setting", "",
                       "Mean ± 95% half-width (Student's t over seeds), with the lowest and highest run; the "
                       "decision is taken on the interval of the seed-paired difference, never on the mean:", "",
                       settings_markdown(data["means"])]
            if data.get("budgets"):
                md += ["", "### Budget precision", "",
                       "The network-driven synops per sample reached on the test set against the target asked for, "
                       "and what the L1 spike-rate term needed for the same budget (its weights tried in this sweep, "
                       "those whose mean landed within 5% of the target):", "", budgets_markdown(data["budgets"])]
            md.append("")
            for ds, v in data["verdict"].items():
                md.append(f"- {ds}: most network-driven synops removed within 1 point: **{v['winner']}**"
                          + (f" (ranking: {', '.join(v['ranking'])})" if v["ranking"] else ""))
            if not full and len(data["seeds"]) < 5:
                md += ["", f"Only {len(data['seeds'])} seed(s): the 95% intervals are wide (t with "
                       f"{max(len(data['seeds']) - 1, 0)} degree(s) of freedom) and many decisions stay undecided. "
                       "The full 5-seed run is `python benchmarks/run_all.py --full`; it was not run in this session."]
        md += _failure(rec) + [""]

    text = "\n".join(md).rstrip() + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    return text


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the published settings (tradeoff alone ~25 min on 2 cores)")
    p.add_argument("--reduced", action="store_true",
                   help="tradeoff.py --reduced --jobs 1: 2 seeds, the fewest settings, one process (~30 CPU-minutes)")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), help="run only these")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    p.add_argument("--timeout", type=float, default=None, help="seconds before a benchmark is stopped (default: none)")
    p.add_argument("--from-results", action="store_true",
                   help="run nothing: re-write summary.md from the records and outputs earlier invocations left in "
                        "--out (<name>.run.json, <name>.txt, tradeoff.json, tradeoff.csv)")
    p.add_argument("--reuse-tradeoff", action="store_true",
                   help="pass --reuse <out>/tradeoff.csv <out>/tradeoff.partial.csv to tradeoff.py: keep the runs "
                        "already there (e.g. after an interruption, or when strengths were added) and train the rest")
    args = p.parse_args(argv)
    out = os.path.abspath(args.out)
    if args.from_results:
        if args.full or args.reduced or args.reuse_tradeoff:
            p.error("--from-results runs nothing: --full, --reduced and --reuse-tradeoff do not apply "
                    "(the settings are taken from each benchmark's record)")
        recs = {name: rec for name in BENCHMARKS if name in args.only
                for rec in [earlier(name, out)] if rec is not None}
        if not recs:
            p.error(f"--from-results found no benchmark record in {out} (no <name>.run.json with its <name>.txt "
                    f"for {', '.join(args.only)}): run the benchmarks first, or pass the --out they wrote to")
        summarize(recs, machine(), False, out, info_end=_load(), argv=sys.argv[1:] if argv is None else argv,
                  from_results=True)
        failed = [n for n, r in recs.items() if r["returncode"] != 0]
        print(f"wrote {os.path.join(out, 'summary.md')} from the records of {', '.join(recs)}"
              + (f"; they record FAILED: {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0
    os.makedirs(out, exist_ok=True)
    info = machine()
    cmds = commands(args.full, out, reduced=args.reduced)
    if args.reuse_tradeoff:
        cmds["tradeoff"] += ["--reuse", os.path.join(out, "tradeoff.csv"), os.path.join(out, "tradeoff.partial.csv")]
    recs: Dict[str, Dict[str, Any]] = {}
    for name in BENCHMARKS:
        if name not in args.only:
            rec = earlier(name, out)   # keep an earlier invocation's figures in the summary
            if rec is not None:
                recs[name] = rec
            continue
        rec = run(name, cmds[name], out, args.timeout)
        if name == "overhead" and rec["returncode"] == 2 and "unrecognized arguments" in rec["stderr_tail"] \
                and len(cmds[name]) > 2:
            # overhead.py's options changed: run it with its own defaults rather than not at all
            rejected = rec["stderr_tail"].splitlines()[-1]
            rec = run(name, cmds[name][:2], out, args.timeout)
            rec["note"] = f"its small-settings options were refused ({rejected}); ran with its defaults"
        recs[name] = rec
    summarize(recs, info, args.full, out, info_end=_load(), argv=sys.argv[1:] if argv is None else argv)
    failed = [n for n, r in recs.items() if r["returncode"] != 0 and n in args.only]
    print(f"wrote {os.path.join(out, 'summary.md')}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
