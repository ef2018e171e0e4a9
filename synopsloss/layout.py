"""Samples and time steps of a batch: the evidence the hooks gather, and the rules that read it.

One holder for the layout logic that the :class:`~synopsloss.SynOpsCounter` and
the :class:`~synopsloss.neurons.NeuronMonitor` share. The hooks write what
they see into an :class:`Evidence` (plain Python ints and shapes, no tensor),
and the functions here read it, with the layers' rows, when counts are read:

* :func:`reading` -- the priority chain for the number of samples ``B``:
  ``batch_size=``, a time-folding (sinabs ``*Squeeze``) layer, a layer whose
  input layout is known, a layer that knows its own layout (``batch_first``
  RNNs), ``shape[batch_dim]`` of the model's input;
* :func:`samples` -- that reading checked against every layer's rows: each
  call's rows must be a multiple of ``B``, and an uncertain reading (rows that
  could be ``[B, T]`` or ``[T, B]``) is refused, unless a layer's rows hold the
  input's dims ``1:`` (:func:`rows_span_dim1`), which only the batch-first
  reading is consistent with;
* :func:`time_layout` -- the batch's time steps ``T`` and the steps of a call
  that carries the time dim; :func:`layer_steps` (a layer's steps, the sum of
  :func:`call_steps` over its calls) uses the same ``T`` as the total, so an
  in-model time loop gives ``T`` in every row and in the total;
* :func:`check_declared_batch` -- a declared ``batch_size=`` checked against
  each input (a short last batch is refused, not divided by the declared size).

The functions take plain data: the evidence, the layers' states (anything
with the public fields ``rows``, ``rows_total``, ``in_shape``, ``leads``,
``calls`` and ``samples`` of :class:`synopsloss.state.SynapseState`) and the
counter's :class:`Options`.

Example
-------
>>> from types import SimpleNamespace
>>> from synopsloss import layout
>>> ev = layout.Evidence(root_batch=4, root_shape=(4, 3), root_calls=5)  # model called 5 times with [4, 3]
>>> fc = SimpleNamespace(rows={4}, rows_total=20, in_shape=(3,), leads={(4,): 5}, calls=5, samples=None)
>>> layers = {"fc": fc}
>>> layout.samples(ev, layers, layout.Options())
4
>>> steps, tc, source = layout.time_layout(ev, layers, layout.Options())
>>> steps, layout.layer_steps(fc, 4, tc), source
(5.0, 5, 'the calls of the model')
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Mapping, Optional, Sequence, Set, Tuple

__all__ = ["Evidence", "Options", "Reading", "reading", "samples", "time_layout", "call_steps", "layer_steps",
           "sample_steps", "rows_span_dim1", "check_declared_batch", "add_fold", "add_probe"]


@dataclass
class Evidence:
    """What the hooks learned about the layout of the current batch (Python ints, no tensors).

    Written by the model's root hook (``root_*``), by time-folding layers
    (``fold_*``: sinabs ``*Squeeze``, ``[B*T, ...]``) and by layers whose
    input layout is known (``probe_*``: SpikingJelly, norse, sinabs, snntorch).

    Example
    -------
    >>> ev = Evidence()
    >>> add_fold(ev, "squeeze", 2, 10)   # a [B*T=10, ...] call of a layer with batch_size=2
    >>> ev.fold_batch, ev.fold_steps, ev.fold_tc
    (2, {'squeeze': 5}, 5)
    """

    root_batch: Optional[int] = None  # shape[batch_dim] of the model's first input
    root_shape: Tuple[int, ...] = ()  # that input's shape
    root_calls: int = 0  # calls of the model in this batch
    root_note: str = ""  # why root_batch could not be read
    fold_batch: Optional[int] = None
    fold_layer: str = ""
    fold_steps: Dict[str, int] = field(default_factory=dict)  # time steps seen by each time-folding layer
    fold_tc: int = 0  # time steps of one folded call ([B*T, ...])
    probe_batch: Optional[int] = None  # samples from a layer whose input layout is known (SJ / norse / sinabs)
    probe_layer: str = ""
    probe_conflict: str = ""
    probe_steps: Dict[str, int] = field(default_factory=dict)  # time steps each probe saw, in first-call order
    probe_tc: int = 0  # most time steps in one probe call (the length of the data's time dim)
    root_steps: int = 0  # time steps of the model's input (time_dim=)
    root_tc: int = 0
    # the model's other tensor arguments whose batch dim differs from the first's: {storage: shape}; and those
    # that counted layers read as data (their storages), with whether a layer read the first argument
    root_others: Dict[int, Tuple[int, ...]] = field(default_factory=dict)
    root_fed: Set[int] = field(default_factory=set)
    root_first: int = -1  # the first argument's storage


@dataclass(frozen=True)
class Options:
    """The counter's layout options.

    ``batch_dim_given``: ``batch_dim=`` was passed (not the default 0);
    ``layout_given``: ``batch_dim=`` or ``batch_size=`` was passed;
    ``batch_first_layers``: the model has sinabs layers (which take ``[B, T, ...]``);
    ``fallback_batch_size``: the samples when no other source gives them (the model itself was not called).
    """

    batch_size: Optional[int] = None
    batch_dim: int = 0
    time_dim: Optional[int] = None
    batch_dim_given: bool = False
    layout_given: bool = False
    batch_first_layers: bool = False
    fallback_batch_size: Optional[int] = None  # samples when the model itself was not called (Lightning's batch)
    op_rows: FrozenSet[str] = frozenset()  # rows counted op by op (functional ops and activation products)


@dataclass(frozen=True)
class Reading:
    """A number of samples, where it came from, and whether the layout behind it is certain."""

    samples: int
    source: str
    certain: bool


def add_fold(ev: Evidence, name: str, b: int, rows: int) -> None:
    """A time-folding layer ``name`` read ``rows`` rows (``[B*T, ...]``) of ``b`` samples."""
    if ev.fold_batch is not None and b != ev.fold_batch:
        raise ValueError(
            f"synopsloss: time-folding layers disagree on the batch size ({ev.fold_layer!r}: "
            f"{ev.fold_batch}, {name!r}: {b}); give them the same batch_size"
        )
    ev.fold_batch, ev.fold_layer = b, name
    steps = rows // b if b else 0
    ev.fold_steps[name] = ev.fold_steps.get(name, 0) + steps
    ev.fold_tc = max(ev.fold_tc, steps)


def add_probe(ev: Evidence, name: str, b: int, t: int, gives_samples: bool) -> None:
    """A layer ``name`` whose input layout is known read ``b`` samples over ``t`` time steps in one call."""
    ev.probe_steps[name] = ev.probe_steps.get(name, 0) + t
    ev.probe_tc = max(ev.probe_tc, t)
    if not gives_samples:
        return
    if ev.probe_batch is None:
        ev.probe_batch, ev.probe_layer = b, name
    elif b != ev.probe_batch and not ev.probe_conflict:
        ev.probe_conflict = f"{name!r} saw {b}"


def reading(ev: Evidence, layers: Mapping[str, Any], options: Options) -> Optional[Reading]:
    """The number of samples by the first source that has one (``None`` when none has).

    In order: ``batch_size=``, a time-folding layer, a layer whose input
    layout is known (layers that disagree, or a ``batch_dim=`` that gives
    another number, raise), a layer that knows its layout (``batch_first``),
    ``shape[batch_dim]`` of the model's input (certain only when the layout
    was given, the model has batch-first layers, or a layer's rows hold the
    input's dims ``1:``). The rows are not checked here: see :func:`samples`.

    Example
    -------
    >>> reading(Evidence(root_batch=3, root_shape=(3, 8)), {}, Options())
    Reading(samples=3, source="dim 0 of the model's input (3, 8)", certain=False)
    >>> reading(Evidence(root_batch=3, fold_batch=2, fold_layer="sq"), {}, Options(batch_size=6)).samples
    6
    """
    if options.batch_size is not None:
        return Reading(options.batch_size, "batch_size=", True)
    if ev.fold_batch is not None:
        return Reading(ev.fold_batch, f"the time-folding layer {ev.fold_layer!r}", True)
    if ev.probe_batch is not None:
        b, source = ev.probe_batch, f"layer {ev.probe_layer!r}, whose input layout is known"
        if ev.probe_conflict:
            raise ValueError(
                f"synopsloss: layers whose input layout is known disagree on the number of samples: "
                f"{ev.probe_layer!r} saw {b}, {ev.probe_conflict}. Pass SynOpsCounter(model, batch_size=B).")
        if options.batch_dim_given and ev.root_batch is not None and ev.root_batch != b:
            given, drop = ((f"time_dim={options.time_dim} (so batch_dim={options.batch_dim})", "time_dim=")
                           if options.time_dim is not None else (f"batch_dim={options.batch_dim}", "batch_dim="))
            raise ValueError(
                f"synopsloss: {given} gives {ev.root_batch} samples (model input "
                f"{ev.root_shape}), but {source} received {b}. Drop {drop} (the layer's layout is "
                "known) or pass the right one.")
        lead = tuple(ev.root_shape[:2]) if ev.root_shape else ()
        held = any(b in tuple(shape[:2]) for shape in ev.root_others.values())  # (model(mask, x): x holds them)
        if lead and b not in lead and not held:  # (its rows fold the samples with other dims: x.flatten(0, 1))
            raise ValueError(
                f"synopsloss: {source} (its rows are samples) received {b} rows, but the model's input "
                f"{ev.root_shape} holds no dim of {b} among its first two: the layer reads the samples folded with "
                "other dims (x.flatten(0, 1) of [T, B, ...] into a SpikingJelly single-step layer), so its rows are "
                "no samples. Pass SynOpsCounter(model, batch_size=B), or run those layers multi-step on [T, B, ...].")
        return Reading(b, source, True)
    if any(s.samples for s in layers.values()):
        name, b = next((n, s.samples) for n, s in layers.items() if s.samples)
        return Reading(b, f"layer {name!r}, which knows its layout (batch_first)", True)
    if ev.root_batch is not None:
        _check_other_arguments(ev, options, layers)
        certain = options.layout_given or options.batch_first_layers or rows_span_dim1(ev.root_shape, layers)
        return Reading(ev.root_batch, f"dim {options.batch_dim} of the model's input {ev.root_shape}", bool(certain))
    if options.fallback_batch_size is not None and not ev.root_calls:
        # (certain only with a declared layout: a layer that reads more rows than that, such as a time-first
        # [T, B, ...] batch read whole, is refused rather than divided by dim 0)
        return Reading(options.fallback_batch_size,
                       f"dim {options.batch_dim} of the batch (the model itself was not called)", options.layout_given)
    return None


def _check_other_arguments(ev: Evidence, options: Options, layers: Mapping[str, Any]) -> None:
    """The samples are read from the model's first tensor argument: refuse when the layers read another argument,
    whose batch dim differs, as data (``model(ctx, x)``), or when no layer read either and the first is beside a
    tensor of the same sample shape with more entries in that dim that every layer's rows are a multiple of too: a
    size-1 (broadcast) tensor first (``model(gain[1, C], x[B, C])``), or a smaller one (``model(gain[2, C], x[4,
    C])`` whose ``x * gain.mean(0)`` a layer reads): both readings fit the rows."""
    if not ev.root_others or options.batch_dim_given:
        return
    d = options.batch_dim
    fed = [shape for ptr, shape in ev.root_others.items() if ptr in ev.root_fed]
    first_fed = ev.root_first in ev.root_fed
    if fed:  # layers read another argument, with another batch size, as data (the first one too, or not)
        other = fed[0]
    else:  # a [1, C] (or [2, C]) tensor first and a [B, C] one after it (the same sample shape): which is the batch?
        rows = [r for st in layers.values() for r in st.rows]
        alike = [s for s in ev.root_others.values()
                 if s[d] > max(ev.root_batch or 0, 1) and len(s) == len(ev.root_shape)
                 and s[d + 1:] == tuple(ev.root_shape[d + 1:])
                 and (ev.root_batch == 1 or (rows and all(r % s[d] == 0 for r in rows)))]
        if first_fed or ev.root_fed or not alike:
            return
        other = alike[0]
    raise ValueError(
        f"synopsloss: the samples are read from dim {d} of the model's first tensor argument {ev.root_shape} "
        f"({ev.root_batch}), but the model was also called with a tensor of shape {other} "
        + ("that its layers read as data" if fed else "with more entries in that dim")
        + ", so the batch may be that one. Pass SynOpsCounter(model, batch_size=B), or call the model with the "
        "batch as its first tensor argument.")


def samples(ev: Evidence, layers: Mapping[str, Any], options: Options) -> int:
    """Samples of the batch (:func:`reading`), checked against every layer's rows.

    Raises
    ------
    ValueError
        When no source gives the samples, when there are 0, when a layer's
        rows per call are not a multiple of them, or when the reading is not
        certain and a layer saw more rows than samples (``[B, T, ...]`` and
        ``[T, B, ...]`` are both consistent with the rows).

    Example
    -------
    >>> from types import SimpleNamespace
    >>> fc = SimpleNamespace(rows={12}, in_shape=(8,), samples=None)  # [3, 4, 8]: 12 rows of 8
    >>> samples(Evidence(root_batch=3, root_shape=(3, 4, 8)), {"fc": fc}, Options(batch_dim_given=True,
    ...                                                                           layout_given=True))
    3
    """
    found = reading(ev, layers, options)
    if found is None:
        why = ev.root_note or "the model itself was not called (only its submodules were)"
        raise ValueError(
            f"synopsloss cannot tell how many samples the batch has: {why}. "
            "Pass SynOpsCounter(model, batch_size=B)."
        )
    b, source, certain = found.samples, found.source, found.certain
    if b == 0:
        raise ValueError(
            f"synopsloss: the batch has 0 samples ({source}); there is nothing to count per sample. "
            "Skip empty batches, or call counter.reset() and run a batch with samples."
        )
    for name, state in layers.items():
        bad = sorted(r for r in state.rows if r % b)
        if bad:
            unbatched = len(state.in_shape) >= len(ev.root_shape) and ev.root_shape
            hint = (
                " The model seems to be called on one sample without a batch dimension: add one "
                "(x.unsqueeze(0)) or pass batch_size=1." if unbatched else
                " If your data is time-first [T, B, ...], pass batch_dim=1 (or time_dim=0, which also "
                "declares its time steps); otherwise pass batch_size=B."
            )
            if name in options.op_rows:
                hint = (" This row is an op counted op by op: a weight it uses must be an nn.Parameter (or be "
                        "computed from parameters); a buffer or a plain tensor attribute used directly is taken for "
                        "an activation, and a product of activations of different samples has no samples. A product "
                        "computed one sample at a time (a Python loop over the batch: torch.stack([q[i] @ k[i].T for "
                        "i in range(B)])) has no batch dim either: compute it batched (q @ k.transpose(-2, -1)). If "
                        "the model was called on one sample without a batch dimension, add one (x.unsqueeze(0)).")
            raise ValueError(
                f"synopsloss: layer {name!r} received {bad[0]} rows of shape {state.in_shape} in one call, "
                f"not a multiple of the {b} samples learned from {source}.{hint}"
            )
        if not certain and any(r != b for r in state.rows):
            r = max(state.rows)
            raise ValueError(
                f"synopsloss cannot tell how many samples the batch has: layer {name!r} received {r} rows "
                f"of shape {state.in_shape} in one call from a model input of shape {ev.root_shape}, so "
                f"the input has {r // b} more entries per sample than dim {options.batch_dim} says (time steps "
                "or tokens) and [B, T, ...] cannot be told from [T, B, ...]. Pass "
                "SynOpsCounter(model, batch_dim=0) for batch-first data (e.g. [B, tokens, ...]), batch_dim=1 "
                "for time-first [T, B, ...] data, time_dim=1 / time_dim=0 to declare [B, T, ...] / [T, B, ...] "
                "time series, or batch_size=B."
            )
    return b


def time_layout(ev: Evidence, layers: Mapping[str, Any], options: Options) -> Tuple[float, int, str]:
    """``(time steps of the batch, steps of a call that carries the time dim, source)``.

    In order: ``time_dim=`` (the length of that dim of the model's input,
    summed over calls), the first layer whose input layout is known, the
    first time-folding layer, a layer that knows its layout (``nn.RNN`` /
    ``LSTM`` / ``GRU``), else one step per call of the model -- or, for a model
    that loops over time inside its forward, the most common call count of its
    per-step layers (leading dims ``[B]`` only).

    When the steps come one per call (the model's calls, a per-step neuron, an in-model loop), a call whose
    leading dims are ``[T, B]``, ``[B, T]`` or ``[T*B]`` with that ``T`` (a readout reading the stacked spikes of
    all steps) carries the time dim: the steps of such a call are the batch's ``T``.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> cell = SimpleNamespace(leads={(2,): 5}, calls=5, samples=None)  # a loop of 5 steps inside one call
    >>> time_layout(Evidence(root_calls=1), {"cell": cell}, Options())
    (5.0, 5, 'the calls of the model')
    """
    steps, tc, source = _time_layout(ev, layers, options)
    if tc <= 1 and steps > 1 and float(steps).is_integer():
        tc = int(steps)
    return steps, tc, source


def _check_time_dim(ev: Evidence, layers: Mapping[str, Any], time_dim: int) -> None:
    """A declared ``time_dim=`` that lies inside one row of a layer reading the data (its features, channels or
    pixels) is no time dim: refused, not used to divide the counts by."""
    shape = tuple(ev.root_shape or ())
    tail = shape[time_dim:] if 0 <= time_dim < len(shape) else ()
    for name, state in layers.items():
        inner = tuple(getattr(state, "in_shape", ()) or ())
        fed = getattr(state, "data_calls", 0)
        if tail and fed and len(inner) >= len(tail) and inner[len(inner) - len(tail):] == tail:
            raise ValueError(
                f"synopsloss: time_dim={time_dim} was declared, but dim {time_dim} of the model's input (shape "
                f"{shape}) lies inside one row of layer {name!r}, which reads the data {inner} values at a time: it "
                "holds features, not time steps. Remove time_dim= (then each call of the model is one step), or "
                "pass the dim that holds the time steps.")


def _time_layout(ev: Evidence, layers: Mapping[str, Any], options: Options) -> Tuple[float, int, str]:
    """:func:`time_layout` before a call that reads every step at once is given the batch's steps."""
    if options.time_dim is not None and ev.root_steps:
        _check_time_dim(ev, layers, options.time_dim)
        return float(ev.root_steps), ev.root_tc, f"dim {options.time_dim} of the model's input"
    if ev.probe_steps:
        name, steps = next(iter(ev.probe_steps.items()))
        return float(steps), ev.probe_tc, f"layer {name!r}, whose input layout is known"
    if ev.fold_steps:
        name, steps = next(iter(ev.fold_steps.items()))
        return float(steps), ev.fold_tc, f"the time-folding layer {name!r}"
    for name, state in layers.items():
        if state.samples:  # a layer that knows its layout (nn.RNN / LSTM / GRU)
            tc = max((r // state.samples for r in state.rows), default=1)
            return state.rows_total / state.samples, tc, f"layer {name!r}, which knows its layout"
    # one step per call of the model; a model that loops over time inside its forward calls its
    # per-step layers ([B, ...] rows) that many times: the most common call count among them
    per_step = Counter(s.calls for s in layers.values()
                       if all(len(lead) == 1 and lead[0] != "T" for lead in s.leads))
    inner = max(per_step.items(), key=lambda kv: (kv[1], kv[0]))[0] if per_step else 0
    return float(max(ev.root_calls, inner)), 1, "the calls of the model"


def call_steps(lead: tuple, samples: int, tc: int) -> int:
    """Time steps one call covers: ``tc`` when its leading dims carry the time dim (``[T, B]``,
    ``[B, T]`` or ``[T*B]``), else 1 (one step; other leading dims are tokens).

    ``lead`` is the call's leading (row) dims, or ``("T", steps)`` from a rule
    that knows its layout.

    Example
    -------
    >>> call_steps((4, 2), 2, 4), call_steps((8,), 2, 4), call_steps((2, 7), 2, 4), call_steps(("T", 3), 2, 4)
    (4, 4, 1, 3)
    """
    if lead and lead[0] == "T":
        return int(lead[1])
    if tc <= 1 or not lead:
        return 1
    if len(lead) >= 2 and {lead[0], lead[1]} == {tc, samples}:
        return tc
    return tc if lead[0] == tc * samples else 1


def layer_steps(state: Any, samples: int, tc: int, total: Optional[float] = None) -> int:
    """Time steps a layer ran in a batch: the sum of :func:`call_steps` over its calls.

    ``state`` has ``leads`` (``{leading dims of a call: calls}``) and ``calls``.
    A layer called once per step whose other leading dim happens to equal ``T``
    (``N == T`` tokens) would read as ``T`` steps per call: a layer never runs more
    steps than the batch has (``total``), nor, when ``total`` is not given, more
    calls x steps than one step per call when it is called ``tc`` times or more (a
    sequence fed in chunks of ``tc`` steps, as many chunks as steps per chunk, runs
    ``calls x tc`` steps: ``total`` tells it from the tokens).

    Example
    -------
    >>> from types import SimpleNamespace
    >>> tokens = SimpleNamespace(leads={(2, 3): 3}, calls=3)   # 3 calls of [B=2, N=3 tokens], T=3
    >>> layer_steps(tokens, 2, 3)
    3
    """
    steps = sum(n * call_steps(lead, samples, tc) for lead, n in state.leads.items())
    if tc > 1 and steps > state.calls and (steps > total if total is not None else state.calls >= tc):
        return state.calls
    return steps


def sample_steps(ev: Evidence, layers: Mapping[str, Any], samples: int,
                 options: Options) -> Tuple[float, Dict[str, float]]:
    """The batch's time steps, and ``samples x steps`` of each layer (what a layer's per-step figures divide by).

    Example
    -------
    >>> from types import SimpleNamespace
    >>> fc = SimpleNamespace(leads={(2,): 3}, calls=3, samples=None)
    >>> sample_steps(Evidence(root_calls=3), {"fc": fc}, 2, Options())
    (3.0, {'fc': 6.0})
    """
    steps, tc, _ = time_layout(ev, layers, options)
    return steps, {name: float(samples * layer_steps(state, samples, tc, steps)) for name, state in layers.items()}


def rows_span_dim1(root_shape: Tuple[int, ...], layers: Mapping[str, Any]) -> bool:
    """Whether a layer's rows hold the model input's dims 1: (a ``[B, C, H, W]`` image repeated over T inside the
    model: a conv row is one ``(C, H, W)`` image). Dim 1 then lies inside one row, so it is no batch or time dim
    and only the batch-first reading is consistent with that layer's rows.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> conv = SimpleNamespace(in_shape=(3, 8, 8))      # rows [T*B] of (C, H, W) images
    >>> rows_span_dim1((2, 3, 8, 8), {"conv": conv}), rows_span_dim1((4, 2, 3), {"conv": conv})
    (True, False)
    """
    tail = tuple(root_shape[1:]) if root_shape else ()
    return bool(tail) and any(tuple(s.in_shape[len(s.in_shape) - len(tail):]) == tail
                              for s in layers.values() if len(s.in_shape) >= len(tail))


def check_declared_batch(shape: Optional[Sequence[int]], options: Options) -> None:
    """A declared ``batch_size=`` must fit the input: dim 0 holds it or a multiple of it (``[B, ...]``,
    ``[B*T, ...]``), or dim 1 holds it (``[T, B, ...]``).

    ``shape`` is the model's first input's shape (``None`` or ``()`` when it has
    none to check: no tensor, a nested or a 0-dim one). With ``batch_dim=``
    given, only that dim is checked (it holds ``B`` or a multiple). A short last batch (20 samples where 32
    were declared) raises instead of being divided by 32, also when another dim (64 time steps) happens to be a
    multiple of 32.

    Example
    -------
    >>> check_declared_batch((32, 10), Options(batch_size=32))      # 32 samples: fits
    >>> check_declared_batch((20, 10), Options(batch_size=32))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: synopsloss: the counter was created with batch_size=32, but the model's input has shape (20, 10) ...
    """
    b = options.batch_size
    if b is None or not shape:
        return
    shape = tuple(shape)
    has_dim = len(shape) > options.batch_dim
    if options.batch_dim_given:
        if has_dim and shape[options.batch_dim] and shape[options.batch_dim] % b == 0:
            return
    elif (shape[0] and shape[0] % b == 0) or (len(shape) > 1 and shape[1] == b):
        return
    where = f"dim {options.batch_dim}" if options.batch_dim_given else "neither dim 0 nor dim 1"
    raise ValueError(
        f"synopsloss: the counter was created with batch_size={b}, but the model's input has shape {shape} "
        f"({where} holds {b} samples or a multiple of them): a shorter last batch would be divided by {b}. "
        f"Set counter.batch_size to this batch's number of samples before it (counter.batch_size = "
        f"{shape[options.batch_dim] if has_dim else '...'}), or create the counter "
        "without batch_size= so that it reads the samples from the input.")
