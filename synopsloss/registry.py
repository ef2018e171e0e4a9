"""Everything synopsloss knows about layer types, in one place.

Each concern is one literal table, read top to bottom:

* :data:`SYNAPSE_RULES`: layer types with synapses and how to count them
  (fan-out formulas in :mod:`synopsloss.maps`, per-call counts of recurrent
  layers in :mod:`synopsloss.recurrent`);
* :data:`NO_SYNAPSE`: types that hold parameters but no synapses (norms, PReLU);
* :data:`LAYER_KINDS`: what a synapse-free layer is in the table (:class:`LayerKind`);
* :data:`POOL_DIVISORS`: average pools and their divisors (spike-event correction);
* :data:`PASS_THROUGH`: layers that keep each value or zero it (the correction follows them), and
  :data:`SCALING_DROPOUTS`: those that scale the kept values by ``1/(1-p)`` in training;
* :data:`NEURON_LIBRARIES` and :data:`NEURON_OP_COSTS`: spiking neuron base
  classes and the operations of one membrane update;
* :data:`TIME_FOLDING`: layers that know the samples of ``[B*T, ...]`` inputs;
* :data:`REPEATED_EVALUATIONS`: synapses a neuron evaluates twice per call (counted once), and
  :data:`UNRUN_CHILDREN`: submodules their parent's forward never runs (not counted);
* :data:`OP_SCOPED` and :data:`RULE_FORWARD_AS_IS`: which forwards are counted
  op by op (:mod:`synopsloss.opscope`).

SpikingJelly 2.0 and norse 1.1 are described in :mod:`synopsloss.frameworks`
(one literal table per concern there: neuron types with their operation
costs, synapse holders, time layouts); the tables here read those, so each
number is written once.

Third-party classes (snntorch, sinabs, SpikingJelly, norse) are named by dotted path and
resolved in ``sys.modules`` by :func:`resolve`: importing synopsloss never
imports them, and their rows apply once the user's program has imported them.
:func:`register_rule` and :func:`register_no_synapse` add user types.

Example
-------
>>> import torch
>>> from synopsloss.registry import find_rule, layer_kind, LayerKind
>>> find_rule(torch.nn.Conv2d(1, 1, 3)) is SYNAPSE_RULES[torch.nn.Conv2d]
True
>>> layer_kind(torch.nn.Dropout()) is LayerKind.DROPOUT
True
"""

from __future__ import annotations

import enum
import sys
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from . import frameworks, maps, pooling, recurrent
from .maps import FanoutFn, Rule, Shape

__all__ = [
    "LayerKind",
    "SYNAPSE_RULES",
    "NO_SYNAPSE",
    "LAYER_KINDS",
    "POOL_DIVISORS",
    "PASS_THROUGH",
    "MAX_POOLS",
    "SCALING_DROPOUTS",
    "NEURON_LIBRARIES",
    "NEURON_OP_COSTS",
    "TIME_FOLDING",
    "OP_SCOPED",
    "RULE_FORWARD_AS_IS",
    "RECURRENT_SYNAPSES",
    "NEURON_OPS_NO_SYNAPSE",
    "REPEATED_EVALUATIONS",
    "UNRUN_CHILDREN",
    "resolve",
    "register_rule",
    "register_no_synapse",
    "find_rule",
    "has_no_synapse",
    "layer_kind",
    "synapse_kind",
    "neuron_ops_no_synapse",
    "neuron_library",
    "neuron_op_cost",
    "pool_divisor",
    "is_pass_through",
    "max_pool_dims",
    "dropout_keep",
    "repeated_evaluation",
    "unrun_children",
    "is_time_folding",
    "time_folding_batch",
    "time_probes",
]


class LayerKind(str, enum.Enum):
    """What a layer is in the table (a ``str``: ``LayerKind.SYNAPTIC == "synaptic"``)."""

    SYNAPTIC = "synaptic"
    RECURRENT = "recurrent synapses"
    PRODUCT = "activation product"  #: activation x activation product (attention q @ k^T), counted op by op
    NEURON = "neuron"
    ACTIVATION = "activation"
    NORM = "norm (folded)"
    DROPOUT = "dropout"
    POOLING = "pooling"
    UPSAMPLING = "upsampling"
    RESHAPE = "reshape"
    IDENTITY = "identity"
    OTHER = "no synapses"

    def __str__(self) -> str:
        return self.value


TypeKey = Union[type, str]  # a class, or the dotted path of a third-party class

# --------------------------------------------------------------------------- synapses

_conv_nd = maps.conv_sample_ndim

