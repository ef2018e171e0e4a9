"""Connection maps: hand-worked examples and a brute-force grid of random small layers.

Every expected map is computed independently of ``synopsloss.maps``: by hand,
or as the column sums of the Jacobian of the layer whose nonzero weights are
set to one (``tests.helpers.brute_force_map``).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import synopsloss as sl
from synopsloss.registry import connection_map

from helpers import brute_force_map, neurobench_synops
from helpers import frozen_copy as _frozen

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

MODES = ("zeros", "circular", "reflect", "replicate")
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --------------------------------------------------------------------------- hand-worked maps


def _conv1d(weights, **kwargs) -> nn.Conv1d:
    conv = nn.Conv1d(1, 1, kernel_size=len(weights), bias=False, **kwargs)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights, dtype=torch.float32).view(1, 1, -1))
    return conv


@pytest.mark.parametrize(
    "weights, kwargs, length, effective, expected",
    [
        # y[o] = sum_k w[k] x[o+k-1]: the edges reach 2 outputs, the inside 3
        ([0.5, -1.0, 2.0], dict(padding=1), 5, False, [2, 3, 3, 3, 2]),
        ([0.5, -1.0, 2.0], dict(padding=1), 5, True, [2, 3, 3, 3, 2]),
        # the middle tap is zero: x[i] reaches o = i+1 (k=0) and o = i-1 (k=2) only
        ([0.5, 0.0, 2.0], dict(padding=1), 5, True, [1, 2, 2, 2, 1]),
        ([0.5, 0.0, 2.0], dict(padding=1), 5, False, [2, 3, 3, 3, 2]),
        # no padding, stride 2 on 7: windows {0,1,2}, {2,3,4}, {4,5,6}
        ([1.0, 1.0, 1.0], dict(stride=2), 7, False, [1, 1, 2, 1, 2, 1, 1]),
        # dilation 2, no padding, length 6: windows {0,2,4}, {1,3,5}
        ([1.0, 1.0, 1.0], dict(dilation=2), 6, False, [1, 1, 1, 1, 1, 1]),
        # reflect: padded [x1 x0 x1 x2 x3 x4 x3]; padded uses 1,2,3,3,3,2,1
        ([1.0, 1.0, 1.0], dict(padding=1, padding_mode="reflect"), 5, False, [2, 4, 3, 4, 2]),
        # circular: padded [x4 x0 .. x4 x0]; replicate: padded [x0 x0 .. x4 x4]
        ([1.0, 1.0, 1.0], dict(padding=1, padding_mode="circular"), 5, False, [3, 3, 3, 3, 3]),
        ([1.0, 1.0, 1.0], dict(padding=1, padding_mode="replicate"), 5, False, [3, 3, 3, 3, 3]),
        # reflect with a zero last tap: taps k=0,1 only; padded [x1 x0 x1 x2 x3 x4 x3] used
        # 1,2,2,2,2,1,0 times: x0=2, x1=1+2, x2=2, x3=2+0, x4=1
        ([1.0, 1.0, 0.0], dict(padding=1, padding_mode="reflect"), 5, True, [2, 3, 2, 2, 1]),
        # 'same' with an even kernel pads 0 left, 1 right: padded [x0..x3 0], uses 1,2,2,2,(1)
        ([1.0, 1.0], dict(padding="same"), 4, False, [1, 2, 2, 2]),
        ([1.0, 1.0, 1.0], dict(padding="valid"), 4, False, [1, 2, 2, 1]),
    ],
)
def test_conv1d_maps_worked_by_hand(weights, kwargs, length, effective, expected):
    conv = _conv1d(weights, **kwargs)
    got = connection_map(conv, (1, length), effective=effective)
    assert torch.equal(got, _t([expected]))


def test_linear_map_is_the_column_count_of_nonzero_weights():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))
    assert torch.equal(connection_map(lin, (3,)), _t([1, 0, 2]))
    assert torch.equal(connection_map(lin, (3,), effective=False), _t([2, 2, 2]))


def test_linear_map_applies_to_the_last_dimension_only():
    lin = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 0, 1], [1, 0, 0, 1], [0, 0, 1, 1]]))
    # a [T, B, 4] sample shape of (4,) regardless of leading dims
    assert torch.equal(connection_map(lin, (4,)), _t([2, 0, 1, 3]))


def test_grouped_pointwise_conv_reaches_only_its_group():
    conv = nn.Conv2d(2, 6, kernel_size=1, groups=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.weight[3:, 0] = 0.0  # the second group's outputs lose their only tap
    assert torch.equal(connection_map(conv, (2, 2, 3), effective=False), torch.full((2, 2, 3), 3.0, dtype=torch.float64))
    expected = torch.stack([torch.full((2, 3), 3.0), torch.zeros(2, 3)]).double()
    assert torch.equal(connection_map(conv, (2, 2, 3)), expected)


def test_conv_transpose1d_maps_worked_by_hand():
    # stride 2, kernel 3 on 3 inputs: x[i] reaches outputs 2i+k (k = 0, 1, 2), all inside
    ct = nn.ConvTranspose1d(1, 1, kernel_size=3, stride=2, bias=False)
    assert torch.equal(connection_map(ct, (1, 3), effective=False), _t([[3, 3, 3]]))
    # padding 1 crops one output each side (length 5): x[0] loses output -1, x[2] loses 5
    ct = nn.ConvTranspose1d(1, 1, kernel_size=3, stride=2, padding=1, bias=False)
    assert torch.equal(connection_map(ct, (1, 3), effective=False), _t([[2, 3, 2]]))
    with torch.no_grad():
        ct.weight.copy_(torch.tensor([[[1.0, 0.0, 1.0]]]))
    # taps k=0, 2: x[0] -> {-1, 1} -> 1; x[1] -> {1, 3}; x[2] -> {3, 5} -> 1
    assert torch.equal(connection_map(ct, (1, 3)), _t([[1, 2, 1]]))


def test_conv_transpose_output_padding_beyond_the_stride_adds_no_synapse():
    # dilation 2 > stride 1 allows output_padding 1: output length (3-1) + 2*2 + 1 + 1 = 8;
    # x[i] reaches i, i+2, i+4 and the padded last output is reached by nobody
    ct = nn.ConvTranspose1d(1, 1, kernel_size=3, dilation=2, output_padding=1, bias=False)
    assert ct(torch.zeros(1, 1, 3)).shape[-1] == 8
    assert torch.equal(connection_map(ct, (1, 3), effective=False), _t([[3, 3, 3]]))
    assert torch.equal(connection_map(ct, (1, 3)), brute_force_map(ct, (1, 3)))


def test_neurobench_doc_example_effective_4_dense_9():
    """The 3x3 example of NeuroBench's SynapticOperations documentation."""
    lin = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.3, 0.0, -3.2], [0.0, 1.2, -5.1], [-1.1, 2.7, 0.0]]))
    net = nn.Sequential(lin)
    x = torch.tensor([[0.0, 1.3, -1.0]])
    with sl.SynOpsCounter(net) as counter:
        net(x)
        c = counter.snapshot().per_layer()["0"]
    # 1.3 is no spike: the effective operations are MACs
    assert c["dense"] == 9.0
    assert c["eff_macs"] == 4.0
    assert c["eff_acs"] == 0.0
    # every column has two nonzero weights: |0|*2 + |1.3|*2 + |-1|*2 (magnitudes: a -1 spike counts)
    assert c["synops"] == pytest.approx(4.6, abs=1e-6)
    ref = neurobench_synops(nn.Sequential(copy.deepcopy(lin)), x, snntorch=False)
    assert (ref["dense"], ref["eff_macs"], ref["eff_acs"]) == (9.0, 4.0, 0.0)
    # with a spike vector instead, the same pairs are ACs
    with sl.SynOpsCounter(net) as counter:
        net(torch.tensor([[0.0, 1.0, -1.0]]))
        c = counter.snapshot().per_layer()["0"]
    assert (c["dense"], c["eff_macs"], c["eff_acs"]) == (9.0, 0.0, 4.0)


