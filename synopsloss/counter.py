"""The synaptic-operation counter: forward hooks, differentiable synops and NeuroBench counts.

Definitions (per layer call, input ``x`` of shape ``[*rows, *sample]``):

* **synops** (differentiable): ``sum(|x| * effective_map)`` -- each input
  value's magnitude times its number of nonzero outgoing weight taps, so a
  spike count of 2 counts twice and a -1 spike counts like a +1. The gradient
  is the map wherever ``x >= 0`` (also at 0, so the loss reaches silent
  neurons). Spikes averaged by an ``AvgPool`` are multiplied back by the
  pool's divisor (counted as spike events) when the pool's input is integer.
* **dense**: every weight tap of every input neuron, whatever its value.
* **effective ops**: ``sum((x != 0) * effective_map)``: nonzero input times
  nonzero weight. They are **ACs** when every value of the call's input is in
  {-1, 0, 1} (spikes), else **MACs** (NeuroBench's rule).
* Biases are not synapses.

Everything is summed over every forward call since :meth:`SynOpsCounter.reset`
(all time steps) and divided by the number of *samples* of the batch, never by
samples x time steps. The rules below live in :mod:`synopsloss.layout` (shared with
the neuron monitor). How the number of samples ``B`` is learned, in order:

1. ``batch_size=`` given to the counter;
2. sinabs ``*Squeeze`` layers (``batch_size``, or ``rows // num_timesteps``),
   for models that fold time into the batch as ``[B*T, ...]``;
3. layers whose input layout is known (:func:`synopsloss.registry.time_probes`):
   SpikingJelly modules (``step_mode='m'`` and ``MultiStepModule`` classes:
   ``[T, B, ...]``, ``'s'``: ``[B, ...]``), norse sequence modules
   (``[T, B, ...]``) and cells (``[B, ...]``), sinabs neurons
   (``[B, T, ...]``). The model's own input may then be ``[T, B, ...]`` or
   ``[B, ...]`` (repeated inside): no ``batch_dim`` is needed, and one that
   disagrees is an error;
4. ``shape[batch_dim]`` of the first tensor the model itself is called with
   (searched in nested lists, tuples and dicts). When every layer's call has
   exactly ``B`` rows (snntorch loops called once per time step with
   ``[B, ...]``, models that take ``[B, T, ...]`` and loop inside) that is
   certain. When layers see more rows than that (``[B, T, ...]`` or
   ``[T, B, ...]`` into a ``Linear``, tokens), ``B`` is used only when the
   layout is known: ``batch_dim=`` passed explicitly, or sinabs layers (which
   take ``[B, T, ...]``); otherwise reading raises and says what to pass.

Each layer's rows per call must be a multiple of ``B``; when they are not, or
when ``B`` cannot be learned, reading the counts raises an error that says so.

Time steps (:meth:`SynOpsCounter.time_steps`, ``CounterSnapshot.time_steps``,
the table's ``time_steps``, ``synops_per_step`` and ``synops_per_s`` columns,
``SynOpsLoss(budget=...)``) are learned per batch, in order:

1. ``time_dim=``: the length of that dim of the model's input (summed over calls);
2. the first layer of 3. above to run: the steps its calls covered
   (``T`` per ``[T, B, ...]`` call, one per ``[B, ...]`` call, so a loop of
   norse cells inside the model counts its steps); snntorch neurons likewise
   (one step per call);
3. sinabs ``*Squeeze`` layers: rows / ``B``;
4. ``nn.RNN`` / ``LSTM`` / ``GRU`` layers: their sequence length;
5. otherwise the number of calls of the model (snntorch-style loops). A
   dimension the counter is not told about is not time: ``[B, N, C]`` into a
   ``Linear`` is ``N`` tokens at one step.

A layer's time steps are the sum over its calls of the steps each covered:
``T`` when the call's leading (non-sample) dims carry the time dim --
``[T, B, ...]``, ``[B, T, ...]`` or ``[T*B, ...]`` (SpikingJelly's
``SeqToANNContainer``) --, else one; the remaining leading dims are tokens. A
head applied to the time-averaged output runs one step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections import Counter
import math
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Set, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import frameworks, recurrent, registry, sharding
from . import layout as batch_layout
from ._validate import check_int
from .hooks import HookSet, foreign_forward_hooks, functorch_level, next_stamp, pop_package_modes, push_modes
from .hooks import mode_depth as _MODE_DEPTH
from .hooks import exporting as _EXPORTING
from .hooks import compiling as _COMPILING
from .hooks import STAMPS
from torch.nn.modules.module import _global_forward_hooks as _GLOBAL_FORWARD_HOOKS
from .errors import SynOpsWarning, UnsupportedLayerWarning
from .maps import LayerMaps, MapCache, OpCounts, Rule, geometry, module_map_args, rule_weight, weight_mask
from .records import Call, LastInput, WholeSpikes, reducible_now, reduce_now, version_of, view_lead
from .fastpath import EncoderGuard, FusedGuard, layer_takes_fast_path, mha_takes_fast_path
from .opscope import OpScope, class_code, compiled_submodules
from .pooling import PoolEvents
from .reductions import Scratch, same_bytes
from .snapshot import COUNT_KEYS, CounterSnapshot, LayerStats
from .state import SUM_KEYS, SynapseState, Totals, _sum, add_now, fold, settle_all

__all__ = ["SynOpsCounter", "SynOpsWarning", "UnsupportedLayerWarning", "COUNT_KEYS"]


@dataclass
class _Layer:
    """A counted layer as attached: its module, rule and map cache (no per-batch numbers)."""

    module: nn.Module
    rule: Rule
    maps: MapCache
    last: Any = None  # (in_shape, out_shape, weight, entry) of the last call: a repeated call skips the map look-up
    same: Optional["_Repeat"] = None  # what a call like the last one reuses (its checks passed; same record but x)
    once: Optional["_Once"] = None  # evaluated twice per call of its neuron (registry.REPEATED_EVALUATIONS)


class _CachedWeights:
    """``torch.nn.utils.parametrize.cached()`` from a parametrized layer's forward pre-hook to the end of its forward
    hooks: the counting hook reads the weight the forward used (one evaluation of the parametrization per call, as
    without the counter; nothing is cached after the call)."""

    def __init__(self) -> None:
        self._open: List[Any] = []

    def enter(self, module: nn.Module, args: tuple) -> None:
        window = parametrize.cached()
        window.__enter__()
        self._open.append(window)

    def exit(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._open:
            self._open.pop().__exit__(None, None, None)


class _Once:
    """A layer that its neuron module evaluates twice per call on the same input (snntorch's zero reset runs
    ``recurrent(self.spk)`` twice): the second call within one call of the neuron is not counted.

    :meth:`enter` is the neuron's forward pre-hook (it numbers the neuron's calls); :meth:`repeated` tells
    whether a call of the layer reads what its previous call read within the same call of the neuron (while its
    forward runs: :meth:`exit` closes the window), while the
    neuron's attribute has the value that makes it evaluate twice: the same tensor, unchanged, or a tensor of
    equal values (SConv2dLSTM concatenates its input and membrane anew for each evaluation). The previous input
    is held until the neuron's next call."""

    __slots__ = ("neuron", "attr", "value", "serial", "last", "inside")

    def __init__(self, neuron: nn.Module, attr: str, value: Any) -> None:
        self.neuron = weakref.ref(neuron)
        self.attr, self.value = attr, value
        self.serial = 0
        self.last: Optional[tuple] = None  # (serial, the input, its version)
        self.inside = False  # the neuron's forward is running

    def enter(self, module: nn.Module, args: tuple) -> None:
        self.serial += 1
        self.last = None
        self.inside = True

    def exit(self, module: nn.Module, args: tuple, output: Any) -> None:
        """The neuron's forward returned (or raised): a call of the layer after it (a readout of the spikes by
        the user's code) is a call of its own, counted."""
        self.inside = False
        self.last = None

    def repeated(self, args: tuple) -> bool:
        neuron = self.neuron()
        x = args[0] if args and isinstance(args[0], Tensor) else None
        if x is None or neuron is None or not self.inside or getattr(neuron, self.attr, None) != self.value:
            self.last = None
            return False
        last = self.last
        if last is not None and last[0] == self.serial:
            prev = last[1]
            if prev is x and last[2] == x._version:
                return True
            if prev.shape == x.shape and prev.dtype == x.dtype and prev.device == x.device:
                with torch.no_grad():
                    if same_bytes(prev.detach(), x.detach()):  # (the same spikes: the same bytes)
                        return True
        self.last = (self.serial, x, x._version)
        return False


class _Repeat(NamedTuple):
    """What a call like a layer's last one reuses (:meth:`SynOpsCounter._count`): the checks it passed and its
    record, all but the input."""

    weight: Tensor  # the weight object as used
    x_shape: torch.Size
    out_shape: torch.Size
    dtype: torch.dtype
    device: torch.device
    rows: int
    in_values: int  # rows x input neurons
    lead: Tuple[int, ...]  # the leading (row) dims
    entry: LayerMaps
    attr: str  # the weight's name in the module's parameters ("" for a rule that computes it)
    in_shape: Tuple[int, ...]  # one sample of the input and of the output
    sample_out: Tuple[int, ...]
    in_neurons: int
    maps: MapCache  # the layer's map cache (owner of ``entry``)
    events: bool  # integer inputs counted as events (``integer_spikes="events"``) when the call ran
    geometry: tuple  # the layer's stride, padding, ... (:func:`synopsloss.maps.geometry`), checked per batch


@dataclass
class _Batch(batch_layout.Evidence):
    """The current batch: its layout evidence (:class:`synopsloss.layout.Evidence`, whose fields the root,
    time-folding and probe hooks write) and the layers' running numbers."""

    states: Dict[str, SynapseState] = field(default_factory=dict)  # read through ``layers`` (tallied)
    # repeated calls with gradients, per layer: [forward-order stamp of the first, the weight's version at it, then
    # each call as appended (input, its version, the _Repeat, weight, data flag)], tallied into ``states`` when
    # ``layers`` is read
    quick: Dict[str, list] = field(default_factory=dict)
    unreduced: Dict[int, SynapseState] = field(default_factory=dict)  # layers with calls made without gradients
    unreduced_bytes: int = 0  # bytes of the inputs those calls hold
    # calls reduced when made: (id(weight as used), id(map entry)) -> (the entry's current map, the weight, its
    # version when checked); the map is checked against the weight once per forward and after each in-place change
    current: Dict[tuple, tuple] = field(default_factory=dict)
    # the nonzero patterns of the weights of calls made with gradients, as used: id(weight) -> (weight, its version,
    # bool mask) (:meth:`pattern`)
    patterns: Dict[int, tuple] = field(default_factory=dict)
    # each layer's last call reduced when made, whose counts a call with the same input takes again (LastInput)
    last_inputs: Dict[str, LastInput] = field(default_factory=dict)
    input_shape: Tuple[int, ...] = ()  # the shape of the first tensor the model was first called with
    probe_major: Optional[bool] = None  # a layer of known layout read the data as [B, T, ...] (True) or [T, B, ...]
    fed_out: Optional[Any] = None  # weak reference to a data-fed layer's output with the data's leading dims
    inputs: Set[int] = field(default_factory=set)  # storage pointers of the data the model was called with
    held: List[Tensor] = field(default_factory=list)  # that data, held so that no other tensor reuses its memory
    outputs: List[Any] = field(default_factory=list)  # weak references to tensors the model returned
    pending: bool = False  # a forward of the model started and has not returned (or raised)
    grad: bool = False  # the model's last forward started with gradients on
    grad_calls: int = 0  # forwards of the model started with gradients on
    failed: bool = False  # a forward of the model raised
    read: bool = False  # counts of this batch were read
    backwarded: bool = False  # its synops were backpropagated

    @property
    def layers(self) -> Dict[str, SynapseState]:
        """The layers' states with every call tallied (a repeated call with gradients only appends to ``quick``;
        its layer's state is made here, stamped with the order of its first call)."""
        if self.quick:
            for name in list(self.quick):
                self.tally_quick(name)
        return self.states

    def tally_quick(self, name: str) -> None:
        """Move layer ``name``'s repeated calls from ``quick`` into its state's records (in call order)."""
        q = self.quick.pop(name)
        st = self.states.get(name)
        if st is None:
            st = self.states[name] = SynapseState(first_seen=q[0], device=q[4][2].device)
        _tally(st, q[4:], q[1], entry=q[2], pattern=q[3])

    def pattern(self, weight: Tensor) -> Tensor:
        """``weight``'s nonzero pattern now (bool), taken once per weight object and version in the batch: the
        calls' maps are checked against it when read, so that a change made after the forward without a version
        bump (a fused optimizer step, an edit through ``.data``) does not change their counts."""
        version = version_of(weight)
        seen = self.patterns.get(id(weight))
        if seen is not None and seen[0] is weight and seen[1] == version >= 0:
            return seen[2]
        if weight.layout == torch.strided and getattr(weight, "full_tensor", None) is None:
            mask = weight.bool()  # (one cast, no graph: NaN and every nonzero value are True, as weight != 0)
        else:
            mask = weight_mask(weight)  # (a DTensor's whole pattern)
        self.patterns[id(weight)] = (weight, version, mask)
        return mask


