"""Two CPU processes (gloo), different data per rank, against one process counting the union.

Without Lightning: ``counter.snapshot(accumulated=True).all_reduce()``. With Lightning (DDP):
``SynOpsRegularizer`` (per-rank terms, averaged gradients, all-rank calibration, logged synops) and
``SynOpsMonitor`` (validation). Each launch runs in a fresh interpreter (``helpers.run_fresh``: never a fork
of the test process, and every worker is killed if it hangs), which starts the ranks with ``fork`` on Linux:
a second instead of the ~25 s of re-importing torch and Lightning in ``spawn``ed ones. Set
``SYNOPSLOSS_TEST_START_METHOD=spawn`` to run the same tests with spawned ranks.
"""

from __future__ import annotations

import os
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import synopsloss as sl
from helpers import free_port, linear_pair_synops, run_fresh_call

START = os.environ.get("SYNOPSLOSS_TEST_START_METHOD", "fork" if sys.platform.startswith("linux") else "spawn")
WORLD = 2



# ---------------------------------------------------------------------------- without Lightning

snn = pytest.importorskip("snntorch")


class Branchy(nn.Module):
    """snntorch network with a layer that only runs for batches of more than 4 samples."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.lif1 = snn.Leaky(beta=0.8, init_hidden=True)
        self.fc2 = nn.Linear(8, 3)
        self.extra = nn.Linear(8, 2)

    def forward(self, x):
        h = self.lif1(self.fc1(x))
        out = self.fc2(h)
        if x.shape[0] > 4:
            out = out + self.extra(h).sum(-1, keepdim=True)
        return out


SNAP_BATCH = {0: 3, 1: 5}


def rank_batches(rank: int):
    """Two [B, T, 6] batches of graded spike counts; rank 0 has 3 samples per batch, rank 1 has 5."""
    g = torch.Generator().manual_seed(rank)
    return [(torch.rand(SNAP_BATCH[rank], 4, 6, generator=g) < 0.5).float() * 2 for _ in range(2)]


def count(net: nn.Module, counter: sl.SynOpsCounter, batches) -> sl.CounterSnapshot:
    from snntorch import utils as snn_utils

    for x in batches:
        counter.reset()
        snn_utils.reset(net)
        for t in range(x.shape[1]):
            net(x[:, t])
    counter.reset()
    return counter.snapshot(accumulated=True)


def snapshot_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    try:
        torch.manual_seed(0)
        net = Branchy()
        counter = sl.SynOpsCounter(net)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rank 0: "layer 'extra' did not run"
            local = count(net, counter, rank_batches(rank))
        torch.save({"local": local, "reduced": local.all_reduce()}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def launch(worker: str, out: str) -> None:
    """Start ``WORLD`` ranks running ``worker`` (run through ``helpers.run_fresh_call``)."""
    mp.start_processes(globals()[worker], args=(WORLD, free_port(), out), nprocs=WORLD, start_method=START)


def test_snapshot_all_reduce_equals_one_process_counting_the_union(tmp_path):
    run_fresh_call("test_ddp", "launch", "snapshot_worker", str(tmp_path))
    torch.manual_seed(0)
    net = Branchy()
    union = count(net, sl.SynOpsCounter(net), rank_batches(0) + rank_batches(1))
    results = [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(WORLD)]
    assert "extra" not in [n for n, s in results[0]["local"].layers.items() if s.calls]  # ran on rank 1 only
    for res in results:
        got = res["reduced"]
        assert got.samples == union.samples == 2 * (3 + 5)
        assert list(got.layers) == ["fc1", "fc2", "extra"] and list(got.neurons) == ["lif1"]
        for name, want in union.per_layer().items():
            for key, value in want.items():
                assert got.per_layer()[name][key] == pytest.approx(value, rel=1e-12), (name, key)
        for name, want in union.layers.items():  # shapes and fan-outs, also of the layer idle on rank 0
            g = got.layers[name]
            assert (g.in_shape, g.out_shape, g.calls, g.rows, g.fanout_max) == \
                (want.in_shape, want.out_shape, want.calls, want.rows, want.fanout_max)
        want, g = union.neurons["lif1"], got.neurons["lif1"]
        for key in ("spikes", "nonzero", "updates", "updates_dense", "rows", "calls", "numel"):
            assert getattr(g, key) == pytest.approx(getattr(want, key), rel=1e-12), key
        assert [n for n, _ in sorted(got.order().items(), key=lambda kv: kv[1])] == ["fc1", "lif1", "fc2", "extra"]
    assert results[0]["reduced"] == results[1]["reduced"]
    # the ranks' batch sizes differ, so a mean of the per-rank means would be wrong
    means = [r["local"].total()["synops"] for r in results]
    assert abs(sum(means) / WORLD - union.total()["synops"]) > 1e-3 * union.total()["synops"]


def _rank_start(rank: int, world: int, port: int):
    """Join the gloo group; the same small network and a counter of it on every rank."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return net, sl.SynOpsCounter(net, neurons=False)