# --------------------------------------------------------------------------- brute-force grid


@dataclass
class Case:
    """One random small layer and the input sample shape it is applied to."""

    id: str
    make: Callable[[], nn.Module]
    in_shape: Tuple[int, ...]
    out_shape: Optional[Tuple[int, ...]] = None  # set when forward needs output_size=


class _SizedConvTranspose:
    """Mixin: a transposed convolution that always calls ``forward`` with ``output_size=``."""

    out_size: Tuple[int, ...] = ()

    def forward(self, x, output_size=None):  # type: ignore[override]
        return super().forward(x, output_size=list(self.out_size))


def _sized(cls: type) -> type:
    return type(f"Sized{cls.__name__}", (_SizedConvTranspose, cls), {})


SIZED = {n: _sized(c) for n, c in CONV_T.items()}


def _zero_some(layer: nn.Module, rng: random.Random, frac: float) -> None:
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    with torch.no_grad():
        layer.weight.mul_((torch.rand(layer.weight.shape, generator=gen) >= frac).float())


def _fits(layer: nn.Module, in_shape: Tuple[int, ...], **kwargs) -> bool:
    try:
        with torch.no_grad():
            out = layer(torch.zeros(1, *in_shape), **kwargs)
    except (RuntimeError, ValueError):
        return False
    return 0 < out.numel() <= 96  # the Jacobian costs one backward pass per output


