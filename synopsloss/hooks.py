"""Hook plumbing shared by the counter and the neuron monitor: attach, remove, pause, the root hook.

Each hook ignores calls of modules other than its own: ``copy.deepcopy`` of a
hooked model copies the hook functions, and deep copies (NeuroBench's, for
example) must not be counted. Nothing is written onto the user's modules.

The model holds its hooks, so a hook must not hold its owner (a counter or a
monitor): a counter created in a function and never removed would otherwise
live, and count, forever. A :class:`HookSet` keeps only a weak reference to
its owner and passes it to each hook function as the first argument; when the
owner is garbage-collected, every hook is removed.

Example
-------
>>> import torch
>>> from synopsloss.hooks import HookSet
>>> class Recorder:
...     def __init__(self, net):
...         self.seen = []
...         self.hooks = HookSet(self)
...         self.hooks.forward(net, Recorder.on_call)
...     def on_call(self, module, args, out):
...         self.seen.append(tuple(out.shape))
>>> net = torch.nn.Linear(2, 2)
>>> rec = Recorder(net)
>>> _ = net(torch.ones(1, 2))
>>> with rec.hooks.paused():
...     _ = net(torch.ones(3, 2))
>>> rec.seen
[(1, 2)]
>>> del rec  # unreachable: its hooks go with it
>>> len(net._forward_hooks)
0
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sys
import sysconfig
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from torch import nn

__all__ = ["HookSet", "next_stamp", "STAMPS", "functorch_level", "COMPILE_NOTE", "eager_under_compile", "compiling",
           "OWN", "own_ops", "COMPILED", "PackageMode", "pop_package_modes", "push_modes", "mode_depth", "take_off",
           "exporting"]

#: the process-wide stamps (:func:`next_stamp`); hot hooks take ``STAMPS.__next__`` without a frame
STAMPS = itertools.count()

#: why the hooks cannot be traced by ``torch.compile``, and what to do: the error of ``fullgraph=True``
COMPILE_NOTE = (
    "synopsloss: the SynOpsCounter's hooks record every counted call in Python (shapes, tensor storages, "
    "running state) and cannot be traced into a graph. torch.compile(model) without fullgraph=True runs them "
    "eagerly between the compiled graphs (counts and gradients equal eager mode). With fullgraph=True, count "
    "outside the compiled graph: compile the model after counter.remove() (or use a second, uncompiled model "
    "that shares the parameters for the counted steps)."
)


_IS_COMPILING = getattr(getattr(torch, "compiler", None), "is_compiling", None)


def _compiling() -> bool:
    """Whether ``torch.compile`` (dynamo) is tracing the caller (False in eager mode and in old torch)."""
    return _IS_COMPILING is not None and bool(_IS_COMPILING())


#: whether ``torch.export`` is tracing the model (its fake tensors hold no values: the package's hooks do nothing
#: then; an exported program is no counted forward)
exporting: Callable[[], bool] = getattr(getattr(torch, "compiler", None), "is_exporting", None) or (lambda: False)


#: whether dynamo is tracing the caller, in one frame where torch has ``torch.compiler.is_dynamo_compiling`` (the hot
#: layer hooks call it: only dynamo needs a hook run through :func:`eager_under_compile`, which outside dynamo runs
#: it as it is)
compiling: Callable[[], bool] = getattr(getattr(torch, "compiler", None), "is_dynamo_compiling", None) or _compiling


def eager_under_compile(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn`` run eagerly under ``torch.compile``: a graph break, or under ``fullgraph=True`` an error naming
    :data:`COMPILE_NOTE` (older torch without ``reason=``: its generic message)."""
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    if disable is None:  # pragma: no cover - torch < 2.1
        return fn
    try:
        return disable(fn, reason=COMPILE_NOTE)  # fullgraph=True: see synopsloss.hooks.COMPILE_NOTE
    except TypeError:  # pragma: no cover - torch without reason=
        return disable(fn)


#: the functorch level of a tensor: -1 for a plain tensor, outside any ``torch.func`` transform (the counter and the
#: function mode read it per call)
functorch_level = getattr(getattr(torch._C, "_functorch", None), "maybe_get_level", lambda t: -1)


#: the id of the backward pass running on this thread (-1 outside backward)
_TASK = torch._C._current_graph_task_id