#: Layer types with synapses. Looked up along the module's MRO (subclasses inherit a rule).
SYNAPSE_RULES: Dict[TypeKey, Rule] = {
    nn.Linear: Rule(maps.linear_fanout, maps.fixed_ndim(1)),
    nn.Conv1d: Rule(maps.conv_fanout, _conv_nd),
    nn.Conv2d: Rule(maps.conv_fanout, _conv_nd),
    nn.Conv3d: Rule(maps.conv_fanout, _conv_nd),
    nn.ConvTranspose1d: Rule(maps.conv_transpose_fanout, _conv_nd),
    nn.ConvTranspose2d: Rule(maps.conv_transpose_fanout, _conv_nd),
    nn.ConvTranspose3d: Rule(maps.conv_transpose_fanout, _conv_nd),
    nn.RNNCell: Rule(None, maps.fixed_ndim(1), count=recurrent.cell_counts),
    nn.LSTMCell: Rule(None, maps.fixed_ndim(1), count=recurrent.cell_counts),
    nn.GRUCell: Rule(None, maps.fixed_ndim(1), count=recurrent.cell_counts),
    nn.RNN: Rule(None, maps.fixed_ndim(1), count=recurrent.layer_counts),
    nn.LSTM: Rule(None, maps.fixed_ndim(1), count=recurrent.layer_counts),
    nn.GRU: Rule(None, maps.fixed_ndim(1), count=recurrent.layer_counts),
    # snntorch RLeaky / RSynaptic (all_to_all=False): spike x V, one synapse per neuron where V != 0
    "snntorch._neurons.rleaky.RecurrentOneToOne": Rule(
        recurrent.one_to_one_fanout, recurrent.one_to_one_ndim, weight="V"),
    "snntorch._neurons.rsynaptic.RecurrentOneToOne": Rule(
        recurrent.one_to_one_fanout, recurrent.one_to_one_ndim, weight="V"),
    # SpikingJelly: layer.Conv2d / Linear / ... subclass the torch layers (their rules apply through the MRO);
    # weight-standardised layers compute with get_weight(), so a zero in .weight is no zero synapse
    "spikingjelly.activation_based.layer.WSConv2d": Rule(maps.conv_fanout, _conv_nd, weight="get_weight()"),
    "spikingjelly.activation_based.layer.WSLinear": Rule(maps.linear_fanout, maps.fixed_ndim(1), weight="get_weight()"),
    # dynamically quantized Linear (torch.ao.quantization.quantize_dynamic): no parameters, its int8 weight is
    # packed; weight() gives it (dequantized for the zero pattern by maps.rule_weight)
    "torch.ao.nn.quantized.dynamic.Linear": Rule(maps.linear_fanout, maps.fixed_ndim(1), weight="weight()"),
    # norse LConv2d subclasses Conv3d but convolves [T, N, C, H, W] per step with weight[..., 0]
    "norse.torch.LConv2d": Rule(frameworks.lconv2d_fanout, maps.fixed_ndim(3)),
    # norse recurrent modules (input_weights x input + recurrent_weights x previous spikes) and LILinearCell
    **{path: Rule(None, maps.fixed_ndim(1), weight="input_weights", count=frameworks.norse_synapse_counts)
       for path, row in frameworks.SYNAPSE_TYPES.items()
       if any(w[0] == "input_weights" for w in row.weights)},
}

#: Types with parameters but no synapses (folded into the preceding weights on hardware, or activations).
NO_SYNAPSE: Dict[TypeKey, str] = {
    nn.modules.batchnorm._NormBase: "normalisation parameters are folded into the weights",
    nn.LayerNorm: "normalisation parameters are folded into the weights",
    nn.GroupNorm: "normalisation parameters are folded into the weights",
    nn.LocalResponseNorm: "normalisation has no synapses",
    nn.PReLU: "an activation's slope is no synapse",
}

# --------------------------------------------------------------------------- synapse-free layers

_ACT, _NORM, _POOL = LayerKind.ACTIVATION, LayerKind.NORM, LayerKind.POOLING

#: What synapse-free layers are (neurons are found through :data:`NEURON_LIBRARIES`).
LAYER_KINDS: Dict[TypeKey, LayerKind] = {
    **{t: _ACT for t in (
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
        nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softplus, nn.Softsign,
        nn.Threshold, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.LogSigmoid)},
    nn.modules.batchnorm._NormBase: _NORM,
    nn.LayerNorm: _NORM,
    nn.GroupNorm: _NORM,
    nn.LocalResponseNorm: _NORM,
    nn.modules.dropout._DropoutNd: LayerKind.DROPOUT,
    nn.modules.pooling._AvgPoolNd: _POOL,
    nn.modules.pooling._MaxPoolNd: _POOL,
    nn.modules.pooling._AdaptiveAvgPoolNd: _POOL,
    nn.modules.pooling._AdaptiveMaxPoolNd: _POOL,
    nn.modules.pooling._LPPoolNd: _POOL,
    nn.modules.pooling._MaxUnpoolNd: _POOL,
    "sinabs.layers.SpikingMaxPooling2dLayer": _POOL,
    nn.Upsample: LayerKind.UPSAMPLING,
    nn.PixelShuffle: LayerKind.UPSAMPLING,
    nn.PixelUnshuffle: LayerKind.UPSAMPLING,
    nn.Flatten: LayerKind.RESHAPE,
    nn.Unflatten: LayerKind.RESHAPE,
    "sinabs.layers.FlattenTime": LayerKind.RESHAPE,
    "sinabs.layers.UnflattenTime": LayerKind.RESHAPE,
    nn.Identity: LayerKind.IDENTITY,
}

#: Average pools: ``(divisor function, spatial dims)`` (see :mod:`synopsloss.pooling`).
POOL_DIVISORS: Dict[TypeKey, Tuple[Callable, int]] = {
    nn.AvgPool1d: (pooling.avgpool_divisor, 1),
    nn.AvgPool2d: (pooling.avgpool_divisor, 2),
    nn.AvgPool3d: (pooling.avgpool_divisor, 3),
    nn.AdaptiveAvgPool1d: (pooling.adaptive_divisor, 1),
    nn.AdaptiveAvgPool2d: (pooling.adaptive_divisor, 2),
    nn.AdaptiveAvgPool3d: (pooling.adaptive_divisor, 3),
    # sum pools (sinabs' SumPool2d): LPPool with norm_type=1 only (pool_divisor checks it)
    nn.LPPool1d: (pooling.sumpool_divisor, 1),
    nn.LPPool2d: (pooling.sumpool_divisor, 2),
    **({nn.LPPool3d: (pooling.sumpool_divisor, 3)} if hasattr(nn, "LPPool3d") else {}),
}

#: Max pools and the dims they pool over: one reading an average pool's output passes on the events of the values
#: it picks (see :meth:`synopsloss.pooling.PoolEvents.max_through`).
MAX_POOLS: Dict[TypeKey, int] = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
}

