"""The one per-call record of a weight op, and its reduction when the counts are read.

Both ways into the counter -- a module's forward hook (``nn.Linear``,
``nn.Conv2d``, ...) and the function mode (``F.linear``, ``F.conv2d``, ... inside
op-scoped modules) -- turn a counted call into the same :class:`Call`: the
input as used, the map entry of its weight and the weight as used (with its nonzero pattern, taken once per
weight and version in a batch). Recording a repeated call launches no tensor op. :func:`reduce_calls` turns any number of calls into the
counts of :class:`Sums` with one rule, so the two ways cannot drift apart:

* calls that share a map and a row count are stacked and reduced together:
  ``|x|`` and ``x != 0`` summed over rows (float32 while exact; float64 when a
  call has 2^22 rows or more, half-precision inputs, a per-neuron sum that
  reaches 2^24, or 4096 rows or more of values other than spikes), then one matrix
  product with the float64 fan-out map per group gives every call's synops and
  effective ops;
* a call is *spiking* (its effective ops are ACs) when every value is in
  {-1, 0, 1}: ``max |x| <= 1``, ``sum |x| == number of nonzeros`` (a quick
  rejection) and every value an integer (the exact test: a float32 sum of many
  spikes can round a value such as 0.9999 away); a call whose
  values are all integers (spike counts, multi-bit spikes) sends ``|x|`` events
  per input value, each an accumulate: its ACs are its synops (``events=False``
  counts it NeuroBench's way instead: nonzero inputs x fan-out, as MACs); any
  other call's effective ops are MACs;
* an input read from an average-pool output of integers (spike counts) is
  counted as spike events (``round(|x| * divisor)``), one call at a time.

The synops keep the autograd graph to every recorded input (:func:`maps.magnitude`).
"""

from __future__ import annotations

import math
import struct
import weakref
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .hooks import own_ops
from .maps import LayerMaps, MapCache, magnitude
from .reductions import (BLOCK, Scratch, abs_row_sums, all_integer, autocast_cpu, column_nonzeros, min_max,
                         same_bytes)

__all__ = ["Call", "LastInput", "WholeSpikes", "Sums", "reduce_calls", "reduce_layers", "reduce_now", "reducible_now",
           "view_lead", "whole_range"]

#: rows of one call from which per-neuron sums are taken in float64 (float32 sums are exact below 2^24)
WIDE_ROWS = 1 << 22

#: work buffers of the pooled reductions, reused between reads (bounded: blocks of ``reductions.BLOCK`` values)
_SCRATCH = Scratch()


def version_of(t: Tensor) -> int:
    """``t``'s in-place version counter, or -1 for an inference tensor (made under ``torch.inference_mode``),
    which has none: its in-place changes cannot be seen.

    Example
    -------
    >>> version_of(torch.zeros(2).add_(1)), version_of(torch.inference_mode()(torch.zeros)(2))
    (1, -1)
    """
    return -1 if t.is_inference() else t._version


class Call(NamedTuple):
    """One counted call of a weight op (nothing is computed when it is recorded).

    ``x`` is the input as the op read it (any leading dims; its trailing
    ``n_el`` values are one sample), ``entry`` the cached map looked up for it,
    ``weight`` the weight as used (checked against the map when reduced),
    ``cache`` the cache that owns the entry, ``scale`` / ``integer`` the
    average-pool correction (``None`` when the input is no pool output) and
    ``version`` the input's version counter at the call (an input changed in
    place before the read is reported).
    """

    x: Tensor
    rows: int
    entry: LayerMaps
    weight: Optional[Tensor]
    cache: Optional[MapCache]
    scale: Optional[Tensor] = None
    integer: Optional[Tensor] = None
    version: int = 0
    events: bool = True  # integer inputs (spike counts) are that many accumulate events; False: NeuroBench's MACs
    per_row: bool = False  # also keep the synops of each row (per-sample distributions)
    encoding: str = "unary"  # how a count is sent: "unary" (k events), "bitplane" (one event per set bit of k)
    wversion: int = -1  # the weight's version counter at the call (a repeated call: at its layer's first one in the
    # batch); -1: not known
    pattern: Optional[Tensor] = None  # the weight's nonzero pattern at the call (bool), when taken: the map is then
    # checked against it, not against the weight's values at the read (an optimizer step or a ``.data`` edit made
    # after the forward, which moves no version counter, changes nothing of the call's count)


class Sums(NamedTuple):
    """Counts of some calls of one layer: 0-dim tensors in the map's dtype; ``synops`` differentiable."""

    synops: Tensor
    dense: Tensor
    eff_acs: Tensor
    eff_macs: Tensor
    input_sum: Tensor
    input_nonzero: Tensor
    maps: LayerMaps  # the map of the last call (fan-out statistics)
    spiking_calls: Tensor  # number of calls whose input was all in {-1, 0, 1}
    effective: Tensor  # nonzero input x nonzero weight taps (however they are classed: ACs, events or MACs)
    changed: Tuple[int, ...]  # indices of calls whose input was modified in place after the call
    rows: Tuple[Tuple[int, Tensor], ...] = ()  # (index of the call, its per-row synops [rows]) for per_row calls


def bitplane_events(mag: Tensor) -> Tensor:
    """Events of bit-plane coded counts: one per set bit of ``round(|x|)`` (``5 = 101b``: 2 events, weighted
    4 and 1 at the synapse); the gradient is that of ``|x|`` (straight through)."""
    with torch.no_grad():
        v = mag.detach().round().to(torch.int64)
        count = torch.zeros_like(v)
        for bit in range(32):
            count += (v >> bit) & 1
    return count.to(mag.dtype) + (mag - mag.detach())


