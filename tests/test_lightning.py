"""SynOpsMonitor: per-sample synops logged by a Lightning callback, one process and DDP."""

from __future__ import annotations

import os
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning.pytorch")

import synopsloss as sl  # noqa: E402
from helpers import run_fresh_call  # noqa: E402
from synopsloss.lightning import SynOpsMonitor  # noqa: E402

START = os.environ.get("SYNOPSLOSS_TEST_START_METHOD", "fork" if sys.platform.startswith("linux") else "spawn")

N_SAMPLES, N_IN = 24, 6


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(N_SAMPLES, N_IN, generator=g) < 0.4).float()
    y = torch.randint(0, 3, (N_SAMPLES,), generator=g)
    return TensorDataset(x, y)


class Module(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(N_IN, 5), nn.ReLU(), nn.Linear(5, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.net(x)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # weights stay as initialised


def expected_counts(module: Module) -> dict:
    """Per-sample totals over the whole data set, from one pass with a plain counter."""
    x = dataset().tensors[0]
    with sl.SynOpsCounter(module.net) as counter, torch.no_grad():
        module.net(x)
        return counter.snapshot().total()


def trainer(**kwargs) -> "L.Trainer":
    return L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, **kwargs,
    )


def test_epoch_metrics_are_per_sample_over_the_whole_epoch():
    module = Module()
    monitor = SynOpsMonitor(per_layer=True)
    loader = DataLoader(dataset(), batch_size=5)  # uneven last batch: 5,5,5,5,4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(accelerator="cpu", devices=1, callbacks=[monitor]).fit(module, loader, loader)
    want = expected_counts(module)
    for stage in ("train", "validate"):
        got = monitor.last_metrics[stage]
        for key in ("dense", "eff_macs", "eff_acs"):  # integer counts: exact
            assert got[f"synops/{stage}/{key}"] == pytest.approx(want[key], rel=1e-12)
        # activation sums are float32 per batch: equal up to rounding
        assert got[f"synops/{stage}/synops"] == pytest.approx(want["synops"], rel=1e-6)
        layers = got[f"synops/{stage}/layer/net.0"] + got[f"synops/{stage}/layer/net.2"]
        assert layers == pytest.approx(want["synops"], rel=1e-6)
    # the callback leaves no hook behind
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


def test_state_dict_round_trip_keeps_last_metrics():
    monitor = SynOpsMonitor()
    monitor.last_metrics = {"train": {"synops/train/synops": 3.5}}
    other = SynOpsMonitor()
    other.load_state_dict(monitor.state_dict())
    assert other.last_metrics == monitor.last_metrics


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="logging_interval"):
        SynOpsMonitor(logging_interval="batch")
    with pytest.raises(ValueError, match="stage"):
        SynOpsMonitor(stages=("fit",))


def validate_ddp(root: str) -> None:
    """Two CPU ranks (gloo) validate half the data each; saves rank 0's callback metrics.

    The ranks are forked from the fresh interpreter ``run_fresh`` starts (``SYNOPSLOSS_TEST_START_METHOD``
    as in ``test_ddp``): a forked rank leaves through ``os._exit``. A spawned rank runs the interpreter's
    exit, where gloo's threads can abort the rank ("terminate called without an active exception", seen
    once in CI) after its numbers were already sent."""
    module = Module()
    monitor = SynOpsMonitor(stages=("validate",))
    loader = DataLoader(dataset(), batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = trainer(accelerator="cpu", devices=2, strategy=f"ddp_{START}", default_root_dir=root, callbacks=[monitor])
        t.validate(module, loader, verbose=False)
    # ddp_spawn / ddp_fork return the callback metrics of rank 0 to the main process
    torch.save({k: float(v) for k, v in t.callback_metrics.items()}, f"{root}/metrics.pt")


def test_ddp_ranks_sum_to_the_single_process_numbers(tmp_path):
    """Two CPU ranks each count half the data; the logged values are the per-sample averages over all
    of it, equal to one process counting everything (run in a fresh interpreter: ``helpers.run_fresh``)."""
    run_fresh_call("test_lightning", "validate_ddp", str(tmp_path))
    metrics = torch.load(tmp_path / "metrics.pt")
    want = expected_counts(Module())
    for key in sl.COUNT_KEYS:
        assert metrics[f"synops/validate/{key}"] == pytest.approx(want[key], rel=1e-6)


def test_time_first_validation_batches_are_named_with_the_monitors_options():
    T = 3
    x = torch.rand(12, T, N_IN, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (12,))

    def collate(items):  # [T, B, C] batches
        return torch.stack([i[0] for i in items]).transpose(0, 1), torch.stack([i[1] for i in items])

    class TimeFirst(Module):
        def validation_step(self, batch, batch_idx):
            self.net(batch[0])  # every step at once: rows T x B

    def fit(monitor):
        loader = DataLoader(TensorDataset(x, y), batch_size=6, collate_fn=collate)
        trainer(accelerator="cpu", callbacks=[monitor]).validate(TimeFirst(), loader, verbose=False)
        return monitor

    with pytest.warns(sl.SynOpsWarning, match=r"SynOpsMonitor: the validate batches are left out.*With "
                                              r"SynOpsMonitor, pass counter_kwargs=\{'batch_dim': 1\}"):
        fit(SynOpsMonitor(stages=("validate",)))
    got = fit(SynOpsMonitor(stages=("validate",), counter_kwargs={"batch_dim": 1})).last_metrics["validate"]
    module = TimeFirst()
    with sl.SynOpsCounter(module.net, batch_dim=1) as counter, torch.no_grad():  # by hand, all 12 samples at once
        module.net(x.transpose(0, 1))
        want = counter.snapshot().total()
    assert got["synops/validate/synops"] == pytest.approx(want["synops"])
