"""The reductions the hooks run on every layer call, without full-size temporaries or boolean tensors.

Two costs dominate counting on CPU, more than the arithmetic itself (measured
on the 2-core CI machine, torch 2.13):

* **fresh memory**: PyTorch's CPU allocator hands large blocks back to the
  operating system, so every full-size temporary (``x.abs()``, ``x != 0``,
  ``x - x.round()``) is page-faulted in again, about 0.5 ms per MiB;
* **boolean tensors**: comparisons that produce masks (``x != 0``),
  ``torch.where`` and ``count_nonzero`` run 5-20x slower than the same float
  arithmetic. A *cast* to bool (``x.bool()``) is as fast as a float pass, and
  the bytes of the mask it writes can be summed as the lanes of ``int64``
  words (:func:`count_true`, :func:`column_nonzeros`): nonzeros are counted
  that way.

The functions here therefore walk a ``[rows, neurons]`` tensor in row blocks of
at most :data:`BLOCK` elements, write every intermediate into one reused
:class:`Scratch` buffer (on CPU; other devices allocate as usual, their
caching allocators already reuse memory), count nonzeros by casts and
``int64`` lanes, and never synchronise with the device.

Example
-------
>>> import torch
>>> x = torch.tensor([[1.0, 0.0, -2.0], [0.0, 0.0, 1.0]])
>>> s = row_stats(x, Scratch())
>>> s.mag_sum.tolist(), s.nonzero.tolist(), float(s.amax)
([1.0, 0.0, 3.0], [1.0, 0.0, 2.0], 2.0)
"""

from __future__ import annotations

import threading
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["BLOCK", "Scratch", "same_bytes", "RowStats", "row_stats", "abs_row_sums", "all_integer", "count_either", "count_nonzero",
           "count_true", "column_nonzeros", "min_max", "autocast_cpu", "neuron_counts"]

#: Elements per row block (4 MiB of float32): large enough that the few small ops per block cost
#: nothing next to the passes over the data, small enough to stay in cache and bound the scratch.
BLOCK = 1 << 20


