"""Property-based exactness: random layers and random spiking networks against brute force / NeuroBench.

Every example draws a random layer (or network), random zero-weight masks, a random input
shape and random input sparsity, and checks the counter's maps, dense / effective counts and
differentiable synops against independent references computed in the same test:

* ``tests/helpers.brute_force_map``: column sums of the Jacobian of the layer with its nonzero
  weights set to one (the definition of the connection map);
* NeuroBench's ``SynapticOperations`` run on an identical copy of the network.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, Tuple

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import synopsloss as sl
from helpers import brute_force_counts, brute_force_map, neurobench_synops

snn = pytest.importorskip("snntorch")
sinabs_layers = pytest.importorskip("sinabs.layers")
from snntorch import utils as snn_utils  # noqa: E402

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# ----------------------------------------------------------------------------- strategies


def _random_input(draw, shape: Tuple[int, ...]) -> torch.Tensor:
    """Spikes, signed spikes, spike counts or real values, with random sparsity."""
    kind = draw(st.sampled_from(["spikes", "signed", "counts", "real"]))
    density = draw(st.sampled_from([0.0, 0.2, 0.6, 1.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    keep = (torch.rand(shape, generator=g) < density).float()
    if kind == "spikes":
        return keep
    if kind == "signed":
        return keep * torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    if kind == "counts":
        return keep * torch.randint(1, 4, shape, generator=g).float()
    return keep * torch.randn(shape, generator=g)


def _mask_weights(draw, layer: nn.Module) -> None:
    """Zero a random subset of the weights (density 0, 0.3, 0.7 or 1)."""
    density = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    with torch.no_grad():
        mask = (torch.rand(layer.weight.shape, generator=g) < density).float()
        layer.weight.mul_(mask)


@st.composite
def linear_layers(draw) -> nn.Module:
    layer = nn.Linear(draw(st.integers(1, 12)), draw(st.integers(1, 8)), bias=draw(st.booleans()))
    _mask_weights(draw, layer)
    return layer


@st.composite
def conv_layers(draw) -> Tuple[nn.Module, Tuple[int, ...]]:
    """Conv1d/2d/3d with random kernel, stride, padding (int / tuple / 'same' / 'valid'),
    dilation, groups and padding_mode, sized so that the layer accepts its input."""
    n = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    maxk, maxs = {1: (4, 10), 2: (3, 6), 3: (2, 4)}[n]
    kernel = tuple(draw(st.integers(1, maxk)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(n))
    padding_kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    stride = (1,) * n if padding_kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(n))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    if padding_kind == "int":
        padding = draw(st.integers(0, 2))
        pads = (padding,) * n
    elif padding_kind == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(n))
        pads = padding
    elif padding_kind == "same":
        padding = "same"
        pads = tuple(d * (k - 1) - d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    else:
        padding = "valid"
        pads = (0,) * n
    spatial = []
    for k, d, p in zip(kernel, dilation, pads):
        low = max(1, d * (k - 1) + 1 - 2 * p, p + 1 if mode == "reflect" else 1, p if mode == "circular" else 1)
        assume(low <= maxs)
        spatial.append(draw(st.integers(low, maxs)))
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[n]
    layer = conv(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                 bias=draw(st.booleans()), padding_mode=mode)
    _mask_weights(draw, layer)
    return layer, (cin, *spatial)


@st.composite
def conv_transpose_layers(draw) -> Tuple[nn.Module, Tuple[int, ...]]:
    """ConvTranspose1d/2d/3d with random kernel, stride, padding, output_padding, dilation, groups."""
    n = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    maxk, maxs = {1: (4, 7), 2: (3, 5), 3: (2, 3)}[n]
    kernel = tuple(draw(st.integers(1, maxk)) for _ in range(n))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(n))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(n))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    spatial = tuple(draw(st.integers(1, maxs)) for _ in range(n))
    for i, s, p, k, d, op in zip(spatial, stride, padding, kernel, dilation, output_padding):
        assume((i - 1) * s - 2 * p + d * (k - 1) + op + 1 > 0)
    conv = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[n]
    layer = conv(cin, cout, kernel, stride=stride, padding=padding, output_padding=output_padding,
                 groups=groups, dilation=dilation, bias=draw(st.booleans()))
    _mask_weights(draw, layer)
    return layer, (cin, *spatial)


# ----------------------------------------------------------------------------- single layers


def _check_layer(layer: nn.Module, sample_shape: Tuple[int, ...], x: torch.Tensor, samples: int) -> None:
    """Maps, counts, synops and the synops gradient of one call equal brute force."""
    eff_ref = brute_force_map(layer, sample_shape, effective=True)
    dense_ref = brute_force_map(layer, sample_shape, effective=False)
    assert torch.equal(sl.connection_map(layer, sample_shape, effective=True), eff_ref)
    assert torch.equal(sl.connection_map(layer, sample_shape, effective=False), dense_ref)

    net = nn.Sequential(layer)
    x = x.clone().requires_grad_(True)
    with sl.SynOpsCounter(net, batch_dim=0) as counter:
        net(x)
        got = counter.snapshot().per_layer()["0"]
        synops = counter.synops()
    ref = brute_force_counts(layer, x.detach().reshape(-1, *sample_shape), samples)
    assert got["dense"] == ref["dense"]
    assert got["eff_acs"] == ref["eff_acs"]
    assert got["eff_macs"] == ref["eff_macs"]
    # real-valued float32 inputs are summed over rows in float32 before the float64 dot product
    assert got["synops"] == pytest.approx(ref["synops"], rel=1e-6, abs=1e-6)
    assert float(synops.detach()) == pytest.approx(ref["synops"], rel=1e-5, abs=1e-4)
    # d synops / d x_i = effective fan-out of neuron i / samples, for every row
    synops.backward()
    # (magnitudes: -fan-out where x < 0, +fan-out at and above 0)
    expected_grad = torch.where(x.detach() < 0, -1.0, 1.0) * (eff_ref / samples).to(torch.float32).expand_as(x)
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-6, atol=1e-6)


@settings(max_examples=40, **SETTINGS)
@given(layer=linear_layers(), data=st.data())
def test_linear_maps_counts_and_synops_equal_brute_force(layer: nn.Module, data) -> None:
    lead = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=2), label="leading dims")
    x = _random_input(data.draw, (*lead, layer.in_features))
    _check_layer(layer, (layer.in_features,), x, samples=lead[0])


@settings(max_examples=35, **SETTINGS)
@given(spec=conv_layers(), batch=st.integers(1, 3), data=st.data())
def test_conv_maps_counts_and_synops_equal_brute_force(spec, batch: int, data) -> None:
    layer, shape = spec
    _check_layer(layer, shape, _random_input(data.draw, (batch, *shape)), samples=batch)


@settings(max_examples=30, **SETTINGS)
@given(spec=conv_transpose_layers(), batch=st.integers(1, 3), data=st.data())
def test_conv_transpose_maps_counts_and_synops_equal_brute_force(spec, batch: int, data) -> None:
    layer, shape = spec
    _check_layer(layer, shape, _random_input(data.draw, (batch, *shape)), samples=batch)


@settings(max_examples=25, **SETTINGS)
@given(spec=conv_layers(), data=st.data())
def test_pruned_conv_weights_are_not_synapses(spec, data) -> None:
    """torch.nn.utils.prune masks count like zero weights (brute force on an unpruned equal layer)."""
    layer, shape = spec
    plain = copy.deepcopy(layer)
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    mask = (torch.rand(layer.weight.shape, generator=g) < 0.5).float()
    prune.custom_from_mask(layer, "weight", mask)
    with torch.no_grad():
        plain.weight.mul_(mask)
    x = _random_input(data.draw, (2, *shape))
    net = nn.Sequential(layer)
    with sl.SynOpsCounter(net) as counter:
        net(x)
        got = counter.snapshot().per_layer()["0"]
    ref = brute_force_counts(plain, x, 2)
    assert (got["dense"], got["eff_acs"], got["eff_macs"]) == (ref["dense"], ref["eff_acs"], ref["eff_macs"])
    assert got["synops"] == pytest.approx(ref["synops"], rel=1e-6, abs=1e-6)


# ----------------------------------------------------------------------------- random networks


class _Recorder:
    """Independent record of every parameter-layer call (input copies), for brute force."""

    def __init__(self, net: nn.Module) -> None:
        self.calls: List[Tuple[nn.Module, torch.Tensor]] = []
        self.handles = [
            m.register_forward_hook(self._hook)
            for m in net.modules()
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
        ]

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.calls.append((module, args[0].detach().clone()))

    def brute_force(self, samples: int, events: bool = True) -> Dict[str, float]:
        """Totals by brute force; integer inputs are events (else NeuroBench's binarised MACs)."""
        self.close()
        total = {"dense": 0.0, "eff_macs": 0.0, "eff_acs": 0.0, "synops": 0.0}
        maps: Dict[Tuple[int, tuple], Tuple[torch.Tensor, torch.Tensor]] = {}
        for module, x in self.calls:
            nd = 1 if isinstance(module, nn.Linear) else x.dim() - 1
            sample = tuple(x.shape[x.dim() - nd:])
            key = (id(module), sample)
            if key not in maps:
                maps[key] = (brute_force_map(module, sample, True), brute_force_map(module, sample, False))
            eff, dense = maps[key]
            xd = x.double().reshape(-1, *sample)
            spiking = bool(((xd == 0) | (xd.abs() == 1)).all())
            integer = events and not spiking and bool((xd == xd.round()).all())
            e = float(((xd != 0).double() * eff).sum())
            s = float((xd.abs() * eff).sum())
            total["dense"] += float(dense.sum()) * xd.shape[0]
            if integer:
                total["eff_acs"] += s
            else:
                total["eff_acs" if spiking else "eff_macs"] += e
            total["synops"] += s
        return {k: v / samples for k, v in total.items()}

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _scale_and_prune(net: nn.Module, draw) -> None:
    """Large weights (so neurons spike) and random exact zeros in every parameter layer."""
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            with torch.no_grad():
                m.weight.mul_(4.0)
            _mask_weights(draw, m)


NEURONS = ["leaky", "synaptic", "lapicque"]


def _snn_neuron(kind: str, last: bool = False) -> nn.Module:
    if last:
        return snn.Leaky(beta=0.8, init_hidden=True, output=True)
    if kind == "leaky":
        return snn.Leaky(beta=0.8, init_hidden=True)
    if kind == "synaptic":
        return snn.Synaptic(alpha=0.7, beta=0.8, init_hidden=True)
    return snn.Lapicque(beta=0.8, init_hidden=True)


@st.composite
def snntorch_sequential(draw) -> Tuple[Callable[[], nn.Sequential], Tuple[int, ...]]:
    """A random snntorch net (a builder, so that NeuroBench gets an identical fresh twin): an
    optional conv block (+ Max/AvgPool), then a stack of Linear + neurons."""
    spec: List[tuple] = []
    if draw(st.booleans()):
        c_in, size, c_out = draw(st.integers(1, 2)), draw(st.integers(4, 6)), draw(st.integers(1, 3))
        k, pad = draw(st.integers(1, 3)), draw(st.integers(0, 1))
        pool = draw(st.sampled_from(["none", "max", "avg"]))
        spec += [("conv", c_in, c_out, k, pad), ("neuron", draw(st.sampled_from(NEURONS)))]
        out = size + 2 * pad - k + 1
        if pool != "none":
            spec.append((pool,))
            out //= 2
        spec.append(("flatten",))
        width = c_out * out * out
        in_shape: Tuple[int, ...] = (c_in, size, size)
    else:
        width = draw(st.integers(1, 10))
        in_shape = (width,)
    depth = draw(st.integers(1, 3))
    for i in range(depth):
        nxt = draw(st.integers(1, 8))
        spec += [("linear", width, nxt, draw(st.booleans())), ("neuron", draw(st.sampled_from(NEURONS)), i == depth - 1)]
        width = nxt

    def build() -> nn.Sequential:
        make = {
            "conv": lambda c_in, c_out, k, pad: nn.Conv2d(c_in, c_out, k, padding=pad),
            "neuron": _snn_neuron,
            "max": lambda: nn.MaxPool2d(2),
            "avg": lambda: nn.AvgPool2d(2),
            "flatten": nn.Flatten,
            "linear": lambda a, b, bias: nn.Linear(a, b, bias=bias),
        }
        return nn.Sequential(*[make[s[0]](*s[1:]) for s in spec])

    return build, in_shape


class _SnnResidual(nn.Module):
    """x -> fc1 -> lif1 -> fc2 -> lif2; fc3(lif1 + lif2) -> lif3 (a spike-count sum: MACs)."""

    def __init__(self, n_in: int, hidden: int, n_out: int, beta: float) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(n_in, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, n_out)
        self.lif1 = snn.Leaky(beta=beta, init_hidden=True)
        self.lif2 = snn.Leaky(beta=beta, init_hidden=True)
        self.lif3 = snn.Leaky(beta=beta, init_hidden=True, output=True)

    def forward(self, x: torch.Tensor):
        h1 = self.lif1(self.fc1(x))
        h2 = self.lif2(self.fc2(h1))
        return self.lif3(self.fc3(h1 + h2))


def _twin(build, state: dict) -> nn.Module:
    net = build()
    net.load_state_dict(state)
    return net


def _run_snntorch(net: nn.Module, data: torch.Tensor) -> Tuple[Dict[str, float], float, Dict[str, float]]:
    """Counter totals, synops() and an independent brute force, for [B, T, ...] data stepped in time."""
    recorder = _Recorder(net)
    with sl.SynOpsCounter(net, integer_spikes="neurobench") as counter:
        snn_utils.reset(net)
        for t in range(data.shape[1]):
            net(data[:, t])
        totals, synops = counter.snapshot().total(), float(counter.synops().detach())
    return totals, synops, recorder.brute_force(data.shape[0], events=False)


def _assert_counts(got: Dict[str, float], ref: Dict[str, float], keys=("dense", "eff_macs", "eff_acs")) -> None:
    for k in keys:
        assert got[k] == pytest.approx(ref[k], rel=1e-12, abs=1e-9), k


@settings(max_examples=25, **SETTINGS)
@given(spec=snntorch_sequential(), batch=st.integers(1, 3), steps=st.integers(1, 4), data=st.data())
def test_random_snntorch_sequential_nets_equal_neurobench(spec, batch: int, steps: int, data) -> None:
    build, in_shape = spec
    net = build()
    _scale_and_prune(net, data.draw)
    x = _random_input(data.draw, (batch, steps, *in_shape))
    ref = neurobench_synops(_twin(build, net.state_dict()), x, snntorch=True)
    got, synops, brute = _run_snntorch(net, x)
    _assert_counts(got, ref)
    _assert_counts(got, brute)
    if not any(isinstance(m, nn.AvgPool2d) for m in net.modules()):
        # (after an AvgPool the synops count spike events, not the averaged values brute force sees)
        assert got["synops"] == pytest.approx(brute["synops"], rel=1e-6, abs=1e-6)
        assert synops == pytest.approx(brute["synops"], rel=1e-5, abs=1e-4)


@settings(max_examples=25, **SETTINGS)
@given(n_in=st.integers(1, 8), hidden=st.integers(1, 8), n_out=st.integers(1, 5), batch=st.integers(1, 3),
       steps=st.integers(1, 4), data=st.data())
def test_random_snntorch_residual_nets_equal_neurobench(n_in, hidden, n_out, batch, steps, data) -> None:
    build = lambda: _SnnResidual(n_in, hidden, n_out, beta=0.8)  # noqa: E731
    net = build()
    _scale_and_prune(net, data.draw)
    x = _random_input(data.draw, (batch, steps, n_in))
    ref = neurobench_synops(_twin(build, net.state_dict()), x, snntorch=True)
    got, synops, brute = _run_snntorch(net, x)
    _assert_counts(got, ref)
    _assert_counts(got, brute)
    assert got["synops"] == pytest.approx(brute["synops"], rel=1e-6, abs=1e-6)
    assert synops == pytest.approx(brute["synops"], rel=1e-5, abs=1e-4)


def _sinabs_neuron(kind: str, squeeze_batch: int = 0) -> nn.Module:
    if squeeze_batch:
        return sinabs_layers.IAFSqueeze(batch_size=squeeze_batch) if kind == "iaf" else \
            sinabs_layers.LIFSqueeze(tau_mem=5.0, batch_size=squeeze_batch)
    return sinabs_layers.IAF() if kind == "iaf" else sinabs_layers.LIF(tau_mem=5.0)


@settings(max_examples=25, **SETTINGS)
@given(widths=st.lists(st.integers(1, 8), min_size=2, max_size=4), kinds=st.lists(st.sampled_from(["iaf", "lif"]),
       min_size=3, max_size=3), batch=st.integers(1, 3), steps=st.integers(1, 4), data=st.data())
def test_random_sinabs_linear_nets_equal_neurobench(widths, kinds, batch, steps, data) -> None:
    """sinabs neurons take [B, T, F] directly; NeuroBench's TorchModel runs the net once."""

    def build() -> nn.Sequential:
        layers: List[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [nn.Linear(a, b), _sinabs_neuron(kinds[i])]
        return nn.Sequential(*layers)

    net = build()
    _scale_and_prune(net, data.draw)
    x = _random_input(data.draw, (batch, steps, widths[0]))
    ref = neurobench_synops(_twin(build, net.state_dict()), x, snntorch=False)
    recorder = _Recorder(net)
    with sl.SynOpsCounter(net, integer_spikes="neurobench") as counter:
        net(x)
        got, synops = counter.snapshot().total(), float(counter.synops().detach())
    brute = recorder.brute_force(batch, events=False)
    _assert_counts(got, ref)
    _assert_counts(got, brute)
    assert got["synops"] == pytest.approx(brute["synops"], rel=1e-6, abs=1e-6)
    assert synops == pytest.approx(brute["synops"], rel=1e-5, abs=1e-4)


class _SinabsResidualConv(nn.Module):
    """[B*T, C, H, W] -> conv1 -> IAFSqueeze -> conv2 -> IAFSqueeze; fc(flatten(s1 + s2)) -> IAFSqueeze."""

    def __init__(self, c: int, size: int, k: int, batch: int, mode: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, k, padding="same", padding_mode=mode)
        self.conv2 = nn.Conv2d(c, c, k, padding="same", padding_mode=mode, bias=False)
        self.fc = nn.Linear(c * size * size, 3)
        self.n1, self.n2, self.n3 = (sinabs_layers.IAFSqueeze(batch_size=batch) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.n1(self.conv1(x))
        s2 = self.n2(self.conv2(s1))
        return self.n3(self.fc((s1 + s2).flatten(1)))


@settings(max_examples=25, **SETTINGS)
@given(c=st.integers(1, 3), size=st.integers(2, 5), k=st.integers(1, 3), batch=st.integers(1, 3),
       steps=st.integers(1, 3), mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
       data=st.data())
def test_random_sinabs_residual_conv_nets_equal_brute_force(c, size, k, batch, steps, mode, data) -> None:
    """Time folded into the batch ([B*T, ...]); samples come from the *Squeeze layers' batch_size.
    NeuroBench would divide by B*T here, so the reference is brute force."""
    assume(mode != "reflect" or size > (k - 1) // 2 + (k - 1) % 2)
    net = _SinabsResidualConv(c, size, k, batch, mode)
    _scale_and_prune(net, data.draw)
    x = _random_input(data.draw, (batch * steps, c, size, size))
    recorder = _Recorder(net)
    with sl.SynOpsCounter(net) as counter:
        net(x)
        got, synops, samples = counter.snapshot().total(), float(counter.synops().detach()), counter.samples
    brute = recorder.brute_force(batch)
    assert samples == batch
    _assert_counts(got, brute)
    assert got["synops"] == pytest.approx(brute["synops"], rel=1e-6, abs=1e-6)
    assert synops == pytest.approx(brute["synops"], rel=1e-5, abs=1e-4)