class _RowSums(torch.autograd.Function):
    """``x.sum(-2)`` as one matrix product with ones; its gradient is the incoming one broadcast over the rows
    (a stride-0 view: nothing of the input's size is written)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.rows = x.shape[-2]
        return torch.matmul(x.new_ones(*x.shape[:-2], 1, x.shape[-2]), x).squeeze(-2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.unsqueeze(-2).expand(*grad.shape[:-1], ctx.rows, grad.shape[-1])


def _sum_rows(x: Tensor) -> Tensor:
    """``x.sum(-2)`` (``[..., rows, n]`` -> ``[..., n]``) as one product with ones; with a graph to ``x`` when it
    requires one (:class:`_RowSums`: a broadcast gradient, nothing of the input's size written in backward)."""
    if x.requires_grad and torch.is_grad_enabled():
        return _RowSums.apply(x)
    with torch.no_grad():
        return torch.matmul(x.new_ones(*x.shape[:-2], 1, x.shape[-2]), x.detach()).squeeze(-2)


#: values in a group from which the non-negative fast path is taken (below, a few more ops cost more than passes)
_FAST_GROUP = 1 << 15
#: values in one call from which the non-negative fast path reduces each call on its own (no stacked copy)
_BIG_CALL = 1 << 16


class _Inputs(NamedTuple):
    """Sums over the rows of some calls' inputs (one row per distinct input)."""

    magc: Tensor  # [inputs, n_el] sum of |x| per input neuron (differentiable)
    nzc: Tensor  # [inputs, n_el] nonzeros per input neuron
    mag_tot: Tensor  # [inputs] in the map's dtype
    nz_tot: Tensor
    amax: Tensor
    integer: Tensor  # [inputs] bool: every value an integer
    mag: Optional[Tensor] = None  # [inputs, rows, n_el] |x| (the general path only)


#: values read first when a CPU tensor's values are tested for being integers (a non-integer among them settles it)
_WITNESS = 4096


def all_integer_values(t: Tensor, nonneg: bool = False) -> Tensor:
    """0-dim bool: every value of ``t`` is an integer (exact). On the CPU the first 4096 values are read first
    (real-valued activations show a non-integer there, and the whole tensor is not read), then ``frac(t)`` in
    cache-sized blocks (:func:`synopsloss.reductions.all_integer`).

    Example
    -------
    >>> bool(all_integer_values(torch.tensor([0.0, 2.0, 3.0]))), bool(all_integer_values(torch.tensor([1.0, 0.5])))
    (True, False)
    """
    if not t.is_floating_point():
        return torch.ones((), dtype=torch.bool, device=t.device)
    return all_integer(t, 0.0, _SCRATCH, nonneg)


def _nonnegative_sums(xs: List[Tensor], rows: int, n_el: int, acc: torch.dtype) -> Optional[_Inputs]:
    """:func:`_input_sums` for small CPU inputs whose values are all >= 0 (spikes, ReLU activations); ``None``
    otherwise.

    ``|x| = x`` there and the gradient of the magnitude (+1 at and above 0) is 1, so the synops need no ``abs``
    and no sign mask in backward: the stacked inputs are read by their min / max, one product with ones and
    :func:`column_nonzeros`. The spiking and integer flags follow the general rule.
    """
    n = len(xs)
    flat = [t.reshape(rows, n_el) for t in xs]
    src = torch.stack(flat) if n > 1 else flat[0].unsqueeze(0)  # one copy, read with and without its graph
    with torch.no_grad():
        stacked = src.detach()
        lo, hi = torch.aminmax(stacked.reshape(n, -1), dim=1)
        if not bool((lo >= 0).all()):  # (NaN fails too: the general path reports it)
            return None
        nzc = column_nonzeros(stacked)
    magc = _sum_rows(src)
    if not _exact_enough(magc, rows, float(hi.max())):
        magc = src.sum(1, dtype=acc)
    with torch.no_grad():
        mag_tot = magc.detach().sum(1, dtype=acc)
        nz_tot = nzc.sum(1, dtype=acc)
        amax = hi.to(acc)
        # every value an integer (>= 0 here: frac needs no abs). The first values of each input first: real-valued
        # activations show a fraction there, and only inputs of integers (spikes, counts) are read whole
        values = stacked.reshape(n, -1)
        integer = torch.frac(values[:, :_WITNESS]).amax(1) == 0
        if values.shape[1] > _WITNESS and bool(integer.any()):
            integer = torch.frac(values).amax(1) == 0
        return _Inputs(magc, nzc, mag_tot, nz_tot, amax, integer)


def _input_sums(xs: List[Tensor], rows: int, n_el: int, acc: torch.dtype, encoding: str,
                keep_mag: bool = False) -> _Inputs:
    """Sums over the rows of each input: |x| (differentiable), nonzeros, totals, max |x| and the integer flag."""
    if (xs[0].device.type == "cpu" and encoding == "unary" and not keep_mag and rows < WIDE_ROWS
            and _FAST_GROUP <= len(xs) * rows * n_el and rows * n_el < _BIG_CALL
            and xs[0].dtype in (torch.float32, torch.float64) and not autocast_cpu()):
        fast = _nonnegative_sums(xs, rows, n_el, acc)
        if fast is not None:
            return fast
    x = xs[0].reshape(1, rows, n_el) if len(xs) == 1 else torch.stack([t.reshape(rows, n_el) for t in xs])
    red = acc if (x.element_size() < 4 or rows >= WIDE_ROWS) else None
    mag = magnitude(x)
    if encoding == "bitplane":
        mag = bitplane_events(mag)
    magc = mag.sum(1, dtype=red)  # [inputs, n_el]
    if red is None and not _exact_enough(magc, rows, math.inf):
        magc = mag.sum(1, dtype=acc)
    with torch.no_grad():
        nzc = column_nonzeros(x.detach())
        mag_tot = magc.detach().sum(1, dtype=acc)
        nz_tot = nzc.sum(1, dtype=acc)
        flat = mag.detach().reshape(len(xs), -1)
        amax = flat.amax(1).to(acc) if x.numel() else mag_tot.new_zeros(len(xs))
        if not x.numel():
            integer = torch.ones_like(amax, dtype=torch.bool)
        elif flat.device.type == "cpu" and flat.shape[1] > _WITNESS:  # large calls: a witness may settle each
            integer = torch.stack([all_integer_values(f) for f in flat.unbind(0)])
        else:
            integer = (flat == flat.round()).all(1)
    return _Inputs(magc, nzc, mag_tot, nz_tot, amax, integer, mag if keep_mag else None)


def _spike_flags(amax: Tensor, mag_tot: Tensor, nz_tot: Tensor, integer: Tensor) -> Tensor:
    """Whether each input's values are all in {-1, 0, 1}: ``max |x| <= 1`` and every value an integer (exact).

    ``sum |x| == nonzeros`` is implied; it is kept as the test that rejects most real-valued inputs, but it
    alone is not exact: a float32 column sum of many spikes rounds a value such as 0.9999 to 1.
    """
    return (amax <= 1) & (mag_tot == nz_tot) & integer


def _big_path(x: Tensor, rows: int, n_el: int, encoding: str) -> bool:
    """Calls of this shape are reduced one by one on the CPU (each input is large; nothing is stacked)."""
    return (x.device.type == "cpu" and encoding == "unary" and rows < WIDE_ROWS
            and _BIG_CALL <= rows * n_el < (1 << 24) and x.dtype in (torch.float32, torch.float64)
            and not autocast_cpu())


#: calls x neurons of a group up to which its per-neuron float64 vectors are stacked and reduced together (they
#: stay in cache); above, each call takes its own dot products
_STACK_VECTORS = 1 << 18


#: a float32 per-column sum at or above this may have rounded (sums of integers are exact below 2^24)
_F32_EXACT = float(1 << 24)
#: rows from which per-column sums of values other than spikes are taken in float64 (float32 sums of more rows
#: drift by more than about 1e-6)
_F64_ROWS = 1 << 12


def _exact_enough(colsum: Tensor, rows: int, amax: float) -> bool:
    """Whether float32 per-column sums ``colsum`` of ``rows`` rows (of values up to ``amax``) are exact (integers
    below 2^24) or within float32 rounding of few terms; else they are taken again in float64."""
    if colsum.dtype != torch.float32 or not colsum.numel():
        return True
    if rows >= _F64_ROWS and not amax <= 1:
        return False
    if rows * amax < _F32_EXACT:  # (spikes below 2^24 rows: no sum can reach it, nothing to read)
        return True
    return float(colsum.detach().amax()) < _F32_EXACT


#: float32 bit patterns of 1.0 and of +inf (a non-negative float32 above the latter is NaN)
_ONE_BITS, _INF_BITS = 0x3F800000, 0x7F800000


def _bits_value(bits: int) -> float:
    """The float32 whose bit pattern is ``bits`` (NaN for a NaN pattern)."""
    return struct.unpack("<f", struct.pack("<i", bits))[0]


def value_range(det: Tensor) -> Tuple[float, float]:
    """``(min, max)`` of a float CPU tensor as Python floats (NaN when it holds one).

    A contiguous float32 tensor is read as its ``int32`` bit patterns first, about three times faster than a
    float ``aminmax`` here: when no value has its sign bit set, integer order is float order (a NaN pattern
    lies above +inf), so the two patterns are the min and max. Otherwise (a value below 0, or ``-0.0``) it is
    read again as floats.

    Example
    -------
    >>> value_range(torch.tensor([0.0, 1.0, 0.25])), value_range(torch.tensor([2.0, -3.0]))
    ((0.0, 1.0), (-3.0, 2.0))
    """
    if det.dtype == torch.float32 and det.is_contiguous() and det.numel():
        lo_b, hi_b = (int(v) for v in torch.aminmax(det.view(torch.int32)))
        if lo_b >= 0:
            return _bits_value(lo_b), (math.nan if hi_b > _INF_BITS else _bits_value(hi_b))
    lo, hi = min_max(det)
    return float(lo), float(hi)


def whole_range(t: Tensor, binary: bool) -> bool:
    """Whether ``t``, the output of a neuron whose spikes are whole numbers by construction, has the range of them:
    min 0 and a max of 0 or 1 (``binary``) or a whole max (one pass, :func:`value_range`). An edit that no version
    counter sees, through ``.data`` or numpy, shows there unless it keeps both ends.

    Example
    -------
    >>> whole_range(torch.tensor([0.0, 1.0]), True), whole_range(torch.tensor([0.0, 1.5]), False)
    (True, False)
    """
    if not t.numel():
        return False
    with torch.no_grad():
        lo, hi = value_range(t.detach())
    return lo == 0.0 and (hi in (0.0, 1.0) if binary else hi >= 0.0 and float(hi).is_integer())


def _head(flat: Tensor) -> Tensor:
    """The values read first from a ``[rows, n]`` input: its first :data:`_WITNESS` in memory when it is
    contiguous, else its first row's (no copy either way). The read of a call made without gradients and the read
    of a recorded call take the same ones, so that both choose the same arithmetic."""
    return flat.view(-1)[:_WITNESS] if flat.is_contiguous() else flat[0, :_WITNESS]


def _head_shows_reals(flat: Tensor) -> bool:
    """Whether the first values of a large ``[rows, n]`` tensor (:func:`_head`) hold a non-integer (or NaN): then it
    is no spikes, and no pass over all of it is needed to say so (a real-valued activation shows one at once)."""
    return flat.numel() > _WITNESS and float(torch.frac(_head(flat)).abs().amax()) != 0


def _binary_sums(flat: Tensor) -> Optional[Tensor]:
    """The column sums of a contiguous float32 CPU input ``[rows, n]`` (no graph) when every value is 0 or 1, else
    ``None``: a call of {0, 1} spikes reduced at once in a few tensor ops.

    Its ``int32`` bit patterns' min and max say whether every value lies in [+0, 1] (:func:`value_range`); then
    ``frac`` is 0 everywhere exactly when each is 0 or 1 (exact), and one product with ones gives the column
    sums, which are then also the column nonzeros (exact below 2^24 rows).

    Example
    -------
    >>> _binary_sums(torch.tensor([[0.0, 1.0], [1.0, 1.0]])).tolist(), _binary_sums(torch.tensor([[0.5, 1.0]]))
    ([1.0, 2.0], None)
    """
    if flat.dtype != torch.float32 or not flat.is_contiguous() or not flat.numel() or flat.shape[0] >= WIDE_ROWS:
        return None
    n = flat.numel()
    lo_b, hi_b = torch.aminmax(flat.view(torch.int32))
    if int(lo_b) < 0 or int(hi_b) > _ONE_BITS:
        return None
    if n <= BLOCK:  # (frac into a reused buffer: no allocation of the input's size)
        integer = float(torch.frac(flat.view(-1), out=_SCRATCH.get(n, flat.dtype, flat.device)).amax()) == 0
    else:
        integer = bool(all_integer_values(flat, nonneg=True))
    if not integer:
        return None
    return torch.matmul(_SCRATCH.ones(flat.shape[0], flat.dtype, flat.device), flat)


def _large_sums(flat: Tensor, reals: bool = False,
                binary: bool = False) -> Tuple[Tensor, Tensor, float, bool, Optional[bool]]:
    """One large CPU input ``[rows, n]``: ``|x|`` summed over the rows (with a graph to ``flat`` when it requires
    one), its nonzeros per column, ``max |x|`` (``inf`` when its first values show it is no spikes), whether
    a value is below 0 (or NaN), and whether every value is an integer (``None``: not read).

    A value among the first :data:`_WITNESS` outside {-1, 0, 1} settles that the input is no spikes: then only
    its min is read (no ``abs`` when it is >= 0, whose gradient is 1), else its min and max
    (:func:`value_range`); then one product with ones. An input in [0, 1] is then tested for integers (exact:
    :func:`all_integer_values`); when it holds only 0 and 1 its column sums are its nonzeros, and no
    :func:`column_nonzeros` pass is made. ``binary``: the input is a whole-spike neuron's unchanged output of 0
    and 1 (:class:`WholeSpikes`): in the range [0, 1] it needs no integer pass (as :func:`reduce_now`).
    """
    det = flat.detach()
    with torch.no_grad():
        head = _head(det)
        if reals or bool(((head.abs() - 1) * head).any()):  # (NaN too: its min is NaN, and the read reports it)
            lo, amax = float(det.amin()), math.inf
        else:
            lo, hi = value_range(det)
            amax = math.nan if lo != lo or hi != hi else max(-lo, hi)
    signed = not lo >= 0  # (NaN is signed: its magnitude is NaN)
    src = magnitude(flat) if signed else flat
    colsum = _sum_rows(src)
    if not _exact_enough(colsum, flat.shape[0], amax):  # large counts, or many rows of real values
        colsum = src.sum(0, dtype=torch.float64)
    with torch.no_grad():
        integer = None
        if not signed and amax <= 1:
            # (a whole-spike neuron's 0/1 output with that range: no integer pass, as whole_range says)
            integer = (binary and lo == 0.0 and amax in (0.0, 1.0)) or bool(all_integer_values(det, nonneg=True))
            if integer:  # only 0 and 1: each column's sum is its number of nonzeros (exact below 2^24 rows)
                return colsum, colsum.detach(), amax, signed, integer
        return colsum, column_nonzeros(det), amax, signed, integer


def _big_group_sums(xs: List[Tensor], maps: List[LayerMaps], rows: int, n_el: int,
                    whole: Optional[Callable[[Tensor], Optional[str]]] = None) -> Tuple[Tensor, ...]:
    """:func:`_group_sums` for large CPU inputs: each input is read on its own (nothing of its size is stacked).

    Each distinct input is read by :func:`_large_sums` (its min, or min and max; one product with ones;
    :func:`column_nonzeros`), as a call reduced at once (:func:`reduce_now`) is. The per-neuron vectors
    then take float64 dot products with the maps: stacked when the group's vectors are small, else call by call
    (so that each stays in cache). The spiking test of all inputs is one host read (CPU).
    """
    acc = maps[0].effective.dtype
    pos: Dict[int, int] = {}
    inv = [pos.setdefault(id(t), len(pos)) for t in xs]  # the calls' inputs are alive: ids are identities
    first = list({id(t): t for t in xs}.values())
    dets: List[Tensor] = []
    colsums: List[Tensor] = []
    nzs: List[Tensor] = []
    amaxes: List[float] = []
    signs: List[bool] = []
    knowns: List[Optional[bool]] = []  # the integer test of each input, when _large_sums made it
    for t in first:
        flat = t.reshape(rows, n_el)
        colsum, nz, amax, signed, known = _large_sums(flat, binary=whole is not None and whole(t) == "binary")
        knowns.append(known)
        amaxes.append(amax)
        signs.append(signed)
        colsums.append(colsum)
        nzs.append(nz)
        dets.append(flat.detach())
    one = len(xs) == 1
    dense = maps[0].dense_total.reshape(1) if one else torch.stack([m.dense_total for m in maps])
    ii = torch.tensor(inv) if len(first) != len(xs) else None  # each call's input among the distinct ones
    if len(first) * n_el <= _STACK_VECTORS:
        mag64 = (colsums[0].unsqueeze(0) if len(first) == 1 else torch.stack(colsums)).to(acc)
        with torch.no_grad():
            nz64 = (nzs[0].unsqueeze(0) if len(first) == 1 else torch.stack(nzs)).to(acc)
            mag_tot, nz_tot = mag64.detach().sum(1), nz64.sum(1)
        if ii is not None:
            mag64, nz64 = mag64.index_select(0, ii), nz64.index_select(0, ii)
        emap = maps[0].effective.unsqueeze(0) if one else torch.stack([m.effective for m in maps])
        synops = torch.linalg.vecdot(mag64, emap)
        with torch.no_grad():
            eff = torch.linalg.vecdot(nz64, emap)
    else:
        vecs = [(c.to(acc), z.to(acc)) for c, z in zip(colsums, nzs)]
        with torch.no_grad():
            mag_tot = torch.stack([m.detach().sum() for m, _ in vecs])
            nz_tot = torch.stack([z.sum() for _, z in vecs])
        synops = torch.stack([torch.dot(vecs[i][0], ent.effective) for i, ent in zip(inv, maps)])
        with torch.no_grad():
            eff = torch.stack([torch.dot(vecs[i][1], ent.effective) for i, ent in zip(inv, maps)])
    with torch.no_grad():
        amax = torch.tensor(amaxes, dtype=acc)
        integer = torch.stack([all_integer_values(d, not sg) if k is None else torch.tensor(k)
                               for d, sg, k in zip(dets, signs, knowns)])  # (exact)
        if ii is not None:
            mag_tot, nz_tot, amax, integer = (v.index_select(0, ii) for v in (mag_tot, nz_tot, amax, integer))
        spiking = _spike_flags(amax, mag_tot, nz_tot, integer)
    return synops, eff, mag_tot, nz_tot, amax, spiking, dense * float(rows), integer, None


def _group_sums(xs: List[Tensor], maps: List[LayerMaps], rows: int, n_el: int,
                want_rows: bool = False, encoding: str = "unary",
                whole: Optional[Callable[[Tensor], Optional[str]]] = None) -> Tuple[Tensor, ...]:
    """Per-call synops, effective ops, |x| totals, nonzeros, amax and dense taps for calls of one shape.

    An input read by several calls (the same data at every time step, or q / k / v projections of one tensor)
    is reduced once; each call then takes its own map.
    """
    if not want_rows and _big_path(xs[0], rows, n_el, encoding):
        return _big_group_sums(xs, maps, rows, n_el, whole)
    acc = maps[0].effective.dtype
    one = len(xs) == 1
    emap = maps[0].effective.unsqueeze(0) if one else torch.stack([m.effective for m in maps])
    dense = maps[0].dense_total.reshape(1) if one else torch.stack([m.dense_total for m in maps])
    pos: Dict[int, int] = {}
    inv = [pos.setdefault(id(t), len(pos)) for t in xs]  # the calls' inputs are alive: ids are identities
    if want_rows or len(pos) == len(xs):
        s = _input_sums(xs, rows, n_el, acc, encoding, keep_mag=want_rows)
    else:
        first = list({id(t): t for t in xs}.values())
        s = _input_sums(first, rows, n_el, acc, encoding)
        ii = torch.tensor(inv, device=s.magc.device)
        s = _Inputs(*(t.index_select(0, ii) for t in s[:6]))
    synops = torch.linalg.vecdot(s.magc.to(acc), emap)  # [calls]
    per_row = None
    if want_rows:  # [calls, rows] in float32 at least (quantiles of per-sample synops, differentiable)
        m = s.mag if s.mag.element_size() >= 4 else s.mag.float()
        per_row = torch.bmm(m, emap.to(m.dtype).unsqueeze(2)).squeeze(2)
    with torch.no_grad():
        eff = torch.linalg.vecdot(s.nzc.to(acc), emap)
        spiking = _spike_flags(s.amax, s.mag_tot, s.nz_tot, s.integer)
    return synops, eff, s.mag_tot, s.nz_tot, s.amax, spiking, dense * float(rows), s.integer, per_row


#: ``rows * (rows + 1) * max|x| * max divisor`` below which a pooled call's events are taken from its column
#: sums (float32 rounding then moves each column's sum by less than 1/4: its rounding is the sum of the rounded)
_POOLED_EXACT = float(1 << 22)


def _pooled_fast(call: Call, flat: Tensor, ent: LayerMaps) -> Optional[Tuple[Tensor, ...]]:
    """:func:`_pooled_sums` for a non-negative CPU input with one divisor per neuron, or ``None``.

    The pool's input held exact integers (or the events are not counted), so each pooled value times its
    divisor is an integer up to float rounding, and under :data:`_POOLED_EXACT` the rounded column sum equals
    the sum of the rounded values: the events need no pass of their own. Reads as a large call does (min /
    max, one product with ones, :func:`column_nonzeros`).
    """
    rows = call.rows
    if (flat.device.type != "cpu" or call.per_row or call.scale.dim() != 1 or rows >= WIDE_ROWS
            or flat.dtype not in (torch.float32, torch.float64) or autocast_cpu() or call.encoding != "unary"):
        return None
    emap = ent.effective
    acc = emap.dtype
    det = flat.detach()
    with torch.no_grad():
        lo, hi = min_max(det)
        if not bool(lo >= 0):
            return None
        integer = bool(call.integer)
        if integer and rows * (rows + 1) * float(hi) * float(call.scale.max()) >= _POOLED_EXACT:
            return None
    colsum = _sum_rows(flat).to(acc)
    if integer:  # events: round(sum |x| * divisor), the gradient straight through the rounding
        e = colsum * call.scale.to(acc)
        per_neuron = e + (e.detach().round() - e.detach())
    else:
        per_neuron = colsum
    synops = torch.dot(per_neuron, emap).reshape(1)
    with torch.no_grad():
        nonzero = column_nonzeros(det).to(acc)
        nz_tot, amax = nonzero.sum().reshape(1), hi.to(acc).reshape(1)
        # spikes: max <= 1 and sum == nonzeros (host reads: this is the CPU), then the exact test only then
        spiking = (float(hi) <= 1 and float(colsum.detach().sum()) == float(nz_tot)
                   and bool(all_integer_values(det, nonneg=True)))  # (lo >= 0 here)
        return (synops, torch.dot(nonzero, emap).reshape(1), per_neuron.detach().sum().reshape(1), nz_tot, amax,
                _ONE_TRUE if spiking else _ONE_FALSE, (ent.dense_total * float(rows)).reshape(1),
                call.integer.reshape(1), None)


#: the spike flag of one CPU call, made once (no op per call)
_ONE_TRUE, _ONE_FALSE = torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)


