"""SynOpsRegularizer: training against synops inside Lightning, checked against hand-written loops and hand counts."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning.pytorch")
pd = pytest.importorskip("pandas")
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

import synopsloss as sl  # noqa: E402
from helpers import linear_pair_synops  # noqa: E402
from synopsloss.lightning import SynOpsMonitor, SynOpsRegularizer  # noqa: E402

N_IN, N_TRAIN, N_VAL = 6, 12, 10


def data(n: int, seed: int) -> TensorDataset:
    """Spikes, with a density that differs from sample to sample (so batches differ)."""
    g = torch.Generator().manual_seed(seed)
    density = torch.linspace(0.2, 0.8, n).unsqueeze(1)
    return TensorDataset((torch.rand(n, N_IN, generator=g) < density).float(), torch.randint(0, 3, (n,), generator=g))


def new_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(N_IN, 8), nn.ReLU(), nn.Linear(8, 3))


def reg_kwargs() -> dict:
    """The target moves from 100% to 50% of the initial synops over 6 steps; the weight warms up over 3."""
    return dict(fraction=sl.schedules.Linear(1.0, 0.5, steps=6), weight=sl.schedules.Warmup(1.0, steps=3))


def make_module(pl=L, lr: float = 0.1, hand: bool = False, call: str = "self", log: bool = True, **kwargs):
    """A LightningModule (of package ``pl``) holding its regularizer, built like a user would."""

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = new_net()
            self.reg = SynOpsRegularizer(**(kwargs or reg_kwargs()))

        def configure_callbacks(self):
            return [self.reg]

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            if hand:  # the batch's synops counted by hand, logged by the module itself
                counts = linear_pair_synops(self.net, x)
                self.log("hand_synops", counts["0"] + counts["2"], on_step=True, on_epoch=False)
            out = self(x) if call == "self" else self.net(x)
            loss = nn.functional.cross_entropy(out, y)
            if log:
                self.log("task_loss", loss, on_step=True, on_epoch=False)
            return loss + self.reg.loss()

        def validation_step(self, batch, batch_idx):
            self(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9)

    return Module()


def trainer(tmp_path=None, pl=L, **kwargs):
    opts = dict(max_epochs=2, accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                enable_checkpointing=False, num_sanity_val_steps=0, log_every_n_steps=1,
                logger=CSVLogger(tmp_path, name="", version=kwargs.pop("version", 0)) if tmp_path else False)
    opts.update(kwargs)
    return pl.Trainer(**opts)


def fit(module, trainer_, train_batch: int = 4, val=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer_.fit(module, DataLoader(data(N_TRAIN, 0), batch_size=train_batch), val, **kwargs)
    return trainer_


def logs(trainer_) -> "pd.DataFrame":
    return pd.read_csv(Path(trainer_.logger.log_dir) / "metrics.csv")


def manual_training(epochs: int = 2, batch: int = 4, accumulate: int = 1, lr: float = 0.1) -> nn.Sequential:
    """The README's plain loop: counter + SynOpsLoss, loss.step() once per optimizer step."""
    net = new_net()
    counter = sl.SynOpsCounter(net, neurons=False)
    loss_fn = sl.SynOpsLoss(counter, **reg_kwargs())
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    loader = DataLoader(data(N_TRAIN, 0), batch_size=batch)
    for _ in range(epochs):
        for i, (x, y) in enumerate(loader):
            counter.reset()
            loss = nn.functional.cross_entropy(net(x), y) + loss_fn()
            (loss / accumulate).backward()
            if (i + 1) % accumulate == 0 or i + 1 == len(loader):
                opt.step()
                opt.zero_grad()
                loss_fn.step()
    return net


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.allclose(p, q, rtol=0, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))


# ---------------------------------------------------------------------------- training


def test_training_equals_the_hand_written_loop_with_counter_and_loss():
    module = make_module()
    fit(module, trainer())
    assert same_weights(module.net, manual_training())
    assert not same_weights(module.net, new_net())
    assert module.reg.loss_fn.last_step == 6  # stepped per optimizer step
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


def test_gradient_accumulation_steps_schedules_per_optimizer_step():
    module = make_module()
    t = fit(module, trainer(accumulate_grad_batches=2), train_batch=2)  # 6 batches per epoch, 3 optimizer steps
    assert t.global_step == module.reg.loss_fn.last_step == 6
    assert same_weights(module.net, manual_training(batch=2, accumulate=2))


