"""synopsloss.neurobench: our metric classes inside NeuroBench's own Benchmark, against its own metrics."""

from __future__ import annotations

import math

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

snn = pytest.importorskip("snntorch")
pytest.importorskip("neurobench")

from neurobench.benchmarks import Benchmark  # noqa: E402
from neurobench.metrics import workload as nb  # noqa: E402
from neurobench.models import SNNTorchModel, TorchModel  # noqa: E402

from helpers import brute_force_counts  # noqa: E402
import synopsloss as sl  # noqa: E402
from synopsloss import SynOpsWarning  # noqa: E402
from synopsloss.neurobench import NeuroBenchMetrics  # noqa: E402

ALL = ("SynapticOperations", "NeuronOperations", "MembraneUpdates", "ActivationSparsity")


def linear_snn() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), snn.Leaky(beta=0.8, init_hidden=True),
                         nn.Linear(8, 3), snn.Leaky(beta=0.8, init_hidden=True, output=True))


def conv_snn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), snn.Synaptic(alpha=0.7, beta=0.8, init_hidden=True),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12, 3),
                         snn.Leaky(beta=0.8, init_hidden=True, output=True, reset_mechanism="zero"))


def twins(build):
    """Two identical networks (deepcopy escapes snntorch's reset, so: build twice, copy the weights)."""
    torch.manual_seed(0)
    a = build()
    b = build()
    b.load_state_dict(a.state_dict())
    return a, b


def loader(shape, n=7, batch=3, scale=2.0) -> DataLoader:
    """[B, T, ...] data: half the samples spikes, half graded values (MACs and ACs both occur)."""
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(n, *shape, generator=g) < 0.5).float()
    x[: n // 2] *= scale
    return DataLoader(TensorDataset(x, torch.randint(0, 3, (n,), generator=g)), batch_size=batch)  # 3, 3, 1


def run(model, data, metrics) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Benchmark(model, data, [], [], [[], list(metrics)]).run(quiet=True)


def assert_same(ours: dict, ref: dict) -> None:
    assert set(ours) == set(ref)
    for key, value in ref.items():
        if isinstance(value, dict):
            assert set(ours[key]) == set(value)
            for k, v in value.items():
                assert ours[key][k] == pytest.approx(v, rel=1e-12), (key, k)
        else:
            assert ours[key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("build, shape", [(linear_snn, (5, 6)), (conv_snn, (4, 1, 4, 4))], ids=["linear", "conv"])
def test_benchmark_run_with_our_metrics_equals_neurobench_on_snntorch(build, shape):
    ref_net, net = twins(build)
    data = loader(shape)
    ref = run(SNNTorchModel(ref_net), data, [getattr(nb, name) for name in ALL])
    model = SNNTorchModel(net)
    with NeuroBenchMetrics(model) as metrics:
        ours = run(model, data, [getattr(metrics, name) for name in ALL])
    assert ref["SynapticOperations"]["Dense"] > 0 and ref["SynapticOperations"]["Effective_MACs"] > 0
    assert ref["SynapticOperations"]["Effective_ACs"] > 0 and 0 < ref["ActivationSparsity"] < 1
    assert_same(ours, ref)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_a_second_run_starts_from_zero_like_neurobench():
    ref_net, net = twins(linear_snn)
    data = loader((5, 6))
    model = SNNTorchModel(net)
    metrics = NeuroBenchMetrics(model)
    bench = Benchmark(model, data, [], [], [[], [metrics.SynapticOperations, metrics.MembraneUpdates]])
    first = bench.run(quiet=True)
    second = bench.run(quiet=True)
    ref = run(SNNTorchModel(ref_net), data, [nb.SynapticOperations, nb.MembraneUpdates])
    assert_same(first, ref)
    assert_same(second, ref)
    metrics.remove()


def test_plain_torch_model_equals_neurobench():
    def build():
        return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 4), nn.Sigmoid())

    ref_net, net = twins(build)
    g = torch.Generator().manual_seed(2)
    x = torch.relu(torch.randn(9, 5, generator=g))
    data = DataLoader(TensorDataset(x, torch.zeros(9)), batch_size=4)
    metrics_ = ("SynapticOperations", "ActivationSparsity")
    ref = run(TorchModel(ref_net), data, [getattr(nb, m) for m in metrics_])
    model = TorchModel(net)
    with NeuroBenchMetrics(model) as metrics:
        ours = run(model, data, [getattr(metrics, m) for m in metrics_])
    assert_same(ours, ref)


