"""Deprecated location of the demo's code: see :mod:`synopsloss.cli.digits` (training) and :mod:`synopsloss.cli.demo` (command)."""

import warnings

from .cli.demo import add_arguments, main, run  # noqa: F401
from .cli.digits import *  # noqa: F401,F403
from .cli.digits import __all__ as _digits_all

__all__ = list(_digits_all) + ["add_arguments", "run", "main"]

warnings.warn("synopsloss.demo moved to synopsloss.cli.digits (training code) and synopsloss.cli.demo (the command)",
              DeprecationWarning, stacklevel=2)
