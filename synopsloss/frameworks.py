"""What the counter needs to know about SpikingJelly 2.0 and norse 1.1 layers.

Plain data and small pure functions, no hooks. Classes are named by dotted
path and looked up in ``sys.modules`` only (:func:`resolve`), so importing
synopsloss never imports spikingjelly or norse, and a row whose library the
program has not imported simply does not match.

Tables
------
:data:`NEURON_TYPES`
    Spiking neuron classes: operations per membrane update, whether the
    membrane leaks, where the membrane potential is read, what the output is
    and how a call lays out time.
:data:`SYNAPSE_TYPES`
    Classes that hold synapses (or hold layers that do) and how: which
    ``torch.nn`` rule applies through the MRO, which parameter multiplies
    which tensor, and the input layout.

Neuron operations
-----------------
One operation per elementwise multiply, add / subtract, comparison, reset and
nonlinearity (``exp``, an activation) of one neuron's update, written in the
form a chip computes it:

* products and quotients of per-layer constants are one constant
  (``dt * tau_mem_inv``, ``1 - 1/tau``, ``a0 / tau``, SJ's ``sigmoid(w)``);
* an additive constant that is zero for the layer's parameters costs nothing
  (SJ ``v_reset=0.0`` leaks towards 0; norse ``v_leak=0``);
* a reset, hard (``v = v_reset``) or soft (``v -= v_threshold``), is one op,
  and so is a spike-triggered increment (``w += b`` when a spike occurs);
* the accumulation of recurrent synaptic input is part of the synaptic ops
  (snntorch ``RLeaky`` costs what ``Leaky`` costs, as in NeuroBench).

This is the convention of :mod:`synopsloss.neurons` (snntorch ``Leaky`` 4 and
``Synaptic`` 6 from NeuroBench; sinabs ``IAF`` 3, ``LIF`` 4 + 1 with
``norm_input``), so equal dynamics cost equal ops across libraries: SJ
``IFNode`` = norse ``IAFCell`` = sinabs ``IAF`` = 3; SJ ``LIFNode``
(``decay_input=False``) = snntorch ``Leaky`` = 4; SJ ``LIFNode`` (default) =
norse ``LIFBoxCell`` = sinabs ``LIF`` = 5; SJ ``CUBALIFNode`` = snntorch
``Synaptic`` = 6. Each row lists its terms ``(ops, what, conditions)``; a term
counts when every ``(attribute, test)`` condition holds on the module (tests:
``true``, ``false``, ``nonzero``, ``zero``; ``None`` counts as zero / false).
A row without terms has an unknown cost: the counter must report unknown
neuron ops, never 0.

SpikingJelly has no per-neuron-type cost table: its
``op_counter.NeuronStateCounter`` counts the aten ops that touch state tensors
as PyTorch executes them (e.g. 3 adds, 1 multiply and 1 comparison per neuron
for ``IFNode``, because a hard reset is computed as
``spike * v_reset + (1 - spike) * v``); those are implementation counts, not a
model of a chip, and are not used here.

Time layout
-----------
SpikingJelly modules run one step per call (``step_mode='s'``: ``[B, ...]``)
or all steps at once (``step_mode='m'``, and every ``MultiStepModule``:
``[T, B, ...]``; ``TLast*`` containers: ``[B, ..., T]``). norse ``*Cell``
modules run one step (``[B, ...]``, returning ``(output, state)``); the
sequence modules (``LIF``, ``LIFRecurrent``, ``Lift``, ...) take
``[T, B, ...]``. :func:`time_layout` lists, from the modules alone, the
modules whose input reveals the number of samples (and of steps):
*probes*. It cannot know the layout of the model's own input (the SJ model
zoo accepts ``[B, C, H, W]`` and repeats it ``T`` times, or
``[T, B, C, H, W]``), so the samples must be read from a probe's input, not
from the model's input.

Example
-------
>>> import torch
>>> from synopsloss import frameworks
>>> frameworks.time_layout(torch.nn.Linear(2, 3)) is None  # no SpikingJelly / norse module
True
>>> row = frameworks.NEURON_TYPES["spikingjelly.activation_based.neuron.LIFNode"]
>>> frameworks.term_sum(row, {"decay_input": True, "v_reset": 0.0}), frameworks.term_sum(row, {"decay_input": False})
(5, 4)
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .maps import magnitude

__all__ = [
    "NeuronType",
    "SynapseType",
    "NEURON_TYPES",
    "SYNAPSE_TYPES",
    "resolve",
    "find_neuron",
    "find_synapse",
    "term_sum",
    "neuron_ops",
    "spikes",
    "membrane",
    "step_layout",
    "time_layout",
    "probe_sizes",
    "recurrent_inputs",
]

#: ``(attribute path, test)``: ``test`` is ``"true"``, ``"false"``, ``"nonzero"`` or ``"zero"``
Condition = Tuple[str, str]
#: ``(ops, what the ops do, conditions that must all hold)``
Term = Tuple[int, str, Tuple[Condition, ...]]


@dataclass(frozen=True)
class NeuronType:
    """One spiking-neuron class.

    Attributes
    ----------
    library
        ``"spikingjelly"`` or ``"norse"``.
    path
        Public dotted path of the class.
    terms
        The update's operations (see the module docstring), or ``None`` when
        the cost is unknown.
    leaky
        Whether the membrane changes without input (a decay or drift per step).
    membrane
        Where the membrane potential is: ``"attr:v"`` (a module attribute,
        SJ; after a multi-step call only the last step's value) or
        ``"state:v"`` / ``"state:lif.v"`` (a field of the state a norse module
        returns as ``output[1]``; sequence modules return the last step's
        state).
    output
        What the output holds: ``"binary"`` spikes in {0, 1}, ``"signed"``
        spikes in {-1, 0, 1}, ``"counts"`` (integer spike counts),
        ``"analog"`` (an activation of the membrane) or ``"membrane"``.
    layout
        ``"step_mode"`` (SJ: ``'s'`` -> ``[B, ...]`` per call, ``'m'`` ->
        ``[T, B, ...]``), ``"multi_step"`` (SJ ``MultiStepModule``: always
        ``[T, B, ...]``), ``"step"`` (norse cell: ``[B, ...]``, returns
        ``(output, state)``) or ``"time_first"`` (norse sequence module:
        ``[T, B, ...]``, returns ``(outputs, last state)``).
    note
        Anything else a counter must know.
    """

    library: str
    path: str
    terms: Optional[Tuple[Term, ...]]
    leaky: bool
    membrane: str
    output: str
    layout: str
    note: str = ""


@dataclass(frozen=True)
class SynapseType:
    """One class that holds synapses, or holds the layers that do.

    Attributes
    ----------
    library, path
        As in :class:`NeuronType`.
    rule_base
        Dotted path of the ``torch.nn`` class this one subclasses and whose
        synapse rule applies unchanged (found through the MRO), or ``None``.
    weights
        ``(parameter, the tensor it multiplies, the product)`` per synaptic
        parameter; empty for containers.
    layout
        The tensors a call receives and how rows (time x samples) arise.
    note
        What a rule must do differently, or why none is needed.
    """

    library: str
    path: str
    rule_base: Optional[str]
    weights: Tuple[Tuple[str, str, str], ...]
    layout: str
    note: str = ""


# --------------------------------------------------------------------------- neuron terms

_ADD_IN: Term = (1, "add the input: v + x", ())
_COMPARE: Term = (1, "compare with the threshold", ())
_RESET: Term = (1, "reset: hard v = v_reset or soft v -= v_threshold", ())
_IF: Tuple[Term, ...] = (_ADD_IN, _COMPARE, _RESET)
# h = v + (x - (v - v_reset)) / tau = (1 - 1/tau) v + x / tau + v_reset / tau   (decay_input=True)
# h = v - (v - v_reset) / tau + x   = (1 - 1/tau) v + x + v_reset / tau         (decay_input=False)
_LIF_CHARGE: Tuple[Term, ...] = (
    (1, "decay: (1 - 1/tau) * v", ()),
    (1, "scale the input: x / tau", (("decay_input", "true"),)),
    (1, "add the input", ()),
    (1, "add the leak target v_reset / tau", (("v_reset", "nonzero"),)),
)
_LIF: Tuple[Term, ...] = _LIF_CHARGE + (_COMPARE, _RESET)
_TERNARY_COMPARE: Term = (2, "compare with +v_threshold and with -v_threshold", ())
# QIF: h = v + (x + a0 (v - v_rest)(v - v_c)) / tau
_QIF_CHARGE: Tuple[Term, ...] = (
    (1, "v - v_rest", (("v_rest", "nonzero"),)),
    (1, "v - v_c", (("v_c", "nonzero"),)),
    (1, "product (v - v_rest) * (v - v_c)", ()),
    (1, "scale the product by a0 / tau", ()),
    (1, "scale the input: x / tau", ()),
    (2, "add the input and the quadratic term to v", ()),
)
# EIF: h = v + (x + v_rest - v + delta_T exp((v - theta_rh) / delta_T)) / tau
_EIF: Tuple[Term, ...] = (
    (1, "decay: (1 - 1/tau) * v", ()),
    (1, "scale the input: x / tau", ()),
    (1, "add v_rest / tau", (("v_rest", "nonzero"),)),
    (1, "v - theta_rh", (("theta_rh", "nonzero"),)),
    (1, "divide by delta_T", ()),
    (1, "exp", ()),
    (1, "scale the exponential by delta_T / tau", ()),
    (2, "add the three terms", ()),
    _COMPARE,
    _RESET,
)
# Izhikevich: h = v + (x + a0 (v - v_rest)(v - v_c) - w) / tau;  w' = w + (a (h - v_rest) - w) / tau_w + b * spike
_IZHIKEVICH: Tuple[Term, ...] = (
    (1, "v - v_rest", (("v_rest", "nonzero"),)),
    (1, "v - v_c", (("v_c", "nonzero"),)),
    (1, "product (v - v_rest) * (v - v_c)", ()),
    (1, "scale the product by a0 / tau", ()),
    (1, "scale the input: x / tau", ()),
    (1, "scale the recovery: w / tau", ()),
    (3, "add the input and quadratic terms to v, subtract the recovery term", ()),
    _COMPARE,
    _RESET,
    (1, "recovery decay: (1 - 1/tau_w) * w", ()),
    (1, "h - v_rest", (("a", "nonzero"), ("v_rest", "nonzero"))),
    (1, "scale by a / tau_w", (("a", "nonzero"),)),
    (1, "add the coupling to w", (("a", "nonzero"),)),
    (1, "spike-triggered w += b", (("b", "nonzero"),)),
)
# CUBA LIF: c' = c_decay c + x;  h = v_decay v + c'
_CUBA: Tuple[Term, ...] = (
    (1, "current decay: c_decay * c", ()),
    (1, "add the input to the current", ()),
    (1, "membrane decay: v_decay * v", ()),
    (1, "add the current to v", ()),
    _COMPARE,
    _RESET,
)
# resonate-and-fire: u' = alpha (u cos - v sin) + x;  v' = alpha (u sin + v cos)  (alpha cos, alpha sin folded)
_RAF: Tuple[Term, ...] = (
    (2, "u * alpha cos, v * alpha sin", ()),
    (1, "subtract", ()),
    (1, "add the input", ()),
    (2, "u * alpha sin, v * alpha cos", ()),
    (1, "add", ()),
    _COMPARE,
    _RESET,
)

# norse (all constants are dt * tau_inv products): i += x;  v' = v + a (v_leak - v + i);  i' = (1 - b) i
_NORSE_LI: Tuple[Term, ...] = (
    (1, "add the input to the current: i + x", ()),
    (1, "membrane decay: (1 - dt tau_mem_inv) * v", ()),
    (1, "scale the current: dt tau_mem_inv * i", ()),
    (1, "add the current to v", ()),
    (1, "add the leak dt tau_mem_inv * v_leak", (("p.v_leak", "nonzero"),)),
    (1, "current decay: (1 - dt tau_syn_inv) * i", ()),
)
_NORSE_LIF: Tuple[Term, ...] = _NORSE_LI + (_COMPARE, (1, "reset: v = v_reset", ()))
# box: v' = v + a (x + v_leak - v)  (no synaptic current)
_NORSE_LI_BOX: Tuple[Term, ...] = (
    (1, "membrane decay: (1 - dt tau_mem_inv) * v", ()),
    (1, "scale the input: dt tau_mem_inv * x", ()),
    (1, "add the input to v", ()),
    (1, "add the leak dt tau_mem_inv * v_leak", (("p.v_leak", "nonzero"),)),
)
_NORSE_EXP: Tuple[Term, ...] = (
    (1, "v - v_th", (("p.v_th", "nonzero"),)),
    (1, "divide by delta_T", ()),
    (1, "exp", ()),
    (1, "scale the exponential by dt tau_mem_inv delta_T", ()),
)
_NORSE_LIF_EX: Tuple[Term, ...] = (
    (1, "add the input to the current: i + x", ()),
    (1, "membrane decay: (1 - dt tau_mem_inv) * v", ()),
    (1, "scale the current: dt tau_mem_inv * i", ()),
    *_NORSE_EXP,
    (2, "add the current and the exponential to v", ()),
    (1, "add the leak dt tau_mem_inv * v_leak", (("p.v_leak", "nonzero"),)),
    (1, "current decay: (1 - dt tau_syn_inv) * i", ()),
    _COMPARE,
    (1, "reset: v = v_reset", ()),
)
_NORSE_ADEX: Tuple[Term, ...] = (
    (1, "add the input to the current: i + x", ()),
    (1, "membrane decay: (1 - dt tau_mem_inv) * v", ()),
    (1, "scale the current: dt tau_mem_inv * i", ()),
    (1, "scale the adaptation: dt tau_mem_inv * a", ()),
    *_NORSE_EXP,
    (3, "add the current and the exponential to v, subtract the adaptation", ()),
    (1, "add the leak dt tau_mem_inv * v_leak", (("p.v_leak", "nonzero"),)),
    (1, "current decay: (1 - dt tau_syn_inv) * i", ()),
    (1, "adaptation decay: (1 - dt tau_ada_inv) * a", ()),
    (1, "v - v_leak", (("p.v_leak", "nonzero"),)),
    (1, "scale by dt tau_ada_inv adaptation_current", ()),
    (1, "add the coupling to a", ()),
    _COMPARE,
    (1, "reset: v = v_reset", ()),
    (1, "spike-triggered a += adaptation_spike", ()),
)
# LSNN: adaptive threshold b' = b + c (v_th - b), spike when v > b, b += beta on a spike
_NORSE_LSNN: Tuple[Term, ...] = (
    (1, "membrane decay: (1 - dt tau_mem_inv) * v", ()),
    (1, "scale the current: dt tau_mem_inv * i", ()),
    (1, "add the current to v", ()),
    (1, "add the leak dt tau_mem_inv * v_leak", (("p.v_leak", "nonzero"),)),
    (1, "current decay: (1 - dt tau_syn_inv) * i", ()),
    (1, "threshold decay: (1 - dt tau_adapt_inv) * b", ()),
    (1, "add dt tau_adapt_inv * v_th", (("p.v_th", "nonzero"),)),
    (1, "v - b", ()),
    _COMPARE,
    (1, "reset: v = v_reset", ()),
    (1, "spike-triggered b += beta", ()),
    (1, "add the input to the current", ()),
)

_SJ = "spikingjelly.activation_based.neuron."
_NT = "norse.torch."
_SJ_NOTE_M = "always multi-step: input [T, B, ...]"


def _sj(name: str, terms: Optional[Tuple[Term, ...]], leaky: bool, output: str = "binary", layout: str = "step_mode",
        note: str = "", membrane: str = "attr:v") -> NeuronType:
    return NeuronType("spikingjelly", _SJ + name, terms, leaky, membrane, output, layout, note)


def _norse(name: str, terms: Optional[Tuple[Term, ...]], layout: str, output: str = "binary",
           membrane: str = "state:v", note: str = "", prefix: str = _NT) -> NeuronType:
    return NeuronType("norse", prefix + name, terms, True, membrane, output, layout, note)


_ROWS: List[NeuronType] = [
    # ---- SpikingJelly 2.0.0: BaseNode family (torch / Triton / CUDA back ends compute the same update)
    _sj("IFNode", _IF, False),
    _sj("SimpleIFNode", _IF, False, note="pure-PyTorch variant (no fused back end)"),
    _sj("HalfThresholdIFNode", _IF, False, note="soft reset; v starts at v_threshold / 2"),
    _sj("TernaryIFNode", (_ADD_IN, _TERNARY_COMPARE, _RESET), False, output="signed"),
    _sj("LIFNode", _LIF, True, note="Spikformer / Spike-driven Transformer / QKFormer neurons"),
    _sj("SimpleLIFNode", _LIF, True, note="pure-PyTorch variant (no fused back end)"),
    _sj("ParametricLIFNode", _LIF, True, note="1/tau = sigmoid(w) is one per-layer constant per step"),
    _sj("OTTTLIFNode", _LIF + ((2, "trace: (1 - 1/tau) * trace + spike (training only)", (("training", "true"),)),),
        True, note="training mode returns [spike, trace]; spikes are element 0; single-step only"),
    _sj("SLTTLIFNode", _LIF, True),
    _sj("TernaryLIFNode", _LIF_CHARGE + (_TERNARY_COMPARE, _RESET), True, output="signed"),
    _sj("KLIFNode", _LIF_CHARGE + (
        (1, "scale: k * h", ()),
        (1, "relu (compare with 0)", ()),
        _COMPARE,
        (1, "rescale h / k before the reset", (("scale_reset", "true"),)),
        _RESET,
    ), True, note="k is a learnable per-layer scalar"),
    _sj("LIAFNode", _LIF_CHARGE + (
        (1, "subtract v_threshold for the analog output", (("threshold_related", "true"),)),
        (1, "activation act(.) of the analog output", ()),
        _COMPARE,
        _RESET,
    ), True, output="analog", note="the output is act(v) (analog), not spikes: the next layer's ops are MACs"),
    _sj("QIFNode", _QIF_CHARGE + (_COMPARE, _RESET), True),
    _sj("EIFNode", _EIF, True),
    _sj("IzhikevichNode", _IZHIKEVICH, True, note="state v and recovery w"),
    _sj("CUBALIFNode", _CUBA, True, note="state v and current c"),
    _sj("RAFNode", _RAF, True, note="state v and u (resonate-and-fire)"),
    _sj("NonSpikingIFNode", (_ADD_IN,), False, output="membrane", layout="multi_step",
        note=_SJ_NOTE_M + "; the output is the (decoded) membrane"),
    _sj("NonSpikingLIFNode", ((1, "decay: (1 - 1/tau) * v", ()), (1, "scale the input: x / tau", ()), (1, "add", ())),
        True, output="membrane", layout="multi_step", note=_SJ_NOTE_M + "; the output is the (decoded) membrane"),
    # recognised as neurons, cost not derived (never counted as 0)
    _sj("ILIFNode", None, True, output="counts", note="multi-level spike counts (MultiLevelSpikeCount)"),
    _sj("ComplementaryLIFNode", None, True, note="two states v and m"),
    _sj("ActivationAwareIFNode", None, False),
    _sj("GatedLIFNode", None, True, layout="multi_step", note=_SJ_NOTE_M + "; learnable gates"),
    _sj("MPBNLIFNode", None, True, note="membrane-potential batch norm inside the neuron"),
    _sj("DSRIFNode", None, False, layout="multi_step", note=_SJ_NOTE_M),
    _sj("DSRLIFNode", None, True, layout="multi_step", note=_SJ_NOTE_M),
    _sj("PSN", None, False, layout="multi_step",
        note=_SJ_NOTE_M + "; its T x T weight mixes one neuron's time steps (not synapses between neurons)"),
    _sj("MaskedPSN", None, False, note="weights over the last k steps of one neuron (not synapses between neurons)"),
    _sj("SlidingPSN", None, False, note="weights over the last k steps of one neuron (not synapses between neurons)"),
    _sj("FewSpikeNode", None, False, output="analog"),
    _sj("HGNode", None, False, output="analog"),
    _sj("OutlierAwareThresholdNode", None, False, output="analog"),
    _sj("STBIFNode", None, False, output="signed"),
    _sj("FlexSN", None, True, layout="step_mode", note="user-defined dynamics", membrane="attr:states"),
    _sj("ILCIFNode", None, False, layout="multi_step", note=_SJ_NOTE_M),
    _sj("ILCLIFNode", None, True, layout="multi_step", note=_SJ_NOTE_M),
    _sj("ILCCUBALIFNode", None, True, layout="multi_step", note=_SJ_NOTE_M),
    _sj("NoisyCUBALIFNode", None, True, layout="multi_step", note=_SJ_NOTE_M),
    _sj("NoisyILCCUBALIFNode", None, True, layout="multi_step", note=_SJ_NOTE_M),
    _sj("NoisyNonSpikingIFNode", None, False, output="membrane", layout="multi_step", note=_SJ_NOTE_M),
    # base classes: user subclasses are neurons of unknown cost
    _sj("BaseNode", None, True, note="base class"),
    _sj("SimpleBaseNode", None, True, note="base class"),
    _sj("AdaptBaseNode", None, True, note="base class"),
    _sj("NonSpikingBaseNode", None, True, output="membrane", layout="multi_step", note="base class"),
    _sj("ILCBaseNode", None, True, layout="multi_step", note="base class"),
    _sj("NoisyBaseNode", None, True, layout="multi_step", note="base class"),
    _sj("NoisyNonSpikingBaseNode", None, True, output="membrane", layout="multi_step", note="base class"),
    # ---- norse 1.1: cells take [B, ...] and return (output, state); sequence modules take [T, B, ...]
    _norse("IAFCell", _IF, "step"),
    _norse("IAF", _IF, "time_first"),
    _norse("LIFCell", _NORSE_LIF, "step"),
    _norse("LIF", _NORSE_LIF, "time_first"),
    _norse("LIFRecurrentCell", _NORSE_LIF, "step", note="input_weights / recurrent_weights are synapses (SYNAPSE_TYPES)"),
    _norse("LIFRecurrent", _NORSE_LIF, "time_first", note="input_weights / recurrent_weights are synapses (SYNAPSE_TYPES)"),
    _norse("LICell", _NORSE_LI, "step", output="membrane"),
    _norse("LI", _NORSE_LI, "time_first", output="membrane"),
    _norse("LILinearCell", _NORSE_LI, "step", output="membrane", note="input_weights are synapses (SYNAPSE_TYPES)"),
    _norse("LIBoxCell", _NORSE_LI_BOX, "step", output="membrane"),
    _norse("LIFBoxCell", _NORSE_LI_BOX + (_COMPARE, (1, "reset: v = v_reset", ())), "step"),
    _norse("LIFExCell", _NORSE_LIF_EX, "step"),
    _norse("LIFEx", _NORSE_LIF_EX, "time_first"),
    _norse("LIFExRecurrentCell", _NORSE_LIF_EX, "step"),
    _norse("LIFExRecurrent", _NORSE_LIF_EX, "time_first"),
    _norse("LIFAdExCell", _NORSE_ADEX, "step"),
    _norse("LIFAdEx", _NORSE_ADEX, "time_first"),
    _norse("LIFAdExRecurrentCell", _NORSE_ADEX, "step"),
    _norse("LIFAdExRecurrent", _NORSE_ADEX, "time_first"),
    _norse("LSNNCell", _NORSE_LSNN, "step"),
    _norse("LSNN", _NORSE_LSNN, "time_first"),
    _norse("LSNNRecurrentCell", _NORSE_LSNN, "step"),
    _norse("LSNNRecurrent", _NORSE_LSNN, "time_first"),
    _norse("LIFRefracCell", None, "step", membrane="state:lif.v", note="refractory counter rho"),
    _norse("LIFRefracRecurrentCell", None, "step", membrane="state:lif.v", note="refractory counter rho"),
    _norse("LIFRefracRecurrent", None, "time_first", membrane="state:lif.v", note="refractory counter rho"),
    _norse("LIFAdExRefracCell", None, "step", membrane="state:lif_adex.v"),
    _norse("LIFAdExRefracRecurrentCell", None, "step", membrane="state:lif_adex.v"),
    _norse("LIFAdExRefracRecurrent", None, "time_first", membrane="state:lif_adex.v"),
    _norse("LIFMCRecurrentCell", None, "step", note="g_coupling couples compartments of one neuron"),
    _norse("LIFMCRefracRecurrentCell", None, "step", membrane="state:lif.v"),
    _norse("CobaLIFCell", None, "step"),
    _norse("IzhikevichCell", None, "step"),
    _norse("Izhikevich", None, "time_first"),
    _norse("IzhikevichRecurrentCell", None, "step"),
    _norse("IzhikevichRecurrent", None, "time_first"),
    _norse("SNNCell", None, "step", note="base class", prefix="norse.torch.module.snn."),
    _norse("SNNRecurrentCell", None, "step", note="base class", prefix="norse.torch.module.snn."),
    _norse("SNN", None, "time_first", note="base class", prefix="norse.torch.module.snn."),
    _norse("SNNRecurrent", None, "time_first", note="base class", prefix="norse.torch.module.snn."),
]

#: ``{dotted class path: NeuronType}``
NEURON_TYPES: Dict[str, NeuronType] = {r.path: r for r in _ROWS}

# --------------------------------------------------------------------------- synapse table

_SJL = "spikingjelly.activation_based.layer."
_STEP_LAYOUT = ("'s': [B, ...] per call; 'm': [T, B, ...], flattened to [T*B, ...] inside forward "
                "(the hook sees [T, B, ...]: leading dims are rows)")
_NORSE_REC = (
    ("input_weights", "the call's input x (args[0]; a sequence module: x[t] at step t)",
     "F.linear(x, input_weights): [.., input_size] -> [.., hidden_size]; fan-out of input j = nonzero entries of column j"),
    ("recurrent_weights", "the previous step's spikes z: state.z of args[1] (zeros when no state is passed); "
     "a sequence module: args[1].z at t = 0, then its own output at t - 1",
     "F.linear(z, recurrent_weights): [.., hidden] -> [.., hidden]; fan-out of neuron j = nonzero entries of column j "
     "(the diagonal is zeroed when autapses=False)"),
)
_NORSE_REC_NOTE = ("both products are added to the synaptic current i in the same step; "
                   "count each like nn.Linear (see recurrent_inputs)")


def _sjl(name: str, base: Optional[str], layout: str, note: str = "", weights=(("weight", "the input", "as the base class"),)
         ) -> SynapseType:
    return SynapseType("spikingjelly", _SJL + name, base, tuple(weights), layout, note)


_SYN_ROWS: List[SynapseType] = [
    _sjl("Linear", "torch.nn.Linear", "'s': [B, ..., F]; 'm': [T, B, ..., F] (nn.Linear broadcasts: rows T*B)",
         "nn.Linear's rule applies as is"),
    _sjl("Conv1d", "torch.nn.Conv1d", _STEP_LAYOUT, "nn.Conv1d's rule applies as is"),
    _sjl("Conv2d", "torch.nn.Conv2d", _STEP_LAYOUT, "nn.Conv2d's rule applies as is"),
    _sjl("Conv3d", "torch.nn.Conv3d", _STEP_LAYOUT, "nn.Conv3d's rule applies as is"),
    _sjl("ConvTranspose1d", "torch.nn.ConvTranspose1d", _STEP_LAYOUT, "nn.ConvTranspose1d's rule applies as is"),
    _sjl("ConvTranspose2d", "torch.nn.ConvTranspose2d", _STEP_LAYOUT, "nn.ConvTranspose2d's rule applies as is"),
    _sjl("ConvTranspose3d", "torch.nn.ConvTranspose3d", _STEP_LAYOUT, "nn.ConvTranspose3d's rule applies as is"),
    _sjl("WSConv2d", "torch.nn.Conv2d", _STEP_LAYOUT,
         "the weight used is get_weight() (standardised, times gain), not .weight: a map must be built from "
         "get_weight() (a zero in .weight is not a zero synapse)",
         weights=(("get_weight()", "the input", "F.conv2d(x, get_weight())"),)),
    _sjl("WSLinear", "torch.nn.Linear", "as Linear",
         "the weight used is get_weight() (standardised, times gain), not .weight",
         weights=(("get_weight()", "the input", "F.linear(x, get_weight())"),)),
    _sjl("DropConnectLinear", None, "as Linear",
         "no rule: in training a random mask drops weights (or samples them); in eval it computes "
         "F.linear(x, weight) -- the counter must name it as unsupported",
         weights=(("weight", "the input", "F.linear(x, weight * random mask)"),)),
    _sjl("SeqToANNContainer", None, "[T, B, ...]; children are called as modules on [T*B, ...]",
         "no synapses of its own; children are counted (rows T*B)", weights=()),
    _sjl("TLastSeqToANNContainer", None, "[B, ..., T]; children are called as modules on [T*B, ...]",
         "no synapses of its own; children are counted (rows T*B)", weights=()),
    _sjl("MultiStepContainer", None, "[T, B, ...]; children are called once per step on [B, ...]",
         "no synapses of its own; children are counted (T calls)", weights=()),
    _sjl("TLastMultiStepContainer", None, "[B, ..., T]; children are called once per step on [B, ...]",
         "no synapses of its own; children are counted (T calls)", weights=()),
    _sjl("StepModeContainer", None, "'s': children on [B, ...]; 'm' and stateful: once per step; "
         "'m' and not stateful: on [T*B, ...]", "no synapses of its own", weights=()),
    _sjl("LinearRecurrentContainer", None, "'s': [B, F]; 'm': [T, B, F]",
         "its child rc (nn.Linear, in_features + out_features inputs) is called as a module on "
         "cat(x, previous output): counted by nn.Linear's rule", weights=()),
    _sjl("ElementWiseRecurrentContainer", None, "'s': [B, ...]; 'm': [T, B, ...]",
         "elementwise recurrence, no weights", weights=()),
    SynapseType("norse", _NT + "LIFRecurrentCell", None, _NORSE_REC, "[B, input_size] per call", _NORSE_REC_NOTE),
    SynapseType("norse", _NT + "LIFRecurrent", None, _NORSE_REC, "[T, B, input_size]", _NORSE_REC_NOTE),
    SynapseType("norse", _NT + "LSNNRecurrentCell", None, _NORSE_REC, "[B, input_size] per call",
                _NORSE_REC_NOTE + "; LSNN adds them after the threshold (used at the next step): same count"),
    SynapseType("norse", _NT + "LSNNRecurrent", None, _NORSE_REC, "[T, B, input_size]", _NORSE_REC_NOTE),
    SynapseType("norse", _NT + "LIFAdExRecurrentCell", None, _NORSE_REC, "[B, input_size] per call", _NORSE_REC_NOTE),
    SynapseType("norse", _NT + "LIFAdExRecurrent", None, _NORSE_REC, "[T, B, input_size]", _NORSE_REC_NOTE),
    SynapseType("norse", _NT + "LIFExRecurrentCell", None, _NORSE_REC, "[B, input_size] per call", _NORSE_REC_NOTE),
    SynapseType("norse", _NT + "LIFExRecurrent", None, _NORSE_REC, "[T, B, input_size]", _NORSE_REC_NOTE),
    SynapseType("norse", _NT + "LIFRefracRecurrentCell", None, _NORSE_REC, "[B, input_size] per call",
                _NORSE_REC_NOTE + "; z is state.lif.z"),
    SynapseType("norse", _NT + "LIFRefracRecurrent", None, _NORSE_REC, "[T, B, input_size]",
                _NORSE_REC_NOTE + "; z is state.lif.z"),
    SynapseType("norse", _NT + "LIFAdExRefracRecurrentCell", None, _NORSE_REC, "[B, input_size] per call",
                _NORSE_REC_NOTE + "; z is state.lif_adex.z"),
    SynapseType("norse", _NT + "LIFAdExRefracRecurrent", None, _NORSE_REC, "[T, B, input_size]",
                _NORSE_REC_NOTE + "; z is state.lif_adex.z"),
    SynapseType("norse", _NT + "LILinearCell", None, (_NORSE_REC[0],), "[B, input_size] per call",
                "F.linear(x, input_weights) feeds the leaky integrator: count like nn.Linear"),
    SynapseType("norse", _NT + "LIFMCRecurrentCell", None, _NORSE_REC, "[B, input_size] per call",
                "as LIFRecurrentCell, plus g_coupling (hidden x hidden) coupling the compartments' "
                "membranes v: not spike-driven; no rule"),
    SynapseType("norse", _NT + "LConv2d", "torch.nn.Conv3d", (("weight", "the input", "F.conv3d"),),
                "[T, N, C, H, W], permuted to [N, C, H, W, T] and convolved with a (k, k, 1) kernel",
                "nn.Conv3d's rule must NOT be applied to the hook's input as is (it would read [N, C, H, W] as "
                "the sample): count it as a Conv2d with weight[..., 0] on rows T*N"),
    SynapseType("norse", _NT + "Lift", None, (), "[T, B, ...]; the lifted module is called once per step on [B, ...]",
                "no synapses of its own; the lifted module is counted (T calls)"),
    SynapseType("norse", _NT + "SequentialState", None, (), "whatever its children take",
                "a Sequential that threads states; children are counted"),
]

#: ``{dotted class path: SynapseType}``
SYNAPSE_TYPES: Dict[str, SynapseType] = {r.path: r for r in _SYN_ROWS}

# --------------------------------------------------------------------------- lookup


def resolve(path: str) -> Optional[type]:
    """The class at dotted ``path`` if its module is already imported, else ``None`` (never imports).

    Example
    -------
    >>> resolve("torch.nn.Linear") is torch.nn.Linear, resolve("no_such_package.Layer")
    (True, None)
    """
    if not isinstance(path, str):
        raise TypeError(f"resolve expects a dotted path string, got {type(path).__name__}")
    module_name, _, name = path.rpartition(".")
    module = sys.modules.get(module_name)
    obj = getattr(module, name, None) if module is not None else None
    return obj if isinstance(obj, type) else None


def _resolved(paths: Iterable[str]) -> Dict[type, str]:
    out: Dict[type, str] = {}
    for p in paths:
        cls = resolve(p)
        if cls is not None:
            out.setdefault(cls, p)
    return out


def _find(module: nn.Module, table: Mapping[str, Any]) -> Optional[Any]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    classes = _resolved(table)
    for cls in type(module).__mro__:
        path = classes.get(cls)
        if path is not None:
            return table[path]
    return None


def find_neuron(module: nn.Module) -> Optional[NeuronType]:
    """The :data:`NEURON_TYPES` row of ``module``'s nearest class in its MRO, or ``None``.

    Example
    -------
    >>> find_neuron(torch.nn.ReLU()) is None
    True
    """
    return _find(module, NEURON_TYPES)


def find_synapse(module: nn.Module) -> Optional[SynapseType]:
    """The :data:`SYNAPSE_TYPES` row of ``module``'s nearest class in its MRO, or ``None``.

    Example
    -------
    >>> find_synapse(torch.nn.Linear(2, 2)) is None  # plain torch layers are the counter's own rules
    True
    """
    return _find(module, SYNAPSE_TYPES)


def _attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if obj is None:
            return None
        obj = obj.get(part) if isinstance(obj, Mapping) else getattr(obj, part, None)
    return obj


def _holds(value: Any, test: str) -> bool:
    if test in ("true", "false"):
        flag = bool(value) if value is not None else False
        return flag if test == "true" else not flag
    if test in ("nonzero", "zero"):
        if value is None:
            nonzero = False
        elif isinstance(value, Tensor):
            nonzero = bool(torch.any(value.detach() != 0))  # read once when a counter attaches
        else:
            nonzero = float(value) != 0.0
        return nonzero if test == "nonzero" else not nonzero
    raise ValueError(f"unknown condition test {test!r}; use 'true', 'false', 'nonzero' or 'zero'")


def term_sum(row: NeuronType, values: Any) -> Optional[int]:
    """Operations per membrane update of ``row`` given attribute ``values`` (a module or a mapping).

    ``None`` when the row's cost is unknown.

    Example
    -------
    >>> term_sum(NEURON_TYPES["spikingjelly.activation_based.neuron.IFNode"], {})
    3
    """
    if not isinstance(row, NeuronType):
        raise TypeError(f"term_sum expects a NeuronType row, got {type(row).__name__}")
    if row.terms is None:
        return None
    return sum(n for n, _, conds in row.terms if all(_holds(_attr(values, a), t) for a, t in conds))


# methods that carry the update; a subclass that overrides one has dynamics the row does not describe
_UPDATE_METHODS = (
    "forward", "single_step_forward", "multi_step_forward", "single_step_functional_forward",
    "multi_step_functional_forward", "neuronal_charge", "neuronal_fire", "neuronal_reset",
)


def neuron_ops(module: nn.Module) -> Optional[int]:
    """Operations of one membrane update of ``module`` (``None``: not a known neuron, or cost unknown).

    A subclass that overrides an update method of its row's class (``forward``,
    ``single_step_functional_forward``, ``neuronal_charge``, ...) has dynamics
    the row does not describe: ``None``. Conditions are read from the module
    (``p.v_leak`` of a norse module is its parameter tuple's field).

    Example
    -------
    >>> import spikingjelly.activation_based.neuron as sjn
    >>> neuron_ops(sjn.IFNode()), neuron_ops(sjn.LIFNode()), neuron_ops(sjn.LIFNode(decay_input=False))
    (3, 5, 4)
    """
    row = find_neuron(module)
    if row is None or row.terms is None:
        return None
    cls = resolve(row.path)
    for name in _UPDATE_METHODS:
        if getattr(type(module), name, None) is not getattr(cls, name, None):
            return None
    return term_sum(row, module)


def spikes(row: NeuronType, output: Any) -> Tensor:
    """The spike (or output) tensor of one call's ``output`` for a module of type ``row``.

    norse returns ``(output, state)``; SJ returns a tensor (``OTTTLIFNode`` in
    training: ``[spike, trace]``).

    Example
    -------
    >>> spikes(NEURON_TYPES["norse.torch.LIFCell"], (torch.ones(2), None)).tolist()
    [1.0, 1.0]
    """
    out = output
    if row.library == "norse" or isinstance(output, (tuple, list)):
        if not isinstance(output, (tuple, list)) or not output:
            raise ValueError(f"{row.path} should return (output, state) or [output, ...], got {type(output).__name__}")
        out = output[0]
    if not isinstance(out, Tensor):
        raise ValueError(f"{row.path} returned {type(out).__name__} where a tensor of spikes was expected")
    return out


def membrane(row: NeuronType, module: nn.Module, output: Any) -> Optional[Tensor]:
    """The membrane potential after one call (SJ: the module's ``v``; norse: a field of ``output[1]``).

    ``None`` before SpikingJelly has materialised the state (a float) or when
    the state holds no such field. Sequence calls expose only the last step.

    Example
    -------
    >>> class S:  # a stand-in for a norse state tuple
    ...     v = torch.zeros(2)
    >>> membrane(NEURON_TYPES["norse.torch.LIFCell"], torch.nn.Identity(), (torch.ones(2), S())).tolist()
    [0.0, 0.0]
    """
    where, _, path = row.membrane.partition(":")
    if where == "attr":
        value = getattr(module, path, None)
    elif where == "state":
        state = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
        value = _attr(state, path)
    else:
        raise ValueError(f"bad membrane spec {row.membrane!r} in the row of {row.path}")
    return value if isinstance(value, Tensor) else None


# --------------------------------------------------------------------------- time layout

_SJ_BASE = "spikingjelly.activation_based.base."
_SJ_FOLDING = (_SJL + "SeqToANNContainer", _SJL + "TLastSeqToANNContainer")
_SJ_TLAST = (_SJL + "TLastSeqToANNContainer", _SJL + "TLastMultiStepContainer")
_NORSE_TIME_FIRST = ("norse.torch.module.snn.SNN", "norse.torch.module.snn.SNNRecurrent", _NT + "Lift", _NT + "LConv2d")
_NORSE_STEP = ("norse.torch.module.snn.SNNCell", "norse.torch.module.snn.SNNRecurrentCell", _NT + "LILinearCell")

#: ``(layout, batch dim, time dim)`` of the tensors a module is called with
Layout = Tuple[str, int, Optional[int]]


def _isinstance(module: nn.Module, paths: Iterable[str]) -> bool:
    classes = tuple(c for c in (resolve(p) for p in paths) if c is not None)
    return bool(classes) and isinstance(module, classes)


def step_layout(module: nn.Module) -> Optional[Layout]:
    """``(layout, batch_dim, time_dim)`` of the input of a SpikingJelly / norse ``module``, else ``None``.

    ``("per_step", 0, None)``: one step per call, ``[B, ...]``;
    ``("time_first", 1, 0)``: ``[T, B, ...]``; ``("time_last", 0, -1)``:
    ``[B, ..., T]`` (SJ ``TLast*`` containers).

    Example
    -------
    >>> step_layout(torch.nn.Conv2d(1, 1, 1)) is None
    True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"step_layout expects a torch.nn.Module, got {type(module).__name__}")
    cls = type(module)
    kind = _STEP_KINDS.get(cls, _UNSEEN)
    if kind is _UNSEEN:  # (once per class: the probes call this at every call)
        kind = _STEP_KINDS[cls] = _step_kind(module)
    if kind == "step_mode":  # (a SpikingJelly module's step mode may change at any time: read at each call)
        return ("time_first", 1, 0) if getattr(module, "step_mode", "s") == "m" else ("per_step", 0, None)
    return _KIND_LAYOUTS[kind]


#: ``{module class: its kind for step_layout}``, filled on first sight (a class's bases do not change)
_STEP_KINDS: "weakref.WeakKeyDictionary[type, Optional[str]]" = weakref.WeakKeyDictionary()
_UNSEEN = object()
_KIND_LAYOUTS: Dict[Optional[str], Optional[Layout]] = {
    "time_last": ("time_last", 0, -1), "time_first": ("time_first", 1, 0), "per_step": ("per_step", 0, None),
    None: None}


def _step_kind(module: nn.Module) -> Optional[str]:
    if _isinstance(module, (_SJ_BASE + "StepModule",)):
        if _isinstance(module, _SJ_TLAST):
            return "time_last"
        if _isinstance(module, (_SJ_BASE + "MultiStepModule",)):
            return "time_first"
        return "step_mode"
    if _isinstance(module, _NORSE_TIME_FIRST):
        return "time_first"
    if _isinstance(module, _NORSE_STEP):
        return "per_step"
    return None


def _folds_children(module: nn.Module) -> bool:
    """Whether ``module`` calls its children on ``[T*B, ...]`` (children's own layout is then wrong)."""
    if _isinstance(module, _SJ_FOLDING):
        return True
    return (_isinstance(module, (_SJL + "StepModeContainer",)) and getattr(module, "step_mode", "s") == "m"
            and not getattr(module, "stateful", True))


def may_fold_time(module: nn.Module) -> bool:
    """Whether ``module`` is a SpikingJelly container that may call its children on ``[T*B, ...]`` folded from its
    ``[T, B, ...]`` input (:func:`folds_time_first` says whether it does at a call)."""
    return _isinstance(module, (_SJL + "SeqToANNContainer", _SJL + "StepModeContainer")) and not _isinstance(
        module, (_SJL + "TLastSeqToANNContainer",))


def folds_time_first(module: nn.Module) -> bool:
    """Whether ``module`` now calls its children on ``[T*B, ...]``, time-major, folded from its ``[T, B, ...]``
    input: SpikingJelly's ``SeqToANNContainer``, or a stateless ``StepModeContainer`` in multi-step mode
    (``functional.seq_to_ann_forward``).

    Example
    -------
    >>> folds_time_first(torch.nn.Sequential())
    False
    """
    if not may_fold_time(module):
        return False
    if _isinstance(module, (_SJL + "StepModeContainer",)):
        return getattr(module, "step_mode", "s") == "m" and not getattr(module, "stateful", True)
    return True


def time_layout(model: nn.Module) -> Optional[Dict[str, Any]]:
    """Where the samples and time steps are, from ``model``'s SpikingJelly / norse modules alone.

    Returns ``None`` when the model has no such module. Otherwise a dict:

    ``probes``
        ``{qualified name: (layout, batch_dim, time_dim)}`` of every module
        whose input reveals the number of samples (modules called by a
        folding container -- SJ ``SeqToANNContainer`` -- on ``[T*B, ...]``
        are left out). Read ``B`` (and ``T``) from the input of any probe
        that ran, with :func:`probe_sizes`; all that ran must agree.
    ``time_first``
        Whether some probe receives all time steps in one call.
    ``batch_dim``
        The samples dim shared by the probes that receive time steps
        (``1`` for ``[T, B, ...]``), ``0`` when every probe runs one step per
        call, ``None`` when time-first and time-last probes are mixed.
    ``root_batch_dim``
        Always ``None``: the layout of the model's own input is not knowable
        from its modules (SJ's Spikformer takes ``[B, C, H, W]`` and repeats it
        ``T`` times, or ``[T, B, C, H, W]``; a model may permute ``[B, T, ...]``
        first). A counter that finds no probe run in a batch must raise and
        ask for ``batch_size=`` or ``batch_dim=``.
    ``libraries``
        The libraries seen.

    Example
    -------
    >>> time_layout(torch.nn.Sequential(torch.nn.Linear(2, 2))) is None
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"time_layout expects a torch.nn.Module, got {type(model).__name__}")
    probes: Dict[str, Layout] = {}
    libraries: List[str] = []
    folded: List[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(f + ".") for f in folded):
            continue
        lay = step_layout(module)
        if lay is not None:
            lib = type(module).__module__.split(".")[0]
            if lib not in libraries:
                libraries.append(lib)
            probes[name] = lay
        if _folds_children(module):
            folded.append(name)
    if not probes:
        return None
    timed = {lay[:2] for lay in probes.values() if lay[0] != "per_step"}
    batch_dims = {lay[1] for lay in probes.values() if lay[0] != "per_step"}
    if not timed:
        batch_dim: Optional[int] = 0
    else:
        batch_dim = next(iter(batch_dims)) if len(batch_dims) == 1 else None
    return dict(probes=probes, time_first=bool(timed), batch_dim=batch_dim, root_batch_dim=None,
                libraries=tuple(libraries))


def probe_sizes(layout: Layout, x: Tensor) -> Tuple[int, int]:
    """``(samples, time steps in this call)`` of a probe's input ``x`` with layout ``layout``.

    Per-step calls hold one time step each (the steps are the calls).

    Example
    -------
    >>> probe_sizes(("time_first", 1, 0), torch.zeros(4, 2, 3)), probe_sizes(("per_step", 0, None), torch.zeros(2, 3))
    ((2, 4), (2, 1))
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"probe_sizes expects a tensor input, got {type(x).__name__}")
    kind, batch_dim, time_dim = layout
    dims = [batch_dim] + ([time_dim if time_dim >= 0 else -time_dim - 1] if time_dim is not None else [])
    need = max(dims) + 1 + (1 if time_dim is not None and time_dim < 0 else 0)
    if x.dim() < need:
        raise ValueError(
            f"a {kind} input needs at least {need} dims (samples on dim {batch_dim}"
            f"{'' if time_dim is None else f', time steps on dim {time_dim}'}), got shape {tuple(x.shape)}; "
            "pass batch_size= to the counter"
        )
    return int(x.shape[batch_dim]), (int(x.shape[time_dim]) if time_dim is not None else 1)