def calibration_worker(rank: int, world: int, port: int, out: str) -> None:
    net, counter = _rank_start(rank, world, port)
    try:
        loss_fn = sl.SynOpsLoss(counter, fraction=0.5, calibration_batches=2)
        own = sl.SynOpsLoss(counter, fraction=0.5, calibration_batches=2, calibration_group=None)  # this rank only
        model = nn.parallel.DistributedDataParallel(net)
        for x in rank_batches(rank):
            counter.reset()
            y = sum(model(x[:, t]) for t in range(x.shape[1]))
            (y.square().mean() + loss_fn() + own()).backward()
        torch.save({"initial": loss_fn.initial()["driven"], "target": loss_fn.targets()["driven"],
                    "own": own.initial()["driven"]}, f"{out}/{rank}.pt")
        # DDP's reducer holds the process group from C++: freed after destroy_process_group it would destroy the
        # group while holding the GIL, which gloo's worker thread may need (a torch deadlock): free it first
        del model
    finally:
        dist.destroy_process_group()


def test_fraction_calibration_under_plain_ddp_is_the_per_sample_average_over_every_ranks_samples(tmp_path):
    run_fresh_call("test_ddp", "launch", "calibration_worker", str(tmp_path))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    counter = sl.SynOpsCounter(net, neurons=False)
    per_rank = []
    for rank in range(WORLD):  # one process, every batch of each rank
        driven, samples = 0.0, 0
        for x in rank_batches(rank):
            counter.reset()
            with torch.no_grad():
                sum(net(x[:, t]) for t in range(x.shape[1]))
            driven += counter.synops(by_layer=True)["2"].item() * x.shape[0]
            samples += x.shape[0]
        per_rank.append((driven, samples))
    driven, samples = sum(d for d, _ in per_rank), sum(n for _, n in per_rank)
    results = [torch.load(tmp_path / f"{r}.pt") for r in range(WORLD)]
    for rank, res in enumerate(results):
        assert res["own"] == pytest.approx(per_rank[rank][0] / per_rank[rank][1], rel=1e-6)  # calibration_group=None
        assert res["initial"] == pytest.approx(driven / samples, rel=1e-6)  # (synops() in float32)
        assert res["target"] == pytest.approx(0.5 * driven / samples, rel=1e-6)


def iterative_batches(rank: int):
    """Four [B, 6] batches per rank (rank 0: 3 samples, rank 1: 5), of different scales on the two ranks."""
    g = torch.Generator().manual_seed(10 + rank)
    return [torch.rand(SNAP_BATCH[rank], 6, generator=g) * (1 + 3 * rank) for _ in range(4)]