class Scratch:
    """Reused CPU work buffers: one per slot, dtype, device and thread, as large as the largest row block asked for.

    At most ``BLOCK`` elements per buffer unless a single row is longer (then
    one row). On other devices :meth:`get` allocates a new tensor each time.

    Example
    -------
    >>> s = Scratch()
    >>> s.get(10, torch.float32, torch.device("cpu")).shape, s.nbytes
    (torch.Size([10]), 40)
    """

    def __init__(self) -> None:
        # one set of buffers per thread: torch releases the GIL inside its ops, so two threads counting at once
        # would otherwise write into the same buffer between a copy and its read
        self._local = threading.local()

    @property
    def _buffers(self) -> Dict[Tuple[int, torch.dtype, torch.device], Tensor]:
        local = self._local
        try:
            return local.buffers
        except AttributeError:
            local.buffers = {}
            return local.buffers

    def get(self, numel: int, dtype: torch.dtype, device: torch.device, slot: int = 0) -> Tensor:
        """A flat tensor of ``numel`` elements to overwrite (its contents are undefined)."""
        if device.type != "cpu":
            return torch.empty(numel, dtype=dtype, device=device)
        key = (slot, dtype, device)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel:
            with torch.inference_mode(False):  # usable inside and outside inference mode
                buf = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[key] = buf
        return buf if buf.numel() == numel else buf[:numel]

    def ones(self, numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A flat tensor of ``numel`` ones, to be read only (one buffer per dtype, as long as the longest asked for)."""
        if device.type != "cpu":
            return torch.ones(numel, dtype=dtype, device=device)
        key = (-1, dtype, device)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel:
            with torch.inference_mode(False):
                buf = torch.ones(numel, dtype=dtype, device=device)
            self._buffers[key] = buf
        return buf if buf.numel() == numel else buf[:numel]

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values())

    def clear(self) -> None:
        self._buffers.clear()


class _Walk:
    """How to walk a ``[rows, n]`` tensor in blocks of at most ``BLOCK`` elements (one block off CPU).

    Many rows (``n <= BLOCK / 64``): blocks of whole rows, whose per-column sums are added up.
    Few long rows (a batch of images without time steps): blocks of columns spanning every row,
    whose per-column sums fill their slice of the result (no sum over a handful of rows per block).
    """

    __slots__ = ("by_cols", "spans")

    def __init__(self, flat: Tensor) -> None:
        rows, n = flat.shape
        self.by_cols = False
        if flat.device.type != "cpu" or rows * n <= BLOCK:
            self.spans = [(0, rows)]
        elif n * 64 <= BLOCK:
            step = BLOCK // n
            self.spans = [(s, min(s + step, rows)) for s in range(0, rows, step)]
        else:
            self.by_cols = True
            width = max(1, BLOCK // rows)
            self.spans = [(s, min(s + width, n)) for s in range(0, n, width)]

    def block(self, t: Tensor, span: Tuple[int, int]) -> Tensor:
        """The block of ``t`` (laid out like the walked tensor)."""
        if len(self.spans) == 1:
            return t
        return t[:, span[0]:span[1]] if self.by_cols else t[span[0]:span[1]]

    def column_sums(self, buf: Tensor, span: Tuple[int, int], acc: Optional[Tensor], n: int,
                    red: Optional[torch.dtype]) -> Tensor:
        """Add the block's per-column sums into ``acc`` (created at the first block)."""
        if len(self.spans) == 1:
            return _col_sums(buf, red)
        if self.by_cols:
            if acc is None:
                acc = torch.empty(n, dtype=red or buf.dtype, device=buf.device)
            acc[span[0]:span[1]] = _col_sums(buf, red)
            return acc
        s = _col_sums(buf, red)
        return s if acc is None else acc.add_(s)


def _col_sums(buf: Tensor, red: Optional[torch.dtype]) -> Tensor:
    """``buf.sum(0, dtype=red)``; on the CPU in float32 / float64 one product with ones (a reduction over the
    first dim is 2x slower there), except under autocast (its products would sum in half precision)."""
    if (red is None and buf.device.type == "cpu" and buf.dtype in (torch.float32, torch.float64)
            and buf.dim() == 2 and not autocast_cpu()):
        return torch.matmul(buf.new_ones(1, buf.shape[0]), buf)[0]
    return buf.sum(0, dtype=red)


#: values from which a contiguous tensor's min and max are read in one ``aminmax`` pass (below, or strided,
#: ``amin`` and ``amax`` are faster on the CPU: a full ``aminmax`` walks a strided tensor element by element)
_AMINMAX_FROM = 1 << 18


def in_memory_order(t: Tensor) -> Optional[Tensor]:
    """``t`` itself when it is contiguous, else a permutation of its dims that is (a transposed or permuted view of
    a contiguous tensor: its values as they lie in memory, no copy), else ``None`` (gaps or overlaps). For
    reductions whose result does not depend on the order of the values (min, max, whether all are integers).

    Example
    -------
    >>> t = torch.arange(6.0).reshape(2, 3)
    >>> in_memory_order(t.t()).shape, in_memory_order(t[:, :2])
    (torch.Size([2, 3]), None)
    """
    if t.is_contiguous():
        return t
    order = sorted(range(t.dim()), key=lambda i: t.stride(i), reverse=True)
    p = t.permute(order)
    return p if p.is_contiguous() else None


def min_max(t: Tensor) -> Tuple[Tensor, Tensor]:
    """``(t.min(), t.max())`` as 0-dim tensors, in whichever form is faster for ``t`` (NaN propagates).

    Example
    -------
    >>> lo, hi = min_max(torch.tensor([[3.0, -1.0], [0.5, 2.0]]).t())
    >>> float(lo), float(hi)
    (-1.0, 3.0)
    """
    if t.is_contiguous() and t.numel() >= _AMINMAX_FROM:
        return torch.aminmax(t)
    return t.amin(), t.amax()


def autocast_cpu() -> bool:
    """Whether CPU autocast is on."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # pragma: no cover - torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _rows(t: Tensor) -> Tensor:
    """``t`` as ``[rows, rest]`` (rows: its first dimension)."""
    return t.reshape(1, -1) if t.dim() < 2 else t.reshape(t.shape[0], -1)


def _buffer(scratch: Scratch, block: Tensor, dtype: torch.dtype, slot: int) -> Tensor:
    return scratch.get(block.numel(), dtype, block.device, slot).view(block.shape)


class RowStats(NamedTuple):
    """Column statistics of a ``[rows, neurons]`` tensor ``x`` (see :func:`row_stats`)."""

    mag_sum: Tensor  #: per neuron: sum over rows of |x|
    nonzero: Tensor  #: per neuron: number of nonzero x (as a float)
    amax: Tensor  #: 0-dim: max |x|
    amin: Optional[Tensor]  #: 0-dim: min x (when asked for)
    events: Optional[Tensor]  #: per neuron: sum over rows of round(|x| * scale) (when a scale is given)


def row_stats(flat: Tensor, scratch: Scratch, red: Optional[torch.dtype] = None, *,
              scale: Optional[Tensor] = None, want_min: bool = False) -> RowStats:
    """Per-neuron sums of ``|x|`` and of ``x != 0``, ``max |x|`` (and ``min x``), in a few passes.

    Parameters
    ----------
    flat
        ``[rows, neurons]``.
    red
        dtype of the per-neuron sums (``None``: ``flat``'s own; pass float64
        for half precision, whose sums round above 256).
    scale
        AvgPool divisors, ``[neurons]`` or laid out like ``flat``: also
        returns ``events``, the per-neuron sums of ``round(|x| * scale)``.
    want_min
        Also return ``min x`` (one more read pass).
    """
    with torch.no_grad():
        flat = flat.detach()
        n = flat.shape[1]
        walk = _Walk(flat)
        per_element = scale is not None and scale.dim() == 2
        ev_dtype = torch.promote_types(flat.dtype, torch.float32)
        mag = nz = top = low = ev = None
        for span in walk.spans:
            b = walk.block(flat, span)
            buf = _buffer(scratch, b, flat.dtype, 0)
            torch.abs(b, out=buf)
            mag = walk.column_sums(buf, span, mag, n, red)
            m = buf.amax()
            top = m if top is None else torch.maximum(top, m)
            if want_min:
                lo = b.amin()
                low = lo if low is None else torch.minimum(low, lo)
            if scale is not None:
                sc = walk.block(scale, span) if per_element else (scale if not walk.by_cols else scale[span[0]:span[1]])
                e = _buffer(scratch, b, ev_dtype, 1)
                torch.mul(buf, sc, out=e)
                e.round_()
                ev = walk.column_sums(e, span, ev, n, red)
            buf.sign_()  # |x| -> 1 where x != 0 (NaN stays NaN, as x.abs().sign() does)
            nz = walk.column_sums(buf, span, nz, n, red)
        return RowStats(mag, nz, top, low, ev)


class _AbsRowSums(torch.autograd.Function):
    """``row_stats`` with gradients for ``mag_sum`` and ``events``: ``d|x|/dx = sign(x)``, ``+1`` at 0."""

    @staticmethod
    def forward(ctx: Any, flat: Tensor, scale: Optional[Tensor], scratch: Scratch,
                red: Optional[torch.dtype]) -> Tuple[Tensor, ...]:
        # the sign of the gradient is needed only where x < 0; on CPU its min is read in backward
        # (no device there) to skip that pass for non-negative inputs (spikes, ReLU outputs)
        st = row_stats(flat, scratch, red, scale=scale, want_min=flat.device.type == "cpu")
        ctx.save_for_backward(flat, scale)
        ctx.amin = st.amin
        outs = (st.mag_sum, st.nonzero, st.amax) + ((st.events,) if scale is not None else ())
        ctx.mark_non_differentiable(st.nonzero, st.amax)
        return outs

    @staticmethod
    def backward(ctx: Any, g_mag: Optional[Tensor], _nz: Any, _amax: Any, *rest: Optional[Tensor]) -> Tuple[Any, ...]:
        flat, scale = ctx.saved_tensors
        g_ev = rest[0] if rest else None
        coef = g_mag
        if g_ev is not None:
            ev = g_ev * scale  # [neurons], or laid out like flat
            coef = ev if coef is None else coef + ev
        if coef is None:
            return None, None, None, None
        coef = coef.to(flat.dtype)
        if torch.is_grad_enabled():  # double backward: a differentiable expression
            coef = coef.expand(flat.shape)
            return torch.where(flat < 0, -coef, coef), None, None, None
        if ctx.amin is not None and bool(ctx.amin >= 0):  # CPU, no x < 0: sign(x) = 1 everywhere
            return coef.expand(flat.shape), None, None, None
        # coef * (1 - 2 [x < 0]) in float arithmetic (a boolean mask and where are several times slower)
        out = torch.empty(flat.shape, dtype=flat.dtype, device=flat.device)
        torch.lt(flat, 0, out=out)
        torch.addcmul(coef, out, coef, value=-2, out=out)
        return out, None, None, None


def abs_row_sums(flat: Tensor, scratch: Scratch, red: Optional[torch.dtype] = None,
                 scale: Optional[Tensor] = None) -> RowStats:
    """:func:`row_stats` whose ``mag_sum`` and ``events`` carry gradients back to ``flat`` when it requires them.

    The gradient of ``|x|`` is ``sign(x)`` with ``+1`` at 0 (so a loss on
    synops reaches silent neurons); ``events`` passes gradients straight
    through the rounding (``scale`` per element).

    Example
    -------
    >>> x = torch.tensor([[0.0, -1.0], [2.0, 0.0]], requires_grad=True)
    >>> abs_row_sums(x, Scratch()).mag_sum.sum().backward()
    >>> x.grad.tolist()
    [[1.0, -1.0], [1.0, 1.0]]
    """
    if not (flat.requires_grad and torch.is_grad_enabled()):
        return row_stats(flat, scratch, red, scale=scale)
    outs = _AbsRowSums.apply(flat, scale, scratch, red)
    return RowStats(outs[0], outs[1], outs[2], None, outs[3] if scale is not None else None)


#: elements per block of :func:`all_integer` on the CPU (its two passes stay in cache)
_INT_BLOCK = 1 << 17
#: values :func:`all_integer` reads first on the CPU: a non-integer among them settles it
_INT_WITNESS = 4096


def all_integer(t: Tensor, tol: float, scratch: Scratch, nonneg: bool = False) -> Tensor:
    """0-dim bool tensor: every value of ``t`` is within ``tol`` of an integer (``tol=0``: is an integer).

    ``nonneg``: the caller knows every value is >= 0 (then ``frac`` is too: no ``abs`` pass).

    On the CPU the first :data:`_INT_WITNESS` values are read first (real-valued activations show a
    non-integer there), then blocks of ``|frac(t)|`` in one reused buffer, each read by its max. Other
    devices: one pass, no host sync.
    """
    if t.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=t.device)
    with torch.no_grad():
        flat = t.detach().reshape(-1)
        n = flat.numel()
        cpu = flat.device.type == "cpu"
        head = flat[:_INT_WITNESS] if cpu else flat
        f = torch.frac(head)
        ok = (f if nonneg else f.abs_()).amax() <= tol  # (NaN and inf: frac is NaN, not <= tol)
        if not cpu or n <= _INT_WITNESS or not bool(ok):
            return ok
        buf = scratch.get(min(n, _INT_BLOCK), flat.dtype, flat.device, 0)
        top = None
        for s in range(_INT_WITNESS, n, _INT_BLOCK):
            b = flat[s:s + _INT_BLOCK]
            out = buf[:b.numel()]
            torch.frac(b, out=out)
            m = (out if nonneg else out.abs_()).amax()
            top = m if top is None else torch.maximum(top, m)
        return top <= tol


def count_nonzero(t: Tensor, dtype: torch.dtype, scratch: Scratch, minus: Optional[Tensor] = None) -> Tensor:
    """Number of nonzero (or NaN) elements of ``t`` (with ``minus``: of nonzero or NaN elements of ``t - minus``,
    NeuroBench's membrane updates), as a 0-dim ``dtype`` tensor.

    Exact (per-column float sums of a block stay below 2**24) and sync-free.
    """
    if not t.is_floating_point() or (minus is not None and (minus.shape != t.shape or not minus.is_floating_point())):
        return torch.count_nonzero(t if minus is None else t - minus).to(dtype)
    if t.numel() == 0:
        return torch.zeros((), dtype=dtype, device=t.device)
    with torch.no_grad():
        total = torch.zeros((), dtype=dtype, device=t.device)
        flat = _rows(t.detach())
        fm = None if minus is None else _rows(minus.detach())
        walk = _Walk(flat)
        for span in walk.spans:
            b = walk.block(flat, span)
            u = _buffer(scratch, b, torch.bool, 2)
            if fm is not None:
                # NeuroBench's count_nonzero(pre - post): the difference, cast to bool (3x faster here than
                # torch.ne, whose bool output is not vectorised; inf - inf is NaN, counted, as NeuroBench counts it)
                d = _buffer(scratch, b, b.dtype, 4)
                torch.sub(b, walk.block(fm, span), out=d)
                u.copy_(d)
            else:
                u.copy_(b)  # nonzero (or NaN) -> True: a cast, faster than ``b != 0``
            total += count_true(u).to(dtype)  # (its bytes counted as int64 lanes)
        return total


#: masks of at most this many values are counted by one ``count_nonzero`` (the lanes pay off on larger ones)
COUNT_DIRECT = 1 << 16
#: bytes of a bool mask summed as the lanes of one ``int64`` word before a lane could pass 255
_LANE_WORDS = 255


def same_bytes(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` (same shape and dtype) hold the same bytes, element by element.

    Contiguous CPU tensors laid out in whole 8-byte words are compared as ``int64`` words, about eight times
    faster than :func:`torch.equal` there; others by :func:`torch.equal` (values: ``-0.0`` equals ``0.0``, a NaN
    equals nothing). For bool masks the two answers are the same; for floats, equal bytes mean equal values
    but for NaN (the same NaN: the same counts), and ``-0.0`` against ``0.0`` is no match.

    Example
    -------
    >>> a = torch.tensor([0.0, 1.0])
    >>> same_bytes(a, a.clone()), same_bytes(a, torch.tensor([0.0, 2.0])), same_bytes(a, torch.tensor([-0.0, 1.0]))
    (True, False, False)
    """
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if a.is_neg() or b.is_neg() or a.is_conj() or b.is_conj():  # (a lazy negation or conjugation: no bytes to view)
        return torch.equal(a, b)
    size = a.element_size()
    if (a.numel() and a.device.type == "cpu" and (a.numel() * size) % 8 == 0 and a.is_contiguous() and b.is_contiguous()
            and (a.storage_offset() * size) % 8 == 0 and (b.storage_offset() * size) % 8 == 0):
        if a.dim() and (a.shape[-1] * size) % 8 == 0:  # (a view of the words as they lie: no reshape)
            return torch.equal(a.view(torch.int64), b.view(torch.int64))
        return torch.equal(a.reshape(-1).view(torch.int64), b.reshape(-1).view(torch.int64))
    if (a.is_floating_point() or a.is_complex()) and a.numel():  # (bytes, not values, as above)
        return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))
    return torch.equal(a, b)


