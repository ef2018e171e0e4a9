"""The synaptic-operation counter: forward hooks, differentiable synops and NeuroBench counts.

Definitions (per layer call, input ``x`` of shape ``[*rows, *sample]``):

* **synops** (differentiable): ``sum(x * effective_map)`` -- each input value
  times its number of nonzero outgoing weight taps, so a spike count of 2
  counts twice. Spikes averaged by an ``AvgPool`` are multiplied back by the
  pool's divisor (counted as spike events).
* **dense**: every weight tap of every input neuron, whatever its value.
* **effective ops**: ``sum((x != 0) * effective_map)``: nonzero input times
  nonzero weight. They are **ACs** when every value of the call's input is in
  {-1, 0, 1} (spikes), else **MACs** (NeuroBench's rule).
* Biases are not synapses.

Everything is summed over every forward call since :meth:`SynOpsCounter.reset`
(all time steps) and divided by the number of *samples* of the batch, never by
samples x time steps. How the number of samples ``B`` is learned, in order:

1. ``batch_size=`` given to the counter;
2. sinabs ``*Squeeze`` layers (``batch_size``, or ``rows // num_timesteps``),
   for models that fold time into the batch as ``[B*T, ...]``;
3. ``shape[batch_dim]`` of the first tensor the model itself is called with.
   This covers models called once per time step with ``[B, ...]`` (snntorch
   loops: call :meth:`~SynOpsCounter.reset` before each new batch) and models
   that take ``[B, T, ...]`` and loop inside. For time-first ``[T, B, ...]``
   input pass ``batch_dim=1``.

Each layer's rows per call must be a multiple of ``B``; when they are not, or
when ``B`` cannot be learned, reading the counts raises an error that says so.

Only modules are hooked: functional calls (``F.conv2d`` inside a custom
``forward``) are invisible to module hooks (see fvcore's ``flop_count.md``),
so a module with parameters that no rule covers is named in a warning when the
counter attaches (an error with ``strict=True``).
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import integrations
from .maps import LayerMaps, MapCache, OpCounts, Rule, find_rule, has_no_synapse

__all__ = ["SynOpsCounter", "UnsupportedLayerWarning", "COUNT_KEYS"]

#: The keys of each layer's entry in :meth:`SynOpsCounter.counts`.
COUNT_KEYS = ("dense", "eff_macs", "eff_acs", "synops")
#: How far avg-pooled spike counts times the pool's divisor may lie from an integer (float rounding).
_EVENT_TOL = 1e-3


class UnsupportedLayerWarning(UserWarning):
    """A module with parameters that the counter cannot count."""


@dataclass
class _LayerAcc:
    """Running sums of one layer over the calls of one batch (device tensors, float64)."""

    synops: Tensor  # differentiable
    eff_macs: Tensor
    eff_acs: Tensor
    dense: Tensor
    device: torch.device
    input_sum: Tensor  # sum of the input values (spike events after pool correction), detached
    input_nonzero: Tensor  # number of nonzero input values
    calls: int = 0
    rows: Set[int] = field(default_factory=set)
    rows_total: int = 0
    in_shape: Tuple[int, ...] = ()
    out_shape: Tuple[int, ...] = ()
    maps: Optional[LayerMaps] = None  # the maps of the last call (None for per-call rules)
    data_fed: bool = False  # an input shared memory with a tensor the model itself was called with


@dataclass
class _Batch:
    layers: Dict[str, _LayerAcc] = field(default_factory=dict)
    root_batch: Optional[int] = None
    root_calls: int = 0
    root_note: str = ""
    fold_batch: Optional[int] = None
    fold_layer: str = ""
    inputs: Dict[int, Any] = field(default_factory=dict)  # storage ptr -> weakref of the model's tensor inputs


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _all_integer(t: Tensor) -> Tensor:
    """0-dim bool tensor: every value of ``t`` is within ``_EVENT_TOL`` of an integer (overwrites ``t``)."""
    dev = torch.aminmax(t.sub_(t.round()))
    return (dev.min >= -_EVENT_TOL) & (dev.max <= _EVENT_TOL)


def _tensor_inputs(args: tuple, kwargs: Mapping[str, Any]) -> List[Tensor]:
    return [a for a in list(args) + list(kwargs.values()) if isinstance(a, Tensor)]


class SynOpsCounter:
    """Count the synaptic operations of a model, differentiably, per sample.

    Attaches forward hooks to every layer with a synapse rule (``nn.Linear``,
    ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d`` and registered ones),
    to average-pooling layers (spike-event correction) and to the root model
    (number of samples). Nothing is stored on the model: all state lives in the
    counter, keyed by the layers' qualified names, and :meth:`remove` (or
    leaving the ``with`` block) takes every hook off.

    Parameters
    ----------
    model
        The network (snntorch, sinabs or plain ``torch.nn``).
    batch_size
        Number of samples per batch, if it cannot be read from the inputs (see
        the module docstring for how it is learned otherwise).
    batch_dim
        Dimension of the model's first tensor argument that holds the samples.
    strict
        Raise instead of warn when a module with parameters cannot be counted.
    custom_rules
        ``{module type: Rule}`` looked up before the global registry (build it
        with :func:`synopsloss.register_rule` and ``registry=``).
    neurons
        Also track the spiking neuron layers (firing rates, neuron operations,
        membrane updates) and the layers without synapses, for :meth:`table`.
        ``False`` skips that bookkeeping (a few passes over every neuron
        layer's input and output per call) when only synops are needed, e.g.
        for a :class:`~synopsloss.SynOpsLoss` during training; the table then
        holds the synaptic layers only.
    check_finite
        :meth:`synops` raises if an input held NaN or inf (one device sync per
        call of :meth:`synops`; the layer hooks never synchronise).

    Example
    -------
    >>> import torch, synopsloss as sl
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
    >>> with sl.SynOpsCounter(net) as counter:
    ...     _ = net(torch.tensor([[1.0, 0.0, 1.0]]))
    ...     counter.counts()["0"]
    {'dense': 6.0, 'eff_macs': 0.0, 'eff_acs': 4.0, 'synops': 4.0}
    """

    is_differentiable = True
    higher_is_better = False

    def __init__(
        self,
        model: nn.Module,
        *,
        batch_size: Optional[int] = None,
        batch_dim: int = 0,
        strict: bool = False,
        custom_rules: Optional[Mapping[type, Rule]] = None,
        check_finite: bool = True,
        neurons: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"SynOpsCounter expects a torch.nn.Module, got {type(model).__name__}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        if isinstance(batch_dim, bool) or not isinstance(batch_dim, int) or batch_dim < 0:
            raise ValueError(f"batch_dim must be a non-negative int, got {batch_dim!r}")
        self.model = model
        self.batch_size = batch_size
        self.batch_dim = batch_dim
        self.strict = strict
        self.check_finite = check_finite
        self._rules: Dict[type, Rule] = dict(custom_rules or {})
        self._handles: List[Any] = []
        self._maps: Dict[str, MapCache] = {}
        self._layer_rules: Dict[str, Rule] = {}
        self._modules: Dict[str, nn.Module] = {}
        self._unsupported: List[str] = []
        self._warned = ""
        self._enabled = True
        self._pool_tags: Dict[int, Tuple[Any, int, Tensor]] = {}
        self._batch = _Batch()
        self._totals: Dict[str, Dict[str, Tensor]] = {}
        self._total_samples = 0
        self._data_fed_seen: Set[str] = set()
        self._monitor: Optional[Any] = None  # NeuronMonitor: neurons, other layers, forward order
        self._track_neurons = bool(neurons)
        self.attach()

    # ------------------------------------------------------------------ lifecycle

    @property
    def attached(self) -> bool:
        """Whether the hooks are on the model."""
        return bool(self._handles)

    @property
    def layer_names(self) -> List[str]:
        """Qualified names of the counted layers, in definition order."""
        return list(self._layer_rules)

    @property
    def unsupported(self) -> List[str]:
        """Modules with parameters that no rule counts, as ``'name (Type)'``."""
        return list(self._unsupported)

    def attach(self) -> "SynOpsCounter":
        """Register the hooks (done by the constructor; a no-op when attached)."""
        if self.attached:
            return self
        from .recurrent import register_snn_rules

        register_snn_rules()
        neurons = integrations.neuron_types()
        passthrough = integrations.pass_through_types()
        self._layer_rules.clear()
        self._modules.clear()
        self._unsupported = []
        h = self._handles
        # Hooks are closures, not bound methods: ``copy.deepcopy`` of a hooked model shares a
        # function but would deep-copy a bound method's counter (and its autograd graph).
        # Each hook ignores calls of modules other than its own (deep copies, e.g. NeuroBench's).
        model = self.model

        def root_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if module is model:
                self._root_pre_hook(module, args, kwargs)

        h.append(self.model.register_forward_pre_hook(root_hook, with_kwargs=True))
        param_owned: List[str] = []  # "<name>.parametrizations." of parametrized modules
        for name, module in self.model.named_modules():
            if parametrize.is_parametrized(module):
                param_owned.append(f"{name}.parametrizations." if name else "parametrizations.")
            rule = find_rule(module, self._rules)
            if rule is not None:
                self._layer_rules[name] = rule
                self._modules[name] = module
                self._maps.setdefault(name, MapCache())
                h.append(module.register_forward_hook(self._make_layer_hook(name, rule), with_kwargs=True))
                continue
            pool = integrations.find_pool(module)
            if pool is not None:
                h.append(module.register_forward_hook(self._make_pool_hook(*pool)))
            elif isinstance(module, passthrough):
                h.append(module.register_forward_hook(lambda m, a, o: self._pass_through_hook(m, a, o)))
            if integrations.is_time_folding(module):
                h.append(module.register_forward_pre_hook(self._make_fold_hook(name)))
            if any(name.startswith(p) for p in param_owned):
                continue  # weight_norm / spectral_norm parametrizations: their parameters are the owner's
            own_params = any(True for _ in module.parameters(recurse=False)) or parametrize.is_parametrized(module)
            if own_params and not has_no_synapse(module) and not isinstance(module, neurons):
                self._unsupported.append(f"{name or '<root>'} ({type(module).__name__})")
        if self._unsupported:
            msg = (
                "synopsloss cannot count the synapses of these modules with parameters: "
                + ", ".join(self._unsupported)
                + ". Their synops are NOT included. Register a rule with synopsloss.register_rule "
                "(or declare them synapse-free with synopsloss.register_no_synapse)."
            )
            if self.strict:
                self.remove()
                raise TypeError(msg)
            if msg != self._warned:  # once per counter, not at every re-attach
                warnings.warn(msg, UnsupportedLayerWarning, stacklevel=3)
                self._warned = msg
        if not self._layer_rules:
            self.remove()
            raise ValueError(
                f"{type(self.model).__name__} has no layer synopsloss can count (Linear, ConvNd, "
                "ConvTransposeNd or a registered rule); nothing would be counted. Pass the model that "
                "holds the synaptic layers, or register a rule for your layer type with "
                "synopsloss.register_rule (custom_rules= for this counter only)"
            )
        if self._monitor is not None:
            self._monitor.attach()
        elif self._track_neurons:
            from .neurons import NeuronMonitor

            self._monitor = NeuronMonitor(
                self.model, samples_fn=self._samples, rules=self._rules, enabled_fn=lambda: self._enabled
            )
        return self

    def remove(self) -> None:
        """Remove every hook from the model (state and counts stay readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pool_tags.clear()
        if self._monitor is not None:
            self._monitor.remove()

    def __enter__(self) -> "SynOpsCounter":
        self.attach()
        self.reset(accumulated=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    @contextlib.contextmanager
    def paused(self) -> Iterator["SynOpsCounter"]:
        """Run the model without counting (e.g. a validation pass inside a training step)."""
        previous, self._enabled = self._enabled, False
        try:
            yield self
        finally:
            self._enabled = previous

    def reset(self, accumulated: bool = False) -> None:
        """Start a new batch.

        The finished batch's counts are added to the running totals read with
        ``counts(accumulated=True)``; its differentiable synops (and their
        autograd graph) are dropped. ``accumulated=True`` clears the running
        totals too.
        """
        if accumulated:
            self._totals.clear()
            self._total_samples = 0
            self._data_fed_seen.clear()
        elif self._batch.layers:
            samples = self._samples()
            for name, acc in self._batch.layers.items():
                tot = self._totals.setdefault(name, {})
                for key in COUNT_KEYS:
                    value = getattr(acc, key).detach()
                    tot[key] = tot[key].to(value.device) + value if key in tot else value
                if acc.data_fed:
                    self._data_fed_seen.add(name)
            self._total_samples += samples
        if self._monitor is not None:
            self._monitor.reset(accumulated=accumulated, synaptic=self._batch.layers)
        self._batch = _Batch()
        self._pool_tags.clear()

    # ------------------------------------------------------------------ hooks

    def _root_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._pool_tags.clear()
        if not self._enabled:
            return
        batch = self._batch
        batch.root_calls += 1
        tensors = _tensor_inputs(args, kwargs)
        # the storages of the model's own inputs: a layer reading one of them is fed by the data
        batch.inputs = {t.untyped_storage().data_ptr(): weakref.ref(t) for t in tensors if t.device.type != "meta"}
        if self.batch_size is not None:
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
            batch.root_batch = b
        elif b != batch.root_batch:
            raise ValueError(
                f"synopsloss: the model was called with {b} samples (dim {self.batch_dim} of its input) after "
                f"{batch.root_batch} since the last counter.reset(). Calls between two resets are treated "
                "as time steps of one batch: call counter.reset() before each new batch."
            )

    def _make_fold_hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if not self._enabled or not args or not isinstance(args[0], Tensor):
                return
            b = integrations.time_folding_batch(module, args[0])
            if b is None:
                return
            batch = self._batch
            if batch.fold_batch is not None and b != batch.fold_batch:
                raise ValueError(
                    f"synopsloss: time-folding layers disagree on the batch size ({batch.fold_layer!r}: "
                    f"{batch.fold_batch}, {name!r}: {b}); give them the same batch_size"
                )
            batch.fold_batch, batch.fold_layer = b, name

        return hook

    def _make_pool_hook(self, divisor_fn, n: int):
        cache: Dict[tuple, Tensor] = {}

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not self._enabled or not args or not isinstance(output, Tensor) or not isinstance(args[0], Tensor):
                return
            in_sample = tuple(args[0].shape[-(n + 1):])
            out_sample = tuple(output.shape[-(n + 1):])
            key = (in_sample, out_sample, output.device)
            div = cache.get(key)
            if div is None:
                div = divisor_fn(module, in_sample, out_sample).to(device=output.device, dtype=torch.float32)
                div = cache[key] = div.expand(out_sample).reshape(-1).contiguous()
            self._tag(output, div)

        return hook

    def _tag(self, t: Tensor, scale: Tensor) -> None:
        # Watch the tensor that owns the memory: a view (``y.view(...)``, ``flatten``) keeps its
        # base alive, not the tensor it was taken from, and a pool's output can itself be a view
        # (avg_pool1d squeezes a 2-d result), which may be freed while the data is still read.
        owner = t._base if t._base is not None else t
        self._pool_tags[t.data_ptr()] = (weakref.ref(owner), t.numel(), scale)

    def _find_tag(self, t: Tensor) -> Optional[Tensor]:
        if not self._pool_tags:
            return None
        entry = self._pool_tags.get(t.data_ptr())
        if entry is None:
            return None
        ref, numel, scale = entry
        if ref() is None or numel != t.numel() or t.numel() % scale.numel():
            return None
        return scale

    def _pass_through_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self._pool_tags or not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
            return
        scale = self._find_tag(args[0])
        if scale is not None and output.numel() == args[0].numel():
            self._tag(output, scale)

    def _make_layer_hook(self, name: str, rule: Rule):
        maps = self._maps[name]

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if not self._enabled or module is not self._modules.get(name):
                return
            tensors = _tensor_inputs(args, kwargs)
            if len(tensors) != 1 and rule.count is None:
                raise ValueError(
                    f"synopsloss: layer {name!r} ({type(module).__name__}) was called with {len(tensors)} tensor "
                    "inputs; it can count layers called with exactly one input tensor. Register a custom rule "
                    "for this layer type, or exclude it by wrapping the call in counter.paused()."
                )
            if not isinstance(output, Tensor) and rule.count is None:
                raise ValueError(f"synopsloss: layer {name!r} returned {type(output).__name__}, not a tensor")
            if rule.count is not None:
                self._accumulate(name, rule.count(module, args, kwargs, output), None)
            else:
                self._count(name, module, rule, maps, tensors[0], output)

        return hook

    def _count(self, name: str, module: nn.Module, rule: Rule, maps: MapCache, x: Tensor, out: Tensor) -> None:
        if x.device.type == "meta":
            raise ValueError(
                f"synopsloss: layer {name!r} received a meta tensor, which holds no values to count; "
                "run the model on real data (move the model and input to cpu or cuda)"
            )
        if not (x.is_floating_point() or x.is_complex()):
            x = x.to(torch.get_default_dtype())
        nd = rule.sample_ndim(module)
        if x.dim() < nd or out.dim() < nd:
            raise ValueError(
                f"synopsloss: layer {name!r} ({type(module).__name__}) got an input of shape {tuple(x.shape)}; "
                f"one sample needs {nd} trailing dimensions"
            )
        in_shape = tuple(x.shape[x.dim() - nd:])
        out_shape = tuple(out.shape[out.dim() - nd:])
        n_el = math.prod(in_shape)
        if n_el == 0 or x.numel() == 0:
            return
        rows = x.numel() // n_el
        weight = getattr(module, rule.weight, None)
        if isinstance(weight, Tensor) and weight.device != x.device:
            raise ValueError(
                f"synopsloss: layer {name!r} received its input on {x.device} but its weight is on "
                f"{weight.device}; move the input and the model to the same device"
            )
        try:
            lm = maps.get(module, rule, in_shape, out_shape)
        except ValueError as err:
            raise ValueError(f"synopsloss: layer {name!r}: {err}") from err
        flat = x.reshape(rows, n_el)
        dtype = lm.effective.dtype
        scale = self._find_tag(x)
        # half-precision inputs (autocast) are summed over rows in the map's dtype: a bf16 sum
        # rounds above 256 and a float16 one overflows above 65504
        red = dtype if flat.element_size() < 4 else None
        if scale is None:
            per_neuron = flat.sum(0, dtype=red)
        else:
            # Spike counts averaged by a pool are turned back into events (value x divisor),
            # when the events are integers (spike counts); real-valued activations are left as they are.
            # Integers up to float rounding: an average over 9 times 9 need not be exact (3/9*9).
            if scale.numel() == n_el:
                with torch.no_grad():
                    integer = _all_integer(flat.detach() * scale)
                    factor = torch.where(integer, scale, torch.ones_like(scale))
                per_neuron = flat.sum(0, dtype=red) * factor
            else:
                events = (x.reshape(-1, scale.numel()) * scale).reshape(rows, n_el)
                with torch.no_grad():
                    integer = _all_integer(events.detach().clone())
                per_neuron = torch.where(integer, events.sum(0, dtype=red), flat.sum(0, dtype=red))
        synops = torch.dot(per_neuron.to(dtype), lm.effective)
        with torch.no_grad():
            # float arithmetic only (bool reductions are several times slower):
            # nonzeros per neuron = sum |sign(x)|; spiking <=> sign(x) - x == 0 everywhere
            sign = flat.detach().sign()
            nonzero = sign.abs().sum(0, dtype=red).to(dtype)
            dev = torch.aminmax(sign.sub_(flat.detach()))
            counts = OpCounts(
                synops=synops,
                dense=rows * lm.dense_total,
                effective=torch.dot(nonzero, lm.effective),
                spiking=(dev.min == 0) & (dev.max == 0),
                rows=rows,
                in_shape=in_shape,
                out_shape=out_shape,
                input_sum=per_neuron.detach().sum().to(dtype),
                input_nonzero=nonzero.sum(),
                in_neurons=n_el,
            )
        self._accumulate(name, counts, lm)
        if self._batch.inputs:
            ref = self._batch.inputs.get(x.untyped_storage().data_ptr())
            if ref is not None and ref() is not None:
                self._batch.layers[name].data_fed = True

    def _accumulate(self, name: str, c: OpCounts, lm: Optional[LayerMaps]) -> None:
        device = c.synops.device
        batch = self._batch
        acc = batch.layers.get(name)
        if acc is None:
            zero = torch.zeros((), dtype=c.dense.dtype, device=device)
            acc = batch.layers[name] = _LayerAcc(zero, zero, zero, zero, device, zero, zero)
        elif acc.device != device:
            raise ValueError(
                f"synopsloss: layer {name!r} received input on {device} after {acc.device} within one batch; "
                "call counter.reset() after moving the model to another device"
            )
        with torch.no_grad():
            zero = torch.zeros((), dtype=c.dense.dtype, device=device)
            acc.eff_acs = acc.eff_acs + torch.where(c.spiking, c.effective, zero)
            acc.eff_macs = acc.eff_macs + torch.where(c.spiking, zero, c.effective)
            acc.dense = acc.dense + c.dense
            acc.input_sum = acc.input_sum + c.input_sum
            acc.input_nonzero = acc.input_nonzero + c.input_nonzero
        acc.synops = acc.synops + c.synops
        acc.calls += 1
        acc.rows.add(c.rows)
        acc.rows_total += c.rows
        acc.in_shape, acc.out_shape, acc.maps = c.in_shape, c.out_shape, lm

    # ------------------------------------------------------------------ reading

    def _samples(self) -> int:
        """Samples of the current batch, checked against every layer's rows."""
        batch = self._batch
        if self.batch_size is not None:
            b, source = self.batch_size, "batch_size="
        elif batch.fold_batch is not None:
            b, source = batch.fold_batch, f"the time-folding layer {batch.fold_layer!r}"
        elif batch.root_batch is not None:
            b, source = batch.root_batch, f"dim {self.batch_dim} of the model's input"
        else:
            why = batch.root_note or "the model itself was not called (only its submodules were)"
            raise ValueError(
                f"synopsloss cannot tell how many samples the batch has: {why}. "
                "Pass SynOpsCounter(model, batch_size=B)."
            )
        for name, acc in batch.layers.items():
            bad = sorted(r for r in acc.rows if r % b)
            if bad:
                raise ValueError(
                    f"synopsloss: layer {name!r} received {bad[0]} rows of shape {acc.in_shape} in one call, "
                    f"not a multiple of the {b} samples learned from {source}. If your data is time-first "
                    "[T, B, ...], pass batch_dim=1; otherwise pass batch_size=B."
                )
        return b

    def _require_batch(self, what: str) -> None:
        if not self._batch.layers:
            raise RuntimeError(
                f"counter.{what}() was called before any forward pass since the last reset(): "
                "run the model on a batch first"
            )

    @property
    def samples(self) -> int:
        """Number of samples of the current batch."""
        self._require_batch("samples")
        return self._samples()

    def _ordered(self, names: List[str]) -> List[str]:
        seen = [n for n in self._batch.layers]
        return seen + [n for n in names if n not in self._batch.layers]

    def data_fed_layers(self) -> List[str]:
        """Counted layers fed directly by the data, in forward order.

        A layer is *data-fed* when a tensor it was called with shares memory
        with a tensor the model itself was called with (the input, a time step
        ``x[t]`` of it or a view). Its synops are the data's spikes times the
        layer's fan-out: training can lower them only by zeroing weights, so
        :class:`synopsloss.SynOpsLoss` leaves them out by default. Reported
        for the current batch and every batch since ``reset(accumulated=True)``.
        Inputs that the model transforms before the first layer (``x.float()``,
        encoding inside ``forward``) are not recognised: name the layers
        explicitly then.

        Example
        -------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.ones(1, 3))
        >>> counter.data_fed_layers()
        ['0']
        """
        fed = {n for n, acc in self._batch.layers.items() if acc.data_fed} | self._data_fed_seen
        return [n for n in self._ordered(self.layer_names) if n in fed]

    def synops_per_layer(self) -> Dict[str, Tensor]:
        """Differentiable synops per sample of each counted layer (0-dim tensors), in forward order.

        Layers not called since the last reset get a zero.
        """
        self._require_batch("synops_per_layer")
        b = self._samples()
        out: Dict[str, Tensor] = {}
        first = next(iter(self._batch.layers.values()))
        for name in self._ordered(self.layer_names):
            acc = self._batch.layers.get(name)
            value = acc.synops if acc is not None else torch.zeros((), dtype=first.synops.dtype, device=first.device)
            out[name] = (value / b).to(torch.get_default_dtype())
        return out

    def synops(self) -> Tensor:
        """Total differentiable synops per sample since the last reset (0-dim, with grad_fn).

        Raises
        ------
        RuntimeError
            Before any forward pass since :meth:`reset`.
        FloatingPointError
            When an input held NaN or inf (with ``check_finite=True``).
        """
        self._require_batch("synops")
        b = self._samples()
        accs = list(self._batch.layers.values())
        device = accs[0].device
        total = accs[0].synops
        for acc in accs[1:]:
            total = total + acc.synops.to(device)
        if self.check_finite and not bool(torch.isfinite(total.detach())):
            self._raise_nonfinite()
        return (total / b).to(torch.get_default_dtype())

    def _raise_nonfinite(self) -> None:
        bad = [n for n, a in self._batch.layers.items() if not bool(torch.isfinite(a.synops.detach()))]
        raise FloatingPointError(
            f"synopsloss: NaN or inf in the input of layer(s) {', '.join(repr(n) for n in bad)} since the last "
            "reset(); the synops are undefined. Check the data and the layers before them "
            "(torch.autograd.set_detect_anomaly can help)."
        )

    def counts(self, accumulated: bool = False) -> Dict[str, Dict[str, float]]:
        """Per-sample counts of each layer as floats: ``dense``, ``eff_macs``, ``eff_acs``, ``synops``.

        Parameters
        ----------
        accumulated
            ``False``: the current batch (since the last :meth:`reset`).
            ``True``: every batch since the counter was created (or
            ``reset(accumulated=True)``), divided by all their samples, like
            NeuroBench's accumulated metrics.
        """
        names, table, samples = self.sums(accumulated=accumulated)
        return self.counts_from_sums(names, table, samples)

    def sums(self, accumulated: bool = False) -> Tuple[List[str], Tensor, int]:
        """Raw (not per-sample) counts, for reductions across processes.

        Returns
        -------
        names
            Every counted layer, in forward order (then definition order).
        table
            float64 CPU tensor ``[len(names), len(COUNT_KEYS)]`` of sums over all
            calls (zeros for layers not called).
        samples
            The number of samples those sums cover.

        Under DDP, all-reduce ``table`` and ``samples`` (sum) on every rank and
        pass them to :meth:`counts_from_sums` (the Lightning callback does).
        """
        names = self._ordered(self.layer_names)
        sums: Dict[str, Dict[str, Tensor]] = {}
        samples = 0
        if self._batch.layers:
            samples = self._samples()
            for name, acc in self._batch.layers.items():
                sums[name] = {k: getattr(acc, k).detach() for k in COUNT_KEYS}
        elif not accumulated:
            self._require_batch("counts")
        if accumulated:
            samples += self._total_samples
            for name, tot in self._totals.items():
                cur = sums.setdefault(name, {})
                for k in COUNT_KEYS:
                    cur[k] = cur[k] + tot[k].to(cur[k].device) if k in cur else tot[k]
            if samples == 0:
                raise RuntimeError("counter.counts(accumulated=True) was called before any forward pass")
        zero = torch.zeros((), dtype=torch.float64)
        table = torch.stack([
            torch.stack([sums[n][k].to("cpu", torch.float64) if n in sums else zero for k in COUNT_KEYS])
            for n in names
        ])
        return names, table, samples

    def counts_from_sums(self, names: List[str], table: Tensor, samples: int) -> Dict[str, Dict[str, float]]:
        """Per-sample counts from :meth:`sums` (possibly reduced across processes)."""
        result: Dict[str, Dict[str, float]] = {}
        for name, row in zip(names, table.tolist()):
            if not all(math.isfinite(v) for v in row):
                self._raise_nonfinite_counts(name)
            result[name] = {k: (v / samples if samples else 0.0) for k, v in zip(COUNT_KEYS, row)}
        return result

    def _raise_nonfinite_counts(self, name: str) -> None:
        raise FloatingPointError(
            f"synopsloss: NaN or inf in the input of layer {name!r}; its synops are undefined. "
            "Check the data and the layers before it, then counter.reset()."
        )

    def totals(self, accumulated: bool = False) -> Dict[str, float]:
        """The :meth:`counts` summed over layers."""
        per_layer = self.counts(accumulated=accumulated)
        return {k: sum(row[k] for row in per_layer.values()) for k in COUNT_KEYS}

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
            ``reset()`` folds a batch in), like ``counts(accumulated=True)``.

        Example
        -------
        >>> import torch, synopsloss as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
        >>> counter = sl.SynOpsCounter(net)
        >>> _ = net(torch.ones(1, 2))
        >>> counter.table(energy="horowitz45nm").total.energy
        3.6e-12
        """
        from .report import build_table

        return build_table(self, dt=dt, energy=energy, accumulated=accumulated)

    @property
    def neurons(self):
        """The :class:`synopsloss.neurons.NeuronMonitor` that tracks the model's neuron and other layers."""
        return self._monitor

    def __repr__(self) -> str:
        state = "attached" if self.attached else "removed"
        return f"SynOpsCounter({type(self.model).__name__}, {len(self._layer_rules)} layers, {state})"