#: Layers that keep each value or zero it (``relu(pooled) x divisor`` stays exact).
PASS_THROUGH: Tuple[TypeKey, ...] = (
    nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.dropout._DropoutNd, nn.ReLU,
    "sinabs.layers.FlattenTime", "sinabs.layers.UnflattenTime",
    "spikingjelly.activation_based.layer.Dropout",  # (and Dropout2d) x * mask, the mask 0 or 1/(1-p) in training
)

#: Layers that move values without mixing them (pads, nearest-neighbour upsampling, pixel and channel shuffles):
#: an average-pool output read through one keeps its events, its divisors moved alike. A constant pad of another
#: value than 0 and an upsampling that interpolates (bilinear, ...) are read as values (:func:`moves_values`).
MOVES_VALUES: Tuple[TypeKey, ...] = (
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
    nn.ReplicationPad3d, "torch.nn.CircularPad1d", "torch.nn.CircularPad2d", "torch.nn.CircularPad3d",
    nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
)

#: Dropout layers that, in training, zero values and scale the kept ones by ``1/(1-p)``: ``{type: attribute of p}``
#: (an average-pool output read through one keeps its events: its divisors are scaled by ``1-p``).
SCALING_DROPOUTS: Dict[TypeKey, str] = {
    nn.Dropout: "p", nn.Dropout1d: "p", nn.Dropout2d: "p", nn.Dropout3d: "p",
    "spikingjelly.activation_based.layer.Dropout": "p",  # the same mask at every step of one simulation
}

# --------------------------------------------------------------------------- neurons

#: Spiking neuron base classes and the library they belong to (SpikingJelly / norse: every
#: class of :data:`synopsloss.frameworks.NEURON_TYPES`, base classes included).
NEURON_LIBRARIES: Dict[str, str] = {
    "snntorch.SpikingNeuron": "snntorch",
    "snntorch.LeakyParallel": "snntorch",  # (an nn.RNN of leaky neurons over the whole sequence, no SpikingNeuron)
    "sinabs.layers.StatefulLayer": "sinabs",
    **{path: row.library for path, row in frameworks.NEURON_TYPES.items()},
}

#: snntorch neurons that take the whole sequence in one call, time first (``[T, B, ...]``): one sample's neurons are
#: ``shape[2:]`` of their output, its rows ``T * B`` (every other snntorch neuron takes one step, ``[B, ...]``).
SEQUENCE_NEURONS: Tuple[TypeKey, ...] = ("snntorch.StateLeaky", "snntorch.LeakyParallel")  # (LinearLeaky too)


def sequence_neuron(module: nn.Module) -> bool:
    """Whether ``module`` is a neuron that takes a whole time-first sequence per call (:data:`SEQUENCE_NEURONS`)."""
    return isinstance(module, _types(SEQUENCE_NEURONS))


#: Synapses of a neuron module that carry its own output back (recurrent synapses): ``{neuron type: child
#: names}`` (``""``: the module's own rule, norse's recurrent modules). Every other synaptic layer inside a
#: neuron module is feed-forward (snntorch ``LinearLeaky.linear``, ``AssociativeLeaky.to_v``): kind
#: ``synaptic`` (:func:`synapse_kind`).
RECURRENT_SYNAPSES: Dict[TypeKey, Tuple[str, ...]] = {
    "snntorch.RLeaky": ("recurrent",),  # nn.Linear / nn.Conv2d, or RecurrentOneToOne (V) of the previous spikes
    "snntorch.RSynaptic": ("recurrent",),
    "snntorch.SLSTM": ("lstm_cell",),  # the LSTM cell's hidden-to-hidden weights (its rule counts both)
    "snntorch.SConv2dLSTM": ("conv",),  # convolves cat(input, previous hidden state)
    "snntorch.LeakyParallel": ("rnn",),  # nn.RNN: input and hidden-to-hidden weights
    "sinabs.layers.StatefulLayer": ("rec_connect",),  # sinabs *Recurrent: rec_connect of the previous spikes
    **{path: ("",) for path, row in frameworks.SYNAPSE_TYPES.items()
       if any(w[0] == "recurrent_weights" for w in row.weights)},  # norse LIFRecurrentCell, ...
}

#: Children that a module's forward never runs: ``{type: child names}``. Their layers are not counted (and not
#: named as layers that did not run): sinabs' ``from_model`` Network keeps the source ANN as ``analog_model`` and
#: runs ``spiking_model`` only.
UNRUN_CHILDREN: Dict[TypeKey, Tuple[str, ...]] = {
    "sinabs.network.Network": ("analog_model",),
}


def unrun_children(model: nn.Module) -> Tuple[str, ...]:
    """Qualified names of the submodules of ``model`` that their parent's forward never runs (:data:`UNRUN_CHILDREN`).

    Example
    -------
    >>> unrun_children(torch.nn.Sequential(torch.nn.Linear(1, 1)))
    ()
    """
    out = []
    for name, module in model.named_modules():
        children = _lookup(UNRUN_CHILDREN, module)
        for child in children or ():  # type: ignore[union-attr]
            if hasattr(module, child):
                out.append(f"{name}.{child}" if name else child)
    return tuple(out)


#: Synapses that a neuron module's own code evaluates twice per call on the same input: ``{neuron type: (child
#: name, attribute, value)}``. While ``neuron.<attribute> == value``, a second call of the child on the same input
#: (same object and version, or equal values) within one call of the neuron is the same spikes over the same
#: synapses, not a second delivery: it is counted once (:func:`repeated_evaluation`).
REPEATED_EVALUATIONS: Dict[TypeKey, Tuple[str, str, Any]] = {
    # snntorch's zero reset: _base_zero (RLeaky) / _base_state_reset_zero (RSynaptic) compute the state again,
    # recurrent(self.spk) included
    "snntorch.RLeaky": ("recurrent", "_reset_mechanism", "zero"),
    "snntorch.RSynaptic": ("recurrent", "_reset_mechanism", "zero"),
    # _base_state_reset_zero runs lstm_cell(input_, (mem, syn)) again (SLSTM), or conv(cat([input_, mem])) on a new
    # concatenation of the same values (SConv2dLSTM: compared by value)
    "snntorch.SLSTM": ("lstm_cell", "_reset_mechanism", "zero"),
    "snntorch.SConv2dLSTM": ("conv", "_reset_mechanism", "zero"),
}