def _pooled_sums(call: Call, ent: LayerMaps) -> Tuple[Tensor, ...]:
    """One call whose input is an average-pool output: its values counted as spike events."""
    emap = ent.effective
    acc = emap.dtype
    flat = call.x.reshape(call.rows, emap.numel())
    fast = _pooled_fast(call, flat, ent)
    if fast is not None:
        return fast
    red = acc if (flat.element_size() < 4 or call.rows >= WIDE_ROWS) else None
    st = abs_row_sums(flat, _SCRATCH, red, call.scale)
    per_row = None
    if call.per_row:  # events per row: round(|x| * divisor) where the pool's input held integers
        ev = flat.abs() * call.scale
        ev = torch.where(call.integer, ev.detach().round() - ev.detach() + ev, flat.abs())
        per_row = (ev.to(emap.dtype) @ emap).reshape(1, -1)
    per_neuron = torch.where(call.integer, st.events, st.mag_sum).to(acc)
    synops = torch.dot(per_neuron, emap).reshape(1)
    with torch.no_grad():
        nonzero = st.nonzero.to(acc)
        nz_tot, amax = nonzero.sum().reshape(1), st.amax.to(acc).reshape(1)
        spiking = _spike_flags(amax, st.mag_sum.detach().to(acc).sum().reshape(1), nz_tot,
                               all_integer_values(flat).reshape(1))
        return (synops, torch.dot(nonzero, emap).reshape(1), per_neuron.detach().sum().reshape(1), nz_tot, amax,
                spiking, (ent.dense_total * float(call.rows)).reshape(1), call.integer.reshape(1), per_row)