class _Compiled(threading.local):
    depth = 0


#: how deeply hooks run eagerly for a module that ``torch.compile`` is compiling (see :func:`eager_under_compile`):
#: a hook that needs the module's own ops to run eagerly too (the function mode's frames) can say it cannot count
COMPILED = _Compiled()


def _flagged(hook: Callable[..., None], *args: Any) -> None:
    COMPILED.depth += 1
    try:
        return hook(*args)
    finally:
        COMPILED.depth -= 1


class _Own(threading.local):
    depth = 0


#: how deeply the package's own tensor computations (the reductions of a read) are nested on this thread: the
#: function mode leaves their ops alone (a reduction run while a counted module's frame is open, as when the
#: root module's forward returns, would otherwise count its own ``einsum`` and ``matmul`` as the model's)
OWN = _Own()


class PackageMode(torch.overrides.TorchFunctionMode):
    """A function mode of the package (the op scope's, the pools'): it passes over the package's own ops, so it is
    popped while a hook of the package runs (:func:`pop_package_modes`), sparing a Python frame per op."""


#: the depth of the function-mode stack (0: no mode open; one C call)
mode_depth = torch._C._len_torch_function_stack
_TF_AT = torch._C._get_function_stack_at
_TF_POP = torch._C._pop_torch_function_stack
_TF_PUSH = torch._C._push_on_torch_function_stack


def pop_package_modes() -> Optional[List[Any]]:
    """Pop the package's own function modes (:class:`PackageMode`) from the top of the stack, for the duration of a
    hook of the package; ``None`` when there is none on top (a user's mode above them keeps them, and the ops of the
    hook then pass through them as before). Give them back with :func:`push_modes`.

    A hook's ops are no model's ops: the modes pass over them anyway (:func:`made_by_package`); popped, they are
    not called at all (a ResNet-18 forward with a pool mode open: about 2800 Python calls fewer).

    Example
    -------
    >>> class Mode(PackageMode):
    ...     def __torch_function__(self, func, types, args=(), kwargs=None):
    ...         return func(*args, **(kwargs or {}))
    >>> with Mode():
    ...     popped = pop_package_modes()
    ...     inside = torch._C._len_torch_function_stack()
    ...     push_modes(popped)
    ...     after = torch._C._len_torch_function_stack()
    >>> len(popped), inside, after
    (1, 0, 1)
    """
    n = mode_depth()
    popped: Optional[List[Any]] = None
    while n and isinstance(_TF_AT(n - 1), PackageMode):
        if popped is None:
            popped = []
        popped.append(_TF_POP())
        n -= 1
    return popped


def push_modes(popped: List[Any]) -> None:
    """Push back the modes that :func:`pop_package_modes` popped, in their order."""
    for mode in reversed(popped):
        _TF_PUSH(mode)


def take_off(mode: Any) -> bool:
    """Take ``mode`` off the function-mode stack wherever it is, the modes above it kept in their order; ``False``
    when it is not on the stack.

    A package mode is closed when the last module frame it serves returns; a mode opened above it in the
    meantime (a user's, or another counter's) stays open. Popping only a mode on top left ours on the stack for
    good under another counter's: torch's fast paths then saw a mode for the rest of the process.

    Example
    -------
    >>> class Mode(PackageMode):
    ...     def __torch_function__(self, func, types, args=(), kwargs=None):
    ...         return func(*args, **(kwargs or {}))
    >>> low, high = Mode(), Mode()
    >>> _ = low.__enter__(), high.__enter__()
    >>> take_off(low), torch._C._len_torch_function_stack(), torch._C._get_function_stack_at(0) is high
    (True, 1, True)
    >>> high.__exit__(None, None, None)
    """
    n = mode_depth()
    at = next((i for i in range(n - 1, -1, -1) if _TF_AT(i) is mode), None)
    if at is None:
        return False
    above = [_TF_POP() for _ in range(n - 1 - at)]
    _TF_POP()
    push_modes(above)
    return True