def _conv_case(rng: random.Random, i: int, mode: str) -> Case:
    while True:
        n = rng.choice((1, 2, 2, 3))
        groups = rng.choice((1, 1, 2))
        cin, cout = groups * rng.randint(1, 2), groups * rng.randint(1, 2)
        kmax = 2 if n == 3 else 3
        k = tuple(rng.randint(1, kmax) for _ in range(n))
        dilation = tuple(rng.randint(1, 2) for _ in range(n))
        stride = tuple(rng.randint(1, 3) for _ in range(n))
        sizes = {1: (4, 9), 2: (3, 7), 3: (3, 5)}[n]
        spatial = tuple(rng.randint(*sizes) for _ in range(n))
        kind = rng.choice(("int", "tuple", "same", "valid"))
        if kind == "int":
            padding = rng.randint(0, 2)
        elif kind == "tuple":
            padding = tuple(rng.randint(0, 2) for _ in range(n))
        elif kind == "same":
            padding, stride = "same", (1,) * n
        else:
            padding = "valid"
        bias = rng.random() < 0.5
        frac = rng.choice((0.0, 0.3, 0.6))
        seed = rng.randrange(2**31)

        def make(n=n, cin=cin, cout=cout, k=k, stride=stride, padding=padding, dilation=dilation,
                 groups=groups, mode=mode, bias=bias, frac=frac, seed=seed):
            torch.manual_seed(seed)
            layer = CONV[n](cin, cout, k, stride=stride, padding=padding, dilation=dilation,
                            groups=groups, padding_mode=mode, bias=bias)
            _zero_some(layer, random.Random(seed), frac)
            return layer

        in_shape = (cin, *spatial)
        if _fits(make(), in_shape):
            pid = padding if isinstance(padding, str) else f"p{padding}"
            return Case(f"conv{n}d-{mode}-{pid}-s{stride}-d{dilation}-g{groups}-k{k}-#{i}", make, in_shape)


def _conv_transpose_case(rng: random.Random, i: int, with_output_size: bool) -> Case:
    while True:
        n = rng.choice((1, 2, 2, 3))
        groups = rng.choice((1, 1, 2))
        cin, cout = groups * rng.randint(1, 2), groups * rng.randint(1, 2)
        k = tuple(rng.randint(1, 3) for _ in range(n))
        stride = tuple(rng.randint(1, 3) for _ in range(n))
        dilation = tuple(rng.randint(1, 2) for _ in range(n))
        padding = tuple(rng.randint(0, 2) for _ in range(n))
        out_pad = tuple(rng.randint(0, max(s, d) - 1) for s, d in zip(stride, dilation))
        spatial = tuple(rng.randint(2, 4 if n == 3 else 5) for _ in range(n))
        frac = rng.choice((0.0, 0.3, 0.6))
        seed = rng.randrange(2**31)
        out_size = None
        if with_output_size:
            # any size between the minimal output and minimal + stride - 1 is legal
            base = [(s - 1) * st - 2 * p + d * (kk - 1) + 1 for s, st, p, d, kk in zip(spatial, stride, padding, dilation, k)]
            out_size = tuple(b + rng.randint(0, st - 1) for b, st in zip(base, stride))
            out_pad = (0,) * n

        def make(n=n, cin=cin, cout=cout, k=k, stride=stride, padding=padding, out_pad=out_pad,
                 dilation=dilation, groups=groups, frac=frac, seed=seed, out_size=out_size):
            torch.manual_seed(seed)
            cls = SIZED[n] if out_size is not None else CONV_T[n]
            layer = cls(cin, cout, k, stride=stride, padding=padding, output_padding=out_pad,
                        groups=groups, dilation=dilation, bias=True)
            if out_size is not None:
                layer.out_size = out_size
            _zero_some(layer, random.Random(seed), frac)
            return layer

        in_shape = (cin, *spatial)
        if _fits(make(), in_shape):
            out_shape = None
            if out_size is not None:
                out_shape = (cout, *out_size)
            tag = f"osize{out_size}" if out_size else f"op{out_pad}"
            return Case(f"convT{n}d-s{stride}-p{padding}-{tag}-d{dilation}-g{groups}-k{k}-#{i}", make, in_shape, out_shape)


