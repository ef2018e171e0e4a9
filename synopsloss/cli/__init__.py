"""The ``synopsloss`` command line: ``synopsloss demo`` and ``synopsloss report``.

Each subcommand lives in its own module of this package (:mod:`synopsloss.cli.demo`,
:mod:`synopsloss.cli.report`), which provides ``add_arguments(parser)`` and
``run(args) -> int``. The demo's data, network and training loop are in
:mod:`synopsloss.cli.digits`, outside the library's import path.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

#: subcommand -> (module, one-line help)
COMMANDS = {
    "demo": ("synopsloss.cli.demo", "train a small spiking CNN on 8x8 digits without and with the synops loss"),
    "report": ("synopsloss.cli.report", "print the per-layer synops table of a model factory"),
}


class SuggestingParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors suggest the closest flag or choice (``--epoch`` -> ``--epochs``).

    It records the option strings and choices given to :meth:`add_argument`,
    so that a mistyped flag or subcommand is answered with "did you mean ...?".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags: List[str] = []
        self.choices: List[str] = []
        self.commands: Dict[str, "SuggestingParser"] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: Any, **kwargs: Any) -> argparse.Action:
        self.flags.extend(n for n in names if isinstance(n, str) and n.startswith("-"))
        self.choices.extend(str(c) for c in kwargs.get("choices") or ())
        return super().add_argument(*names, **kwargs)

    def suggestion(self, message: str) -> str:
        """The "did you mean" hint for an argparse error ``message`` ("" when nothing is close)."""
        hints = []
        choice = re.search(r"invalid choice: '?([^'\s]+)'?", message)
        if choice:
            pool = list(self.commands) + self.choices
            hints += difflib.get_close_matches(choice.group(1), pool, n=1, cutoff=0.5)
        unknown = re.search(r"unrecognized arguments: (.*)", message)
        for token in (unknown.group(1).split() if unknown else []):
            if token.startswith("-"):
                hints += difflib.get_close_matches(token.split("=")[0], self.flags, n=1, cutoff=0.5)
        return f" (did you mean {' / '.join(dict.fromkeys(hints))}?)" if hints else ""

    def error(self, message: str) -> Any:  # argparse exits with status 2
        super().error(message + self.suggestion(message))


def build_parser() -> SuggestingParser:
    from .. import __version__

    parser = SuggestingParser(prog="synopsloss", description="Count and train against synaptic operations.")
    parser.add_argument("--version", action="version", version=f"synopsloss {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SuggestingParser)
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        parser.commands[name] = p
        p.set_defaults(_module=module, _import_error=None)
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as err:  # one broken subcommand must not take the others down
            p.set_defaults(_import_error=err)
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``synopsloss`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # answered by the subcommand's parser: its usage, and the closest of its flags
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if args._import_error is not None:
        print(
            f"synopsloss {args.command}: cannot import {args._module} ({args._import_error}). "
            "Install the extras it needs, e.g. pip install 'synopsloss[demo]'.",
            file=sys.stderr,
        )
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