#: Neuron types whose own code multiplies with a parameter that is part of the neuron's dynamics, not a
#: synapse between neurons: not counted op by op (every other neuron type whose own code runs a matmul-like
#: op, such as snntorch's ``AssociativeLeaky``, is; see :mod:`synopsloss.opscope`).
NEURON_OPS_NO_SYNAPSE: Dict[TypeKey, str] = {
    **{f"spikingjelly.activation_based.neuron.{n}": "its weight mixes one neuron's time steps"
       for n in ("PSN", "MaskedPSN", "SlidingPSN")},
}

#: Operations of one membrane update, per library and type name (see :mod:`synopsloss.neurons`).
#: snntorch: NeuroBench 2.3's ``neuron_ops_reset_operations`` by reset mechanism; sinabs: the base
#: cost of the update equations (extras for synaptic currents etc. in :func:`neuron_op_cost`).
#: SpikingJelly and norse: the ``terms`` of their rows in :data:`synopsloss.frameworks.NEURON_TYPES`
#: (same convention; read by :func:`neuron_op_cost` through :func:`synopsloss.frameworks.neuron_ops`).
NEURON_OP_COSTS: Dict[str, Dict[str, Union[int, Dict[str, int]]]] = {
    "snntorch": {
        "Leaky": {"subtract": 4, "zero": 4},
        "RLeaky": {"subtract": 4, "zero": 4},  # the recurrent synapses are counted as synops
        "Synaptic": {"subtract": 6, "zero": 8},
        "RSynaptic": {"subtract": 6, "zero": 8},
        "Lapicque": {"subtract": 11, "zero": 11},
        "Alpha": {"subtract": 18, "zero": 24},
    },
    "sinabs": {
        "ExpLeak": 2,  # decay multiply, add input (no spikes)
        "IAF": 3,  # add input, compare, reset
        "ALIF": 8,  # LIF's 4 + threshold-trace decay and spike add (2) + adaptive threshold (2)
        "LIF": 4,  # decay multiply, add input, compare, reset
    },
}

#: neuron types of snntorch / sinabs whose output is their membrane, not spikes (SpikingJelly's and norse's say so
#: in their rows of :data:`synopsloss.frameworks.NEURON_TYPES`): the table gives them no firing rate
MEMBRANE_OUTPUT: Dict[str, Tuple[str, ...]] = {"sinabs": ("ExpLeak",)}

_FRAMEWORK_LIBRARIES = ("spikingjelly", "norse")

#: sinabs ``*Squeeze`` layers: inputs shaped ``[B*T, ...]``, samples known from ``batch_size`` / ``num_timesteps``.
TIME_FOLDING: Tuple[str, ...] = ("sinabs.layers.SqueezeMixin",)

# --------------------------------------------------------------------------- op-level counting

#: Module types whose forward is counted op by op (:mod:`synopsloss.opscope`): the counting mode is pushed
#: before their forward starts, so fused fast paths are not taken and every product is seen.
OP_SCOPED: Dict[TypeKey, str] = {
    nn.MultiheadAttention: "in-projection, q @ k^T, attn @ v and out-projection inside F.multi_head_attention_forward",
    nn.TransformerEncoderLayer: "self-attention (and its fast path, skipped under the mode)",
    nn.TransformerDecoderLayer: "self- and cross-attention",
    nn.TransformerEncoder: "converts inputs to nested tensors on its fast path; the mode keeps it dense",
    nn.TransformerDecoder: "holds decoder layers",
    nn.Transformer: "holds encoder and decoder",
    # SpikingJelly 2.0 Spikformer / QKFormer: (v @ k^T) @ q in _ssa_kernel_torch. Not listed: the Spike-driven
    # Transformer's SpikeDrivenSelfAttention and QKFormer's QKAttention multiply elementwise (q * kv, attn * k),
    # which are no synapses (see synopsloss.ops.NOT_SYNAPSE_OPS); their convolutions are module layers.
    "spikingjelly.activation_based.layer.attention.SpikingSelfAttention": "(v @ k^T) @ q spike products",
}

#: Module types with weights that no rule can count: named as unsupported (their synops are not included), and
#: their forward is not counted op by op (its products would give a number that looks right and is not).
UNCOUNTABLE: Dict[TypeKey, str] = {
    # in training a random mask drops weights per sample (torch.bmm of the masked weights and the input); in eval
    # it computes F.linear(x, w) and F.linear(x ** 2, w ** 2) for its Gaussian sampling: two products per pass
    "spikingjelly.activation_based.layer.DropConnectLinear": "its weights are sampled anew at every call",
}


def uncountable(module: nn.Module) -> Optional[str]:
    """Why ``module``'s synapses cannot be counted (:data:`UNCOUNTABLE`), or ``None``."""
    found = _lookup(UNCOUNTABLE, module)
    return None if found is None else str(found)


#: Types with a map rule whose class overrides ``forward`` but applies the rule's weight unchanged (so the
#: module hook stays: cheaper, and the AvgPool correction applies). Any other override is counted op by op.
RULE_FORWARD_AS_IS: Tuple[TypeKey, ...] = tuple(
    f"spikingjelly.activation_based.layer.{n}"  # 'm' mode: [T, B, ...] flattened to [T*B, ...] around the base forward
    for n in ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
)

# --------------------------------------------------------------------------- lookups


def resolve(key: TypeKey) -> Optional[type]:
    """The class a table key names: the key itself, or a dotted path looked up in ``sys.modules``."""
    if isinstance(key, type):
        return key
    module, _, name = key.rpartition(".")
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls if isinstance(cls, type) else None


