"""The demo end to end with tiny settings (as a subprocess, like a user runs it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip("snntorch")
pytest.importorskip("sklearn")

TINY = ["--epochs", "1", "--train-samples", "96", "--test-samples", "40", "--time-steps", "3", "--batch-size", "32",
        "--quiet"]


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "synopsloss", "demo", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_demo_runs_end_to_end_and_its_summary_agrees_with_its_tables(tmp_path):
    png = tmp_path / "demo.png"
    proc = _run(*TINY, "--target", "0.4", "--seed", "3", "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "40 test 8x8 digits, 3 time steps, 1 epochs" in out
    assert "SynOpsLoss(fraction=0.4, weight=1, warm-up 5 epochs)" in out
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
    t = re.search(r"synops target per sample \(driven: ([\d,]+)\) = 0\.40 x the initial ([\d,]+)", out)
    assert t and _number(t.group(1)) == pytest.approx(0.4 * _number(t.group(2)), abs=1)
    assert "data-fed layer(s), not regularised: conv1" in out
    assert png.exists() and png.stat().st_size > 1000


def test_demo_is_reproducible_for_a_seed():
    a, b = _run(*TINY, "--seed", "5"), _run(*TINY, "--seed", "5")
    assert a.returncode == 0 and b.returncode == 0
    strip = lambda s: re.sub(r"\(\d+ s\)", "", s)  # noqa: E731  (timings differ)
    assert strip(a.stdout) == strip(b.stdout)


def test_demo_rejects_a_non_positive_target_with_a_clear_message():
    proc = _run(*TINY, "--target", "0")
    assert proc.returncode == 2
    assert "--target must be > 0" in proc.stderr
