"""Every warning class of synopsloss (a leaf module: it imports nothing of the package)."""

from __future__ import annotations

__all__ = ["SynOpsWarning", "UnsupportedLayerWarning"]


class SynOpsWarning(UserWarning):
    """A count that may not mean what the user expects (each names the cause and the fix)."""


class UnsupportedLayerWarning(SynOpsWarning):
    """A module with parameters that the counter cannot count."""