_RESOLVED: Dict[int, Tuple[tuple, Dict[type, object]]] = {}


def _resolved(table: Mapping[TypeKey, object]) -> Dict[type, object]:
    """``{class: entry}`` of a table's keys that resolve now; cached until its keys change or a module is imported."""
    stamp = (len(sys.modules), tuple(table))
    cached = _RESOLVED.get(id(table))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    resolved = {resolve(k): v for k, v in table.items()}
    resolved.pop(None, None)
    _RESOLVED[id(table)] = (stamp, resolved)
    return resolved


def _lookup(table: Mapping[TypeKey, object], module: nn.Module) -> Optional[object]:
    """The entry of the first class in ``module``'s MRO that the table names."""
    resolved = _resolved(table)
    for cls in type(module).__mro__:
        if cls in resolved:
            return resolved[cls]
    return None


def _types(keys: Iterable[TypeKey]) -> Tuple[type, ...]:
    return tuple(t for t in (resolve(k) for k in keys) if t is not None)


def _as_types(types: Union[type, Iterable[type]]) -> Tuple[type, ...]:
    types = (types,) if isinstance(types, type) else tuple(types)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise TypeError(f"register_rule expects nn.Module subclasses, got {t!r}")
    return types


def register_rule(
    types: Union[type, Iterable[type]],
    *,
    sample_ndim: Union[int, Callable[[nn.Module], int]] = 1,
    weight: str = "weight",
    registry: Optional[Dict[type, Rule]] = None,
    counts: bool = False,
) -> Callable[[FanoutFn], FanoutFn]:
    """Register the fan-out formula of one or more layer types (decorator).

    Parameters
    ----------
    types
        A module class or an iterable of them.
    sample_ndim
        Trailing input dims forming one sample (an int, or a function of the module).
    weight
        Name of the weight attribute.
    registry
        Where to register; :data:`SYNAPSE_RULES` by default. Pass a dict to
        build a per-counter ``custom_rules`` mapping.
    counts
        The decorated function is a ``count(module, args, kwargs, output) ->
        OpCounts`` that counts a whole call itself (layers that are no single
        linear map of one input), instead of a fan-out function.

    Raises
    ------
    TypeError
        If a target is not an ``nn.Module`` subclass.
    RuntimeError
        If a type already has a rule in that registry.

    Example
    -------
    >>> import torch
    >>> from synopsloss import register_rule, connection_map
    >>> class Scale(torch.nn.Module):  # y = w * x elementwise: one synapse per input
    ...     def __init__(self, n):
    ...         super().__init__()
    ...         self.weight = torch.nn.Parameter(torch.ones(n))
    ...     def forward(self, x):
    ...         return self.weight * x
    >>> rules = {}
    >>> @register_rule(Scale, sample_ndim=1, registry=rules)
    ... def _scale(module, w01, in_shape, out_shape):
    ...     return w01.clone()
    >>> connection_map(Scale(3), (3,), rules=rules)
    tensor([1., 1., 1.], dtype=torch.float64)
    """
    types = _as_types(types)
    if registry is not None and not isinstance(registry, dict):
        raise TypeError(f"register_rule(registry=) takes a dict (then passed as custom_rules=), got "
                        f"{type(registry).__name__}")
    if not isinstance(weight, str) or not weight:
        raise TypeError(f"register_rule(weight=) names the weight attribute (a str such as 'weight'), got {weight!r}")
    if not callable(sample_ndim) and (isinstance(sample_ndim, bool) or not isinstance(sample_ndim, int)
                                      or sample_ndim < 1):
        raise ValueError(f"register_rule(sample_ndim=) is the number of trailing dims of one sample (an int >= 1, or a "
                         f"function of the module), got {sample_ndim!r}")
    target = SYNAPSE_RULES if registry is None else registry
    ndim_fn = sample_ndim if callable(sample_ndim) else maps.fixed_ndim(int(sample_ndim))

    def decorator(fn: FanoutFn) -> FanoutFn:
        if not callable(fn):
            raise TypeError(f"register_rule decorates the rule's function, got {type(fn).__name__}")
        for t in types:
            if t in target:
                raise RuntimeError(f"a synapse rule for {t.__name__} is already registered")
        for t in types:
            target[t] = Rule(None, ndim_fn, weight, count=fn) if counts else Rule(fn, ndim_fn, weight)
        return fn

    return decorator


def register_no_synapse(types: Union[type, Iterable[type]], why: str = "") -> None:
    """Declare module types that hold parameters but no synapses (the counter does not warn about them).

    Example
    -------
    >>> import torch
    >>> class Gain(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.g = torch.nn.Parameter(torch.ones(()))
    >>> register_no_synapse(Gain, "a global gain is no synapse")
    >>> has_no_synapse(Gain())
    True
    """
    for t in _as_types(types):
        NO_SYNAPSE[t] = why


def find_rule(module: nn.Module, rules: Optional[Mapping[type, Rule]] = None) -> Optional[Rule]:
    """The rule for ``module``: per-counter ``rules`` first, then :data:`SYNAPSE_RULES`, by MRO."""
    if rules:
        for cls in type(module).__mro__:
            if cls in rules:
                return rules[cls]
    return _lookup(SYNAPSE_RULES, module)  # type: ignore[return-value]


def has_no_synapse(module: nn.Module) -> bool:
    """Whether ``module``'s type holds no synapses (:data:`NO_SYNAPSE` or :func:`register_no_synapse`)."""
    return _lookup(NO_SYNAPSE, module) is not None


def neuron_library(module: nn.Module) -> Optional[str]:
    """``"snntorch"``, ``"sinabs"``, ... when ``module`` is a spiking neuron layer, else ``None``."""
    return _lookup(NEURON_LIBRARIES, module)  # type: ignore[return-value]


