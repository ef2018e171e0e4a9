"""FSDP2 (``fully_shard``) on two CPU processes (gloo) against one process on the union of their data.

Each rank holds a shard of every weight between forwards (a ``Linear(6, 16)`` weight is ``(8, 6)`` per rank);
the counter must still build its fan-out maps from the *full* nonzero pattern, follow the pattern when a
pruning step zeroes weights of the shards, and leave the gradients FSDP averages equal to those of one process.
Four set-ups: ``fully_shard`` per layer and on the whole model, each with ``reshard_after_forward`` True and
False, with the counter attached after and before ``fully_shard``. Processes start as in ``tests/test_ddp.py``
(from a fresh interpreter, killed if they hang).
"""

from __future__ import annotations

import os
import sys
import warnings
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import synopsloss as sl
from helpers import free_port, run_fresh_call

fsdp = pytest.importorskip("torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard") or not dist.is_available():  # pragma: no cover - old torch
    pytest.skip("needs torch.distributed.fsdp.fully_shard (FSDP2)", allow_module_level=True)

START = os.environ.get("SYNOPSLOSS_TEST_START_METHOD", "fork" if sys.platform.startswith("linux") else "spawn")
WORLD = 2
BATCH = {0: 3, 1: 5}  # samples per rank: a mean of the ranks' per-sample means would be wrong
T = 3  # time steps: the model is called once per step
STEPS = 2
LR = 0.5
TARGET = 20.0  # synops per sample of the network-driven layers (SynOpsLoss, squared relative error)
THRESHOLD = 0.12  # the pruning step between the training steps zeroes every |w| below this
#: (fully_shard on, reshard_after_forward, counter attached before fully_shard)
SETUPS = [("layers", True, False), ("layers", False, True), ("model", True, True), ("model", False, False)]



def new_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    with torch.no_grad():
        net[0].weight[:, 1] = 0  # input 1 drives nothing
        net[2].weight[::2, 3:9] = 0  # uneven fan-outs: a shard's rows would give other ones
    return net


def rank_data(rank: int):
    g = torch.Generator().manual_seed(10 + rank)
    x = [(torch.rand(BATCH[rank], T, 6, generator=g) < 0.5).float() for _ in range(STEPS)]
    y = [torch.randint(0, 3, (BATCH[rank],), generator=g) for _ in range(STEPS)]
    return x, y


def step_loss(net: nn.Module, counter: sl.SynOpsCounter, loss_fn: sl.SynOpsLoss, x, y):
    counter.reset()
    out = sum(net(x[:, t]) for t in range(T))
    task = nn.functional.cross_entropy(out, y)
    reg = loss_fn()
    return task + reg, reg


def prune(weight: torch.Tensor) -> None:
    """Zero every weight below THRESHOLD in place (elementwise: on a DTensor each rank prunes its shard)."""
    with torch.no_grad():
        weight.mul_((weight.abs() >= THRESHOLD).to(weight.dtype))


def fsdp_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    try:
        xs, ys = rank_data(rank)
        for i, (where, reshard, counter_first) in enumerate(SETUPS):
            net = new_net()
            if counter_first:
                counter = sl.SynOpsCounter(net, neurons=False)
            if where == "layers":
                for layer in (net[0], net[2], net[4]):
                    fsdp.fully_shard(layer, reshard_after_forward=reshard)
            fsdp.fully_shard(net, reshard_after_forward=reshard)
            if not counter_first:
                counter = sl.SynOpsCounter(net, neurons=False)
            local_shape = tuple(net[2].weight.to_local().shape)
            loss_fn = sl.SynOpsLoss(counter, target=TARGET)
            opt = torch.optim.SGD(net.parameters(), lr=LR)
            steps = []
            for s in range(STEPS):
                loss, reg = step_loss(net, counter, loss_fn, xs[s], ys[s])
                snap = counter.snapshot()
                loss.backward()
                grads = {n: p.grad.full_tensor() for n, p in net.named_parameters()}
                steps.append({"loss": float(loss.detach()), "reg": float(reg.detach()), "reduced": snap.all_reduce(), "grads": grads})
                opt.step()
                opt.zero_grad()
                for layer in (net[0], net[2], net[4]):
                    prune(layer.weight)
            params = {n: p.full_tensor() for n, p in net.named_parameters()}
            torch.save({"steps": steps, "params": params, "local_shape": local_shape}, f"{out}/{i}-{rank}.pt")
            counter.remove()
    finally:
        dist.destroy_process_group()


