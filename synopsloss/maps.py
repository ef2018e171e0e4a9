"""Connection maps: how many weight taps each input neuron of a layer drives.

A *connection map* (fan-out map) of a parameter layer, for one input sample
shape, is a tensor shaped like one input sample whose entry ``i`` is the number
of weight taps through which input neuron ``i`` reaches an output neuron:

* the **effective** map counts only taps whose weight is nonzero (a pruned or
  exactly-zero weight is no synapse);
* the **dense** map counts every tap.

A *tap* is one use of one weight. With ``padding_mode`` ``reflect``,
``replicate`` or ``circular`` an edge neuron is copied into the padding and can
reach the same output through several taps; each counts (as NeuroBench counts
it). Biases are not synapses.

The map equals the column sums of the Jacobian of the layer with its nonzero
weights set to one and no bias. For convolutions it is obtained with one
transposed convolution of ones (and, for the non-zero padding modes, by folding
the padded border back onto the neurons it was copied from); for transposed
convolutions with one convolution of ones; for ``nn.Linear`` from the column
sums of the weight mask.

Which layer types use which formula is one table,
:data:`synopsloss.registry.SYNAPSE_RULES` (:func:`synopsloss.register_rule`
adds types). Looking a module up walks its class' MRO, so subclasses of
``nn.Conv2d`` (quantised layers, for example) are handled by the ``Conv2d``
rule unless they register their own.

Example
-------
>>> import torch
>>> from synopsloss.registry import connection_map
>>> conv = torch.nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)
>>> connection_map(conv, (1, 5), effective=False)
tensor([[2., 3., 3., 3., 2.]], dtype=torch.float64)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .reductions import COUNT_DIRECT, count_true, same_bytes

__all__ = ["Rule", "OpCounts", "MapCache", "LayerMaps", "build_map", "weight_mask"]

Shape = Tuple[int, ...]
#: ``fanout(module, weight01, in_sample_shape, out_sample_shape) -> map`` (float32, shaped like one input sample)
FanoutFn = Callable[[nn.Module, Tensor, Shape, Shape], Tensor]


@dataclass(frozen=True)
class Rule:
    """How to count the synapses of one layer type.

    Parameters
    ----------
    fanout
        ``fanout(module, weight01, in_sample_shape, out_sample_shape)`` returns a
        float32 tensor shaped ``in_sample_shape`` with each input neuron's
        number of weight taps, given ``weight01`` (1.0 where a synapse exists,
        0.0 where not, same shape as the weight).
    sample_ndim
        Number of trailing input dimensions that make up one input sample's
        neurons (1 for ``Linear``, ``1 + spatial dims`` for convolutions); all
        leading dimensions (batch, time, ...) are *rows*, each a full copy of
        the sample.
    weight
        Name of the weight attribute (read with ``getattr``, so pruned weights
        recomputed by ``torch.nn.utils.prune`` are seen as they are used), or
        ``"method()"``: the weight the layer computes with, returned by that
        method (SpikingJelly's ``WSConv2d.get_weight()``; see :func:`rule_weight`).
    """

    fanout: Optional[FanoutFn]
    sample_ndim: Callable[[nn.Module], int]
    weight: str = "weight"
    count: Optional["CountFn"] = None


@dataclass
class OpCounts:
    """What one layer call contributes, for rules that count without a fan-out map.

    All tensors are 0-dim, on the input's device, float64 (``spiking``: bool).
    ``synops`` carries the autograd graph back to the inputs; the others are
    detached. ``rows`` is how many sample-sized rows the call processed (it
    must be a multiple of the batch's number of samples).
    """

    synops: Tensor
    dense: Tensor
    effective: Tensor
    spiking: Tensor
    rows: int
    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]
    input_sum: Tensor
    input_nonzero: Tensor
    in_neurons: int = 0
    samples: Optional[int] = None  # samples of the call, when the layer knows its layout (batch_first)
    #: of ``effective``, the ops that are ACs when only some of the call's operands are spikes (norse: an analog
    #: input with the recurrent spikes); ``None``: all or none are, as ``spiking`` says
    ac_effective: Optional[Tensor] = None
    #: a call recorded for the read: ``later()`` gives ``(synops, dense, effective, spiking, input_sum,
    #: input_nonzero)`` (the tensor fields above are ``None``); ``device`` is its operands', ``held_bytes``
    #: what it holds until then
    later: Optional[Callable[..., Tuple[Any, ...]]] = None
    device: Optional[torch.device] = None
    held_bytes: int = 0
    #: a recorded product's batch dims: ``later(per_row=True)`` also gives its synops per value of them (their
    #: sizes, in order; ``()``: none)
    row_dims: Tuple[int, ...] = ()
    #: a weight product: whether every value of its activation is an integer (the counter's
    #: ``integer_spikes="events"`` then counts a non-spike call's synops as its ACs); ``None``: no rule. With
    #: ``ac_effective``: whether the operands that are no spikes all hold integers (spike counts)
    integer: Optional[Tensor] = None
    #: with ``ac_effective`` and ``integer``: the synops of the operands that are no spikes, the ACs they send
    #: when their counts are events
    event_acs: Optional[Tensor] = None


#: ``count(module, args, kwargs, output) -> OpCounts`` for layers outside the map model (recurrent layers)
CountFn = Callable[[nn.Module, tuple, dict, object], OpCounts]


def rule_weight(module: nn.Module, name: str) -> Any:
    """The weight a rule names: ``getattr(module, name)``, or ``module.method()`` for ``name = "method()"``.

    Example
    -------
    >>> rule_weight(torch.nn.Linear(2, 3), "weight").shape
    torch.Size([3, 2])
    """
    if name.endswith("()"):
        w = getattr(module, name[:-2])()
        return w.dequantize() if getattr(w, "is_quantized", False) else w  # a quantized layer's int weight
    return getattr(module, name)


class _Magnitude(torch.autograd.Function):
    """``|x|`` whose gradient is ``sign(x)`` with ``+1`` at 0 (``torch.abs`` has gradient 0 there)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.abs()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled() or not x.is_floating_point():  # double backward: differentiable form
            return torch.where(x < 0, -grad, grad)
        # grad * (1 - 2 [x < 0]) in float arithmetic: a boolean mask and where are 5-10x slower on CPU
        out = torch.empty(x.shape, dtype=grad.dtype, device=x.device)
        torch.lt(x, 0, out=out)
        return torch.addcmul(grad, out, grad, value=-2, out=out)


def magnitude(x: Tensor) -> Tensor:
    """``|x|`` with the gradient of ``torch.where(x < 0, -x, x)``: +1 at and above 0, -1 below.

    Synops count input magnitudes; the gradient at 0 lets a loss reach silent
    neurons (``torch.abs`` has gradient 0 there). One ``abs`` in forward; the
    sign mask is built in backward only.

    Example
    -------
    >>> x = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    >>> magnitude(x).sum().backward()
    >>> x.grad
    tensor([-1.,  1.,  1.])
    """
    if not x.requires_grad or not torch.is_grad_enabled():
        return x.abs()
    return _Magnitude.apply(x)


def fixed_ndim(n: int) -> Callable[[nn.Module], int]:
    """A ``sample_ndim`` function returning ``n`` for every module."""

    def sample_ndim(_module: nn.Module) -> int:
        return n

    return sample_ndim


def conv_sample_ndim(module: nn.Module) -> int:
    """Channels plus the spatial dims of a (transposed) convolution."""
    return 1 + len(module.kernel_size)


# --------------------------------------------------------------------------- rules


def linear_fanout(module: nn.Module, w01: Tensor, in_shape: Shape, out_shape: Shape) -> Tensor:
    """Count synops for nn.Linear: each input feature drives its column's nonzero weights."""
    return w01.sum(0)


def _conv_ndim(module: nn.Module) -> int:
    return len(module.kernel_size)


def _conv_pads(module: nn.Module, n: int) -> Sequence[Tuple[int, int]]:
    """(left, right) padding per spatial dim, with PyTorch's own 'same'/'valid' rule."""
    padding = module.padding
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * n
        if padding == "same":
            pads = []
            for d, k in zip(module.dilation, module.kernel_size):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return pads
        raise ValueError(f"unknown padding string {padding!r} on {type(module).__name__}")
    return [(int(p), int(p)) for p in padding]


def _fold_index(mode: str, padded: int, left: int, size: int, device: torch.device) -> Tensor:
    """Index of the input neuron that each padded position copies (-1: a constant zero)."""
    t = torch.arange(padded, device=device) - left
    if mode == "zeros":
        return torch.where((t >= 0) & (t < size), t, torch.full_like(t, -1))
    if mode == "circular":
        return torch.remainder(t, size)
    if mode == "replicate":
        return t.clamp(0, size - 1)
    if mode == "reflect":
        if size == 1:
            return torch.zeros_like(t)
        period = 2 * (size - 1)
        t = torch.remainder(t, period)
        return torch.where(t < size, t, period - t)
    raise ValueError(f"unsupported padding_mode {mode!r}")


_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def conv_fanout(module: nn.Module, w01: Tensor, in_shape: Shape, out_shape: Shape) -> Tensor:
    """Count synops for nn.ConvNd: a transposed convolution of ones over the padded input,
    with the padding folded back onto the neurons it copies (any padding_mode)."""
    n = _conv_ndim(module)
    spatial = in_shape[1:]
    pads = _conv_pads(module, n)
    padded = [s + l + r for s, (l, r) in zip(spatial, pads)]
    outs, out_pad = [], []
    for p, k, d, st in zip(padded, module.kernel_size, module.dilation, module.stride):
        o = (p - d * (k - 1) - 1) // st + 1
        if o <= 0:
            raise ValueError(
                f"{type(module).__name__} with kernel {tuple(module.kernel_size)} cannot be applied "
                f"to an input of spatial shape {tuple(spatial)}"
            )
        outs.append(o)
        out_pad.append(p - ((o - 1) * st + d * (k - 1) + 1))
    if tuple(outs) != tuple(out_shape[1:]):
        raise ValueError(
            f"{type(module).__name__}: computed output shape {tuple(outs)} does not match the "
            f"observed {tuple(out_shape[1:])}; this layer type needs its own synapse rule "
            "(synopsloss.register_rule)"
        )
    ones = torch.ones((1, w01.shape[0], *outs), dtype=w01.dtype, device=w01.device)
    m = _CONV_T[n](
        ones, w01, stride=module.stride, padding=0, output_padding=tuple(out_pad),
        groups=module.groups, dilation=module.dilation,
    )[0]
    mode = getattr(module, "padding_mode", "zeros")
    for dim, (size, (left, _right)) in enumerate(zip(spatial, pads), start=1):
        if left == 0 and m.shape[dim] == size:
            continue
        if mode == "zeros":
            m = m.narrow(dim, left, size)
            continue
        idx = _fold_index(mode, m.shape[dim], left, size, m.device)
        shape = list(m.shape)
        shape[dim] = size
        m = torch.zeros(shape, dtype=m.dtype, device=m.device).index_add_(dim, idx, m)
    return m.contiguous()


def conv_transpose_fanout(module: nn.Module, w01: Tensor, in_shape: Shape, out_shape: Shape) -> Tensor:
    """Count synops for nn.ConvTransposeNd: its adjoint, a convolution of ones over the output."""
    n = _conv_ndim(module)
    if 0 in tuple(out_shape):  # (padding that leaves no output: no input neuron reaches one)
        return torch.zeros(tuple(in_shape), dtype=w01.dtype, device=w01.device)
    ones = torch.ones((1, *out_shape), dtype=w01.dtype, device=w01.device)
    m = _CONV[n](
        ones, w01, stride=module.stride, padding=module.padding,
        dilation=module.dilation, groups=module.groups,
    )[0]
    # output_padding (or output_size) can exceed the stride when dilation > stride: the
    # convolution then yields trailing positions for inputs that do not exist; drop them.
    for dim, size in enumerate(in_shape[1:], start=1):
        if m.dim() == len(in_shape) and m.shape[dim] > size:
            m = m.narrow(dim, 0, size)
    if tuple(m.shape) != tuple(in_shape):
        raise ValueError(
            f"{type(module).__name__}: fan-out map shape {tuple(m.shape)} does not match the "
            f"input sample shape {tuple(in_shape)}"
        )
    return m.contiguous()


# --------------------------------------------------------------------------- maps


# --------------------------------------------------------------------------- cache


@dataclass(eq=False)
class LayerMaps:
    """One cached map: the effective map of a weight op for one input sample shape and device.

    ``mask`` is the weight's nonzero pattern the map was built from and
    ``build(weight01) -> map`` rebuilds it: :meth:`MapCache.current` checks, when a
    recorded call is reduced, that the weight *as used* still has that pattern
    (values, not version counters: fused optimizer steps and ``functional_call``
    weights do not bump ``_version``).
    """

    effective: Tensor  # float64, flattened sample
    dense_total: Tensor  # 0-dim float64: every tap of one sample
    sample_shape: Shape
    mask: Optional[Tensor] = field(default=None, repr=False)
    build: Optional[Callable[[Tensor], Tensor]] = field(default=None, repr=False)
    key: Any = field(default=None, repr=False)
    _fanout: Optional[Tuple[Tensor, Tensor]] = field(default=None, repr=False, compare=False)
    _zeros: Any = field(default=None, repr=False, compare=False)  # (nonzeros, flat indices of the zeros) of mask
    # the entry rebuilt from this one when the weight's pattern changed: a call that still holds this entry (a
    # layer's repeated calls do) is checked against that one, so the map is rebuilt once per change, not per read
    _newer: Optional["LayerMaps"] = field(default=None, repr=False, compare=False)

    def newest(self) -> "LayerMaps":
        """The latest entry rebuilt from this one (``self`` when none was); the chain is shortened as it is read."""
        ent = self._newer
        if ent is None:
            return self
        while ent._newer is not None:
            ent = ent._newer
        self._newer = ent
        return ent

    def same_pattern(self, weight: Tensor) -> bool:
        """Whether ``weight`` (CPU, the mask's shape) has the nonzero pattern the map was built from.

        Exact without a mask of the weight's size: the weight has as many nonzeros as the mask and is zero
        wherever the mask is (then its nonzeros are exactly the mask's). One count and one gather.
        """
        if self.mask is None:
            return False
        if self._zeros is None:
            flat = self.mask.reshape(-1)
            nnz = int(flat.sum())
            self._zeros = (nnz, None if nnz == flat.numel() else (~flat).nonzero().squeeze(1))
        nnz, zeros = self._zeros
        w = weight.detach()
        # (small weights: one count_nonzero; large: a cast and its bytes summed as int64 lanes, 2x faster there)
        count = torch.count_nonzero(w) if w.numel() <= COUNT_DIRECT else count_true(w.bool())
        if int(count) != nnz:
            return False
        return zeros is None or not bool(w.reshape(-1).index_select(0, zeros).any())

    def fanout_stats(self) -> Tuple[Tensor, Tensor]:
        """Mean and max of the effective map (0-dim, on the map's device), computed once per map."""
        if self._fanout is None:
            m = self.effective.detach()
            self._fanout = (m.mean(), m.max()) if m.numel() else (m.new_zeros(()), m.new_zeros(()))
        return self._fanout


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def build_map(build: Callable[[Tensor], Tensor], w01: Tensor, sample_shape: Shape, what: str) -> Tensor:
    """``build(w01)`` as a flat map in the accumulation dtype: float64 (float32 on MPS).

    Fan-outs are small integers: they are built in float32 with autocast off (a bf16
    transposed convolution is exact only up to 256) and kept in float64. The one
    map builder of the package (the counter's caches and :func:`synopsloss.registry.connection_map`).
    """
    device = w01.device
    with torch.inference_mode(False), torch.no_grad(), torch.autocast(device.type, enabled=False):
        m = build(w01)
        if not isinstance(m, Tensor):
            raise TypeError(f"the synapse rule for {what} returned {type(m).__name__}, not a tensor of fan-outs (one "
                            "number of synapses per input neuron)")
        if tuple(m.shape) != tuple(sample_shape):
            raise ValueError(
                f"the synapse rule for {what} returned a map of shape "
                f"{tuple(m.shape)} for an input sample of shape {tuple(sample_shape)}"
            )
        m = m.reshape(-1).to(_acc_dtype(device))
        if m.numel() and not bool(((m >= 0) & torch.isfinite(m)).all()):  # (once per map built, not per call)
            raise ValueError(f"the synapse rule for {what} returned negative, NaN or infinite fan-outs; a fan-out "
                             "is the number of synapses of an input neuron (>= 0): fix the rule")
        return m


def weight_mask(weight: Tensor) -> Tensor:
    """The nonzero pattern of a weight as used (bool, detached; a DTensor is gathered whole)."""
    with torch.no_grad():
        w = weight.detach()
        full = getattr(w, "full_tensor", None)  # a DTensor (FSDP2 shard): the pattern of the whole weight
        if callable(full):
            w = full()
        return w != 0


#: weights of at most this many values are checked against their maps together (:meth:`MapCache.current_all`)
_BATCHED_MASK = 1 << 16


class MapCache:
    """Bounded cache of connection maps, one entry per (geometry, input sample shape, device).

    Both ways into the counter use it: module hooks (one cache per layer) and
    the function mode (:data:`synopsloss.ops.MAP_CACHE`). A call only looks its
    entry up; when the call is reduced, :meth:`current` checks the entry against
    the weight *as used* (its nonzero pattern, compared by value on CPU; on other
    devices the map is rebuilt at each read, which needs no host sync) and
    rebuilds it only when the pattern changed. At most ``max_shapes`` entries
    and ``max_bytes`` bytes of maps are kept (least recently used first out); a
    map larger than ``max_bytes`` on its own is used for its calls and not kept.
    ``nbytes`` is what the cache holds now.

    Example
    -------
    >>> import torch
    >>> from synopsloss.registry import find_rule
    >>> conv = torch.nn.Conv2d(1, 1, 3)
    >>> cache = MapCache(max_shapes=2)
    >>> for size in (5, 6, 7):
    ...     _ = cache.get(conv, find_rule(conv), (1, size, size), (1, size - 2, size - 2))
    >>> len(cache), cache.nbytes  # the 7x7 and 6x6 maps, float64
    (2, 680)
    """

    #: default bound on the bytes of maps kept per cache
    MAX_BYTES = 256 * 2 ** 20

    def __init__(self, max_shapes: int = 16, max_bytes: Optional[int] = None) -> None:
        self.max_shapes = max_shapes
        self.max_bytes = self.MAX_BYTES if max_bytes is None else int(max_bytes)
        self._eff: "OrderedDict[tuple, LayerMaps]" = OrderedDict()
        self.builds = 0  # number of effective-map builds, for tests and diagnostics

    def __len__(self) -> int:
        return len(self._eff)

    @property
    def nbytes(self) -> int:
        """Bytes of the maps held now."""
        return sum(lm.effective.numel() * lm.effective.element_size() for lm in self._eff.values())

    def clear(self) -> None:
        self._eff.clear()

    def _put(self, key: tuple, value: LayerMaps) -> None:
        if value.effective.numel() * value.effective.element_size() > self.max_bytes:
            return  # too big to keep: used for its calls only
        self._eff[key] = value
        self._eff.move_to_end(key)
        while len(self._eff) > self.max_shapes or self.nbytes > self.max_bytes:
            self._eff.popitem(last=False)

    def entry(self, key: tuple, weight: Tensor, build: Callable[[Tensor], Tensor], sample_shape: Shape,
              what: str = "this layer") -> LayerMaps:
        """The cached map under ``key`` (built from ``weight`` on a miss; not checked against it here)."""
        ent = self._eff.get(key)
        if ent is not None:
            self._eff.move_to_end(key)
            return ent
        ones = torch.ones(weight.shape, dtype=torch.float32, device=weight.device)
        dense = build_map(build, ones, sample_shape, what).sum()
        mask = weight_mask(weight)
        ent = LayerMaps(effective=build_map(build, mask.to(torch.float32), sample_shape, what),
                        dense_total=dense, sample_shape=tuple(sample_shape), mask=mask, build=build, key=key)
        self.builds += 1
        self._put(key, ent)
        return ent

    def current(self, ent: LayerMaps, weight: Optional[Tensor]) -> LayerMaps:
        """``ent``, or a rebuilt entry when ``weight`` (as used by a call) has another nonzero pattern."""
        if weight is None or ent.build is None:
            return ent
        held, ent = ent, ent.newest()
        plain = weight.layout == torch.strided and getattr(weight, "full_tensor", None) is None
        if (weight.device.type == "cpu" and ent.mask is not None and weight.shape == ent.mask.shape and plain
                and ent.same_pattern(weight)):
            return ent
        mask = weight_mask(weight)
        if not plain and mask.device.type == "cpu" and ent.mask is not None and mask.shape == ent.mask.shape \
                and torch.equal(mask, ent.mask):
            return ent  # a DTensor's whole pattern, gathered
        new = LayerMaps(effective=build_map(ent.build, mask.to(torch.float32), ent.sample_shape, "this layer"),
                        dense_total=ent.dense_total, sample_shape=ent.sample_shape, mask=mask, build=ent.build,
                        key=ent.key)
        self.builds += 1
        held._newer = ent._newer = new
        if self._eff.get(ent.key) is ent:
            self._put(ent.key, new)
        return new

    @staticmethod
    def current_all(items: List[Tuple["MapCache", LayerMaps, Optional[Tensor]]]) -> List[LayerMaps]:
        """:meth:`current` for many ``(cache, entry, weight as used)`` at once.

        The small CPU weights (the common case of many small layers) are checked together: their nonzero
        patterns are compared with their entries' in one comparison, and only when it fails one by one.

        Example
        -------
        >>> import torch
        >>> cache = MapCache()
        >>> w = torch.tensor([[1.0, 0.0], [2.0, 3.0]])
        >>> ent = cache.entry(("lin",), w, lambda w01: w01.sum(0), (2,))
        >>> same, = MapCache.current_all([(cache, ent, w.clone())])
        >>> same is ent
        True
        """
        items = [(cache, ent.newest(), w) for cache, ent, w in items]
        out: List[Optional[LayerMaps]] = [None] * len(items)
        batch: List[int] = []
        for i, (cache, ent, w) in enumerate(items):
            if (w is not None and ent.build is not None and ent.mask is not None and w.device.type == "cpu"
                    and w.numel() <= _BATCHED_MASK and w.shape == ent.mask.shape and w.layout == torch.strided
                    and getattr(w, "full_tensor", None) is None):
                batch.append(i)
        if len(batch) > 1:
            with torch.no_grad():
                now = torch.cat([items[i][2].detach().reshape(-1) for i in batch]).bool()
                if same_bytes(now, torch.cat([items[i][1].mask.reshape(-1) for i in batch])):
                    for i in batch:
                        out[i] = items[i][1]
        return [o if o is not None else cache.current(ent, w) for o, (cache, ent, w) in zip(out, items)]

    def get(self, module: nn.Module, rule: Rule, in_shape: Shape, out_shape: Shape) -> LayerMaps:
        """The (current) map of a module layer for one input / output sample shape."""
        weight = rule_weight(module, rule.weight)
        ent = self.entry(*module_map_args(module, rule, weight, in_shape, out_shape))
        return self.current(ent, weight)


#: the attributes of a module layer that shape its connections besides its weight and its input / output
#: shapes (convolutions): part of its maps' cache key, so that a layer whose padding mode or dilation is changed
#: gets its own map
GEOMETRY = ("stride", "padding", "dilation", "groups", "padding_mode", "output_padding")


def geometry(module: nn.Module) -> tuple:
    """The module's :data:`GEOMETRY` attributes (``None`` where it has none), hashable.

    Example
    -------
    >>> geometry(nn.Conv1d(1, 1, 3, padding=2, dilation=2))
    ((1,), (2,), (2,), 1, 'zeros', (0,))
    >>> geometry(nn.Linear(2, 2))
    (None, None, None, None, None, None)
    """
    values = module.__dict__
    return tuple(_hashable(values.get(a)) for a in GEOMETRY)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:  # (a list, say, in a custom layer)
        return repr(value)
    return value


def module_map_args(module: nn.Module, rule: Rule, weight: Tensor, in_shape: Shape, out_shape: Shape,
                    geo: Optional[tuple] = None) -> Tuple[tuple, Tensor, Callable[[Tensor], Tensor], Shape, str]:
    """``(key, weight, build, sample_shape, what)`` for :meth:`MapCache.entry`, for a module layer (``geo``: its
    :func:`geometry`, when the caller has it)."""
    key = (in_shape, out_shape, weight.device, tuple(weight.shape), geometry(module) if geo is None else geo)
    fanout = rule.fanout

    def build(w01: Tensor) -> Tensor:
        return fanout(module, w01, in_shape, out_shape)

    return key, weight, build, in_shape, type(module).__name__


def prod(shape: Iterable[int]) -> int:
    return math.prod(int(s) for s in shape)
