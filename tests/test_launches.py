"""Tensor ops (aten calls, a TorchDispatchMode) the counter adds per counted layer call, on CPU.

On a GPU each op is a kernel launch; the bounds are benchmarks/launches.py's measured figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import launches  # noqa: E402

sys.path.pop(0)


def test_the_aten_counter_counts_ops_by_name():
    with launches.AtenCounter() as mode:
        x = torch.ones(3)
        (x + x).sum()
    assert mode.ops["add"] == 1 and mode.ops["sum"] == 1


@pytest.mark.parametrize("model", ["mlp", "snn"])
def test_forward_ops_per_counted_call_are_bounded(model):
    res = launches.measure(model, "cpu", steps=4)
    assert res["calls"] == 12
    assert res["ops_per_counted_call"] <= launches.FORWARD_BOUND[model]
    if model == "mlp":  # the layer hooks only record the call, and take each weight's pattern once per batch
        assert res["counted_forward"] == res["plain_forward"] + 3


@pytest.mark.parametrize("model", ["mlp", "snn"])
def test_read_ops_grow_by_at_most_the_bound_per_call(model):
    few, many = (launches.measure(model, "cpu", steps=s) for s in (4, 8))
    growth = (many["read_ops"] - few["read_ops"]) / (many["calls"] - few["calls"])
    assert growth <= launches.READ_GROWTH_BOUND[model]
    assert few["read_ops"] > 0  # the read does the counting work
