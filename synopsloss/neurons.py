"""Neuron statistics: firing rates, neuron counts, neuron operations and membrane updates.

:class:`NeuronMonitor` hooks the spiking neurons of snntorch
(``snn.SpikingNeuron``: ``Leaky``, ``Synaptic``, ``Alpha``, ``Lapicque``,
``RLeaky``, ``RSynaptic``, ...) and sinabs (``StatefulLayer``: ``IAF``, ``LIF``,
``ExpLeak``, ``ALIF`` and their ``Squeeze`` / ``Recurrent`` variants), the
activation functions of plain networks (``ReLU``, ``Sigmoid``, ...) and every
other leaf module, to report them in forward order. All state lives in the
monitor, keyed by qualified module names; nothing is written onto modules and
the hooks never synchronise with the device.

Definitions (per layer, summed over every call since :meth:`NeuronMonitor.reset`
and divided by the number of samples):

* **neurons**: the elements of one sample of the layer's output (snntorch:
  ``spk.shape[1:]`` per call, one call per time step; sinabs: ``[B, T, ...]``
  -> ``shape[2:]``, ``*Squeeze`` ``[B*T, ...]`` -> ``shape[1:]``).
* **time steps**: calls x rows per call / samples (rows = ``B`` for snntorch,
  ``B*T`` for sinabs).
* **firing rate**: output spikes per neuron per time step (the mean output
  value, as sinabs' ``SNNAnalyzer`` reports it; a multi-spike count of 2 counts
  twice); **density**: the fraction of nonzero outputs (NeuroBench's
  ``ActivationSparsity`` is ``1 - density`` over all such layers).
* **membrane updates** (snntorch, NeuroBench's ``NeuronOperations``): every
  neuron of the first call of a batch, then one per neuron whose membrane
  potential ``mem`` changed in a call. *Dense*: neurons x calls.
* **membrane updates** (sinabs, which runs all time steps in one call and does
  not expose the trajectory): *event-driven* updates, one per neuron and step
  that received a nonzero input or emitted a spike (or, for ``*Recurrent``
  layers, spiked at the previous step of the call: recurrent input). An
  event-driven chip applies the leak lazily at the next event. For ``IAF``
  (no leak) this equals the number of membrane changes. *Dense*: neurons x steps.
* **neuron operations**: membrane updates x the operations of one update of
  that neuron type (*dense*: dense updates x the same cost). snntorch types
  use NeuroBench's table; sinabs types are derived the same way (one op per
  multiply, add, compare and reset of the update equations):

  ======================================  =====  ==========================================
  type                                    ops    derivation
  ======================================  =====  ==========================================
  snntorch ``Leaky`` / ``RLeaky``         4 / 4  NeuroBench (subtract / zero reset)
  snntorch ``Synaptic`` / ``RSynaptic``   6 / 8  NeuroBench
  snntorch ``Lapicque``                   11/11  NeuroBench
  snntorch ``Alpha``                      18/24  NeuroBench
  sinabs ``IAF*``                         3      add input, compare, reset
  sinabs ``LIF*``                         4      decay multiply, add input, compare, reset
  sinabs ``ExpLeak*``                     2      decay multiply, add input (no spikes)
  sinabs ``ALIF*``                        8      LIF's 4 + threshold-trace decay and spike
                                                 add (2) + adaptive threshold b0 + s*b (2)
  ======================================  =====  ==========================================

  sinabs extras: ``+2`` with a synaptic current (``tau_syn``: decay multiply,
  add), ``+1`` with ``norm_input`` (input scaled by ``1 - alpha``), ``+1`` with
  ``min_v_mem`` (clamp); subtract and zero resets both cost one op. Other
  neuron types (``SLSTM``, ``Leaky`` with ``reset_mechanism="none"``, ...)
  have no cost: their neuron operations are reported as unknown, never as 0.
  Pass ``costs={type name: ops}`` to set or override any cost.

SpikingJelly 2.0 and norse 1.1 neurons (every class of
:data:`synopsloss.frameworks.NEURON_TYPES`; costs from their rows' terms, the
same convention) are tracked too:

* **layout**: SpikingJelly neurons with ``step_mode='m'`` (and its
  multi-step-only neurons) and norse sequence modules (``LIF``, ``LIFRecurrent``,
  ...) take ``[T, B, ...]``: rows ``T*B``, neurons ``shape[2:]``; SpikingJelly
  ``'s'`` neurons and norse cells run one step on ``[B, ...]`` (norse returns
  ``(spikes, state)``: the spikes are read).
* **membrane updates**: one step per call with the membrane exposed
  (SpikingJelly ``'s'``: ``module.v`` before and after the call; norse cells:
  ``state.v`` passed in and returned): NeuroBench's rule, as for snntorch.
  All steps in one call (only the last step's membrane is exposed):
  *event-driven*, as for sinabs -- an update where the input or the output
  is nonzero (norse ``LIFRecurrent``: where the input or the previous spikes
  reach the neuron through a nonzero weight). A neuron with a synaptic
  current (norse ``LIF``) changes its membrane at every step after an input,
  so the event-driven count is what a lazily-leaking chip updates, not the
  trajectory.
* neurons whose output is a membrane or an analog value (norse ``LI``, SJ
  ``LIAFNode``, ``NonSpiking*``) have no spikes and no firing rate; ternary
  neurons' -1 spikes count as spikes.

Recurrent synapses (snntorch ``RLeaky``/``RSynaptic``' ``recurrent`` module,
sinabs ``*Recurrent``' ``rec_connect``; norse recurrent modules'
``input_weights`` / ``recurrent_weights``) are synapses: the
:class:`~synopsloss.SynOpsCounter` counts them as layers of their own (a norse
recurrent module is then both a synaptic and a neuron row of the table).

Example
-------
>>> import torch, snntorch as snn
>>> from synopsloss.neurons import NeuronMonitor
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), snn.Leaky(beta=0.5, init_hidden=True))
>>> monitor = NeuronMonitor(net)
>>> for t in range(4):
...     _ = net(torch.ones(5, 2))
>>> stats = monitor.stats()["1"]
>>> stats["neurons"], stats["time_steps"], stats["membrane_updates_dense"]
(3, 4.0, 12.0)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import weakref
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from . import frameworks, registry
from . import layout as batch_layout
from ._validate import check_int
from .hooks import HookSet, foreign_forward_hooks, next_stamp
from .reductions import Scratch, count_either, count_nonzero, neuron_counts
from .registry import LayerKind, layer_kind, neuron_op_cost
from .snapshot import NeuronStats
from .state import NeuronState, fold

__all__ = ["NeuronMonitor", "NEUROBENCH_NEURON_OPS", "neuron_op_cost", "layer_kind"]

_FRAMEWORKS = ("spikingjelly", "norse")

#: NeuroBench 2.3 ``neuron_ops_reset_operations``: operations per membrane update (snntorch types).
NEUROBENCH_NEURON_OPS = {k: v for k, v in registry.NEURON_OP_COSTS["snntorch"].items() if not k.startswith("R")}


def _is_leaky(module: nn.Module) -> bool:
    """Whether the membrane decays (a multiply per neuron and step): not an IAF, nor a decay of 1 (snntorch
    ``Leaky(beta=1)``, read when the counter attaches)."""
    if "IAF" in [c.__name__ for c in type(module).__mro__]:
        return False
    beta = getattr(module, "beta", None)
    if isinstance(beta, (int, float)) or (isinstance(beta, Tensor) and beta.numel()):
        with torch.no_grad():
            return not bool((torch.as_tensor(beta) == 1).all())
    return True


def _count_nonzero(t: Tensor, dtype: torch.dtype) -> Tensor:
    """Number of nonzero elements of ``t`` as a 0-dim ``dtype`` tensor (exact int64 count, no sync)."""
    return torch.count_nonzero(t).to(dtype)


def _add(a: Optional[Tensor], b: Tensor) -> Tensor:
    return b if a is None else a + b.to(a.device)


class NeuronMonitor:
    """Firing rates, neuron counts, membrane updates and neuron operations of a model's synapse-free layers.

    Tracks spiking neuron layers, activations and the other leaf layers
    without synapses (norms, pooling, dropout, ...); synaptic layers are the
    :class:`~synopsloss.SynOpsCounter`'s.

    Parameters
    ----------
    model
        The network.
    batch_size
        Samples per batch; otherwise learned from dim ``batch_dim`` of the
        model's first tensor argument (or a sinabs ``*Squeeze`` layer), or
        from ``samples_fn``.
    batch_dim
        Dimension of the model's input that holds the samples.
    costs
        ``{neuron class name: operations per membrane update}``, looked up
        before the built-in table.
    samples_fn
        A function returning the number of samples of the current batch (the
        :class:`~synopsloss.SynOpsCounter` that owns the monitor passes its own).
    rules
        Extra synapse rules (to recognise synaptic layers nested in neurons).

    Example
    -------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    >>> monitor = NeuronMonitor(net)
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0); _ = net[0].bias.fill_(-1.0)
    >>> _ = net(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    >>> monitor.stats()["1"]["density"]
    0.5
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        batch_size: Optional[int] = None,
        batch_dim: int = 0,
        costs: Optional[Mapping[str, int]] = None,
        samples_fn: Optional[Callable[[], int]] = None,
        rules: Optional[Mapping[type, Any]] = None,
        scratch: Optional[Scratch] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"NeuronMonitor expects a torch.nn.Module, got {type(model).__name__}")
        check_int("batch_size", batch_size, minimum=1, optional=True)
        self.model = model
        self.batch_size = batch_size
        self.batch_dim = batch_dim
        self.costs = dict(costs or {})
        # a bound method of the owning counter is held weakly: the counter owns the monitor
        self._samples_fn = weakref.WeakMethod(samples_fn) if inspect.ismethod(samples_fn) else (
            (lambda: samples_fn) if samples_fn is not None else None)
        self._rules = rules
        self._scratch = scratch if scratch is not None else Scratch()  # reused work buffers (CPU)
        self._hooks = HookSet(self)
        self.info: Dict[str, Dict[str, Any]] = {}  # name -> type, kind, cost, leaky, library (static)
        self._batch: Dict[str, NeuronState] = {}
        self._totals: Dict[str, NeuronState] = {}
        self._total_samples = 0
        # samples seen by the model's input (root_batch), a sinabs *Squeeze layer (fold_batch) and a
        # SpikingJelly / norse neuron, whose layout is known (probe_batch)
        self._layout = batch_layout.Evidence()
        #: set by the owner to watch for neuron state carried into a batch's first call (auto_reset: a model called
        #: once per time step carries its membranes from call to call); the first such neuron's name
        self.watch_carry = False
        self.carried: Optional[str] = None
        self.attach()

    # ------------------------------------------------------------------ lifecycle

    @property
    def attached(self) -> bool:
        return self._hooks.attached

    def attach(self) -> "NeuronMonitor":
        """Register the hooks (done by the constructor)."""
        if self.attached:
            return self
        self._hooks.pre(self.model, NeuronMonitor._root_hook, with_kwargs=True, quiet=True)
        neuron_names: List[str] = []
        for name, module in self.model.named_modules():
            if name == "" and any(True for _ in module.children()):
                continue
            inside_neuron = any(name.startswith(n + ".") for n in neuron_names)
            leaf = not any(True for _ in module.children())
            if ".parametrizations." in f".{name}" and leaf:
                continue  # weight_norm / spectral_norm internals of a layer, not layers of the model
            kind = layer_kind(module)
            if kind is not LayerKind.NEURON and registry.find_rule(module, self._rules) is not None:
                continue  # synaptic: the counter's (a neuron with synapses of its own, norse recurrent cells: both)
            if kind is LayerKind.NEURON:
                neuron_names.append(name)
                self._attach_neuron(name, module)
            elif not inside_neuron and leaf:
                self.info[name] = dict(type=type(module).__name__, kind=kind,
                                       stepped=frameworks.step_layout(module) is not None)
                track = NeuronMonitor._neuron_hook if kind is LayerKind.ACTIVATION else NeuronMonitor._other_hook
                self._hooks.forward(module, functools.partial(track, name=name), quiet=True)
        return self

    def _attach_neuron(self, name: str, module: nn.Module) -> None:
        lib = registry.neuron_library(module)
        row = frameworks.find_neuron(module) if lib in _FRAMEWORKS else None
        self.info[name] = dict(
            type=type(module).__name__, kind=LayerKind.NEURON, library=lib,
            cost=neuron_op_cost(module, self.costs), leaky=row.leaky if row is not None else _is_leaky(module),
            recurrent="Recurrent" in type(module).__name__ or hasattr(module, "recurrent"),
            squeeze=registry.is_time_folding(module), row=row,
            membrane=registry.outputs_membrane(module),  # (sinabs ExpLeak: no spikes, no firing rate)
            sequence=registry.sequence_neuron(module),  # (snntorch StateLeaky: the whole [T, B, ...] per call)
            whole=registry.whole_spikes(module),  # ("binary": its spikes are 0 and 1 by construction)
        )
        if lib == "snntorch":
            self._hooks.pre(module, functools.partial(NeuronMonitor._snntorch_pre, name=name), quiet=True)
        elif lib == "spikingjelly":
            self._hooks.pre(module, functools.partial(NeuronMonitor._sj_pre, name=name), quiet=True)
        if lib == "norse":  # the state comes in as args[1] or state=
            self._hooks.forward(module, functools.partial(NeuronMonitor._norse_hook, name=name), with_kwargs=True,
                                quiet=True)
        else:
            self._hooks.forward(module, functools.partial(NeuronMonitor._neuron_hook, name=name), quiet=True)

    def remove(self) -> None:
        """Remove every hook (statistics stay readable)."""
        self._hooks.remove()

    @contextlib.contextmanager
    def paused(self) -> Iterator["NeuronMonitor"]:
        """Run the model without tracking."""
        with self._hooks.paused():
            yield self

    def reset(self, accumulated: bool = False, drop: bool = False) -> None:
        """Start a new batch, adding the finished one to the running totals.

        ``accumulated=True`` clears the totals too; ``drop=True`` discards the
        finished batch (its forward pass raised).
        """
        if accumulated:
            self._totals.clear()
            self._total_samples = 0
        elif self._batch and not drop:
            samples = self._samples()
            for name, state in self._batch.items():
                fold(self._totals.setdefault(name, NeuronState()), state)
            self._total_samples += samples
        self._batch = {}
        self._layout = batch_layout.Evidence()

    # ------------------------------------------------------------------ hooks

    def _root_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._layout.root_batch is not None:
            return
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, Tensor)]
        if tensors and tensors[0].dim() > self.batch_dim:
            self._layout.root_batch = int(tensors[0].shape[self.batch_dim])
            self._layout.root_shape = tuple(tensors[0].shape)

    def _state(self, name: str) -> NeuronState:
        state = self._batch.get(name)
        if state is None:
            state = self._batch[name] = NeuronState(first_seen=next_stamp())
        return state

    def _other_hook(self, module: nn.Module, args: tuple, output: Any, *, name: str) -> None:
        state = self._state(name)
        state.calls += 1
        x = args[0] if args and isinstance(args[0], Tensor) else None
        # SpikingJelly layers in multi-step mode take [T, B, ...]: one sample is shape[2:]
        lead = 2 if self.info[name].get("stepped") and frameworks.step_layout(module)[0] == "time_first" else 1
        if x is not None and x.dim() >= lead:
            state.in_shape = tuple(x.shape[lead:])
        if isinstance(output, Tensor) and output.dim() >= lead:
            state.out_shape = tuple(output.shape[lead:])

    def _carried(self, name: str, state: Optional[NeuronState], mem: Any) -> None:
        """A neuron's first call of a batch whose membrane is not at rest (read only while :attr:`watch_carry`)."""
        if (self.watch_carry and state is None and self.carried is None and isinstance(mem, Tensor) and mem.numel()
                and bool(mem.detach().any())):
            self.carried = name

    def _snntorch_pre(self, module: nn.Module, args: tuple, *, name: str) -> None:
        state = self._batch.get(name)
        mem = getattr(module, "mem", None)
        self._carried(name, state, mem)
        if state is not None and isinstance(mem, Tensor):
            # snntorch rebinds ``mem`` each step, so a reference is the state before the call
            state.pre_mem = mem.detach()

    def _sj_pre(self, module: nn.Module, args: tuple, *, name: str) -> None:
        state = self._batch.get(name)
        v = frameworks.membrane(self.info[name]["row"], module, None)
        self._carried(name, state, v)
        if state is not None and v is not None:
            state.pre_mem = v.detach()  # SpikingJelly rebinds ``v`` at each step, like snntorch ``mem``

    def _norse_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any, *, name: str) -> None:
        pre = args[1] if len(args) > 1 else kwargs.get("state")
        self._neuron_hook(module, args, output, name=name, pre_state=pre)

    def _neuron_hook(self, module: nn.Module, args: tuple, output: Any, *, name: str, pre_state: Any = None) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(out, Tensor) or out.dim() == 0:
            return
        x = args[0] if args and isinstance(args[0], Tensor) else None
        first = name not in self._batch
        state = self._state(name)
        self._track(module, self.info[name], state, x, out.detach(), first, output=output, pre_state=pre_state)

    def _track(self, module: nn.Module, info: Dict[str, Any], state: NeuronState, x: Optional[Tensor],
               out: Tensor, first: bool, output: Any = None, pre_state: Any = None) -> None:
        lib = info.get("library")
        row = info.get("row")
        time_first = out.dim() >= 2 and (bool(info.get("sequence")) or row is not None and (
            row.layout in ("multi_step", "time_first")
            or (row.layout == "step_mode" and getattr(module, "step_mode", "s") == "m")))
        if (lib == "sinabs" and not info.get("squeeze") and out.dim() >= 2) or time_first:
            sample_shape, rows = tuple(out.shape[2:]), out.shape[0] * out.shape[1]
        else:
            sample_shape, rows = tuple(out.shape[1:]), out.shape[0]
        if row is not None and self._layout.probe_batch is None:
            self._layout.probe_batch = int(out.shape[1] if time_first else out.shape[0])
        spiking = (row is None or row.output not in ("membrane", "analog")) and not info.get("membrane")
        if row is not None and row.output == "signed":
            out = out.abs()  # a -1 spike is one spike
        if info.get("squeeze") and x is not None:
            b = registry.time_folding_batch(module, x)
            if b is not None:
                self._layout.fold_batch = b
        neurons = math.prod(sample_shape)
        flat = out.reshape(rows, neurons) if neurons else out.reshape(rows, 0)
        dtype = torch.float64 if out.device.type != "mps" else torch.float32
        # No sum that first converts a whole activation tensor to float64 (that copy costs more
        # than the layer): per-neuron sums of spikes are exact in float32 up to 2^24 rows.
        red = dtype if flat.element_size() < 4 else None
        # sinabs: an event wherever the input or the output is nonzero, counted in the same walk
        events = lib == "sinabs" and x is not None and x.shape == out.shape
        recurrent = events and info.get("recurrent") and out.dim() >= 2 and not info.get("squeeze")
        with torch.no_grad():
            per, nonzero, updates = neuron_counts(
                flat, x.reshape(flat.shape) if events and not recurrent else None, dtype, red, self._scratch,
                # (0/1 by construction, unless a user's forward hook ran before this one and changed the output)
                per_neuron=spiking, binary=(info.get("whole") == "binary" and rows < (1 << 24)
                                            and not foreign_forward_hooks(module)))
            call = NeuronState(spikes=per.sum() if spiking else None, nonzero=nonzero, per_neuron=per,
                               calls=1, rows=rows, call_rows={rows}, numel=out.numel(), neurons=neurons,
                               sample_shape=sample_shape,
                               out_shape=tuple(out.shape[2:] if time_first else out.shape[1:]),
                               in_shape=tuple(x.shape[2 if time_first else 1:]) if x is not None and x.dim() > 1 else ())
            if lib == "snntorch":
                self._snntorch_updates(module, state, call, first, dtype, self._scratch)
            elif recurrent:  # ... or, for *Recurrent layers, where the neuron spiked at the previous step
                event = torch.logical_or(x.detach(), out)
                event[:, 1:] |= out[:, :-1].bool()  # (nonzero or NaN: a cast, faster than != 0)
                call.updates = _count_nonzero(event, dtype)
                call.updates_dense = out.numel()
            elif events:
                call.updates = updates
                call.updates_dense = out.numel()
            elif row is not None:
                self._framework_updates(module, row, state, call, x, out, output, pre_state, first, time_first, dtype,
                                        self._scratch)
            fold(state, call, detach=False)

    @staticmethod
    def _snntorch_updates(module: nn.Module, state: NeuronState, call: NeuronState, first: bool,
                          dtype: torch.dtype, scratch: Scratch) -> None:
        """NeuroBench: every neuron at the first call of a batch, then one per changed membrane."""
        mem = getattr(module, "mem", None)
        if isinstance(mem, Tensor):
            if first or state.pre_mem is None or state.pre_mem.shape != mem.shape:
                # (a membrane of another shape than before the call: a neuron applied to layers of other widths
                # starts a membrane of its own, every neuron updated, as SpikingJelly's and norse's are counted)
                call.updates_first = mem.numel()
                call.updates = mem.new_zeros((), dtype=dtype)
            else:
                call.updates = count_nonzero(state.pre_mem, dtype, scratch, minus=mem)
            call.updates_dense = mem.numel()
        state.pre_mem = None

    @staticmethod
    def _framework_updates(module: nn.Module, row: Any, state: NeuronState, call: NeuronState, x: Optional[Tensor],
                           out: Tensor, output: Any, pre_state: Any, first: bool, time_first: bool,
                           dtype: torch.dtype, scratch: Scratch) -> None:
        """SpikingJelly / norse membrane updates.

        One step per call with the membrane exposed (SJ ``step_mode='s'``:
        ``module.v`` before and after; norse cells: the state passed in and the
        one returned): NeuroBench's rule, as for snntorch. All steps in one
        call (SJ ``'m'``, norse sequence modules; only the last step's membrane
        is exposed): event-driven, as for sinabs.
        """
        call.updates_dense = out.numel()
        post = frameworks.membrane(row, module, output) if not time_first else None
        if post is not None:
            if row.library == "norse":
                where, _, path = row.membrane.partition(":")
                pre = frameworks._attr(pre_state, path) if pre_state is not None else None
            else:
                pre = state.pre_mem
            state.pre_mem = None
            if first or not isinstance(pre, Tensor) or pre.shape != post.shape:
                call.updates_first = post.numel()
                call.updates = post.new_zeros((), dtype=dtype)
            else:  # (blocks of the difference, cast to bool and counted: several times faster than count_nonzero)
                call.updates = count_nonzero(pre.detach(), dtype, scratch, minus=post.detach())
            call.updates_dense = post.numel()
            return
        state.pre_mem = None
        # event-driven: a neuron and step that received a nonzero input or emitted a spike
        if x is not None and x.shape == out.shape:  # (a cast to bool: several times faster than x != 0)
            received = x.detach().clone() if x.dtype == torch.bool else x.detach().bool()
        else:
            received = _synaptic_input(module, x, pre_state, output)
            if received is None or received.shape != out.shape:
                call.updates_dense = out.numel()
                return  # unknown (None): the table says so
        # (the union written into our own mask, eight positions per int64, and counted by its bytes)
        call.updates = count_either(received.contiguous(), out.bool().contiguous()).to(dtype)

    # ------------------------------------------------------------------ reading

    def _samples(self) -> int:
        fn = self._samples_fn() if isinstance(self._samples_fn, weakref.WeakMethod) else self._samples_fn
        if fn is not None:
            return int(fn())
        # the counter's priority chain (batch_size=, a time-folding layer, a neuron whose layout is known,
        # the model's input); the monitor has no rows to check them against
        found = batch_layout.reading(self._layout, {}, batch_layout.Options(batch_size=self.batch_size,
                                                                            batch_dim=self.batch_dim))
        if found is not None:
            for name, state in self._batch.items():  # (a neuron's rows of one call hold whole samples)
                odd = sorted(r for r in state.call_rows if r % found.samples)
                if odd:
                    raise ValueError(
                        f"NeuronMonitor: neuron {name!r} received {odd[0]} rows in one call, not a multiple of the "
                        f"{found.samples} samples given by {found.source}, so its rates per sample would be wrong. "
                        "Pass NeuronMonitor(model, batch_dim=1) for time-first [T, B, ...] input (fed step by step "
                        "or whole), or the batch's batch_size=B.")
            return found.samples
        raise ValueError(
            "NeuronMonitor cannot tell how many samples the batch has (the model was not called with a tensor); "
            "pass NeuronMonitor(model, batch_size=B)"
        )

    def _merged(self, accumulated: bool, current: bool = True) -> Dict[str, NeuronState]:
        out: Dict[str, NeuronState] = {}
        sources = ([self._totals] if accumulated else []) + ([self._batch] if current else [])
        for src in sources:
            for name, state in src.items():
                fold(out.setdefault(name, NeuronState()), state)
        return dict(sorted(out.items(), key=lambda kv: kv[1].first_seen))

    def snapshot(self, accumulated: bool = False, current: bool = True) -> Dict[str, NeuronStats]:
        """Plain-data sums of every tracked layer that ran (one device-to-host copy), in forward order."""
        merged = self._merged(accumulated, current and bool(self._batch))
        tensors, index = [], {}
        for name, state in merged.items():
            for f in ("spikes", "nonzero", "updates"):
                v = getattr(state, f)
                if v is not None:
                    index[(name, f)] = len(tensors)
                    tensors.append(v.detach().to("cpu", torch.float64).reshape(()))
        values = torch.stack(tensors).tolist() if tensors else []
        out: Dict[str, NeuronStats] = {}
        for name, state in merged.items():
            info = self.info.get(name, {})
            get = lambda f: values[index[(name, f)]] if (name, f) in index else None  # noqa: E731
            updates = get("updates")
            out[name] = NeuronStats(
                name=name, type=info.get("type", "?"), kind=str(info.get("kind", LayerKind.OTHER)),
                order=int(state.first_seen or 0), library=info.get("library"), op_cost=info.get("cost"),
                leaky=info.get("leaky"), spikes=get("spikes"), nonzero=get("nonzero"),
                updates=None if updates is None else updates + state.updates_first,
                updates_dense=state.updates_dense, rows=state.rows, numel=state.numel, calls=state.calls,
                neurons=state.neurons, sample_shape=tuple(state.sample_shape), in_shape=tuple(state.in_shape),
                out_shape=tuple(state.out_shape), mixed=bool(state.shape_changed),
            )
        return out

    def stats(self, accumulated: bool = False) -> Dict[str, Dict[str, Any]]:
        """Per-layer statistics (plain floats, per sample), in forward order.

        Keys: ``type``, ``kind``, ``neurons``, ``time_steps``, ``spikes``,
        ``firing_rate``, ``density``, ``membrane_updates``,
        ``membrane_updates_dense``, ``op_cost``, ``neuron_ops``,
        ``neuron_ops_dense``, ``in_shape``, ``out_shape``, ``calls``, ``leaky``.
        Entries that do not apply (a dropout layer's firing rate, an unknown
        neuron type's operations) are ``None``.
        """
        snap = self.snapshot(accumulated=accumulated)
        samples = (self._samples() if self._batch else 0) + (self._total_samples if accumulated else 0)
        return {name: neuron_row(s, samples) for name, s in snap.items()}

    def firing_rates(self, accumulated: bool = False) -> Dict[str, Tensor]:
        """Spikes per time step of every neuron of each neuron layer whose sample shape stayed fixed."""
        out = {}
        for name, info in self.info.items():
            if info["kind"] is LayerKind.NEURON:
                try:
                    out[name] = self.firing_rate_per_neuron(name, accumulated=accumulated)
                except (KeyError, ValueError):
                    pass
        return out

    def firing_rate_per_neuron(self, name: str, accumulated: bool = False) -> Tensor:
        """Spikes per time step of each neuron of layer ``name`` (a float64 tensor shaped like one sample).

        Raises
        ------
        KeyError
            If ``name`` is no neuron or activation layer that ran.
        ValueError
            If the layer's sample shape changed between calls.
        """
        merged = self._merged(accumulated)
        state = merged.get(name)
        kinds = (LayerKind.NEURON, LayerKind.ACTIVATION)
        if state is None or self.info.get(name, {}).get("kind") not in kinds:
            raise KeyError(f"{name!r} is not a neuron layer that ran since the last reset; neuron layers: "
                           f"{[n for n in merged if self.info.get(n, {}).get('kind') in kinds]}")
        row = self.info[name].get("row")
        if row is not None and row.output in ("membrane", "analog"):
            raise ValueError(f"{name!r} ({row.path.rpartition('.')[2]}) outputs {row.output} values, not spikes; "
                             "it has no firing rate")
        if state.per_neuron is None or state.shape_changed:
            raise ValueError(f"the neurons of {name!r} changed shape between calls; no per-neuron rate")
        samples = (self._samples() if self._batch else 0) + (self._total_samples if accumulated else 0)
        steps = state.rows / samples
        return (state.per_neuron.detach().to("cpu", torch.float64) / (samples * steps)).reshape(state.sample_shape)

    def __repr__(self) -> str:
        n = sum(1 for i in self.info.values() if i["kind"] is LayerKind.NEURON)
        return f"NeuronMonitor({type(self.model).__name__}, {n} neuron layers, {'attached' if self.attached else 'removed'})"


