"""The AvgPool spike-event correction.

An average pool divides spike counts by its window's divisor; a synaptic
layer after it receives ``events / divisor``. On event-driven hardware the
pooled spikes are still events, so the counter multiplies a pool's output
back by the divisor of each position before counting, when the events are
integers (spike counts). Real-valued activations are left as they are.

:class:`PoolEvents` follows a pool's output tensor (by storage address, with a
weak reference to its owner) through layers that only reshape or drop values
(``Flatten``, ``Dropout``, ``ReLU``, views), so the synaptic layer that reads
it can find the divisor. The divisors of each pool type (exact per position:
``count_include_pad``, ``ceil_mode``, ``divisor_override``, clipped windows
and adaptive windows) are computed by :func:`avgpool_divisor` and
:func:`adaptive_divisor`; which types they apply to is in
:data:`synopsloss.registry.POOL_DIVISORS`.

Example
-------
>>> import torch
>>> avgpool_divisor(torch.nn.AvgPool1d(2, padding=1, count_include_pad=False), (1, 4), (1, 3), 1)
tensor([[1., 2., 1.]], dtype=torch.float64)
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import reductions
from .reductions import Scratch

__all__ = ["PoolEvents", "avgpool_divisor", "adaptive_divisor", "all_integer", "EVENT_TOL"]

Shape = Tuple[int, ...]
#: How far avg-pooled spike counts times the pool's divisor may lie from an integer (float rounding).
EVENT_TOL = 1e-3

_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _ntuple(v: Any, n: int) -> Tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def avgpool_divisor(module: nn.Module, in_shape: Shape, out_shape: Shape, n: int) -> Tensor:
    """Divisor PyTorch used at each output position (kernel area, clipped windows, count_include_pad)."""
    if getattr(module, "divisor_override", None):
        return torch.tensor(float(module.divisor_override), dtype=torch.float64)
    ones = torch.ones((1, 1, *in_shape[-n:]), dtype=torch.float64)
    kw = dict(
        kernel_size=_ntuple(module.kernel_size, n), stride=_ntuple(module.stride or module.kernel_size, n),
        padding=_ntuple(module.padding, n), ceil_mode=module.ceil_mode,
    )
    if n == 1:  # avg_pool1d has no divisor_override: pool a [1, L] plane with a (1, k) window
        ones = ones.unsqueeze(-2)
        kw = {k: (v if k == "ceil_mode" else (1 if k != "padding" else 0,) + v) for k, v in kw.items()}
    pool = _AVG[max(n, 2)]
    valid = pool(ones, count_include_pad=True, divisor_override=1, **kw)  # in-bounds elements per window
    avg = pool(ones, count_include_pad=module.count_include_pad, **kw)  # valid / divisor
    div = (valid / avg)[0]
    return div.squeeze(-2) if n == 1 else div


def adaptive_divisor(module: nn.Module, in_shape: Shape, out_shape: Shape, n: int) -> Tensor:
    """Window sizes of adaptive average pooling: end - start per output position and dim."""
    div = torch.ones((), dtype=torch.float64)
    for d in range(n):
        i, o = in_shape[-n + d], out_shape[-n + d]
        idx = torch.arange(o)
        start = (idx * i) // o
        end = -((-(idx + 1) * i) // o)
        size = (end - start).to(torch.float64)
        view = [1] * n
        view[d] = o
        div = div * size.reshape(view)
    return div


def all_integer(t: Tensor, tol: float = EVENT_TOL) -> Tensor:
    """0-dim bool tensor: every value of ``t`` is within ``tol`` of an integer (no host sync)."""
    dev = torch.aminmax(t - t.round())
    return (dev.min >= -tol) & (dev.max <= tol)


class _Tag:
    """What a pool told about one output tensor."""

    __slots__ = ("owner", "version", "numel", "shape", "offset", "contiguous", "scale", "integer")

    def __init__(self, t: Tensor, scale: Tensor, integer: Tensor) -> None:
        # Watch the tensor that owns the memory: a view (``y.view(...)``, ``flatten``) keeps its
        # base alive, not the tensor it was taken from, and a pool's output can itself be a view
        # (avg_pool1d squeezes a 2-d result), which may be freed while the data is still read.
        owner = t._base if t._base is not None else t
        self.owner = weakref.ref(owner)
        self.version = t._version  # shared by every view of the memory
        self.numel, self.shape, self.offset = t.numel(), tuple(t.shape), t.storage_offset()
        self.contiguous = t.is_contiguous()
        self.scale = scale  # divisor of each output position of one sample, flattened
        self.integer = integer  # 0-dim bool: the pool's input was integer (spike counts)


class PoolEvents:
    """Tags average-pool outputs with their divisors and finds them again in a synaptic layer's input.

    The correction applies when the pool's *input* held integers (spike
    counts): then each pooled value times its divisor is an integer number of
    events, rounded exactly (also in bf16 / fp16). A synaptic layer may read
    the pool output whole, or any view of it (slices, permutes, reshapes): the
    divisors are laid out with the view's own strides. When the output was
    modified in place after pooling, the correction cannot be known: it is not
    applied and a warning names the layer.
    """

    def __init__(self, scratch: Optional[Scratch] = None) -> None:
        self._tags: Dict[int, _Tag] = {}
        self._scratch = scratch if scratch is not None else Scratch()

    def clear(self) -> None:
        self._tags.clear()

    @property
    def tagged(self) -> bool:
        """Whether a pool output was tagged since the last clear (else no input needs a lookup)."""
        return bool(self._tags)

    def pool_hook(self, divisor_fn: Callable[[nn.Module, Shape, Shape, int], Tensor], n: int):
        """A forward hook for one pool module: tags its output with the per-position divisor."""
        cache: Dict[tuple, Tensor] = {}

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not args or not isinstance(output, Tensor) or not isinstance(args[0], Tensor):
                return
            x = args[0]
            in_sample = tuple(x.shape[-(n + 1):])
            out_sample = tuple(output.shape[-(n + 1):])
            key = (in_sample, out_sample, output.device)
            div = cache.get(key)
            if div is None:
                div = divisor_fn(module, in_sample, out_sample, n).to(device=output.device, dtype=torch.float32)
                div = cache[key] = div.expand(out_sample).reshape(-1).contiguous()
            with torch.no_grad():
                integer = (reductions.all_integer(x, EVENT_TOL, self._scratch) if x.is_floating_point()
                           else torch.ones((), dtype=torch.bool, device=x.device))
            self._tags[output.untyped_storage().data_ptr()] = _Tag(output, div, integer)

        return hook

    def pass_through_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        """A forward hook for layers that keep each value or zero it: the tag follows the tensor."""
        if not self._tags or not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
            return
        x = args[0]
        tag = self._tags.get(x.untyped_storage().data_ptr())
        if tag is None or tag.owner() is None or x.numel() != tag.numel or output.numel() != x.numel():
            return
        if output.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
            tag.version = output._version  # changed in place by this layer (ReLU(inplace=True)): still events
        else:
            self._tags[output.untyped_storage().data_ptr()] = _Tag(output, tag.scale, tag.integer)

    def _find(self, x: Tensor) -> Tuple[Optional[_Tag], Optional[Tensor], str]:
        """``(tag, divisors laid out like x, why not)`` for a tensor reading a pool output's memory."""
        tag = self._tags.get(x.untyped_storage().data_ptr())
        if tag is None:
            return None, None, ""
        if tag.owner() is None:
            return None, None, ""
        if x._version != tag.version:
            return tag, None, "the pool's output was modified in place after pooling"
        if x.numel() == tag.numel and x.is_contiguous() and x.storage_offset() == tag.offset:
            return tag, tag.scale, ""  # the whole output in its own layout (views, flatten)
        if not tag.contiguous or tag.numel % tag.scale.numel():
            return tag, None, "it reads a non-contiguous pool output"
        full = tag.scale.expand(tag.numel // tag.scale.numel(), tag.scale.numel()).reshape(tag.shape)
        offset = x.storage_offset() - tag.offset
        try:
            return tag, full.contiguous().as_strided(x.size(), x.stride(), offset), ""
        except RuntimeError:
            return tag, None, "it reads the pool's memory outside the pool's output"

    def scale_for(self, name: str, x: Tensor, rows: int, n_el: int,
                  warn: Callable[[str], None]) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """The divisors that turn ``x``'s values into spike events, when ``x`` is an average-pool output.

        Returns ``(scale, integer)``: ``scale`` per neuron (``[n_el]``) or per
        element (``[rows, n_el]``, for views whose divisors differ between
        rows), and ``integer`` the 0-dim bool "the pool's input held
        integers" (only then are events counted). ``(None, None)`` when ``x``
        is no pool output, or when the correction cannot be applied (then a
        warning names the layer).
        """
        if not self._tags:
            return None, None
        tag, scale, why = self._find(x)
        if tag is None:
            return None, None
        if scale is None:
            warn(f"synopsloss: layer {name!r} reads an average-pool output but {why}; its spikes are counted as "
                 "the pooled values, not as spike events (the AvgPool correction is not applied). Apply the "
                 "change before the pool, or count the events yourself.")
            return None, None
        if scale.numel() == rows * n_el:  # divisors laid out like the view x
            scale = scale.reshape(rows, n_el)
            return (scale[0] if rows == 1 else scale), tag.integer
        if n_el % scale.numel() == 0:  # one sample's divisors, the same for every row
            return (scale if n_el == scale.numel() else scale.repeat(n_el // scale.numel())), tag.integer
        # a row holds part of a pool sample: the divisors repeat along the flattened input
        return scale.expand(rows * n_el // scale.numel(), scale.numel()).reshape(rows, n_el), tag.integer