def test_a_second_fit_continues_the_schedules():
    module = make_module()
    fit(module, trainer(max_epochs=1))
    fit(module, trainer(max_epochs=1))  # a new trainer starts at global_step 0
    assert module.reg.loss_fn.last_step == 6
    assert module.reg.loss_fn.weight.value == 1.0 and module.reg.loss_fn.targets()["driven"] == pytest.approx(
        0.5 * module.reg.loss_fn.initial()["driven"])


def test_epoch_interval_steps_schedules_once_per_epoch(tmp_path):
    module = make_module(interval="epoch", **reg_kwargs())
    t = fit(module, trainer(tmp_path, max_epochs=3))
    assert module.reg.loss_fn.last_step == 3
    weights = logs(t).dropna(subset=["synops/train/weight"]).groupby("epoch")["synops/train/weight"]
    assert weights.nunique().tolist() == [1, 1, 1]  # constant within an epoch
    assert weights.first().tolist() == pytest.approx([sl.schedules.Warmup(1.0, steps=3).at(k) for k in range(3)])


def test_a_module_that_calls_its_submodule_names_it():
    # training_step calls self.net(x): the counter must watch self.net to see which layer the data feeds
    module = make_module(call="net", module="net", layers="driven", fraction=0.5)
    fit(module, trainer(max_epochs=1))
    assert module.reg.counter.model is module.net
    x = data(N_TRAIN, 0).tensors[0][:4]
    assert module.reg.loss_fn.initial()["driven"] == pytest.approx(linear_pair_synops(new_net(), x)["2"], rel=1e-6)


# ---------------------------------------------------------------------------- resume


class ForgetfulRegularizer(SynOpsRegularizer):
    """A regularizer whose state is not restored (what happens without SynOpsRegularizer's state_dict)."""

    def load_state_dict(self, state_dict):
        pass


def run_epochs(tmp_path, version, epochs, ckpt=None, cls=SynOpsRegularizer):
    module = make_module()
    module.reg = cls(**reg_kwargs())
    checkpoint = ModelCheckpoint(dirpath=tmp_path / f"ckpt{version}", save_last=True)
    t = fit(module, trainer(tmp_path, max_epochs=epochs, version=version, enable_checkpointing=True,
                            callbacks=[checkpoint]), ckpt_path=ckpt)
    return module, t, tmp_path / f"ckpt{version}" / "last.ckpt"


def test_resume_after_two_epochs_gives_the_weights_and_logs_of_four_uninterrupted_epochs(tmp_path):
    whole, t_whole, _ = run_epochs(tmp_path, 0, 4)
    first, t_first, ckpt = run_epochs(tmp_path, 1, 2)
    state = torch.load(ckpt, weights_only=False)["callbacks"][first.reg.state_key]
    assert state["loss"]["last_step"] == 6 and state["loss"]["terms"][0]["initial"] == first.reg.loss_fn.initial()["driven"]
    resumed, t_resumed, _ = run_epochs(tmp_path, 2, 4, ckpt=ckpt)
    assert resumed.reg.loss_fn.initial() == whole.reg.loss_fn.initial() == first.reg.loss_fn.initial()
    assert resumed.reg.loss_fn.last_step == whole.reg.loss_fn.last_step == 12
    assert all(torch.equal(p, q) for p, q in zip(resumed.net.parameters(), whole.net.parameters()))
    columns = [c for c in logs(t_whole).columns if c.startswith("synops/") or c == "task_loss"]
    assert {"synops/train/synops_step", "synops/train/target", "synops/train/weight", "synops/train/synops"} <= set(columns)
    pieces = pd.concat([logs(t_first), logs(t_resumed)], ignore_index=True)
    pd.testing.assert_frame_equal(pieces[["epoch", "step"] + columns], logs(t_whole)[["epoch", "step"] + columns])
    # without the regularizer's state the resumed run re-measures the calibration and restarts its schedules
    forgetful, _, _ = run_epochs(tmp_path, 3, 4, ckpt=ckpt, cls=ForgetfulRegularizer)
    assert forgetful.reg.loss_fn.initial() != whole.reg.loss_fn.initial()
    assert not all(torch.equal(p, q) for p, q in zip(forgetful.net.parameters(), whole.net.parameters()))


# ---------------------------------------------------------------------------- logging


