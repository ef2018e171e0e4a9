"""The activity regularisers users would pick instead of ``SynOpsLoss``: baselines for ``tradeoff.py``.

These are benchmark baselines, not library features. Each is written from its
published formula (no code copied) and works on what an :class:`ActivityRecorder`
collects during one batch (all time steps):

* :func:`l1_spike_rate` -- the plain L1 activity term: the mean firing rate of
  all hidden spiking neurons.
* :func:`hinge_squared_rate` -- lava-dl's ``SparsityEnforcer`` style: per
  neuron layer, the squared excess of its mean event rate over a maximum rate.
* :func:`fanout_weighted_spikes` -- Suetake et al. 2023's spiking synaptic
  penalty: each neuron's spikes times its number of outgoing synapses.

Sorbaro et al. 2020's iterative target is a library feature now:
``SynOpsLoss(counter, target=synopsloss.schedules.Iterative(factor=0.7, ...))``.

How the fan-out penalty relates to ``SynOpsLoss``: with ``M_i`` the number of
outgoing synapses (weight taps) of neuron ``i`` and ``s_i`` its spike count,
``sum_i s_i * M_i`` over the inputs of a synaptic layer *is* that layer's synops
as :class:`synopsloss.SynOpsCounter` counts them (the counter's effective map
is ``M``; here ``M`` is computed independently, by differentiating the layer
with its weights replaced by their nonzero indicator). So the penalty is a
*linear* term ``lambda * synops`` (normalised here by the dense count, to give
a rate), where ``SynOpsLoss`` is ``((synops - target) / target) ** 2`` around a
target the user states in synops. Both use the exact per-neuron fan-out
(borders of a padded convolution reach fewer outputs); a per-layer constant
fan-out (``out_channels * kernel size``) would over-count border neurons.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "ActivityRecorder",
    "l1_spike_rate",
    "hinge_squared_rate",
    "outgoing_synapses",
    "fanout_weighted_spikes",
]


def _magnitude(x: Tensor) -> Tensor:
    # |x| with gradient sign(x) away from 0 and +1 at 0 (a spike train is >= 0; keeps the surrogate's gradient)
    return torch.where(x < 0, -x, x)


class ActivityRecorder:
    """Records, for one batch, the spikes of the neuron layers and the inputs of chosen synaptic layers.

    Forward hooks on every module that ``is_neuron`` accepts (default: snntorch
    ``SpikingNeuron``; the spikes are the first output) and forward pre-hooks on
    the named synaptic layers (their first input). Each call (time step)
    appends one tensor, graph kept, so the regularisers are differentiable.
    Call :meth:`reset` before each batch and :meth:`remove` at the end (also a
    context manager); nothing is stored on the modules.

    Parameters
    ----------
    model
        The network.
    synaptic_layers
        Qualified names of the layers whose inputs the fan-out penalty weighs
        (the network-driven synaptic layers; the layer fed by the data is left
        out, as training cannot change its input).
    is_neuron
        Which modules are spiking neurons.

    Example
    -------
    >>> import torch, snntorch as snn
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), snn.Leaky(beta=0.5, init_hidden=True), torch.nn.Linear(4, 2))
    >>> with ActivityRecorder(net, synaptic_layers=["2"]) as rec:
    ...     _ = net(torch.ones(5, 3))
    ...     [tuple(s.shape) for s in rec.spikes["1"]], [tuple(x.shape) for x in rec.inputs["2"]]
    ([(5, 4)], [(5, 4)])
    """

    def __init__(self, model: nn.Module, synaptic_layers: Sequence[str] = (),
                 is_neuron: Optional[Callable[[nn.Module], bool]] = None) -> None:
        if is_neuron is None:
            import snntorch

            def is_neuron(m: nn.Module) -> bool:
                return isinstance(m, snntorch.SpikingNeuron)

        modules = dict(model.named_modules())
        unknown = [n for n in synaptic_layers if n not in modules]
        if unknown:
            raise ValueError(f"ActivityRecorder: no module named {unknown} in the model; "
                             f"its modules are {[n for n in modules if n]}")
        self.spikes: Dict[str, List[Tensor]] = {}
        self.inputs: Dict[str, List[Tensor]] = {}
        self.layers: Dict[str, nn.Module] = {n: modules[n] for n in synaptic_layers}
        self._handles = []
        for name, m in model.named_modules():
            if m is not model and is_neuron(m):
                self.spikes[name] = []
                self._handles.append(m.register_forward_hook(self._spike_hook(name)))
        for name in synaptic_layers:
            self.inputs[name] = []
            self._handles.append(modules[name].register_forward_pre_hook(self._input_hook(name)))
        if not self.spikes:
            raise ValueError("ActivityRecorder: the model holds no spiking neuron layer (is_neuron matched nothing)")

    def _spike_hook(self, name: str):
        def hook(module: nn.Module, args, output) -> None:
            self.spikes[name].append(output[0] if isinstance(output, (tuple, list)) else output)
        return hook

    def _input_hook(self, name: str):
        def hook(module: nn.Module, args) -> None:
            self.inputs[name].append(args[0])
        return hook

    def reset(self) -> None:
        """Forget the previous batch (call before each batch)."""
        for v in self.spikes.values():
            v.clear()
        for v in self.inputs.values():
            v.clear()

    def remove(self) -> None:
        """Remove every hook."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.reset()

    def __enter__(self) -> "ActivityRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _nonempty(spikes: Dict[str, List[Tensor]]) -> Dict[str, List[Tensor]]:
    out = {n: v for n, v in spikes.items() if v}
    if not out:
        raise RuntimeError("no spikes were recorded: run the model on the batch first (and reset() only before it)")
    return out