def _synaptic_input(module: nn.Module, x: Optional[Tensor], pre_state: Any, output: Any) -> Optional[Tensor]:
    """Where a norse module with ``input_weights`` (and ``recurrent_weights``) received nonzero input."""
    w_in = getattr(module, "input_weights", None)
    if x is None or not isinstance(w_in, Tensor):
        return None
    with torch.no_grad():
        mask = (w_in.detach() != 0).to(torch.float32)
        acc = x.detach().abs().to(torch.float32) @ mask.T
        w_rec = getattr(module, "recurrent_weights", None)
        if isinstance(w_rec, Tensor):
            z = frameworks.recurrent_inputs(module, (x, pre_state), output)["recurrent_weights"]
            acc = acc + z.detach().abs().to(torch.float32) @ (w_rec.detach() != 0).to(torch.float32).T
    return acc != 0


def _activation_layout(s: NeuronStats, samples: int, steps: Optional[float]) -> Tuple[int, int]:
    """``(rows, neurons)`` of a plain activation whose calls carried the batch's time dim next to the batch dim.

    The monitor reads an activation's output as ``[rows, *sample]`` (dim 0 the batch); when its sample starts
    with the time steps (``[B, T, C]``) or dim 0 holds them and the sample starts with the batch
    (``[T, B, C]``), that dim is time, as the synaptic rows read it (``steps``: the batch's time steps).
    """
    rows, neurons, shape = s.rows, s.neurons, s.sample_shape
    if not steps or not s.calls or len(shape) < 2 or steps != int(steps) or s.rows % s.calls:
        return rows, neurons
    tc, per_call = int(steps) // s.calls if int(steps) % s.calls == 0 else 0, s.rows // s.calls
    if tc > 1 and per_call == samples and shape[0] == tc:  # [B, T, ...]
        return rows * tc, neurons // tc
    if tc > 1 and per_call == tc and shape[0] == samples:  # [T, B, ...]
        return rows * samples, neurons // samples
    return rows, neurons


