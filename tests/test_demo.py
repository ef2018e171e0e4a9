"""The demo end to end with tiny settings (as a subprocess, like a user runs it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # each test trains in a subprocess

pytest.importorskip("snntorch")
pytest.importorskip("sklearn")

TINY = ["--epochs", "1", "--train-samples", "96", "--test-samples", "40", "--time-steps", "3", "--batch-size", "32",
        "--quiet"]


ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")  # this checkout, whatever the cwd
    return subprocess.run([sys.executable, "-m", "synopsloss", "demo", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_demo_runs_end_to_end_and_its_summary_agrees_with_its_tables(tmp_path):
    png = tmp_path / "synopsloss-demo.png"  # saved by default, in the current directory
    proc = _run(*TINY, "--target", "0.4", "--seed", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "40 test 8x8 digits, 3 time steps, 1 epochs" in out
    # the recipe: the budget, 0.4 x the first run's network-driven synops, as an absolute target; the weight
    # warmed up over a quarter of the epochs
    t = re.search(r"synops target per sample \(driven: ([\d,]+)\) = 0\.40 x the ([\d,]+) of the run without loss",
                  out)
    assert t, out
    assert f"SynOpsLoss(target={t.group(1)}, weight=1, warm-up 0.25 epochs)" in out
    # two per-layer tables, each with the data-fed conv1 marked and a total row
    assert out.count("conv1 *") == 2 and len(re.findall(r"^Total ", out, re.M)) == 2

    # the summary's synops equal the sums of the tables' synaptic rows (recomputed here)
    rows = [line for line in out.splitlines() if re.match(r"^(conv1 \*|conv2|fc) ", line)]
    assert len(rows) == 6
    header = re.split(r"\s{2,}", next(line for line in out.splitlines() if line.startswith("Layer ")).strip())

    def synops_of(line: str) -> str:
        return re.split(r"\s{2,}", line.strip())[header.index("Synops")]

    m = re.search(r"network-driven synops / sample\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)x fewer", out)
    assert m, out
    base_driven, reg_driven, ratio = _number(m.group(1)), _number(m.group(2)), float(m.group(3))
    assert ratio == pytest.approx(base_driven / reg_driven, abs=0.006)
    for line, driven in ((rows[1:3], base_driven), (rows[4:6], reg_driven)):
        # the table prints 3 significant digits (e.g. 24.6k): the driven rows add up to the summary
        cells = [synops_of(r) for r in line]
        total = sum(float(c[:-1]) * 1e3 if c.endswith("k") else float(c) for c in cells)
        assert total == pytest.approx(driven, rel=0.01)
    # the data-fed conv1: same in both runs (training cannot change it), and close to its expectation
    # T x sum(intensity x fan-out) with the fan-out of a 3x3, padding-1 conv with 16 channels, by hand
    conv1 = [synops_of(rows[0]), synops_of(rows[3])]
    assert conv1[0] == conv1[1]
    from synopsloss.cli.digits import load_data

    x_test = load_data(3)[2][:40, 0].double()
    per_dim = torch.tensor([2.0] + [3.0] * 6 + [2.0], dtype=torch.float64)
    fanout = 16 * per_dim[:, None] * per_dim[None, :]
    expected = 3 * float((x_test * fanout).sum()) / 40
    value = float(conv1[0][:-1]) * 1e3 if conv1[0].endswith("k") else float(conv1[0])
    assert value == pytest.approx(expected, rel=0.1)
    assert _number(t.group(2)) == base_driven and _number(t.group(1)) == pytest.approx(0.4 * base_driven, abs=1)
    # how close the second run came: its network-driven synops against the target, signed
    r = re.search(r"reached ([\d,]+) network-driven synops per sample on the test set: ([+-][\d.]+)% from the target",
                  out)
    assert r and _number(r.group(1)) == reg_driven
    assert float(r.group(2)) == pytest.approx(100 * (reg_driven / _number(t.group(1)) - 1), abs=0.06)
    assert "data-fed layer(s), not regularised: conv1" in out
    assert png.exists() and png.stat().st_size > 1000
    assert f"plot saved to {png}" in out
    # the energy column is Eff ACs x 0.9 pJ (every input is a spike: Eff MACs 0), the horowitz45nm model
    energy, acs, macs = (header.index(k) for k in ("Energy", "Eff ACs", "Eff MACs"))
    for row in rows:
        cells = re.split(r"\s{2,}", row.strip())
        assert cells[macs] == "0"
        assert _si(cells[energy]) == pytest.approx(_si(cells[acs]) * 0.9e-12, rel=0.01)
    # the legend under the first table explains every column, in the words of the docs' glossary
    from synopsloss.cli.digits import LEGEND

    assert out.count("Columns (per sample, all time steps):") == 1
    for name, words in LEGEND.items():
        assert re.search(rf"^  {re.escape(name)} +{re.escape(words)}$", out, re.M), name
        assert name in header


def _si(cell: str) -> float:
    """A table cell such as ``7.92k``, ``12.2 nJ`` or ``81.2 pJ`` as a number (joules or counts)."""
    scale = {"k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}
    value = cell.removesuffix("J").strip()
    if value and value[-1] in scale:
        return float(value[:-1]) * scale[value[-1]]
    return float(value)


def test_demo_is_reproducible_for_a_seed(tmp_path):
    a, b = _run(*TINY, "--seed", "5", "--no-plot", cwd=tmp_path), _run(*TINY, "--seed", "5", "--no-plot", cwd=tmp_path)
    assert a.returncode == 0 and b.returncode == 0
    assert list(tmp_path.iterdir()) == [] and "plot saved" not in a.stdout  # --no-plot saves nothing
    strip = lambda s: re.sub(r"\(\d+ s\)", "", s)  # noqa: E731  (timings differ)
    assert strip(a.stdout) == strip(b.stdout)


def test_demo_rejects_a_non_positive_target_with_a_clear_message(tmp_path):
    proc = _run(*TINY, "--target", "0", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--target must be > 0" in proc.stderr
    proc = _run(*TINY, "--synops", "-5", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--synops must be > 0" in proc.stderr


def test_demo_takes_a_budget_in_synops(tmp_path):
    """``--synops N``: the loss gets N network-driven synops per sample as its target, whatever the first run."""
    proc = _run(*TINY, "--synops", "12345", "--warmup", "0", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "SynOpsLoss(target=12,345, weight=1)" in proc.stdout
    assert "synops target per sample (driven: 12,345) = as given" in proc.stdout


@pytest.mark.parametrize("argv, said", [
    (["--weight", "inf"], "--weight must be a finite number"), (["--warmup", "inf"], "--warmup must be a finite"),
    (["--lr", "inf"], "--lr must be a finite number"), (["--target", "inf"], "--target must be a finite number"),
    (["--plot", "/nonexistent/folder/x.png"], "its folder does not exist")])
def test_demo_refuses_infinite_values_and_a_missing_plot_folder_before_training(argv, said, capsys):
    """--weight inf raised a traceback after the first run, --warmup inf an OverflowError, --lr inf trained NaN
    weights to 0% accuracy with status 0, --plot into a missing folder a FileNotFoundError after both runs."""
    import argparse

    from synopsloss.cli import demo

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert demo.run(parser.parse_args(argv + ["--quiet"])) == 2
    assert said in capsys.readouterr().err