def _per_layer_synops(parts: List[Tuple[Tensor, ...]], owners: List[int], synops: Tensor, index: Tensor,
                      n: int) -> List[Tensor]:
    """Each layer's synops; a layer whose inputs carry no gradient gets a value without one (as it would alone)."""
    if not synops.requires_grad or all(p[0].requires_grad for p in parts):
        return list(synops.new_zeros(n).index_add(0, index, synops).unbind(0))
    grad = torch.cat([torch.full_like(p[0], p[0].requires_grad, dtype=torch.bool) for p in parts])
    with_grad = synops.new_zeros(n).index_add(0, index, torch.where(grad, synops, synops.new_zeros(())))
    with torch.no_grad():
        without = synops.new_zeros(n).index_add(0, index, torch.where(grad, synops.new_zeros(()), synops))
    has_grad, has_plain = [False] * n, [False] * n
    pos = 0
    for p in parts:
        for li in owners[pos:pos + p[0].numel()]:
            (has_grad if p[0].requires_grad else has_plain)[li] = True
        pos += p[0].numel()
    g, w = with_grad.unbind(0), without.unbind(0)
    return [(g[i] + w[i] if has_plain[i] else g[i]) if has_grad[i] else w[i] for i in range(n)]


def view_lead(t: Tensor, n_el: int, rows: int, lead: Tuple[int, ...]) -> Tuple[int, ...]:
    """The leading dims by which a call's ``rows`` are split by sample: ``lead`` (the call's own), or, for rows
    of a contiguous view of a tensor whose memory is dense, that tensor's leading dims in memory order when they
    refine the call's own (``x.flatten(0, 1)`` of ``[B, T, C]``: ``(B, T)``; of ``[T, B, N, C]`` read by a
    ``Linear`` as ``[T*B, N, C]``: ``(T, B, N)``; torch's multi-head
    attention folds its ``[batch, heads, tokens, d]`` output, laid out tokens first, into ``[tokens * batch, E]``:
    ``(tokens, batch)``), whose order the fold kept.

    Example
    -------
    >>> base = torch.zeros(2, 3, 4)
    >>> view_lead(base.flatten(0, 1), 4, 6, (6,)), view_lead(base.flatten(0, 1).clone(), 4, 6, (6,))
    ((2, 3), (6,))
    >>> view_lead(torch.zeros(2, 3, 5, 4).flatten(0, 1), 4, 30, (6, 5))
    (2, 3, 5)
    """
    base = t._base
    if not lead or base is None or base.numel() != t.numel() or not t.is_contiguous():
        return lead
    # the base's dims in memory order (a permuted view of contiguous memory, as torch's attention leaves it)
    order = sorted(range(base.dim()), key=lambda i: -base.stride(i))
    dims = tuple(int(base.shape[i]) for i in order)
    expect = 1
    for i, d in zip(reversed(order), reversed(dims)):
        if d != 1 and base.stride(i) != expect:
            return lead  # overlapping or gapped memory: no order to read
        expect *= d
    k, inner = len(dims), 1
    while k > 0 and inner < n_el:
        k -= 1
        inner *= dims[k]
    out = dims[:k]
    if inner != n_el or len(out) <= len(lead) or math.prod(out) != rows:
        return lead
    # the base's first dims must split the call's first one (``[T*B, N]`` of a ``[T, B, N, C]`` base:
    # ``(T, B, N)``); the call's other dims are kept as they are (a split of them could only add ambiguity)
    i, size = 0, 1
    while i < len(out) and size < lead[0]:
        size *= out[i]
        i += 1
    if size != lead[0] or i < 2 or math.prod(out[i:]) != math.prod(lead[1:]):
        return lead
    return tuple(out[:i]) + tuple(lead[1:])



