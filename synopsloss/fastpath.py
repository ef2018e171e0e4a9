"""Keep torch's nested-tensor fast path of ``nn.TransformerEncoder`` as it is without the counter.

Under ``no_grad`` in eval mode with a ``src_key_padding_mask``,
``nn.TransformerEncoder`` turns its input into a nested tensor (padded tokens
dropped) and pads the result back with zeros. Torch skips that fast path when a
``TorchFunctionMode`` is active (``has_torch_function``), and the counter's
function mode is active inside transformer modules: without this guard, the
padded tokens would then come out with values instead of 0 -- attaching the
counter would change the model's output.

:class:`EncoderGuard` is a forward pre-hook (with kwargs) on each
``nn.TransformerEncoder``: it re-checks torch's fast-path conditions (those of
``TransformerEncoder.forward`` in torch 2.x, the counter's own modes left out)
and, when the fast path would run without the counter, runs the call with
torch functions modes disabled and the counter paused, and warns that this
call's synapses were not counted and how to count them.

Example
-------
>>> import torch
>>> enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1,
...                                   enable_nested_tensor=True).eval()
>>> mask = torch.tensor([[False, False, True]])
>>> with torch.no_grad():
...     takes_fast_path(enc, (torch.ones(1, 3, 8),), {"src_key_padding_mask": mask})
True
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, List, Optional

import torch
from torch import Tensor, nn

from .hooks import Hook

__all__ = ["EncoderGuard", "FusedGuard", "layer_takes_fast_path", "mha_takes_fast_path", "takes_fast_path"]


def _layer_tensors(layer: nn.Module, src: Tensor) -> Optional[tuple]:
    """The tensors torch's fused encoder-layer kernel takes (input, attention, norms, feed-forward), as
    ``nn.TransformerEncoderLayer.forward`` lists them; ``None`` for a layer without them."""
    attn = layer.self_attn
    try:
        return (src, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight, attn.out_proj.bias,
                layer.norm1.weight, layer.norm1.bias, layer.norm2.weight, layer.norm2.bias,
                layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias)
    except AttributeError:
        return None


def _fused_tensors(tensors: List[Tensor]) -> bool:
    """torch's fast-path conditions on a fused kernel's tensors: plain tensors (a subclass has a torch function
    without the counter too), on a device with the kernel, and no gradient to record."""
    if any(type(t) not in (Tensor, nn.Parameter) for t in tensors):
        return False
    devices = ("cpu", "cuda", "xpu", torch._C._get_privateuse1_backend_name())
    if any(t.device.type not in devices for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _only_our_modes() -> bool:
    """Whether every torch function mode on the stack is one of synopsloss's (or none is)."""
    for i in range(torch._C._len_torch_function_stack()):
        mode = torch._C._get_function_stack_at(i)
        if not (type(mode).__module__ or "").startswith("synopsloss."):
            return False
    return True


