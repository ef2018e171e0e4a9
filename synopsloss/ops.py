"""Synaptic-operation counts of functional and tensor ops (``F.linear``, ``F.conv2d``, ``x @ w``, attention, ...).

The counter's module hooks see ``nn.Linear`` / ``nn.ConvNd`` calls only. A
``torch.overrides.TorchFunctionMode`` sees every op call at the Python API
level (where autograd still applies), and hands each one to :func:`count_op`,
which returns what the call contributes (a list of :class:`OpCount`), ``None``
when the op is none we count, or raises :class:`UncountableOpError` for an op
that multiplies activations but cannot be counted.

Definitions
-----------
**Weight ops** -- ``F.linear``, ``F.conv1d/2d/3d``, ``F.conv_transpose1d/2d/3d``
(and ``torch.convolution``), and matmul-family ops where one operand is a
weight (see below). Exactly the module rules of :mod:`synopsloss.maps`, with
the effective fan-out map built from the weight tensor *the op received* (a
masked or fake-quantised ``w * mask`` is counted with its zeros):

* ``synops = sum(|x| * map)``, with the values and gradient of
  ``torch.where(x < 0, -x, x)`` (one ``abs`` forward, the sign mask built in
  backward): d synops / dx = map at x = 0 (and -map where x < 0);
* ``dense = rows * (every tap of one row)``;
* ``effective = sum((x != 0) * map)`` (nonzero input x nonzero weight tap);
* ``spiking`` (ACs, else MACs): every value of the activation is in {-1, 0, 1}.

``F.conv*`` pads with zeros only (``padding`` may be ints or ``'same'`` /
``'valid'``); a module with another ``padding_mode`` calls ``F.pad`` first,
and its conv then counts the padded input, whose copied edge neurons carry the
same taps as the module rule's folded map (equal synops, effective and dense).
For matmul-family weight ops the map is the einsum of the weight's nonzero
mask over the weight's own (kept) indices, so ``x[B,N,C] @ W[C,D]`` counts
exactly like ``F.linear(x, W.T)``: ``rows = B*N``, one row ``(C,)``.

**Which operand is a weight** (matmul family, einsum, tensordot, attention): an
operand is a weight when it is shared by all samples:

1. it is an ``nn.Parameter`` or a view of one (``W.t()``, ``W.split(...)``), or
2. ``is_weight(t)`` -- a callback the counter passes -- returns True (the
   model's parameters and tensors computed only from them and its buffers,
   such as ``w * mask``; a buffer alone is no weight: it may hold a neuron's
   state), or
3. (``matmul`` and attention only) it has no batch dims (dims before the last
   two) while the other operand has some: ``x[B,N,C] @ W[C,D]`` broadcasts ``W``
   over the batch. The rule looks at dims, not sizes, so ``B = 1`` does not
   change the answer.

Otherwise both operands are activations. Limits: a tensor attribute that is
no parameter (a plain attribute or a buffer), used as ``x[B,K] @ W[K,N]``
(both 2-D), is taken for an activation: the product then has ``rows = 1`` and
the counter's samples check raises when ``B > 1`` (with ``B = 1`` it is
counted as a product: AC/MAC by the product rule, ``|W|`` in place of
``nz(W)``); register it as a parameter (``nn.Parameter(W, requires_grad=False)``
for a fixed weight). ``einsum`` and
``tensordot`` have no batch dims to compare, so rule 3 does not apply to them.
A product of two weights (``A @ B`` of two factors of a low-rank weight) is
weight preprocessing, folded on hardware: it counts nothing (an empty list).
So does an op whose input operand is itself a weight.

**Activation x activation products** (spiking self-attention ``q @ k^T``,
``attn @ v``): for ``A[..., M, K] @ B[..., K, N]``, per batch element,

* ``effective`` = the number of ``(m, k, n)`` with ``A[m,k] != 0`` and
  ``B[k,n] != 0`` = ``sum_k nnzA_k * nnzB_k`` (``nnzA_k``: nonzeros of column
  ``k`` of ``A``; ``nnzB_k``: of row ``k`` of ``B``);
* ``dense = M*K*N``;
* ``synops = sum_k (sum_m |A[m,k]|) * (sum_n |B[k,n]|)``, the total of
  ``|A| @ |B|``: for binary operands the triple count, a spike count of 2 counts
  twice, signs count as magnitudes; the gradient reaches *both* operands, with
  the x = 0 rule on each;
* ``spiking`` (ACs) when at least ONE operand is entirely in {-1, 0, 1}: a
  multiply by +-1 or 0 is a selection / sign flip of the other operand, which
  hardware does with an accumulate, whatever the other value is; MACs otherwise;
* ``rows`` = the product of the (broadcast) batch dims: the counter divides by
  samples. Tokens (``M``, ``N``) are NOT time steps and NOT rows.
  ``in_shape`` is one batch element of ``A`` (``(M, K)``), ``input_sum`` /
  ``input_nonzero`` are those of ``A`` (the first activation operand).

Broadcasting (1-D operands, size-1 or missing batch dims) is exact: a term is
one assignment of every index, and a broadcast operand is reused in every term
it takes part in. Precision: counts are built with autocast off and returned
in float64 (float32 on MPS). Half-precision and integer operands are summed in
float64 (a bf16 sum rounds above 256); float32 operands are first summed in
float32, as the module counter does (exact for spike and count values below
2**24 per partial sum, float32 rounding for real values), then in float64;
masked pairs are one float32 batched matmul of the 0/1 (or magnitude) operands.

**einsum** (and ``tensordot``, ``inner``, ``dot``, ``mv``, ``outer``, ``addbmm``,
which are expressed as einsum equations): a term of the equation's defining
sum is one multiply, so ``dense`` = the product of every index size, and
``effective`` / ``synops`` are the sums over all terms of ``nz(A)*nz(B)`` /
``|A|*|B|`` (``nz(W)`` in place of ``|W|`` for a weight). Batch indices are
those in both operands and the output; contracted ones are in both and not in
the output. An index in one operand only (``'ij,jk->k'``) is a free index of
that operand for counting (the naive sum's terms, even if torch sums it out
first). One operand: no multiply, nothing counted. Three or more operands:
:class:`UncountableOpError` (the multiplies depend on the contraction order;
split it into two-operand einsums).

**Additive masks** (``addmm``, ``baddbmm``, ``addbmm``, ``addmv``, ``addr``,
out-of-place with ``beta != 0``): an output entry whose ``input`` is ``-inf``
does not need its products (``baddbmm(mask, q, k^T)`` in
``F.multi_head_attention_forward``): those terms are left out of dense,
effective and synops. The in-place forms (``addmm_``, ...) have overwritten
``input`` by the time they are counted and count every term. ``alpha = 0``:
no product, nothing counted.

**Scaled dot-product attention** (``F.scaled_dot_product_attention``) gives two
products, ``"sdpa.qk"`` (``q @ k^T``, the operands as received, before the
scale) and ``"sdpa.av"`` (``attn @ v``). With ``is_causal`` or ``attn_mask``
(bool: True takes part; float: ``-inf`` is masked out) the masked-out pairs
are no ops: they are left out of both products' dense, effective and synops.
``attn`` is recomputed (``softmax(q k^T * scale + mask)``, masked entries zero,
differentiable w.r.t. ``q`` and ``k``); it is real-valued, so ``attn @ v`` is
MACs unless ``v`` (or ``attn``) is in {-1, 0, 1}. ``enable_gqa`` repeats the
key/value heads. ``dropout_p > 0``: the dropout mask is drawn inside the kernel
and cannot be seen; ``attn @ v`` is then counted as its expectation (synops of
the undropped ``attn``, which dropout's ``1/(1-p)`` rescaling keeps unbiased;
effective times ``1 - p``) with an :class:`ExpectedCountWarning`.

What reaches ``__torch_function__`` (torch 2.13, checked with a
``TorchFunctionMode``)
-----------------------------------------------------------------------------
* ``x @ w`` and ``x.matmul(w)``: ``torch.Tensor.matmul`` (``TensorBase.matmul``,
  not ``__matmul__``); ``torch.matmul``: ``torch.matmul``; ``w.__rmatmul__(x)``
  (``x @ w`` with ``x`` not a Tensor): ``torch.Tensor.__rmatmul__`` with the
  operands swapped. ``x.mm``/``x.bmm``/``x.addmm``/``x.addmm_``: the
  ``torch.Tensor`` methods; ``torch.mm`` etc.: the ``torch`` functions.
* ``F.linear`` and ``nn.Linear.forward``: ``torch._C._nn.linear``
  (``is F.linear``). ``F.conv2d``, ``nn.Conv2d.forward``: ``torch.conv2d``
  (``is F.conv2d``); the same for the other convs and ``F.bilinear``
  (``torch.bilinear``). ``F.scaled_dot_product_attention`` is
  ``torch._C._nn.scaled_dot_product_attention``. ``torch.einsum`` and
  ``torch.tensordot`` are Python functions and arrive as themselves.
* ``nn.MultiheadAttention`` (train and eval) and ``nn.TransformerEncoderLayer``:
  ``F.multi_head_attention_forward`` arrives as ONE opaque call: a mode is
  popped while it handles a call, so the in-projection ``linear``, the
  ``bmm``/``baddbmm``/``softmax``/``dropout``/``bmm`` (``need_weights=True``,
  the module's default) or ``scaled_dot_product_attention``
  (``need_weights=False``, the encoder layer's choice) and the out-projection
  inside it are not seen. :data:`TRANSPARENT_OPS` maps it to the same Python
  body with its ``has_torch_function`` check skipped: a mode that runs
  ``with self: return TRANSPARENT_OPS[func](*args, **kwargs)`` sees (and counts,
  with the real dropout masks) every inner op, and the output is the same.
  ``count_op`` on ``F.multi_head_attention_forward`` itself raises. The two
  paths agree on the projections, on effective ops and on the synops of
  ``q @ k^T``: with ``need_weights=True`` the ``bmm`` receives
  ``q * head_dim**-0.5``; the body's ``math.sqrt`` is recorded and that
  product is counted on the unscaled ``q`` (as ``sdpa.qk`` counts it, before
  its scale; spikes stay in {-1, 0, 1}). They differ where the ops they run
  differ: the dense ops of ``bmm(attn, v)`` include the masked pairs (``attn``
  is zero there, but a ``bmm`` multiplies every pair), and the rows are named
  after the ops (``bmm`` / ``sdpa.qk``).
* The fused fast paths ``torch._native_multi_head_attention`` and
  ``torch._transformer_encoder_layer_fwd`` (eval mode, no grad) never reach a
  mode that is active when the module's ``forward`` starts: ``MultiheadAttention``,
  ``TransformerEncoderLayer`` and ``TransformerEncoder`` check
  ``torch.overrides.has_torch_function`` (True under any mode) and take the
  Python path. The counter must therefore push its mode before the outermost
  such module's ``forward`` (a forward pre-hook on it or an ancestor); a mode
  pushed later lets ``MultiheadAttention`` run its fused kernel unseen.
  ``TransformerEncoderLayer`` also leaves its fast path when any of its
  submodules has a forward (pre-)hook, which the counter's hooks on its
  ``Linear`` layers already are; ``MultiheadAttention`` checks no hooks. The
  fused ops are flagged in case they are called directly. Note that
  ``MultiheadAttention.out_proj`` is an ``nn.Linear`` whose ``forward`` is
  never called (its weight is passed to ``F.multi_head_attention_forward``):
  a module hook on it never fires.
* ``nn.LSTM`` etc. call ``torch.lstm`` / ``torch.gru_cell`` ...: those are
  counted by the module rules of :mod:`synopsloss.recurrent`; called
  functionally they are flagged.

Flagged (:data:`FLAGGED_OPS`, :class:`UncountableOpError`): ``F.bilinear`` (two
activations and a weight per term: no agreed synapse definition; write it as
a ``Linear`` of the outer product), ``torch.linalg.multi_dot`` /
``torch.chain_matmul`` (multiplies depend on the order chosen), sparse
``torch.sparse.mm`` / ``torch.sparse.addmm``, ``torch.conv_tbc``, the fused
attention fast paths and the recurrent functions above. Deliberately NOT
counted and not flagged (:data:`NOT_SYNAPSE_OPS`): ``F.embedding`` /
``F.embedding_bag`` (look-ups, not synapses) and elementwise products
(``x * w``: neuron dynamics, gating, scaling; register a module rule for an
elementwise-weight layer). Every other op returns ``None``.

Costs (CPU, one thread, ``count_op`` time / op time, rough: the machine was
shared): ``F.linear`` 64x512 @ 512x512 with a cached map 0.1; ``F.conv2d``
16x16x32x32, 3x3, 0.1 (cached map) to 0.2 (map rebuilt for a fresh weight);
binary ``q @ k^T`` [16,8,64,32] 1.4 to 3.6; ``sdpa`` [16,8,64,32] 2.6, causal
6. Maps: a linear op's is one pass over its weight, a conv's one transposed
convolution of its 0/1 weight mask over one sample; both are cached (bounded
LRU, :data:`MAP_CACHE`) for ``nn.Parameter`` weights by identity and version
counter and rebuilt on every call for any other weight tensor (a fresh
``w * mask`` each call); dense maps are cached by shapes only. Products cost a
few passes over each operand (``abs``, ``sign``, sums), plus one 0/1 and one
magnitude batched matmul when a mask is present; attention also recomputes
the softmax. Nothing synchronises with the device, except a tensor ``scale``
(sdpa) or tensor ``dims`` (tensordot), read with ``float`` / ``tolist``.

Example
-------
>>> import torch, torch.nn.functional as F
>>> from synopsloss.ops import count_op
>>> x = torch.tensor([[1.0, 0.0, 1.0]])
>>> w = torch.nn.Parameter(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))
>>> (c,) = count_op(F.linear, (x, w), {}, F.linear(x, w))
>>> c.op, float(c.synops), float(c.dense), float(c.effective), bool(c.spiking)
('linear', 3.0, 6.0, 3.0, True)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import types
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .maps import conv_fanout as _conv_fanout, conv_transpose_fanout as _conv_transpose_fanout, linear_fanout as _linear_fanout
from .maps import MapCache, magnitude
from .errors import ExpectedCountWarning, SynOpsWarning, UncountableOpError, changed_message
from .records import Call, all_integer_values, reduce_calls, value_range, version_of
from .hooks import functorch_level as _LEVEL
from .hooks import own_ops
from .reductions import in_memory_order, min_max

__all__ = [
    "OpCount",
    "count_op",
    "OP_HANDLERS",
    "COUNTED_OPS",
    "FLAGGED_OPS",
    "NOT_SYNAPSE_OPS",
    "TRANSPARENT_OPS",
    "MAP_CACHE",
    "UncountableOpError",
    "ExpectedCountWarning",
]

IsWeight = Optional[Callable[[Tensor], bool]]
Shape = Tuple[int, ...]


@dataclass
class OpCount:
    """What one op call contributes (one product: ``sdpa`` gives two).

    All tensors are 0-dim, on the operands' device, float64 (float32 on MPS;
    ``spiking``: bool). ``synops`` carries the autograd graph back to the
    activation operand(s); the others are detached.
    """

    op: str
    synops: Tensor
    dense: Tensor
    effective: Tensor
    spiking: Tensor
    rows: int
    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]
    input_sum: Tensor
    input_nonzero: Tensor
    weighted: bool
    #: a weight op's recorded call (its counts are reduced by :mod:`synopsloss.records`, as a module layer's)
    call: Optional[Call] = None
    #: an activation product recorded by the function mode: its counts come from ``later()`` when the counter
    #: is read, as ``(synops, dense, effective, spiking, input_sum, input_nonzero)`` (the tensor fields above
    #: are ``None`` then); ``device`` is the operands'
    later: Optional[Callable[..., Tuple[Any, ...]]] = None
    device: Optional[torch.device] = None
    #: an activation product's batch dims (the sizes its ``later(per_row=True)`` gives one synops value each, in
    #: order: ``(T, B, heads)`` of a spike attention product); ``()``: none
    row_dims: Tuple[int, ...] = ()
    #: a weight product (``x @ W``, ``einsum``): whether every value of the activation is an integer (spike
    #: counts are that many accumulate events each, as for a layer); ``None`` otherwise
    integer: Optional[Tensor] = None


Handler = Callable[[tuple, dict, Any, IsWeight], List[OpCount]]


# --------------------------------------------------------------------------- helpers


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _arg(args: tuple, kwargs: dict, i: int, names: Sequence[str], default: Any = None) -> Any:
    if i < len(args):
        return args[i]
    for name in names:
        if name in kwargs:
            return kwargs[name]
    return default


def _check(t: Any, op: str, what: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"synopsloss: {op} got {type(t).__name__} as its {what}, not a tensor")
    if t.is_complex():
        raise TypeError(f"synopsloss: {op} on complex tensors is not counted; use real tensors")
    if t.layout != torch.strided or t.is_nested:
        raise TypeError(
            f"synopsloss: {op} got a {t.layout} {'nested ' if t.is_nested else ''}tensor as its {what}; "
            "only dense (strided) tensors are counted. Convert it with .to_dense() or count the layer as a module."
        )
    if t.device.type == "meta":
        raise ValueError(f"synopsloss: {op} got a meta tensor, which holds no values to count; run on real data")
    return t


def _is_param(t: Tensor) -> bool:
    return isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter)


def _weightness(a: Tensor, b: Tensor, is_weight: IsWeight, batch_rule: bool) -> Tuple[bool, bool]:
    """Which of two operands are weights (module docstring: parameter, ``is_weight``, batch dims)."""
    a_w = _is_param(a) or (is_weight is not None and bool(is_weight(a)))
    b_w = _is_param(b) or (is_weight is not None and bool(is_weight(b)))
    if batch_rule:
        a_batch, b_batch = a.dim() > 2, b.dim() > 2
        a_w = a_w or (not a_batch and b_batch)
        b_w = b_w or (not b_batch and a_batch)
    return a_w, b_w








def _rsum(t: Tensor, dims: Sequence[int], acc: torch.dtype) -> Tensor:
    """``t`` summed over ``dims`` (none: all kept), as ``acc``.

    32/64-bit floats are summed in their own dtype (exact for integer counts below 2**24, as the
    module counter does; ``sum(dtype=float64)`` would first copy the whole tensor on CPU); half
    precision and integer tensors are summed in ``acc`` (a bf16 sum rounds above 256)."""
    if not dims:
        return t.to(acc)
    if t.dtype in (torch.float32, torch.float64):
        return t.sum(list(dims)).to(acc)
    return t.sum(list(dims), dtype=acc)


def _nonzero_and_pm1(t: Tensor, dims: Sequence[int], acc: torch.dtype, pm1: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Nonzeros of ``t`` summed over ``dims``, and (``pm1``) whether every value is in {-1, 0, 1}.

    Float arithmetic only, sharing one ``sign`` pass (bool comparisons and reductions are several
    times slower on CPU); no device sync."""
    t = t.detach()
    if not t.is_floating_point():
        t = t.to(torch.float32)
    s = t.sign()
    spiking = None
    if pm1:
        dev = torch.aminmax(s - t)
        spiking = (dev.min == 0) & (dev.max == 0)
    return _rsum(s.abs_(), dims, acc), spiking


