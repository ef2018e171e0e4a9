"""Every warning and exception class of synopsloss (a leaf module: it imports nothing of the package).

Warnings all derive from :class:`SynOpsWarning` (a ``UserWarning``), so
``warnings.filterwarnings("ignore", category=sl.SynOpsWarning)`` silences the
package's warnings and nothing else.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "SynOpsWarning",
    "UnsupportedLayerWarning",
    "UnreachableTargetWarning",
    "LossScaleWarning",
    "ExpectedCountWarning",
    "UncountableOpError",
    "ArgumentTypeError",
    "input_changed",
    "changed_message",
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


def input_changed(shape: tuple, base: Optional[tuple] = None) -> str:
    """The :class:`SynOpsWarning` message for a counted input changed in place between its call and the read
    (a weight op's record and an activation product's alike). ``base``: the shape of the larger tensor the input
    is a part of (a view ``buf[t]`` of a buffer filled step by step), whose writes move the input's version too."""
    if base is not None:
        return (f"synopsloss: the input of a counted layer (shape {tuple(shape)}) is part of a tensor of shape "
                f"{tuple(base)} that was written in place after the layer read it and before the counts were read "
                "(a buffer filled step by step: buf[t] = ...). A write to another part of it leaves the count right; "
                "one to the part the layer read is counted with the new values. Collect the steps in a list and "
                "torch.stack them, or read the counts before writing.")
    return (f"synopsloss: the input of a counted layer (shape {tuple(shape)}) was modified in place after the layer "
            "read it and before the counts were read; it is counted with its new values. Read the counts "
            "(counter.synops() / snapshot()) before changing it, or change a copy (x = x.clone()) instead.")


def changed_message(x: Any) -> str:
    """:func:`input_changed` for the tensor ``x`` (a part of a larger base is said so)."""
    base = getattr(x, "_base", None)
    partial = base is not None and base.numel() > x.numel()
    return input_changed(tuple(x.shape), tuple(base.shape) if partial else None)