def own_ops(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, one of the package's own tensor computations: no counter's function mode counts its ops."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        OWN.depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            OWN.depth -= 1

    return run


#: where installed code lives (the standard library, site-packages, this package)
_INSTALLED = tuple(sorted({os.path.join(p, "") for p in (sysconfig.get_paths()[k] for k in
                                                          ("stdlib", "platstdlib", "purelib", "platlib"))}
                          | {os.path.join(os.path.dirname(os.path.abspath(__file__)), "")}))


#: the package's directory: an op made by a frame of a file under it is the package's own (not counted)
PACKAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")
def foreign_forward_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has a forward hook that no synopsloss object registered (a user's hook, which may change
    or replace its output before the package's hooks see it)."""
    for hook in module._forward_hooks.values():
        fn = getattr(hook, "func", hook)  # functools.partial
        fn = getattr(fn, "__func__", fn)  # bound method
        if not (getattr(fn, "__module__", "") or "").startswith("synopsloss."):
            return True
    return False


def made_by_package(frame: Any) -> bool:
    """Whether the op whose ``__torch_function__`` was called from ``frame`` was made by the package's own code
    (its reductions, its hooks), not by the model: the package's mode handlers in between are passed over.

    Example
    -------
    >>> import sys
    >>> made_by_package(sys._getframe(0))  # (a frame of this doctest, outside the package)
    False
    """
    while frame is not None and frame.f_code.co_name == "__torch_function__" \
            and frame.f_code.co_filename.startswith(PACKAGE_DIR):  # (two modes of the package, stacked)
        frame = frame.f_back
    return frame is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR)


def installed(path: Optional[str]) -> bool:
    """Whether the source file ``path`` belongs to installed code (a library, the standard library, this package)
    rather than the user's own: the helpers and copies of a library's classes are not followed into.

    Example
    -------
    >>> installed(torch.__file__), installed("/home/me/model.py")
    (True, False)
    """
    return bool(path) and path.startswith(_INSTALLED)  # type: ignore[union-attr]


def next_stamp() -> int:
    """A process-wide increasing number: the forward order of first calls, across counters and monitors."""
    return next(STAMPS)


#: what pickling a model with a counter's hooks on it raises
ATTACHED_PICKLE = ("a model with a synopsloss counter (or neuron monitor) attached cannot be pickled: the counter's "
                   "hooks on it hold the live counter. Call counter.remove() first (or save model.state_dict()), "
                   "then pickle or torch.save the model.")


def _inert(*args: Any, **kwargs: Any) -> None:
    """What a counter's hook becomes in a deep copy of the model: nothing (the copy is not counted)."""
    return None


class Hook(functools.partial):
    """A hook of the package on a user's module: called as the function it wraps (a C call, no extra frame).

    Pickling it (a model pickled or ``torch.save``-d with a counter attached) raises a ``TypeError`` that
    says what to do; in a deep copy of the model it becomes :func:`_inert` (the copy is not counted, and it
    pickles and saves).
    """

    __slots__ = ()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(ATTACHED_PICKLE)

    def __deepcopy__(self, memo: Dict[int, Any]) -> Callable[..., None]:
        return _inert


class HookSet:
    """The forward hooks one owner put on a model, switched on and off together.

    No hook runs while a backward pass re-runs a forward (gradient checkpointing recomputes it): what it
    saw was seen by the forward itself.

    Hook functions registered with ``owned=True`` (the default) are called as
    ``fn(owner, module, ...)`` with the owner looked up through a weak
    reference; ``owned=False`` functions are called as ``fn(module, ...)``
    and must not reference the owner.
    """

    def __init__(self, owner: Optional[Any] = None) -> None:
        self._handles: List[Any] = []
        self.enabled = True
        self._owner = weakref.ref(owner) if owner is not None else None
        if owner is not None:
            weakref.finalize(owner, _remove_all, self._handles)

    @property
    def attached(self) -> bool:
        """Whether any hook is registered."""
        return bool(self._handles)

    def _guard(self, target: nn.Module, fn: Callable[..., Any], owned: bool,
               returns: bool = False, quiet: bool = False) -> Callable[..., Any]:
        target_ref = weakref.ref(target)
        owner_ref = self._owner if owned else None
        state = weakref.ref(self)

        def hook(module: nn.Module, *rest: Any) -> Any:
            if _compiling():  # torch.compile traces this hook: run it eagerly instead (see COMPILE_NOTE)
                if exporting():
                    return None  # (torch.export: fake tensors, no values to count)
                if not eager:  # made on first use: torch.compiler.disable imports dynamo (seconds)
                    eager.append(eager_under_compile(functools.partial(_flagged, hook)))
                return eager[0](module, *rest)
            hooks = state()
            if hooks is None or not hooks.enabled or module is not target_ref() or _TASK() != -1:
                return  # (paused, a deep copy, or a forward re-run by backward: gradient checkpointing)
            popped = pop_package_modes() if quiet and mode_depth() else None
            try:
                if owner_ref is None:
                    out = fn(module, *rest)
                    return out if returns else None
                owner = owner_ref()
                if owner is not None:
                    out = fn(owner, module, *rest)
                    return out if returns else None
                return None
            finally:
                if popped is not None:
                    push_modes(popped)

        # made at once when dynamo is loaded (then free), else on first use: importing it takes seconds
        eager: List[Callable[..., None]] = ([eager_under_compile(functools.partial(_flagged, hook))]
                                           if "torch._dynamo" in sys.modules else [])
        return Hook(hook)

    def forward(self, module: nn.Module, fn: Callable[..., None], *, with_kwargs: bool = False,
                owned: bool = True, always_call: bool = False, prepend: bool = False, quiet: bool = False) -> None:
        """``fn([owner,] module, args, [kwargs,] output)`` after each call of ``module`` itself (not of its copies).

        ``always_call=True``: also when the forward raised (then as ``fn([owner,] module, args, None)``).
        ``prepend=True``: run before the forward hooks already on the module, and before those added
        later without ``prepend`` (FSDP2's, which reshards the weights: :mod:`synopsloss.sharding`).
        ``quiet=True``: ``fn`` makes only the package's own ops (and pushes or pops no function mode): the
        package's function modes are popped while it runs (:func:`pop_package_modes`).
        """
        hook = self._guard(module, fn, owned and self._owner is not None, quiet=quiet)
        self._handles.append(module.register_forward_hook(hook, with_kwargs=with_kwargs, always_call=always_call,
                                                          prepend=prepend))

    def replacing(self, module: nn.Module, fn: Callable[..., Any]) -> None:
        """``fn(module, args, kwargs, output)`` after each call of ``module``, first of its forward hooks; what it
        returns (unless ``None``) replaces the call's output (:class:`synopsloss.fastpath.FusedGuard`)."""
        hook = self._guard(module, fn, False, returns=True)
        self._handles.append(module.register_forward_hook(hook, with_kwargs=True, prepend=True))

    def pre(self, module: nn.Module, fn: Callable[..., None], *, with_kwargs: bool = False, owned: bool = True,
            prepend: bool = False, quiet: bool = False) -> None:
        """``fn([owner,] module, args, [kwargs])`` before each call of ``module`` itself (``prepend``: first;
        ``quiet``: as for :meth:`forward`)."""
        hook = self._guard(module, fn, owned and self._owner is not None, quiet=quiet)
        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=with_kwargs, prepend=prepend))

    def direct(self, module: nn.Module, hook: Callable[[nn.Module, tuple, dict, Any], None]) -> None:
        """Register ``hook(module, args, kwargs, output)`` as a forward hook as it is, before the others
        (``prepend``), for the hot path of a counted layer: one frame per call instead of the guard's two.

        ``hook`` does the guard's work itself: it must hold no strong reference to the owner, return at
        once unless ``self.enabled`` and ``module`` is its own (not a deep copy), record nothing while a
        backward pass re-runs the forward (gradient checkpointing), and run itself through :meth:`eager`
        while :func:`compiling` is true.
        """
        self._handles.append(module.register_forward_hook(Hook(hook), with_kwargs=True, prepend=True))

    @staticmethod
    def eager(hook: Callable[..., None], cache: List[Callable[..., None]]) -> Callable[..., None]:
        """``hook`` run eagerly under ``torch.compile`` (made once into ``cache``: dynamo imports are slow)."""
        if not cache:
            cache.append(eager_under_compile(hook))
        return cache[0]

    def remove(self) -> None:
        """Take every hook off."""
        _remove_all(self._handles)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hooks stay registered but do nothing inside the block."""
        before, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = before


def _remove_all(handles: List[Any]) -> None:
    for handle in handles:
        handle.remove()
    handles.clear()