#: SpikingJelly surrogate functions whose forward (``spiking=True``) is the Heaviside step: spikes 0 or 1
_SJ_HEAVISIDE = ("ATan", "Sigmoid", "Erf", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike", "Rect",
                 "PiecewiseLeakyReLU", "QPseudoSpike")


def _sinabs_whole(module: nn.Module) -> Optional[str]:
    from sinabs.activation import MaxSpike, MultiSpike, SingleSpike  # (imported only for a sinabs layer)

    fn = getattr(module, "spike_fn", None)
    if type(fn) is MaxSpike:  # clamp(trunc(v / threshold), max=cap): whole numbers only under a whole cap
        cap = fn.max_num_spikes_per_bin
        if cap is not None and not float(cap).is_integer():
            return None
        return "binary" if cap == 1 else "integer"
    return "binary" if fn is SingleSpike else "integer" if fn is MultiSpike else None


def _sj_whole(module: nn.Module) -> Optional[str]:
    fn = getattr(module, "surrogate_function", None)
    heaviside = (type(fn).__module__ == "spikingjelly.activation_based.surrogate"
                 and type(fn).__name__ in _SJ_HEAVISIDE and getattr(fn, "spiking", False) is True
                 and getattr(module, "backend", "torch") == "torch")
    return "binary" if heaviside else None


def _snntorch_whole(module: nn.Module) -> Optional[str]:
    """snntorch ``Leaky``: ``spike_grad(mem - threshold) * graded_spikes_factor``, whose forward is the Heaviside
    step for every surrogate of ``snntorch.surrogate``: 0 and 1 when the factor is 1 (not learnt) and the state is not
    quantised. (On a GPU the factor is not read: that would wait for the device.)"""
    fn = getattr(module, "spike_grad", None)
    if (getattr(fn, "__module__", None) != "snntorch.surrogate" or getattr(module, "state_quant", False)
            or getattr(module, "learn_graded_spikes", False)):
        return None
    factor = getattr(module, "graded_spikes_factor", 1.0)
    if isinstance(factor, Tensor):
        if factor.device.type != "cpu" or factor.numel() != 1:
            return None
        factor = float(factor)
    return "binary" if factor == 1.0 else None


#: Neuron types whose spike function makes whole-number spikes by construction: their output is read as integer
#: (``"integer"``) or as 0 and 1 (``"binary"``) without a pass over it, by an average pool reading it and by a
#: layer reading it without gradients. Exact classes: a subclass may compute its output otherwise. Value: the
#: check of the instance's own spike function (``None``: another one).
WHOLE_SPIKES: Dict[TypeKey, Callable[[nn.Module], Optional[str]]] = {
    # (v_mem > 0) * trunc(v_mem / threshold), clamped (MaxSpike) or min(., 1) (SingleSpike)
    "sinabs.layers.IAF": _sinabs_whole, "sinabs.layers.IAFSqueeze": _sinabs_whole,
    "sinabs.layers.LIF": _sinabs_whole, "sinabs.layers.LIFSqueeze": _sinabs_whole,
    # surrogate_function(v - v_threshold): the Heaviside step in the forward
    "spikingjelly.activation_based.neuron.IFNode": _sj_whole,
    "spikingjelly.activation_based.neuron.LIFNode": _sj_whole,
    "spikingjelly.activation_based.neuron.ParametricLIFNode": _sj_whole,
    # spike_grad(mem - threshold) * graded_spikes_factor: a snntorch surrogate's forward is the Heaviside step
    "snntorch.Leaky": _snntorch_whole,
}


def whole_spikes(module: nn.Module) -> Optional[str]:
    """``"binary"`` (0 and 1) or ``"integer"`` when ``module``'s output holds whole numbers by construction
    (:data:`WHOLE_SPIKES`, its exact class), else ``None``."""
    check = _resolved(WHOLE_SPIKES).get(type(module))
    return None if check is None else check(module)


def outputs_membrane(module: nn.Module) -> bool:
    """Whether a neuron layer of a library without row tables outputs its membrane, not spikes
    (:data:`MEMBRANE_OUTPUT`; a subclass such as sinabs ``ExpLeakSqueeze`` too).

    Example
    -------
    >>> outputs_membrane(nn.ReLU())
    False
    """
    return any(c.__module__.split(".")[0] == lib and c.__name__ in names
               for c in type(module).__mro__ for lib, names in MEMBRANE_OUTPUT.items())


def layer_kind(module: nn.Module) -> LayerKind:
    """What a synapse-free module is in the table (neurons first, then :data:`LAYER_KINDS`)."""
    if neuron_library(module) is not None:
        return LayerKind.NEURON
    kind = _lookup(LAYER_KINDS, module)
    return kind if kind is not None else LayerKind.OTHER  # type: ignore[return-value]


def synapse_kind(model: nn.Module, name: str) -> LayerKind:
    """The kind of synaptic layer ``name`` of ``model``: ``RECURRENT`` when a neuron module that holds it lists
    it in :data:`RECURRENT_SYNAPSES` (a neuron's own recurrent weights), else ``SYNAPTIC`` (feed-forward weights,
    inside a neuron module or not).

    Example
    -------
    >>> import torch, snntorch as snn
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), snn.RLeaky(0.5, linear_features=2))
    >>> str(synapse_kind(net, "1.recurrent")), str(synapse_kind(net, "0"))
    ('recurrent synapses', 'synaptic')
    """
    parts = name.split(".") if name else []
    for i in range(len(parts) + 1):
        owner = model.get_submodule(".".join(parts[:i]))
        if neuron_library(owner) is None:
            continue
        children = _lookup(RECURRENT_SYNAPSES, owner)
        rest = ".".join(parts[i:])
        if children and any(rest == c or (c and rest.startswith(c + ".")) for c in children):  # type: ignore[union-attr]
            return LayerKind.RECURRENT
    return LayerKind.SYNAPTIC


