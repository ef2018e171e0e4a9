"""synopsloss: the synaptic operations of a PyTorch network as something to count and train against.

Public API
----------
SynOpsCounter
    Forward hooks that count differentiable synops and NeuroBench's dense /
    effective MAC / effective AC operations, per sample.
connection_map, register_rule, register_no_synapse, Rule
    Fan-out maps and the registry of layer rules.
"""

from .counter import COUNT_KEYS, SynOpsCounter, UnsupportedLayerWarning
from .maps import Rule, connection_map, register_no_synapse, register_rule

__version__ = "0.1.0"

__all__ = [
    "SynOpsCounter",
    "UnsupportedLayerWarning",
    "COUNT_KEYS",
    "connection_map",
    "register_rule",
    "register_no_synapse",
    "Rule",
    "__version__",
]
