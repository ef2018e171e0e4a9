"""synopsloss: the synaptic operations of a PyTorch network as something to count and train against.

Public API
----------
SynOpsCounter
    Forward hooks that count differentiable synops and NeuroBench's dense /
    effective MAC / effective AC operations, per sample.
connection_map, register_rule, register_no_synapse, Rule
    Fan-out maps and the registry of layer rules.
SynOpsTable (counter.table()), compare, NeuronMonitor, energy presets
    Per-layer table with neuron statistics and energy estimates; two tables side by side.
SynOpsLoss, schedules
    The loss term to train against synops, and target / weight schedules.
"""

from .counter import COUNT_KEYS, SynOpsCounter, UnsupportedLayerWarning
from .maps import Rule, connection_map, register_no_synapse, register_rule
from . import recurrent  # registers the nn.RNN/LSTM/GRU and *Cell rules  # noqa: F401
from .energy import DeviceEnergy, EnergyModel, Lemaire2022, OpEnergy, register_device
from .neurons import NeuronMonitor
from .table import LayerRow, SynOpsComparison, SynOpsTable, compare
from . import schedules
from .loss import SynOpsLoss, UnreachableTargetWarning

__version__ = "0.1.0"

__all__ = [
    "SynOpsCounter",
    "UnsupportedLayerWarning",
    "COUNT_KEYS",
    "connection_map",
    "register_rule",
    "register_no_synapse",
    "Rule",
    "NeuronMonitor",
    "SynOpsTable",
    "LayerRow",
    "compare",
    "SynOpsComparison",
    "EnergyModel",
    "OpEnergy",
    "DeviceEnergy",
    "Lemaire2022",
    "register_device",
    "SynOpsLoss",
    "UnreachableTargetWarning",
    "schedules",
    "__version__",
]