def repeated_evaluation(model: nn.Module, name: str) -> Optional[Tuple[nn.Module, str, Any]]:
    """``(neuron module, attribute, value)`` when layer ``name`` of ``model`` is a child that the neuron evaluates
    twice per call while ``neuron.<attribute> == value`` (:data:`REPEATED_EVALUATIONS`), else ``None``.

    Example
    -------
    >>> import torch, snntorch as snn
    >>> net = torch.nn.Sequential(snn.RLeaky(0.5, linear_features=2, reset_mechanism="zero"))
    >>> _, attr, value = repeated_evaluation(net, "0.recurrent")
    >>> attr, value, repeated_evaluation(net, "0")
    ('_reset_mechanism', 'zero', None)
    """
    parent, _, child = name.rpartition(".")
    if not child:
        return None
    owner = model.get_submodule(parent)
    entry = _lookup(REPEATED_EVALUATIONS, owner)
    if entry is None or entry[0] != child:  # type: ignore[index]
        return None
    return owner, entry[1], entry[2]  # type: ignore[index]


def neuron_ops_no_synapse(module: nn.Module) -> bool:
    """Whether ``module`` is a neuron whose own matmul-like ops are neuron dynamics (:data:`NEURON_OPS_NO_SYNAPSE`)."""
    return _lookup(NEURON_OPS_NO_SYNAPSE, module) is not None


def pool_divisor(module: nn.Module) -> Optional[Tuple[Callable, int]]:
    """``(divisor function, spatial dims)`` of an average-pool (or sum-pool) module, else ``None``."""
    if isinstance(module, nn.modules.pooling._LPPoolNd) and float(module.norm_type) != 1.0:
        return None  # (an Lp norm of its window: no sum of events)
    return _lookup(POOL_DIVISORS, module)  # type: ignore[return-value]


def max_pool_dims(module: nn.Module) -> Optional[int]:
    """The dims a max pool of :data:`MAX_POOLS` pools over (``None``: no max pool, or a subclass whose ``forward`` is
    its own: :func:`own_forward`)."""
    return _lookup(MAX_POOLS, module) if own_forward(module) else None  # type: ignore[return-value]


#: where the ``forward`` of a layer that the AvgPool correction passes through must come from: a subclass of your
#: own that overrides it (``class Gain(nn.Identity)`` returning ``x * 3``) may change the values
_LIBRARY_FORWARDS = ("torch.", "sinabs.", "spikingjelly.")


def own_forward(module: nn.Module) -> bool:
    """Whether ``module``'s ``forward`` is a library's own (torch, sinabs, SpikingJelly): not overridden by a class of
    user code (the tables below name layers by what their library's forward does).

    Example
    -------
    >>> class Gain(torch.nn.Identity):
    ...     def forward(self, x):
    ...         return 3 * x
    >>> class Named(torch.nn.Identity):
    ...     pass
    >>> own_forward(torch.nn.Identity()), own_forward(Gain()), own_forward(Named())
    (True, False, True)
    """
    if "forward" in vars(module):  # (a forward set on the instance: relu.forward = lambda t: 3 * t)
        return False
    owner = next((c for c in type(module).__mro__ if "forward" in c.__dict__), None)
    return owner is not None and (getattr(owner, "__module__", "") or "").startswith(_LIBRARY_FORWARDS)


def is_pass_through(module: nn.Module) -> bool:
    """Whether ``module`` only reshapes, copies, drops or rectifies values (its library's ``forward``:
    :func:`own_forward`)."""
    return isinstance(module, _types(PASS_THROUGH)) and own_forward(module)


def moves_values(module: nn.Module) -> bool:
    """Whether ``module`` is one of :data:`MOVES_VALUES` (each output value a copy of an input value, or a pad).

    Example
    -------
    >>> moves_values(torch.nn.ZeroPad2d(1)), moves_values(torch.nn.Upsample(scale_factor=2)), moves_values(torch.nn.ReLU())
    (True, True, False)
    """
    return isinstance(module, _types(MOVES_VALUES)) and own_forward(module)


def dropout_keep(module: nn.Module) -> Optional[float]:
    """``1 - p`` of a dropout layer of :data:`SCALING_DROPOUTS`, else ``None``.

    Example
    -------
    >>> dropout_keep(torch.nn.Dropout(0.25)), dropout_keep(torch.nn.AlphaDropout(0.25))
    (0.75, None)
    """
    attr = _lookup(SCALING_DROPOUTS, module)
    if attr is None or type(module) is nn.AlphaDropout or isinstance(module, nn.FeatureAlphaDropout):
        return None
    return 1.0 - float(getattr(module, attr))  # type: ignore[arg-type]


def is_time_folding(module: nn.Module) -> bool:
    """Whether ``module`` is a sinabs ``*Squeeze`` layer (inputs shaped ``[B*T, ...]``)."""
    return isinstance(module, _types(TIME_FOLDING))


def time_folding_batch(module: nn.Module, x: Tensor) -> Optional[int]:
    """Samples in ``x`` for sinabs ``*Squeeze`` layers fed ``[B*T, ...]`` (else ``None``)."""
    if not is_time_folding(module):
        return None
    batch_size = int(getattr(module, "batch_size", -1) or -1)
    if batch_size > 0:
        return batch_size
    steps = int(getattr(module, "num_timesteps", -1) or -1)
    if steps > 0 and x.dim() > 0:
        return x.shape[0] // steps
    return None


#: ``(layout, batch dim, time dim)`` of a probe's input (see :func:`synopsloss.frameworks.step_layout`)
ProbeLayout = Tuple[str, int, Optional[int]]


