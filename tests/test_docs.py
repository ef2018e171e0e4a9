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
from helpers import run_fresh

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.slow
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
    assert (site / "stylesheets" / "extra.css").exists()
    cli = (site / "cli" / "index.html").read_text()
    assert "network-driven synops / sample" in cli and "--8&lt;--" not in cli  # the demo output is included
    for page in ("neurobench", "cli", "modules"):
        assert (site / "api" / page / "index.html").exists(), page
    assert "NeuroBenchMetrics" in (site / "api" / "neurobench" / "index.html").read_text()
    assert (site / "notebooks" / "quickstart.ipynb").exists() and (site / "notebooks" / "training.ipynb").exists()
    api = (site / "api" / "table" / "index.html").read_text()
    assert "compare" in api and "SynOpsTable" in api


BLOCKS = [(page, i, block) for page in PAGES for i, block in enumerate(FENCE.findall(page.read_text()))]
SKETCH = '```py title="Sketch: not runnable alone'


@pytest.mark.parametrize("page, i, block", BLOCKS, ids=[f"{p.name}[{i}]" for p, i, _ in BLOCKS])
def test_each_python_example_runs_alone(page, i, block, tmp_path, monkeypatch):
    """Every ```python block runs on its own, in a fresh namespace, as a reader who copies it would run it."""
    pytest.importorskip("snntorch")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sl.energy, "ENERGY_PRESETS", dict(sl.energy.ENERGY_PRESETS))  # pages may register devices
    torch.manual_seed(0)
    if "start_processes" in block or "notebook_launcher" in block:
        # examples that fork worker processes run in a fresh interpreter: a fork from this test process,
        # whose earlier tests may have started threads (torch.compile workers), could deadlock
        run_fresh(block, timeout=300, cwd=tmp_path, what=f"{page.name}, python block {i}")
        return
    try:
        exec(compile(block, f"{page.name}[block {i}]", "exec"), {"__name__": "__docs__"})
    except Exception as err:  # pragma: no cover - the message is the point
        raise AssertionError(f"{page.name}, python block {i} failed alone: {type(err).__name__}: {err}\n{block}") from err


def test_code_blocks_are_runnable_or_marked_as_sketches():
    """A fence is ```python (run by the test above), ```bash / ```text, or a ```py block titled as a sketch."""
    for page in PAGES + sorted((DOCS / "notes").glob("*.md")) + [ROOT / "README.md"]:
        for line in page.read_text().splitlines():
            if line.startswith("```") and line.strip() != "```":
                ok = line in ("```python", "```bash", "```text") or line.startswith(SKETCH)
                assert ok, f"{page.name}: {line!r}: use ```python (runnable alone), ```text, or {SKETCH}...\""


# what `pip install -e ".[extra]"` adds, by import name; torch and tqdm come with the package itself
_DIST = {"sklearn": "scikit-learn", "sinabs": "sinabs", "snntorch": "snntorch", "lightning": "lightning",
         "matplotlib": "matplotlib", "pandas": "pandas"}


@pytest.mark.parametrize("page", [p for p in PAGES if FENCE.search(p.read_text())], ids=lambda p: p.name)
def test_a_page_with_examples_has_one_install_line_that_covers_them(page):
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    text = page.read_text()
    bash = re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
    lines = [ln for b in bash for ln in b.splitlines() if ln.startswith("pip install")]
    assert len(lines) == 1, f"{page.name}: {len(lines)} install lines, want one"
    named = re.findall(r"\.\[([\w,]+)\]", lines[0])
    dists = {re.split(r"[<>=\[ ]", r)[0].lower() for e in (named[0].split(",") if named else []) for r in extras[e]}
    imported = {m for b in FENCE.findall(text) for m in re.findall(r"^\s*(?:import|from) ([A-Za-z_]\w*)", b, re.M)}
    missing = {m for m in imported - {"torch", "synopsloss"} - set(sys.stdlib_module_names)
               if _DIST.get(m, m) not in dists}
    assert not missing, f"{page.name}: its install line ({lines[0]}) does not install {sorted(missing)}"


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


def _demo_output():
    sys.path.insert(0, str(DOCS / "_tools"))
    try:
        import demo_output
    finally:
        sys.path.remove(str(DOCS / "_tools"))
    return demo_output


def test_the_generated_demo_output_is_of_the_current_defaults_and_adds_up():
    """docs/_generated/demo.txt is the demo's output at its defaults: header, settings, and a summary that
    equals the sums of its own tables (so it was not edited by hand)."""
    from synopsloss.cli import build_parser

    tool = _demo_output()
    text = tool.OUTPUT.read_text()
    assert text.splitlines()[0] == "$ " + " ".join(tool.COMMAND)
    d = build_parser().parse_args(["demo"])
    assert (f"on 1437 training / 360 test 8x8 digits, {d.time_steps} time steps, {d.epochs} epochs per run"
            in text)
    fig = tool.figures(text)
    num = lambda s: float(s.replace(",", ""))  # noqa: E731
    # the recipe: the budget (a quarter of the first run's network-driven synops) as an absolute target, the
    # weight warmed up over the first quarter of the epochs
    assert d.warmup is None and d.synops is None
    assert f"SynOpsLoss(target={fig['target']}, weight={d.weight:g}, warm-up {d.epochs / 4:g} epochs)" in text
    assert num(fig["target"]) == pytest.approx(d.target * num(fig["driven_before"]), abs=1)
    assert f"= {d.target:.2f} x the {fig['driven_before']} of the run without loss" in text
    assert fig["reached"] == fig["driven_after"]
    assert float(fig["off"][:-1]) == pytest.approx(100 * (num(fig["reached"]) / num(fig["target"]) - 1), abs=0.06)
    assert num(fig["driven_ratio"]) == pytest.approx(num(fig["driven_before"]) / num(fig["driven_after"]), abs=0.006)
    assert num(fig["total_ratio"]) == pytest.approx(num(fig["total_before"]) / num(fig["total_after"]), abs=0.006)
    # the total rows of both tables, in the table's 3 significant digits, agree with the summary's totals
    totals = [float(t[:-1]) * 1e3 for t in re.findall(r"^Total\s+([\d.]+k)", text, re.M)]
    assert totals == [pytest.approx(num(fig["total_before"]), rel=0.005),
                      pytest.approx(num(fig["total_after"]), rel=0.005)]