def test_pruned_layers_are_counted_where_neurobench_fails():
    torch.manual_seed(0)
    net = linear_snn()
    prune.l1_unstructured(net[0], "weight", amount=0.5)
    plain = linear_snn()  # the same effective weights, without pruning
    plain.load_state_dict({k.replace("_orig", ""): v for k, v in net.state_dict().items() if "mask" not in k})
    with torch.no_grad():
        plain[0].weight.copy_(net[0].weight)
    data = loader((5, 6))
    ref = run(SNNTorchModel(plain), data, [nb.SynapticOperations])["SynapticOperations"]
    # NeuroBench 2.3 cannot deep-copy a pruned layer: the first batch errors (0.0), and since the error
    # leaves that layer unhooked, later batches silently leave it out
    broken = run(SNNTorchModel(net), data, [nb.SynapticOperations])["SynapticOperations"]
    assert broken["Dense"] == 8 * 3 * 5 != ref["Dense"]
    model = SNNTorchModel(net)
    with NeuroBenchMetrics(model) as metrics:
        ours = run(model, data, [metrics.SynapticOperations])
        first = metrics.totals().per_layer()["0"]
    assert_same(ours, {"SynapticOperations": ref})
    # the pruned layer by brute force (Jacobian tap counts), one call per time step of each batch
    want = {"dense": 0.0, "eff_macs": 0.0, "eff_acs": 0.0}
    for x, _ in data:
        for t in range(x.shape[1]):
            for k, v in brute_force_counts(net[0], x[:, t], samples=len(data.dataset), events=False).items():
                if k in want:
                    want[k] += v
    assert want["eff_macs"] > 0 and want["eff_acs"] > 0
    for k, v in want.items():
        assert first[k] == pytest.approx(v, rel=1e-12)
    assert first["dense"] == 6 * 8 * 5  # taps of zeroed weights are in the dense count, not in the effective ones


def test_unknown_neuron_costs_give_nan_and_a_warning_not_zero():
    def build():
        return nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.8, init_hidden=True, output=True,
                                                         reset_mechanism="none"))

    net = build()
    model = SNNTorchModel(net)
    data = loader((3, 4), n=2, batch=2)
    with NeuroBenchMetrics(model) as metrics:
        metric = metrics.NeuronOperations()
        x = next(iter(data))
        preds = model(x[0])
        with pytest.warns(SynOpsWarning, match="unknown"):
            result = metric(model, preds, x)
    assert all(v != v for v in result.values())  # nan


def test_metrics_refuse_what_they_cannot_count():
    net = linear_snn()
    with pytest.raises(TypeError, match="NeuroBench model"):
        NeuroBenchMetrics("net")
    with pytest.raises(ValueError, match="batch_size"):
        NeuroBenchMetrics(net, batch_size=3)
    with NeuroBenchMetrics(net, neurons=False) as metrics:
        with pytest.raises(ValueError, match="neurons=True"):  # raised while NeuroBench builds its metric list
            Benchmark(SNNTorchModel(net), loader((5, 6)), [], [], [[], [metrics.MembraneUpdates]])
        other = SNNTorchModel(linear_snn())
        x = next(iter(loader((5, 6))))
        with pytest.raises(ValueError, match="another network"):
            metrics.SynapticOperations()(other, other(x[0]), x)


class _TimeLoop(nn.Module):
    """An snntorch net that loops over T itself ([B, T, 6]), as NeuroBench's TorchModel takes it."""

    def __init__(self) -> None:
        super().__init__()
        import snntorch as snn

        self.fc1, self.lif1 = nn.Linear(6, 8), snn.Leaky(beta=0.8, threshold=0.3, init_hidden=True)
        self.fc2, self.lif2 = nn.Linear(8, 3), snn.Leaky(beta=0.8, init_hidden=True)

    def forward(self, x):
        from snntorch import utils

        utils.reset(self)
        out = 0
        for t in range(x.shape[1]):
            out = out + self.lif2(self.fc2(self.lif1(self.fc1(x[:, t]))))
        return out


