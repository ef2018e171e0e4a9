"""Declared per-layer state: each field says once how it reduces.

A counted layer's running numbers live in one state object owned by the
counter (synaptic layers) or the neuron monitor (neuron and other layers).
Every field is declared with :func:`state_field` and a :class:`Reduce` rule,
as torchmetrics' ``add_state`` declares ``dist_reduce_fx``, so that the three
operations every owner needs are one generic function each:

* folding a finished batch into the running totals (:func:`fold`);
* merging the numbers of two batches or two processes (the same :func:`fold`);
* resetting (a new, default-constructed state object).

Fields declared with ``reduce=None`` are per-batch scratch (not folded).

Example
-------
>>> import torch
>>> from synopsloss.state import SynapseState, fold
>>> a, b = SynapseState(), SynapseState()
>>> a.dense, a.calls, a.in_shape = torch.tensor(6.0), 2, (3,)
>>> b.dense, b.calls, b.in_shape = torch.tensor(4.0), 1, (5,)
>>> total = fold(fold(SynapseState(), a), b)
>>> float(total.dense), total.calls, total.in_shape
(10.0, 3, (5,))
"""

from __future__ import annotations

import enum
import warnings
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, TypeVar

import torch
from torch import Tensor

from .errors import SynOpsWarning, changed_message
from .hooks import own_ops

__all__ = ["Reduce", "state_field", "SynapseState", "NeuronState", "fold", "add_now", "NOW_FIELDS"]


class Reduce(enum.Enum):
    """How a state field combines across calls, batches and processes."""

    SUM = "sum"  #: added (tensors are detached when folded into totals)
    LAST = "last"  #: the newer value wins (shapes, the maps of the last call)
    MIN = "min"  #: the smaller wins (forward-order stamps)
    ANY = "any"  #: logical or (flags)
    UNION = "union"  #: set union (rows per call)


def state_field(reduce: Optional[Reduce], default: Any = None, factory: Any = None) -> Any:
    """A dataclass field carrying its reduction rule (``None``: per-batch scratch, not folded)."""
    meta = {"reduce": reduce}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _sum(a: Any, b: Any, detach: bool) -> Any:
    if b is None:
        return a
    if isinstance(b, Tensor):
        b = b.detach() if detach else b
        if a is None:
            return b
        if a.shape != b.shape:
            return None  # a per-neuron sum over calls of different shapes has no meaning
        return a + b.to(a.device)
    return b if a is None else a + b


S = TypeVar("S")


def fold(into: S, other: S, *, detach: bool = True) -> S:
    """Combine ``other`` into ``into`` field by field with each field's :class:`Reduce` rule.

    Tensors of summed fields are detached unless ``detach=False``. A summed
    tensor whose shape differs between the two (a layer whose sample shape
    changed) becomes ``None`` and sets ``shape_changed`` where the state has
    that flag. Returns ``into``.
    """
    settle = getattr(other, "settle", None)
    if settle is not None:
        settle()  # calls recorded since the last read enter the sums now
    plan = _PLANS.get(type(into))
    if plan is None:  # the fold of a state class, generated once from its declared fields (it runs per layer)
        plan = _PLANS[type(into)] = _fold_function(type(into))
    plan(into, other, detach)
    return into


#: one line of the generated fold per rule (``F``: the field; ``a`` / ``b``: into's / other's value)
_FOLD_LINES = {
    Reduce.SUM: ("b = other.F\n"
                 "if b is not None:\n"
                 "    a = into.F\n"
                 "    v = _sum(a, b, detach)\n"
                 "    if v is None and a is not None:\n"
                 "        FLAG\n"
                 "    into.F = v\n"),
    Reduce.LAST: "b = other.F\nif not (b is None or b == ()):\n    into.F = b\n",
    Reduce.MIN: "b = other.F\nif b is not None:\n    into.F = b if into.F is None else min(into.F, b)\n",
    Reduce.ANY: "into.F = bool(into.F) or bool(other.F)\n",
    Reduce.UNION: "into.F = set(into.F) | set(other.F)\n",
}