def count_true(mask: Tensor) -> Tensor:
    """The number of ``True`` values of a bool tensor, exact, as a 0-dim ``int64`` (no host sync).

    The mask's bytes are read as ``int64`` words and 255 consecutive words summed (each byte lane then holds
    at most 255: no carry reaches its neighbour), so the bytes themselves are summed at 1/255 of their number:
    about 20x faster than ``count_nonzero`` on the CPU.

    Example
    -------
    >>> int(count_true(torch.arange(5000) % 3 == 0))
    1667
    """
    flat = mask.reshape(-1)
    if flat.device.type != "cpu":  # one kernel there (the lanes save time on the CPU, not launches)
        return flat.sum(dtype=torch.int64)
    if flat.numel() <= COUNT_DIRECT:  # (one op: faster than the lanes' few ops on small masks)
        return torch.count_nonzero(flat)
    flat = flat.contiguous()
    full = flat.numel() // (8 * _LANE_WORDS) * (8 * _LANE_WORDS)
    total = flat[full:].sum(dtype=torch.int64)
    if full and flat.storage_offset() % 8 == 0:
        words = flat[:full].view(torch.int64).view(-1, _LANE_WORDS).sum(1)
        return total + words.view(torch.uint8).sum(dtype=torch.int64)
    return flat.sum(dtype=torch.int64) if full else total