def test_activation_sparsity_of_an_snntorch_net_in_torch_model_reads_its_neurons():
    """TorchModel's activation list holds ReLU and Sigmoid only (NeuroBench reports 0.0 here): the sparsity is
    that of the Leaky outputs, as the membrane updates already count those neurons."""
    torch.manual_seed(0)
    net = _TimeLoop()
    x = (torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    data = DataLoader(TensorDataset(x, torch.zeros(4)), batch_size=4)
    outs = []
    hooks = [m.register_forward_hook(lambda m, a, o: outs.append(o.detach().clone())) for m in (net.lif1, net.lif2)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    total, zeros = sum(o.numel() for o in outs), sum(int((o == 0).sum()) for o in outs)
    model = TorchModel(net)
    with NeuroBenchMetrics(model) as m:
        ours = run(model, data, [m.ActivationSparsity])
    assert ours["ActivationSparsity"] == pytest.approx(zeros / total, rel=1e-12)


def test_activation_sparsity_with_an_activation_type_the_monitor_does_not_read_is_nan_and_named():
    """``model.add_activation_module(Heaviside)``: NeuroBench reads that module's outputs; synopsloss sees its
    calls, not its outputs, so its sparsity would leave the module out silently: nan, and the layer is named."""

    class Heaviside(nn.Module):
        def forward(self, x):
            return (x > 0).float()

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), Heaviside(), nn.Linear(5, 3), nn.ReLU())
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    data = DataLoader(TensorDataset(x, torch.zeros(4)), batch_size=4)
    model = TorchModel(net)
    model.add_activation_module(Heaviside)
    with NeuroBenchMetrics(model) as m, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ours = Benchmark(model, data, [], [], [[], [m.ActivationSparsity]]).run(quiet=True)
    assert math.isnan(ours["ActivationSparsity"])
    named = [str(w.message) for w in seen if issubclass(w.category, SynOpsWarning)]
    assert any("['1'] (Heaviside)" in msg for msg in named), named


def test_a_batch_with_nan_makes_every_metric_of_the_run_nan_and_named_never_zero():
    """One batch with NaN in a layer's input: its counts are undefined, so the run's metrics are nan with a
    warning naming the layer (the read raised inside NeuroBench, which recorded 0.0, and the next batch was merged
    into the failed one)."""
    import snntorch as snn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), snn.Leaky(beta=0.5, init_hidden=True, output=True))
    x = torch.rand(4, 2, 3, generator=torch.Generator().manual_seed(1))  # ([B, T, features]: SNNTorchModel)
    x[0, 0, 0] = float("nan")
    data = DataLoader(TensorDataset(x, torch.zeros(4)), batch_size=2)  # (the NaN in the first of two batches)
    model = SNNTorchModel(net)
    with NeuroBenchMetrics(model) as m, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ours = Benchmark(model, data, [], [], [[], [m.SynapticOperations, m.MembraneUpdates,
                                                     m.NeuronOperations, m.ActivationSparsity]]).run(quiet=True)
    flat = [v for r in ours.values() for v in (r.values() if isinstance(r, dict) else [r])]
    assert len(flat) == 7 and all(math.isnan(v) for v in flat), ours
    named = [str(w.message) for w in seen if issubclass(w.category, SynOpsWarning)]
    assert any("layer '0'" in msg and "SynapticOperations is nan" in msg for msg in named), named


def test_reset_with_drop_leaves_the_batch_out_of_the_totals():
    net = nn.Sequential(nn.Linear(3, 2, bias=False))
    counter = sl.SynOpsCounter(net, neurons=False)
    net(torch.tensor([[1.0, 0.0, 2.0]]))
    counter.reset()
    net(torch.tensor([[5.0, 5.0, 5.0]]))
    counter.reset(drop=True)
    assert counter.snapshot(accumulated=True).total()["synops"] == pytest.approx(3.0 * 2)  # the first batch only