def neuron_row(s: NeuronStats, samples: int, steps: Optional[float] = None) -> Dict[str, Any]:
    """Per-sample statistics of one layer's :class:`~synopsloss.snapshot.NeuronStats` (see :meth:`NeuronMonitor.stats`);
    ``steps``: the batch's time steps, which a plain activation whose calls carried them runs too."""
    row: Dict[str, Any] = dict(
        type=s.type, kind=s.kind, calls=s.calls, in_shape=s.in_shape, out_shape=s.out_shape,
        neurons=None, time_steps=None, spikes=None, firing_rate=None, density=None,
        membrane_updates=None, membrane_updates_dense=None, op_cost=None,
        neuron_ops=None, neuron_ops_dense=None, leaky=s.leaky,
    )
    if s.kind not in (LayerKind.NEURON, LayerKind.ACTIVATION) or not samples:
        return row
    rows, neurons = _activation_layout(s, samples, steps) if s.kind == LayerKind.ACTIVATION else (s.rows, s.neurons)
    slots = rows * neurons
    if getattr(s, "mixed", False):  # (widths changed between calls: rates over every output value, no one width)
        slots, neurons = s.numel, None
    row.update(neurons=neurons, time_steps=rows / samples)
    row["density"] = s.nonzero / slots if slots and s.nonzero is not None else None
    if s.kind == LayerKind.NEURON:
        if s.spikes is not None:  # None: the output is a membrane or an analog value, not spikes
            row["spikes"] = s.spikes / samples
            row["firing_rate"] = s.spikes / slots if slots else None
        row["op_cost"] = s.op_cost
        if s.updates is not None:
            row["membrane_updates"] = s.updates / samples
            row["membrane_updates_dense"] = s.updates_dense / samples
            if s.op_cost is not None:
                row["neuron_ops"] = s.updates * s.op_cost / samples
                row["neuron_ops_dense"] = s.updates_dense * s.op_cost / samples
    else:
        row["membrane_updates_dense"] = s.numel / samples  # one update per activation output
    return row