def reference():
    """One process: each step, every rank's loss on its own data, the gradients averaged; and the union."""
    net = new_net()
    counter = sl.SynOpsCounter(net, neurons=False)
    loss_fn = sl.SynOpsLoss(counter, target=TARGET)
    data = [rank_data(r) for r in range(WORLD)]
    params = dict(net.named_parameters())
    steps = []
    for s in range(STEPS):
        grads = {n: torch.zeros_like(p) for n, p in params.items()}
        losses = []
        for x, y in data:
            loss, _ = step_loss(net, counter, loss_fn, x[s], y[s])
            losses.append(float(loss.detach()))
            for (n, g), d in zip(grads.items(), torch.autograd.grad(loss, list(params.values()))):
                g += d / WORLD
        with counter.paused(), torch.no_grad():  # the union of the ranks' samples, counted by a fresh counter
            union_counter = sl.SynOpsCounter(net, neurons=False)
            x_union = torch.cat([x[s] for x, _ in data])
            for t in range(T):
                net(x_union[:, t])
            union = union_counter.snapshot()
            union_counter.remove()
        steps.append({"losses": losses, "grads": grads, "union": union, "x0": x_union,
                      "fan0": (net[0].weight != 0).sum(0).double(), "fan2": (net[2].weight != 0).sum(0).double()})
        with torch.no_grad():
            for n, p in params.items():
                p -= LR * grads[n]
        for layer in (net[0], net[2], net[4]):
            prune(layer.weight)
    return steps, {n: p.detach().clone() for n, p in params.items()}


def launch(out: str) -> None:
    """Start the ranks (run through ``helpers.run_fresh_call``: a fresh interpreter, killed if it hangs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.start_processes(fsdp_worker, args=(WORLD, free_port(), out), nprocs=WORLD, start_method=START)


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    run_fresh_call("test_fsdp", "launch", str(out))
    return {i: [torch.load(out / f"{i}-{r}.pt", weights_only=False) for r in range(WORLD)]
            for i in range(len(SETUPS))}


@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=["-".join(map(str, s)) for s in SETUPS])
def test_fsdp_counts_equal_one_process_on_the_union(fsdp_runs, setup):
    want_steps, _ = reference()
    runs = fsdp_runs[setup]
    assert runs[0]["local_shape"] == (6, 16)  # each rank held half of layer 2's (12, 16) weight
    for s, want in enumerate(want_steps):
        union = want["union"]
        # by hand: the data-fed layer's synops are the input spikes times the full weight's column counts
        x0 = want["x0"]
        by_hand = float((x0.sum((0, 1)).double() * want["fan0"]).sum()) / x0.shape[0]
        assert union.per_layer()["0"]["synops"] == pytest.approx(by_hand, rel=1e-12)
        for run in runs:
            got = run["steps"][s]["reduced"]
            assert got.samples == union.samples == sum(BATCH.values())
            for name, counts in union.per_layer().items():
                assert got.per_layer()[name] == pytest.approx(counts, rel=1e-6), (s, name)
            # fan-outs of the full weight (a shard's rows would give other ones), after the pruning step too
            assert got.layers["2"].fanout_max == float(want["fan2"].max())
            assert got.layers["2"].fanout_mean == pytest.approx(float(want["fan2"].mean()), rel=1e-12)
    # the pruning step changed the pattern: the counts followed it
    assert want_steps[1]["fan2"].sum() < want_steps[0]["fan2"].sum()


@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=["-".join(map(str, s)) for s in SETUPS])
def test_fsdp_losses_and_averaged_gradients_equal_one_process(fsdp_runs, setup):
    want_steps, want_params = reference()
    runs = fsdp_runs[setup]
    for s, want in enumerate(want_steps):
        for rank, run in enumerate(runs):
            assert run["steps"][s]["loss"] == pytest.approx(want["losses"][rank], rel=1e-5)
            assert run["steps"][s]["reg"] > 0  # the synops term is part of the loss and its gradient
            for name, grad in want["grads"].items():
                assert torch.allclose(run["steps"][s]["grads"][name], grad, atol=1e-5), (s, rank, name)
    for run in runs:
        for name, p in want_params.items():
            assert torch.allclose(run["params"][name], p, atol=1e-5), name


def test_synops_term_alone_gives_the_gradient_by_hand():
    """Independent of FSDP: d(synops of layer 2)/d(layer 0 bias) from the formula sum |relu(W0 x + b0)| * fan2."""
    net = new_net()
    counter = sl.SynOpsCounter(net, neurons=False)
    x = rank_data(0)[0][0][:, 0]
    net(x)
    s2 = counter.synops(by_layer=True)["2"]
    (g,) = torch.autograd.grad(s2, [net[0].bias])
    b0 = net[0].bias.detach().clone().requires_grad_(True)
    h = torch.relu(nn.functional.linear(x, net[0].weight.detach(), b0))
    fan2 = (net[2].weight != 0).sum(0).to(h.dtype)
    (want,) = torch.autograd.grad((h.abs() * fan2).sum() / x.shape[0], [b0])
    assert torch.allclose(g, want, atol=1e-6)