def _fold_function(cls: type) -> Any:
    """``fold(into, other, detach)`` for ``cls``, written out from its fields' :class:`Reduce` rules (as
    ``dataclasses`` writes ``__init__``): the same rules as a loop over the fields, without the per-field
    look-ups by name (it runs for every layer at every reset and read)."""
    flag = "into.shape_changed = True" if any(f.name == "shape_changed" for f in fields(cls)) else "pass"
    body = "".join(_FOLD_LINES[f.metadata["reduce"]].replace("FLAG", flag).replace("F", f.name)
                   for f in fields(cls) if f.metadata.get("reduce") is not None)
    src = "def fold(into, other, detach):\n" + "".join("    " + line + "\n" for line in body.splitlines()) + "    return into\n"
    scope: Dict[str, Any] = {"_sum": _sum}
    exec(compile(src, f"<fold of {cls.__name__}>", "exec"), scope)  # noqa: S102 - generated from the declarations
    return scope["fold"]


_PLANS: Dict[type, Any] = {}


@dataclass
class SynapseState:
    """Running numbers of one synaptic layer (sums over calls; device tensors in the map's dtype)."""

    synops: Optional[Tensor] = state_field(Reduce.SUM)  # differentiable within a batch
    dense: Optional[Tensor] = state_field(Reduce.SUM)
    eff_macs: Optional[Tensor] = state_field(Reduce.SUM)
    eff_acs: Optional[Tensor] = state_field(Reduce.SUM)
    effective: Optional[Tensor] = state_field(Reduce.SUM)  # nonzero input x nonzero taps, however classed
    input_sum: Optional[Tensor] = state_field(Reduce.SUM)  # sum of |input| (spike events after pool correction)
    input_nonzero: Optional[Tensor] = state_field(Reduce.SUM)
    calls: int = state_field(Reduce.SUM, 0)
    rows_total: int = state_field(Reduce.SUM, 0)
    rows: Set[int] = state_field(Reduce.UNION, factory=set)  # rows of one call, for the samples check
    in_shape: Tuple[int, ...] = state_field(Reduce.LAST, ())
    out_shape: Tuple[int, ...] = state_field(Reduce.LAST, ())
    maps: Any = state_field(Reduce.LAST)  # LayerMaps of the last call (fan-out statistics)
    in_neurons: int = state_field(Reduce.LAST, 0)
    in_values: int = state_field(Reduce.SUM, 0)  # rows x input neurons, summed over calls
    samples: Optional[int] = state_field(Reduce.LAST)  # samples of a call, from a layer that knows its layout
    leads: Counter = state_field(Reduce.SUM, factory=Counter)  # {leading (row) dims of a call: calls}
    sample_steps: float = state_field(Reduce.SUM, 0.0)  # samples x time steps, set when a batch is read or folded
    data_calls: int = state_field(Reduce.SUM, 0)  # calls that read the model's own input (data-fed if all)
    first_seen: Optional[int] = state_field(Reduce.MIN)  # forward-order stamp
    device: Any = state_field(Reduce.LAST)
    # calls recorded but not yet summed, (dense, effective, spiking, input_sum, input_nonzero) each: the
    # hooks append (no tensor op per call) and settle() sums them when the state is read or folded
    pending: list = state_field(None, factory=list)
    # weight-op calls recorded as they ran (synopsloss.records.Call), reduced by settle()
    records: list = state_field(None, factory=list)
    # activation products recorded by the function mode: each gives (synops, dense, effective, spiking,
    # input_sum, input_nonzero) when called, at settle()
    later: list = state_field(None, factory=list)
    # calls reduced when they were made (synopsloss.records.reduce_now): their counts summed as Python floats, in
    # the order of NOW_FIELDS, entered into the tensor fields at settle()
    now: Optional[List[float]] = state_field(None)
    # with per-sample counting: each call's leading dims, and its per-row synops once reduced
    call_leads: list = state_field(None, factory=list)
    row_synops: list = state_field(None, factory=list)
    unsampled: bool = state_field(None, False)  # a call without per-row synops: the layer has no per-sample values

    def record(self, dense: Tensor, effective: Tensor, spiking: Tensor, input_sum: Tensor,
               input_nonzero: Tensor, events: Optional[Tuple[Tensor, Tensor]] = None) -> None:
        """One call's counts (0-dim tensors, ``spiking`` bool), summed into the fields at the next :meth:`settle`.

        ``events``: ``(counted, acs)``: when ``counted`` (bool; the call's values are spike counts, not spikes)
        the call sends ``acs`` accumulate events (its synops) instead of ``effective`` MACs.
        """
        self.pending.append((dense, effective, spiking, input_sum, input_nonzero, events))

    @own_ops
    def settle(self) -> "SynapseState":
        """Sum the recorded calls into the fields: a few stacked ops however many calls there were."""
        if self.records:
            self._settle_records()
        if self.now is not None:
            now, self.now = self.now, None
            with torch.no_grad():
                vals = torch.tensor(now, dtype=_now_dtype(self.maps), device=self.device).unbind(0)
            self.synops = vals[0] if self.synops is None else self.synops + vals[0]
            for key, value in zip(NOW_FIELDS, vals):
                if key != "synops" and key != "spiking":
                    setattr(self, key, _sum(getattr(self, key), value, True))
        if self.later:
            later, self.later = self.later, []
            for get in later:
                synops, dense, effective, spiking, input_sum, input_nonzero, per_row = get()[:7]
                if per_row is not None:
                    self.row_synops.append(per_row)
                self.record(dense, effective, spiking, input_sum, input_nonzero)
                self.synops = synops if self.synops is None else self.synops + synops
        if not self.pending:
            return self
        dense, effective, spiking, input_sum, input_nonzero, events = zip(*self.pending)
        self.pending = []
        one = len(dense) == 1
        with torch.no_grad():
            eff = effective[0] if one else torch.stack(effective)
            spk = spiking[0] if one else torch.stack(spiking)
            zero = eff.new_zeros(())
            acs, macs = torch.where(spk, eff, zero), torch.where(spk, zero, eff)
            if any(e is not None for e in events):  # spike counts: their events are ACs, no MACs
                no = (zero.bool(), zero)
                # (spikes too: their events are their effective ops, except after an average pool)
                counted = torch.stack([(e or no)[0] for e in events]).reshape(eff.shape)
                ev = torch.stack([(e or no)[1] for e in events]).reshape(eff.shape)
                acs, macs = torch.where(counted, ev, acs), torch.where(counted, zero, macs)
            sums = {
                "dense": dense[0] if one else torch.stack(dense).sum(),
                "eff_acs": acs.sum(),
                "eff_macs": macs.sum(),
                "effective": eff.sum() if eff.dim() else eff,
                "input_sum": input_sum[0] if one else torch.stack(input_sum).sum(),
                "input_nonzero": input_nonzero[0] if one else torch.stack(input_nonzero).sum(),
            }
            for key, value in sums.items():
                setattr(self, key, _sum(getattr(self, key), value, True))
        return self


    def _settle_records(self) -> None:
        settle_all([self])

    def apply(self, sums: Any, calls: list) -> None:
        """Add the reduced counts of ``calls`` (:class:`synopsloss.records.Sums`) to the fields."""
        if sums.changed:
            warnings.warn(changed_message(calls[sums.changed[0]].x), SynOpsWarning, stacklevel=5)
        self.synops = sums.synops if self.synops is None else self.synops + sums.synops
        self.maps = sums.maps
        self.row_synops.extend(r for _, r in sums.rows)
        for key in ("dense", "eff_acs", "eff_macs", "input_sum", "input_nonzero", "effective"):
            setattr(self, key, _sum(getattr(self, key), getattr(sums, key), True))