def _tally(state: SynapseState, entries: List[tuple], wversion: int = -1, record: bool = True,
           entry: Optional[LayerMaps] = None, pattern: Optional[Tensor] = None) -> None:
    """Add a layer's repeated calls (input, its version, the :class:`_Repeat` it repeats, the weight, whether it
    read data) to the state's fields and records, in call order (``wversion``: the weight's version at the first
    of them, -1 when not known; ``entry``: the map entry that stood for the weight then, the latest rebuild of the
    repeat's (``LayerMaps.newest``); ``record=False``: the calls were reduced when made, they are not recorded)."""
    for x, version, same, weight, data in entries:
        rows = same.rows
        state.calls += 1
        state.rows_total += rows
        state.rows.add(rows)
        state.in_values += same.in_values
        state.data_calls += data
        state.leads[same.lead] += 1
        if record:
            state.records.append(Call(x, rows, entry or same.entry, weight, same.maps, None, None, version,
                                      same.events, wversion=wversion, pattern=pattern))
    last = entries[-1][2]
    state.in_shape, state.out_shape, state.in_neurons = last.in_shape, last.sample_out, last.in_neurons


def _tensors(obj: Any, out: List[Tensor]) -> List[Tensor]:
    """Every tensor in ``obj`` (nested lists, tuples and dicts), in order."""
    if isinstance(obj, Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tensors(o, out)
    return out


def _storage(t: Tensor) -> int:
    if t.layout is not _STRIDED or isinstance(t, _LAZY):
        return -1  # sparse or uninitialised (lazy): no storage; a layer that receives one says so
    return t.untyped_storage().data_ptr()


def _in_backward() -> bool:
    """Whether autograd is running a backward pass (gradient checkpointing re-runs forwards there)."""
    return torch._C._current_graph_task_id() != -1


#: inputs that calls made without gradients may hold before they are reduced (else: when the forward returns)
HELD_BYTES = 64 * 2 ** 20

#: (weight, map) pairs whose current map a batch keeps for the calls it reduces at once (SynOpsCounter._reduced_now)
_CURRENT_MAPS = 256

#: the per-call checks of the counter's fast path, bound once (C functions; see ``SynOpsCounter._count``)
_LEVEL = functorch_level
_TRACING = torch._C._get_tracing_state
_TASK = torch._C._current_graph_task_id
_GRAD_ON = torch.is_grad_enabled
_NEXT_STAMP = STAMPS.__next__  # next_stamp() without its frame
_STRIDED = torch.strided
_LAZY = nn.parameter.UninitializedTensorMixin


def _functorch_level(t: Tensor) -> int:
    try:
        return torch._C._functorch.maybe_get_level(t)
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        return -1


class SynOpsCounter:
    """Count the synaptic operations of a model, differentiably, per sample.

    Attaches forward hooks to every layer with a synapse rule (``nn.Linear``,
    ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d``, recurrent layers and
    registered ones), to average-pooling layers (spike-event correction) and to
    the root model (number of samples). Nothing is stored on the model: all
    state lives in the counter, keyed by the layers' qualified names, and
    :meth:`remove` (or leaving the ``with`` block) takes every hook off.

    Reading: :meth:`synops` (differentiable, the loss input), :meth:`snapshot`
    (plain data: per-layer sums, shapes, fan-outs; ``.per_layer()`` and
    ``.total()`` per sample) and :meth:`table`.

    Parameters
    ----------
    model
        The network (snntorch, sinabs or plain ``torch.nn``).
    batch_size
        Number of samples per batch, if it cannot be read from the inputs (see
        the module docstring for how it is learned otherwise).
    batch_dim
        Dimension of the model's first tensor argument that holds the samples
        (``1`` for time-first ``[T, B, ...]`` data). Passing it (even ``0``)
        also declares the layout certain.
    strict
        Raise instead of warn when a module with parameters cannot be counted.
    custom_rules
        ``{module type: Rule}`` looked up before the global registry (build it
        with :func:`synopsloss.register_rule` and ``registry=``).
    neurons
        Also track the spiking neuron layers (firing rates, neuron operations,
        membrane updates) and the layers without synapses, for :meth:`table`.
        ``False`` skips that bookkeeping when only synops are needed (e.g. for
        a :class:`~synopsloss.SynOpsLoss` during training): the synaptic
        numbers are the same either way; the table then holds the synaptic
        layers only.
    check_finite
        :meth:`synops` raises if an input held NaN or inf (one device sync per
        call of :meth:`synops`; the layer hooks never synchronise).
    auto_reset
        Each call of the model is one batch: a call starts a new batch as
        :meth:`reset` would (for models that take the whole sequence in one
        call, e.g. evaluation loops over ``[B, T, ...]`` batches).
    ops
        Op-level counting (:mod:`synopsloss.opscope`): ``"auto"`` counts,
        op by op, the forwards that module hooks cannot see (attention
        products, ``nn.MultiheadAttention``, functional ``F.linear`` /
        ``F.conv2d`` / ``@`` with the model's weights, masked or QAT weights);
        plain module models are unchanged. ``"all"``: every op of the whole
        forward (slower). ``"none"``: module hooks only.
    time_dim
        Dimension of the model's first tensor argument that holds the time
        steps (``1`` for ``[B, T, ...]``, ``0`` for ``[T, B, ...]``; then
        ``batch_dim`` defaults to the other one). Needed only for layouts the
        counter cannot know: SpikingJelly, norse, sinabs and snntorch layers
        tell it (see the module docstring). Layers whose input carries this
        dim (``[B, T, ...]``, ``[T, B, ...]`` or ``[B*T, ...]``) run ``T`` steps
        per call; a dim that is not declared is not time (tokens).
    time_folded
        The model's input folds time into its batch dim (``[B*T, ...]``, as
        sinabs' ``*Squeeze`` layers take it) without a layer that says so:
        with ``batch_size=B`` its batch dim holds ``T = dim / B`` steps, and
        layers that read all of its rows run ``T`` steps per call.
    integer_spikes
        How an input of integers beyond {-1, 0, 1} (spike counts of
        integer / multi-bit neurons such as SpikingJelly's ``ILIFNode``, the
        output of a sum pool) is counted. ``"events"`` (default): a count of
        ``k`` is ``k`` spike events, each an accumulate, so its effective ACs
        are its synops (``count x fan-out``), as event-driven hardware sends
        them. ``"neurobench"``: NeuroBench's definition, binarised: nonzero
        inputs x fan-out, as MACs (any non-binary input is a MAC there).
        Synops are ``count x fan-out`` either way.
    encoding
        How integer spike counts reach each layer on the hardware: one name for
        every layer, or ``{layer: name}``. ``"unary"`` (default; also right for
        ternary {-1, 0, 1} spikes): a count of ``k`` is ``k`` events (a D-slot
        thermometer code, SpikingJelly's ``SpikeCountToBinary``).
        ``"bitplane"``: a count is sent as its binary digits, one event per set
        bit, weighted ``2^b`` at the synapse (``5 = 101b``: 2 events), so synops
        and ACs are ``popcount(count) x fan-out``; the gradient is that of the
        count (straight through).
    per_sample
        Also keep each sample's synops (:meth:`per_sample`; the snapshot's
        ``per_sample`` values and :meth:`CounterSnapshot.distribution`: p50 /
        p95 / p99 / max and a confidence interval of the mean over the samples;
        ``SynOpsLoss(quantile=...)``). Costs one small matrix product per input
        shape at read and, at :meth:`reset`, one device-to-host copy of the
        batch's per-sample values (kept for the accumulated distribution).

    Example
    -------
    >>> import torch, synopsloss as sl
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
    >>> with sl.SynOpsCounter(net) as counter:
    ...     _ = net(torch.tensor([[1.0, 0.0, -1.0]]))
    ...     counter.snapshot().per_layer()["0"]
    {'dense': 6.0, 'eff_macs': 0.0, 'eff_acs': 4.0, 'synops': 4.0}
    """

    is_differentiable = True
    higher_is_better = False

    def __init__(
        self,
        model: nn.Module,
        *,
        batch_size: Optional[int] = None,
        batch_dim: Optional[int] = None,
        strict: bool = False,
        custom_rules: Optional[Mapping[type, Rule]] = None,
        check_finite: bool = True,
        neurons: bool = True,
        auto_reset: bool = False,
        time_dim: Optional[int] = None,
        ops: str = "auto",
        integer_spikes: str = "events",
        per_sample: bool = False,
        encoding: Union[str, Mapping[str, str], None] = None,
        time_folded: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"SynOpsCounter expects a torch.nn.Module, got {type(model).__name__}")
        _check_optional_int("batch_size", batch_size, minimum=1)
        _check_optional_int("batch_dim", batch_dim, minimum=0)
        _check_optional_int("time_dim", time_dim, minimum=0)
        if time_dim is not None and batch_dim is None:
            batch_dim = 1 if time_dim == 0 else 0
        if time_dim is not None and time_dim == batch_dim:
            raise ValueError(f"time_dim and batch_dim must be different dims of the input, both are {time_dim}")
        if custom_rules is not None and not isinstance(custom_rules, Mapping):
            raise TypeError(f"custom_rules must be a mapping {{module type: Rule}}, got {type(custom_rules).__name__}")
        for flag, value in (("strict", strict), ("check_finite", check_finite), ("neurons", neurons),
                            ("auto_reset", auto_reset), ("per_sample", per_sample), ("time_folded", time_folded)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False, got {type(value).__name__} {value!r}")
        if custom_rules is not None:
            for key, rule in custom_rules.items():
                if not (isinstance(key, type) and issubclass(key, nn.Module)) or not isinstance(rule, Rule):
                    raise TypeError(
                        f"custom_rules maps nn.Module subclasses to rules, got {key!r}: {type(rule).__name__}; "
                        "build it with synopsloss.register_rule(Type, registry=rules)")
        if time_folded and (batch_size is None or time_dim is not None):
            raise ValueError("time_folded=True reads the time steps as the input's batch dim divided by batch_size: "
                             "give batch_size=B (and no time_dim=)")
        self.time_folded = time_folded
        self.model = model
        self.batch_size = batch_size
        #: samples of a batch in which the model itself is not called (only its submodules are, as a
        #: LightningModule's ``training_step`` may do): set per batch by the Lightning callbacks; when the model is
        #: called, its input decides (``batch_size=`` declares them always)
        self.fallback_batch_size: Optional[int] = None
        self.batch_dim = 0 if batch_dim is None else batch_dim
        self.time_dim = time_dim
        self._layout_given = batch_dim is not None or batch_size is not None
        self._batch_dim_given = batch_dim is not None
        self.strict = bool(strict)
        self.check_finite = bool(check_finite)
        self.auto_reset = bool(auto_reset)
        self._layers: Dict[str, _Layer] = {}
        # {name: (T, B)} of the SpikingJelly folding containers running now (their children read [T*B, ...])
        self._folding: Dict[str, Tuple[int, int]] = {}
        self._shaped: List[_Layer] = []
        self.integer_spikes = integer_spikes
        self._encoding = _check_encoding(encoding)
        self.per_sample_counts = bool(per_sample)
        self._sample_values: Dict[str, List[float]] = {}  # accumulated per-sample synops, per layer
        self._sampled = 0  # accumulated samples whose per-sample synops were kept (per_sample_counts on)
        self._rules: Dict[type, Rule] = dict(custom_rules or {})
        self._hooks = HookSet(self)
        self._scratch = Scratch()  # reused work buffers of the hooks (CPU), shared with the pools and neurons
        # the outputs of this batch's neurons whose spikes are whole numbers by construction (read by the pools and
        # by the calls reduced at once: no pass over them to say so)
        self._whole = WholeSpikes()
        self._pools = PoolEvents(self._scratch, warn=weakref.WeakMethod(self.warn), whole=self._whole)
        self._guards = HookSet(self)  # TransformerEncoder fast-path guards: they pause the counter's own hooks
        self._maps: Dict[str, MapCache] = {}
        self._unsupported: List[str] = []
        self._batch_first_layers = False  # sinabs layers take [B, T, ...]
        self._warned: Set[str] = set()
        self._batch = _Batch()
        self._batch_index = 0  # batches started (resets): the public batch_index
        self._totals: Dict[str, SynapseState] = {}  # Python fields of the running totals, per layer
        self._sums = Totals()  # their summed tensor fields
        self._total_samples = 0
        self._total_sample_steps = 0.0
        self._monitor: Optional[Any] = None
        self._track_neurons = bool(neurons)
        self._scope = OpScope(self, ops)
        self.attach()

    @property
    def integer_spikes(self) -> str:
        """How integer spike counts are counted (``"events"`` or ``"neurobench"``; see the class docstring)."""
        return self._integer_spikes

    @integer_spikes.setter
    def integer_spikes(self, value: str) -> None:
        if value not in ("events", "neurobench"):
            raise ValueError(f"integer_spikes must be 'events' (a count of k is k accumulate events) or "
                             f"'neurobench' (binarised, as MACs), got {value!r}")
        self._integer_spikes = value
        self._forget_repeats()

    @property
    def per_sample_counts(self) -> bool:
        """Whether each sample's synops are kept (``per_sample=True``)."""
        return self._per_sample

    @per_sample_counts.setter
    def per_sample_counts(self, value: bool) -> None:
        self._per_sample = bool(value)
        self._forget_repeats()

    def _forget_repeats(self) -> None:
        """A setting that every recorded call reads changed: the next call of each layer is checked in full."""
        for layer in self._layers.values():
            layer.same = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def attached(self) -> bool:
        """Whether the hooks are on the model."""
        return self._hooks.attached

    @property
    def layer_names(self) -> List[str]:
        """Qualified names of the counted layers, in definition order, then the op rows seen so far
        (``blocks.0.attn.matmul``: :mod:`synopsloss.opscope`), in the order they were first seen."""
        return list(self._layers) + [n for n in self._scope.rows if n not in self._layers]

    @property
    def unsupported(self) -> List[str]:
        """Modules with parameters that no rule counts, as ``'name (Type)'``."""
        return list(self._unsupported)

    def attach(self) -> "SynOpsCounter":
        """Register the hooks (done by the constructor; a no-op when attached)."""
        if self.attached:
            return self
        scripted = [n or "<root>" for n, m in self.model.named_modules() if isinstance(m, torch.jit.ScriptModule)]
        if scripted:
            raise TypeError(
                f"synopsloss: module(s) {scripted} are TorchScript (torch.jit.script / torch.jit.trace), which takes "
                "no forward hooks: their synapses cannot be counted. Count the eager model (script it after "
                "counting, or keep an eager copy with the same weights for counting).")
        self._layers.clear()
        self._unsupported = []
        self._scope.reset_plan()
        compiled = compiled_submodules(self.model)
        if compiled:
            self._warn_once(
                f"synopsloss: submodule(s) {', '.join(repr(n) for n in compiled)} were compiled with torch.compile "
                "before the counter attached; compiled code does not run the counter's hooks, so their synapses "
                "may not be counted. Attach the counter first, then compile.", stacklevel=4)
        self._hooks.pre(self.model, SynOpsCounter._root_pre_hook, with_kwargs=True, quiet=True)
        self._hooks.forward(self.model, SynOpsCounter._root_post_hook, quiet=True)
        pools = [m for m in self.model.modules() if registry.pool_divisor(m) is not None]
        frames = PoolEvents.frame_modules(self.model, _calls_of, pools)  # functional pools, cat, dropout
        # else no layer needs to follow pool outputs (a training dropout of spikes tags its output as a pool does)
        self._any_pool = bool(pools or frames) or any(
            registry.dropout_keep(m) is not None and registry.own_forward(m) for m in self.model.modules())
        # the modules' buffer dicts: buffers may be (re)assigned and registered later, in these same dicts
        self._buffer_dicts = [m._buffers for m in self.model.modules()]
        self._attached_modules: "weakref.WeakSet[nn.Module]" = weakref.WeakSet(self.model.modules())
        parametrized: List[str] = []  # "<name>.parametrizations." of parametrized modules
        unrun = tuple(n + "." for n in registry.unrun_children(self.model))  # never run by their parent's forward
        for name, module in self.model.named_modules():
            if parametrize.is_parametrized(module):
                parametrized.append(f"{name}.parametrizations." if name else "parametrizations.")
            if any(name.startswith(p) for p in parametrized):
                continue  # weight_norm / spectral_norm parametrizations: their parameters are the owner's
            if unrun and (name + ".").startswith(unrun):
                continue  # (sinabs' from_model Network: the source ANN, kept beside the spiking model)
            self._attach_module(name, module)
        for name, (layout, gives_samples) in registry.time_probes(self.model).items():
            self._hooks.pre(self.model.get_submodule(name), functools.partial(
                SynOpsCounter._probe_hook, name=name, layout=layout, samples=gives_samples), quiet=True)
        self._sharded = sharding.ShardedLayers(self.model, list(self._layers))  # fully_shard may come later
        # the layers with a geometry (convolutions: stride, padding, ...), checked at the start of each batch
        self._shaped = [layer for layer in self._layers.values() if any(g is not None for g in geometry(layer.module))]
        self._report_unsupported()
        unknown = [n for n in self._encoding if n and n not in self._layers and n not in self.layer_names]
        if unknown and (self._scope.ops == "none" or not (self._scope.scoped or self._scope.ops == "all")):
            raise ValueError(f"encoding= names layer(s) {unknown} that the counter does not count; counted layers: "
                             f"{sorted(self._layers)}")
        # (a functional op's row, "linear" or "2.matmul", is named at its first call: checked at the first read)
        self._encoding_unseen = unknown
        if self._monitor is not None:
            self._monitor.attach()
        elif self._track_neurons:
            from .neurons import NeuronMonitor

            self._monitor = NeuronMonitor(self.model, samples_fn=self._samples, rules=self._rules,
                                          scratch=self._scratch)
        if self._monitor is not None:
            self._monitor.watch_carry = self.auto_reset  # (a per-step model under auto_reset is named)
        self._scope.attach(self.model, self._layers)  # last: its frames close after every other hook
        # (after the op scope's plan: a module whose only synapses are activation products is counted op by op)
        if not self._layers and not self._scope.scoped and self._scope.ops != "all":
            self.remove()
            raise ValueError(
                f"{type(self.model).__name__} has no layer synopsloss can count (Linear, ConvNd, "
                "ConvTransposeNd or a registered rule); nothing would be counted. Pass the model that "
                "holds the synaptic layers, or register a rule for your layer type with "
                "synopsloss.register_rule (custom_rules= for this counter only)"
                + (f". Modules it cannot count: {', '.join(self._unsupported)}" if self._unsupported else "")
            )
        for module in frames:
            self._hooks.pre(module, self._pools.enter, owned=False, prepend=True)  # opened first, closed last
            self._hooks.forward(module, self._pools.exit, owned=False, always_call=True)
        return self

    def _attach_module(self, name: str, module: nn.Module) -> None:
        rule = registry.find_rule(module, self._rules)
        if rule is not None:
            layer = self._layers[name] = _Layer(module, rule, self._maps.setdefault(name, MapCache()))
            if self._scope.scoped_rule(name, module, rule, self._rules):
                return  # its forward is counted op by op, with the weight its ops receive
            twice = registry.repeated_evaluation(self.model, name)
            if twice is not None:
                layer.once = _Once(*twice)
                self._hooks.pre(twice[0], layer.once.enter, owned=False)
                self._hooks.forward(twice[0], layer.once.exit, owned=False, always_call=True)
            # prepend: the hook runs before FSDP2's forward hook reshards the weight (synopsloss.sharding)
            self._hooks.direct(module, self._layer_hook_for(name, self._layers[name]))
            if not rule.weight.endswith("()") and parametrize.is_parametrized(module, rule.weight):
                # the weight its forward computed, read again by the hook from the parametrization's cache: a
                # second evaluation would draw a random mask anew, or run spectral_norm's power iteration again
                window = _CachedWeights()
                self._hooks.pre(module, window.enter, owned=False)
                self._hooks.forward(module, window.exit, owned=False, always_call=True)
            return
        pool = registry.pool_divisor(module)
        if pool is not None:
            self._hooks.forward(module, self._pools.pool_hook(*pool, name=name, module=module), owned=False,
                                quiet=True)
        elif self._any_pool and registry.is_pass_through(module):
            self._hooks.forward(module, self._pools.pass_through(name, registry.dropout_keep), owned=False,
                                quiet=True)
        elif self._any_pool and registry.moves_values(module):
            self._hooks.forward(module, self._pools.moved_through(name), owned=False, quiet=True)
        elif self._any_pool and registry.max_pool_dims(module) is not None:
            self._hooks.forward(module, self._pools.max_through(registry.max_pool_dims(module), name), owned=False,
                                quiet=True)
        if registry.dropout_keep(module) is not None and registry.own_forward(module):  # (the spikes it scales)
            self._hooks.forward(module, self._pools.dropout_events(name, registry.dropout_keep), owned=False,
                                quiet=True)
        whole = registry.whole_spikes(module)
        if whole is not None:  # (a pool or a layer reading its spikes unchanged needs no pass to know them)
            # (first among its forward hooks: a user's hook that edits or replaces the output comes after it)
            self._hooks.forward(module, functools.partial(SynOpsCounter._whole_hook, kind=whole), prepend=True,
                                quiet=True)
        if isinstance(module, nn.TransformerEncoder):  # keep torch's nested-tensor fast path (fastpath.py)
            guard = EncoderGuard(name, weakref.ref(self))
            self._guards.pre(module, guard.pre, with_kwargs=True, owned=False)
            self._guards.forward(module, guard.post, owned=False, always_call=True, prepend=True)
        fused = {nn.TransformerEncoderLayer: layer_takes_fast_path, nn.MultiheadAttention: mha_takes_fast_path}
        if type(module) in fused:  # keep torch's fused output (fastpath.py)
            self._guards.replacing(module, FusedGuard(weakref.ref(self), fused[type(module)]).post)
        if frameworks.may_fold_time(module):  # (the [T, B] of its children's folded rows, for per-sample synops)
            self._hooks.pre(module, functools.partial(SynOpsCounter._folding_pre, name=name), quiet=True)
            self._hooks.forward(module, functools.partial(SynOpsCounter._folding_post, name=name), quiet=True,
                                always_call=True)
        if registry.is_time_folding(module):
            self._hooks.pre(module, functools.partial(SynOpsCounter._fold_hook, name=name), quiet=True)
        elif registry.neuron_library(module) == "sinabs":
            self._batch_first_layers = True
        has_params = any(True for _ in module.parameters(recurse=False)) or parametrize.is_parametrized(module)
        why = registry.uncountable(module)
        if why is not None:
            self._unsupported.append(f"{name or '<root>'} ({type(module).__name__}: {why})")
            self._scope.opaque(name, module)
        elif has_params and not registry.has_no_synapse(module) and registry.neuron_library(module) is None \
                and not self._scope.scoped_params(name, module):
            self._unsupported.append(f"{name or '<root>'} ({type(module).__name__})")

    def _report_unsupported(self) -> None:
        if not self._unsupported:
            return
        msg = (
            "synopsloss cannot count the synapses of these modules with parameters: "
            + ", ".join(self._unsupported)
            + ". Their synops are NOT included. Register a rule with synopsloss.register_rule "
            "(or declare them synapse-free with synopsloss.register_no_synapse)."
        )
        if self.strict:
            self.remove()
            raise TypeError(msg)
        self._warn_once(msg, UnsupportedLayerWarning, stacklevel=4)

    def _warn_once(self, msg: str, category: type = SynOpsWarning, stacklevel: int = 3) -> None:
        if msg not in self._warned:  # once per counter, not at every re-attach or call
            self._warned.add(msg)
            warnings.warn(msg, category, stacklevel=stacklevel)

    def remove(self) -> None:
        """Remove every hook from the model (state and counts stay readable)."""
        self._hooks.remove()
        self._guards.remove()
        self._scope.remove()
        self._pools.clear()
        if self._monitor is not None:
            self._monitor.remove()

    def __enter__(self) -> "SynOpsCounter":
        self.attach()
        self.reset(accumulated=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __deepcopy__(self, memo: Dict[int, Any]) -> Any:
        raise TypeError(
            "a SynOpsCounter holds hooks on a live model and the autograd graph of the current batch, so it "
            "cannot be copied. Create a new SynOpsCounter on the copied model; to keep numbers, copy "
            "counter.snapshot() (plain data)."
        )

    def __reduce_ex__(self, protocol: int) -> Any:
        raise TypeError(
            "a SynOpsCounter cannot be pickled (it holds hooks on a live model and an autograd graph). "
            "Save counter.snapshot() (plain data) or the model's state_dict(), and create a new counter "
            "after loading. To pickle the model itself, call counter.remove() first."
        )

    @contextlib.contextmanager
    def paused(self) -> Iterator["SynOpsCounter"]:
        """Run the model without counting (e.g. a validation pass inside a training step)."""
        with self._hooks.paused():
            if self._monitor is not None:
                with self._monitor.paused():
                    yield self
            else:
                yield self

    def reset(self, accumulated: bool = False, drop: bool = False) -> None:
        """Start a new batch.

        The finished batch's counts are added to the running totals read with
        ``snapshot(accumulated=True)``; its differentiable synops (and their
        autograd graph) are dropped. A batch whose forward raised is dropped
        without entering the totals, and so is any batch with ``drop=True``
        (one whose counts are undefined: NaN in its input). ``accumulated=True``
        clears the running totals too.
        """
        batch = self._batch
        left_out = drop  # the batch's samples cannot be read, or it is dropped: its neuron statistics are left out too
        if accumulated:
            self._totals.clear()
            self._sums.clear()
            self._sample_values = {}
            self._sampled = 0
            self._total_samples = 0
            self._total_sample_steps = 0.0
        elif batch.layers and not (batch.pending or batch.failed or drop):
            try:
                samples = self._samples()
            except ValueError as err:
                left_out = True
                self._warn_once(f"synopsloss: reset() leaves the last batch out of the accumulated totals: {err}",
                                stacklevel=3)
            else:
                steps = self._set_sample_steps(samples)
                with torch.no_grad():  # calls never read are reduced without building a graph
                    self._reduce_held(graph=False)
                    settle_all(list(batch.layers.values()), self._whole.kind)
                if self.per_sample_counts:
                    try:
                        self._sample_values = self._sample_dict(samples, accumulated=True)
                    except (ValueError, RuntimeError) as err:  # (the batch's counts still enter the totals)
                        self._warn_once(
                            "synopsloss: reset() keeps no per-sample synops of the last batch (its counts enter the "
                            f"accumulated totals): {err}", stacklevel=3)
                    else:
                        self._sampled += samples
                self._sums.take(batch.layers)  # one stacked add (else each field is folded below)
                for name, state in batch.layers.items():
                    fold(self._totals.setdefault(name, SynapseState()), state)
                self._total_samples += samples
                self._total_sample_steps += samples * steps
        if self._monitor is not None:
            self._monitor.reset(accumulated=accumulated, drop=batch.pending or batch.failed or left_out)
        self._batch = _Batch()
        self._batch_index += 1
        self._pools.clear()
        self._whole.clear()

    # ------------------------------------------------------------------ hooks

    def _root_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._pools.tagged:
            self._pools.clear()
        batch = self._batch
        if (batch.states or batch.quick) and (batch.read or batch.backwarded or batch.pending or self.auto_reset):
            self._check_new_call(batch)
            batch = self._batch
        if not batch.root_calls:  # a new batch: a layer whose geometry was changed is checked in full again
            for layer in self._shaped:
                same = layer.same
                if same is not None and geometry(layer.module) != same.geometry:
                    layer.same = None
        batch.root_calls += 1
        batch.pending = True
        if batch.current:  # maps of calls reduced at once: checked against their weights again in each forward
            batch.current.clear()  # (an edit through .data between forwards moves no version counter)
        batch.grad = torch.is_grad_enabled()
        batch.grad_calls += batch.grad
        if len(args) == 1 and not kwargs and isinstance(args[0], Tensor):
            tensors = [args[0]]  # (the common call)
        else:
            tensors = _tensors(args, [])
            if kwargs:
                _tensors(kwargs, tensors)
        # the data of this call, held while it runs and until the next call (so that no other tensor can
        # reuse its memory meanwhile); earlier calls' data is released: a long loop holds one call's inputs
        data: List[Tensor] = []
        inputs: Set[int] = set()
        own: Optional[Set[int]] = None
        for t in tensors:
            if ((t.is_leaf or _input_view(t)) and not isinstance(t, nn.Parameter) and t.device.type != "meta"
                    and _LEVEL(t) == -1):
                if own is None:
                    own = self._own_storages()
                ptr = _storage(t)
                if ptr not in own:
                    data.append(t)
                    inputs.add(ptr)
        batch.held = data
        batch.inputs = inputs
        if not batch.input_shape and tensors and not tensors[0].is_nested:
            batch.input_shape = tuple(tensors[0].shape)
        if len(tensors) > 1 and self.batch_size is None:  # other arguments whose batch dim differs (layout.py)
            d = self.batch_dim
            first = tensors[0]
            if first.dim() > d and not first.is_nested:
                batch.root_first = _storage(first)
                for t in tensors[1:]:
                    if t.dim() > d and not t.is_nested and t.shape[d] != first.shape[d]:
                        batch.root_others[_storage(t)] = tuple(t.shape)
        if self.time_dim is not None:
            if not tensors or tensors[0].dim() <= self.time_dim:
                raise ValueError(
                    f"synopsloss: time_dim={self.time_dim} but the model was called with "
                    f"{'no tensor' if not tensors else f'an input of shape {tuple(tensors[0].shape)}'}; pass the "
                    "dim of the model's first tensor argument that holds the time steps, or time_dim=None")
            steps = int(tensors[0].shape[self.time_dim])
            batch.root_steps += steps
            batch.root_tc = max(batch.root_tc, steps)
        if self.batch_size is not None:
            self._check_declared_batch(tensors)
            if self.time_folded and tensors and tensors[0].dim() > self.batch_dim and not tensors[0].is_nested:
                batch_layout.add_fold(batch, "the model's input", self.batch_size, int(tensors[0].shape[self.batch_dim]))
            return
        if not tensors:
            batch.root_note = "the model was called without a tensor argument"
            return
        x = tensors[0]
        if x.dim() <= self.batch_dim:
            batch.root_note = f"the model's input has shape {tuple(x.shape)}, with no dimension {self.batch_dim}"
            return
        b = int(x.shape[self.batch_dim])
        if batch.root_batch is None:
            batch.root_batch, batch.root_shape = b, tuple(x.shape)
        elif b != batch.root_batch:
            if (not self._batch_dim_given and batch.probe_major is False and x.dim() > 1
                    and batch.probe_batch is not None and int(x.shape[1]) == batch.probe_batch):
                return  # [T, B, ...] data fed in chunks of steps: a layer of known layout read its samples in dim 1
            raise ValueError(
                f"synopsloss: the model was called with {b} samples (dim {self.batch_dim} of its input) after "
                f"{batch.root_batch} since the last counter.reset(). Calls between two resets are treated "
                "as time steps of one batch: call counter.reset() before each new batch "
                "(or create the counter with auto_reset=True if each call is a whole batch)."
            )

    def _check_declared_batch(self, tensors: List[Tensor]) -> None:
        """A declared ``batch_size=`` must fit the input (:func:`synopsloss.layout.check_declared_batch`)."""
        shape = tuple(tensors[0].shape) if tensors and not tensors[0].is_nested else None
        options = self._layout_options()
        for t in tensors[1:]:  # the batch may be another argument than the first (model(context, x))
            if not t.is_nested:
                try:
                    batch_layout.check_declared_batch(tuple(t.shape), options)
                    return
                except ValueError:
                    pass
        batch_layout.check_declared_batch(shape, options)

    def _layout_options(self) -> batch_layout.Options:
        """The options that :mod:`synopsloss.layout` reads (``batch_size`` may be changed between batches)."""
        return batch_layout.Options(
            batch_size=self.batch_size, batch_dim=self.batch_dim, time_dim=self.time_dim,
            batch_dim_given=self._batch_dim_given, layout_given=self._layout_given,
            batch_first_layers=self._batch_first_layers, fallback_batch_size=self.fallback_batch_size)

    def _check_new_call(self, batch: _Batch) -> None:
        """The model is called again on a batch whose counts were read, backpropagated or interrupted."""
        if self.auto_reset or batch.failed:
            self.reset()
            return
        if batch.pending:  # the previous forward raised: its partial counts are not a batch
            if batch.root_calls > 1:  # (forwards that returned before it: their counts go too, and are named)
                self._warn_once(
                    f"synopsloss: a forward of the model raised after {batch.root_calls - 1} call(s) of this batch "
                    "had returned, and the model was called again: the batch's counts so far are dropped (a "
                    "forward that raised leaves partial counts) and counting starts again with this call. To "
                    "count the steps that completed, read the counts when you catch the exception; to start a new "
                    "batch, call counter.reset() first.", stacklevel=5)
            batch.failed = True
            self.reset()
            return
        if batch.backwarded:
            raise RuntimeError(
                "synopsloss: the model was called again after the synops of this batch were backpropagated, "
                "without counter.reset(). Call counter.reset() before each batch (for truncated BPTT, after "
                "each backward: the counts then cover one chunk). Without it the next synops() would reach "
                "into the freed graph of the previous batch."
            )
        self._warn_once(
            "synopsloss: the model was called again after this batch's counts were read, without "
            "counter.reset(); the calls are counted as more time steps of the same batch. If a new batch "
            "started, call counter.reset() before it (or create the counter with auto_reset=True when each "
            "call of the model is one whole batch). If the same batch goes on (a second view of it, in a plain "
            "loop or under SynOpsRegularizer), read the counts or the loss once, after every forward of the "
            "batch: a read between them covers the first forwards only.",
            stacklevel=5,
        )
        batch.read = False

    def _root_post_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        batch = self._batch
        batch.pending = False
        if self.auto_reset and self._monitor is not None and self._monitor.carried is not None:
            self._warn_once(
                f"synopsloss: auto_reset=True counts each call of the model as a whole batch, but neuron "
                f"{self._monitor.carried!r} started a call with the membrane the previous call left. If the model "
                "is called once per time step, each step is counted as a batch of its own (the synops per sample "
                "of the last step only): drop auto_reset and call counter.reset() before each batch. (A state "
                "carried on purpose, chunk to chunk of a long sequence, is counted per chunk.)",
                stacklevel=4)
        if batch.unreduced:
            self._reduce_held()  # the calls this forward made without gradients
        # a state the model returns and is called with again is the network's, not data; held weakly,
        # so that a freed output's memory, reused by fresh data, is not mistaken for it
        for t in ((output,) if isinstance(output, Tensor) else _tensors(output, [])):
            if t.device.type != "meta" and _LEVEL(t) == -1:
                batch.outputs.append(weakref.ref(t))

    def _own_storages(self) -> Set[int]:
        """Storages of the model's buffers and of live tensors it returned in this batch (never data)."""
        own = {_storage(b) for d in filter(None, self._buffer_dicts) for b in d.values()
               if b is not None and b.device.type != "meta"}
        live = [r() for r in self._batch.outputs]
        return own | {_storage(t) for t in live if t is not None}

    def _folding_pre(self, module: nn.Module, args: tuple, *, name: str) -> None:
        """A SpikingJelly container that calls its children on ``[T*B, ...]`` starts: its ``(T, B)`` is noted
        while it runs, so that its layers' rows are split by sample (:meth:`_sample_lead`)."""
        if not self.per_sample_counts:  # (only the per-sample split reads it)
            return
        x = args[0] if args else None
        x = x[0] if isinstance(x, tuple) and x else x
        if isinstance(x, Tensor) and x.dim() >= 2 and frameworks.folds_time_first(module):
            self._folding[name] = (int(x.shape[0]), int(x.shape[1]))
        else:
            self._folding.pop(name, None)

    def _folding_post(self, module: nn.Module, args: tuple, output: Any, *, name: str) -> None:
        self._folding.pop(name, None)

    def _sample_lead(self, name: str, lead: Tuple[int, ...]) -> Optional[Tuple[int, ...]]:
        """``lead`` with the dim of the samples known, as ``(*lead, batch dim)``, when a layout says where it is: a
        layer called by a folding container on ``[T*B, ...]`` (its first dim split into the container's
        ``(T, B)``), or a SpikingJelly multi-step layer's own ``[T, B, ...]``; else ``None``."""
        if self._folding:
            parts = name.split(".")
            for i in range(len(parts) - 1, -1, -1):
                tb = self._folding.get(".".join(parts[:i]))
                if tb is not None:
                    if lead and lead[0] == tb[0] * tb[1]:
                        return tb + tuple(lead[1:]) + (1,)
                    break
        layer = self._layers.get(name)
        if layer is not None and len(lead) >= 2:
            lay = frameworks.step_layout(layer.module)
            if lay is not None and lay[0] == "time_first":
                return tuple(lead) + (1,)
        return None

    def _fold_hook(self, module: nn.Module, args: tuple, *, name: str) -> None:
        if not args or not isinstance(args[0], Tensor):
            return
        b = registry.time_folding_batch(module, args[0])
        if b is None:
            return
        batch_layout.add_fold(self._batch, name, b, int(args[0].shape[0]))

    def _note_fed(self, x: Tensor, out: Tensor) -> None:
        """A layer read the data ``x`` and kept its two leading dims in ``out`` (a Linear on ``[T, B, ...]``): a
        layer of known layout reading ``out`` tells the data's order too."""
        if self._batch.probe_major is None and x.dim() >= 3 and out.dim() == x.dim() and out.shape[:2] == x.shape[:2]:
            self._batch.fed_out = weakref.ref(out)

    def _whole_hook(self, module: nn.Module, args: tuple, output: Any, *, kind: str) -> None:
        """A neuron whose spikes are whole numbers by construction returned ``output`` (``kind``: ``"binary"``
        or ``"integer"``). Not noted when its spike function changed since the counter attached (SpikingJelly's
        ``set_spiking_mode(False)``), when a forward was set on the instance, or when a user's forward hook (which
        may run before this one: ``prepend=True``, a global hook) may have replaced or edited the output."""
        if ("forward" in vars(module) or foreign_forward_hooks(module) or _GLOBAL_FORWARD_HOOKS
                or registry.whole_spikes(module) != kind):
            return
        self._whole.note(output, kind)

    def _probe_hook(self, module: nn.Module, args: tuple, *, name: str, layout: registry.ProbeLayout,
                    samples: bool) -> None:
        """A layer whose input layout is known: record its samples and time steps (Python ints, no sync)."""
        if _in_backward() or not args or not isinstance(args[0], Tensor):
            return
        layout = frameworks.step_layout(module) or layout  # (a SpikingJelly module's step mode may be set later)
        try:
            b, t = frameworks.probe_sizes(layout, args[0])
        except ValueError:
            return  # an input it cannot read (unbatched): the other sources decide
        batch_layout.add_probe(self._batch, name, b, t, samples)
        if (self._batch.probe_major is None and layout[2] is not None and layout[2] >= 0 and args[0].dim() > 1
                and (self._is_data(args[0], note=False) or (self._batch.fed_out is not None
                                                            and self._batch.fed_out() is args[0]))):
            # the data's order: read from the data, or from what a layer made of it keeping its leading dims (a
            # tensor made in the model otherwise may hold them transposed)
            self._batch.probe_major = layout[1] < layout[2]

    def _layer_hook_for(self, name: str, layer: _Layer) -> Any:
        """The forward hook of counted layer ``name``.

        A call like the layer's last one (the same weight object, input shape / dtype / device and output
        shape: every check of :meth:`SynOpsCounter._count` gave the same answer for it, see :class:`_Repeat`)
        is recorded here, in one frame: with gradients one append of (input, its version, the ``_Repeat``,
        the weight, whether it is data) to the batch's list for the layer, whose state is made when the
        layers are read; without, its state takes the call at once, to be reduced when the forward returns.
        Any other call goes to :meth:`_layer_hook`. The hook holds the counter weakly and does
        the work of :class:`synopsloss.hooks.HookSet`'s guard (paused, deep copies, ``torch.compile``).
        """
        owner = weakref.ref(self)
        hooks = self._hooks
        target = weakref.ref(layer.module)
        slow = SynOpsCounter._layer_hook
        eager: List[Any] = []

        def hook(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            if _COMPILING():
                return HookSet.eager(hook, eager)(module, args, kwargs, out)
            if not hooks.enabled or module is not target() or _EXPORTING():
                return None  # (paused, a deep copy, or torch.export's fake tensors)
            self = owner()  # the counter (held weakly: the model holds this hook)
            if self is None:
                return None
            popped = pop_package_modes() if _MODE_DEPTH() else None  # (the package's modes pass over its own ops)
            try:
                same = layer.same
                if same is not None and len(args) == 1 and not kwargs and not self._pools.tags:
                    x = args[0]
                    weight = module._parameters.get(same.attr) if same.attr else rule_weight(module, layer.rule.weight)
                    if (weight is same.weight and isinstance(out, Tensor) and x.layout is _STRIDED and not x.is_nested
                            and x.shape == same.x_shape and out.shape == same.out_shape and x.dtype is same.dtype
                            and x.device == same.device and _LEVEL(x) == -1 and not _TRACING() and _TASK() == -1):
                        batch = self._batch
                        data = (x.is_leaf or _input_view(x)) and bool(batch.inputs) and _storage(x) in batch.inputs
                        if data:
                            if batch.root_others:
                                batch.root_fed.add(_storage(x))
                            if batch.probe_major is None:
                                self._note_fed(x, out)
                        if _GRAD_ON() and not x.is_inference():
                            q = batch.quick.get(name)
                            if q is not None and version_of(weight) != q[1]:  # changed in place since: a new run
                                batch.tally_quick(name)
                                q = None
                            if q is None:
                                # the first such call's stamp (forward order), the weight's version at it and the map
                                # entry that stood for it: a read that finds the weight's zero pattern changed since
                                # names the change
                                q = batch.quick[name] = [_NEXT_STAMP(), version_of(weight), same.entry.newest(),
                                                         batch.pattern(weight)]
                            q.append((x, x._version, same, weight, data))
                            return None
                        # without gradients: a large call is reduced now, a small one when the forward returns
                        state = self._state(name, same.device)
                        lost = not (data or x.requires_grad)
                        now = self._reduced_now(state, name, x, same.rows, same.in_neurons, same.entry, weight,
                                                same.maps, same.events, lost)
                        _tally(state, [(x, version_of(x), same, weight, data)], version_of(weight), not now,
                               None if now else same.entry.newest())
                        if not now:
                            self._hold(state, x.numel() * x.element_size(), name, lost)
                        return None
                slow(self, module, args, kwargs, out, name=name)
                return None
            finally:
                if popped is not None:
                    push_modes(popped)

        return hook

    def _layer_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any, *, name: str) -> None:
        layer = self._layers[name]
        if layer.once is not None and not _in_backward() and layer.once.repeated(args):
            return  # its neuron's own second evaluation on the same spikes (snntorch's zero reset)
        if layer.rule.count is not None:
            if args and isinstance(args[0], Tensor) and not args[0].numel():
                return  # (an empty batch: nothing to count, and the read says the batch had no samples)
            counts = layer.rule.count(module, args, kwargs, output)
            if not isinstance(counts, OpCounts):
                raise TypeError(f"synopsloss: the counting rule for {type(module).__name__} (layer {name!r}) returned "
                                f"{type(counts).__name__}; a rule registered with counts=True returns "
                                "synopsloss.maps.OpCounts")
            if (self._pools.tagged and isinstance(module, (nn.RNNBase, nn.RNNCellBase)) and args
                    and isinstance(args[0], Tensor) and args[0].numel()):  # spike events through an average pool
                x = args[0]
                scale, integer = self._pools.scale_for(name, x, x.numel() // module.input_size, module.input_size,
                                                       self._warn_once)
                if scale is not None and integer is not None:
                    counts = recurrent.pooled_events(module, x, counts, scale, integer)
            if not _in_backward():  # gradient checkpointing re-runs forwards in backward: counted once
                self._accumulate(name, counts)
            return
        if len(args) == 1 and not kwargs and isinstance(args[0], Tensor) and isinstance(output, Tensor):
            self._count(name, layer, args[0], output)  # the common call: one tensor in, one out
            return
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, Tensor)]
        if len(tensors) != 1:
            raise ValueError(
                f"synopsloss: layer {name!r} ({type(module).__name__}) was called with {len(tensors)} tensor "
                "inputs; it can count layers called with exactly one input tensor. Register a custom rule "
                "for this layer type, or exclude it by wrapping the call in counter.paused()."
            )
        if not isinstance(output, Tensor):
            raise ValueError(f"synopsloss: layer {name!r} returned {type(output).__name__}, not a tensor")
        self._count(name, layer, tensors[0], output)

    def _count(self, name: str, layer: _Layer, x: Tensor, out: Tensor) -> None:
        """Record one call of a map-ruled layer (no tensor op: the counts are reduced when read).

        A call like the layer's last one was recorded by the layer's hook (:meth:`_layer_hook_for`) instead.
        """
        module, rule = layer.module, layer.rule
        if x.is_nested:  # (torch's nested-tensor paths: the call is skipped and named)
            self._warn_once(
                f"synopsloss: layer {name!r} ({type(module).__name__}) received a nested tensor; its calls with "
                "nested inputs are NOT counted. Pass padded dense tensors to count them (for nn.TransformerEncoder: "
                "enable_nested_tensor=False).", stacklevel=5)
            return
        given = x
        x = _checked_input(name, module, x)  # (a non-float input is counted as a float copy)
        nd = rule.sample_ndim(module)
        if x.dim() < nd or out.dim() < nd:
            raise ValueError(
                f"synopsloss: layer {name!r} ({type(module).__name__}) got an input of shape {tuple(x.shape)}; "
                f"one sample needs {nd} trailing dimensions"
            )
        in_shape, out_shape = tuple(x.shape[x.dim() - nd:]), tuple(out.shape[out.dim() - nd:])
        n_el = math.prod(in_shape)
        if n_el == 0 or x.numel() == 0 or _in_backward():
            # gradient checkpointing re-runs this forward during backward: it was counted the first time
            return
        weight = rule_weight(module, rule.weight)
        if self._sharded.holds(name) or sharding.is_dtensor(weight):
            # FSDP2 frees this gathered weight after the forward and a DTensor is read by a collective:
            # the call records the weight's full nonzero pattern now (synopsloss.sharding)
            weight = weight_mask(weight)
        if isinstance(weight, Tensor) and weight.device != x.device:
            raise ValueError(
                f"synopsloss: layer {name!r} received its input on {x.device} but its weight is on "
                f"{weight.device}; move the input and the model to the same device"
            )
        last = layer.last
        geo = geometry(module)
        if last is not None and last[2] is weight and last[0] == in_shape and last[1] == out_shape and last[4] == geo:
            entry = last[3]  # the same weight, shapes and geometry as the last call: its map entry (checked when read)
        else:
            try:
                entry = layer.maps.entry(*module_map_args(module, rule, weight, in_shape, out_shape, geo))
            except ValueError as err:
                raise ValueError(f"synopsloss: layer {name!r}: {err}") from err
            layer.last = (in_shape, out_shape, weight, entry, geo)
        rows = x.numel() // n_el
        lead = tuple(x.shape[:x.dim() - nd])
        data = self._is_data(x)
        if data:
            self._note_fed(x, out)
        self.record_call(name, Call(x, rows, entry, weight, layer.maps, version=version_of(x),
                                    events=self.integer_spikes == "events"),
                         in_shape=in_shape, out_shape=out_shape, data=data, lead=lead)
        plain = rule.weight if not rule.weight.endswith("()") else ""
        if (self._lean and x is given and layer.once is None and not self._sharded.holds(name)
                and not sharding.is_dtensor(weight)
                and (module._parameters.get(plain) is weight if plain else True)):
            # what the next call like this one reuses (see the top of this method)
            n_in = entry.effective.numel()
            layer.same = _Repeat(weight, x.shape, out.shape, x.dtype, x.device, rows, rows * n_in, lead, entry,
                                 plain, in_shape, out_shape, n_in, layer.maps, self.integer_spikes == "events", geo)
        else:
            layer.same = None

    def record_call(self, name: str, call: Call, *, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...],
                    data: bool, lead: Optional[Tuple[int, ...]]) -> None:
        """Record one counted weight-op call of row ``name`` (module hooks and the function mode both end here).

        With grad enabled the call is kept and reduced when the counts are read
        (its input is held: autograd holds it anyway); with grad disabled it is
        reduced with the others when the model's forward returns (or once such calls hold 64 MiB of
        inputs), so an evaluation loop holds no inputs between forwards.
        """
        if self._pools.tagged:  # the AvgPool spike-event correction, on both paths
            scale, integer = self._pools.scale_for(name, call.x, call.rows, call.entry.effective.numel(),
                                                   self._warn_once)
            if scale is not None:
                call = call._replace(scale=scale, integer=integer)
        if call.events != (self.integer_spikes == "events"):
            call = call._replace(events=not call.events)
        if self.per_sample_counts:
            call = call._replace(per_row=True)
        if self._encoding:
            enc = self._encoding.get(name, self._encoding.get("", "unary"))
            if enc != "unary" and call.scale is not None:
                self._warn_once(
                    f"synopsloss: layer {name!r} has encoding={enc!r} and reads an average-pool output: its events "
                    "are the spikes of the neurons before the pool, whose bit planes the counter does not follow, "
                    "so they are counted one event per spike (unary). Give the encoding to a layer that reads the "
                    "neurons' counts directly, or leave this layer unary.", stacklevel=5)
                enc = "unary"
            if enc != call.encoding:
                call = call._replace(encoding=enc)
        state = self._state(name, call.x.device)
        if self.per_sample_counts:  # (a fold of a view keeps its base's order: view_lead)
            known = self._sample_lead(name, lead if lead else (call.rows,))
            state.call_leads.append((known[:-1], data, known[-1]) if known is not None else (
                view_lead(call.x, call.entry.effective.numel(), call.rows, lead if lead else (call.rows,)), data,
                None))
        state.calls += 1
        state.rows_total += call.rows
        state.rows.add(call.rows)
        state.in_shape, state.out_shape = in_shape, out_shape
        state.in_neurons = call.entry.effective.numel()
        state.in_values += call.rows * state.in_neurons
        state.data_calls += int(data)
        state.leads[lead if lead is not None else (call.rows,)] += 1
        grad = torch.is_grad_enabled() and not call.x.is_inference()
        if call.weight is not None:  # (its version, map and nonzero pattern at this call, checked when read)
            call = call._replace(wversion=version_of(call.weight), entry=call.entry.newest(),
                                 pattern=self._batch.pattern(call.weight) if grad else None)
        if not grad:
            lost = not (data or call.x.requires_grad)
            if (call.scale is None and not call.per_row and call.encoding == "unary" and _LEVEL(call.x) == -1
                    and self._reduced_now(state, name, call.x, call.rows, state.in_neurons, call.entry,
                                          call.weight, call.cache, call.events, lost)):
                return  # (a large call: not held)
            state.records.append(call)
            self._hold(state, call.x.numel() * call.x.element_size(), name, lost)
        else:
            state.records.append(call)

    def _reduced_now(self, state: SynapseState, name: str, x: Tensor, rows: int, n_in: int, entry: LayerMaps,
                     weight: Optional[Tensor], cache: Optional[MapCache], events: bool, lost: bool) -> bool:
        """A call made without gradients (from the layer's hook or :meth:`record_call`): reduced at once when it
        is large (:func:`synopsloss.records.reduce_now`, against its weight's current map), else ``False``: the
        caller records it, to be reduced when the forward returns (:meth:`_hold`). ``lost``: see :meth:`_hold`."""
        if not reducible_now(x, rows, n_in):
            return False
        ent = entry
        if weight is not None and cache is not None:
            key = (id(weight), id(entry))
            known = self._batch.current.get(key)
            version = version_of(weight)
            if known is None or known[2] != version or version < 0:
                if len(self._batch.current) >= _CURRENT_MAPS:  # weights made anew at each call: bounded
                    self._batch.current.clear()
                known = self._batch.current[key] = (cache.current(entry, weight), weight, version)
            ent = known[0]
        last = self._batch.last_inputs.get(name)
        counts = None if last is None else last.counts_for(x, ent, rows, events)
        if counts is None:
            counts = reduce_now(x, rows, ent, events, self._whole.kind(x))
            if counts is None:
                return False
            self._batch.last_inputs[name] = (LastInput(x, ent, rows, events, counts) if last is None
                                             else last.after(x, ent, rows, events, counts))
        add_now(state, counts)
        state.maps = ent
        if lost:
            self._warn_lost(name)
        return True

    def _warn_lost(self, name: str, stacklevel: int = 5) -> None:
        """A layer whose input is computed and has no gradient, called without gradients inside a forward of
        the model made with them: named once (a synops loss cannot reach it)."""
        batch = self._batch
        if batch.pending and batch.grad and not torch.is_grad_enabled():
            self._warn_once(
                f"synopsloss: layer {name!r} ran without gradients inside a forward of the model that has them (a "
                "torch.no_grad() block in the model, or torch.utils.checkpoint(..., use_reentrant=True), whose "
                "forward runs without gradients): its synops are counted but carry no gradient, so a synops loss "
                "cannot lower them. Checkpoint with use_reentrant=False.", stacklevel=stacklevel)

    def _hold(self, state: SynapseState, nbytes: int, name: str, lost: bool) -> None:
        """A call made without gradients: reduced (without a graph) when the model's forward returns, or
        sooner once the calls held since hold :data:`HELD_BYTES` of inputs (an evaluation loop holds at most
        that much, and its small layers are reduced together, not one call at a time).

        ``lost``: its input is computed and has no gradient (a layer inside a ``no_grad`` block of a forward
        made with gradients is named in a warning: a synops loss cannot reach it)."""
        if lost:
            self._warn_lost(name)
        batch = self._batch
        batch.unreduced[id(state)] = state
        batch.unreduced_bytes += nbytes
        if batch.unreduced_bytes > HELD_BYTES:
            self._reduce_held()

    def _reduce_held(self, graph: bool = True) -> None:
        """Reduce the layers that hold calls made without gradients. A layer may hold calls made with
        gradients too (a step with them, then one without, in one batch): ``graph=True`` reduces with
        gradients on, so that those keep theirs (the calls without have no graph to build)."""
        batch = self._batch
        if batch.unreduced:
            states = list(batch.unreduced.values())
            batch.unreduced.clear()
            batch.unreduced_bytes = 0
            if graph:  # (inside inference mode too: the calls made with gradients keep theirs)
                with torch.inference_mode(False), torch.enable_grad():
                    settle_all(states, self._whole.kind)
            else:
                with torch.no_grad():
                    settle_all(states, self._whole.kind)

    @property
    def _lean(self) -> bool:
        """Whether a call is recorded as it ran, with no correction or extra (the common case)."""
        return not (self._pools.tagged or self.per_sample_counts or self._encoding)

    def _state(self, name: str, device: torch.device) -> SynapseState:
        state = self._batch.layers.get(name)
        if state is None:
            state = self._batch.layers[name] = SynapseState(first_seen=next_stamp(), device=device)
        elif state.device != device:
            raise ValueError(
                f"synopsloss: layer {name!r} received input on {device} after {state.device} within one batch; "
                "call counter.reset() after moving the model to another device"
            )
        return state

    def _is_data(self, x: Tensor, note: bool = True) -> bool:
        """Whether ``x`` is (a view of) a tensor the model itself was called with in this batch.

        The inputs are held by the batch, so their storages cannot be freed and reused by
        another tensor while the batch lasts; a tensor with an autograd history was computed, except a view of an
        input that requires gradients (``x[:, t]`` of an input made for attribution or adversarial training: its
        history is the view, its base a leaf).
        """
        batch = self._batch
        if x.grad_fn is not None and not _input_view(x):  # (first: the storage lookup costs more)
            return False
        if not (batch.inputs and _storage(x) in batch.inputs):
            return False
        if note and batch.root_others:  # the model was called with tensors of different batch sizes: which is read
            batch.root_fed.add(_storage(x))
        return True

    def is_data(self, tensors: List[Tensor]) -> bool:
        """Whether any of ``tensors`` is (a view of) the data of this batch (read by the function mode)."""
        return any(t.device.type != "meta" and self._is_data(t, False) for t in tensors)  # (masks among them)

    def warn(self, msg: str, category: type = SynOpsWarning, stacklevel: int = 3) -> None:
        """Warn once per message (the op-level scopes report through it)."""
        self._warn_once(msg, category, stacklevel=stacklevel + 1)

    @property
    def counting(self) -> bool:
        """Whether the hooks count now (not paused, attached)."""
        return self._hooks.enabled

    def _accumulate(self, name: str, c: OpCounts, data: bool = False,
                    lead: Optional[Tuple[int, ...]] = None) -> None:
        """Add one call whose rule computed its counts itself (recurrent cells, activation products)."""
        state = self._state(name, c.device if c.later is not None else c.synops.device)
        fold(state, SynapseState(
            calls=1, rows_total=c.rows, rows={c.rows}, in_shape=c.in_shape, out_shape=c.out_shape,
            in_neurons=c.in_neurons, in_values=c.rows * c.in_neurons, data_calls=int(data), samples=c.samples,
            leads=Counter({_lead_key(c, lead): 1}),
        ))
        if c.later is not None:  # an activation product: its sums are taken when the counts are read
            if self.per_sample_counts and c.row_dims and not state.unsampled:  # and its synops per batch row
                state.call_leads.append((c.row_dims, data, None))
                state.later.append(functools.partial(c.later, per_row=True))
            else:
                state.unsampled = state.unsampled or self.per_sample_counts
                state.later.append(c.later)
            if not torch.is_grad_enabled():
                self._hold(state, c.held_bytes, name, False)
            return
        # the counts are summed when read (SynapseState.settle): no tensor op per call for them here
        if c.ac_effective is None:
            events = None
            if c.integer is not None and self.integer_spikes == "events":  # a weight product of spike counts
                events = (c.integer, c.synops.detach().to(c.effective.dtype))
            state.record(c.dense, c.effective, c.spiking, c.input_sum, c.input_nonzero, events)
        else:  # its ACs and its MACs as two records (the operands that are spikes, and the others)
            zero = c.dense.new_zeros(())
            events = None
            if c.integer is not None and c.event_acs is not None and self.integer_spikes == "events":
                events = (c.integer, c.event_acs.detach().to(c.effective.dtype))  # (spike counts among them)
            state.record(c.dense, c.effective - c.ac_effective, zero.bool(), c.input_sum, c.input_nonzero, events)
            state.record(zero, c.ac_effective, ~zero.bool(), zero, zero)
        state.synops = c.synops if state.synops is None else state.synops + c.synops

    def accumulate(self, name: str, counts: OpCounts, *, data: bool, lead: Optional[Tuple[int, ...]]) -> None:
        """Add one counted call whose rule computed its counts (the function mode's activation products)."""
        self._accumulate(name, counts, data=data, lead=lead)

    # ------------------------------------------------------------------ reading

    def _samples(self) -> int:
        """Samples of the current batch, checked against every layer's rows (:func:`synopsloss.layout.samples`)."""
        layers = self._batch.layers
        options = dataclasses.replace(self._layout_options(),  # (the op rows: for the messages of a bad reading)
                                      op_rows=frozenset(n for n in layers if n not in self._layers))
        return batch_layout.samples(self._batch, layers, options)

    def _require_batch(self, what: str) -> None:
        batch = self._batch
        if batch.layers and not batch.failed and not batch.pending:
            return
        if batch.pending or batch.failed:
            raise RuntimeError(
                f"counter.{what}(): the last forward pass of the model raised (or is still running), so this "
                "batch's counts are incomplete. Call counter.reset() and run the batch again."
            )
        if not self.attached:
            raise RuntimeError(
                f"counter.{what}(): the counter is detached (remove() was called or its with-block ended), so "
                "no forward pass was counted since the last reset(). Call counter.attach() before running the model."
            )
        if batch.root_batch == 0:
            raise ValueError(
                f"counter.{what}(): the model was called with a batch of 0 samples (input shape "
                f"{batch.root_shape}); there is nothing to count per sample. Skip empty batches."
            )
        if batch.root_calls:  # (the model ran, but took a branch without a counted layer)
            names = list(self._layers)
            raise RuntimeError(
                f"counter.{what}(): the model ran {batch.root_calls} time(s) since the last reset(), but none of "
                f"its counted layers ({', '.join(repr(n) for n in names[:5])}{', ...' if len(names) > 5 else ''}) "
                "was called, so there are no synaptic counts to read. Run a batch that reaches them (a branch of "
                "the forward may skip them)."
            )
        raise RuntimeError(
            f"counter.{what}() was called before any forward pass since the last reset(): "
            "run the model on a batch first"
        )

    @property
    def batch_size(self) -> Optional[int]:
        """The declared samples per batch (``None``: read from the input); may be set between batches."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: Optional[int]) -> None:
        _check_optional_int("batch_size", value, minimum=1)
        self._batch_size = value

    @property
    def batch_index(self) -> int:
        """Which batch the counts are of: 0 until the first :meth:`reset`, then one more at each reset (a loss
        read twice in one batch can tell)."""
        return self._batch_index

    @property
    def samples(self) -> int:
        """Number of samples of the current batch."""
        self._require_batch("samples")
        return self._samples()

    def idle_layers(self) -> List[str]:
        """Counted layers that did not run through a counted call since the last reset (they show 0 synops).

        Example
        -------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 2), "b": torch.nn.Linear(2, 2)})
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net["a"](torch.ones(1, 2))
        >>> counter.idle_layers()
        ['b']
        """
        return self._idle(self._batch.layers)

    def _warn_added(self, stacklevel: int) -> None:
        """Name the modules with parameters that joined the model after the counter attached (no hook counts them)."""
        known = getattr(self, "_attached_modules", None)
        if known is None:
            return
        added = [n for n, m in self.model.named_modules()
                 if m not in known and next(m.parameters(False), None) is not None]
        if added:
            self._warn_once(
                f"synopsloss: module(s) {', '.join(repr(n) for n in added)} joined the model after the counter "
                "attached; the counter has no hook on them, so their synapses are NOT counted. Create the counter "
                "after changing the model (counter.remove(), then SynOpsCounter(model)).", stacklevel=stacklevel)

    def _warn_idle(self, idle: List[str], stacklevel: int) -> None:
        """Name the counted layers that did not run (their 0 synops are not a measurement)."""
        self._warn_once(
            f"synopsloss: layer(s) {', '.join(repr(n) for n in idle)} did not run through a counted call "
            "since the last reset; they show 0 synops. If they should have run, they were replaced after the "
            "counter attached (re-create the counter), called as layer.forward(x) (call layer(x)), or "
            "compiled before the counter attached (attach first).", stacklevel=stacklevel)

    def _idle(self, ran: Mapping[str, Any]) -> List[str]:
        """Counted layers not in ``ran`` whose module no counted op used either (the op-scoped ones)."""
        return [n for n in self._layers if n not in ran and not self._scope.used(self._layers[n].module)]

    def data_fed_layers(self, accumulated: bool = True) -> List[str]:
        """Counted layers fed directly by the data, in forward order.

        A layer is *data-fed* when every call of it read a tensor the model
        itself was called with (the input, a time step ``x[t]`` of it or a
        view) and that the network did not compute: a recurrent state passed
        back into the model carries an autograd graph or is read only at some
        calls, so it is not data. Its synops are the data's spikes times the
        layer's fan-out: training can lower them only by zeroing weights, so
        :class:`synopsloss.SynOpsLoss` leaves them out by default. Reported
        for the current batch and every batch since ``reset(accumulated=True)``
        (``accumulated=False``: the current batch only, as the loss and
        ``synops(driven=True)`` read it, so that one batch whose input the model
        computed, such as a validation batch cast inside ``forward``, changes
        no later batch's loss). Inputs that the model transforms before the
        first layer (``x.float()``, encoding inside ``forward``) are not
        recognised: name the layers explicitly then.

        Example
        -------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.ones(1, 3))
        >>> counter.data_fed_layers()
        ['0']
        """
        calls: Dict[str, List[int]] = {}  # {layer: [calls, data calls, first seen]}: counts only, nothing reduced
        for src in ((self._totals, self._batch.layers) if accumulated else (self._batch.layers,)):
            for name, st in src.items():
                c = calls.setdefault(name, [0, 0, st.first_seen])
                c[0] += st.calls
                c[1] += st.data_calls
                if st.first_seen is not None and (c[2] is None or st.first_seen < c[2]):
                    c[2] = st.first_seen
        return [n for n, c in sorted(calls.items(), key=lambda kv: kv[1][2] or 0) if c[0] and c[1] == c[0]]

    def _merged(self, accumulated: bool, current: bool = True) -> Dict[str, SynapseState]:
        """Layer states of the current batch (and the totals), in forward order."""
        out: Dict[str, SynapseState] = {}
        sources = [self._totals] if accumulated else []
        if current:
            sources.append(self._batch.layers)
        if current:
            self._reduce_held()  # calls made without gradients: reduced without a graph first
            settle_all(list(self._batch.layers.values()), self._whole.kind)
        for src in sources:
            for name, state in src.items():
                fold(out.setdefault(name, SynapseState()), state)
            if src is self._totals:
                for name, values in self._sums.rows().items():
                    st = out.setdefault(name, SynapseState())
                    for key, value in zip(SUM_KEYS, values):
                        setattr(st, key, _sum(getattr(st, key), value, True))
        return dict(sorted(out.items(), key=lambda kv: kv[1].first_seen))

    def time_steps(self, layer: Optional[str] = None) -> float:
        """Time steps of the current batch (``layer=None``), or the steps ``layer`` ran in it.

        A layer's steps are the sum over its calls of the steps one call
        covers: ``T`` when its input carries the batch's time dim
        (``[T, B, ...]``, ``[B, T, ...]`` or ``[T*B, ...]``), else one. Other
        leading dims are tokens, not time: a ``Linear`` over ``[B, N, C]``
        called once runs 1 step (see the module docstring for how ``T`` is
        learned). Cheap (no device sync): what
        :class:`~synopsloss.SynOpsLoss` uses for ``budget=``; the table's
        ``time_steps`` column and ``synops_per_step`` / ``synops_per_s``.

        Example
        -------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 2))
        >>> counter = sl.SynOpsCounter(net, batch_dim=0)
        >>> for t in range(3):  # three steps of [B=2, tokens=5, 4]
        ...     _ = net(torch.ones(2, 5, 4))
        >>> counter.time_steps(), counter.time_steps("0")
        (3.0, 3.0)
        """
        if layer is None:
            self._require_batch("time_steps")
            self._samples()
            return float(self._time_layout()[0])
        state = self._batch.layers.get(layer)
        if state is None:
            names = self.layer_names
            if layer not in names:
                raise KeyError(f"no counted layer named {layer!r}; layers: {names}")
            return 0.0
        b = self._samples()
        steps, tc, _ = self._time_layout()
        return float(batch_layout.layer_steps(state, b, tc, steps))

    def _time_layout(self) -> Tuple[float, int, str]:
        """``(time steps of the batch, steps of a call that carries the time dim, source)``."""
        return batch_layout.time_layout(self._batch, self._batch.layers, self._layout_options())

    def _set_sample_steps(self, samples: int) -> float:
        """Store ``samples x steps`` on the batch's layer states; return the batch's time steps."""
        steps, per_layer = batch_layout.sample_steps(self._batch, self._batch.layers, samples, self._layout_options())
        for name, state in self._batch.layers.items():
            state.sample_steps = per_layer[name]
        return steps

    def synops(self, by_layer: bool = False, driven: bool = False, dtype: Optional[torch.dtype] = None) -> Any:
        """Differentiable synops per sample since the last reset (0-dim, with grad_fn).

        Parameters
        ----------
        by_layer
            Return ``{layer: 0-dim tensor}`` for every counted layer, in forward
            order (layers not called since the last reset get a zero).
        driven
            Only the network-driven layers: leave out those fed directly by the
            data (:meth:`data_fed_layers`), as :class:`~synopsloss.SynOpsLoss`
            does by default; training cannot lower their synops but by zeroing
            weights.
        dtype
            The result's dtype: torch's default (``None``, float32 unless set otherwise), the loss's; pass
            ``torch.float64`` for counts above 2^24 per sample to the last synop (the counts accumulate in
            float64).

        Raises
        ------
        RuntimeError
            Before any forward pass since :meth:`reset`.
        FloatingPointError
            When an input held NaN or inf (with ``check_finite=True``).

        Example
        -------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3, bias=False), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(1.0)
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.tensor([[1.0, 1.0]]))      # layer 0: 2 inputs x 3 outputs; layer 2: 3 x 2.0 x 1
        >>> counter.synops().item(), counter.synops(driven=True).item()
        (12.0, 6.0)
        """
        self._require_batch("synops")
        self._warn_added(stacklevel=4)
        out_dtype = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(out_dtype, torch.dtype) or not out_dtype.is_floating_point:
            raise TypeError(
                f"counter.synops(dtype={dtype!r}): pass a floating-point torch.dtype (torch.float64) or None")
        b = self._samples()
        batch = self._batch
        if 0 < batch.grad_calls < batch.root_calls and torch.is_grad_enabled():
            self._warn_once(
                f"synopsloss: this batch ran the model {batch.root_calls - batch.grad_calls} time(s) without "
                f"gradients beside {batch.grad_calls} time(s) with them (an accuracy or metric pass in the training "
                "step?): counter.synops() and a synops loss count them all, as time steps of the batch, but those "
                "without gradients carry none. If they are no part of the batch's computation, run them inside "
                "`with counter.paused():` (Lightning: `with self.<regularizer>.counter.paused():`); if they are "
                "(steps run without gradients on purpose), the count is right.", stacklevel=4)
        batch.read = True
        states = list(batch.layers.values())
        self._reduce_held()  # calls made without gradients: reduced without a graph first
        settle_all(states, self._whole.kind)
        device = states[0].device
        fed = set(self.data_fed_layers(accumulated=False)) if driven else set()
        idle = self._idle(batch.layers)
        if idle:  # (their zeros are no measurement)
            self._warn_idle(idle, stacklevel=4)
        if by_layer:
            ran = sorted((n for n in batch.layers if n not in fed), key=lambda n: batch.layers[n].first_seen or 0)
            names = ran + [n for n in self._layers if n not in batch.layers and n not in fed]
            values = [batch.layers[n].synops for n in ran]
            if values and len({(v.device, v.dtype, v.requires_grad) for v in values}) == 1:  # one stacked division
                scaled = (torch.stack(values) / b).to(out_dtype).unbind(0)
            else:
                scaled = [(v / b).to(out_dtype) for v in values]
            out = dict(zip(ran, scaled))
            zero = torch.zeros((), dtype=out_dtype, device=device)
            out.update({n: zero for n in names[len(ran):]})
            out = {n: out[n] for n in names}
            for v in out.values():  # a loss may use any subset of the layers (SynOpsLoss leaves data-fed ones out)
                if v.requires_grad:
                    self._watch_backward(v)
            return out
        chosen = [st for n, st in batch.layers.items() if n not in fed]
        if not chosen:
            raise RuntimeError("counter.synops(driven=True): every counted layer of this batch is fed by the data")
        total = chosen[0].synops if len(chosen) == 1 else torch.stack([st.synops.to(device) for st in chosen]).sum()
        if self.check_finite and not bool(torch.isfinite(total.detach())):
            self._raise_nonfinite()
        result = (total / b).to(out_dtype)
        if result.requires_grad:
            self._watch_backward(result)
        return result

    def _all_sampled(self) -> bool:
        """Whether every accumulated sample has per-sample synops (else the accumulated snapshot keeps none)."""
        if self._sampled == self._total_samples:
            return True
        self._warn_once(
            f"synopsloss: per-sample synops were kept for {self._sampled} of the {self._total_samples} samples "
            "counted before this batch (per_sample_counts was off for the others, or their batch could not be "
            "split by sample: named in an earlier warning), so the accumulated snapshot holds none: its "
            "distribution() would describe only some samples. Call counter.reset(accumulated=True) after switching "
            "per_sample_counts on.", stacklevel=5)
        return False

    def _sample_dict(self, samples: int, accumulated: bool) -> Dict[str, Tuple[float, ...]]:
        """Per-sample synops per layer as host floats: this batch's, after the earlier batches' when ``accumulated``."""
        from .snapshot import _concat

        with torch.no_grad():
            now = {n: tuple(v.detach().double().cpu().tolist()) for n, v in self.per_sample(by_layer=True).items()}
        if not accumulated:
            return now
        if not self._all_sampled():
            return {}
        before = self._sample_values
        return _concat(before, now, self._sampled, samples)

    def per_sample(self, by_layer: bool = False) -> Any:
        """Each sample's synops in the current batch (differentiable; needs ``per_sample=True``).

        Parameters
        ----------
        by_layer
            ``{layer: [samples] tensor}`` instead of the ``[samples]`` total over layers.

        Example
        -------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3, bias=False))
        >>> counter = sl.SynOpsCounter(net, per_sample=True)
        >>> _ = net(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))   # 1 spike x 3 outputs, 2 spikes x 3
        >>> counter.per_sample().tolist()
        [3.0, 6.0]
        """
        if not self.per_sample_counts:
            raise RuntimeError("counter.per_sample() needs SynOpsCounter(model, per_sample=True)")
        self._require_batch("per_sample")
        b = self._samples()
        states = list(self._batch.layers.values())
        self._reduce_held()  # calls made without gradients: reduced without a graph first
        settle_all(states, self._whole.kind)
        self._batch.read = True
        batch_major = self._batch_major(b)
        folded_batch = self._batch.fold_batch is not None
        out: Dict[str, Tensor] = {}
        unread: Dict[str, tuple] = {}
        for name, state in self._batch.layers.items():
            if not state.call_leads or state.unsampled:
                continue
            parts, index = [], []
            for (lead, data, at), row in zip(state.call_leads, state.row_synops):
                parts.append(row)
                idx = _row_samples(tuple(lead), row.numel(), b, batch_major, name, data, folded_batch, at)
                if idx is None:
                    unread[name] = tuple(lead)
                    break
                index.append(idx)
            if name in unread:
                continue
            vals = torch.cat(parts) if len(parts) > 1 else parts[0]
            idx = (torch.cat(index) if len(index) > 1 else index[0]).to(vals.device)
            out[name] = vals.new_zeros(b).index_add(0, idx, vals).to(torch.get_default_dtype())
        if self.check_finite and out and not bool(torch.isfinite(torch.stack([v.detach().sum() for v in out.values()])
                                                                  ).all()):
            self._raise_nonfinite()  # (one host read per call of per_sample, as synops() makes)
        for v in out.values():
            if v.requires_grad:
                self._watch_backward(v)
        if unread:
            self._warn_once(
                f"synopsloss: per-sample synops leave out layer(s) {list(unread)}: their rows fold the samples with "
                f"other dims ({', '.join(f'{n}: {l}' for n, l in unread.items())}) in an order that cannot be read "
                "(folded inside the model from a copy, such as torch's attention with need_weights=True, or a "
                "tensor with as many time steps or tokens as samples: the model's input too when no layer of known "
                "layout read it and batch_dim= was not given). Their synops are in "
                "counter.synops() and the table, not in per_sample(), the snapshot's distribution() or "
                "SynOpsLoss(quantile=). Keep the sample dim apart (a view of [B, ...] or [T, B, ...]) to count "
                "them per sample.", stacklevel=3)
        left = [n for n, st in self._batch.layers.items()
                if st.calls and (st.unsampled or not st.call_leads) and n not in unread]
        if left:
            self._warn_once(
                f"synopsloss: per-sample synops leave out layer(s) {left}: recurrent layers, and activation products "
                "without batch dims or counted inside torch.compile / a torch.func transform, are counted per batch, "
                "not per sample. Their synops are in counter.synops() and the table, not in per_sample(), the "
                "snapshot's distribution() or SynOpsLoss(quantile=).", stacklevel=3)
        if by_layer:
            return out
        if not out:
            if unread or left:
                raise RuntimeError(
                    f"counter.per_sample(): every counted layer of this batch is left out of the per-sample synops "
                    f"({list(unread) + left}, named in the warning above): there is no per-sample value to give. Their "
                    "synops are in counter.synops() and the table; keep the sample dim apart (a view of [B, ...] or "
                    "[T, B, ...]) to count them per sample.")
            raise RuntimeError("counter.per_sample(): no layer with a fan-out map ran in this batch")
        return torch.stack(list(out.values())).sum(0)

    def _batch_major(self, samples: int) -> Optional[bool]:
        """Whether the model's input holds its samples before its time steps (``[B, T, ...]``: ``True``), after
        them (``[T, B, ...]``: ``False``), or ``None`` when neither the options nor the input's shape say."""
        batch = self._batch
        if batch.fold_batch is not None:  # sinabs Squeeze layers: [B*T] batch-major
            return True
        if self.time_dim is not None:
            return self.time_dim != 0
        if self._batch_dim_given:
            return self.batch_dim == 0
        if batch.probe_major is not None:  # (SpikingJelly's multi-step layers: [T, B, ...])
            return batch.probe_major
        shape = batch.input_shape
        if len(shape) >= 2 and (shape[0] == samples) != (shape[1] == samples):
            return shape[0] == samples
        return None

    def _watch_backward(self, t: Tensor) -> None:
        ref = weakref.ref(self._batch)

        def hook(grad: Tensor) -> None:
            batch = ref()
            if batch is not None:
                batch.backwarded = True

        t.register_hook(hook)

    def _raise_nonfinite(self) -> None:
        bad = [n for n, s in self._batch.layers.items() if not bool(torch.isfinite(s.synops.detach()))]
        raise FloatingPointError(
            f"synopsloss: NaN or inf in the input of layer(s) {', '.join(repr(n) for n in bad)} since the last "
            "reset(); the synops are undefined. Check the data and the layers before them "
            "(torch.autograd.set_detect_anomaly can help)."
        )

    def snapshot(self, accumulated: bool = False) -> CounterSnapshot:
        """The counter's numbers as plain data (one device-to-host copy).

        Parameters
        ----------
        accumulated
            ``False``: the current batch (since the last :meth:`reset`).
            ``True``: every batch since the counter was created (or
            ``reset(accumulated=True)``), over all their samples, like
            NeuroBench's accumulated metrics.

        Returns
        -------
        CounterSnapshot
            Per-layer sums and shapes (``.layers``), neuron statistics
            (``.neurons``), ``.samples``; ``.per_layer()`` / ``.total()`` per sample.

        Example
        -------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.ones(4, 2))
        >>> counter.snapshot().total()["eff_acs"]
        4.0
        """
        batch = self._batch
        current = bool(batch.layers) and not (batch.pending or batch.failed)
        if not current and not (accumulated and self._total_samples):
            self._require_batch("snapshot")
        if self._encoding_unseen:
            unseen = [n for n in self._encoding_unseen if n not in self.layer_names]
            if unseen:
                raise ValueError(
                    f"encoding= names layer(s) {unseen} that the counter does not count (no module layer, and no "
                    f"functional op of that name ran); counted layers: {self.layer_names}")
            self._encoding_unseen = []
        samples = (self._samples() if current else 0) + (self._total_samples if accumulated else 0)
        sample_steps = self._total_sample_steps if accumulated else 0.0
        if current:
            b = self._samples()
            sample_steps += b * self._set_sample_steps(b)
        batch.read = batch.read or current
        states = self._merged(accumulated, current=current)
        self._warn_added(stacklevel=5)
        idle = self._idle(states)
        silent = self._scope.silent()
        if silent:
            msg = (
                f"synopsloss: module(s) {', '.join(silent)} have parameters, but no counted op used them as "
                "weights while the model ran: their synapses are NOT included. They apply their weights through "
                "ops that are no synapses (elementwise products), ops that cannot be counted, or did not run "
                "(called as m.forward(x), replaced after attach). Register a rule with synopsloss.register_rule "
                "(or declare them synapse-free with synopsloss.register_no_synapse)."
            )
            if self.strict:
                raise TypeError(msg)
            self._warn_once(msg, UnsupportedLayerWarning, stacklevel=4)
        if idle:
            self._warn_idle(idle, stacklevel=5)
            for n in idle:
                states[n] = SynapseState(first_seen=1 << 62)
        neurons = self._monitor.snapshot(accumulated=accumulated, current=current) if self._monitor is not None else {}
        layers = self._layer_stats(states)
        # forward order as ranks 0, 1, ... over both kinds of layers (the stamps are process-wide counters)
        ranked = sorted([*layers.values(), *neurons.values()], key=lambda s: s.order)
        rank = {id(s): i for i, s in enumerate(ranked)}
        layers = {n: dataclasses.replace(s, order=rank[id(s)]) for n, s in layers.items()}
        neurons = {n: dataclasses.replace(s, order=rank[id(s)]) for n, s in neurons.items()}
        per_sample: Dict[str, Tuple[float, ...]] = {}
        if self.per_sample_counts:
            if current:
                per_sample = self._sample_dict(self._samples(), accumulated)
            elif accumulated:
                per_sample = dict(self._sample_values) if self._all_sampled() else {}
        return CounterSnapshot(samples, layers, neurons, accumulated, sample_steps=sample_steps,
                               per_sample=per_sample)

    def _layer_stats(self, states: Dict[str, SynapseState]) -> Dict[str, LayerStats]:
        values: List[Tensor] = []
        keys = ("synops", "dense", "eff_macs", "eff_acs", "input_sum", "input_nonzero", "effective")
        zero = torch.zeros((), dtype=torch.float64)
        for state in states.values():
            for k in keys:
                v = getattr(state, k)
                values.append(v.detach().reshape(()) if v is not None else zero)
            lm = state.maps
            has_map = lm is not None and lm.effective.numel() > 0
            mean, top = lm.fanout_stats() if has_map else (zero, zero)  # per-map constants, cached with the map
            values += [mean, top]
        width = len(keys) + 2
        flat = _host_floats(values)  # one device-to-host copy per device and dtype
        out: Dict[str, LayerStats] = {}
        for i, (name, state) in enumerate(states.items()):
            v = flat[width * i: width * i + width]
            for key, x in zip(COUNT_KEYS, (v[1], v[2], v[3], v[0])):
                if not math.isfinite(x):
                    raise FloatingPointError(
                        f"synopsloss: NaN or inf in the input of layer {name!r}; its {key} are undefined. "
                        "Check the data and the layers before it, then counter.reset() (a batch with NaN that "
                        "entered the accumulated totals stays there: counter.reset(accumulated=True) clears them)."
                    )
            layer = self._layers.get(name)
            module = layer.module if layer is not None else None
            op_row = self._scope.rows.get(name) if layer is None else None
            has_map = state.maps is not None and state.maps.effective.numel() > 0
            out[name] = LayerStats(
                name=name, type=op_row.op if op_row else type(module).__name__ if module is not None else "?",
                kind=str(op_row.kind if op_row else self._kind(name)), order=int(state.first_seen or 0),
                synops=v[0], dense=v[1], eff_macs=v[2], eff_acs=v[3], input_sum=v[4], input_nonzero=v[5],
                calls=state.calls, rows=state.rows_total, in_shape=tuple(state.in_shape),
                out_shape=tuple(state.out_shape), in_neurons=state.in_neurons,
                weights=self._weights(layer), biases=self._biases(layer), fanout_mean=v[7] if has_map else None,
                fanout_max=v[8] if has_map else None, data_fed=bool(state.calls and state.data_calls == state.calls),
                sample_steps=state.sample_steps, in_values=state.in_values, effective=v[6],
            )
        return out

    def _kind(self, name: str) -> registry.LayerKind:
        """A neuron's own recurrent weights (snntorch RLeaky.recurrent, sinabs rec_connect, norse
        LIFRecurrentCell) are recurrent synapses; feed-forward layers inside a neuron are synaptic."""
        return registry.synapse_kind(self.model, name)

    @staticmethod
    def _weights(layer: Optional[_Layer]) -> Optional[int]:
        if layer is None:
            return None
        if layer.rule.fanout is not None:
            if parametrize.is_parametrized(layer.module, layer.rule.weight):
                # the weight its last call used (evaluating the parametrization again may draw random numbers)
                w = layer.last[2] if layer.last is not None else None
            else:
                w = getattr(layer.module, layer.rule.weight, None)
            return int(w.numel()) if isinstance(w, Tensor) else None
        return sum(p.numel() for n, p in layer.module.named_parameters()
                   if n.startswith("weight") or n.endswith("_weights"))  # norse: input_weights, recurrent_weights

    @staticmethod
    def _biases(layer: Optional[_Layer]) -> Optional[int]:
        if layer is None:
            return None
        return sum(p.numel() for n, p in layer.module.named_parameters(recurse=False) if "bias" in n)

    def table(self, dt: Optional[float] = None, energy: Any = "horowitz45nm", accumulated: bool = False):
        """The per-layer statistics table (:class:`synopsloss.table.SynOpsTable`).

        One row per layer that ran, in forward order (synaptic layers, neuron
        layers, and the layers without synapses between them), plus a total.

        Parameters
        ----------
        dt
            Seconds per time step, for the synops-per-second column.
        energy
            An energy preset name (see :mod:`synopsloss.energy`), an
            ``EnergyModel``, ``{"e_ac": J, "e_mac": J}``, or ``None`` for no
            energy column.
        accumulated
            ``True``: every batch since ``reset(accumulated=True)`` (each
            ``reset()`` folds a batch in), like ``snapshot(accumulated=True)``.

        Example
        -------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.ones(1, 2))
        >>> counter.table(energy="horowitz45nm").total.energy
        3.6e-12
        """
        from .energy import get_energy_model, prices_neurons
        from .report import build_table

        if not accumulated:
            self._require_batch("table")  # (its message names table(), not the snapshot it reads)

        if self._monitor is None and energy is not None and prices_neurons(get_energy_model(energy)):
            neurons = [n for n, m in self.model.named_modules() if registry.neuron_library(m) is not None]
            if neurons:
                self._warn_once(
                    f"synopsloss: the table's energy leaves out the neuron layers {neurons}, which the energy model "
                    "prices (membrane updates, spike writes): the counter was created with neurons=False, which "
                    "keeps no neuron statistics. Create it with neurons=True (the default) for the model's energy.",
                    stacklevel=3)
        return build_table(
            self.snapshot(accumulated=accumulated), dt=dt, energy=energy,
            per_neuron=self._monitor.firing_rates(accumulated=accumulated) if self._monitor is not None else None,
        )

    @property
    def map_cache_bytes(self) -> int:
        """Bytes of connection maps the counter holds now (bounded per layer by ``MapCache.max_bytes``)."""
        return sum(cache.nbytes for cache in self._maps.values())

    @property
    def neurons(self):
        """The :class:`synopsloss.neurons.NeuronMonitor` that tracks the model's neuron and other layers."""
        return self._monitor

    def __repr__(self) -> str:
        state = "attached" if self.attached else "removed"
        return f"SynOpsCounter({type(self.model).__name__}, {len(self._layers)} layers, {state})"


