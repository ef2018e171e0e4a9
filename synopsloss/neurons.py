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

Recurrent synapses (snntorch ``RLeaky``/``RSynaptic``' ``recurrent`` module,
sinabs ``*Recurrent``' ``rec_connect``) are synapses: the
:class:`~synopsloss.SynOpsCounter` counts them as layers of their own.

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

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from . import integrations
from .maps import find_rule

__all__ = ["NeuronMonitor", "NEUROBENCH_NEURON_OPS", "neuron_op_cost", "layer_kind"]

#: NeuroBench 2.3 ``neuron_ops_reset_operations``: operations per membrane update.
NEUROBENCH_NEURON_OPS: Dict[str, Dict[str, int]] = {
    "Leaky": {"subtract": 4, "zero": 4},
    "Synaptic": {"subtract": 6, "zero": 8},
    "Lapicque": {"subtract": 11, "zero": 11},
    "Alpha": {"subtract": 18, "zero": 24},
}
#: snntorch types whose neuron update is that of another type (recurrent synapses are counted as synops)
_SNNTORCH_ALIASES = {"RLeaky": "Leaky", "RSynaptic": "Synaptic"}

_ACTIVATIONS: Tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softplus, nn.Softsign,
    nn.Threshold, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.LogSigmoid,
)


def _snntorch_neuron() -> Optional[type]:
    snntorch = sys.modules.get("snntorch")
    return getattr(snntorch, "SpikingNeuron", None) if snntorch is not None else None


def _sinabs_stateful() -> Optional[type]:
    layers = sys.modules.get("sinabs.layers")
    return getattr(layers, "StatefulLayer", None) if layers is not None else None


def _library(module: nn.Module) -> Optional[str]:
    sn = _snntorch_neuron()
    if sn is not None and isinstance(module, sn):
        return "snntorch"
    st = _sinabs_stateful()
    if st is not None and isinstance(module, st):
        return "sinabs"
    return None


def _mro_names(module: nn.Module) -> List[str]:
    return [c.__name__ for c in type(module).__mro__]


def neuron_op_cost(module: nn.Module, costs: Optional[Mapping[str, int]] = None) -> Optional[int]:
    """Operations of one membrane update of ``module`` (``None``: unknown type).

    ``costs`` (``{class name: ops}``) is looked up first, along the class' MRO.
    See the module docstring for the table and how the sinabs costs are derived.

    Example
    -------
    >>> import sinabs.layers as sl
    >>> neuron_op_cost(sl.IAF()), neuron_op_cost(sl.LIF(tau_mem=10.0)), neuron_op_cost(sl.ALIF(10.0, 10.0))
    (3, 5, 9)
    """
    names = _mro_names(module)
    if costs:
        for n in names:
            if n in costs:
                return int(costs[n])
    lib = _library(module)
    if lib == "snntorch":
        reset = getattr(module, "_reset_mechanism", "subtract")
        for n in names:
            table = NEUROBENCH_NEURON_OPS.get(_SNNTORCH_ALIASES.get(n, n))
            if table is not None:
                return table.get(reset)
        return None
    if lib == "sinabs":
        extra = 0
        if getattr(module, "norm_input", False) and "IAF" not in names:
            extra += 1
        if getattr(module, "min_v_mem", None) is not None:
            extra += 1
        has_syn = getattr(module, "tau_syn", None) is not None or getattr(module, "alpha_syn", None) is not None
        if has_syn:
            extra += 2
        if "ExpLeak" in names:
            return 2 + extra
        if "IAF" in names:
            return 3 + extra
        if "ALIF" in names:
            return 8 + extra
        if "LIF" in names:
            return 4 + extra
    return None


def _is_leaky(module: nn.Module) -> bool:
    """Whether the membrane decays (a multiply per neuron and step); IAF does not."""
    return "IAF" not in _mro_names(module)


def layer_kind(module: nn.Module) -> str:
    """What a module is in the table: ``"neuron"``, ``"activation"``, ``"norm (folded)"``, ``"pooling"``, ..."""
    if _library(module) is not None:
        return "neuron"
    if isinstance(module, _ACTIVATIONS):
        return "activation"
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)):
        return "norm (folded)"
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return "dropout"
    pool_types = [
        nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
        nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd, nn.modules.pooling._MaxUnpoolNd,
    ]
    if isinstance(module, tuple(pool_types)) or "SpikingMaxPooling2dLayer" in _mro_names(module):
        return "pooling"
    if isinstance(module, (nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle)):
        return "upsampling"
    if isinstance(module, (nn.Flatten, nn.Unflatten)) or type(module).__name__ in ("FlattenTime", "UnflattenTime"):
        return "reshape"
    if isinstance(module, nn.Identity):
        return "identity"
    return "no synapses"