def column_nonzeros(x: Tensor) -> Tensor:
    """The number of nonzero values in each column of ``x`` (``[..., rows, n]`` -> ``[..., n]``), exact; NaN
    counts as nonzero.

    One ``bool`` pass; then the bytes of the mask are summed eight columns at a time as the lanes of an
    ``int64``, 255 rows at a time (a lane then holds at most 255: no carry reaches its neighbour), which
    reads the mask once more at a fraction of the cost of a per-column sum.

    Example
    -------
    >>> column_nonzeros(torch.tensor([[0.0, 2.0, -1.0], [0.0, 0.5, 0.0]])).tolist()
    [0, 2, 1]
    """
    mask = x.bool()
    rows, n = mask.shape[-2:]
    if not (rows and n % 8 == 0 and mask.is_contiguous()):
        return mask.sum(-2, dtype=torch.uint8 if rows <= 255 else torch.int32)
    lanes = mask.view(torch.int64)
    if rows <= 255:
        return lanes.sum(-2).view(torch.uint8)
    total = torch.zeros(mask.shape[:-2] + (n,), dtype=torch.int32, device=mask.device)
    for r in range(0, rows, 255):  # blocks of 255 rows: no lane overflows
        total += lanes[..., r:r + 255, :].sum(-2).view(torch.uint8)
    return total


