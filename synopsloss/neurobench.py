"""NeuroBench workload metrics computed by one :class:`~synopsloss.SynOpsCounter`.

NeuroBench's ``Benchmark(model, loader, pre, post, [static, workload])`` takes
metric *classes* and builds them without arguments, after the network exists
but without telling them which network they measure. :class:`NeuroBenchMetrics`
binds a counter to the network first and hands out classes that NeuroBench
accepts in place of its own, with the same names (so the same result keys)
and the same return values::

    from neurobench.benchmarks import Benchmark
    from synopsloss.neurobench import NeuroBenchMetrics

    metrics = NeuroBenchMetrics(model)        # a NeuroBenchModel (or its network)
    bench = Benchmark(model, loader, [], [], [[], [metrics.SynapticOperations, metrics.ActivationSparsity]])
    results = bench.run()                    # {"SynapticOperations": {...}, "ActivationSparsity": ...}
    metrics.remove()                         # or use ``with NeuroBenchMetrics(model) as metrics:``

======================  =================================================  ==========================================
class                   returns (as NeuroBench)                            definition
======================  =================================================  ==========================================
``SynapticOperations``  ``{"Effective_MACs", "Effective_ACs", "Dense"}``   :class:`~synopsloss.SynOpsCounter`'s
                        per sample, over all batches of the run            ``eff_macs`` / ``eff_acs`` / ``dense``
``NeuronOperations``    ``{"Effective Neuron Ops", "Neuron Dense Ops"}``   membrane updates x ops per update
``MembraneUpdates``     membrane updates per sample                        (spiking neuron layers)
``ActivationSparsity``  zero outputs / all outputs of the batch's          the layers NeuroBench treats as
                        activation layers (NeuroBench averages batches)    activations (``model.activation_modules``)
======================  =================================================  ==========================================

Where NeuroBench's definitions apply the numbers are the same (the tests run
both in one ``Benchmark``). The differences are on purpose:

* **pruned layers** (``torch.nn.utils.prune``) are counted; NeuroBench
  deep-copies each layer to count it, which fails on them;
* layers NeuroBench does not hook (``ConvTranspose``, snntorch's one-to-one
  recurrent weights, registered rules) are counted too;
* the counts come from the counter's cached fan-out maps during the forward
  pass, not from re-running deep copies of every layer for every stored input
  after it, so they cost a fraction of the time (``benchmarks/neurobench_metrics.py``);
* a number that cannot be known (a neuron type without an operation cost, no
  activation layer at all, a batch with NaN or inf in a layer's input: every
  metric of the run from then on) is ``nan`` with a warning, never 0.

NeuroBench prints an error and records 0.0 when a metric raises: check the
printed output when a result is 0.

The number of samples of a batch is ``data[0].size(0)``, as NeuroBench counts
it. NeuroBench is optional: it is imported when :class:`NeuroBenchMetrics` is
created.

Example
-------
>>> import torch, snntorch as snn
>>> from synopsloss.neurobench import NeuroBenchMetrics  # doctest: +SKIP
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), snn.Leaky(beta=0.9, init_hidden=True, output=True))  # doctest: +SKIP
>>> with NeuroBenchMetrics(net) as metrics:  # doctest: +SKIP
...     results = Benchmark(SNNTorchModel(net), loader, [], [], [[], [metrics.SynapticOperations]]).run()
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Any, Dict, List, Optional

from torch import nn

from .counter import SynOpsCounter, SynOpsWarning
from .snapshot import CounterSnapshot

__all__ = ["NeuroBenchMetrics"]


def _import_neurobench() -> Any:
    try:
        from neurobench.metrics.abstract import AccumulatedMetric, WorkloadMetric
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "synopsloss.neurobench needs NeuroBench (pip install neurobench; its torch pins may pull in another "
            "torch build: pip install --no-deps neurobench keeps yours)"
        ) from err
    return AccumulatedMetric, WorkloadMetric


class NeuroBenchMetrics:
    """A :class:`~synopsloss.SynOpsCounter` on a network, and NeuroBench metric classes that read it.

    The classes (``SynapticOperations``, ``NeuronOperations``,
    ``MembraneUpdates``, ``ActivationSparsity``) are attributes of the
    instance: pass them in NeuroBench's workload metric list. All of them
    read the one counter; each batch is folded into the counter's totals once,
    when the first of them sees it.

    Parameters
    ----------
    model
        A NeuroBench ``NeuroBenchModel`` (``SNNTorchModel``, ``TorchModel``)
        or the ``nn.Module`` it wraps. The counter attaches to the network now,
        so create this before running the benchmark.
    neurons
        Track the neuron layers (needed by every metric except
        ``SynapticOperations``; ``False`` is cheaper when only synaptic
        operations are wanted).
    **counter_kwargs
        More :class:`~synopsloss.SynOpsCounter` options (``custom_rules``,
        ``strict``). The number of samples is NeuroBench's ``data[0].size(0)``.

    Raises
    ------
    TypeError
        ``model`` is neither a NeuroBench model nor an ``nn.Module``.
    ImportError
        NeuroBench is not installed.

    Example
    -------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
    >>> metrics = NeuroBenchMetrics(net, neurons=False)
    >>> _ = net(torch.tensor([[1.0, 0.0, 1.0]]))
    >>> metric = metrics.SynapticOperations()
    >>> metric(net, None, (torch.zeros(1, 3), None))
    {'Effective_MACs': 0.0, 'Effective_ACs': 4.0, 'Dense': 6.0}
    >>> metrics.remove()
    """

    def __init__(self, model: Any, *, neurons: bool = True, **counter_kwargs: Any) -> None:
        accumulated, workload = _import_neurobench()
        net = model.__net__() if hasattr(model, "__net__") else model
        if not isinstance(net, nn.Module):
            raise TypeError(
                f"NeuroBenchMetrics expects a NeuroBench model (SNNTorchModel, TorchModel) or an nn.Module, "
                f"got {type(model).__name__}"
            )
        if "batch_size" in counter_kwargs:
            raise ValueError("NeuroBenchMetrics counts NeuroBench's samples, data[0].size(0), per batch; "
                             "drop batch_size=")
        self.net = net
        # NeuroBench's definitions: integer spike counts are binarised and counted as MACs
        counter_kwargs.setdefault("integer_spikes", "neurobench")
        self.counter = SynOpsCounter(net, neurons=neurons, **counter_kwargs)
        self._data: Any = None  # the batch last folded in (held, so that its identity is not reused)
        self._batch: Optional[CounterSnapshot] = None
        self._warned: set = set()
        self._undefined: Optional[str] = None  # why the run's numbers are undefined (a batch with NaN or inf)
        for cls in _metric_classes(self, accumulated, workload):
            setattr(self, cls.__name__, cls)

    # -------------------------------------------------------------- lifecycle

    def remove(self) -> None:
        """Take the counter's hooks off the network."""
        self.counter.remove()

    def __enter__(self) -> "NeuroBenchMetrics":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def reset(self) -> None:
        """Forget every batch (NeuroBench calls it through the metrics when a run starts)."""
        self.counter.reset(accumulated=True)
        self._data, self._batch, self._undefined = None, None, None

    # -------------------------------------------------------------- reading

    def collect(self, model: Any, data: Any) -> None:
        """Fold the batch that the network just ran into the totals (once per ``data``)."""
        net = model.__net__() if hasattr(model, "__net__") else model
        if net is not self.net:
            raise ValueError(
                "these synopsloss metrics are bound to another network than the one NeuroBench runs; create "
                "NeuroBenchMetrics(model) with the model you pass to Benchmark"
            )
        if data is self._data:
            return
        if not self.counter.attached:
            raise RuntimeError("NeuroBenchMetrics.remove() was called; create a new NeuroBenchMetrics(model)")
        self._data = data
        self.counter.batch_size = int(data[0].size(0))  # NeuroBench's samples of the batch that just ran
        try:
            self._batch = self.counter.snapshot()
        except FloatingPointError as err:  # (NaN or inf in a layer's input: the batch's counts are undefined)
            self._undefined, self._batch = str(err).split(". ")[0], None  # (what was not finite, and where)
            self.counter.reset(drop=True)  # (out of the totals: the next batches are counted as usual)
        else:
            self.counter.reset()
        finally:
            self.counter.batch_size = None  # the next batch (a shorter last one) is not checked against this one

    def totals(self) -> CounterSnapshot:
        """Every batch since the run started (plain data; ``.per_layer()``, ``.total()``)."""
        return self.counter.snapshot(accumulated=True)

    def _nan(self, key: str, message: str) -> float:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, SynOpsWarning, stacklevel=3)
        return math.nan

    def _defined(self, key: str) -> bool:
        """Whether the run's numbers are defined (no batch had NaN or inf in a layer's input); else warn once."""
        if self._undefined is None:
            return True
        self._nan(key + "-undefined", f"{self._undefined} in a batch of this run: the run's {key} is nan (NeuroBench "
                  "counts such a batch by its nonzero inputs; synopsloss gives no number it cannot define). Check "
                  "the data and the layers before that one.")
        return False

    def _neuron_layers(self, snap: CounterSnapshot) -> list:
        if self.counter.neurons is None:
            raise ValueError("NeuroBenchMetrics(..., neurons=False) does not track neuron layers; the neuron "
                             "metrics need neurons=True (the default)")
        return [s for s in snap.neurons.values() if s.kind == "neuron"]

    def synaptic_operations(self) -> Dict[str, float]:
        """NeuroBench's ``SynapticOperations`` result over the run so far."""
        if self._data is None:  # no batch yet: NeuroBench's zeros
            return {"Effective_MACs": 0, "Effective_ACs": 0, "Dense": 0}
        if not self._defined("SynapticOperations"):
            return {"Effective_MACs": math.nan, "Effective_ACs": math.nan, "Dense": math.nan}
        total = self.totals().total()
        return {"Effective_MACs": total["eff_macs"], "Effective_ACs": total["eff_acs"], "Dense": total["dense"]}

    def membrane_updates(self) -> float:
        """Membrane updates per sample over the run so far (NeuroBench's ``MembraneUpdates``)."""
        if not self._defined("MembraneUpdates"):
            return math.nan
        snap = self.totals()
        layers = self._neuron_layers(snap)
        unknown = [s.name for s in layers if s.updates is None]
        if unknown:
            return self._nan("updates", f"synopsloss: membrane updates of neuron layer(s) {unknown} are not "
                             "tracked for their type; MembraneUpdates is nan")
        return sum(s.updates for s in layers) / snap.samples

    def neuron_operations(self) -> Dict[str, float]:
        """NeuroBench's ``NeuronOperations`` result over the run so far."""
        if not self._defined("NeuronOperations"):
            return {"Effective Neuron Ops": math.nan, "Neuron Dense Ops": math.nan}
        snap = self.totals()
        layers = self._neuron_layers(snap)
        unknown = [s.name for s in layers if s.updates is None or s.op_cost is None]
        if unknown:
            nan = self._nan("ops", f"synopsloss: the operations of one update of neuron layer(s) {unknown} are "
                            "unknown (synopsloss's table has no cost for their type; NeuroBenchMetrics takes "
                            "none: count them with NeuronMonitor(model, costs={...}), see synopsloss.neurons, or use "
                            "NeuroBench's own NeuronOperations); NeuronOperations is nan")
            return {"Effective Neuron Ops": nan, "Neuron Dense Ops": nan}
        return {
            "Effective Neuron Ops": sum(s.updates * s.op_cost for s in layers) / snap.samples,
            "Neuron Dense Ops": sum(s.updates_dense * s.op_cost for s in layers) / snap.samples,
        }

    def activation_sparsity(self, model: Any) -> float:
        """Zero outputs over all outputs of the last batch's activation layers (NeuroBench's ``ActivationSparsity``).

        The layers are those NeuroBench hooks: instances of
        ``model.activation_modules`` (``nn.ReLU``, ``nn.Sigmoid``, and
        ``snn.SpikingNeuron`` for ``SNNTorchModel``) not inside another one,
        and the spiking neuron layers that list misses (a ``TorchModel``'s
        list has no neuron type: NeuroBench reports 0.0 for an snntorch net
        wrapped in it); for a plain network, every neuron layer and ``ReLU`` /
        ``Sigmoid``.
        """
        if self._batch is None and self._undefined is not None:  # (the last batch had NaN or inf)
            self._defined("ActivationSparsity")
            return math.nan
        if self._batch is None:
            raise RuntimeError("ActivationSparsity: no batch was counted yet")
        self._neuron_layers(self._batch)
        kinds = tuple(getattr(model, "activation_modules", ()) or ())
        names = []
        for name, s in self._batch.neurons.items():
            if kinds:
                module = self.net.get_submodule(name)
                above = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
                # (and spiking neurons that the model's list misses: an snntorch net wrapped in TorchModel, whose
                # list holds ReLU and Sigmoid only, has its neurons' membrane updates counted too)
                if (isinstance(module, kinds) or s.kind == "neuron") and not any(
                        isinstance(self.net.get_submodule(p), kinds)
                        or getattr(self._batch.neurons.get(p), "kind", None) == "neuron" for p in above):
                    names.append(name)
            elif s.kind == "neuron" or s.type in ("ReLU", "Sigmoid"):
                names.append(name)
        blind = [n for n in names if self._batch.neurons[n].kind not in ("neuron", "activation")]
        if blind:  # (a type added with model.add_activation_module: the monitor saw its calls, not its outputs)
            kinds_of = sorted({self._batch.neurons[n].type for n in blind})
            return self._nan("sparsity-blind", f"synopsloss: layer(s) {blind} ({', '.join(kinds_of)}) are in "
                             "model.activation_modules, but synopsloss reads the outputs of neuron layers and of "
                             "known activations (ReLU, Sigmoid, ...) only; ActivationSparsity is nan. Use "
                             "NeuroBench's own ActivationSparsity for this model.")
        total = sum(self._batch.neurons[n].numel for n in names)
        if not total:
            return self._nan("sparsity", "synopsloss: no activation layer ran, so ActivationSparsity is undefined "
                             "(nan); NeuroBench reports 0.0 there")
        nonzero = sum(self._batch.neurons[n].nonzero or 0.0 for n in names)
        return (total - nonzero) / total