#: the scratch slot of the float64 vectors that :func:`_times_map` multiplies (no other user)
_MAP_SLOT = 7


def _times_map(ent: LayerMaps, *vectors: Tensor) -> List[List[float]]:
    """Per-neuron vectors (CPU, any dtype) times the map, and their sums, as Python floats:
    ``[[v . map, sum(v)], ...]``, in float64 (exact for integer vectors below 2^53).

    The vectors are copied into one reused float64 buffer (nothing of their size is allocated), then one
    matrix-vector product with the map and one row sum.

    Example
    -------
    >>> from synopsloss.maps import MapCache
    >>> ent = MapCache().entry(("lin",), torch.ones(3, 4), lambda w01: w01.sum(0), (4,))
    >>> _times_map(ent, torch.tensor([1.0, 0.0, 2.0, 0.0]))
    [[9.0, 3.0]]
    """
    emap = ent.effective.detach()
    n = emap.numel()
    buf = _SCRATCH.get(len(vectors) * n, emap.dtype, emap.device, _MAP_SLOT).view(len(vectors), n)
    for row, v in zip(buf, vectors):
        row.copy_(v.reshape(-1))
    return torch.stack([torch.mv(buf, emap.reshape(-1)), buf.sum(1)], 1).tolist()


def reducible_now(x: Tensor, rows: int, n_el: int) -> bool:
    """Whether a call made without gradients on ``x`` (``rows`` rows of ``n_el`` values) is one that
    :func:`reduce_now` takes: a large float32 / float64 CPU input, outside autocast."""
    return (x.device.type == "cpu" and _BIG_CALL <= rows * n_el and rows < WIDE_ROWS
            and x.dtype in (torch.float32, torch.float64) and not autocast_cpu())