def _eager(*ts: Optional[Tensor]) -> bool:
    """Plain tensors in eager mode: outside a ``torch.func`` transform, a jit trace and ``torch.compile`` (their
    values may be read on the host and the tensors kept past the op)."""
    return (not torch.jit.is_tracing() and not torch.compiler.is_compiling()
            and all(t is None or _LEVEL(t) == -1 for t in ts))


def _operand_sums(t: Tensor, dims: Sequence[int], red: torch.dtype, weight: bool, need_integer: bool = False,
                  need_spiking: bool = True) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    """``(|t|, nonzeros)`` summed over ``dims`` and (an activation) whether every value is in {-1, 0, 1}
    (``need_spiking``; else ``False``) and, with ``need_integer`` (the other operand is a weight), whether every
    value is an integer (spike counts: that many events each, as a layer's input; else ``None``).

    A weight counts through its nonzero mask (its magnitude sums are its nonzeros). A CPU activation whose
    values are all >= 0 (spikes, spike products) needs no ``abs`` and no sign mask in backward: ``|t| = t``
    with gradient 1 (the magnitude's, +1 at and above 0); its nonzeros are ``sign(t)`` and it is spiking when
    ``max t <= 1``, ``sum t == nonzeros`` (read on the host: most real values stop there) and every value is an
    integer (the exact test, as in :mod:`synopsloss.records`). A float32 one whose values lie in memory without
    gaps (contiguous, or a transposed view: :func:`~synopsloss.reductions.in_memory_order`) is read first as
    ``int32`` bit patterns for its range; holding only 0 and 1, its sums are its nonzeros and no sign pass is
    made. Other activations (and every activation off the
    CPU, where the test would wait for the device): ``abs``, and a sign pass.
    """
    if weight:
        with torch.no_grad():
            nz, _ = _nonzero_and_pm1(t, dims, red, False)
        return nz, nz, None, None
    if t.device.type == "cpu" and t.is_floating_point() and t.numel() and _eager(t):  # (the test reads a value)
        with torch.no_grad():
            det = t.detach()
            dense = in_memory_order(det) if det.dtype == torch.float32 and (need_spiking or need_integer) else None
            if dense is not None:  # (float32 bit patterns read as int32: a faster range, and no copy of a view)
                lo, hi = value_range(dense)
                if hi != hi:  # (NaN: the general path carries it, as min_max's NaN min sends it there)
                    lo = hi
                # (the integer test, made once: the path below reuses it when the max is 0 or 1)
                whole = all_integer_values(dense, nonneg=True) if lo == 0.0 and hi in (0.0, 1.0) else None
                binary = whole is not None and bool(whole)
            else:
                lo, hi = min_max(det)
                binary, whole = False, None
        if binary:  # only 0 and 1 (a neuron's spikes, a product of them): the sums are the nonzeros
            mag = _rsum(t, dims, red)
            yes = torch.ones((), dtype=torch.bool)
            return mag, mag.detach(), yes, yes
        if bool(lo >= 0):  # (NaN is not: the general path carries it)
            with torch.no_grad():
                nz = _rsum(det.sign(), dims, red)
            mag = _rsum(t, dims, red)
            with torch.no_grad():
                candidate = (need_spiking and float(hi) <= 1
                             and float(mag.detach().sum(dtype=torch.float64)) == float(nz.sum(dtype=torch.float64)))
                integer = None
                if candidate or need_integer:
                    integer = whole if whole is not None else all_integer_values(det if dense is None else dense,
                                                                                 nonneg=True)
                spiking = integer if candidate else torch.zeros((), dtype=torch.bool)
            return mag, nz, spiking, integer
    with torch.no_grad():
        nz, spiking = _nonzero_and_pm1(t, dims, red, need_spiking)
        if spiking is None:
            spiking = torch.zeros((), dtype=torch.bool, device=t.device)
        integer = None
        if need_integer:
            det = t.detach()
            integer = (det == det.round()).all() if det.is_floating_point() else torch.ones((), dtype=torch.bool)
    return _rsum(magnitude(t), dims, red), nz, spiking, integer