def test_step_metrics_are_logged_at_the_step_of_their_batch(tmp_path):
    monitor = SynOpsMonitor(logging_interval="step", stages=("train",), prefix="monitor")
    t = fit(make_module(hand=True), trainer(tmp_path, callbacks=[monitor]))
    rows = logs(t).dropna(subset=["hand_synops"])
    assert len(rows) == 6 and rows["hand_synops"].nunique() == 6  # every batch differs
    assert rows["synops/train/synops_step"].tolist() == pytest.approx(rows["hand_synops"].tolist(), rel=1e-6)
    assert rows["monitor/train/synops_step"].tolist() == pytest.approx(rows["hand_synops"].tolist(), rel=1e-6)
    # the target and the weight of the step's schedules, on the same row
    assert rows["synops/train/weight"].tolist() == pytest.approx([min(k / 3, 1.0) for k in range(6)])
    initial = rows["synops/train/regularized_step"].iloc[0]
    want = [sl.schedules.Linear(1.0, 0.5, steps=6).at(k) * initial for k in range(6)]
    assert rows["synops/train/target"].tolist() == pytest.approx(want, rel=1e-6)


def test_the_epoch_loss_is_the_mean_over_the_epochs_samples(tmp_path):
    """Batches of 5, 5 and 2 samples: the epoch's synops/train/loss weighs each batch's term by its samples, as
    the epoch's synops are (not a plain mean over batches)."""
    t = fit(make_module(), trainer(tmp_path, max_epochs=1), train_batch=5)
    table = logs(t)
    steps = table.dropna(subset=["synops/train/loss_step"])["synops/train/loss_step"].tolist()
    sizes = [5, 5, N_TRAIN - 10]
    assert len(steps) == 3 and sizes[-1] == 2 and len(set(steps)) == 3
    want = sum(v * n for v, n in zip(steps, sizes)) / N_TRAIN
    assert table.dropna(subset=["synops/train/loss"])["synops/train/loss"].iloc[0] == pytest.approx(want, rel=1e-6)
    assert want != pytest.approx(sum(steps) / 3, rel=1e-3)


def test_validation_with_another_batch_size_is_left_to_the_monitor(tmp_path):
    module = make_module(lr=0.0)  # weights stay as initialised: every count can be done by hand
    monitor = SynOpsMonitor(stages=("validate",))
    val = DataLoader(data(N_VAL, 1), batch_size=7)  # 7, 3: never the training batch size 4
    t = fit(module, trainer(tmp_path, callbacks=[monitor], num_sanity_val_steps=2), val=val)
    net = new_net()
    want_val = linear_pair_synops(net, data(N_VAL, 1).tensors[0])
    want_train = linear_pair_synops(net, data(N_TRAIN, 0).tensors[0])
    got = logs(t)
    val_rows = got.dropna(subset=["synops/validate/synops"])
    assert len(val_rows) == 2  # one per epoch: the sanity check logs nothing
    # (float32 activations: the per-neuron sums are float32, hence rel=1e-6)
    assert val_rows["synops/validate/synops"].tolist() == pytest.approx([want_val["0"] + want_val["2"]] * 2, rel=1e-6)
    train_rows = got.dropna(subset=["synops/train/synops"])
    assert train_rows["synops/train/synops"].tolist() == pytest.approx([want_train["0"] + want_train["2"]] * 2, rel=1e-6)
    assert train_rows["synops/train/regularized"].tolist() == pytest.approx([want_train["2"]] * 2, rel=1e-6)
    assert module.reg.loss_fn._calls == 6  # training batches only


def test_epoch_metrics_drive_checkpoints_early_stopping_and_the_progress_bar(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="synops/train/regularized", mode="min", save_top_k=1)
    stop = EarlyStopping(monitor="synops/train/synops", mode="min", patience=10, check_on_train_epoch_end=True)
    t = fit(make_module(), trainer(tmp_path, max_epochs=3, enable_checkpointing=True, callbacks=[checkpoint, stop]))
    epochs = logs(t).dropna(subset=["synops/train/regularized"])
    assert float(checkpoint.best_model_score) == pytest.approx(epochs["synops/train/regularized"].min(), rel=1e-12)
    assert float(stop.best_score) == pytest.approx(epochs["synops/train/synops"].min(), rel=1e-12)
    assert "synops/train/regularized_step" in t.progress_bar_metrics