def iterative_worker(rank: int, world: int, port: int, out: str) -> None:
    net, counter = _rank_start(rank, world, port)
    try:
        it = sl.schedules.Iterative(factor=0.7, stage_steps=2)
        loss_fn = sl.SynOpsLoss(counter, target=it)
        model = nn.parallel.DistributedDataParallel(net)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # (the synops stay what the data makes them)
        targets = []
        for x in iterative_batches(rank):
            counter.reset()
            (model(x).square().mean() + loss_fn()).backward()
            opt.step()
            opt.zero_grad()
            loss_fn.step()
            targets.append(loss_fn.targets()["driven"])
        torch.save({"stage_targets": list(it.stage_targets), "targets": targets}, f"{out}/{rank}.pt")
        del model
    finally:
        dist.destroy_process_group()


def test_an_iterative_target_under_plain_ddp_is_set_from_every_ranks_samples(tmp_path):
    """Each rank set its Iterative targets from its own batches (different targets under averaged gradients).
    By hand: each batch's layer-"2" synops (linear_pair_synops), averaged over both ranks' samples."""
    from helpers import linear_pair_synops

    run_fresh_call("test_ddp", "launch", "iterative_worker", str(tmp_path))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    mean = []  # per step: the per-sample synops of layer "2" over both ranks' samples
    for step in range(4):
        xs = [iterative_batches(r)[step] for r in range(WORLD)]
        mean.append(sum(linear_pair_synops(net, x)["2"] * x.shape[0] for x in xs) / sum(x.shape[0] for x in xs))
    want = [0.7 * mean[0], 0.7 * mean[1], 0.7 * mean[3]]  # the first batch, then each stage's last step
    results = [torch.load(tmp_path / f"{r}.pt") for r in range(WORLD)]
    for res in results:
        assert res["stage_targets"] == pytest.approx(want, rel=1e-6)
    assert results[0]["targets"] == results[1]["targets"]


# ---------------------------------------------------------------------------- with Lightning

L = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from synopsloss.lightning import SynOpsMonitor, SynOpsRegularizer  # noqa: E402

TRAIN_BATCH = {0: 3, 1: 5}  # per rank, two batches each
VAL_BATCH = {0: 4, 1: 2}
LR, FRACTION = 0.5, 0.5


def rank_data(rank: int, split: str):
    g = torch.Generator().manual_seed(100 * rank + (split == "val"))
    n = 2 * TRAIN_BATCH[rank] if split == "train" else 6 + rank
    return (torch.rand(n, 6, generator=g) < 0.5).float(), torch.randint(0, 3, (n,), generator=g)


def new_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


class DDPModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = new_net()
        # the weight is 0 at step 0 (the calibration batch), 1 from step 1 on
        self.reg = SynOpsRegularizer(fraction=FRACTION, weight=sl.schedules.Warmup(1.0, steps=1))

    def setup(self, stage: str) -> None:
        torch.set_num_threads(1)  # forked ranks: no OpenMP pool from the parent

    def configure_callbacks(self):
        return [self.reg, SynOpsMonitor(stages=("validate",))]

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y) + self.reg.loss()

    def validation_step(self, batch, batch_idx):
        self(batch[0])

    def train_dataloader(self):
        return DataLoader(TensorDataset(*rank_data(self.global_rank, "train")), batch_size=TRAIN_BATCH[self.global_rank])

    def val_dataloader(self):
        return DataLoader(TensorDataset(*rank_data(self.global_rank, "val")), batch_size=VAL_BATCH[self.global_rank])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def fit_ddp(root: str) -> None:
    """One DDP fit (2 ranks, 2 steps, one validation); saves the trained weights and the callback metrics."""
    module = DDPModule()
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", devices=WORLD, strategy=f"ddp_{START}", logger=CSVLogger(root, name="run"),
        log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, use_distributed_sampler=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    torch.save({"state": module.state_dict(), "metrics": metrics}, f"{root}/fit.pt")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """``fit_ddp`` in a fresh interpreter; returns the trained module, the callback metrics and rank 0's logs."""
    pd = pytest.importorskip("pandas")
    root = tmp_path_factory.mktemp("ddp")
    run_fresh_call("test_ddp", "fit_ddp", str(root))
    saved = torch.load(root / "fit.pt", weights_only=False)
    module = DDPModule()
    module.load_state_dict(saved["state"])
    logs = pd.read_csv(next(Path(root).rglob("metrics.csv")))
    return module, saved["metrics"], logs