def _linear_case(rng: random.Random, i: int) -> Case:
    fin, fout = rng.randint(1, 7), rng.randint(1, 6)
    frac = rng.choice((0.0, 0.4, 0.8))
    seed = rng.randrange(2**31)

    def make():
        torch.manual_seed(seed)
        layer = nn.Linear(fin, fout)
        _zero_some(layer, random.Random(seed), frac)
        return layer

    return Case(f"linear-{fin}x{fout}-zero{frac}-#{i}", make, (fin,))


def _pruned_case(rng: random.Random, i: int, method: str) -> Case:
    base = _conv_case(rng, i, rng.choice(MODES)) if i % 3 else _linear_case(rng, i)
    seed = rng.randrange(2**31)

    def make():
        layer = base.make()
        torch.manual_seed(seed)
        if method == "l1_unstructured":
            prune.l1_unstructured(layer, "weight", amount=0.5)
        else:
            prune.random_structured(layer, "weight", amount=0.5, dim=0)
        return layer

    return Case(f"pruned-{method}-{base.id}", make, base.in_shape)


def _grid() -> List[Case]:
    rng = random.Random(20240611)
    cases = [_conv_case(rng, i, MODES[i % 4]) for i in range(32)]
    cases += [_conv_transpose_case(rng, i, with_output_size=False) for i in range(10)]
    cases += [_conv_transpose_case(rng, i, with_output_size=True) for i in range(5)]
    cases += [_linear_case(rng, i) for i in range(4)]
    cases += [_pruned_case(rng, i, m) for i in range(4) for m in ("l1_unstructured", "random_structured")]
    return cases


GRID = _grid()


@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
def test_maps_equal_jacobian_column_sums(case: Case):
    layer = case.make()
    ref_layer = _frozen(layer)
    for effective in (True, False):
        got = connection_map(layer, case.in_shape, effective=effective, out_sample_shape=case.out_shape)
        want = brute_force_map(ref_layer, case.in_shape, effective=effective)
        assert got.dtype == torch.float64
        assert torch.equal(got, want), f"effective={effective}\n got {got}\nwant {want}"


def test_grid_covers_every_layer_option():
    """The random grid exercises each option named by the issue at least once."""
    layers = [c.make() for c in GRID]
    convs = [m for m in layers if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed]
    trans = [m for m in layers if isinstance(m, nn.modules.conv._ConvTransposeNd)]
    for n, cls in CONV.items():
        mine = [m for m in convs if isinstance(m, cls)]
        assert mine, f"no Conv{n}d"
        assert {m.padding_mode for m in convs} == set(MODES)
    assert any(m.padding == "same" for m in convs) and any(m.padding == "valid" for m in convs)
    assert any(isinstance(m.padding, tuple) and len(set(m.padding)) > 1 for m in convs)
    assert any(max(m.stride) > 1 for m in convs) and any(max(m.dilation) > 1 for m in convs)
    assert any(m.groups > 1 for m in convs) and any(m.groups > 1 for m in trans)
    for mode in ("circular", "reflect", "replicate"):
        assert any(m.padding_mode == mode and not isinstance(m.padding, str) and max(m.padding) > 0 for m in convs)
    for cls in CONV_T.values():
        assert any(isinstance(m, cls) for m in trans)
    assert any(max(m.output_padding) > 0 for m in trans)
    assert any(isinstance(m, _SizedConvTranspose) for m in trans)
    assert any(max(m.padding) > 0 and max(m.stride) > 1 and max(m.dilation) > 1 for m in trans)
    assert any(hasattr(m, "weight_mask") and isinstance(m, nn.Linear) for m in layers)
    assert any(hasattr(m, "weight_mask") and isinstance(m, nn.modules.conv._ConvNd) for m in layers)
    assert any(not hasattr(m, "weight_mask") and bool((m.weight == 0).any()) for m in layers)


