"""Every warning and exception class of synopsloss (a leaf module: it imports nothing of the package).

Warnings all derive from :class:`SynOpsWarning` (a ``UserWarning``), so
``warnings.filterwarnings("ignore", category=sl.SynOpsWarning)`` silences the
package's warnings and nothing else.
"""

from __future__ import annotations

__all__ = [
    "SynOpsWarning",
    "UnsupportedLayerWarning",
    "UnreachableTargetWarning",
    "LossScaleWarning",
    "ExpectedCountWarning",
    "UncountableOpError",
    "ArgumentTypeError",
    "input_changed",
]


class SynOpsWarning(UserWarning):
    """A count that may not mean what the user expects (each names the cause and the fix)."""


class UnsupportedLayerWarning(SynOpsWarning):
    """A module with parameters that the counter cannot count."""


class UnreachableTargetWarning(SynOpsWarning):
    """A synops target the network cannot reach, or one that would push synops up."""


class LossScaleWarning(SynOpsWarning):
    """A loss term that dwarfs the task loss, or a target far below the measured value (``target=`` vs ``fraction=``)."""


class ExpectedCountWarning(SynOpsWarning):
    """A count is an expectation, not the exact number of the call (attention dropout)."""


class UncountableOpError(NotImplementedError):
    """An op that multiplies activations but whose synaptic operations cannot be counted."""


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a ``TypeError``, and a ``ValueError`` for 0.1 compatibility)."""


def input_changed(shape: tuple) -> str:
    """The :class:`SynOpsWarning` message for a counted input changed in place between its call and the read
    (a weight op's record and an activation product's alike)."""
    return (f"synopsloss: the input of a counted layer (shape {tuple(shape)}) was modified in place after the layer "
            "read it and before the counts were read; it is counted with its new values. Read the counts "
            "(counter.synops() / snapshot()) before changing it, or change a copy (x = x.clone()) instead.")