#: the counts of a call reduced when it is made (:func:`synopsloss.records.reduce_now`), in the order it returns
#: them (``spiking`` is not a field)
NOW_FIELDS = ("synops", "dense", "eff_acs", "eff_macs", "input_sum", "input_nonzero", "spiking", "effective")


def _now_dtype(maps: Any) -> torch.dtype:
    """The dtype of the counts of calls reduced at once: their map's."""
    return maps.effective.dtype if maps is not None else torch.float64


def add_now(state: "SynapseState", counts: Tuple[float, ...]) -> None:
    """Add the counts of a call reduced when it was made (:func:`synopsloss.records.reduce_now`) to ``state``."""
    now = state.now
    if now is None:
        state.now = list(counts)
    else:
        for i, v in enumerate(counts):
            now[i] += v


@own_ops
def settle_all(states: List["SynapseState"], whole: Optional[Callable[[Tensor], Optional[str]]] = None) -> None:
    """Reduce the recorded calls of many layers together (one group per input shape, not per layer); ``whole``:
    see :func:`synopsloss.records.reduce_layers`."""
    from .records import reduce_layers

    todo = [st for st in states if st.records]
    if todo:
        calls = [st.records for st in todo]
        for st in todo:
            st.records = []
        for st, sums, recs in zip(todo, reduce_layers(calls, whole), calls):
            st.apply(sums, recs)
    for st in states:
        if st.pending or st.later or st.now is not None:
            st.settle()