def recurrent_inputs(module: nn.Module, args: tuple, output: Any) -> Dict[str, Tensor]:
    """The tensor each synaptic parameter of a norse recurrent module multiplied in one call.

    ``{"input_weights": x, "recurrent_weights": z_prev}`` where ``z_prev`` are the
    previous step's spikes, shaped like the call's output (a sequence module:
    the state's ``z`` at ``t = 0``, then its own output at ``t - 1``; no state
    passed: zeros). Counting ``z_prev`` against the fan-out of
    ``recurrent_weights`` (nonzero entries per column) gives the recurrent synops.

    Example
    -------
    >>> recurrent_inputs(torch.nn.Identity(), (torch.ones(1),), torch.ones(1))
    Traceback (most recent call last):
    ...
    TypeError: recurrent_inputs expects a norse recurrent module (one with input_weights and recurrent_weights), got Identity
    """
    if not (isinstance(module, nn.Module) and isinstance(getattr(module, "input_weights", None), Tensor)
            and isinstance(getattr(module, "recurrent_weights", None), Tensor)):
        raise TypeError("recurrent_inputs expects a norse recurrent module (one with input_weights and "
                        f"recurrent_weights), got {type(module).__name__}")
    x = args[0]
    out = output[0] if isinstance(output, (tuple, list)) else output
    state = args[1] if len(args) > 1 else None
    z0 = _attr(state, "z")
    if z0 is None:
        for nested in ("lif", "lif_adex"):
            z0 = _attr(state, nested + ".z")
            if z0 is not None:
                break
    sequence = _isinstance(module, ("norse.torch.module.snn.SNNRecurrent",))
    step_shape = out.shape[1:] if sequence else out.shape
    z0 = torch.zeros(step_shape, dtype=out.dtype, device=out.device) if z0 is None else z0.to(out.dtype).expand(step_shape)
    z_prev = torch.cat([z0.unsqueeze(0), out[:-1]]) if sequence else z0
    return {"input_weights": x, "recurrent_weights": z_prev}