@own_ops
def reduce_now(x: Tensor, rows: int, ent: LayerMaps, events: bool,
               whole: Optional[str] = None) -> Optional[Tuple[float, ...]]:
    """A large CPU call made without gradients, reduced when it is made; ``None`` for any other call.

    Its input is read while it is still in cache, and is not held until the forward returns. The rule and the
    float64 arithmetic are those of :func:`reduce_layers` for a large call (:func:`_large_sums`, then float64
    dot products with the map): the counts are the same. Calls it does not take
    (on other devices, half precision, autocast, small inputs, average-pool outputs, per-sample or bit-plane
    counting) are recorded and reduced with the others.

    Returns
    -------
    The call's counts named by :data:`synopsloss.state.NOW_FIELDS` (their order), as Python floats
    (``spiking`` is 1.0 or 0.0).

    Example
    -------
    >>> from synopsloss.maps import MapCache
    >>> cache = MapCache()
    >>> ent = cache.entry(("lin",), torch.ones(3, 1 << 16), lambda w01: w01.sum(0), (1 << 16,))
    >>> x = torch.zeros(1, 1 << 16); x[0, :5] = 1.0
    >>> reduce_now(x, 1, ent, events=True)[:3]  # synops, dense, eff_acs: 5 spikes x 3 targets
    (15.0, 196608.0, 15.0)
    """
    n_el = ent.effective.numel()
    if ent.effective.device.type != "cpu" or not reducible_now(x, rows, n_el):
        return None
    with torch.no_grad():
        flat = x.detach().reshape(rows, n_el)
        dense = float(ent.dense_total) * float(rows)
        reals = False
        if whole == "binary" and whole_range(flat, True):  # a neuron's unchanged output of 0 and 1 (range checked)
            binary = torch.matmul(_SCRATCH.ones(rows, flat.dtype, flat.device), flat)
        else:
            reals = _head_shows_reals(flat)  # (real values: no pass to test for spikes)
            binary = None if reals else _binary_sums(flat)
        if binary is not None:  # only 0 and 1: the effective ops are the synops, all ACs
            # (the synops and the spikes: float64 products and sums of exact float32 column sums)
            ((synops, in_sum),) = _times_map(ent, binary)
            return synops, dense, synops, 0.0, in_sum, in_sum, 1.0, synops
        colsum, nz, amax, signed, known = _large_sums(flat, reals)
        # (the column sums and nonzeros times the map, and summed: synops, sum, effective ops, nonzeros; the
        # nonzero counts are integers below 2^53, exact in float64)
        (synops, in_sum), (eff, nonzero) = _times_map(ent, colsum.detach(), nz)
        candidate = amax <= 1 and in_sum == nonzero  # (the sums reject most real values; the exact test follows)
        integer = known if known is not None else (candidate or events) and bool(all_integer_values(flat, not signed))
        spiking = candidate and integer
        if spiking:
            return synops, dense, eff, 0.0, in_sum, nonzero, 1.0, eff
        if events and integer:  # integer spike counts: |x| accumulate events each
            return synops, dense, synops, 0.0, in_sum, nonzero, 0.0, eff
        return synops, dense, 0.0, eff, in_sum, nonzero, 0.0, eff


