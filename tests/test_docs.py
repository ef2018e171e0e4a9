"""The documentation site builds with no warning, its Python examples run, and its figure tells the truth."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import synopsloss as sl

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_site_builds_in_strict_mode(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]'): the site cannot be built here")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log, log
    site = tmp_path / "site"
    assert (site / "index.html").exists() and (site / "img" / "synops.svg").exists()
    assert (site / "notebooks" / "quickstart.ipynb").exists() and (site / "notebooks" / "training.ipynb").exists()
    api = (site / "api" / "table" / "index.html").read_text()
    assert "compare" in api and "SynOpsTable" in api


@pytest.mark.parametrize("page", [p for p in PAGES if FENCE.search(p.read_text())], ids=lambda p: p.name)
def test_python_examples_of_a_page_run(page, tmp_path, monkeypatch):
    """Every ```python block of the page, in order, in one namespace (```py blocks are fragments, not run)."""
    pytest.importorskip("snntorch")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sl.energy, "ENERGY_PRESETS", dict(sl.energy.ENERGY_PRESETS))  # pages may register devices
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(FENCE.findall(page.read_text())):
        try:
            exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            raise AssertionError(f"{page.name}, python block {i} failed: {type(err).__name__}: {err}\n{block}") from err


def test_the_home_page_figure_states_what_the_counter_counts():
    """3 inputs, 4 steps, 3 outputs, weight c->z zero: a spikes twice, b never, c once: 8 synops, 36 dense."""
    sys.path.insert(0, str(DOCS / "_tools"))
    try:
        import make_figures
    finally:
        sys.path.pop(0)
    spikes = torch.tensor([make_figures.SPIKES[n] for n in "abc"], dtype=torch.float32).T  # [T, 3]
    layer = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.5)
        for src, dst in make_figures.ZERO:
            layer.weight["xyz".index(dst), "abc".index(src)] = 0.0
    counter = sl.SynOpsCounter(layer)
    for t in range(spikes.shape[0]):
        layer(spikes[t:t + 1])
    counts = counter.snapshot().per_layer()[""]
    assert (counts["synops"], counts["dense"], counts["eff_acs"]) == (8.0, 36.0, 8.0)
    svg = (DOCS / "img" / "synops.svg").read_text()
    assert ">synops per sample<" in svg and ">8<" in svg and "9 x 4 = 36" in svg


def _literal_pieces(node: ast.AST) -> list:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        out, cur = [], ""
        for v in node.values:
            if isinstance(v, ast.Constant):
                cur += v.value
            else:
                out, cur = out + [cur], ""
        return out + [cur]
    if isinstance(node, ast.BinOp):
        return _literal_pieces(node.left) + _literal_pieces(node.right)
    return []


def _messages(path: Path):
    """(line, longest literal piece) of every raise X("..."), warnings.warn("...") and loss._warn(key, "...")."""
    for node in ast.walk(ast.parse(path.read_text())):
        arg = None
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            arg = node.exc.args[0]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "warn" and node.args:
                arg = node.args[0]
            elif node.func.attr == "_warn" and len(node.args) > 1:
                arg = node.args[1]
        if arg is not None:
            pieces = sorted((p.strip(" :;.,") for p in _literal_pieces(arg)), key=len)
            if pieces and len(pieces[-1]) >= 15:
                yield node.lineno, pieces[-1]


INTERNAL = {"a block needs a synaptic or a neuron row", "unreachable"}  # guards that no caller can reach


def test_troubleshooting_quotes_every_error_and_warning_message():
    norm = lambda s: re.sub(r"\s+", " ", s.replace("`", ""))  # noqa: E731
    page = norm((DOCS / "troubleshooting.md").read_text())
    missing = [f"{path.name}:{line}: {text}" for path in sorted((ROOT / "synopsloss").glob("*.py"))
               for line, text in _messages(path) if text not in INTERNAL and norm(text)[:45] not in page]
    assert not missing, "docs/troubleshooting.md lacks these messages (add cause and fix):\n" + "\n".join(missing)


def test_readme_example_runs_and_its_links_exist(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    (block,) = FENCE.findall(readme)
    assert len(block.strip().splitlines()) <= 14  # the short example, not a tutorial
    pytest.importorskip("snntorch")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    links = re.findall(r"\]\(([^)#]+)", readme)
    assert links and all((ROOT / link).exists() for link in links if "://" not in link), links


def test_table_page_lists_every_column_and_preset():
    from synopsloss.table import COLUMNS, PRESETS

    page = (DOCS / "table.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", page, re.M))
    assert {k: t.strip() for k, t in rows.items() if k in COLUMNS} == {k: v[0] for k, v in COLUMNS.items()}
    presets = dict(re.findall(r'^\| `"(\w+)"`[^|]*\| ([^|]+) \|', page, re.M))
    assert {k: tuple(re.findall(r"`(\w+)`", v)) for k, v in presets.items()} == PRESETS


def test_the_glossary_quotes_the_demo_legend_word_for_word():
    from synopsloss.cli.digits import LEGEND

    page = (DOCS / "table.md").read_text()
    glossary = page[page.index("## Glossary"):page.index("## Columns")]
    rows = dict(re.findall(r"^\| ([^|]+?) \| (.+?) \|$", glossary, re.M))
    rows.pop("column", None)
    assert rows == LEGEND