def _metric_classes(shared: NeuroBenchMetrics, accumulated: type, workload: type) -> List[type]:
    """NeuroBench metric classes (named as NeuroBench's) reading ``shared``."""

    def accumulated_metric(name: str, doc: str, result: Callable[[], Any], neurons: bool) -> type:
        """An accumulated metric: NeuroBench resets, calls it per batch and reads ``compute()``."""

        def __init__(self: Any) -> None:
            accumulated.__init__(self, requires_hooks=False)
            if neurons:
                shared._neuron_layers(CounterSnapshot(0))

        def __call__(self: Any, model: Any, preds: Any, data: Any) -> Any:
            shared.collect(model, data)
            return self.compute()

        body = {"__doc__": doc, "__init__": __init__, "__call__": __call__,
                "reset": lambda self: shared.reset(), "compute": lambda self: result()}
        return type(name, (accumulated,), body)

    SynapticOperations = accumulated_metric(
        "SynapticOperations", "Effective MACs / ACs and dense synaptic operations per sample (NeuroBench's keys).",
        shared.synaptic_operations, neurons=False)
    NeuronOperations = accumulated_metric(
        "NeuronOperations", "Effective and dense neuron operations per sample (NeuroBench's keys).",
        shared.neuron_operations, neurons=True)
    MembraneUpdates = accumulated_metric(
        "MembraneUpdates", "Membrane potential updates per sample.", shared.membrane_updates, neurons=True)

    class ActivationSparsity(workload):  # type: ignore[misc, valid-type]
        """Sparsity of the batch's activations (NeuroBench averages it over batches, weighted by samples)."""

        def __init__(self) -> None:
            super().__init__(requires_hooks=False)
            shared._neuron_layers(CounterSnapshot(0))

        def __call__(self, model: Any, preds: Any, data: Any) -> float:
            shared.collect(model, data)
            return shared.activation_sparsity(model)

    classes = [SynapticOperations, NeuronOperations, MembraneUpdates, ActivationSparsity]
    for cls in classes:
        cls.__module__ = __name__
        cls.__qualname__ = f"NeuroBenchMetrics.{cls.__name__}"
    return classes