def test_bf16_mixed_precision_keeps_the_counts_exact():
    module = make_module(lr=0.0)
    inputs = {}

    def keep(name):
        return lambda m, args: inputs.setdefault(name, args[0].detach())

    handles = [module.net[i].register_forward_pre_hook(keep(str(i))) for i in (0, 2)]
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(128, N_IN, generator=g) < 0.5).float()  # spikes in; graded bf16 activations after layer 0
    loader = DataLoader(TensorDataset(x, torch.zeros(128, dtype=torch.long)), batch_size=128)
    t = trainer(max_epochs=1, precision="bf16-mixed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.fit(module, loader)
    for h in handles:
        h.remove()
    assert inputs["2"].dtype == torch.bfloat16  # the hidden layer's input is bf16
    want = dict.fromkeys(("synops", "dense", "eff_macs", "eff_acs"), 0.0)
    for name, h in inputs.items():  # by hand, in float64: every bf16 value is exact there
        h = h.double()
        weight = module.net[int(name)].weight
        fan = (weight != 0).sum(0).double()
        spiking = bool(((h == 0) | (h.abs() == 1)).all())
        want["synops"] += float((h.abs() * fan).sum()) / 128
        want["eff_acs" if spiking else "eff_macs"] += float(((h != 0).double() * fan).sum()) / 128
        want["dense"] += weight.numel()
    assert want["eff_acs"] > 0 and want["eff_macs"] > 0
    got = {k: float(t.callback_metrics[f"synops/train/{k}"]) for k in want}
    assert {k: got[k] for k in ("dense", "eff_macs", "eff_acs")} == {k: want[k] for k in ("dense", "eff_macs", "eff_acs")}
    assert got["synops"] == pytest.approx(want["synops"], rel=1e-12)
    fan2 = (module.net[2].weight != 0).sum(0)
    exact = float((inputs["2"].double() * fan2.double()).sum())
    assert float((inputs["2"] * fan2.to(torch.bfloat16)).sum()) != exact  # what summing in bf16 would give


def test_the_standalone_pytorch_lightning_package_trains_the_same():
    pl = pytest.importorskip("pytorch_lightning")
    module = make_module(pl=pl)
    fit(module, trainer(pl=pl))
    assert same_weights(module.net, manual_training())


def test_a_compiled_lightning_module_is_counted_as_in_eager_mode():
    # no self.log in the compiled training_step: Lightning 2.6 + torch 2.13 dynamo fail on it, with or without us
    eager = make_module(log=False)
    fit(eager, trainer(max_epochs=1, limit_train_batches=1))
    module = make_module(log=False)
    compiled = torch.compile(module, backend="eager")
    fit(compiled, trainer(max_epochs=1, limit_train_batches=1))
    assert module.reg.last_metrics == pytest.approx(eager.reg.last_metrics, rel=1e-12)
    assert module.reg.last_metrics["synops/train/synops"] > 0
    assert same_weights(module.net, eager.net)


# ---------------------------------------------------------------------------- hygiene and errors


def test_hooks_come_off_when_fitting_fails():
    module = make_module()

    def broken(batch, batch_idx):
        raise ZeroDivisionError("boom")

    module.training_step = broken
    with pytest.raises(ZeroDivisionError):
        fit(module, trainer(max_epochs=1))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


def test_a_fitted_module_can_still_be_copied_and_pickled():
    module = make_module()
    fit(module, trainer(max_epochs=1))
    twin = copy.deepcopy(module)  # e.g. StochasticWeightAveraging copies the module with its regularizer
    assert twin.reg.counter is None and twin.reg.state_dict()["loss"] == module.reg.state_dict()["loss"]
    assert same_weights(twin.net, module.net)


def test_forgetting_the_loss_call_warns():
    class NoLoss(type(make_module())):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

    module = NoLoss()
    with pytest.warns(sl.SynOpsWarning, match="did not call .loss"):
        trainer(max_epochs=1).fit(module, DataLoader(data(N_TRAIN, 0), batch_size=4))


def test_a_monitor_logging_the_same_training_names_is_refused():
    with pytest.raises(ValueError, match="stages=\\('validate', 'test'\\)"):
        trainer(max_epochs=1, limit_train_batches=1, callbacks=[SynOpsMonitor()]).fit(
            make_module(), DataLoader(data(N_TRAIN, 0), batch_size=4))


def test_misuse_is_named():
    reg = SynOpsRegularizer(fraction=0.5)
    with pytest.raises(RuntimeError, match="outside a training batch"):
        reg.loss()
    with pytest.raises(ValueError, match="exactly one"):
        SynOpsRegularizer(target=10.0, fraction=0.5)
    with pytest.raises(ValueError, match="interval"):
        SynOpsRegularizer(fraction=0.5, interval="batch")
    with pytest.raises(ValueError, match="shape"):
        SynOpsRegularizer(fraction=0.5, shape="cubic")
    with pytest.raises(TypeError, match="module"):
        SynOpsRegularizer(fraction=0.5, module=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no such submodule"):
        fit(make_module(module="encoder", fraction=0.5), trainer(max_epochs=1))
    with pytest.raises(ValueError, match="does not count"):  # SynOpsLoss's own check, when fitting starts
        fit(make_module(fraction=0.5, layers=["net.7"]), trainer(max_epochs=1))


class _TimeFirst(torch.utils.data.Dataset):
    """Each item is a whole time-first batch [T=6, B=4, 8] (a collate-free loader)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(3)
        self.x = [(torch.rand(6, 4, 8, generator=g) < 0.5).float() for _ in range(2)]
        self.y = [torch.randint(0, 3, (4,), generator=g) for _ in range(2)]

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def _time_first_module(counter_kwargs: dict, seen: list):
    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)
            self.reg = SynOpsRegularizer(target=10.0, counter_kwargs=counter_kwargs)

        def configure_callbacks(self):
            return [self.reg]

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x))).sum(0)  # x: [T, B, 8]

        def training_step(self, batch, batch_idx):
            x, y = batch
            out = self(x)
            term = self.reg.loss()
            with self.reg.counter.paused():  # the hand count: fc2's input times its fan-out, over 4 samples
                h = torch.relu(self.fc1(x)).detach()
            seen.append(((h * (self.fc2.weight != 0).sum(0)).sum().item() / 4, self.reg.loss_fn.last()["value"]))
            return nn.functional.cross_entropy(out, y) + term

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return Module()


def _fit(module) -> None:
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (Lightning's own notes on this tiny run)
        trainer.fit(module, DataLoader(_TimeFirst(), batch_size=None))


def test_time_first_batches_take_their_samples_from_the_declared_layout():
    """``counter_kwargs={"time_dim": 0}``: 4 samples of 6 steps, by hand (network-driven synops: the hidden
    activity times fc2's fan-out, over the 4 samples); without a declaration the counter refuses to guess
    between [T, B, ...] and [B, T, ...] instead of dividing by dim 0."""
    seen: list = []
    _fit(_time_first_module({"time_dim": 0}, seen))
    assert len(seen) == 2
    for hand, got in seen:
        assert got == pytest.approx(hand, rel=1e-5)
    with pytest.raises(ValueError, match=r"cannot be told from \[T, B, \.\.\.\].*With SynOpsRegularizer, pass counter_kwargs="):
        _fit(_time_first_module({}, []))


def _two_optimizers(optimizers: int):
    """make_module's module in manual optimization, one or two optimizers stepped per batch (GAN-style), a warm-up
    weight; it keeps the weight of each batch."""
    base = type(make_module(target=1.0, weight=sl.schedules.Warmup(1.0, steps=4)))

    class TwoOptimizers(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.weights: list = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            opts = self.optimizers()
            opts = opts if isinstance(opts, list) else [opts]
            loss = nn.functional.cross_entropy(self(x), y) + self.reg.loss()
            self.weights.append(self.reg.loss_fn.weight.value)
            for o in opts:
                o.zero_grad()
            self.manual_backward(loss)
            for o in opts:
                o.step()

        def configure_optimizers(self):
            if optimizers == 1:
                return torch.optim.SGD(self.parameters(), lr=0.01)
            return [torch.optim.SGD(self.net[0].parameters(), lr=0.01),
                    torch.optim.SGD(self.net[2].parameters(), lr=0.01)]

    return TwoOptimizers()


@pytest.mark.parametrize("optimizers", [1, 2])
def test_schedules_step_once_per_training_batch_however_many_optimizers_step(optimizers):
    """Lightning's global_step counts each optimizer's steps: with two, a Warmup(steps=4) was over after 2 batches."""
    module = _two_optimizers(optimizers)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (Lightning's notes on this tiny run, the loss scale)
        trainer.fit(module, DataLoader(data(20, 7), batch_size=4))
    assert module.weights == [0.0, 0.25, 0.5, 0.75, 1.0]  # min(batch, 4) / 4, by hand
    assert module.reg.loss_fn.last_step == 5