def l1_spike_rate(spikes: Dict[str, List[Tensor]]) -> Tensor:
    """The L1 spike-rate term: mean of ``|s|`` over every hidden neuron, time step and sample.

    ``R = sum_{l,t,b,i} |s_{l,t,b,i}| / sum_{l,t,b,i} 1``: the usual activity
    regulariser, e.g. snntorch's ``functional.reg.l1_rate_sparsity``
    (``Lambda * sum(spikes)``), here divided by the number of neuron-steps and
    samples so that it is a rate in [0, 1] and ``lambda`` does not depend on
    the network's size. It weighs every spike the same, whatever the neuron's
    fan-out. Used as ``lambda * R`` (the existing ``l1`` baseline of the
    trade-off benchmark and of ``synopsloss.cli.digits.train(activity_l1=...)``).

    Parameters
    ----------
    spikes
        ``{neuron layer: [spikes of each time step]}`` (:attr:`ActivityRecorder.spikes`).

    Example
    -------
    >>> import torch
    >>> l1_spike_rate({"a": [torch.tensor([[1., 0.]]), torch.tensor([[1., 1.]])], "b": [torch.tensor([[0., 0., 0., 0.]])]})
    tensor(0.3750)
    """
    spikes = _nonempty(spikes)
    total = sum(_magnitude(s).sum() for v in spikes.values() for s in v)
    count = sum(s.numel() for v in spikes.values() for s in v)
    return total / count


def hinge_squared_rate(spikes: Dict[str, List[Tensor]], max_rate: float) -> Tensor:
    """lava-dl ``SparsityEnforcer``-style term: ``sum_l relu(r_l - max_rate) ** 2``.

    ``r_l`` is the mean event rate of neuron layer ``l`` (mean of ``|s|`` over
    its neurons, time steps and samples). Only rates above ``max_rate`` cost;
    below it the term is zero. Source: lava-dl, ``lava.lib.dl.slayer``'s
    ``SparsityEnforcer(max_rate, lam)`` (Intel Labs, 2021-): for each tensor
    appended, ``mse_loss(relu(mean(|x|) - max_rate), 0)``, summed and scaled
    by ``lam``. Used as ``lam * term``.

    Example
    -------
    >>> import torch
    >>> s = {"a": [torch.tensor([[1., 0., 1., 1.]])], "b": [torch.tensor([[0., 0., 0., 1.]])]}
    >>> hinge_squared_rate(s, max_rate=0.5)   # layer a: (0.75 - 0.5)**2; layer b is below
    tensor(0.0625)
    """
    if not 0 <= max_rate:
        raise ValueError(f"max_rate must be >= 0, got {max_rate}")
    spikes = _nonempty(spikes)
    total: Optional[Tensor] = None
    for v in spikes.values():
        rate = sum(_magnitude(s).sum() for s in v) / sum(s.numel() for s in v)
        term = torch.relu(rate - max_rate) ** 2
        total = term if total is None else total + term
    assert total is not None
    return total