# --------------------------------------------------------------------------- synapse rules

_MC_WARNED: set = set()


def norse_synapse_counts(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """Count synops for norse recurrent modules (``input_weights`` and ``recurrent_weights``) and ``LILinearCell``.

    One call's :class:`~synopsloss.maps.OpCounts`: the input ``x`` (``args[0]``)
    drives the columns of ``input_weights`` and the previous step's spikes
    (:func:`recurrent_inputs`) those of ``recurrent_weights``, each like an
    ``nn.Linear``: ``synops = sum(|x| * fan-out(input_weights)) + sum(|z_prev| *
    fan-out(recurrent_weights))`` (fan-out: nonzero entries of a column);
    effective: nonzero inputs x fan-out; *dense*: every entry of both weights at
    every step, since norse multiplies the recurrent weights at every step
    (with zeros when no state is passed). Each weight's ops are ACs when the
    values it multiplies are in {-1, 0, 1}: the recurrent weights' (spikes
    ``z``) are ACs also when the input ``x`` is analog (its ops then MACs). An input of integer spike counts
    sends ``|x|`` accumulate events per synapse under the counter's ``integer_spikes="events"``, as it
    does into an ``nn.Linear``. Cells hold ``B`` rows per call, sequence
    modules ``T*B`` (``samples`` = ``B``: the layout is known). ``LIFMC*``
    cells' compartment coupling ``g_coupling`` (membrane x membrane, not
    spike-driven) is not counted (a warning says so).

    Example
    -------
    >>> import norse.torch as norse
    >>> cell = norse.LIFRecurrentCell(3, 2)
    >>> with torch.no_grad():
    ...     _ = cell.input_weights.fill_(1.0)
    >>> c = norse_synapse_counts(cell, (torch.tensor([[1.0, 0.0, 1.0]]),), {}, cell(torch.tensor([[1.0, 0.0, 1.0]])))
    >>> float(c.synops), float(c.dense), c.rows, c.samples  # 2 inputs x 2 outputs; no previous spikes
    (4.0, 10.0, 1, 1)
    """
    from .maps import OpCounts

    w_in = getattr(module, "input_weights", None)
    if not isinstance(w_in, Tensor):
        raise TypeError(f"norse_synapse_counts expects a norse module with input_weights, got {type(module).__name__}")
    if not args or not isinstance(args[0], Tensor):
        raise ValueError(f"{type(module).__name__} must be called with its input tensor as first argument")
    x = args[0]
    pairs = [(x, w_in)]
    if isinstance(getattr(module, "recurrent_weights", None), Tensor):
        state = args[1] if len(args) > 1 else kwargs.get("state")
        z_prev = recurrent_inputs(module, (x, state), output)["recurrent_weights"]
        pairs.append((z_prev, module.recurrent_weights))
    if getattr(module, "g_coupling", None) is not None and id(module) not in _MC_WARNED:
        _MC_WARNED.add(id(module))
        import warnings

        warnings.warn(f"synopsloss does not count the compartment coupling g_coupling of {type(module).__name__} "
                      "(membrane x membrane products, not spike-driven synapses); only input_weights and "
                      "recurrent_weights are counted", stacklevel=2)
    sequence = x.dim() >= 3 and _isinstance(module, ("norse.torch.module.snn.SNNRecurrent",))
    dtype = torch.float64
    synops = torch.zeros((), dtype=dtype, device=x.device)
    with torch.no_grad():
        effective = torch.zeros((), dtype=dtype, device=x.device)
        dense = torch.zeros((), dtype=dtype, device=x.device)
        spiking = torch.ones((), dtype=torch.bool, device=x.device)
        ac_effective = torch.zeros((), dtype=dtype, device=x.device)  # the ops of the weights that spikes drive
        counts = torch.ones((), dtype=torch.bool, device=x.device)  # the other operands all hold integers
        count_acs = torch.zeros((), dtype=dtype, device=x.device)  # and their synops (their events)
    for t, w in pairs:
        flat = t.reshape(-1, w.shape[1]).to(dtype)
        fan = (w.detach() != 0).sum(0).to(dtype)
        pair_synops = (magnitude(flat) * fan).sum()
        synops = synops + pair_synops
        with torch.no_grad():
            pair = ((flat != 0).to(dtype) * fan).sum()
            pair_spiking = torch.all((flat == 0) | (flat.abs() == 1))
            effective = effective + pair
            ac_effective = ac_effective + torch.where(pair_spiking, pair, pair.new_zeros(()))
            counts = counts & (pair_spiking | torch.all(flat == flat.round()))
            count_acs = count_acs + torch.where(pair_spiking, pair.new_zeros(()), pair_synops.detach())
            dense = dense + float(flat.shape[0] * w.numel())
            spiking = spiking & pair_spiking
    rows = x.numel() // w_in.shape[1]
    samples = int(x.shape[1]) if sequence else (int(x.shape[0]) if x.dim() >= 2 else 1)
    with torch.no_grad():
        xd = x.detach().to(dtype)
        return OpCounts(
            synops=synops, dense=dense, effective=effective, spiking=spiking, rows=rows, samples=samples,
            in_shape=(int(w_in.shape[1]),), out_shape=(int(w_in.shape[0]),),
            input_sum=magnitude(xd).sum(), input_nonzero=(xd != 0).sum().to(dtype), in_neurons=int(w_in.shape[1]),
            ac_effective=None if len(pairs) == 1 else ac_effective, integer=counts,
            event_acs=None if len(pairs) == 1 else count_acs,
        )


def lconv2d_fanout(module: nn.Module, w01: Tensor, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...]) -> Tensor:
    """Count synops for norse ``LConv2d``: a 2-d convolution with ``weight[..., 0]`` at every step.

    norse permutes ``[T, N, C, H, W]`` to ``[N, C, H, W, T]`` and convolves with a
    ``(k, k, 1)`` kernel, so one sample of one step is ``[C, H, W]`` (rows ``T*N``).

    Example
    -------
    >>> import norse.torch as norse
    >>> conv = norse.LConv2d(1, 1, 3, padding=1)
    >>> lconv2d_fanout(conv, torch.ones_like(conv.weight), (1, 3, 3), (1, 3, 3))[0].tolist()
    [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]
    """
    from types import SimpleNamespace

    from .maps import conv_fanout

    if isinstance(module.padding, str):
        raise ValueError(f"{type(module).__name__} with padding={module.padding!r} is not supported; pass integers")
    conv2d = SimpleNamespace(kernel_size=tuple(module.kernel_size[:2]), stride=tuple(module.stride[:2]),
                             padding=tuple(module.padding[:2]), dilation=tuple(module.dilation[:2]),
                             groups=module.groups, padding_mode=module.padding_mode)
    return conv_fanout(conv2d, w01[..., 0], in_shape, out_shape)
