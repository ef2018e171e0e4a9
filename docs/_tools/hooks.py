"""MkDocs hook: publish the notebooks next to the pages, so that links to ``notebooks/*.ipynb`` resolve.

The notebooks live in ``notebooks/`` at the repository root (the tests run them there); this hook adds
them to the site as downloadable files under ``notebooks/`` without copying them into ``docs/``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]


def on_files(files, config):
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(File.generated(config, f"notebooks/{nb.name}", abs_src_path=str(nb)))
    return files
