"""The public surface: no deprecated alias left, lazy optional submodules, no DeprecationWarning of ours."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import synopsloss as sl

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "synopsloss"


def _ours(w: warnings.WarningMessage) -> bool:
    """A warning raised by synopsloss: its message names the package, or the warning points into it."""
    return str(w.message).startswith("synopsloss") or Path(w.filename).resolve().is_relative_to(PACKAGE)


def test_import_synopsloss_leaves_the_optional_dependencies_unimported_and_reads_them_lazily():
    code = (
        "import sys, json, synopsloss as sl\n"
        "before = sorted(m for m in ('lightning', 'pytorch_lightning', 'neurobench', 'snntorch', 'pandas',\n"
        "                            'matplotlib', 'sklearn', 'synopsloss.lightning', 'synopsloss.neurobench',\n"
        "                            'synopsloss.cli') if m in sys.modules)\n"
        "nb, lt = sl.neurobench.NeuroBenchMetrics.__module__, sl.lightning.SynOpsRegularizer.__module__\n"
        "after = 'synopsloss.lightning' in sys.modules and 'lightning.pytorch' in sys.modules\n"
        "print(json.dumps([before, nb, lt, after, 'neurobench' in dir(sl)]))\n"
    )
    pytest.importorskip("lightning")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, nb, lt, after, listed = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == [], f"import synopsloss imported {before}"
    assert (nb, lt, after, listed) == ("synopsloss.neurobench", "synopsloss.lightning", True, True)


def test_an_unknown_attribute_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'neurobenchh'"):
        _ = sl.neurobenchh
    assert not hasattr(sl, "demo")


def test_the_deprecated_readers_and_aliases_are_gone():
    counter = sl.SynOpsCounter(nn.Sequential(nn.Linear(2, 2)))
    for old in ("synops_per_layer", "counts", "totals", "sums", "counts_from_sums", "_deprecated"):
        assert not hasattr(counter, old), old
    import synopsloss.maps as maps

    for old in ("register_rule", "register_no_synapse", "find_rule", "has_no_synapse"):
        assert not hasattr(maps, old), old
    assert not (PACKAGE / "demo.py").exists()  # the synopsloss.demo shim; its code is in synopsloss.cli
    # and no module of the package issues a DeprecationWarning any more
    for path in PACKAGE.rglob("*.py"):
        names = {n.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Name)}
        assert "DeprecationWarning" not in names, f"{path.relative_to(ROOT)} still issues a DeprecationWarning"


def test_the_public_surface_raises_no_deprecation_warning_of_ours(tmp_path):
    """Counting, reading, the table, the loss and the lazy submodules, with our DeprecationWarnings made errors."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.filterwarnings("error", category=DeprecationWarning, module=r"synopsloss(\.|$)")
        warnings.filterwarnings("error", message=r"synopsloss", category=DeprecationWarning)
        net = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
        counter = sl.SynOpsCounter(net)
        loss_fn = sl.SynOpsLoss(counter, fraction=0.5, layers="all")
        x = torch.tensor([[1.0, 0.0, 2.0, 0.0]])
        counter.reset()
        net(x)
        total = counter.synops()
        per_layer = counter.synops(by_layer=True)
        loss_fn().backward()
        snap = counter.snapshot()
        text = str(counter.table())
        for module in ("neurobench", "cli", "report"):
            getattr(sl, module)
        counter.remove()
    ours = [w for w in seen if issubclass(w.category, DeprecationWarning) and _ours(w)]
    assert ours == [], [str(w.message) for w in ours]
    # the numbers read are the hand count: layer 0 reads 1 + 2 over 3 outputs, layer 2 reads relu(W0 x) over 2
    with torch.no_grad():
        h = torch.relu(x @ net[0].weight.T)
    want = [3.0 * 3, float(h.abs().sum()) * 2]
    assert [per_layer["0"].item(), per_layer["2"].item()] == pytest.approx(want)
    assert total.item() == pytest.approx(sum(want))
    assert snap.per_layer()["0"]["synops"] == pytest.approx(want[0])
    assert "Linear" in text