def time_probes(model: nn.Module) -> Dict[str, Tuple[ProbeLayout, bool]]:
    """Modules whose input shows a batch's time steps: ``{name: (layout, gives the samples too)}``.

    * SpikingJelly / norse: the probes of :func:`synopsloss.frameworks.time_layout`
      (``[T, B, ...]`` multi-step and sequence modules, ``[B, ...]`` single-step
      modules and cells), samples and steps;
    * sinabs neurons other than ``*Squeeze`` (``[B, T, ...]``), samples and steps
      (``*Squeeze`` layers are :data:`TIME_FOLDING`);
    * snntorch neurons: one step per call (steps only; the samples stay those
      of the model's input).

    Example
    -------
    >>> import torch, snntorch as snn
    >>> time_probes(torch.nn.Sequential(torch.nn.Linear(2, 2), snn.Leaky(0.5)))
    {'1': (('per_step', 0, None), False)}
    """
    out: Dict[str, Tuple[ProbeLayout, bool]] = {}
    layout = frameworks.time_layout(model)
    if layout is not None:
        out.update({name: (lay, True) for name, lay in layout["probes"].items()})
    for name, module in model.named_modules():
        if name in out:
            continue
        lib = neuron_library(module)
        if lib == "sinabs" and not is_time_folding(module):
            out[name] = (("batch_time", 0, 1), True)
        elif lib == "snntorch":
            out[name] = (("per_step", 0, None), False)
    return out


def neuron_op_cost(module: nn.Module, costs: Optional[Mapping[str, int]] = None) -> Optional[int]:
    """Operations of one membrane update of ``module`` (``None``: unknown type).

    ``costs`` (``{class name: ops}``) is looked up first, along the class' MRO,
    then :data:`NEURON_OP_COSTS` (SpikingJelly / norse: their row's terms in
    :data:`synopsloss.frameworks.NEURON_TYPES`, evaluated on the module's
    parameters; ``None`` for rows without a derived cost and for subclasses
    that override the update). sinabs layers add ``+2`` with a synaptic
    current (``tau_syn``: decay multiply, add), ``+1`` with ``norm_input``
    (input scaled by ``1 - alpha``; not for ``IAF``) and ``+1`` with
    ``min_v_mem`` (clamp).

    Example
    -------
    >>> import sinabs.layers as sl
    >>> neuron_op_cost(sl.IAF()), neuron_op_cost(sl.LIF(tau_mem=10.0)), neuron_op_cost(sl.ALIF(10.0, 10.0))
    (3, 5, 9)
    """
    names = [c.__name__ for c in type(module).__mro__]
    if costs:
        for n in names:
            if n in costs:
                return int(costs[n])
    lib = neuron_library(module)
    if lib in _FRAMEWORK_LIBRARIES:
        return frameworks.neuron_ops(module)
    table = NEURON_OP_COSTS.get(lib or "", {})
    entry = next((table[n] for n in names if n in table), None)
    if entry is None:
        return None
    if isinstance(entry, dict):
        return entry.get(getattr(module, "_reset_mechanism", "subtract"))
    extra = 0
    if lib == "sinabs":
        if getattr(module, "norm_input", False) and "IAF" not in names:
            extra += 1
        if getattr(module, "min_v_mem", None) is not None:
            extra += 1
        if getattr(module, "tau_syn", None) is not None or getattr(module, "alpha_syn", None) is not None:
            extra += 2
    return int(entry) + extra


def _default_out_shape(module: nn.Module, weight: Tensor, in_shape: Shape) -> Shape:
    with torch.no_grad():
        x = torch.zeros((1, *in_shape), dtype=weight.dtype, device=weight.device)
        try:
            return tuple(module(x).shape[1:])
        except RuntimeError as err:
            raise ValueError(f"connection_map: {type(module).__name__} cannot take an input sample of shape "
                             f"{in_shape} ({err}); give the shape of one sample the layer accepts") from None


def connection_map(
    module: nn.Module,
    in_sample_shape: Sequence[int],
    *,
    effective: bool = True,
    out_sample_shape: Optional[Sequence[int]] = None,
    rules: Optional[Mapping[type, Rule]] = None,
) -> Tensor:
    """The fan-out map of ``module`` for one input sample of shape ``in_sample_shape``.

    Parameters
    ----------
    module
        A layer with a registered rule (``Linear``, ``Conv1d/2d/3d``,
        ``ConvTranspose1d/2d/3d`` or a custom one).
    in_sample_shape
        Shape of one input sample, without the batch dimension, e.g. ``(C, H, W)``.
    effective
        Count only nonzero weights (``True``) or every tap (``False``).
    out_sample_shape
        The layer's output sample shape; computed by running the layer once on
        zeros if omitted.
    rules
        Extra rules looked up before the global registry.

    Returns
    -------
    Tensor
        float64 tensor of shape ``in_sample_shape`` (built as the counter builds its maps).

    Example
    -------
    >>> import torch
    >>> lin = torch.nn.Linear(3, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))
    >>> connection_map(lin, (3,))
    tensor([1., 0., 2.], dtype=torch.float64)
    """
    rule = find_rule(module, rules)
    if rule is not None and rule.fanout is None:
        raise TypeError(f"{type(module).__name__} is counted per call, it has no fan-out map")
    if rule is None:
        raise TypeError(f"no synapse rule for {type(module).__name__}; register one with synopsloss.register_rule")
    in_shape = tuple(int(s) for s in in_sample_shape)
    weight = maps.rule_weight(module, rule.weight)
    out_shape = tuple(out_sample_shape) if out_sample_shape is not None else _default_out_shape(module, weight, in_shape)
    w01 = (maps.weight_mask(weight).to(torch.float32) if effective
           else torch.ones(weight.shape, dtype=torch.float32, device=weight.device))
    fanout = rule.fanout
    flat = maps.build_map(lambda w: fanout(module, w, in_shape, out_shape), w01, in_shape, type(module).__name__)
    return flat.reshape(in_shape)
