"""synopsloss: the synaptic operations of a PyTorch network as something to count and train against.

Public API
----------
SynOpsCounter
    Forward hooks that count differentiable synops and NeuroBench's dense /
    effective MAC / effective AC operations, per sample. Read with
    ``synops()`` (differentiable), ``snapshot()`` (:class:`CounterSnapshot`,
    plain data) and ``table()`` (:class:`SynOpsTable`).
SynOpsTable, compare
    The per-layer table (text, Markdown, LaTeX, CSV, DataFrame, plot) and two tables side by side.
SynOpsLoss, EnergyLoss, schedules
    The loss terms to train against synops or estimated energy, and target / weight schedules.
NeuronMonitor
    Firing rates and neuron operations of the synapse-free layers.
connection_map, register_rule, register_no_synapse, Rule, LayerKind
    Fan-out maps and the layer registry (:mod:`synopsloss.registry`).
EnergyModel, OpEnergy, DeviceEnergy, Lemaire2022, CountEnergy, register_device, register_preset
    Cited energy presets for the table and EnergyLoss (:mod:`synopsloss.energy`:
    :mod:`synopsloss.calibration`: ``break_even`` and ``calibrate``).

Modules: ``counter`` (hooks and counting), ``snapshot`` (plain-data readings),
``state`` (declared per-layer state), ``registry`` (layer knowledge),
``maps`` (fan-out maths), ``ops`` (counts of functional and tensor ops),
``opscope`` (op-level counting inside the modules that need it: attention,
functional weights), ``pooling`` (AvgPool spike events), ``recurrent``
(RNN/LSTM/GRU), ``neurons`` (neuron statistics), ``hooks`` (hook plumbing),
``report`` / ``table`` (the per-layer table), ``energy``, ``loss``,
``schedules``, ``lightning`` (Lightning callbacks), ``neurobench`` (NeuroBench
metrics), ``cli`` (command line).

``lightning`` (it needs the optional ``lightning`` package), ``neurobench``,
``cli`` and ``report`` are imported on first access: ``import synopsloss``
imports only torch, and ``sl.lightning`` / ``sl.neurobench`` work without
importing them first.
"""

import importlib
from typing import Any

from .counter import COUNT_KEYS, SynOpsCounter, SynOpsWarning, UnsupportedLayerWarning
from .energy import CountEnergy, DeviceEnergy, EnergyModel, Lemaire2022, OpEnergy, register_device, register_preset
from .loss import EnergyLoss, LossScaleWarning, SynOpsLoss, UnreachableTargetWarning
from .maps import Rule
from .neurons import NeuronMonitor
from .registry import LayerKind, connection_map, register_no_synapse, register_rule
from .snapshot import CounterSnapshot, LayerStats, NeuronStats
from .table import LayerRow, SynOpsComparison, SynOpsTable, compare
from . import schedules

__version__ = "0.1.0"

__all__ = [
    "SynOpsCounter",
    "CounterSnapshot",
    "LayerStats",
    "NeuronStats",
    "SynOpsWarning",
    "UnsupportedLayerWarning",
    "COUNT_KEYS",
    "connection_map",
    "register_rule",
    "register_no_synapse",
    "Rule",
    "LayerKind",
    "NeuronMonitor",
    "SynOpsTable",
    "LayerRow",
    "compare",
    "SynOpsComparison",
    "EnergyModel",
    "OpEnergy",
    "DeviceEnergy",
    "Lemaire2022",
    "CountEnergy",
    "register_device",
    "register_preset",
    "SynOpsLoss",
    "EnergyLoss",
    "UnreachableTargetWarning",
    "LossScaleWarning",
    "schedules",
    "__version__",
]

# submodules imported on first attribute access (they import optional dependencies)
_LAZY = ("lightning", "neurobench", "cli", "report")
_EXTRAS = {"lightning": "lightning"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name and not err.name.startswith(__name__):
                raise ModuleNotFoundError(
                    f"synopsloss.{name} needs {err.name!r}, which is not installed: "
                    f"pip install 'synopsloss[{_EXTRAS.get(name, name)}]'", name=err.name) from err
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