def _lead_key(c: OpCounts, lead: Optional[Tuple[int, ...]]) -> tuple:
    """What :func:`synopsloss.layout.call_steps` needs of one call: its leading (row) dims, or ``("T", steps)``."""
    if lead is not None:
        return lead
    if c.samples:  # the rule knows its layout: rows = steps x samples
        return ("T", c.rows // c.samples)
    return (c.rows,)


def _check_optional_int(name: str, value: Any, minimum: int) -> None:
    check_int(name, value, minimum=minimum, optional=True)


def _checked_input(name: str, module: nn.Module, x: Tensor) -> Tensor:
    if x.device.type == "meta":
        raise ValueError(
            f"synopsloss: layer {name!r} received a meta tensor, which holds no values to count; "
            "run the model on real data (move the model and input to cpu or cuda)"
        )
    if _functorch_level(x) != -1:
        raise RuntimeError(
            f"synopsloss: layer {name!r} ran inside a torch.func transform (vmap / grad / jacrev); the counter "
            "cannot count per-sample slices of a transformed batch. Run the model outside the transform to count "
            "it, or wrap the transformed call in counter.paused()."
        )
    if torch.jit.is_tracing():
        raise RuntimeError(
            f"synopsloss: layer {name!r} was called while torch.jit.trace records the model; the counter's hooks "
            "would be traced into the graph. Call counter.remove() (or trace inside counter.paused()) before tracing."
        )
    if x.layout != torch.strided or x.is_nested:
        raise TypeError(
            f"synopsloss: layer {name!r} ({type(module).__name__}) received a {x.layout} "
            f"{'nested ' if x.is_nested else ''}tensor; only dense tensors are counted. Convert the input with "
            ".to_dense() before the model (or count this layer's calls inside counter.paused() to skip them)."
        )
    if x.is_complex():
        raise TypeError(
            f"synopsloss: layer {name!r} ({type(module).__name__}) received a complex tensor; synops are defined "
            "for real inputs only. Count the real and imaginary parts as two real layers, or skip the layer's "
            "calls with counter.paused()."
        )
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return x


def _input_view(x: Tensor) -> bool:
    """Whether ``x``, which has an autograd history, is a view of a leaf (an input that requires gradients)."""
    base = x._base
    return base is not None and base.grad_fn is None


def _calls_of(cls: type) -> Optional[frozenset]:
    """Names of the calls in a class' own code (``None`` when unreadable)."""
    code = class_code(cls)
    return code.calls if code is not None else None


def _row_samples(lead: Tuple[int, ...], rows: int, samples: int, batch_major: Optional[bool], name: str,
                 data: bool = False, folded_batch: bool = False, at: Optional[int] = None) -> Optional[Tensor]:
    """The sample each row of a call belongs to (``[rows]`` int64), from the call's leading dims; ``None`` when
    they cannot be read (the layer is then left out of the per-sample values, and named).

    ``[B, ...]`` and ``[T, B, ...]`` (one of the first two dims holds the samples) are read as they are, and a
    single dim of the batch's size after them (``[T, H, B, ...]``); a layout whose heads come before its samples
    with as many heads as samples (``[T, H, B]``, ``H == B``) is read as ``[T, B, H]``.
    ``[N, N, ...]`` (as many time steps or tokens as samples) is read by the model input's layout
    (``batch_major``) only for the data itself (``data``): a tensor made inside the model may hold its dims in
    another order. Rows folded into one dim (``[B*T]``, ``[N*B]``, ``[B*heads]``) are read only when a sinabs
    ``*Squeeze`` layer says they are batch-major (``folded_batch``); a fold of a view is seen through
    (:func:`synopsloss.records.view_lead`) before this. ``at``: the dim of ``lead`` that holds the samples, when a
    layout says so (a SpikingJelly multi-step layer's ``[T, B, ...]``, the rows its folding container folded:
    :meth:`SynOpsCounter._sample_lead`), also with as many time steps as samples."""
    r = torch.arange(rows)
    if rows % samples:
        raise ValueError(f"synopsloss: layer {name!r} read {rows} rows, not a multiple of {samples} samples")
    if rows == samples:  # one row per sample
        return r
    if at is not None and at < len(lead) and lead[at] == samples and math.prod(lead) == rows:
        return (r // math.prod(lead[at + 1:])) % samples  # the samples' dim is known (``at``)
    if len(lead) == 1:  # folded: the order of the dims folded with the samples cannot be read
        return r // (rows // samples) if folded_batch else None
    if lead[0] == samples and lead[1] == samples:  # [N, N, ...]
        if not data or batch_major is None:
            return None
        if batch_major:
            return r // (rows // samples)
        return (r // (rows // (lead[0] * samples))) % samples
    hits = [i for i, d in enumerate(lead) if d == samples]
    if hits and (hits[0] < 2 or len(hits) == 1):  # [B, ...], [T, B, ...] first; else the one dim of the batch's size
        inner = math.prod(lead[hits[0] + 1:])  # ([T, H, B, ...] with fewer or more heads than samples)
        return (r // inner) % samples
    # two dims of the batch's size past the first two (which one holds the samples is unknown), or none (the
    # samples folded with other dims): left out, and named by per_sample()'s warning
    return None


def _host_floats(values: List[Tensor]) -> List[float]:
    """0-dim tensors as Python floats, with one stacked copy per (device, dtype) group."""
    groups: Dict[Tuple[Any, Any], List[int]] = {}
    for i, v in enumerate(values):
        groups.setdefault((v.device, v.dtype), []).append(i)
    out = [0.0] * len(values)
    for idx in groups.values():
        for i, x in zip(idx, torch.stack([values[i] for i in idx]).to("cpu", torch.float64).tolist()):
            out[i] = x
    return out


ENCODINGS = ("unary", "bitplane")


def _check_encoding(encoding: Any) -> Dict[str, str]:
    """``encoding=`` as ``{layer: name}`` (``""``: every layer)."""
    if encoding is None:
        return {}
    spec = {"": encoding} if isinstance(encoding, str) else encoding
    if not isinstance(spec, Mapping):
        raise TypeError(f"encoding must be a name or a dict {{layer: name}}, got {type(encoding).__name__}")
    for name, value in spec.items():
        if value not in ENCODINGS:
            raise ValueError(f"encoding {value!r} for {name or 'every layer'!r} is not one of {ENCODINGS}: 'unary' "
                             "(a count of k is k events) or 'bitplane' (one event per set bit)")
    return dict(spec)