def outgoing_synapses(layer: nn.Module, sample_shape: Sequence[int]) -> Tensor:
    """Each input neuron's number of outgoing synapses (nonzero weight taps) in ``layer``: shape ``sample_shape``.

    Computed by brute force, independently of :mod:`synopsloss`: the layer is
    linear in its input, so with its weights replaced by their nonzero
    indicator and no bias, the gradient of the sum of its outputs with respect
    to input neuron ``i`` is the number of taps that read ``i`` (borders of a
    padded convolution have fewer; padding modes that copy edges count each
    copy, as the library does).

    Example
    -------
    >>> import torch
    >>> outgoing_synapses(torch.nn.Conv1d(1, 2, 3, padding=1), (1, 4))   # borders reach 2 of 3 taps x 2 channels
    tensor([[4., 6., 6., 4.]])
    """
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, Tensor):
        raise TypeError(f"outgoing_synapses needs a layer with a weight tensor, got {type(layer).__name__}")
    clone = copy.deepcopy(layer)
    for name, value in (("weight", (weight.detach() != 0).to(weight.dtype)),
                        ("bias", None if getattr(layer, "bias", None) is None else torch.zeros_like(layer.bias))):
        if hasattr(clone, name):
            delattr(clone, name)
        setattr(clone, name, value)
    x = torch.zeros((1, *sample_shape), dtype=weight.dtype, device=weight.device, requires_grad=True)
    with torch.enable_grad():
        out = clone.forward(x)   # forward itself: no hook (a recorder's or a counter's) sees this call
        (grad,) = torch.autograd.grad(out.sum(), x)
    return grad[0]


class _FanoutCache:
    def __init__(self) -> None:
        self.maps: Dict[Tuple[int, Tuple[int, ...], int], Tensor] = {}

    def get(self, layer: nn.Module, shape: Tuple[int, ...]) -> Tensor:
        # keyed on the weights' version counter too: a changed zero pattern gets a new map
        key = (id(layer), shape, layer.weight._version)
        m = self.maps.get(key)
        if m is None:
            m = self.maps[key] = outgoing_synapses(layer, shape)
        return m


def fanout_weighted_spikes(inputs: Dict[str, List[Tensor]], layers: Dict[str, nn.Module], *,
                           normalize: bool = True, cache: Optional[_FanoutCache] = None) -> Tensor:
    """Suetake et al. 2023's spiking synaptic penalty: spikes weighted by their outgoing synapse count.

    ``Omega = sum_l sum_t sum_i |x_{l,t,i}| * M_{l,i} / B``: for each synaptic
    layer ``l`` (its input ``x`` holds the spikes of the neurons before it), each
    neuron's spikes times its number of outgoing synapses ``M`` (see
    :func:`outgoing_synapses`), per sample. Source: K. Suetake, T. Ushimaru,
    R. Saiin, Y. Sawada, "Spiking Synaptic Penalty: Appropriate Penalty Term for
    Energy-Efficient Spiking Neural Networks", arXiv:2302.01500 (2023), the
    penalty with p = 1, for which it equals the synaptic-operation count behind
    their energy metric ``E = E_AC * E_x[Omega]``. ``Omega`` equals
    ``SynOpsCounter``'s synops of those layers (see the module docstring).

    With ``normalize=True`` (default) ``Omega`` is divided by its value when
    every neuron spikes at every step (``sum M`` per call, a constant of the
    architecture), giving a fan-out-weighted firing rate in [0, 1] whose
    ``lambda`` has the same scale as :func:`l1_spike_rate`'s.

    Example
    -------
    >>> import torch
    >>> fc = torch.nn.Linear(3, 2)    # every input neuron has 2 outgoing synapses
    >>> x = torch.tensor([[1., 0., 1.], [0., 0., 1.]])   # 3 spikes in a batch of 2
    >>> fanout_weighted_spikes({"fc": [x]}, {"fc": fc}, normalize=False)   # 3 * 2 / 2 samples
    tensor(3.)
    """
    cache = cache if cache is not None else _FanoutCache()
    total: Optional[Tensor] = None
    dense = 0.0
    batch: Optional[int] = None
    for name, xs in inputs.items():
        layer = layers[name]
        for x in xs:
            m = cache.get(layer, tuple(x.shape[1:]))
            term = (_magnitude(x) * m).sum()
            total = term if total is None else total + term
            dense += float(m.sum()) * x.shape[0]
            batch = x.shape[0] if batch is None else batch
    if total is None or batch is None:
        raise RuntimeError("no synaptic-layer input was recorded: run the model on the batch first")
    return total / dense if normalize else total / batch
