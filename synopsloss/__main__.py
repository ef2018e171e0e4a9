"""``python -m synopsloss``: the same as the ``synopsloss`` command."""

import sys

from .cli import main

sys.exit(main())
