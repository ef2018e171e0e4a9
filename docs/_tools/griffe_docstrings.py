"""Griffe extension for the API pages: read the package's Sphinx-flavoured numpy docstrings as Markdown.

The docstrings are written for ``help()`` and doctest, partly in Sphinx's dialect. Three things would
render wrongly (or break ``mkdocs build --strict``) in mkdocstrings' Markdown:

* a section titled ``Example`` (numpydoc's name is ``Examples``) is not parsed as examples, so doctest
  output such as ``[0.0, 0.5]`` is read as a Markdown reference link;
* Sphinx roles (``:class:`~synopsloss.SynOpsCounter```) are shown literally;
* square brackets in prose (``cross-entropy [+ synops loss] [+ L1 activity]``) are read as links.

This extension rewrites the docstring text before it is parsed: ``Example`` -> ``Examples``, roles ->
inline code (``~`` keeps the last component, as Sphinx does), and brackets in prose lines are escaped.
The sources are left as they are (see the lead's note on the docstrings).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|obj|exc|const):`(~?)([^`]+)`")
_CODE = re.compile(r"(``.*?``|`[^`]*`)")


def _role(m: "re.Match[str]") -> str:
    target = m.group(2)
    return "`" + (target.split(".")[-1] if m.group(1) else target) + "`"


def _escape_brackets(line: str) -> str:
    parts = _CODE.split(line)
    return "".join(p if i % 2 else p.replace("[", "\\[").replace("]", "\\]") for i, p in enumerate(parts))


def normalise(text: str) -> str:
    """The docstring ``text`` with the three rewrites applied."""
    lines = text.splitlines()
    out = []
    in_examples = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if nxt and set(nxt) == {"-"} and stripped:  # a section title
            in_examples = stripped.lower() in ("example", "examples")
            if stripped == "Example":
                line = line.replace("Example", "Examples")
        elif set(stripped) == {"-"} and out and out[-1].strip() == "Examples" and len(stripped) == 7:
            line = line.replace("-------", "--------")
        line = _ROLE.sub(_role, line)
        code_like = stripped.startswith((">>>", "...")) or line.startswith("    ") or in_examples
        if not code_like:
            line = _escape_brackets(line)
        out.append(line)
    return "\n".join(out)


class SphinxishDocstrings(griffe.Extension):
    """Apply :func:`normalise` to every docstring of the loaded package."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = normalise(obj.docstring.value)