class WholeSpikes:
    """The outputs of this batch's neurons whose spike function makes whole numbers by construction
    (:func:`synopsloss.registry.whole_spikes`): a tensor that is one of them, or a view of one, at the version the
    neuron left it, holds integers (or only 0 and 1) without a pass over it to say so.

    Held weakly; identity is the live tensor (``x is out`` or its view's ``_base``) and its version, so an
    in-place change after the neuron is read anew.

    Example
    -------
    >>> whole = WholeSpikes()
    >>> out = torch.tensor([[0.0, 1.0]])
    >>> whole.note(out, "binary")
    >>> whole.kind(out.view(2)), whole.kind(out.clone()), whole.kind(out.mul_(2))
    ('binary', None, None)
    """

    #: outputs held at most (a forward makes one per neuron call)
    LIMIT = 4096

    def __init__(self) -> None:
        self._seen: Dict[int, Tuple[Any, int, str]] = {}

    def note(self, out: Any, kind: Optional[str]) -> None:
        """A whole-spike neuron returned ``out`` (``kind``: ``"binary"`` or ``"integer"``)."""
        if isinstance(out, Tensor) and kind is not None and out.layout == torch.strided:
            if len(self._seen) >= self.LIMIT:
                self._seen.clear()
            self._seen[id(out)] = (weakref.ref(out), version_of(out), kind)

    def kind(self, x: Tensor) -> Optional[str]:
        """``"binary"`` / ``"integer"`` when ``x`` is (a view of) a noted output, unchanged; else ``None``."""
        if not self._seen:
            return None
        for t in (x, x._base):
            if t is None:
                continue
            seen = self._seen.get(id(t))
            if seen is not None and seen[0]() is t and seen[1] == version_of(x) >= 0:
                return seen[2]
        return None

    def clear(self) -> None:
        self._seen.clear()


class LastInput:
    """A layer's last call reduced at once (:func:`reduce_now`): its counts, and what shows that a later call of
    the layer repeats it, so that its counts are taken again without reading the input once more (a model fed the
    same frame at every time step: snntorch's direct encoding).

    A later call repeats it when it uses the same map entry (the same weight pattern), rows and rule, and its
    input is the same data: the same tensor, or a view of the same memory with the same strides, at the same
    version, is the candidate, and the decision is its bytes (:func:`synopsloss.reductions.same_bytes`) against a
    copy of the input taken the first time a candidate came (an edit through ``.data`` or numpy, which no version counter sees,
    is then read anew). A candidate that is not equal stops the repeats of the layer for the batch (an input
    rewritten in place at each step costs no comparison after that).

    Example
    -------
    >>> x = torch.ones(2, 3)
    >>> last = LastInput(x, "entry", 2, True, (6.0,))
    >>> last.counts_for(x, "entry", 2, True) is None  # a candidate, but no copy yet: read it, then keep one
    True
    >>> last = last.after(x, "entry", 2, True, (6.0,))
    >>> last.counts_for(x, "entry", 2, True), last.counts_for(x.clone(), "entry", 2, True)
    ((6.0,), None)
    """

    __slots__ = ("ref", "ptr", "stride", "shape", "dtype", "version", "ent", "rows", "events", "counts", "copy",
                 "stopped")

    def __init__(self, x: Tensor, ent: Any, rows: int, events: bool, counts: Tuple[float, ...],
                 copy: Optional[Tensor] = None, stopped: bool = False) -> None:
        self.ref = weakref.ref(x)
        self.ptr, self.stride, self.shape, self.dtype = x.data_ptr(), x.stride(), x.shape, x.dtype
        self.version = version_of(x)
        self.ent, self.rows, self.events, self.counts = ent, rows, events, counts
        self.copy, self.stopped = copy, stopped

    def candidate(self, x: Tensor, ent: Any, rows: int, events: bool) -> bool:
        """Whether ``x`` may repeat the last input (same tensor or memory, version, map, rows and rule)."""
        return (not self.stopped and ent is self.ent and rows == self.rows and events == self.events
                and x.dtype is self.dtype and x.shape == self.shape and version_of(x) == self.version
                and (self.ref() is x or (x.data_ptr() == self.ptr and x.stride() == self.stride)))

    def counts_for(self, x: Tensor, ent: Any, rows: int, events: bool) -> Optional[Tuple[float, ...]]:
        """The last call's counts when ``x`` holds the same values (else ``None``: read it)."""
        if self.copy is None or not self.candidate(x, ent, rows, events):
            return None
        with torch.no_grad():
            return self.counts if same_bytes(x, self.copy) else None  # (called without gradients)

    def after(self, x: Tensor, ent: Any, rows: int, events: bool, counts: Tuple[float, ...]) -> "LastInput":
        """The record of a call read anew: a copy of its input is kept when it was a candidate (it may repeat)."""
        cand = self.candidate(x, ent, rows, events)
        if cand and self.copy is not None:  # the same data but other values: no more repeats in this batch
            return LastInput(x, ent, rows, events, counts, stopped=True)
        with torch.no_grad():
            copy = x.detach().clone() if cand else None
        return LastInput(x, ent, rows, events, counts, copy, self.stopped)