def takes_fast_path(encoder: nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether ``encoder(*args, **kwargs)`` would take torch's nested-tensor fast path without the counter.

    The conditions of ``nn.TransformerEncoder.forward``; ``False`` whenever one is unknown.
    """
    src = args[0] if args else kwargs.get("src")
    mask = args[1] if len(args) > 1 else kwargs.get("mask")
    pad = args[2] if len(args) > 2 else kwargs.get("src_key_padding_mask")
    layers = getattr(encoder, "layers", None)
    if not isinstance(src, Tensor) or not isinstance(pad, Tensor) or mask is not None or not layers:
        return False
    first = layers[0]
    attn = getattr(first, "self_attn", None)
    if attn is None or not getattr(encoder, "use_nested_tensor", False) or first.training:
        return False
    if not torch.backends.mha.get_fastpath_enabled() or src.dim() != 3 or src.is_nested:
        return False
    if torch.is_autocast_enabled() or torch.compiler.is_compiling() or not _only_our_modes():
        return False
    tensors = _layer_tensors(first, src)
    if tensors is None or not _fused_tensors([t for t in tensors if t is not None]):
        return False
    if getattr(encoder, "mask_check", True):
        with torch._C.DisableTorchFunction():
            if not torch._nested_tensor_from_mask_left_aligned(src, pad.logical_not()):
                return False
    return True


class EncoderGuard:
    """Pre- and post-hook of one ``nn.TransformerEncoder`` that keeps its fast path (see the module docstring).

    Parameters
    ----------
    name
        The encoder's qualified name (for the warning).
    counter
        A weak reference to the counter (its public ``counting``, ``paused()`` and ``warn()``).
    """

    def __init__(self, name: str, counter: Callable[[], Any]) -> None:
        self.name = name
        self._counter = counter
        self._open: List[Optional[contextlib.ExitStack]] = []

    def pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        counter = self._counter()
        if counter is None or not counter.counting or not takes_fast_path(module, args, kwargs):
            self._open.append(None)
            return
        stack = contextlib.ExitStack()
        stack.enter_context(counter.paused())
        stack.enter_context(torch._C.DisableTorchFunction())
        self._open.append(stack)
        counter.warn(
            f"synopsloss: nn.TransformerEncoder {self.name or '<root>'!r} takes torch's nested-tensor fast path "
            "here (eval mode, no gradients, src_key_padding_mask); the counter lets it run unchanged, so that the "
            "model's output is the same as without the counter, and the synops of this call (its layers' "
            "projections and attention products) are NOT counted. To count them, build the encoder with "
            "enable_nested_tensor=False, or run it with gradients enabled.", stacklevel=4)

    def post(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._open:
            stack = self._open.pop()
            if stack is not None:
                stack.close()


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")


def _only_our_hooks(modules: List[nn.Module]) -> bool:
    """Whether every forward (pre-)hook on ``modules`` is one of synopsloss's (or there is none)."""
    return all(isinstance(h, Hook) for m in modules for d in _HOOK_DICTS for h in getattr(m, d).values())


def layer_takes_fast_path(layer: nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether ``layer(*args, **kwargs)``, an ``nn.TransformerEncoderLayer``, would run torch's fused
    ``_transformer_encoder_layer_fwd`` without the counter (its hooks and modes left out).

    The conditions of ``nn.TransformerEncoderLayer.forward`` in torch 2.x; ``False`` whenever one is unknown.

    Example
    -------
    >>> layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
    >>> with torch.no_grad():
    ...     layer_takes_fast_path(layer, (torch.ones(1, 3, 8),), {})
    True
    """
    src = args[0] if args else kwargs.get("src")
    mask = args[1] if len(args) > 1 else kwargs.get("src_mask")
    pad = args[2] if len(args) > 2 else kwargs.get("src_key_padding_mask")
    attn = getattr(layer, "self_attn", None)
    if not isinstance(src, Tensor) or attn is None or layer.training:
        return False
    if not torch.backends.mha.get_fastpath_enabled() or src.dim() != 3 or src.is_nested:
        return False
    try:
        if (not attn.batch_first or attn.in_proj_bias is None or not attn._qkv_same_embed_dim
                or not layer.activation_relu_or_gelu or layer.norm1.eps != layer.norm2.eps or attn.num_heads % 2):
            return False
    except AttributeError:
        return False
    tensors = _layer_tensors(layer, src)
    if tensors is None:
        return False
    if torch.is_autocast_enabled() or torch.compiler.is_compiling() or not _only_our_modes():
        return False
    if not _only_our_hooks(list(layer.modules())):
        return False  # a user's hook: torch leaves the fast path without the counter too
    if any(isinstance(m, Tensor) and type(m) is not Tensor for m in (mask, pad)):
        return False
    return all(t is not None for t in tensors) and _fused_tensors(list(tensors))


def mha_takes_fast_path(attn: nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether ``attn(*args, **kwargs)``, an ``nn.MultiheadAttention``, would run torch's fused
    ``_native_multi_head_attention`` without the counter (its modes left out; this path checks no hooks).

    The conditions of ``nn.MultiheadAttention.forward`` in torch 2.x; ``False`` whenever one is unknown.

    Example
    -------
    >>> attn = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    >>> x = torch.ones(1, 3, 8)
    >>> with torch.no_grad():
    ...     mha_takes_fast_path(attn, (x, x, x), {"need_weights": False})
    True
    """
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    given = dict(zip(names, args))
    given.update(kwargs)
    query, key, value = given.get("query"), given.get("key"), given.get("value")
    masks = [given.get("key_padding_mask"), given.get("attn_mask")]
    if not isinstance(query, Tensor) or query is not key or key is not value or attn.training:
        return False
    if not torch.backends.mha.get_fastpath_enabled() or query.dim() != 3 or query.is_nested:
        return False
    if any(m is not None and (not isinstance(m, Tensor) or type(m) is not Tensor or torch.is_floating_point(m))
           for m in masks):
        return False
    w, b = getattr(attn, "in_proj_weight", None), getattr(attn, "in_proj_bias", None)
    out = getattr(attn, "out_proj", None)
    if w is None or b is None or out is None or query.dtype != w.dtype or query.dtype != b.dtype:
        return False
    if (attn.num_heads % 2 or not attn.batch_first or attn.bias_k is not None or attn.bias_v is not None
            or attn.add_zero_attn or not attn._qkv_same_embed_dim):
        return False
    if torch.is_autocast_enabled() or torch.compiler.is_compiling() or not _only_our_modes():
        return False
    tensors = (query, w, b, out.weight, out.bias)
    return all(t is not None for t in tensors) and _fused_tensors(list(tensors))


def _global_forward_hooks() -> bool:
    """Whether global module forward hooks are registered (they run before a module's own: a fused output
    put in after them would drop their changes, so the counted output is kept then)."""
    from torch.nn.modules import module as m

    return bool(m._global_forward_hooks)


@contextlib.contextmanager
def _lifted(modules: List[nn.Module]) -> Any:
    """synopsloss's hooks taken off ``modules`` and put back where they were (other hooks stay)."""
    saved = [(m, d, list(getattr(m, d).items())) for m in modules for d in _HOOK_DICTS if getattr(m, d)]
    for m, d, items in saved:
        hooks = getattr(m, d)
        hooks.clear()
        hooks.update((k, h) for k, h in items if not isinstance(h, Hook))
    try:
        yield
    finally:
        for m, d, items in saved:
            hooks = getattr(m, d)
            hooks.clear()
            hooks.update(items)


class FusedGuard:
    """Forward hook (with kwargs) of an ``nn.TransformerEncoderLayer`` or ``nn.MultiheadAttention``: keeps
    torch's fused output.

    Without the counter, these modules in eval mode under ``no_grad`` run torch's fused kernels
    (``_transformer_encoder_layer_fwd``, ``_native_multi_head_attention``); the counter's function mode (and
    its hooks on an encoder layer's linear layers) make torch take the Python path instead, so that every
    product is seen and counted, whose output differs in the last bits. When the module would have taken the
    fused path (``takes``: :func:`layer_takes_fast_path`, :func:`mha_takes_fast_path`), this hook runs it again
    that way, with the counter paused and its hooks lifted, and returns that output: the counts are those of
    the counted call, the model's output is the same as without the counter (the module runs twice).

    Parameters
    ----------
    counter
        A weak reference to the counter (its public ``counting`` and ``paused()``).
    takes
        Whether a call would take the fused path without the counter.
    """

    def __init__(self, counter: Callable[[], Any], takes: Callable[[nn.Module, tuple, dict], bool]) -> None:
        self._counter = counter
        self._takes = takes

    def post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        counter = self._counter()
        if counter is None or not counter.counting or _global_forward_hooks() or not self._takes(module, args, kwargs):
            return None
        # the module's forward alone, on the arguments its pre-hooks gave: no hook of the module runs twice (this
        # hook runs first of its forward hooks, so the later ones get the fused output)
        with counter.paused(), torch._C.DisableTorchFunction(), _lifted(list(module.modules())):
            return module.forward(*args, **kwargs)
