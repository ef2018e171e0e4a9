"""Hugging Face Accelerate: a plain training loop with SynOpsLoss on two CPU processes (its ``notebook_launcher``).

Each rank trains on its own data through ``accelerator.prepare``-d model and optimizer (DDP over gloo) and
logs ``counter.snapshot().all_reduce()``: the logged synops are per sample over both ranks' samples, the
parameters equal one process that averages the two ranks' gradients.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import synopsloss as sl
from helpers import free_port, run_fresh_call

accelerate = pytest.importorskip("accelerate")  # needs safetensors, huggingface_hub, psutil

WORLD = 2
BATCH = {0: 3, 1: 5}
T = 3
STEPS = 2
LR = 0.5
FRACTION = 0.5



def new_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        net[2].weight[:, ::3] = 0
    return net


def rank_data(rank: int):
    g = torch.Generator().manual_seed(20 + rank)
    return [((torch.rand(BATCH[rank], T, 6, generator=g) < 0.5).float(), torch.randint(0, 3, (BATCH[rank],), generator=g))
            for _ in range(STEPS)]


def train_step(model, counter, loss_fn, x, y):
    counter.reset()
    out = sum(model(x[:, t]) for t in range(T))
    return nn.functional.cross_entropy(out, y) + loss_fn()


def train(out_dir: str) -> None:
    """The recipe of docs/scaling.md: run by ``notebook_launcher`` on every process."""
    from accelerate import Accelerator

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    net = new_net()
    counter = sl.SynOpsCounter(net, neurons=False)  # on the model itself, before prepare() wraps it
    loss_fn = sl.SynOpsLoss(counter, fraction=FRACTION)
    model, opt = accelerator.prepare(net, torch.optim.SGD(net.parameters(), lr=LR))
    logs = []
    for x, y in rank_data(accelerator.process_index):
        loss = train_step(model, counter, loss_fn, x, y)
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad()
        logs.append(counter.snapshot().all_reduce().total()["synops"])  # every rank: the union's per-sample synops
    state = {"logs": logs, "params": {n: p.detach().clone() for n, p in net.named_parameters()},
             "rank": accelerator.process_index, "world": accelerator.num_processes}
    torch.save(state, f"{out_dir}/{accelerator.process_index}.pt")


def launch(out: str) -> None:
    """``notebook_launcher`` forks the ranks: run through ``helpers.run_fresh_call`` (a fresh interpreter,
    killed if it hangs), never from the test process."""
    from accelerate import notebook_launcher

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notebook_launcher(train, args=(out,), num_processes=WORLD, use_port=str(free_port()))


@pytest.fixture(scope="module")
def accelerate_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerate")
    run_fresh_call("test_accelerate", "launch", str(out))
    return [torch.load(out / f"{r}.pt", weights_only=False) for r in range(WORLD)]


def reference():
    """One process: the union's per-sample synops each step, and each rank's loss on its own data with the
    gradients averaged over the ranks, as DDP does. ``fraction=`` calibrates on the first batch of every rank:
    its initial synops are the network-driven synops per sample of the union of the ranks' first batches, so
    each rank's loss here has that fraction of them as its target."""
    net = new_net()
    params = list(net.parameters())
    data = [rank_data(r) for r in range(WORLD)]
    union = sl.SynOpsCounter(net, neurons=False)
    with torch.no_grad():
        xu = torch.cat([data[r][0][0] for r in range(WORLD)])
        for t in range(T):
            net(xu[:, t])
    initial = union.synops(by_layer=True)["2"].item()  # layer "0" reads the data: not driven
    union.remove()
    counters = [sl.SynOpsCounter(net, neurons=False) for _ in range(WORLD)]  # one per rank
    losses = [sl.SynOpsLoss(c, target=FRACTION * initial) for c in counters]
    union_logs = []
    for s in range(STEPS):
        grads = [torch.zeros_like(p) for p in params]
        for r in range(WORLD):
            x, y = data[r][s]
            others = [c for i, c in enumerate(counters) if i != r]
            with _paused(others):
                loss = train_step(net, counters[r], losses[r], x, y)
            for g, d in zip(grads, torch.autograd.grad(loss, params)):
                g += d / WORLD
        with _paused(counters), torch.no_grad():
            union = sl.SynOpsCounter(net, neurons=False)
            xu = torch.cat([data[r][s][0] for r in range(WORLD)])
            for t in range(T):
                net(xu[:, t])
            union_logs.append(union.snapshot().total()["synops"])
            union.remove()
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= LR * g
    return union_logs, {n: p.detach() for n, p in net.named_parameters()}


class _paused:
    def __init__(self, counters):
        self.cms = [c.paused() for c in counters]

    def __enter__(self):
        for cm in self.cms:
            cm.__enter__()

    def __exit__(self, *exc):
        for cm in reversed(self.cms):
            cm.__exit__(*exc)


def test_accelerate_logs_are_reduced_over_both_ranks(accelerate_run):
    union_logs, _ = reference()
    assert [r["world"] for r in accelerate_run] == [WORLD, WORLD]
    for run in accelerate_run:
        assert run["logs"] == pytest.approx(union_logs, rel=1e-6)
    # a mean of the ranks' own per-sample synops would differ (3 and 5 samples)
    net = new_net()
    own = []
    for r in range(WORLD):
        c = sl.SynOpsCounter(net, neurons=False)
        x = rank_data(r)[0][0]
        with torch.no_grad():
            for t in range(T):
                net(x[:, t])
        own.append(c.snapshot().total()["synops"])
        c.remove()
    assert abs(sum(own) / WORLD - union_logs[0]) > 1e-3 * union_logs[0]


def test_accelerate_training_equals_one_process_averaging_the_ranks_gradients(accelerate_run):
    _, want = reference()
    for run in accelerate_run:
        for name, p in want.items():
            assert torch.allclose(run["params"][name], p, atol=1e-6), name
    assert not torch.allclose(accelerate_run[0]["params"]["0.weight"], new_net()[0].weight)