def _zero_scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0


def _counting(device: torch.device):
    """Autocast off: counts are built in float64 (or float32) whatever the surrounding context."""
    return torch.autocast(device.type, enabled=False)


# --------------------------------------------------------------------------- weight ops with maps


#: The map cache of the function mode (the same class as each module layer's, bounded;
#: ``MAP_CACHE.clear()`` frees it).
MAP_CACHE = MapCache(max_shapes=64)


def _weight_call(op: str, x: Tensor, w: Tensor, kind: tuple, build: Callable[[Tensor], Tensor],
                 in_shape: Shape, out_shape: Shape) -> List[OpCount]:
    """One weight-op call as a record (reduced by :func:`synopsloss.records.reduce_layers` when read)."""
    n_el = math.prod(in_shape)
    if x.numel() == 0 or n_el == 0:
        return []
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.get_default_dtype())
    ent = MAP_CACHE.entry(kind, w, build, in_shape, f"F.{op}")
    call = Call(x, x.numel() // n_el, ent, w, MAP_CACHE, version=version_of(x))
    none = None
    return [OpCount(op=op, synops=none, dense=none, effective=none, spiking=none,  # type: ignore[arg-type]
                    rows=call.rows, in_shape=tuple(in_shape), out_shape=tuple(out_shape), input_sum=none,
                    input_nonzero=none, weighted=True, call=call)]


def _complete(c: OpCount) -> OpCount:
    """A recorded weight-op call reduced to its counts (what :func:`count_op` returns)."""
    if c.call is None:
        return c
    s = reduce_calls([c.call])
    return dataclasses.replace(c, synops=s.synops, dense=s.dense, effective=s.effective,
                               spiking=s.spiking_calls > 0, input_sum=s.input_sum, input_nonzero=s.input_nonzero)


def _h_linear(args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> List[OpCount]:
    x = _check(_arg(args, kwargs, 0, ("input",)), "F.linear", "input")
    w = _check(_arg(args, kwargs, 1, ("weight",)), "F.linear", "weight")
    if _is_param(x) or (is_weight is not None and bool(is_weight(x))):
        return []  # weight preprocessing
    if w.dim() == 1:  # F.linear(x[..., in], w[in]) -> [...]
        in_shape, out_shape = (int(w.shape[0]),), ()
        build: Callable[[Tensor], Tensor] = lambda w01: w01  # noqa: E731
    else:
        in_shape, out_shape = (int(w.shape[1]),), (int(w.shape[0]),)
        build = lambda w01: _linear_fanout(None, w01, in_shape, out_shape)  # noqa: E731
    return _weight_call("linear", x, w, ("linear", tuple(w.shape), w.device), build, in_shape, out_shape)


def _ntuple(v: Any, n: int, what: str, op: str) -> Tuple[int, ...]:
    if isinstance(v, int):
        return (int(v),) * n
    v = tuple(int(i) for i in v)
    if len(v) == 1 and n > 1:
        return v * n
    if len(v) != n:
        raise ValueError(f"synopsloss: {op} got {what}={v!r}; it needs {n} values")
    return v


_CONV_SPEC_TYPES: Dict[str, type] = {}


def _conv_spec(op: str, kernel_size: Shape, stride: Shape, padding: Any, dilation: Shape, groups: int) -> Any:
    """A stand-in for an ``nn.ConvNd`` module carrying a functional call's arguments (zero padding),
    so that the module rules of :mod:`synopsloss.maps` build its maps (and name ``F.<op>`` in errors)."""
    cls = _CONV_SPEC_TYPES.get(op)
    if cls is None:
        cls = _CONV_SPEC_TYPES[op] = type(f"F.{op}", (), {})
    spec = cls()
    spec.kernel_size, spec.stride, spec.padding = kernel_size, stride, padding
    spec.dilation, spec.groups, spec.padding_mode = dilation, groups, "zeros"
    return spec


def _conv_counts(op: str, n: int, transposed: bool, x: Any, w: Any, out: Any, stride: Any, padding: Any,
                 dilation: Any, groups: Any, is_weight: IsWeight) -> List[OpCount]:
    x = _check(x, op, "input")
    w = _check(w, op, "weight")
    if not isinstance(out, Tensor):
        raise TypeError(f"synopsloss: {op} returned {type(out).__name__}, not a tensor")
    if _is_param(x) or (is_weight is not None and bool(is_weight(x))):
        return []
    if x.dim() < n + 1 or out.dim() < n + 1:
        raise ValueError(f"synopsloss: {op} got an input of shape {tuple(x.shape)}; one sample needs {n + 1} dims")
    kernel = tuple(int(s) for s in w.shape[2:])
    stride = _ntuple(stride, n, "stride", op)
    dilation = _ntuple(dilation, n, "dilation", op)
    if isinstance(padding, str):
        if transposed or padding not in ("same", "valid"):
            raise ValueError(f"synopsloss: {op} got padding={padding!r}; expected ints, 'same' or 'valid'")
        pad: Any = padding
    else:
        pad = _ntuple(padding, n, "padding", op)
    in_shape = tuple(int(s) for s in x.shape[x.dim() - n - 1:])
    out_shape = tuple(int(s) for s in out.shape[out.dim() - n - 1:])
    spec = _conv_spec(op, kernel, stride, pad, dilation, int(groups))
    fanout = _conv_transpose_fanout if transposed else _conv_fanout
    kind = (op, tuple(w.shape), in_shape, out_shape, stride, pad, dilation, int(groups), w.device)
    try:
        return _weight_call(op, x, w, kind, lambda w01: fanout(spec, w01, in_shape, out_shape), in_shape, out_shape)
    except ValueError as err:
        raise ValueError(f"synopsloss: {err}") from err


def _h_conv(n: int) -> Handler:
    op = f"conv{n}d"

    def handler(args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> List[OpCount]:
        g = functools.partial(_arg, args, kwargs)
        return _conv_counts(op, n, False, g(0, ("input",)), g(1, ("weight",)), out, g(3, ("stride",), 1),
                            g(4, ("padding",), 0), g(5, ("dilation",), 1), g(6, ("groups",), 1), is_weight)

    return handler


def _h_conv_transpose(n: int) -> Handler:
    op = f"conv_transpose{n}d"

    def handler(args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> List[OpCount]:
        g = functools.partial(_arg, args, kwargs)
        # F.conv_transposeNd(input, weight, bias, stride, padding, output_padding, groups, dilation)
        return _conv_counts(op, n, True, g(0, ("input",)), g(1, ("weight",)), out, g(3, ("stride",), 1),
                            g(4, ("padding",), 0), g(7, ("dilation",), 1), g(6, ("groups",), 1), is_weight)

    return handler


def _h_convolution(args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> List[OpCount]:
    # torch.convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    g = functools.partial(_arg, args, kwargs)
    w = _check(g(1, ("weight",)), "torch.convolution", "weight")
    n, transposed = w.dim() - 2, bool(g(6, ("transposed",), False))
    op = f"conv_transpose{n}d" if transposed else f"conv{n}d"
    return _conv_counts(op, n, transposed, g(0, ("input",)), w, out, g(3, ("stride",), 1),
                        g(4, ("padding",), 0), g(5, ("dilation",), 1), g(8, ("groups",), 1), is_weight)


# --------------------------------------------------------------------------- contractions

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BATCH = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # batch dims of matmul-like ops; m, k, n, l, s, e, v are the rest


def _diagonal(t: Tensor, labels: str) -> Tuple[Tensor, str]:
    """Resolve a repeated index within one operand (``'ii'``) to its diagonal."""
    uniq = "".join(dict.fromkeys(labels))
    if uniq == labels:
        return t, labels
    return torch.einsum(f"{labels}->{uniq}", t), uniq


def _sizes(*pairs: Tuple[Tensor, str]) -> Dict[str, int]:
    sizes: Dict[str, int] = {}
    for t, labels in pairs:
        for c, s in zip(labels, t.shape):
            s = int(s)
            if c not in sizes or sizes[c] == 1:
                sizes[c] = s
    return sizes


def _pair_total(x: Tensor, lx: str, y: Tensor, ly: str, mask: Optional[Tensor], lm: str, acc: torch.dtype,
                contracted: str = "", keep: str = "") -> Tensor:
    """Sum over every index value of ``x * y`` (``* mask``), size-1 dims broadcast, as a 0-dim ``acc``.

    With a mask, ``einsum`` contracts only the ``contracted`` indices (a batched matmul, batch dims
    kept: summing them inside ``einsum`` would copy both operands); the rest is summed after the
    mask is applied. ``keep``: indices (of ``x`` or ``y``, none contracted) left out of the sum: the
    result is then the sums per value of those indices, flattened in ``keep``'s order (``[rows]``)."""
    if mask is None:  # elementwise on the (reduced) operands: no matmul needed
        union = lx + "".join(c for c in dict.fromkeys(ly) if c not in lx)
        xs = x.reshape(tuple(x.shape) + (1,) * (len(union) - len(lx)))
        in_y = [c for c in union if c in ly]
        order = [ly.index(c) for c in in_y]
        if order != list(range(len(ly))):
            y = y.permute(order)
        ys = y.reshape([y.shape[in_y.index(c)] if c in ly else 1 for c in union])
        if keep:
            return _kept_sums(xs * ys, union, keep, acc)
        return (xs * ys).sum().to(acc)
    kept = "".join(c for c in dict.fromkeys(lx + ly) if c not in contracted or c in lm or c in keep)
    pair = torch.einsum(f"{lx},{ly}->{kept}", x, y)
    in_m = [c for c in kept if c in lm]
    m = mask.permute([lm.index(c) for c in in_m]) if in_m != list(lm) else mask
    m = m.reshape([m.shape[in_m.index(c)] if c in lm else 1 for c in kept]).to(pair.dtype)
    masked = pair * m
    if keep:
        return _kept_sums(masked, kept, keep, acc)
    # the last dim in pair's dtype (exact for counts below 2**24), the rest in acc
    return masked.sum(-1).to(acc).sum() if masked.dim() else masked.to(acc)


def _kept_sums(t: Tensor, labels: str, keep: str, acc: torch.dtype) -> Tensor:
    """``t`` (indices ``labels``) summed over every index but ``keep``, as ``[rows]`` in ``keep``'s order
    (a size-1 index of ``keep`` broadcast to its size is not expected: ``keep`` holds the batch dims)."""
    other = [i for i, c in enumerate(labels) if c not in keep]
    s = t.to(acc).sum(other) if other else t.to(acc)
    left = [c for c in labels if c in keep]
    order = [left.index(c) for c in keep]
    if order != list(range(len(order))):
        s = s.permute(order)
    return s.reshape(-1)


class _Defer(threading.local):
    """Whether activation products are recorded for the read (the function mode) or counted at once."""

    on: bool = False


_DEFER = _Defer()


def _deferrable(*ts: Optional[Tensor]) -> bool:
    """Operands that can be read after the op returned: plain tensors outside a transform, a trace or backward."""
    return _DEFER.on and torch._C._current_graph_task_id() == -1 and _eager(*ts)


def _changed_warning(t: Tensor) -> None:
    warnings.warn(changed_message(t), SynOpsWarning, stacklevel=6)


def _contract(
    op: str,
    a: Tensor,
    b: Tensor,
    la: str,
    lb: str,
    lo: str,
    a_w: bool,
    b_w: bool,
    mask: Optional[Tensor] = None,
    lm: str = "",
    batch: Optional[str] = None,
) -> List[OpCount]:
    """Counts of the two-operand contraction ``einsum('la,lb->lo', a, b)``, restricted to the terms
    where the bool ``mask`` (indices ``lm``, broadcast) is True.

    A term (one multiply) is one assignment of every index. Weights count through their nonzero
    mask, activations through their magnitude (module docstring). ``batch``: the indices whose
    sizes multiply into ``rows`` of a product (default: those in both operands and the output;
    ``matmul`` passes its broadcast batch dims). Inside the function mode an activation product
    is recorded and its sums taken when the counter is read (``OpCount.later``)."""
    if a_w and b_w:
        return []
    if a.numel() == 0 or b.numel() == 0:
        return []
    a, la = _diagonal(a, la)
    b, lb = _diagonal(b, lb)
    device = a.device
    sizes = _sizes(*([(a, la), (b, lb)] + ([(mask, lm)] if mask is not None else [])))
    if batch is None:
        batch = "".join(c for c in dict.fromkeys(la) if c in lb and c in lo)
    if a_w or b_w:  # shapes only: rows, one sample in and out
        x, lx, lw = (b, lb, la) if a_w else (a, la, lb)
        kept = [i for i, c in enumerate(lx) if c in lw and c not in lo]
        in_shape = tuple(int(x.shape[i]) for i in kept)
        rows = x.numel() // max(math.prod(in_shape), 1)
        out_shape = tuple(sizes[c] for c in lo if c in lw and c not in lx)
    else:
        rows = math.prod(sizes[c] for c in batch)
        in_shape = tuple(int(s) for c, s in zip(la, a.shape) if c not in batch)
        out_shape = tuple(sizes[c] for c in lo if c not in batch)

    def sums(per_row: bool = False) -> Tuple[Any, ...]:
        return _contract_sums(a, b, la, lb, lo, a_w, b_w, mask, lm, sizes, batch if per_row else "")

    if not (a_w or b_w) and _deferrable(a, b, mask):
        versions = [(t, version_of(t)) for t in (a, b)]

        def later(per_row: bool = False) -> Tuple[Any, ...]:
            for t, v in versions:
                if version_of(t) != v:
                    _changed_warning(t)
                    break
            return sums(per_row)

        return [OpCount(op=op, synops=None, dense=None, effective=None, spiking=None,  # type: ignore[arg-type]
                        rows=rows, in_shape=in_shape, out_shape=out_shape, input_sum=None,  # type: ignore[arg-type]
                        input_nonzero=None, weighted=False, later=later, device=device,
                        row_dims=tuple(sizes[c] for c in batch))]
    synops, dense, effective, spiking, input_sum, input_nonzero, _, integer = sums()
    return [OpCount(op=op, synops=synops, dense=dense, effective=effective, spiking=spiking, rows=rows,
                    in_shape=in_shape, out_shape=out_shape, input_sum=input_sum, input_nonzero=input_nonzero,
                    weighted=a_w or b_w, integer=integer)]


@own_ops
def _contract_sums(a: Tensor, b: Tensor, la: str, lb: str, lo: str, a_w: bool, b_w: bool, mask: Optional[Tensor],
                   lm: str, sizes: Dict[str, int], keep: str = "") -> Tuple[Any, ...]:
    """``(synops, dense, effective, spiking, input_sum, input_nonzero, per_row, integer)`` of :func:`_contract`
    (tensor work); ``per_row``: with ``keep`` (the batch indices), the synops per value of them (``[rows]``, in
    ``keep``'s order; their sum is ``synops``), else ``None``; ``integer``: with a weight operand, whether every
    value of the activation is an integer (else ``None``)."""
    device = a.device
    acc = _acc_dtype(device)
    set_m = frozenset(lm)
    held = set_m | frozenset(keep)
    # indices that only one operand has factor out of every term: sum them first (the kept ones are not summed)
    dims_a = [i for i, c in enumerate(la) if c not in held and c not in lb]
    dims_b = [i for i, c in enumerate(lb) if c not in held and c not in la]
    ra = "".join(c for i, c in enumerate(la) if i not in dims_a)
    rb = "".join(c for i, c in enumerate(lb) if i not in dims_b)
    # with a mask the pair sum is a matmul: run it in float32 (exact for 0/1 and counts below 2**24)
    # unless an operand is float64; without one, what is left is small and summed in acc
    red = acc if mask is None or torch.float64 in (a.dtype, b.dtype) else torch.float32
    with _counting(device):
        mag_a, nz_a, pm_a, int_a = _operand_sums(a, dims_a, red, a_w, need_integer=b_w)
        # one spiking operand makes the product's ops ACs: a CPU operand known to spike spares the other's test
        settled = pm_a is not None and pm_a.device.type == "cpu" and _eager(a, pm_a) and bool(pm_a)
        mag_b, nz_b, pm_b, int_b = _operand_sums(b, dims_b, red, b_w, need_integer=a_w, need_spiking=not settled)
        contracted = "".join(c for c in ra if c in rb and c not in lo)
        per_row = None
        if keep:
            per_row = _pair_total(mag_a, ra, mag_b, rb, mask, lm, acc, contracted, keep)
            synops = per_row.sum()
        else:
            synops = _pair_total(mag_a, ra, mag_b, rb, mask, lm, acc, contracted)
        with torch.no_grad():
            effective = _pair_total(nz_a, ra, nz_b, rb, mask, lm, acc, contracted)
            if mask is None:
                dense = torch.full((), float(math.prod(sizes.values())), dtype=acc, device=device)
            else:
                factor = math.prod(s for c, s in sizes.items() if c not in set_m)
                factor *= math.prod(sizes[c] for c, s in zip(lm, mask.shape) if s == 1)
                dense = mask.sum(dtype=acc) * factor
            integer = None
            if a_w or b_w:
                spiking, integer = (pm_b, int_b) if a_w else (pm_a, int_a)
                first_sum, first_nz = (mag_b, nz_b) if a_w else (mag_a, nz_a)
            else:
                spiking = pm_a | pm_b
                first_sum, first_nz = mag_a, nz_a
            return (synops, dense, effective, spiking, first_sum.detach().sum().to(acc), first_nz.sum().to(acc),
                    per_row, integer)


def _matmul_labels(a_dim: int, b_dim: int) -> Tuple[str, str, str]:
    """einsum labels of ``torch.matmul`` for operands of these ranks (1-D, 2-D, broadcast batch)."""
    nb_a, nb_b = max(a_dim - 2, 0), max(b_dim - 2, 0)
    nb = max(nb_a, nb_b)
    batch = _BATCH[:nb]
    la = batch[nb - nb_a:] + ("mk" if a_dim >= 2 else "k")
    lb = batch[nb - nb_b:] + ("kn" if b_dim >= 2 else "k")
    lo = batch + ("m" if a_dim >= 2 else "") + ("n" if b_dim >= 2 else "")
    return la, lb, lo


def _h_matmul(swap: bool) -> Handler:
    def handler(args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> List[OpCount]:
        a = _check(_arg(args, kwargs, 0, ("input", "self")), "matmul", "first operand")
        b = _check(_arg(args, kwargs, 1, ("other",)), "matmul", "second operand")
        if swap:  # Tensor.__rmatmul__(self, other) computes other @ self
            a, b = b, a
        if a.dim() == 0 or b.dim() == 0:
            return []
        la, lb, lo = _matmul_labels(a.dim(), b.dim())
        a_w, b_w = _weightness(a, b, is_weight, batch_rule=True)
        if b_w and not a_w and b.dim() == 2:  # x[..., C] @ W[C, D] is F.linear(x, W.T): the same record and rule
            w = b.t()
            in_shape, out_shape = (int(w.shape[1]),), (int(w.shape[0]),)
            return _weight_call("matmul", a, w, ("linear", tuple(w.shape), w.device),
                                lambda w01: _linear_fanout(None, w01, in_shape, out_shape), in_shape, out_shape)
        return _contract("matmul", a, b, la, lb, lo, a_w, b_w, batch=lo.rstrip("mn"))

    return handler


def _additive_mask(inp: Any, beta: Any, lo: str, inplace: bool) -> Tuple[Optional[Tensor], str]:
    """Terms needed by ``beta * input + alpha * (a @ b)``: not where ``input`` is ``-inf``."""
    if inplace or not isinstance(inp, Tensor) or _zero_scalar(beta) or not inp.is_floating_point():
        return None, ""
    if inp.dim() > len(lo):
        return None, ""
    with torch.no_grad():
        return ~torch.isneginf(inp.detach()), lo[len(lo) - inp.dim():]


def _h_product(op: str, la: str, lb: str, lo: str, add: bool = False, inplace: bool = False) -> Handler:
    """mm / bmm / mv / dot / outer and their ``add*`` forms (``input`` first, then the two operands)."""
    first = 1 if add else 0

    def handler(args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> List[OpCount]:
        names = (("mat1", "batch1", "mat", "vec1"), ("mat2", "batch2", "vec", "vec2")) if add else (
            ("input", "self"), ("mat2", "vec", "tensor", "other", "vec2"))
        a = _check(_arg(args, kwargs, first, names[0]), op, "first operand")
        b = _check(_arg(args, kwargs, first + 1, names[1]), op, "second operand")
        if add and _zero_scalar(kwargs.get("alpha", 1)):
            return []
        mask, lm = (None, "")
        if add:
            mask, lm = _additive_mask(_arg(args, kwargs, 0, ("input", "self")), kwargs.get("beta", 1), lo, inplace)
        a_w, b_w = _weightness(a, b, is_weight, batch_rule=False)
        return _contract(op, a, b, la, lb, lo, a_w, b_w, mask, lm)

    return handler


def _h_inner(args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> List[OpCount]:
    a = _check(_arg(args, kwargs, 0, ("input", "self")), "inner", "first operand")
    b = _check(_arg(args, kwargs, 1, ("other",)), "inner", "second operand")
    if a.dim() == 0 or b.dim() == 0:
        return []  # a scalar times a tensor: an elementwise scale, no contraction
    la = _LETTERS[: a.dim() - 1] + "Z"
    lb = _LETTERS[a.dim() - 1: a.dim() + b.dim() - 2] + "Z"
    a_w, b_w = _weightness(a, b, is_weight, batch_rule=False)
    return _contract("inner", a, b, la, lb, la[:-1] + lb[:-1], a_w, b_w)


def _h_tensordot(args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> List[OpCount]:
    a = _check(_arg(args, kwargs, 0, ("a",)), "tensordot", "first operand")
    b = _check(_arg(args, kwargs, 1, ("b",)), "tensordot", "second operand")
    dims = _arg(args, kwargs, 2, ("dims",), 2)
    if isinstance(dims, Tensor):
        dims = dims.tolist()
    if isinstance(dims, int):
        da, db = list(range(a.dim() - dims, a.dim())), list(range(dims))
    else:
        da, db = ([d] if isinstance(d, int) else list(d) for d in dims)
    da = [d % a.dim() for d in da]
    db = [d % b.dim() for d in db]
    la = _LETTERS[: a.dim()]
    lb = list(_LETTERS[a.dim(): a.dim() + b.dim()])
    for i, j in zip(da, db):
        lb[j] = la[i]
    lbs = "".join(lb)
    lo = "".join(c for i, c in enumerate(la) if i not in da) + "".join(c for j, c in enumerate(lbs) if j not in db)
    a_w, b_w = _weightness(a, b, is_weight, batch_rule=False)
    return _contract("tensordot", a, b, la, lbs, lo, a_w, b_w)


@functools.lru_cache(maxsize=256)
def _parse_einsum(equation: str, ranks: Tuple[int, ...]) -> Tuple[Tuple[str, ...], str]:
    """Explicit labels of each operand and of the output (ellipses expanded, implicit output made explicit)."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"synopsloss: einsum equation {equation!r} names {len(terms)} operands, got {len(ranks)}")
    used = set(c for c in eq if c.isalpha())
    free = [c for c in _LETTERS[::-1] if c not in used]
    n_ell = max((r - (len(t) - 3) for t, r in zip(terms, ranks) if "..." in t), default=0)
    if n_ell > len(free):
        raise ValueError(f"synopsloss: einsum equation {equation!r} has too many dims for its labels")
    ell = "".join(free[:n_ell])[::-1]
    labels = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            k = r - (len(t) - 3)
            t = t.replace("...", ell[n_ell - k:] if k else "")
        labels.append(t)
    if arrow:
        out = rhs.replace("...", ell)
    else:
        counts: Dict[str, int] = {}
        for t in labels:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return tuple(labels), out


def _sublist_equation(args: Sequence[Any]) -> Tuple[str, List[Any]]:
    """``einsum(op1, [0, 1], op2, [1, 2], [0, 2])`` as an equation string and operands."""
    def term(sub: Sequence[Any]) -> str:
        return "".join("..." if s is Ellipsis else _LETTERS[int(s)] for s in sub)

    operands = list(args[0::2][: len(args) // 2])
    subs = [term(s) for s in args[1::2][: len(args) // 2]]
    eq = ",".join(subs)
    if len(args) % 2:
        eq += "->" + term(args[-1])
    return eq, operands


def _h_einsum(args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> List[OpCount]:
    if args and isinstance(args[0], str):
        equation, operands = args[0], list(args[1:])
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = list(operands[0])
    else:
        equation, operands = _sublist_equation(args)
    if len(operands) < 2:
        return []  # one operand: a transpose, diagonal or sum, no multiply
    if len(operands) > 2:
        raise UncountableOpError(
            f"synopsloss: torch.einsum({equation!r}) has {len(operands)} operands; its multiplies depend on the "
            "contraction order torch picks. Split it into two-operand einsums to count it."
        )
    a = _check(operands[0], "einsum", "first operand")
    b = _check(operands[1], "einsum", "second operand")
    (la, lb), lo = _parse_einsum(equation, (a.dim(), b.dim()))
    a_w, b_w = _weightness(a, b, is_weight, batch_rule=False)
    return _contract("einsum", a, b, la, lb, lo, a_w, b_w)


# --------------------------------------------------------------------------- attention


def _h_sdpa(args: tuple, kwargs: dict, out: Any, is_weight: IsWeight) -> List[OpCount]:
    op = "scaled_dot_product_attention"
    g = functools.partial(_arg, args, kwargs)
    q = _check(g(0, ("query",)), op, "query")
    k = _check(g(1, ("key",)), op, "key")
    v = _check(g(2, ("value",)), op, "value")
    attn_mask = g(3, ("attn_mask",))
    dropout_p = float(g(4, ("dropout_p",), 0.0))
    is_causal = bool(g(5, ("is_causal",), False))
    scale = kwargs.get("scale", args[6] if len(args) > 6 else None)
    enable_gqa = bool(kwargs.get("enable_gqa", args[7] if len(args) > 7 else False))
    if q.dim() < 2 or k.dim() < 2 or v.dim() < 2:
        raise ValueError(f"synopsloss: {op} needs query/key/value of at least 2 dims, got {tuple(q.shape)}")
    q_w, k_w = _weightness(q, k, is_weight, batch_rule=True)
    if enable_gqa and q.dim() >= 3 and k.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k = k.repeat_interleave(rep, dim=-3)
        v = v.repeat_interleave(rep, dim=-3)
    L, E, S = int(q.shape[-2]), int(q.shape[-1]), int(k.shape[-2])
    allowed: Optional[Tensor] = None
    float_mask: Optional[Tensor] = None
    with torch.no_grad():
        if is_causal:
            allowed = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        elif isinstance(attn_mask, Tensor):
            if attn_mask.dtype == torch.bool:
                allowed = attn_mask.detach()
            else:
                float_mask = attn_mask.detach()
                allowed = ~torch.isneginf(float_mask)
    nb = max(q.dim(), k.dim(), v.dim(), allowed.dim() if allowed is not None else 0) - 2
    batch = _BATCH[:nb]

    def lab(t: Tensor, tail: str) -> str:
        return batch[nb - (t.dim() - 2):] + tail

    lm = (batch + "ls")[nb + 2 - allowed.dim():] if allowed is not None else ""
    counts = _contract("sdpa.qk", q, k, lab(q, "le"), lab(k, "se"), batch + "ls", q_w, k_w, allowed, lm, batch)
    # the attention weights, recomputed (masked entries exactly zero)
    device = q.device
    with _counting(device):
        ct = torch.promote_types(torch.promote_types(q.dtype, k.dtype), torch.float32)
        logits = torch.matmul(q.to(ct), k.to(ct).transpose(-2, -1))
        logits = logits * (float(scale) if scale is not None else 1.0 / math.sqrt(E))
        if float_mask is not None:
            logits = logits + float_mask.to(ct)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
            logits = torch.where(allowed.any(-1, keepdim=True), logits, torch.zeros((), dtype=ct, device=device))
        attn = torch.softmax(logits, dim=-1)
        if allowed is not None:
            attn = torch.where(allowed, attn, torch.zeros((), dtype=ct, device=device))
    _, v_w = _weightness(attn, v, is_weight, batch_rule=True)
    la = batch[nb - (attn.dim() - 2):] + "ls"
    av = _contract("sdpa.av", attn, v, la, lab(v, "sn"), batch + "ln", q_w and k_w, v_w, allowed, lm, batch)
    if av and dropout_p > 0.0:
        warnings.warn(
            f"synopsloss: scaled_dot_product_attention with dropout_p={dropout_p} draws its dropout mask inside "
            "the kernel; attn @ v is counted as its expectation (effective ops x (1 - p)). For exact counts "
            "use dropout=0 in attention, or need_weights=True in nn.MultiheadAttention (dropout then is an "
            "op of its own).",
            ExpectedCountWarning,
            stacklevel=3,
        )
        kept = 1.0 - dropout_p
        c = av[0]
        if c.later is not None:
            inner = c.later

            def expected(per_row: bool = False) -> Tuple[Any, ...]:
                synops, dense, effective, *rest = inner(per_row)
                return (synops, dense, effective * kept, *rest)

            c.later = expected
        else:
            c.effective = c.effective * kept
    return counts + av


# --------------------------------------------------------------------------- composites


class _QueryScale(threading.local):
    """The ``q`` scale of ``F.multi_head_attention_forward``'s ``need_weights=True`` path, between the
    ``q_scaled = q * math.sqrt(1.0 / E)`` that sets it and the ``bmm`` / ``baddbmm`` of ``q_scaled @ k^T``
    that takes it (per thread; cleared when the body returns)."""

    value: Optional[float] = None
    dim: int = 0
    out: Any = None  # the output of the product it applies to (each counter counts that one call)


_Q_SCALE = _QueryScale()
_QK_OPS = frozenset({torch.bmm, torch.baddbmm, torch.Tensor.bmm, torch.Tensor.baddbmm})


def _recording_sqrt(v: float) -> float:
    """``math.sqrt`` for the MHA body: the only ``math.sqrt`` there is the ``q`` scale ``sqrt(1 / E)``."""
    out = math.sqrt(v)
    _Q_SCALE.value, _Q_SCALE.dim, _Q_SCALE.out = out, int(round(1.0 / v)) if v > 0 else 0, None
    return out


def _unscaled_query(func: Callable, args: tuple, kwargs: dict, out: Any) -> Tuple[tuple, dict]:
    """For the ``q_scaled @ k^T`` of MHA's ``need_weights=True`` path: the arguments with ``q`` unscaled, so
    that its synops equal those of the ``need_weights=False`` path (sdpa counts ``q`` before its scale)."""
    if _Q_SCALE.out is None:
        _Q_SCALE.out = out  # the first product after the scale is q_scaled @ k^T
    elif _Q_SCALE.out is not out:
        _Q_SCALE.value = _Q_SCALE.out = None  # a later product (attn @ v)
        return args, kwargs
    scale, dim = _Q_SCALE.value, _Q_SCALE.dim
    i, names = (1, ("batch1",)) if func in (torch.baddbmm, torch.Tensor.baddbmm) else (0, ("input", "self"))
    a = _arg(args, kwargs, i, names)
    if not scale or not isinstance(a, Tensor) or a.dim() != 3 or a.shape[-1] != dim:
        return args, kwargs
    a = a / scale  # exact for spikes (x / x == 1); differentiable: d/dq of q * s / s is 1
    if i < len(args):
        return args[:i] + (a,) + args[i + 1:], kwargs
    return args, {**kwargs, next(k for k in names if k in kwargs): a}


def _transparent(func: Callable, scaled_query: bool = False) -> Optional[Callable]:
    """``func``'s own Python body with its ``has_torch_function`` check skipped.

    A ``TorchFunctionMode`` re-entered around it then sees every op inside;
    ``None`` when ``func`` has no such check (another torch version).
    ``scaled_query``: the body scales ``q`` by ``math.sqrt(1 / E)`` before
    ``q @ k^T`` (MHA's ``need_weights=True`` path); the scale is recorded and
    :func:`count_op` counts that product on the unscaled ``q``.
    """
    code = getattr(func, "__code__", None)
    if code is None or "has_torch_function" not in code.co_names:
        return None
    scope = dict(func.__globals__)
    scope["has_torch_function"] = lambda *a, **k: False
    if scaled_query and isinstance(scope.get("math"), types.ModuleType):
        shim = types.ModuleType("math")
        shim.__dict__.update(vars(math))
        shim.sqrt = _recording_sqrt  # type: ignore[attr-defined]
        scope["math"] = shim
    body = types.FunctionType(code, scope, func.__name__, func.__defaults__, func.__closure__)
    body.__kwdefaults__ = func.__kwdefaults__
    body.__doc__ = func.__doc__
    if not scaled_query:
        return body

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return body(*args, **kwargs)
        finally:
            _Q_SCALE.value = _Q_SCALE.out = None

    return run


_MHA = F.multi_head_attention_forward
#: Composite Python ops whose inner ops are counted one by one: run ``TRANSPARENT_OPS[func](*args, **kwargs)``
#: with the counting mode re-entered (``with mode: ...``) instead of ``func``.
TRANSPARENT_OPS: Dict[Callable, Callable] = {
    f: body for f, body in ((_MHA, _transparent(_MHA, scaled_query=True)),) if body is not None
}


# --------------------------------------------------------------------------- the tables

_T = torch.Tensor
_AFFINE = ("addmm", "baddbmm", "addbmm", "addmv", "addr")

#: One row per counted op: (the callables as they reach ``__torch_function__``, handler).
_OP_TABLE: Tuple[Tuple[Tuple[Callable, ...], Handler], ...] = (
    ((F.linear,), _h_linear),
    ((F.conv1d,), _h_conv(1)),
    ((F.conv2d,), _h_conv(2)),
    ((F.conv3d,), _h_conv(3)),
    ((F.conv_transpose1d,), _h_conv_transpose(1)),
    ((F.conv_transpose2d,), _h_conv_transpose(2)),
    ((F.conv_transpose3d,), _h_conv_transpose(3)),
    ((torch.convolution,), _h_convolution),
    ((torch.matmul, _T.matmul, _T.__matmul__, torch.linalg.matmul), _h_matmul(swap=False)),
    ((_T.__rmatmul__,), _h_matmul(swap=True)),
    ((torch.mm, _T.mm), _h_product("mm", "mk", "kn", "mn")),
    ((torch.bmm, _T.bmm), _h_product("bmm", "Amk", "Akn", "Amn")),
    ((torch.mv, _T.mv), _h_product("mv", "mk", "k", "m")),
    ((torch.dot, _T.dot, torch.vdot, _T.vdot), _h_product("dot", "k", "k", "")),
    ((torch.outer, _T.outer, torch.ger, _T.ger), _h_product("outer", "m", "n", "mn")),
    ((torch.addmm, _T.addmm), _h_product("addmm", "mk", "kn", "mn", add=True)),
    ((_T.addmm_,), _h_product("addmm", "mk", "kn", "mn", add=True, inplace=True)),
    ((torch.baddbmm, _T.baddbmm), _h_product("baddbmm", "Amk", "Akn", "Amn", add=True)),
    ((_T.baddbmm_,), _h_product("baddbmm", "Amk", "Akn", "Amn", add=True, inplace=True)),
    ((torch.addbmm, _T.addbmm), _h_product("addbmm", "Amk", "Akn", "mn", add=True)),
    ((_T.addbmm_,), _h_product("addbmm", "Amk", "Akn", "mn", add=True, inplace=True)),
    ((torch.addmv, _T.addmv), _h_product("addmv", "mk", "k", "m", add=True)),
    ((_T.addmv_,), _h_product("addmv", "mk", "k", "m", add=True, inplace=True)),
    ((torch.addr, _T.addr), _h_product("addr", "m", "n", "mn", add=True)),
    ((_T.addr_,), _h_product("addr", "m", "n", "mn", add=True, inplace=True)),
    ((torch.inner, _T.inner), _h_inner),
    ((torch.tensordot,), _h_tensordot),
    ((torch.einsum,), _h_einsum),
    ((F.scaled_dot_product_attention,), _h_sdpa),
)

#: ``{callable: handler(args, kwargs, out, is_weight) -> List[OpCount]}``: every counted op.
OP_HANDLERS: Dict[Callable, Handler] = {f: handler for funcs, handler in _OP_TABLE for f in funcs}
#: The counted callables.
COUNTED_OPS: FrozenSet[Callable] = frozenset(OP_HANDLERS)

_RECURRENT = "counted by the module rules of synopsloss.recurrent; use nn.RNN/LSTM/GRU (or their cells) as modules"
_FAST_PATH = (
    "a fused fast path of nn.MultiheadAttention / nn.TransformerEncoderLayer, whose products cannot be seen; "
    "it is skipped when a TorchFunctionMode is active as the module's forward starts (push the counting mode "
    "in a forward pre-hook of the module or an ancestor)"
)
#: Ops that multiply activations but are not counted: :func:`count_op` raises :class:`UncountableOpError`.
FLAGGED_OPS: Dict[Callable, str] = {
    F.bilinear: (
        "each term multiplies two activations and a weight; there is no agreed synapse definition. Write it as a "
        "Linear of the flattened outer product x1 (x) x2, or register a module rule for nn.Bilinear"
    ),
    torch.linalg.multi_dot: "its multiplies depend on the order torch chooses; chain two-operand matmuls instead",
    torch.chain_matmul: "its multiplies depend on the order torch chooses; chain two-operand matmuls instead",
    torch.sparse.mm: "sparse operands are not counted; use dense tensors",
    torch.sparse.addmm: "sparse operands are not counted; use dense tensors",
    torch.conv_tbc: "time-batch-channel convolution is not counted; use F.conv1d on [B, C, T]",
    torch._native_multi_head_attention: _FAST_PATH,
    torch._transformer_encoder_layer_fwd: _FAST_PATH,
    _MHA: (
        "a composite whose inner ops (in-projection, attention products, out-projection) are counted one by one "
        "when it runs as synopsloss.ops.TRANSPARENT_OPS[func] with the counting mode re-entered"
    ),
    torch.lstm: _RECURRENT,
    torch.gru: _RECURRENT,
    torch.rnn_tanh: _RECURRENT,
    torch.rnn_relu: _RECURRENT,
    torch.lstm_cell: _RECURRENT,
    torch.gru_cell: _RECURRENT,
    torch.rnn_tanh_cell: _RECURRENT,
    torch.rnn_relu_cell: _RECURRENT,
}
#: Ops that are deliberately not synapses (``count_op`` returns ``None``), with the reason, for documentation.
NOT_SYNAPSE_OPS: Dict[Callable, str] = {
    F.embedding: "a look-up, not a synapse",
    F.embedding_bag: "a look-up, not a synapse",
    torch.mul: "elementwise product (neuron dynamics, gating, scaling); register a module rule for such a layer",
    _T.mul: "elementwise product",
    _T.__mul__: "elementwise product",
    _T.__rmul__: "elementwise product",
}


def count_op(func: Callable, args: tuple, kwargs: Optional[dict], out: Any, *,
             is_weight: IsWeight = None) -> Optional[List[OpCount]]:
    """The synaptic operations of one op call, as it reached ``__torch_function__``.

    Parameters
    ----------
    func, args, kwargs
        The callable and its arguments, as a ``TorchFunctionMode`` receives them.
    out
        What the call returned (output shapes; conv map checks).
    is_weight
        ``is_weight(t) -> bool``: True for tensors shared by all samples (the
        model's parameters and buffers and tensors computed only from them).
        Parameters and their views are weights without it.

    Returns
    -------
    list of OpCount or None
        ``None`` when ``func`` is no op we count; otherwise one entry per
        product (two for attention), or an empty list when the call counts
        nothing (a product of two weights, one-operand einsum, ``alpha=0``,
        empty operands).

    Raises
    ------
    UncountableOpError
        For an op in :data:`FLAGGED_OPS` or an einsum of three or more operands.
    TypeError
        For complex, sparse, nested or non-tensor operands.

    Example
    -------
    >>> import torch
    >>> from synopsloss.ops import count_op
    >>> q = torch.tensor([[1.0, 0.0], [1.0, 1.0]])      # [M=2, K=2], spikes
    >>> kt = torch.tensor([[1.0, 1.0], [0.0, 1.0]])     # [K=2, N=2]
    >>> (c,) = count_op(torch.matmul, (q, kt), {}, q @ kt)
    >>> float(c.effective), float(c.dense), bool(c.spiking), c.rows
    (5.0, 8.0, True, 1)
    """
    handler = OP_HANDLERS.get(func)
    if handler is None:
        reason = FLAGGED_OPS.get(func)
        if reason is not None:
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            raise UncountableOpError(f"synopsloss cannot count {name}: {reason}")
        return None
    if is_weight is not None and not callable(is_weight):
        raise TypeError(f"is_weight must be a callable or None, got {type(is_weight).__name__}")
    return [_complete(c) for c in _handle(func, handler, args, kwargs, out, is_weight)]


def _handle(func: Callable, handler: Handler, args: Any, kwargs: Optional[dict], out: Any,
            is_weight: IsWeight) -> List[OpCount]:
    args, kwargs = tuple(args), dict(kwargs or {})
    if _Q_SCALE.value is not None and func in _QK_OPS:
        args, kwargs = _unscaled_query(func, args, kwargs, out)
    return handler(args, kwargs, out, is_weight)


def record_op(func: Callable, args: tuple, kwargs: Optional[dict], out: Any, *,
              is_weight: IsWeight = None) -> Optional[List[OpCount]]:
    """Like :func:`count_op`, but weight ops come back as recorded calls (``OpCount.call``) and activation
    products as ``OpCount.later`` (their sums taken when the counter is read), not reduced."""
    handler = OP_HANDLERS.get(func)
    if handler is None:
        return count_op(func, args, kwargs, out, is_weight=is_weight)
    before, _DEFER.on = _DEFER.on, True
    try:
        return _handle(func, handler, args, kwargs, out, is_weight)
    finally:
        _DEFER.on = before