def test_pruned_weights_are_not_synapses():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
    dense_before = connection_map(conv, (2, 5, 5), effective=False)
    eff_before = connection_map(conv, (2, 5, 5))
    assert torch.equal(eff_before, dense_before)  # random weights: no exact zero
    prune.random_structured(conv, "weight", amount=1 / 3, dim=0)  # one output channel gone
    eff = connection_map(conv, (2, 5, 5))
    assert torch.equal(connection_map(conv, (2, 5, 5), effective=False), dense_before)
    assert torch.equal(eff * 3, dense_before * 2)
    assert torch.equal(eff, brute_force_map(_frozen(conv), (2, 5, 5)))


def test_conv_transpose_called_with_output_size_through_the_counter():
    torch.manual_seed(1)
    ct = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    x = (torch.rand(2, 2, 3, 3) < 0.5).float()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.ct = ct

        def forward(self, x):
            return self.ct(x, output_size=[6, 6])  # one more row and column than the default 5x5

    model = Net()
    with sl.SynOpsCounter(model) as counter:
        out = model(x)
        c = counter.snapshot().per_layer()["ct"]
    assert out.shape[-2:] == (6, 6)
    sized = SIZED[2](2, 3, 3, stride=2, padding=1)
    sized.load_state_dict(ct.state_dict())
    sized.out_size = (6, 6)
    dense = brute_force_map(sized, (2, 3, 3), effective=False)
    assert c["dense"] == float(dense.sum()) * 2 / 2
    assert c["eff_acs"] == float(((x != 0) * brute_force_map(sized, (2, 3, 3))).sum()) / 2
    # the default-size map differs: the extra row and column add taps
    assert float(brute_force_map(ct, (2, 3, 3), effective=False).sum()) < float(dense.sum())


def test_a_changed_zero_pattern_is_seen_whatever_stays_the_same() -> None:
    """The pattern check needs no mask of the weight's size, yet sees every change of the zeros."""
    from synopsloss.maps import MapCache

    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 4.0]])
    ent = MapCache().entry(("k",), w, lambda w01: w01.sum(0), (3,))
    assert ent.same_pattern(w * 5)  # other values, same zeros
    moved = torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 4.0]])  # as many nonzeros, one zero moved
    assert not ent.same_pattern(moved)
    assert not ent.same_pattern(torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 4.0]]))  # one more zero
    assert not ent.same_pattern(torch.tensor([[1.0, 1.0, 2.0], [0.0, 3.0, 4.0]]))  # one zero less
    dense = MapCache().entry(("d",), torch.ones(2, 3), lambda w01: w01.sum(0), (3,))
    assert dense.same_pattern(torch.full((2, 3), -2.0))
    assert not dense.same_pattern(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]))
    assert not dense.same_pattern(torch.tensor([[1.0, 1.0, 1.0], [1.0, float("nan"), 0.0]]))


def test_a_changed_zero_pattern_rebuilds_the_map_once_not_at_every_read(monkeypatch):
    import synopsloss.maps as maps

    builds = []
    build_map = maps.build_map
    monkeypatch.setattr(maps, "build_map", lambda *a, **k: builds.append(1) or build_map(*a, **k))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8, bias=False))
    counter = sl.SynOpsCounter(net, neurons=False)
    x = (torch.rand(4, 8) < 0.5).float()
    net(x)
    counter.synops()
    with torch.no_grad():
        net[0].weight[:, :3] = 0.0  # pruned: one rebuild
    before = len(builds)
    for grad in (True, True, False, False):
        counter.reset()
        with torch.set_grad_enabled(grad):
            net(x)
            got = counter.synops()
        assert float(got) == pytest.approx(float((x * (net[0].weight != 0).sum(0)).sum()) / 4)
    assert len(builds) == before + 1


def test_a_transposed_convolution_whose_padding_leaves_no_output_has_no_synapse():
    """ConvTranspose2d(k=4, padding=3) on 3x3 returns an empty output: torch runs it, the counter's map raised a
    torch error inside the model's forward. By hand: no input neuron reaches an output, every count is 0."""
    layer = nn.ConvTranspose2d(2, 2, kernel_size=4, padding=3)
    x = (torch.rand(2, 2, 3, 3, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    assert layer(x).numel() == 0
    with sl.SynOpsCounter(layer) as counter:
        layer(x)
        assert counter.snapshot().per_layer()[""] == {"dense": 0.0, "eff_macs": 0.0, "eff_acs": 0.0, "synops": 0.0}