@own_ops
def reduce_layers(layers: Sequence[Sequence[Call]],
                  whole: Optional[Callable[[Tensor], Optional[str]]] = None) -> List[Sums]:
    """The counts of each layer's recorded calls, reduced together in a few tensor ops per input shape.

    Calls of all layers whose inputs have the same rows and sample size are
    stacked into one group (whatever their layer), so a network of many small
    layers is read in a handful of ops; each layer's sums are then gathered
    with one ``index_add``. ``whole(x)``: ``"binary"`` when ``x`` is, unchanged, the output of a neuron that
    makes 0 and 1 by construction (:meth:`WholeSpikes.kind`): a large such input in that range needs no integer
    pass.

    Example
    -------
    >>> import torch
    >>> from synopsloss.maps import MapCache
    >>> w = torch.tensor([[1.0, 0.0], [2.0, 3.0]])           # Linear(2, 2): fan-outs 2 and 1
    >>> cache = MapCache()
    >>> ent = cache.entry(("lin",), w, lambda w01: w01.sum(0), (2,))
    >>> x = torch.tensor([[1.0, 1.0], [0.0, 1.0]])           # two rows of spikes
    >>> (s,) = reduce_layers([[Call(x, 2, ent, w, cache)]])
    >>> float(s.synops), float(s.dense), float(s.eff_acs), float(s.eff_macs)
    (4.0, 8.0, 4.0, 0.0)
    """
    memo: Dict[tuple, LayerMaps] = {}  # (id(weight as used), id(entry)) -> its current map, once per read
    todo: Dict[tuple, Tuple[MapCache, LayerMaps, Optional[Tensor]]] = {}
    for calls in layers:
        for c in calls:
            if c.weight is not None and c.cache is not None:
                used = c.weight if c.pattern is None else c.pattern
                todo.setdefault((id(used), id(c.entry)), (c.cache, c.entry, used))
    if todo:
        memo = dict(zip(todo, MapCache.current_all(list(todo.values()))))
    order = {id(c): i for calls in layers for i, c in enumerate(calls)}  # a call's index within its layer
    groups: Dict[tuple, List[Tuple[int, Call, LayerMaps]]] = {}
    pooled: List[Tuple[int, Call, LayerMaps]] = []
    last: List[Optional[LayerMaps]] = [None] * len(layers)
    for li, calls in enumerate(layers):
        for c in calls:
            ent = c.entry
            if c.weight is not None and c.cache is not None:
                ent = memo[(id(c.weight if c.pattern is None else c.pattern), id(ent))]
            last[li] = ent
            item = (li, c, ent)
            if c.scale is not None:
                pooled.append(item)
            else:
                key = (c.rows, ent.effective.numel(), c.x.dtype, c.x.device, ent.effective.dtype, c.events, c.per_row,
                       c.encoding)
                groups.setdefault(key, []).append(item)
    parts: List[Tuple[Tensor, ...]] = []
    owners: List[int] = []
    events: List[bool] = []
    row_sums: List[List[Tuple[int, Tensor]]] = [[] for _ in layers]
    for (rows, n_el, _, _, _, _, want, encoding), items in groups.items():
        parts.append(_group_sums([c.x for _, c, _ in items], [e for _, _, e in items], rows, n_el, want, encoding,
                                 whole))
        owners.extend(li for li, _, _ in items)
        events.extend(c.events for _, c, _ in items)
        if want:
            for (li, c, _), r in zip(items, parts[-1][8].unbind(0)):
                row_sums[li].append((order[id(c)], r))
    for li, c, ent in pooled:
        parts.append(_pooled_sums(c, ent))
        owners.append(li)
        events.append(c.events)
        if c.per_row:
            row_sums[li].append((order[id(c)], parts[-1][8][0]))
    cols = [torch.cat([p[j] for p in parts]) if len(parts) > 1 else parts[0][j] for j in range(8)]
    synops = cols[0]
    with torch.no_grad():
        eff, in_sum, nz, amax, spiking, dense, integer = cols[1:]  # (spiking: every value in {-1, 0, 1})
        if any(events):  # integer spike counts: |x| accumulate events each (the synops, detached)
            # (spikes too: their synops are their effective ops, except after an average pool, whose output may
            # hold only 0 and 1 while each value stands for several events of its input)
            counted = integer
            if not all(events):
                counted = counted & torch.tensor(events, device=counted.device)
            ac = torch.where(counted, synops.detach(), torch.where(spiking, eff, eff.new_zeros(())))
            is_ac = spiking | counted
        else:
            ac, is_ac = torch.where(spiking, eff, eff.new_zeros(())), spiking
        stats = torch.stack([dense, ac, torch.where(is_ac, eff.new_zeros(()), eff), in_sum, nz,
                             spiking.to(eff.dtype), eff])
    n = len(layers)
    if n == 1:
        per_syn = [synops.sum()]
        with torch.no_grad():
            per_stats = [list(stats.sum(1).unbind(0))]
    else:
        index = torch.tensor(owners, device=synops.device)
        per_syn = _per_layer_synops(parts, owners, synops, index, n)
        with torch.no_grad():
            table = stats.new_zeros(7, n).index_add_(1, index, stats)
            per_stats = [list(col) for col in zip(*(row.unbind(0) for row in table.unbind(0)))]
    return [
        Sums(per_syn[li], *per_stats[li][:5], maps=last[li], spiking_calls=per_stats[li][5],  # type: ignore[arg-type]
             effective=per_stats[li][6],
             changed=tuple(i for i, c in enumerate(calls) if version_of(c.x) != c.version),
             rows=tuple(sorted(row_sums[li], key=lambda t: t[0])))
        for li, calls in enumerate(layers)
    ]


def reduce_calls(calls: Sequence[Call]) -> Sums:
    """The counts of one layer's ``calls`` (see :func:`reduce_layers`)."""
    return reduce_layers([calls])[0]