@dataclass
class _NeuronAcc:
    """Running sums of one neuron / activation / other layer over one batch (device tensors)."""

    kind: str
    spikes: Optional[Tensor] = None
    nonzero: Optional[Tensor] = None
    per_neuron: Optional[Tensor] = None
    updates: Optional[Tensor] = None
    updates_dense: int = 0
    updates_first: int = 0
    rows: int = 0
    numel: int = 0
    calls: int = 0
    neurons: int = 0
    sample_shape: Tuple[int, ...] = ()
    in_shape: Tuple[int, ...] = ()
    out_shape: Tuple[int, ...] = ()
    pre_mem: Optional[Tensor] = None
    shape_changed: bool = False


def _add(a: Optional[Tensor], b: Tensor) -> Tensor:
    return b if a is None else a + b.to(a.device)


_SUM_FIELDS = ("spikes", "nonzero", "per_neuron", "updates")
_INT_FIELDS = ("updates_dense", "updates_first", "rows", "numel", "calls")


def _count_nonzero(t: Tensor, dtype: torch.dtype) -> Tensor:
    """Number of nonzero elements of ``t`` as a 0-dim ``dtype`` tensor (exact int64 count, no sync)."""
    return torch.count_nonzero(t).to(dtype)


class NeuronMonitor:
    """Firing rates, neuron counts, membrane updates and neuron operations of a model's layers.

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
        enabled_fn: Optional[Callable[[], bool]] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"NeuronMonitor expects a torch.nn.Module, got {type(model).__name__}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        self.batch_dim = batch_dim
        self.costs = dict(costs or {})
        self._samples_fn = samples_fn
        self._enabled_fn = enabled_fn
        self._rules = rules
        self._handles: List[Any] = []
        self.order: Dict[str, int] = {}  # qualified name -> position of its first call
        self.info: Dict[str, Dict[str, Any]] = {}  # name -> type, kind, cost, leaky, library
        self._batch: Dict[str, _NeuronAcc] = {}
        self._totals: Dict[str, _NeuronAcc] = {}
        self._total_samples = 0
        self._root_batch: Optional[int] = None
        self._fold_batch: Optional[int] = None
        self._synaptic_totals: Dict[str, Dict[str, Any]] = {}
        self.attach()

    # ------------------------------------------------------------------ lifecycle

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> "NeuronMonitor":
        """Register the hooks (done by the constructor)."""
        if self.attached:
            return self
        h = self._handles
        root = self.model

        def root_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            # a plain function, not a bound method: a deep copy of the model must not copy the monitor
            if module is root:
                self._root_hook(module, args, kwargs)

        h.append(root.register_forward_pre_hook(root_hook, with_kwargs=True))
        neuron_names: List[str] = []
        for name, module in self.model.named_modules():
            if name == "" and any(True for _ in module.children()):
                continue
            inside_neuron = any(name.startswith(n + ".") for n in neuron_names)
            if ".parametrizations." in f".{name}" and not any(True for _ in module.children()):
                continue  # weight_norm / spectral_norm internals of a layer, not layers of the model
            synaptic = find_rule(module, self._rules) is not None
            kind = layer_kind(module)
            if kind == "neuron":
                neuron_names.append(name)
                lib = _library(module)
                self.info[name] = dict(
                    type=type(module).__name__, kind="neuron", library=lib,
                    cost=neuron_op_cost(module, self.costs), leaky=_is_leaky(module),
                    recurrent="Recurrent" in type(module).__name__ or hasattr(module, "recurrent"),
                    squeeze=integrations.is_time_folding(module),
                )
                if lib == "snntorch":
                    h.append(module.register_forward_pre_hook(self._make_snntorch_pre(name, module)))
                h.append(module.register_forward_hook(self._make_neuron_hook(name, module)))
            elif synaptic:
                kind = "recurrent synapses" if inside_neuron else "synaptic"
                self.info[name] = dict(type=type(module).__name__, kind=kind)
                h.append(module.register_forward_hook(self._make_order_hook(name, module)))
            elif not inside_neuron and not any(True for _ in module.children()):
                self.info[name] = dict(type=type(module).__name__, kind=kind)
                if kind == "activation":
                    h.append(module.register_forward_hook(self._make_neuron_hook(name, module)))
                else:
                    h.append(module.register_forward_hook(self._make_other_hook(name, module)))
        return self

    def remove(self) -> None:
        """Remove every hook (statistics stay readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def reset(self, accumulated: bool = False, synaptic: Optional[Mapping[str, Any]] = None) -> None:
        """Start a new batch, adding the finished one to the running totals.

        ``accumulated=True`` clears the totals too. ``synaptic`` is the owning
        counter's per-layer accumulators of the finished batch (their input
        sums and rows are kept for accumulated input rates).
        """
        if accumulated:
            self._totals.clear()
            self._synaptic_totals.clear()
            self._total_samples = 0
        elif self._batch or synaptic:
            samples = self._samples()
            for name, acc in self._batch.items():
                tot = self._totals.get(name)
                if tot is None:
                    tot = self._totals[name] = _NeuronAcc(kind=acc.kind)
                for f in _SUM_FIELDS:
                    v = getattr(acc, f)
                    if v is not None:
                        if f == "per_neuron" and getattr(tot, f) is not None and tot.per_neuron.shape != v.shape:
                            tot.shape_changed = True
                            tot.per_neuron = None
                            continue
                        if not (f == "per_neuron" and tot.shape_changed):
                            setattr(tot, f, _add(getattr(tot, f), v.detach()))
                for f in _INT_FIELDS:
                    setattr(tot, f, getattr(tot, f) + getattr(acc, f))
                tot.shape_changed |= acc.shape_changed
                tot.neurons, tot.sample_shape = acc.neurons, acc.sample_shape
                tot.in_shape, tot.out_shape = acc.in_shape, acc.out_shape
            for name, acc in (synaptic or {}).items():
                tot = self._synaptic_totals.setdefault(name, {"input_sum": None, "input_nonzero": None, "rows_total": 0})
                tot["input_sum"] = _add(tot["input_sum"], acc.input_sum.detach())
                tot["input_nonzero"] = _add(tot["input_nonzero"], acc.input_nonzero.detach())
                tot["rows_total"] += acc.rows_total
                tot["in_shape"], tot["out_shape"], tot["maps"] = acc.in_shape, acc.out_shape, acc.maps
            self._total_samples += samples
        self._batch = {}
        self._root_batch = None
        self._fold_batch = None

    # ------------------------------------------------------------------ hooks

    def _active(self) -> bool:
        return self._enabled_fn() if self._enabled_fn is not None else True

    def _seen(self, name: str) -> None:
        if name not in self.order:
            self.order[name] = len(self.order)

    def _root_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not self._active() or self._root_batch is not None:
            return
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, Tensor)]
        if tensors and tensors[0].dim() > self.batch_dim:
            self._root_batch = int(tensors[0].shape[self.batch_dim])

    def _acc(self, name: str, kind: str) -> _NeuronAcc:
        acc = self._batch.get(name)
        if acc is None:
            acc = self._batch[name] = _NeuronAcc(kind=kind)
        return acc

    def _make_order_hook(self, name: str, owner: nn.Module):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if module is owner and self._active():
                self._seen(name)

        return hook

    def _make_other_hook(self, name: str, owner: nn.Module):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if module is not owner or not self._active():  # deep copies carry the hook: ignore them
                return
            self._seen(name)
            acc = self._acc(name, self.info[name]["kind"])
            acc.calls += 1
            x = args[0] if args and isinstance(args[0], Tensor) else None
            if x is not None and x.dim() > 0:
                acc.in_shape = tuple(x.shape[1:])
            if isinstance(output, Tensor) and output.dim() > 0:
                acc.out_shape = tuple(output.shape[1:])

        return hook

    def _make_snntorch_pre(self, name: str, owner: nn.Module):
        def hook(module: nn.Module, args: tuple) -> None:
            if module is not owner or not self._active():
                return
            acc = self._batch.get(name)
            mem = getattr(module, "mem", None)
            if acc is not None and isinstance(mem, Tensor):
                # snntorch rebinds ``mem`` each step, so a reference is the state before the call
                acc.pre_mem = mem.detach()

        return hook

    def _make_neuron_hook(self, name: str, owner: nn.Module):
        info = self.info[name]

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if module is not owner or not self._active():  # deep copies carry the hook: ignore them
                return
            self._seen(name)
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(out, Tensor) or out.dim() == 0:
                return
            x = args[0] if args and isinstance(args[0], Tensor) else None
            first = name not in self._batch
            acc = self._acc(name, info["kind"])
            lib = info.get("library")
            out = out.detach()
            if lib == "sinabs" and not info.get("squeeze") and out.dim() >= 2:
                sample_shape, rows = tuple(out.shape[2:]), out.shape[0] * out.shape[1]
            else:
                sample_shape, rows = tuple(out.shape[1:]), out.shape[0]
            if info.get("squeeze") and x is not None:
                b = integrations.time_folding_batch(module, x)
                if b is not None:
                    self._fold_batch = b
            neurons = math.prod(sample_shape)
            flat = out.reshape(rows, neurons) if neurons else out.reshape(rows, 0)
            dtype = torch.float64 if out.device.type != "mps" else torch.float32
            # No sum that first converts a whole activation tensor to float64 (that copy costs more
            # than the layer): per-neuron sums of spikes are exact in float32 up to 2^24 rows.
            red = dtype if flat.element_size() < 4 else None
            with torch.no_grad():
                per = flat.sum(0, dtype=red).to(dtype)
                acc.spikes = _add(acc.spikes, per.sum())
                acc.nonzero = _add(acc.nonzero, _count_nonzero(flat, dtype))
                if acc.per_neuron is not None and acc.per_neuron.shape != per.shape:
                    acc.shape_changed = True
                    acc.per_neuron = None
                elif not acc.shape_changed:
                    acc.per_neuron = _add(acc.per_neuron, per)
                if lib == "snntorch":
                    mem = getattr(module, "mem", None)
                    if isinstance(mem, Tensor):
                        if first or acc.pre_mem is None:
                            acc.updates_first += mem.numel()  # NeuroBench: every neuron at the first call
                            acc.updates = _add(acc.updates, mem.new_zeros((), dtype=dtype))
                        else:
                            acc.updates = _add(acc.updates, _count_nonzero(acc.pre_mem - mem.detach(), dtype))
                        acc.updates_dense += mem.numel()
                    acc.pre_mem = None
                elif lib == "sinabs" and x is not None and x.shape == out.shape:
                    # an event wherever the input or the output is nonzero
                    event = torch.logical_or(x.detach(), out)
                    if info.get("recurrent") and out.dim() >= 2 and not info.get("squeeze"):
                        event[:, 1:] |= out[:, :-1] != 0
                    acc.updates = _add(acc.updates, _count_nonzero(event, dtype))
                    acc.updates_dense += out.numel()
            acc.calls += 1
            acc.rows += rows
            acc.numel += out.numel()
            acc.neurons, acc.sample_shape = neurons, sample_shape
            if x is not None and x.dim() > 0:
                acc.in_shape = tuple(x.shape[1:])
            acc.out_shape = tuple(out.shape[1:])

        return hook

    # ------------------------------------------------------------------ reading

    def _samples(self) -> int:
        if self._samples_fn is not None:
            return int(self._samples_fn())
        if self.batch_size is not None:
            return self.batch_size
        if self._fold_batch is not None:
            return self._fold_batch
        if self._root_batch is not None:
            return self._root_batch
        raise ValueError(
            "NeuronMonitor cannot tell how many samples the batch has (the model was not called with a tensor); "
            "pass NeuronMonitor(model, batch_size=B)"
        )

    def _merged(self, accumulated: bool) -> Tuple[Dict[str, _NeuronAcc], int]:
        if not accumulated:
            if not self._batch:
                return {}, 0
            return dict(self._batch), self._samples()
        merged: Dict[str, _NeuronAcc] = {}
        samples = self._total_samples
        sources = [self._totals]
        if self._batch:
            sources.append(self._batch)
            samples += self._samples()
        for src in sources:
            for name, acc in src.items():
                m = merged.get(name)
                if m is None:
                    m = merged[name] = _NeuronAcc(kind=acc.kind)
                for f in _SUM_FIELDS:
                    v = getattr(acc, f)
                    if v is None:
                        continue
                    cur = getattr(m, f)
                    if f == "per_neuron" and cur is not None and cur.shape != v.shape:
                        m.shape_changed = True
                        m.per_neuron = None
                    elif not (f == "per_neuron" and m.shape_changed):
                        setattr(m, f, _add(cur, v))
                for f in _INT_FIELDS:
                    setattr(m, f, getattr(m, f) + getattr(acc, f))
                m.shape_changed |= acc.shape_changed
                m.neurons, m.sample_shape, m.in_shape, m.out_shape = acc.neurons, acc.sample_shape, acc.in_shape, acc.out_shape
        return merged, samples

    def stats(self, accumulated: bool = False) -> Dict[str, Dict[str, Any]]:
        """Per-layer statistics (plain floats, per sample), in forward order.

        Keys: ``type``, ``kind``, ``neurons``, ``time_steps``, ``spikes``,
        ``firing_rate``, ``density``, ``membrane_updates``,
        ``membrane_updates_dense``, ``op_cost``, ``neuron_ops``,
        ``neuron_ops_dense``, ``in_shape``, ``out_shape``, ``calls``, ``leaky``.
        Entries that do not apply (a dropout layer's firing rate, an unknown
        neuron type's operations) are ``None``.
        """
        merged, samples = self._merged(accumulated)
        names = sorted(merged, key=lambda n: self.order.get(n, len(self.order)))
        tensors, index = [], {}
        for name in names:
            acc = merged[name]
            for f in ("spikes", "nonzero", "updates"):
                v = getattr(acc, f)
                if v is not None:
                    index[(name, f)] = len(tensors)
                    tensors.append(v.detach().to("cpu", torch.float64).reshape(()))
        values = torch.stack(tensors).tolist() if tensors else []
        out: Dict[str, Dict[str, Any]] = {}
        for name in names:
            acc, info = merged[name], self.info.get(name, {})
            get = lambda f: values[index[(name, f)]] if (name, f) in index else None  # noqa: E731
            s: Dict[str, Any] = dict(
                type=info.get("type"), kind=acc.kind, calls=acc.calls,
                in_shape=acc.in_shape, out_shape=acc.out_shape,
                neurons=None, time_steps=None, spikes=None, firing_rate=None, density=None,
                membrane_updates=None, membrane_updates_dense=None, op_cost=None,
                neuron_ops=None, neuron_ops_dense=None, leaky=info.get("leaky"),
            )
            if acc.kind in ("neuron", "activation") and samples:
                slots = acc.rows * acc.neurons
                s.update(neurons=acc.neurons, time_steps=acc.rows / samples)
                nz = get("nonzero")
                s["density"] = nz / slots if slots and nz is not None else None
                if acc.kind == "neuron":
                    sp = get("spikes")
                    s["spikes"] = sp / samples
                    s["firing_rate"] = sp / slots if slots else None
                    upd = get("updates")
                    upd = None if upd is None else upd + acc.updates_first
                    cost = info.get("cost")
                    s["op_cost"] = cost
                    if upd is not None:
                        s["membrane_updates"] = upd / samples
                        s["membrane_updates_dense"] = acc.updates_dense / samples
                        if cost is not None:
                            s["neuron_ops"] = upd * cost / samples
                            s["neuron_ops_dense"] = acc.updates_dense * cost / samples
                else:
                    s["membrane_updates_dense"] = acc.numel / samples  # one update per activation output
            out[name] = s
        return out

    def synaptic_totals(self) -> Dict[str, Dict[str, Any]]:
        """Input sums / nonzeros / rows of the owning counter's layers over the finished batches."""
        return self._synaptic_totals

    def firing_rate_per_neuron(self, name: str, accumulated: bool = False) -> Tensor:
        """Spikes per time step of each neuron of layer ``name`` (a float64 tensor shaped like one sample).

        Raises
        ------
        KeyError
            If ``name`` is no neuron or activation layer that ran.
        ValueError
            If the layer's sample shape changed between calls.
        """
        merged, samples = self._merged(accumulated)
        acc = merged.get(name)
        if acc is None or acc.kind not in ("neuron", "activation"):
            raise KeyError(f"{name!r} is not a neuron layer that ran since the last reset; neuron layers: "
                           f"{[n for n, a in merged.items() if a.kind in ('neuron', 'activation')]}")
        if acc.per_neuron is None or acc.shape_changed:
            raise ValueError(f"the neurons of {name!r} changed shape between calls; no per-neuron rate")
        steps = acc.rows / samples
        return (acc.per_neuron.detach().to("cpu", torch.float64) / (samples * steps)).reshape(acc.sample_shape)

    def __repr__(self) -> str:
        n = sum(1 for i in self.info.values() if i["kind"] == "neuron")
        return f"NeuronMonitor({type(self.model).__name__}, {n} neuron layers, {'attached' if self.attached else 'removed'})"
