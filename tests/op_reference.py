"""Brute-force references for synopsloss.ops: Jacobian tap counts and explicit loops over terms.

Nothing here uses synopsloss. Weight ops: the fan-out map is the column sums of the Jacobian of
the op with its nonzero weights set to one (dense: all weights one). Products: every term of the
defining sum is visited in a Python loop (small shapes only).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import Tensor


def in_pm1(t: Tensor) -> bool:
    t = t.detach().double()
    return bool(((t == 0) | (t == 1) | (t == -1)).all())


def jacobian_map(op: Callable[[Tensor, Tensor], Tensor], w: Tensor, sample_shape: Sequence[int],
                 effective: bool = True) -> Tensor:
    """Each input neuron's number of weight taps: Jacobian column sums of ``op(x, w01)`` for one sample."""
    w01 = (w.detach() != 0).double() if effective else torch.ones_like(w.detach(), dtype=torch.float64)
    x0 = torch.zeros(1, *sample_shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: op(v, w01).reshape(-1), x0, vectorize=True)
    return jac.reshape(-1, *sample_shape).sum(0)


def weight_op_counts(op: Callable[[Tensor, Tensor], Tensor], x: Tensor, w: Tensor,
                     sample_ndim: int) -> Dict[str, Any]:
    """dense / effective / synops / spiking of ``op(x, w)`` from Jacobian tap counts (x: [rows..., sample])."""
    sample = tuple(x.shape[x.dim() - sample_ndim:])
    emap = jacobian_map(op, w, sample, True)
    dmap = jacobian_map(op, w, sample, False)
    xd = x.detach().double().reshape(-1, *sample)
    return {
        "dense": float(dmap.sum()) * xd.shape[0],
        "effective": float(((xd != 0).double() * emap).sum()),
        "synops": float((xd.abs() * emap).sum()),
        "spiking": in_pm1(xd),
        "rows": xd.shape[0],
    }


def _nested(t: Tensor):
    return t.detach().double().tolist()


def contraction_terms(
    a: Tensor, b: Tensor, la: str, lb: str, a_weight: bool = False, b_weight: bool = False,
    mask: Optional[Tensor] = None, lm: str = "",
) -> Dict[str, float]:
    """Visit every assignment of every index of ``einsum('la,lb->...')`` (size-1 dims broadcast).

    A term counts in dense; in effective when both factors are nonzero; in synops as
    ``|a| * |b|`` (a weight operand counts 1 where nonzero). ``mask`` (indices ``lm``) drops terms.
    """
    sizes: Dict[str, int] = {}
    for t, labels in ((a, la), (b, lb)) + (((mask, lm),) if mask is not None else ()):
        for c, s in zip(labels, t.shape):
            if c not in sizes or sizes[c] == 1:
                sizes[c] = int(s)
    labels = list(sizes)
    av, bv = _nested(a), _nested(b)
    mv = _nested(mask) if mask is not None else None

    def get(nested, shape, lab, assign):
        for c, s in zip(lab, shape):
            nested = nested[assign[c] if s != 1 else 0]
        return nested

    dense = eff = syn = 0.0
    for values in itertools.product(*(range(sizes[c]) for c in labels)):
        assign = dict(zip(labels, values))
        if mv is not None and not get(mv, mask.shape, lm, assign):
            continue
        x = get(av, a.shape, la, assign)
        y = get(bv, b.shape, lb, assign)
        dense += 1
        if x != 0 and y != 0:
            eff += 1
        syn += (float(x != 0) if a_weight else abs(x)) * (float(y != 0) if b_weight else abs(y))
    return {"dense": dense, "effective": eff, "synops": syn}


def matmul_terms(a: Tensor, b: Tensor, **kw) -> Dict[str, float]:
    """``torch.matmul`` semantics by loops: 1-D operands, broadcast batch dims."""
    a2 = a.unsqueeze(0) if a.dim() == 1 else a
    b2 = b.unsqueeze(-1) if b.dim() == 1 else b
    batch = torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a3 = a2.expand(*batch, *a2.shape[-2:]).reshape(-1, *a2.shape[-2:])
    b3 = b2.expand(*batch, *b2.shape[-2:]).reshape(-1, *b2.shape[-2:])
    return contraction_terms(a3, b3, "Bmk", "Bkn", **kw)


def softmax_rows(logits: Sequence[Sequence[float]], allowed: Sequence[Sequence[bool]]):
    """Masked softmax by hand: masked entries (and fully masked rows) are 0."""
    out = []
    for row, ok in zip(logits, allowed):
        vals = [v for v, o in zip(row, ok) if o]
        if not vals:
            out.append([0.0] * len(row))
            continue
        top = max(vals)
        ex = [math.exp(v - top) if o else 0.0 for v, o in zip(row, ok)]
        tot = sum(ex)
        out.append([e / tot for e in ex])
    return out


def attention_terms(q: Tensor, k: Tensor, v: Tensor, allowed: Optional[Tensor] = None,
                    scale: Optional[float] = None) -> Dict[str, Dict[str, float]]:
    """The two products of scaled dot-product attention, by loops, for q [N, L, E], k [N, S, E], v [N, S, Ev]
    (N: flattened batch) and ``allowed`` [N, L, S] (None: all pairs)."""
    n, L, E = q.shape
    S, Ev = k.shape[1], v.shape[2]
    scale = 1.0 / math.sqrt(E) if scale is None else scale
    if allowed is None:
        allowed = torch.ones(n, L, S, dtype=torch.bool)
    qv, kv, vv, ok = _nested(q), _nested(k), _nested(v), allowed.tolist()
    qk = {"dense": 0.0, "effective": 0.0, "synops": 0.0}
    av = {"dense": 0.0, "effective": 0.0, "synops": 0.0}
    for i in range(n):
        logits = [[sum(qv[i][l][e] * kv[i][s][e] for e in range(E)) * scale for s in range(S)] for l in range(L)]
        attn = softmax_rows(logits, ok[i])
        for l, s in itertools.product(range(L), range(S)):
            if not ok[i][l][s]:
                continue
            for e in range(E):
                x, y = qv[i][l][e], kv[i][s][e]
                qk["dense"] += 1
                qk["effective"] += float(x != 0 and y != 0)
                qk["synops"] += abs(x) * abs(y)
            for m in range(Ev):
                x, y = attn[l][s], vv[i][s][m]
                av["dense"] += 1
                av["effective"] += float(x != 0 and y != 0)
                av["synops"] += abs(x) * abs(y)
    return {"sdpa.qk": qk, "sdpa.av": av}
