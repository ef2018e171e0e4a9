"""The ``synopsloss`` command line: ``synopsloss demo`` and ``synopsloss report``.

Each subcommand lives in its own module of this package (:mod:`synopsloss.cli.demo`,
:mod:`synopsloss.cli.report`), which provides ``add_arguments(parser)`` and
``run(args) -> int``. The demo's data, network and training loop are in
:mod:`synopsloss.cli.digits`, outside the library's import path.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

#: subcommand -> (module, one-line help)
COMMANDS = {
    "demo": ("synopsloss.cli.demo", "train a small spiking CNN on 8x8 digits without and with the synops loss"),
    "report": ("synopsloss.cli.report", "print the per-layer synops table of a model factory"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synopsloss", description="Count and train against synaptic operations.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module, _import_error=None)
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as err:  # one broken subcommand must not take the others down
            p.set_defaults(_import_error=err)
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
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
