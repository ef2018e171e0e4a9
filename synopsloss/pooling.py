"""The AvgPool spike-event correction.

An average pool divides spike counts by its window's divisor; a synaptic
layer after it receives ``events / divisor``. On event-driven hardware the
pooled spikes are still events, so the counter multiplies a pool's output
back by the divisor of each position before counting, when the events are
integers (spike counts). Real-valued activations are left as they are.

:class:`PoolEvents` follows a pool's output tensor (by storage address, with a
weak reference to its owner) through layers that only reshape or drop values
(``Flatten``, ``Dropout`` -- its training scale ``1/(1-p)`` included --,
``ReLU``, views), so the synaptic layer that reads it can find the divisor.
Inside the modules whose own code calls a functional pool (``F.avg_pool2d``)
or, when the model has a pool, ``torch.cat`` / ``torch.stack`` / ``F.dropout``
/ ``F.relu``, a light function mode (pushed by a pre-hook, popped by an
``always_call`` hook) follows those calls too. Where a tag cannot be trusted
(in-place changes, a user's forward hook, an ``AvgPool`` subclass returning
something else) a warning names the layer. Divisors are cached in an LRU of
:data:`DIVISOR_CACHE` entries. The divisors of each pool type (exact per position:
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

import functools
import math
import sys
import warnings
import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import reductions
from .errors import SynOpsWarning
from .reductions import Scratch
from .hooks import PackageMode, foreign_forward_hooks, installed, made_by_package, take_off
from .records import WholeSpikes, version_of, whole_range

__all__ = ["PoolEvents", "avgpool_divisor", "adaptive_divisor", "all_integer", "EVENT_TOL", "DIVISOR_CACHE",
           "POOL_FUNCTIONS", "CARRY_FUNCTIONS", "COPY_FUNCTIONS"]

Shape = Tuple[int, ...]
#: How far avg-pooled spike counts times the pool's divisor may lie from an integer (float rounding).
EVENT_TOL = 1e-3

_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _ntuple(v: Any, n: int) -> Tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _windows(module: nn.Module, in_shape: Shape, n: int, padding: Any,
             count_include_pad: Optional[bool] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """The in-bounds elements of each window of pool ``module`` over a sample of ``in_shape`` (float64,
    ``[1, *out]``), and with ``count_include_pad`` the average of ones it gives there (``valid / divisor``)."""
    ones = torch.ones((1, 1, *in_shape[-n:]), dtype=torch.float64)
    kw = dict(kernel_size=_ntuple(module.kernel_size, n), stride=_ntuple(module.stride or module.kernel_size, n),
              padding=_ntuple(padding, n), ceil_mode=module.ceil_mode)
    if n == 1:  # avg_pool1d has no divisor_override: pool a [1, L] plane with a (1, k) window
        ones = ones.unsqueeze(-2)
        kw = {k: (v if k == "ceil_mode" else (1 if k != "padding" else 0,) + v) for k, v in kw.items()}
    pool = _AVG[max(n, 2)]
    valid = pool(ones, count_include_pad=True, divisor_override=1, **kw)[0]
    avg = None if count_include_pad is None else pool(ones, count_include_pad=count_include_pad, **kw)[0]
    if n == 1:
        return valid.squeeze(-2), (None if avg is None else avg.squeeze(-2))
    return valid, avg


def avgpool_divisor(module: nn.Module, in_shape: Shape, out_shape: Shape, n: int) -> Tensor:
    """Divisor PyTorch used at each output position (kernel area, clipped windows, count_include_pad)."""
    if getattr(module, "divisor_override", None):
        return torch.tensor(float(module.divisor_override), dtype=torch.float64)
    valid, avg = _windows(module, in_shape, n, module.padding, module.count_include_pad)
    return valid / avg


def sumpool_divisor(module: nn.Module, in_shape: Shape, out_shape: Shape, n: int) -> Tensor:
    """Divisor of a sum pool (``LPPool`` with ``norm_type=1``, sinabs' ``SumPool2d``: the window's average times
    the kernel's area) at each output position: the in-bounds elements over the area, 1 where the window lies in
    the input (``ceil_mode`` clips the last windows, whose output is then more than their sum).

    Its output is the sum of its window up to float rounding (``avg * k * k`` is 15.000001 for 15 spikes under
    a 5 x 5 kernel): the events are its values times this divisor, rounded, when its input held integers.
    """
    valid, _ = _windows(module, in_shape, n, 0)
    return valid / float(math.prod(_ntuple(module.kernel_size, n)))


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


#: How many divisor tensors one counter keeps (least recently used first out): one per pool and input shape.
DIVISOR_CACHE = 64

#: Functional average pools the counter follows in the modules whose code calls them (``F.avg_pool2d(x, 4)``).
POOL_FUNCTIONS = ("avg_pool1d", "avg_pool2d", "avg_pool3d",
                  "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d")
#: Functions through which a pool output's tag is followed (in the same modules, when the model has a pool).
CARRY_FUNCTIONS = ("cat", "concat", "concatenate", "stack", "dropout", "dropout1d", "dropout2d", "dropout3d", "relu")
#: Copies (a reshape of a permuted tensor, ``.contiguous()``, ...) and max pools through which a pool output's tag is
#: followed in the modules of the user's own code (a library's neuron reshapes its own state at every step)
COPY_FUNCTIONS = ("reshape", "flatten", "contiguous", "clone", "ravel", "to", "flip", "roll",
                  "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
                  "adaptive_max_pool3d", "double", "float", "half", "bfloat16", "type", "type_as",
                  "pad", "interpolate", "upsample", "upsample_nearest", "pixel_shuffle", "pixel_unshuffle",
                  "channel_shuffle", "detach", "index_select", "repeat", "tile", "repeat_interleave", "gather",
                  "take_along_dim", "masked_select", "__getitem__")
#: upsampling modes that copy values (the others interpolate: their outputs are read as values)
_NEAREST = ("nearest", "nearest-exact")

_AVG_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_DROPOUT_ARGS = ("input", "p", "training", "inplace")
_PLAIN_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_POOL_FORWARDS = frozenset(c.forward for c in (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                                               nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.LPPool1d, nn.LPPool2d,
                                               getattr(nn, "LPPool3d", nn.LPPool2d)))


def _bind(names: Tuple[str, ...], args: tuple, kwargs: dict, defaults: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out


def _key(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


class _Spec:
    """The arguments of one functional ``avg_poolNd`` call, read like a pool module's attributes."""

    def __init__(self, a: Dict[str, Any]) -> None:
        self.kernel_size = a["kernel_size"]
        self.stride = a.get("stride") or a["kernel_size"]
        self.padding = a.get("padding", 0)
        self.ceil_mode = bool(a.get("ceil_mode", False))
        self.count_include_pad = bool(a.get("count_include_pad", True))
        self.divisor_override = a.get("divisor_override")

    def key(self) -> tuple:
        return tuple(_key(getattr(self, k)) for k in _AVG_ARGS[1:])


def _module_key(module: nn.Module) -> tuple:
    return tuple(_key(getattr(module, k, None)) for k in _AVG_ARGS[1:])


class _Tag:
    """What a pool told about one output tensor."""

    __slots__ = ("owner", "version", "numel", "shape", "stride", "offset", "contiguous", "scale", "integer", "why")

    def __init__(self, t: Tensor, scale: Optional[Tensor], integer: Optional[Tensor], why: str = "") -> None:
        # Watch the tensor that owns the memory: a view (``y.view(...)``, ``flatten``) keeps its
        # base alive, not the tensor it was taken from, and a pool's output can itself be a view
        # (avg_pool1d squeezes a 2-d result), which may be freed while the data is still read.
        owner = t._base if t._base is not None else t
        # An inference tensor's views have no ``_base`` (under ``torch.inference_mode`` a flatten of the pool's
        # output does not keep it alive): held until the tags are cleared (the next forward of the model)
        self.owner = (lambda: owner) if owner.is_inference() else weakref.ref(owner)
        self.version = version_of(t)  # shared by every view of the memory
        self.numel, self.shape, self.offset = t.numel(), tuple(t.shape), t.storage_offset()
        self.stride = t.stride()
        self.contiguous = t.is_contiguous()
        self.scale = scale  # divisor of each output position of one sample (or of every element), flattened
        self.integer = integer  # 0-dim bool: the pool's input was integer (spike counts)
        self.why = why  # set when the correction cannot be known (the reading layer is then named in a warning)


class _PoolMode(PackageMode):
    """Sees the functional pools (and the joins, dropouts and ReLUs after them) inside the framed modules."""

    def __init__(self, events: "PoolEvents") -> None:
        super().__init__()
        self.events = weakref.ref(events)
        self.handlers: Dict[Any, Callable] = {}

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        handler = self.handlers.get(func)
        if handler is not None and isinstance(out, Tensor) and not made_by_package(sys._getframe(1)):
            events = self.events()
            if events is not None and events.framed:
                handler(events, func, args, kwargs, out)
        return out




class PoolEvents:
    """Tags average-pool outputs with their divisors and finds them again in a synaptic layer's input.

    The correction applies when the pool's *input* held integers (spike
    counts): then each pooled value times its divisor is an integer number of
    events, rounded exactly (also in bf16 / fp16). A synaptic layer may read
    the pool output whole, or any view of it (slices, permutes, reshapes): the
    divisors are laid out with the view's own strides. Followed through:
    ``Flatten``, ``Identity``, ``ReLU``, ``Dropout`` (in training the kept
    values are scaled by ``1/(1-p)``: the divisor is scaled by ``1-p``), and,
    inside the modules whose own code calls them (:meth:`frame_modules`),
    functional pools, ``torch.cat`` / ``torch.stack``, ``F.dropout`` and
    ``F.relu``. Where the correction cannot be known -- the output modified in
    place, a user's forward hook on the pool or on a layer after it, an
    ``AvgPool`` subclass whose ``forward`` returns something else, a training
    ``AlphaDropout`` -- it is not applied and a warning names the layer.

    Parameters
    ----------
    scratch
        Work buffers shared with the counter.
    warn
        Called with each warning message (the counter's, held weakly by the caller); ``None``: ``warnings.warn``.
    whole
        The counter's record of whole-spike neuron outputs (:class:`synopsloss.records.WholeSpikes`), read only.
    """

    def __init__(self, scratch: Optional[Scratch] = None, warn: Optional[Callable[[], Any]] = None,
                 whole: Optional[WholeSpikes] = None) -> None:
        #: this forward's tags of pool outputs, by storage pointer (others only test whether it is empty: the
        #: counter's hot path reads it instead of :attr:`tagged`)
        self.tags: Dict[int, _Tag] = {}
        self._scratch = scratch if scratch is not None else Scratch()
        self._divisors: "OrderedDict[tuple, Tensor]" = OrderedDict()
        self._warn_ref = warn
        self._mode = _PoolMode(self)
        self._mode.handlers = self._handlers()
        self._frames: List[int] = []  # ids of the framed modules whose forward is running
        self._pushed = False
        # the outputs of neurons whose spikes are whole numbers by construction (the counter's, read only): a pool
        # reading one of them unchanged needs no pass to know it holds integers
        self._whole = whole

    # ------------------------------------------------------------------ state

    def clear(self) -> None:
        self.tags.clear()

    @property
    def tagged(self) -> bool:
        """Whether a pool output was tagged since the last clear (else no input needs a lookup)."""
        return bool(self.tags)

    @property
    def framed(self) -> bool:
        """Whether a framed module's forward is running (the function mode follows pools)."""
        return bool(self._frames)

    @property
    def cache_size(self) -> int:
        """Divisor tensors held (at most :data:`DIVISOR_CACHE`)."""
        return len(self._divisors)

    def _warn(self, msg: str) -> None:
        fn = self._warn_ref() if self._warn_ref is not None else None
        if fn is not None:
            fn(msg)
        else:
            warnings.warn(msg, SynOpsWarning, stacklevel=4)

    def _divisor(self, key: tuple, make: Callable[[], Tensor], out_sample: Shape, device: torch.device) -> Tensor:
        div = self._divisors.get(key)
        if div is not None:
            self._divisors.move_to_end(key)
            return div
        div = make().to(device=device, dtype=torch.float32)
        div = self._divisors[key] = div.expand(out_sample).reshape(-1).contiguous()
        if len(self._divisors) > DIVISOR_CACHE:
            self._divisors.popitem(last=False)
        return div

    def _integer(self, x: Tensor) -> Tensor:
        if not x.is_floating_point() or (self._whole is not None and self._whole.kind(x) is not None
                                         and whole_range(x, False)):
            return torch.ones((), dtype=torch.bool, device=x.device)  # (a whole-spike neuron's output, unchanged)
        with torch.no_grad():
            return reductions.all_integer(x, 0.0, self._scratch)  # exact integers

    def _tag(self, x: Tensor, output: Tensor, key: tuple, make: Callable[[], Tensor], n: int,
             rerun: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        out_sample = tuple(output.shape[-(n + 1):])
        div = self._divisor(key + (tuple(x.shape[-(n + 1):]), out_sample, output.device), make, out_sample,
                            output.device)
        if rerun is not None and self.tags and self._tag_of(x) is not None:  # a pool of a pool's output
            self._compose(x, output, rerun, lambda: div.reshape(out_sample), "an average pool")
            return
        integer = self._integer(x)
        if rerun is not None and output.dtype in (torch.float16, torch.bfloat16):
            # a half-precision average is rounded to 8 or 11 bits: ``value x divisor`` may miss the count by more
            # than 1/2 (30 x 30 windows), so each value's events are taken from the pool's own integer input
            with torch.no_grad():
                events = torch.round(rerun(x.detach().to(torch.float64)) * div.reshape(out_sample))
            self.tags[output.untyped_storage().data_ptr()] = _Tag(output, _per_value(events, output), integer)
            return
        self.tags[output.untyped_storage().data_ptr()] = _Tag(output, div, integer)

    def _compose(self, x: Tensor, output: Tensor, events_of: Callable[[Tensor], Tensor],
                 factor: Optional[Callable[[], Tensor]], what: str) -> None:
        """Tag ``output``, computed by a pool from ``x`` that reads a pool's output, with per-element divisors.

        ``x``'s events (its values times their divisors, rounded: integers when the first pool read spike
        counts) go through ``events_of`` (the same pool run on them), times ``factor()`` (an average pool's own
        divisors; ``None`` for a max pool, whose ``events_of`` picks the events where the pool picked its value):
        the events of each output value. Its divisor is then ``events / value`` (1 where the value is 0)."""
        tag, scale, why = self._find(x)
        if tag is None:
            return
        ptr = output.untyped_storage().data_ptr()
        if scale is None or tag.integer is None:
            self.tags[ptr] = _Tag(output, None, None, why or f"{what} reads it")
            return
        with torch.no_grad():
            events = torch.round(x.detach().to(torch.float64) * _laid_out(tag, scale, x))
            out_events = events_of(events)
            if factor is not None:
                out_events = torch.round(out_events * factor())
        self.tags[ptr] = _Tag(output, _per_value(out_events, output), tag.integer)

    def max_through(self, n: int, name: str = "") -> Callable[..., None]:
        """A forward hook for a max pool: when it reads an average pool's output, its own output is tagged with
        the events of the values it picked (the average pool's divisors where it took them)."""

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            x = self._pooled_input(module, args, output)
            if x is None:
                return
            if foreign_forward_hooks(module) or getattr(module, "return_indices", False):
                self.tags[output.untyped_storage().data_ptr()] = _Tag(
                    output, None, None, f"the max pool {name!r} ({type(module).__name__}) between it and the layer "
                    "has a hook of its own or returns indices")
                return
            self._compose(x, output, lambda events: _picked(module, n, x, events), None, f"the max pool {name!r}")

        return hook

    def _pooled_input(self, module: nn.Module, args: tuple, output: Any) -> Optional[Tensor]:
        """A module hook's first input when it is a tagged pool output and the module returned a tensor, else
        ``None`` (nothing to follow; nor when a forward was set on the instance since the counter attached: its
        output is read as values)."""
        if (not self.tags or not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor)
                or "forward" in vars(module)):
            return None
        return args[0] if self._tag_of(args[0]) is not None else None

    def _tag_of(self, t: Tensor) -> Optional[_Tag]:
        tag = self.tags.get(t.untyped_storage().data_ptr())
        return tag if tag is not None and tag.owner() is not None else None

    # ------------------------------------------------------------------ module hooks

    def pool_hook(self, divisor_fn: Callable[[nn.Module, Shape, Shape, int], Tensor], n: int, name: str = "",
                  module: Optional[nn.Module] = None) -> Callable[..., None]:
        """A forward hook for one pool module: tags its output with the per-position divisor.

        A subclass whose ``forward`` is not the pool's own is trusted only when its
        output is the output of a functional pool it ran (followed by the function
        mode: :meth:`frame_modules`); otherwise a warning names it.
        """
        overridden = module is not None and type(module).forward not in _POOL_FORWARDS
        label = f"average pool {name or '<root>'!r} ({type(module).__name__ if module is not None else 'pool'})"

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not args or not isinstance(output, Tensor) or not isinstance(args[0], Tensor):
                return
            if foreign_forward_hooks(module):
                self.tags.pop(output.untyped_storage().data_ptr(), None)
                self._warn(f"synopsloss: {label} has a forward hook that is not the counter's; a hook may change "
                           "the pool's output, so the AvgPool correction is not applied to the layers reading it "
                           "(their spikes are counted as the pooled values, not as spike events). Remove the hook, "
                           "or make the change in a module after the pool.")
                return
            tag = self._tag_of(output)
            if tag is not None and tag.owner() is (output._base if output._base is not None else output):
                return  # tagged by the function mode: the functional pool this module ran
            if overridden:
                self._warn(f"synopsloss: {label} overrides forward and returns a tensor that is not the output of "
                           "an average pool; the AvgPool correction is not applied to the layers reading it (their "
                           "spikes are counted as the pooled values). Return the pool's output (or call "
                           "F.avg_pool in forward), or make the change in a module after the pool.")
                return
            x = args[0]
            self._tag(x, output, (divisor_fn, _module_key(module)), lambda: divisor_fn(
                module, tuple(x.shape[-(n + 1):]), tuple(output.shape[-(n + 1):]), n), n,
                _rerun(divisor_fn, module, n, tuple(output.shape)))

        return hook

    def pass_through(self, name: str = "", keep: Optional[Callable[[nn.Module], Optional[float]]] = None
                     ) -> Callable[..., None]:
        """A forward hook for a layer that keeps each value or zeroes it: the tag follows the tensor.

        ``keep(module)``: in training, the fraction ``1 - p`` of a dropout that scales the values it keeps
        by ``1/(1-p)`` (``None`` for any other layer; default: torch's plain dropouts)."""

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            x = self._pooled_input(module, args, output)
            if x is None:
                return
            tag = self._tag_of(x)
            if tag is None or x.numel() != tag.numel or output.numel() != x.numel():
                return
            why, factor = "", 1.0
            if foreign_forward_hooks(module):  # (a hook registered later may return a new tensor: warn here)
                self.tags.pop(output.untyped_storage().data_ptr(), None)
                self._warn(f"synopsloss: layer {name!r} ({type(module).__name__}) reads an average-pool output and "
                           "has a forward hook that is not the counter's; a hook may change its output, so the "
                           "AvgPool correction is not applied after it (the spikes are counted as the pooled values, "
                           "not as spike events). Remove the hook, or make the change in a module of its own.")
                return
            if module.training:
                kept = keep(module) if keep is not None else (
                    1.0 - float(module.p) if isinstance(module, _PLAIN_DROPOUT) else None)
                if kept is not None:
                    factor = kept  # kept values are scaled by 1/(1-p)
                elif isinstance(module, nn.modules.dropout._DropoutNd):
                    why = f"the training {type(module).__name__} {name!r} changes the values between the pool and it"
            self._carry(x, output, tag, factor, why)

        return hook

    def dropout_events(self, name: str, keep: Callable[[nn.Module], Optional[float]]) -> Callable[..., None]:
        """A forward hook for a dropout layer that, in training, scales the values it keeps by ``1/(1-p)``: when its
        input holds whole numbers (spikes, spike counts) and is no pool output (those follow :meth:`pass_through`),
        its output is tagged with the divisor ``1-p``, so that a layer reading it counts each kept spike as one
        event (an AC), not ``1/(1-p)`` (a spike after ``Dropout(0.5)`` counted twice). Real-valued inputs keep
        their scaled values."""

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if (not module.training or not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor)
                    or "forward" in vars(module)):
                return
            x = args[0]
            if self.tags and self._tag_of(x) is not None:  # (a pool's output: the pass-through hook follows it)
                return
            kept = keep(module)
            if kept is None or not 0.0 < kept < 1.0 or output.numel() != x.numel() or not x.is_floating_point():
                return
            if output.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():  # (inplace=True: x is scaled)
                with torch.no_grad():
                    integer = all_integer(output.detach() * kept)  # (the values before: within float rounding)
            else:
                integer = self._integer(x)  # (whole numbers: each kept value's events are value x (1-p))
            if x.device.type == "cpu" and not bool(integer):
                return  # (real values, read on the host without a sync: no tag, the layer after reads as usual)
            if foreign_forward_hooks(module):  # (a hook may change its output: no tag, and said so)
                self._warn(f"synopsloss: the training dropout {name!r} ({type(module).__name__}) has a forward hook "
                           "that is not the counter's; a hook may change its output, so the spikes after it are "
                           f"counted as the values they are (a kept spike as 1/(1-p) = {1 / kept:.3g}, not one "
                           "event). Remove the hook (a forward pre-hook of the next layer sees the same tensor).")
                return
            scale = torch.full((1,), kept, dtype=torch.float32, device=output.device)
            self.tags[output.untyped_storage().data_ptr()] = _Tag(output, scale, integer)

        return hook

    def moved_through(self, name: str = "") -> Callable[..., None]:
        """A forward hook for a layer that moves values without mixing them (:func:`synopsloss.registry.moves_values`:
        pads, nearest upsampling, shuffles): its output keeps the events, the divisors moved by the layer's own
        forward. A pad of another value than 0 is named in a warning at the layer that reads it; an upsampling that
        interpolates makes values of its own (read as values, as after any layer that computes)."""

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            x = self._pooled_input(module, args, output)
            if x is None:
                return
            if getattr(module, "mode", "nearest") not in _NEAREST:  # (nn.Upsample(mode="bilinear"): new values)
                return
            why = ""
            if foreign_forward_hooks(module):
                why = f"the layer {name!r} ({type(module).__name__}) between it and the layer has a hook of its own"
            elif float(getattr(module, "value", 0.0) or 0.0) != 0.0:
                why = f"the layer {name!r} ({type(module).__name__}) pads it with the value {module.value}"
            self._move(x, output, lambda laid: type(module).forward(module, laid), why)

        return hook

    def _move(self, x: Tensor, out: Tensor, move: Callable[[Tensor], Tensor], why: str = "") -> None:
        """Tag ``out``, made from the tagged ``x`` by ``move`` (values moved, not mixed), with ``x``'s divisors
        moved by the same op (the padded places hold 0: no events, whatever their divisor)."""
        tag, scale, found_why = self._find(x)
        ptr = out.untyped_storage().data_ptr()
        if tag is None:
            return
        if why or scale is None:
            self.tags[ptr] = _Tag(out, None, None, why or found_why or "it cannot be followed")
            return
        with torch.no_grad():
            moved = move(_laid_out(tag, scale, x).to(torch.float32))
        if tuple(moved.shape) != tuple(out.shape):
            self.tags[ptr] = _Tag(out, None, None, "its divisors could not be moved like its values")
            return
        self.tags[ptr] = _Tag(out, moved.reshape(-1).contiguous().to(out.device), tag.integer)

    def _carry(self, x: Tensor, out: Tensor, tag: _Tag, factor: float, why: str = "") -> None:
        """Tag ``out`` (computed from the tagged ``x`` value by value) like ``x``, divisors times ``factor``."""
        if why or tag.why:
            self.tags[out.untyped_storage().data_ptr()] = _Tag(out, None, None, why or tag.why)
            return
        same = out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        if same and tag.version == version_of(out):
            return  # already followed (the function mode saw this in-place op inside the module)
        scale = tag.scale if factor == 1.0 else tag.scale * factor
        if same:  # changed in place by this layer (ReLU(inplace=True)): still events
            tag.version, tag.scale = version_of(out), scale
        else:
            self.tags[out.untyped_storage().data_ptr()] = _Tag(out, scale, tag.integer)

    # ------------------------------------------------------------------ frames (function mode)

    @staticmethod
    def frame_modules(model: nn.Module, calls_of: Callable[[type], Optional[FrozenSet[str]]],
                      pools: Iterable[nn.Module]) -> List[nn.Module]:
        """Modules inside whose forward the function mode follows functional pools, joins and dropouts.

        ``calls_of(cls)``: names of the calls in the class' own code (``None`` when unreadable);
        ``pools``: the model's pool modules. A module is framed when its code calls a functional
        average pool, or, when the model has a pool, one of :data:`CARRY_FUNCTIONS`; every
        ``AvgPool`` subclass that overrides ``forward``; and a user's class whose code cannot be read
        (made by ``exec``: it may call a pool).
        """
        pools = list(pools)
        found: List[nn.Module] = []
        carry: List[nn.Module] = []
        for module in model.modules():
            cls = type(module)
            mod = getattr(cls, "__module__", "") or ""
            if any(module is p for p in pools) and cls.forward not in _POOL_FORWARDS:
                found.append(module)
                continue
            if mod == "torch" or mod.startswith("torch."):
                continue
            calls = calls_of(cls)
            if calls is None and not installed(getattr(sys.modules.get(cls.__module__), "__file__", None)):
                found.append(module)  # (a user's class whose code cannot be read, made by exec: followed)
                continue
            calls = calls or frozenset()
            if calls & set(POOL_FUNCTIONS):
                found.append(module)
            elif calls & set(CARRY_FUNCTIONS) or (calls & set(COPY_FUNCTIONS) and not installed(
                    getattr(sys.modules.get(cls.__module__), "__file__", None))):
                carry.append(module)
        return found + carry if (found or pools) else []

    def enter(self, module: nn.Module, args: tuple) -> None:
        """Forward pre-hook of a framed module: the function mode follows pools inside it."""
        self._frames.append(id(module))
        if not self._pushed:
            self._mode.__enter__()
            self._pushed = True

    def exit(self, module: nn.Module, args: tuple, output: Any) -> None:
        """Forward hook (``always_call``) of a framed module: leaves its frame (and inner frames not left)."""
        if id(module) in self._frames:
            while self._frames and self._frames.pop() != id(module):
                pass
        if not self._frames and self._pushed:
            take_off(self._mode)  # (wherever it is: a mode opened above it since stays open)
            self._pushed = False

    # ------------------------------------------------------------------ function mode handlers

    def _handlers(self) -> Dict[Any, Callable]:
        h: Dict[Any, Callable] = {}
        for n in (1, 2, 3):
            h[getattr(F, f"avg_pool{n}d")] = functools.partial(PoolEvents._on_avg_pool, n=n)
            h[getattr(F, f"adaptive_avg_pool{n}d")] = functools.partial(PoolEvents._on_adaptive_pool, n=n)
        for f in (torch.cat, torch.concat, torch.concatenate):
            h[f] = functools.partial(PoolEvents._on_join, stack=False)
        h[torch.stack] = functools.partial(PoolEvents._on_join, stack=True)
        for f in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d):
            h[f] = PoolEvents._on_dropout
        for f in (F.relu, torch.relu, Tensor.relu):
            h[f] = PoolEvents._on_relu
        for f in (Tensor.reshape, Tensor.flatten, Tensor.contiguous, Tensor.clone, Tensor.ravel, Tensor.to,
                  Tensor.flip, Tensor.roll, torch.reshape, torch.flatten, torch.clone, torch.ravel, torch.flip,
                  torch.roll):
            h[f] = PoolEvents._on_copy
        for n in (1, 2, 3):
            for f in (getattr(F, f"max_pool{n}d"), getattr(F, f"adaptive_max_pool{n}d")):
                h[f] = functools.partial(PoolEvents._on_max_pool, n=n)
        for f in (Tensor.double, Tensor.float, Tensor.half, Tensor.bfloat16, Tensor.type, Tensor.type_as):
            h[f] = PoolEvents._on_cast
        for f in (F.pad, F.interpolate, F.upsample, F.upsample_nearest, F.pixel_shuffle, F.pixel_unshuffle,
                  torch.pixel_shuffle, torch.pixel_unshuffle, F.channel_shuffle, torch.channel_shuffle,
                  torch.index_select, Tensor.index_select, Tensor.repeat, torch.tile, Tensor.tile,
                  torch.repeat_interleave, Tensor.repeat_interleave, torch.gather, Tensor.gather,
                  torch.take_along_dim, Tensor.take_along_dim, torch.masked_select, Tensor.masked_select,
                  Tensor.__getitem__):
            h[f] = PoolEvents._on_move
        for f in (Tensor.detach, torch.detach):
            h[f] = PoolEvents._on_detach
        return h

    def _on_cast(self, func: Callable, args: tuple, kwargs: dict, out: Tensor) -> None:
        """``.double()``, ``.half()``, ``.type(...)`` of a pool output: the same values, the same divisors."""
        x = args[0] if args else kwargs.get("self")
        if (self.tags and isinstance(x, Tensor) and self._tag_of(x) is not None and out.shape == x.shape
                and out.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()):
            self._cast(x, out)

    def _cast(self, x: Tensor, out: Tensor) -> None:
        """``out``, ``x`` cast to another dtype: the same divisors, unless the cast rounds the averages (to float16 /
        bfloat16: 11 / 8 bits, a 30 x 30 window's average misses its count by more than 1/2 there): then each
        value's events are taken from ``x`` before the cast, as for a pool run in half precision."""
        low = (torch.float16, torch.bfloat16)
        if out.dtype in low and x.dtype not in low and x.is_floating_point():
            tag, scale, why = self._find(x)
            ptr = out.untyped_storage().data_ptr()
            if tag is None or scale is None:
                if tag is not None:
                    self.tags[ptr] = _Tag(out, None, None, why or "it cannot be followed")
                return
            with torch.no_grad():
                events = torch.round(x.detach().to(torch.float64) * _laid_out(tag, scale, x).to(torch.float64))
            self.tags[ptr] = _Tag(out, _per_value(events.to(out.device), out), tag.integer)
            return
        self._move(x, out, lambda laid: laid)

    def _on_move(self, func: Callable, args: tuple, kwargs: dict, out: Tensor) -> None:
        """A pad, a nearest upsampling, a shuffle, an index or a repeat of a pool output: the divisors moved by the
        same call (a view, ``x[:, 1:]``, is read through the pool's memory: nothing to do)."""
        x = args[0] if args else kwargs.get("input")
        if not self.tags or not isinstance(x, Tensor) or self._tag_of(x) is None:
            return
        if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
            return
        rest, kw = args[1:], {k: v for k, v in kwargs.items() if k != "input"}
        why = ""
        if func is F.pad:
            mode = rest[1] if len(rest) > 1 else kw.get("mode", "constant")
            value = rest[2] if len(rest) > 2 else kw.get("value", None)
            if mode == "constant" and value not in (None, 0, 0.0):
                why = f"it is padded with the value {value}"
        elif func in (F.interpolate, F.upsample):
            mode = rest[2] if len(rest) > 2 else kw.get("mode", "nearest")
            if mode not in _NEAREST:
                return  # (it interpolates: new values, read as they are)
        self._move(x, out, lambda laid: func(laid, *rest, **kw), why)

    def _on_detach(self, func: Callable, args: tuple, kwargs: dict, out: Tensor) -> None:
        """A detached view of a pool output (``p.clone().detach()``): its memory stays tagged while it lives, also
        after the tensor it was detached from is freed."""
        x = args[0] if args else kwargs.get("input")
        tag = self._tag_of(x) if self.tags and isinstance(x, Tensor) else None
        if tag is None or out.is_inference() or out.untyped_storage().data_ptr() != x.untyped_storage().data_ptr():
            return
        first, also = tag.owner, weakref.ref(out)
        tag.owner = lambda: first() if first() is not None else also()

    def _on_max_pool(self, func: Callable, args: tuple, kwargs: dict, out: Tensor, *, n: int) -> None:
        """A functional max pool of a pool's output: the events of the values it picks (as :meth:`max_through`)."""
        x = args[0] if args else kwargs.get("input")
        if not self.tags or not isinstance(x, Tensor) or self._tag_of(x) is None:
            return
        kw = dict(kwargs, return_indices=True)
        self._compose(x, out, lambda events: _gather(events, func(x.detach(), *args[1:], **kw)[1], n), None,
                      "a max pool")

    def _on_copy(self, func: Callable, args: tuple, kwargs: dict, out: Tensor) -> None:
        """A reshape, flatten or clone that copies a pool output (a permuted or channels-last one): the same op
        lays its divisors out like the copy (a view needs nothing: it is read through the pool's memory)."""
        x = args[0] if args else kwargs.get("input")
        if not self.tags or not isinstance(x, Tensor) or self._tag_of(x) is None:
            return
        if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
            return
        if func is Tensor.to and out.dtype != x.dtype and out.shape == x.shape:
            self._cast(x, out)  # (a dtype cast: its divisors are not cast, and half precision rounds the values)
            return
        tag, scale, why = self._find(x)
        ptr = out.untyped_storage().data_ptr()
        if tag is None or scale is None:
            self.tags[ptr] = _Tag(out, None, None, why or "a copy of it cannot be followed")
            return
        with torch.no_grad():
            laid = func(_laid_out(tag, scale, x), *args[1:], **kwargs)
        self.tags[ptr] = _Tag(out, laid.reshape(-1).contiguous(), tag.integer)

    def _on_avg_pool(self, func: Callable, args: tuple, kwargs: dict, out: Tensor, *, n: int) -> None:
        a = _bind(_AVG_ARGS, args, kwargs, {})
        x = a.get("input")
        if not isinstance(x, Tensor):
            return
        spec = _Spec(a)
        self._tag(x, out, (avgpool_divisor, spec.key()), lambda: avgpool_divisor(
            spec, tuple(x.shape[-(n + 1):]), tuple(out.shape[-(n + 1):]), n), n,
            _rerun(avgpool_divisor, spec, n, tuple(out.shape)))

    def _on_adaptive_pool(self, func: Callable, args: tuple, kwargs: dict, out: Tensor, *, n: int) -> None:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, Tensor):
            return
        self._tag(x, out, (adaptive_divisor,), lambda: adaptive_divisor(
            None, tuple(x.shape[-(n + 1):]), tuple(out.shape[-(n + 1):]), n), n,  # type: ignore[arg-type]
            _rerun(adaptive_divisor, None, n, tuple(out.shape)))

    def _on_dropout(self, func: Callable, args: tuple, kwargs: dict, out: Tensor) -> None:
        a = _bind(_DROPOUT_ARGS, args, kwargs, {"p": 0.5, "training": True})
        x = a.get("input")
        tag = self._tag_of(x) if self.tags and isinstance(x, Tensor) else None
        if tag is not None and x.numel() == tag.numel:
            self._carry(x, out, tag, 1.0 - float(a["p"]) if a["training"] else 1.0)

    def _on_relu(self, func: Callable, args: tuple, kwargs: dict, out: Tensor) -> None:
        x = args[0] if args else kwargs.get("input")
        tag = self._tag_of(x) if self.tags and isinstance(x, Tensor) else None
        if tag is not None and x.numel() == tag.numel:
            self._carry(x, out, tag, 1.0)

    def _on_join(self, func: Callable, args: tuple, kwargs: dict, out: Tensor, *, stack: bool) -> None:
        """``torch.cat`` / ``torch.stack`` of tensors some of which read pool outputs: divisors joined alike."""
        if not self.tags:
            return
        parts = args[0] if args else kwargs.get("tensors")
        dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0))
        if not isinstance(parts, (list, tuple)) or not all(isinstance(p, Tensor) for p in parts):
            return
        found = [self._find(p) for p in parts]
        if all(tag is None for tag, _, _ in found):
            return
        why = next((w or tag.why for tag, _, w in found if tag is not None and (w or tag.why)), "")
        if why:
            self.tags[out.untyped_storage().data_ptr()] = _Tag(out, None, None, why)
            return
        with torch.no_grad():
            scales, integer = [], None
            for p, (tag, scale, _) in zip(parts, found):
                if tag is None:  # a part that is no pool output: its values count as they are, if integer
                    scales.append(torch.ones(p.shape, dtype=torch.float32, device=p.device))
                    ok = self._integer(p)
                else:
                    scales.append(_laid_out(tag, scale, p))
                    ok = tag.integer
                integer = ok if integer is None else integer & ok
            joined = torch.stack(scales, dim) if stack else torch.cat(scales, dim)
        self.tags[out.untyped_storage().data_ptr()] = _Tag(out, joined.reshape(-1).contiguous(), integer)

    # ------------------------------------------------------------------ lookup

    def _find(self, x: Tensor) -> Tuple[Optional[_Tag], Optional[Tensor], str]:
        """``(tag, divisors laid out like x, why not)`` for a tensor reading a pool output's memory."""
        tag = self._tag_of(x)
        if tag is None:
            return None, None, ""
        if tag.why:
            return tag, None, tag.why
        if version_of(x) != tag.version:
            return tag, None, "the pool's output was modified in place after pooling"
        if x.numel() == tag.numel and x.is_contiguous() and x.storage_offset() == tag.offset:
            return tag, tag.scale, ""  # the whole output in its own layout (views, flatten)
        if tuple(x.shape) == tag.shape and x.stride() == tag.stride and x.storage_offset() == tag.offset:
            return tag, tag.scale, ""  # the output itself in another memory format (channels-last): logical order
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
        if not self.tags:
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


