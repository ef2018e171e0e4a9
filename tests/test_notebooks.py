"""Every notebook in notebooks/ runs top to bottom, is stored without outputs, and is listed once, the same way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert dirty == [], f"{path.name}: cells {dirty} have outputs; clear them before committing"


def _listed(text: str) -> list:
    return sorted(set(re.findall(r"\(\.?/?(?:docs/)?notebooks/([\w-]+\.ipynb)\)", text)))


def test_readme_and_the_notebooks_page_list_every_notebook():
    on_disk = [p.name for p in NOTEBOOKS]
    readme = (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "notebooks.md").read_text()
    assert _listed(readme[readme.index("## Notebooks"):]) == on_disk
    assert _listed(page) == on_disk
    words = {1: "One", 2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six"}
    assert page.split("\n\n")[1].startswith(f"{words[len(on_disk)]} Jupyter notebooks"), "the count in words"


def test_the_notebooks_install_line_covers_every_import():
    """docs/notebooks.md's install line names the extra (or --no-deps package) of every module a notebook imports."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    page = (ROOT / "docs" / "notebooks.md").read_text()
    (line,) = [ln for ln in page.splitlines() if ln.startswith("pip install") and "[notebooks]" in ln]
    installed = {re.split(r"[<>=\[ ]", r)[0].lower() for r in extras["notebooks"]}
    installed |= {w.split("==")[0].lower() for w in line.split() if "==" in w}
    installed |= {"torch", "synopsloss"}
    dist = {"sklearn": "scikit-learn"}
    stdlib = {"warnings", "pathlib", "tempfile", "os", "sys", "math", "re", "json", "time"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        imported = set(re.findall(r"^\s*(?:import|from) ([A-Za-z_]\w*)", src, re.M)) - stdlib
        missing = {m for m in imported if dist.get(m, m).lower() not in installed}
        assert not missing, f"{path.name} imports {sorted(missing)}, which the install line does not install"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_without_error(path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell (the notebooks assert their results)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