#: the summed tensor fields of a synapse state, kept for all layers in one matrix by :class:`Totals`
SUM_KEYS = ("synops", "dense", "eff_macs", "eff_acs", "input_sum", "input_nonzero", "effective")


class Totals:
    """Running totals of every layer's summed tensor fields: one stacked add per batch, not one per field.

    :meth:`take` moves a finished batch's fields into a ``[layers, 6]`` matrix (the
    states keep their Python fields, folded as usual); :meth:`rows` gives them back
    per layer when the accumulated counts are read.
    """

    def __init__(self) -> None:
        self.index: Dict[str, int] = {}
        self._pending: List[Tuple[List[int], Tensor]] = []
        self._mat: Optional[Tensor] = None

    def clear(self) -> None:
        self.index.clear()
        self._pending.clear()
        self._mat = None

    def take(self, states: Dict[str, "SynapseState"]) -> bool:
        """Move the fields of ``states`` into the totals (``False``: they differ in device or dtype, nothing moved)."""
        vals = [getattr(st, k) for st in states.values() for k in SUM_KEYS]
        if not vals or any(v is None or v.dim() != 0 for v in vals):
            return False
        if len({(v.device, v.dtype) for v in vals}) != 1:
            return False
        with torch.no_grad():
            mat = torch.stack([v.detach() for v in vals]).view(len(states), len(SUM_KEYS))
        idx = [self.index.setdefault(n, len(self.index)) for n in states]
        self._pending.append((idx, mat))
        for st in states.values():
            for k in SUM_KEYS:
                setattr(st, k, None)
        self._compact()  # at once: the totals hold one matrix, whatever number of batches they summed
        return True

    def _compact(self) -> None:
        with torch.no_grad():
            for idx, mat in self._pending:
                n = len(self.index)
                if self._mat is None:
                    self._mat = mat.new_zeros(n, len(SUM_KEYS))
                elif self._mat.shape[0] < n or self._mat.device != mat.device:
                    grown = mat.new_zeros(n, len(SUM_KEYS))
                    grown[: self._mat.shape[0]] += self._mat.to(mat.device)
                    self._mat = grown
                if idx == list(range(len(idx))):
                    self._mat[: len(idx)] += mat
                else:
                    self._mat.index_add_(0, torch.tensor(idx, device=mat.device), mat)
        self._pending.clear()

    def rows(self) -> Dict[str, List[Tensor]]:
        """``{layer: [synops, dense, eff_macs, eff_acs, input_sum, input_nonzero]}`` (0-dim tensors)."""
        self._compact()
        if self._mat is None:
            return {}
        per = [list(r.unbind(0)) for r in self._mat.unbind(0)]
        return {name: per[i] for name, i in self.index.items()}


@dataclass
class NeuronState:
    """Running numbers of one neuron, activation or other synapse-free layer."""

    spikes: Optional[Tensor] = state_field(Reduce.SUM)
    nonzero: Optional[Tensor] = state_field(Reduce.SUM)
    per_neuron: Optional[Tensor] = state_field(Reduce.SUM)  # None once the sample shape changed
    updates: Optional[Tensor] = state_field(Reduce.SUM)
    updates_dense: int = state_field(Reduce.SUM, 0)
    updates_first: int = state_field(Reduce.SUM, 0)
    rows: int = state_field(Reduce.SUM, 0)
    call_rows: Set[int] = state_field(Reduce.UNION, factory=set)  # rows of one call, for the samples check
    numel: int = state_field(Reduce.SUM, 0)
    calls: int = state_field(Reduce.SUM, 0)
    shape_changed: bool = state_field(Reduce.ANY, False)
    neurons: int = state_field(Reduce.LAST, 0)
    sample_shape: Tuple[int, ...] = state_field(Reduce.LAST, ())
    in_shape: Tuple[int, ...] = state_field(Reduce.LAST, ())
    out_shape: Tuple[int, ...] = state_field(Reduce.LAST, ())
    first_seen: Optional[int] = state_field(Reduce.MIN)
    pre_mem: Optional[Tensor] = state_field(None)  # snntorch membrane before the call (scratch)