def _picked(module: nn.Module, n: int, x: Tensor, events: Tensor) -> Tensor:
    """The values of ``events`` (laid out like ``x``) at the positions max pool ``module`` (over ``n`` dims) picks
    from ``x``."""
    lead = x.shape[:-n]
    flat = x.detach().reshape(-1, *x.shape[-(n + 1):]) if x.dim() > n + 2 else x.detach()  # ([T, B, ...]: SJ 'm')
    if isinstance(module, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        _, idx = getattr(F, f"adaptive_max_pool{n}d")(flat, module.output_size, return_indices=True)
    else:
        _, idx = getattr(F, f"max_pool{n}d")(flat, module.kernel_size, module.stride, module.padding,
                                              module.dilation, module.ceil_mode, return_indices=True)
    return _gather(events, idx.reshape(*lead, *idx.shape[-n:]), n)


def _per_value(events: Tensor, output: Tensor) -> Tensor:
    """The divisor of each value of ``output`` that gives its ``events`` (``events / value``; 1 where the value is
    0), flat, float32: a tag's per-element divisors."""
    with torch.no_grad():
        value = output.detach().to(torch.float64)
        nonzero = value != 0
        per = torch.where(nonzero, events / torch.where(nonzero, value, 1.0), 1.0)
    return per.to(torch.float32).reshape(-1).contiguous()


def _gather(events: Tensor, idx: Tensor, n: int) -> Tensor:
    """``events`` at a max pool's indices (flat over its last ``n`` dims), shaped like the pool's output."""
    flat = events.flatten(-n)
    return flat.gather(-1, idx.flatten(-n).expand(*flat.shape[:-1], -1)).reshape(idx.shape)


def _rerun(divisor_fn: Callable, spec: Any, n: int, out_shape: Shape) -> Callable[[Tensor], Tensor]:
    """The average pool described by ``spec`` (a pool module or a functional call's arguments) as a function."""
    if divisor_fn is adaptive_divisor:
        return lambda t: getattr(F, f"adaptive_avg_pool{n}d")(t, tuple(out_shape[-n:]))
    if divisor_fn is sumpool_divisor:  # (its sum, times area / in-bounds elements at clipped windows)
        return lambda t: getattr(F, f"lp_pool{n}d")(t, 1, spec.kernel_size, spec.stride, spec.ceil_mode)

    def run(t: Tensor) -> Tensor:  # (its arguments read only when it runs: most pool calls never rerun)
        kw: Dict[str, Any] = dict(kernel_size=spec.kernel_size, stride=spec.stride or spec.kernel_size,
                                  padding=spec.padding, ceil_mode=spec.ceil_mode,
                                  count_include_pad=spec.count_include_pad)
        if n > 1:
            kw["divisor_override"] = getattr(spec, "divisor_override", None)
        return _AVG[n](t, **kw)

    return run


def _laid_out(tag: _Tag, scale: Tensor, like: Tensor) -> Tensor:
    """Divisors shaped like ``like`` (``scale`` from :meth:`PoolEvents._find`: flat, or laid out like it)."""
    if scale.shape == like.shape:
        return scale
    return scale.expand(like.numel() // scale.numel(), scale.numel()).reshape(like.shape)
