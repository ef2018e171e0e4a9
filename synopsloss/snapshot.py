"""Plain-data snapshots of a counter: what the table, the loss, Lightning, DDP and the CLI read.

:meth:`SynOpsCounter.snapshot` copies the counter's state to plain Python
numbers once (one device-to-host transfer) and returns a
:class:`CounterSnapshot`. Its layer records hold *sums* over the snapshot's
``samples`` samples (so snapshots of several batches or processes add up
exactly); :meth:`CounterSnapshot.per_layer` and :meth:`CounterSnapshot.total`
are the per-sample views.

Example
-------
>>> import torch, synopsloss as sl
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
>>> counter = sl.SynOpsCounter(net)
>>> _ = net(torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]))
>>> snap = counter.snapshot()
>>> snap.samples, snap.layers["0"].eff_acs, snap.total()["eff_acs"]
(2, 10.0, 5.0)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .errors import SynOpsWarning

__all__ = ["COUNT_KEYS", "LayerStats", "NeuronStats", "CounterSnapshot"]

#: The operation counts of every synaptic layer (per-sample views of :meth:`CounterSnapshot.per_layer`).
COUNT_KEYS = ("dense", "eff_macs", "eff_acs", "synops")


@dataclass(frozen=True)
class LayerStats:
    """One synaptic layer: sums over every call and sample of the snapshot.

    Attributes
    ----------
    name, type, kind
        Qualified module name, class name, :class:`~synopsloss.registry.LayerKind` value.
    order
        Forward order among all of the snapshot's layers (first call first).
    synops, dense, eff_macs, eff_acs
        Summed counts (divide by ``CounterSnapshot.samples`` for per sample).
    input_sum, input_nonzero
        Sum of the input magnitudes (spike events) and number of nonzero inputs.
    calls, rows
        Calls of the layer and sample-sized input rows over all calls.
    in_shape, out_shape, in_neurons
        One sample's input / output shape and input neurons (last call).
    weights
        Weight entries (``None`` when the rule has no single weight).
    biases
        Bias entries of the layer (0: none; ``None``: not known, a functional op).
    fanout_mean, fanout_max
        Effective fan-out over the input neurons (last call's map).
    data_fed
        Every call read a tensor the model itself was called with.
    sample_steps
        Samples x time steps the layer ran (divide by ``CounterSnapshot.samples``
        for its time steps per sample; see :meth:`SynOpsCounter.time_steps`).
    effective
        Nonzero input x nonzero weight taps, however they are classed (``eff_acs``
        + ``eff_macs`` unless integer spike counts were counted as events).
    in_values
        Input values read over all calls (rows x input neurons of each call: a layer
        run at two resolutions counts each at its own size).
    """

    name: str
    type: str
    kind: str
    order: int
    synops: float = 0.0
    dense: float = 0.0
    eff_macs: float = 0.0
    eff_acs: float = 0.0
    input_sum: float = 0.0
    input_nonzero: float = 0.0
    calls: int = 0
    rows: int = 0
    in_shape: Tuple[int, ...] = ()
    out_shape: Tuple[int, ...] = ()
    in_neurons: int = 0
    weights: Optional[int] = None
    biases: Optional[int] = None
    fanout_mean: Optional[float] = None
    fanout_max: Optional[float] = None
    data_fed: bool = False
    sample_steps: float = 0.0
    in_values: int = 0
    effective: float = 0.0


@dataclass(frozen=True)
class NeuronStats:
    """One neuron, activation or other synapse-free layer: sums over the snapshot's samples.

    ``spikes`` is the sum of output values, ``nonzero`` the nonzero outputs,
    ``updates`` the membrane updates (``None`` when not tracked for the type),
    ``updates_dense`` every neuron at every step, ``rows`` the sample-sized
    output rows over all calls, ``neurons`` one sample's output size,
    ``op_cost`` the operations of one update (``None``: unknown type).
    """

    name: str
    type: str
    kind: str
    order: int
    library: Optional[str] = None
    op_cost: Optional[int] = None
    leaky: Optional[bool] = None
    spikes: Optional[float] = None
    nonzero: Optional[float] = None
    updates: Optional[float] = None
    updates_dense: int = 0
    rows: int = 0
    numel: int = 0
    calls: int = 0
    neurons: int = 0
    sample_shape: Tuple[int, ...] = ()
    in_shape: Tuple[int, ...] = ()
    out_shape: Tuple[int, ...] = ()
    #: the layer's output width changed between calls (one module used at two places of different widths): its
    #: rates are over every output value (``numel``), and ``neurons`` is no single width
    mixed: bool = False


_LAYER_SUMS = ("synops", "dense", "eff_macs", "eff_acs", "input_sum", "input_nonzero", "calls", "rows", "sample_steps",
               "in_values", "effective")
_NEURON_SUMS = ("spikes", "nonzero", "updates", "updates_dense", "rows", "numel", "calls")


@dataclass(frozen=True)
class CounterSnapshot:
    """The counter's numbers at one moment, as plain data.

    Attributes
    ----------
    samples
        Number of samples the sums cover.
    layers
        Synaptic layers by name, in forward order.
    neurons
        Neuron, activation and other synapse-free layers by name, in forward
        order (empty for a counter created with ``neurons=False``).
    accumulated
        Whether the snapshot covers every batch since ``reset(accumulated=True)``.
    sample_steps
        Samples x time steps of the batches (:attr:`time_steps` per sample).
    per_sample
        Each sample's synops per layer, in sample order (counters created with
        ``per_sample=True``; empty otherwise): :meth:`distribution` reads them.
    """

    samples: int
    layers: Dict[str, LayerStats] = field(default_factory=dict)
    neurons: Dict[str, NeuronStats] = field(default_factory=dict)
    accumulated: bool = False
    sample_steps: float = 0.0
    per_sample: Dict[str, Tuple[float, ...]] = field(default_factory=dict)

    def distribution(self, layer: Optional[str] = None) -> Dict[str, float]:
        """Per-sample synops statistics of one layer, or of the whole model (``layer=None``).

        Returns ``n``, ``mean``, ``std`` (sample standard deviation, N - 1),
        ``p50`` / ``p95`` / ``p99`` (linear interpolation between order
        statistics, as ``numpy.percentile``), ``max`` and ``ci95``: the half
        width of the 95% confidence interval of the mean (Student's t with
        N - 1 degrees of freedom), for dataset means reported as mean +- ci95.

        Example
        -------
        >>> snap = CounterSnapshot(4, per_sample={"fc": (1.0, 2.0, 3.0, 10.0)})
        >>> d = snap.distribution()
        >>> d["p50"], d["max"], round(d["p95"], 2)
        (2.5, 10.0, 8.95)
        """
        if not self.per_sample:
            raise ValueError("this snapshot holds no per-sample synops: create the counter with per_sample=True (with "
                             "it, every layer was left out of the per-sample values: named in a SynOpsWarning)")
        if layer is None:
            values = [sum(v) for v in zip(*self.per_sample.values())]
        elif layer in self.per_sample:
            values = list(self.per_sample[layer])
        else:
            raise KeyError(f"no per-sample synops for layer {layer!r}; layers: {list(self.per_sample)}")
        return distribution(values)

    @property
    def time_steps(self) -> Optional[float]:
        """Time steps per sample (see :meth:`SynOpsCounter.time_steps`; ``None`` when unknown).

        Example
        -------
        >>> CounterSnapshot(4, sample_steps=12.0).time_steps
        3.0
        """
        return self.sample_steps / self.samples if self.samples and self.sample_steps else None

    def per_layer(self) -> Dict[str, Dict[str, float]]:
        """``{layer: {"dense", "eff_macs", "eff_acs", "synops"}}`` per sample, in forward order."""
        n = self.samples
        return {name: {k: (getattr(s, k) / n if n else 0.0) for k in COUNT_KEYS} for name, s in self.layers.items()}

    def total(self) -> Dict[str, float]:
        """The per-sample counts summed over layers."""
        rows = self.per_layer().values()
        return {k: sum(r[k] for r in rows) for k in COUNT_KEYS}

    def order(self) -> Dict[str, int]:
        """Every layer of the snapshot (synaptic and not) by forward position."""
        both = [*self.layers.values(), *self.neurons.values()]
        return {s.name: i for i, s in enumerate(sorted(both, key=lambda s: s.order))}

    def merge(self, other: "CounterSnapshot") -> "CounterSnapshot":
        """The snapshot of both sets of samples (sums added).

        Shapes, fan-outs and the other descriptive fields come from the record
        of a layer that ran (``calls > 0``), ``other``'s when both ran.

        Example
        -------
        >>> a = CounterSnapshot(2, {"fc": LayerStats("fc", "Linear", "synaptic", 0, synops=6.0)})
        >>> b = CounterSnapshot(1, {"fc": LayerStats("fc", "Linear", "synaptic", 0, synops=3.0)})
        >>> a.merge(b).per_layer()["fc"]["synops"]
        3.0
        """
        if not isinstance(other, CounterSnapshot):
            raise TypeError(f"CounterSnapshot.merge takes another CounterSnapshot, got {type(other).__name__}")

        def add(mine: Dict[str, Any], theirs: Dict[str, Any], keys: Tuple[str, ...]) -> Dict[str, Any]:
            out = dict(mine)
            for name, s in theirs.items():
                m = out.get(name)
                if m is None:
                    out[name] = s
                    continue
                if m.type != s.type or (getattr(m, "weights", None) is not None and getattr(s, "weights", None)
                                        is not None and m.weights != s.weights):
                    raise ValueError(
                        f"CounterSnapshot.merge: layer {name!r} is a {m.type} with {getattr(m, 'weights', None)} "
                        f"weights in one snapshot and a {s.type} with {getattr(s, 'weights', None)} in the other: "
                        "merge snapshots of the same model (its ranks or batches), not of different models")
                sums = {k: _add(getattr(m, k), getattr(s, k)) for k in keys}
                base = m if (m.calls and not s.calls) else s
                out[name] = dataclasses.replace(base, order=min(m.order, s.order), **sums)
            return dict(sorted(out.items(), key=lambda kv: kv[1].order))

        return CounterSnapshot(
            self.samples + other.samples,
            add(self.layers, other.layers, _LAYER_SUMS),
            add(self.neurons, other.neurons, _NEURON_SUMS),
            self.accumulated or other.accumulated,
            self.sample_steps + other.sample_steps,
            _merged_samples(self, other),
        )

    def all_reduce(self, group: Any = None) -> "CounterSnapshot":
        """The snapshot of every process's samples (``torch.distributed``; collective: call it on every rank).

        Every rank's snapshot is gathered (``all_gather_object``, one small
        pickle per rank) and the sums and sample counts are added in rank
        order, so every rank gets the same snapshot and per-sample numbers are
        the average over all ranks' samples, not a mean of per-rank means.
        Layers that ran on some ranks only are included, described by a rank
        where they ran; ``order`` is renumbered to one forward order merged
        from all ranks (the ranks' own orders are process-local). Without an
        initialised process group, returns the snapshot unchanged.

        Example
        -------
        >>> import torch.distributed as dist
        >>> snap = CounterSnapshot(2, {"fc": LayerStats("fc", "Linear", "synaptic", 0, synops=6.0)})
        >>> dist.is_initialized() or snap.all_reduce() is snap
        True
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        parts: List[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(parts, self, group=group)
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merge(part)
        return merged._renumbered(parts)

    def _renumbered(self, parts: List["CounterSnapshot"]) -> "CounterSnapshot":
        """``order`` as positions in one forward order merged from ``parts`` (layers that ran, per part)."""
        merged: List[str] = []
        for part in parts:
            records = [*part.layers.values(), *part.neurons.values()]
            prev: Optional[str] = None
            for rec in sorted((r for r in records if r.calls), key=lambda r: r.order):
                if rec.name not in merged:
                    merged.insert(merged.index(prev) + 1 if prev is not None else 0, rec.name)
                prev = rec.name
        rest = [n for n in [*self.layers, *self.neurons] if n not in merged]
        position = {n: i for i, n in enumerate(merged + rest)}

        def renumber(records: Dict[str, Any]) -> Dict[str, Any]:
            out = {n: dataclasses.replace(r, order=position[n]) for n, r in records.items()}
            return dict(sorted(out.items(), key=lambda kv: kv[1].order))

        return CounterSnapshot(self.samples, renumber(self.layers), renumber(self.neurons), self.accumulated,
                               self.sample_steps, self.per_sample)


def _add(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return a if b is None else b
    return a + b


def _merged_samples(a: "CounterSnapshot", b: "CounterSnapshot") -> Dict[str, Tuple[float, ...]]:
    """The per-sample synops of ``a.merge(b)``: none (with a warning) unless both hold them for all their samples."""
    def held(s: "CounterSnapshot") -> bool:
        return bool(s.per_sample) and all(len(v) == s.samples for v in s.per_sample.values())

    if (a.per_sample or b.per_sample) and not ((held(a) or not a.samples) and (held(b) or not b.samples)):
        warnings.warn(
            "synopsloss: merging a snapshot with per-sample synops and one without (a counter created without "
            "per_sample=True): the merged snapshot holds none, since its distribution() would leave samples out. "
            "Create every counter with per_sample=True.", SynOpsWarning, stacklevel=3)
        return {}
    return _concat(a.per_sample, b.per_sample, a.samples, b.samples)


def _concat(a: Dict[str, Tuple[float, ...]], b: Dict[str, Tuple[float, ...]], na: int,
            nb: int) -> Dict[str, Tuple[float, ...]]:
    """Per-sample values of two snapshots, one after the other (a layer absent from one: zeros there)."""
    if not a and not b:
        return {}
    names = list(a) + [n for n in b if n not in a]
    return {n: tuple(a.get(n, (0.0,) * na)) + tuple(b.get(n, (0.0,) * nb)) for n in names}


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for aa in (m * (b - m) * x / ((a - 1.0 + 2 * m) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1.0 + 2 * m))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def _beta_regularized(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``p >= 0.5``) of Student's t with ``df`` degrees of freedom, to 1e-12.

    Bisection on the distribution function ``1 - I_{df/(df+t^2)}(df/2, 1/2) / 2``.

    Example
    -------
    >>> round(t_quantile(0.975, 1), 4), round(t_quantile(0.975, 39), 4)
    (12.7062, 2.0227)
    """
    lo, hi = 0.0, 1.0
    while 0.5 * _beta_regularized(df / 2.0, 0.5, df / (df + hi * hi)) > 1.0 - p:
        hi *= 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2.0
        if 0.5 * _beta_regularized(df / 2.0, 0.5, df / (df + mid * mid)) > 1.0 - p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _percentile(sorted_values: List[float], q: float) -> float:
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def distribution(values: List[float]) -> Dict[str, float]:
    """``n``, ``mean``, ``std``, ``p50``, ``p95``, ``p99``, ``max`` and ``ci95`` of ``values`` (see
    :meth:`CounterSnapshot.distribution`)."""
    n = len(values)
    if not n:
        raise ValueError("no per-sample values")
    s = sorted(values)
    mean = sum(s) / n
    std = (sum((v - mean) ** 2 for v in s) / (n - 1)) ** 0.5 if n > 1 else 0.0
    t = t_quantile(0.975, n - 1) if n > 1 else math.nan
    return {"n": float(n), "mean": mean, "std": std, "p50": _percentile(s, 0.5), "p95": _percentile(s, 0.95),
            "p99": _percentile(s, 0.99), "max": s[-1], "ci95": t * std / n ** 0.5 if n > 1 else float("nan")}