def test_pages_quote_the_demo_figures_from_the_generated_output():
    fig = _demo_output().figures((DOCS / "_generated" / "demo.txt").read_text())
    acc = f"{fig['acc_before']} -> {fig['acc_after']}"
    training = (DOCS / "training.md").read_text()
    for quoted in (acc, f"{fig['driven_before']} -> {fig['driven_after']}", f"{fig['driven_ratio']}x fewer",
                   f"target {fig['target']}", f"total {fig['total_ratio']}x fewer"):
        assert quoted in training, quoted
    cli = (DOCS / "cli.md").read_text()
    assert '--8<-- "docs/_generated/demo.txt"' in cli
    notebook = (ROOT / "notebooks" / "training.ipynb").read_text()
    assert f"{acc} test accuracy, {fig['driven_ratio']}x fewer" in notebook
    # no page keeps an older demo figure: every "NN.N% -> NN.N%" quoted anywhere is the demo's (or the quick run's)
    quick = (DOCS / "_generated" / "demo-quick.txt")
    allowed = {acc}
    q = _demo_output().figures(quick.read_text())
    allowed.add(f"{q['acc_before']} -> {q['acc_after']}")
    command = quick.read_text().splitlines()[0].removeprefix("$ ").replace(" --quiet --no-plot", "")
    assert f"```bash\n{command}\n```" in cli, "the quick run's command is the one its output was made with"
    for quoted in (f"{q['acc_before']} -> {q['acc_after']}", f"{q['driven_ratio']}x fewer",
                   f"{q['driven_before']} -> {q['driven_after']}"):
        assert quoted in cli, quoted
    for path in PAGES + [ROOT / "README.md"]:
        for found in re.findall(r"\d+\.\d% -> \d+\.\d%", path.read_text()):
            assert found in allowed, f"{path.name} quotes {found}, not the demo's {sorted(allowed)}"


def test_the_trade_off_figures_quoted_are_those_of_the_benchmark_summary():
    """Every number of the section on the trade-off run, and of the recipe that cites it, is in summary.md."""
    summary = (ROOT / "benchmarks" / "results" / "summary.md").read_text()
    training = (DOCS / "training.md").read_text()
    start = training.index("### What the 5-seed run shows")
    part = training[start:training.index("### Reproducibility", start)]
    part = part.split("The demo follows")[0]   # the demo's own figures are checked against its output above
    numbers = re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?x?%?", part)
    assert len(numbers) > 100   # the section quotes the run, it does not only point to it
    for number in numbers:   # "97.5 ± 0.4%" quotes the summary's "97.5 ± 0.4": the % may be the docs' own
        found = number in summary or (number.endswith("%") and re.search(re.escape(number[:-1]) + r"(?![\d,.])",
                                                                          summary))
        assert found, f"docs/training.md quotes {number}, which benchmarks/results/summary.md lacks"


def _found(number: str, source: str) -> bool:
    """A number quoted in the docs is in the source (``97.5 ± 0.4%`` may quote the source's ``97.5 ± 0.4``)."""
    return number in source or (number.endswith("%") and
                                re.search(re.escape(number[:-1]) + r"(?![\d,.])", source) is not None)


def test_the_energy_figures_quoted_are_those_of_the_energy_suite_output():
    """Every number of the measured EnergyLoss section is in energy.md (or the extra digits run it names)."""
    results = ROOT / "benchmarks" / "results"
    source = (results / "energy.md").read_text() + (results / "energy_digits_more" / "energy.md").read_text()
    page = (DOCS / "energy-loss.md").read_text()
    start = page.index("## Measured: EnergyLoss against SynOpsLoss")
    part = page[start:page.index("\n## ", start + 1)].replace("8x8 digits", "digits")
    numbers = re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?x?%?", part)
    assert len(numbers) > 100
    missing = [n for n in numbers if not _found(n, source)]
    assert not missing, f"docs/energy-loss.md quotes {missing}, which benchmarks/results/energy.md lacks"


def test_rows_trained_twice_at_the_same_code_and_layout_are_identical():
    """The claim of energy.md and docs/training.md: the rows the energy suite and the trade-off run both trained
    (same code hash, settings, torch, layout, seed), in separate invocations, agree in every figure but the timings."""
    import csv

    results = ROOT / "benchmarks" / "results"
    with open(results / "tradeoff.csv") as f:
        trade = {(r["dataset"], r["method"], r["strength"], r["seed"]): r for r in csv.DictReader(f)}
    with open(results / "energy.csv") as f:
        energy = list(csv.DictReader(f))
    same = ("code_hash", "settings", "torch", "layout", "epochs")
    shared = [(r, trade[k]) for r in energy for k in [(r["dataset"], r["method"], r["strength"], r["seed"])]
              if k in trade and all(r[c] == trade[k][c] for c in same)]
    assert len(shared) == 15   # digits and MNIST-1D baselines, MNIST-1D target 35000; 5 seeds each
    for r, t in shared:
        assert {c: r[c] for c in t if c not in ("seconds", "cpu_seconds")} == \
            {c: t[c] for c in t if c not in ("seconds", "cpu_seconds")}
