"""The CUDA path: counts equal the CPU counts, and no hook synchronises with the device.

Skipped where no CUDA device is available (the CI machine); run them on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import synopsloss as sl

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 4),
    )
    torch.nn.utils.prune.l1_unstructured(net[4], "weight", amount=0.5)
    return net


def _spikes(device: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return (torch.rand(6, 2, 8, 8, generator=gen) < 0.3).float().to(device)


@pytest.mark.parametrize("neurons", [True, False])
def test_cuda_counts_equal_cpu_counts(neurons):
    cpu_net, gpu_net = _net(), _net().cuda()
    cpu = sl.SynOpsCounter(cpu_net, neurons=neurons)
    gpu = sl.SynOpsCounter(gpu_net, neurons=neurons)
    for _ in range(3):  # time steps
        cpu_net(_spikes("cpu"))
        gpu_net(_spikes("cuda"))
    assert gpu.snapshot().per_layer() == pytest.approx(cpu.snapshot().per_layer(), rel=1e-12)
    assert float(gpu.synops()) == pytest.approx(float(cpu.synops()), rel=1e-6)


def test_a_counted_training_step_never_synchronises_in_the_hooks():
    net = _net().cuda()
    counter = sl.SynOpsCounter(net, neurons=False, check_finite=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = _spikes("cuda")
    for step in range(3):
        counter.reset()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = net(x)
            for _ in range(2):
                out = out + net(x)
            loss = out.square().mean() + counter.synops()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        loss.backward()
        opt.step()
        opt.zero_grad()
    # the hooks counted every step without a host-device synchronisation
    assert counter.snapshot().per_layer()["0"]["eff_acs"] > 0


def test_a_counted_step_with_the_loss_and_optimizer_never_synchronises():
    """Forward, SynOpsLoss, backward and SGD step under set_sync_debug_mode('error') (benchmarks/launches.py)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import launches
    finally:
        sys.path.pop(0)
    launches.sync_free_step("cuda")


@pytest.mark.parametrize("model", ["mlp", "snn"])
def test_cuda_launches_per_counted_call_are_within_the_cpu_bounds(model):
    """The aten calls per counted call on the GPU (each one a kernel launch at most) stay within the CPU bounds."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import launches
    finally:
        sys.path.pop(0)
    few, many = (launches.measure(model, "cuda", steps=s) for s in (4, 8))
    assert few["ops_per_counted_call"] <= launches.FORWARD_BOUND[model]
    growth = (many["read_ops"] - few["read_ops"]) / (many["calls"] - few["calls"])
    assert growth <= launches.READ_GROWTH_BOUND[model]