def batches(rank: int):
    x, y = rank_data(rank, "train")
    b = TRAIN_BATCH[rank]
    return [(x[i * b:(i + 1) * b], y[i * b:(i + 1) * b]) for i in range(2)]


def union_synops(net: nn.Sequential, xs) -> dict:
    """Per-sample synops of layers "0" and "2" over the union of ``xs``, by hand."""
    n = sum(x.shape[0] for x in xs)
    return {k: sum(linear_pair_synops(net, x)[k] * x.shape[0] for x in xs) / n for k in ("0", "2")}


def reference_training():
    """One process: both ranks' batches, each rank's loss with the all-rank calibration, averaged gradients."""
    net = new_net()
    params = list(net.parameters())
    steps = []
    initial = None
    for step in range(2):
        xs = [batches(r)[step] for r in range(WORLD)]
        counts = union_synops(net, [x for x, _ in xs])
        if initial is None:
            initial = counts["2"]
        steps.append(counts)
        grads = [torch.zeros_like(p) for p in params]
        weight = 0.0 if step == 0 else 1.0
        target = FRACTION * initial
        for x, y in xs:
            fan2 = (net[2].weight != 0).sum(0).to(x.dtype)
            h = torch.relu(net[0](x))
            s2 = (h.abs() * fan2).sum() / x.shape[0]
            loss = nn.functional.cross_entropy(net(x), y) + weight * ((s2 - target) / target) ** 2
            for g, d in zip(grads, torch.autograd.grad(loss, params)):
                g += d / WORLD
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= LR * g
    return net, steps, initial


def test_ddp_every_rank_adds_its_own_term_and_the_averaged_gradients_match(ddp_run):
    module, _, _ = ddp_run
    ref, _, _ = reference_training()
    for got, want in zip(module.net.parameters(), ref.parameters()):
        assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(module.net[0].weight, new_net()[0].weight)


def test_ddp_logged_synops_are_per_sample_over_all_ranks_samples(ddp_run):
    _, _, logs = ddp_run
    _, steps, initial = reference_training()
    step_rows = logs.dropna(subset=["synops/train/synops_step"]).set_index("step")
    assert list(step_rows.index) == [0, 1]
    for step, counts in enumerate(steps):
        row = step_rows.loc[step]
        assert row["synops/train/synops_step"] == pytest.approx(counts["0"] + counts["2"], rel=1e-6)
        assert row["synops/train/regularized_step"] == pytest.approx(counts["2"], rel=1e-6)
        # the calibration is the per-sample average over both ranks' first batches
        assert row["synops/train/target"] == pytest.approx(FRACTION * initial, rel=1e-6)
    epoch = logs.dropna(subset=["synops/train/synops"]).iloc[-1]
    want = sum((s["0"] + s["2"]) * sum(TRAIN_BATCH.values()) for s in steps) / (2 * sum(TRAIN_BATCH.values()))
    assert epoch["synops/train/synops"] == pytest.approx(want, rel=1e-6)
    # a mean of the two ranks' own means would differ
    net = new_net()
    own = [linear_pair_synops(net, batches(r)[0][0]) for r in range(WORLD)]
    assert abs(sum(o["0"] + o["2"] for o in own) / WORLD - (steps[0]["0"] + steps[0]["2"])) > 1e-3


def test_ddp_monitor_counts_the_union_of_the_ranks_validation_data(ddp_run):
    module, metrics, logs = ddp_run
    xs = [rank_data(r, "val")[0] for r in range(WORLD)]
    want = union_synops(module.net, xs)
    row = logs.dropna(subset=["synops/validate/synops"])
    assert len(row) == 1
    assert row.iloc[0]["synops/validate/synops"] == pytest.approx(want["0"] + want["2"], rel=1e-6)
    assert metrics["synops/validate/synops"] == pytest.approx(want["0"] + want["2"], rel=1e-6)
