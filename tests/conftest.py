"""Shared pytest options and fixtures.

``pytest --overwrite-golden`` rewrites the expected outputs in ``tests/golden/``
from the current code instead of comparing against them (torchinfo's
``--overwrite`` pattern); review the diff before committing.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Callable

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"

# torch.compile's worker pool would leave threads behind, and the distributed tests fork this process
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--overwrite-golden", action="store_true", default=False,
                     help="rewrite tests/golden/* from the current output instead of comparing with it")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``golden(name, text)``: ``text`` must equal ``tests/golden/<name>`` (or rewrites it with --overwrite-golden)."""
    overwrite = request.config.getoption("--overwrite-golden")

    def check(name: str, text: str) -> None:
        text = text if text.endswith("\n") else text + "\n"
        path = GOLDEN / name
        if overwrite:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        if not path.exists():
            pytest.fail(f"no golden file {path}: run `pytest --overwrite-golden {request.node.nodeid}` and review it")
        expected = path.read_text(encoding="utf-8")
        if text != expected:
            diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                                f"golden/{name}", "actual"))
            pytest.fail(f"output differs from tests/golden/{name} (rerun with --overwrite-golden if the change is "
                        f"intended):\n{diff}", pytrace=False)

    return check
