"""Hook plumbing shared by the counter and the neuron monitor: attach, remove, pause, the root hook.

Hooks are closures, not bound methods, and each ignores calls of modules other
than its own: ``copy.deepcopy`` of a hooked model copies the hook functions
(sharing their closures), and deep copies (NeuroBench's, for example) must
not be counted. Nothing is written onto the user's modules.

Example
-------
>>> import torch
>>> from synopsloss.hooks import HookSet
>>> net = torch.nn.Linear(2, 2)
>>> seen = []
>>> hooks = HookSet()
>>> hooks.forward(net, lambda m, args, out: seen.append(out.shape))
>>> _ = net(torch.ones(1, 2))
>>> with hooks.paused():
...     _ = net(torch.ones(3, 2))
>>> hooks.remove(); _ = net(torch.ones(4, 2))
>>> seen
[torch.Size([1, 2])]
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, Iterator, List

from torch import nn

__all__ = ["HookSet", "next_stamp"]

_STAMPS = itertools.count()


def next_stamp() -> int:
    """A process-wide increasing number: the forward order of first calls, across counters and monitors."""
    return next(_STAMPS)


class HookSet:
    """The forward hooks one owner put on a model, switched on and off together."""

    def __init__(self) -> None:
        self._handles: List[Any] = []
        self.enabled = True

    @property
    def attached(self) -> bool:
        """Whether any hook is registered."""
        return bool(self._handles)

    def _guard(self, owner: nn.Module, fn: Callable[..., None]) -> Callable[..., None]:
        def hook(module: nn.Module, *rest: Any) -> None:
            if module is owner and self.enabled:
                fn(module, *rest)

        return hook

    def forward(self, module: nn.Module, fn: Callable[..., None], *, with_kwargs: bool = False) -> None:
        """``fn(module, args, [kwargs,] output)`` after each call of ``module`` itself (not of its copies)."""
        self._handles.append(module.register_forward_hook(self._guard(module, fn), with_kwargs=with_kwargs))

    def pre(self, module: nn.Module, fn: Callable[..., None], *, with_kwargs: bool = False) -> None:
        """``fn(module, args, [kwargs])`` before each call of ``module`` itself."""
        self._handles.append(module.register_forward_pre_hook(self._guard(module, fn), with_kwargs=with_kwargs))

    def remove(self) -> None:
        """Take every hook off."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hooks stay registered but do nothing inside the block."""
        before, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = before