def count_either(u: Tensor, v: Tensor) -> Tensor:
    """The positions where mask ``u`` or mask ``v`` is set (written into ``u``: eight positions per ``int64``
    ``or`` when they fill whole words), counted by :func:`count_true`."""
    if (u.numel() % 8 == 0 and u.is_contiguous() and v.is_contiguous() and u.storage_offset() % 8 == 0
            and v.storage_offset() % 8 == 0):
        u.view(-1).view(torch.int64).bitwise_or_(v.view(-1).view(torch.int64))
    else:
        torch.logical_or(u, v, out=u)
    return count_true(u)


def neuron_counts(flat: Tensor, other: Optional[Tensor], dtype: torch.dtype, red: Optional[torch.dtype],
                  scratch: Scratch, per_neuron: bool = True,
                  binary: bool = False) -> Tuple[Optional[Tensor], Tensor, Optional[Tensor]]:
    """A neuron layer's output statistics in one walk: per-neuron sums, nonzeros and (with ``other``) events.

    Parameters
    ----------
    flat
        The output as ``[rows, neurons]``.
    other
        The input, same shape, or ``None``.
    dtype, red
        dtype of the results, and of the per-neuron sums over rows (``None``: ``flat``'s own).
    per_neuron
        Compute the per-neuron sums (else ``None`` is returned for them).
    binary
        ``flat`` holds only 0 and 1 (a neuron whose spike function makes them): its nonzeros are its sum, and
        without ``other`` no mask of it is made.

    Returns
    -------
    ``(per_neuron, nonzero, events)``: sums over rows (``[neurons]``), the number of nonzero
    outputs, and the number of positions where the input or the output is nonzero (``None``
    without ``other``); exact and sync-free.
    """
    with torch.no_grad():
        flat = flat.detach()
        other = None if other is None else other.detach()
        nz = torch.zeros((), dtype=dtype, device=flat.device)
        ev = None if other is None else torch.zeros((), dtype=dtype, device=flat.device)
        per = None
        if flat.device.type == "cpu" and flat.is_contiguous() and (other is None or other.is_contiguous()):
            # whole-tensor passes (a bool mask is a quarter of a float32 block: no blocks needed): one product
            # with ones, a cast to bool and its bytes counted as int64 lanes
            if per_neuron:
                per = _col_sums(flat, red)
            if binary and per_neuron and other is None:  # (0 and 1: the nonzeros are the spikes, exact in float32
                nz += per.sum(dtype=dtype)               # per neuron below 2^24 rows)
                return per.to(dtype), nz, ev
            u = flat.bool()
            nz += count_true(u).to(dtype)
            if other is not None:
                ev += count_either(u, other.bool()).to(dtype)
            return (per.to(dtype) if per_neuron else None), nz, ev
        walk = _Walk(flat)
        for span in walk.spans:
            b = walk.block(flat, span)
            if per_neuron:
                per = walk.column_sums(b, span, per, flat.shape[1], red)
            u = _buffer(scratch, b, torch.bool, 2)
            u.copy_(b)  # nonzero (or NaN) -> True: a cast, several times faster than ``b != 0``
            nz += count_true(u).to(dtype)
            if other is not None:
                v = _buffer(scratch, b, torch.bool, 3)
                v.copy_(walk.block(other, span))
                ev += count_either(u, v).to(dtype)
        return (per.to(dtype) if per_neuron else None), nz, ev
