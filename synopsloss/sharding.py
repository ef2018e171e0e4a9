"""Counting under FSDP2 (``torch.distributed.fsdp.fully_shard``): maps from the full weight, no gather per step.

Under FSDP2 each rank holds a ``DTensor`` shard of every weight between
forwards; FSDP's forward pre-hook all-gathers the full weight into a plain
"unsharded" parameter before the module runs and, with
``reshard_after_forward=True``, its forward hook frees that parameter's
memory again. The counter records each layer call with the weight as used and
checks the map against the weight's nonzero pattern when the counts are read
(:mod:`synopsloss.records`), so:

1. its layer hook must run while the weight is unsharded, before FSDP's own
   forward hook: the counter registers its layer hooks with ``prepend=True``
   (:meth:`synopsloss.hooks.HookSet.forward`). The map is then built from the
   *full* weight that FSDP gathered for the forward anyway (no extra
   collective); after the reshard the hook would see a ``DTensor`` shard;
2. the recorded weight must not be read later: after the reshard its memory is
   freed (reading it is undefined behaviour, a crash at best), and reading a
   ``DTensor`` means a collective that every rank would have to join at the same
   read. For layers managed by FSDP (:class:`ShardedLayers`) and for ``DTensor``
   weights the call records the weight's nonzero pattern instead
   (``weight != 0``: one elementwise op over a weight FSDP has just copied in
   whole; a ``DTensor`` is gathered once, in the forward, where every rank
   takes part). The read compares that pattern with the cached map's and
   rebuilds the map only when it changed (an optimizer or pruning step zeroed
   weights), so maps always come from the current full pattern.

Nothing here imports ``torch.distributed``: a model can only be sharded after
``torch.distributed.fsdp`` was imported, so the checks look the classes up in
``sys.modules`` and answer ``False`` until they are there.

Example
-------
>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
>>> ShardedLayers(net, ["0"]).holds("0")  # no fully_shard: not managed
False
>>> is_dtensor(torch.ones(1))
False
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Sequence, Tuple

from torch import nn

__all__ = ["ShardedLayers", "is_dtensor"]


_CLASSES: Dict[Tuple[str, str], Any] = {}


def _class(module: str, name: str) -> Any:
    """``module.name`` once ``module`` is imported (looked up once: a lazy module attribute costs ~10 us)."""
    mod = sys.modules.get(module)
    if mod is None:
        return None
    key = (module, name)
    hit = _CLASSES.get(key)
    if hit is None or hit[0] is not mod:  # looked up once per module object (a miss too: getattr raising is slow)
        hit = _CLASSES[key] = (mod, getattr(mod, name, None))
    return hit[1]


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (a sharded or replicated distributed tensor)."""
    cls = _class("torch.distributed.tensor", "DTensor")
    return cls is not None and isinstance(t, cls)


class ShardedLayers:
    """Which counted layers have their weights managed by FSDP2, asked per call.

    ``fully_shard(module)`` turns ``module`` into an ``FSDPModule`` in place
    and manages the parameters below it that no nested ``fully_shard``-ed
    module manages, so a layer is managed when it or one of its ancestors is
    an ``FSDPModule``. The answer is not cached: ``fully_shard`` may be applied
    after the counter attached (before or after the first forward).

    Parameters
    ----------
    model
        The counted model.
    names
        Qualified names of the counted layers.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self._chains: Dict[str, Tuple[nn.Module, ...]] = {name: _chain(model, name) for name in names}

    def holds(self, name: str) -> bool:
        """Whether layer ``name``'s weights are managed by ``fully_shard`` (a few ``isinstance`` checks)."""
        cls = _class("torch.distributed.fsdp", "FSDPModule")
        return cls is not None and any(isinstance(m, cls) for m in self._chains.get(name, ()))


def _chain(model: nn.Module, name: str) -> Tuple[nn.Module, ...]:
    """The module called ``name`` and its ancestors up to ``model`` (``model`` included), innermost first."""
    parts = name.split(".") if name else []
    return tuple(model.get_submodule(".".join(parts[:i])) for i in range(len(parts), -1, -1))
