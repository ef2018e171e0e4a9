"""schedules.Iterative (Sorbaro et al. 2020): targets set from observed synops, by hand; in SynOpsLoss, in
Lightning; state_dict round trips that resume exactly; misuse named."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import synopsloss as sl
from helpers import linear_pair_synops
from synopsloss import schedules as S


def feed(it: S.Iterative, per_step) -> list:
    """Observe each step's values, step; return the target in force at each step (read before the step)."""
    seen = []
    for values in per_step:
        for v in values:
            it.observe(v)
        seen.append(it.value)
        it.step()
    return seen


def test_targets_over_stages_by_hand():
    it = S.Iterative(factor=0.5, stage_steps=3, window=2)
    seen = feed(it, [[100.0], [80.0], [60.0], [50.0], [40.0], [30.0], [20.0]])
    # stage 0: 0.5 x the first observation = 50; stage 1: 0.5 x mean(80, 60) = 35; stage 2: 0.5 x mean(40, 30)
    assert seen == [50.0, 50.0, 50.0, 35.0, 35.0, 35.0, 17.5]
    assert it.stage_targets == [50.0, 35.0, 17.5] and it.achieved == [70.0, 35.0]
    assert it.stage == 2 and it.at(0) == 50.0 and it.at(4) == 35.0
    assert it.at(9) == 8.75 and it.at(12) == 4.375   # the plan for stages not reached: x factor per stage


def test_several_observations_per_step_are_averaged_per_batch():
    # a step is an epoch of three batches: "achieved" is the mean of the last epoch's batches
    it = S.Iterative(factor=0.8, stage_steps=2, start=1000.0)
    feed(it, [[900.0, 800.0, 700.0], [600.0, 500.0, 400.0], [300.0, 300.0, 300.0]])
    assert it.stage_targets == [1000.0, 0.8 * 500.0] and it.achieved == [500.0]


def test_stages_limit_and_floor():
    it = S.Iterative(factor=0.5, stage_steps=1, start=100.0, stages=2, min_target=30.0)
    seen = feed(it, [[80.0], [70.0], [10.0], [5.0]])
    # stage 1: max(0.5 * 80, 30) = 40; stage 2: max(0.5 * 70, 30) = 35; then held
    assert seen == [100.0, 40.0, 35.0, 35.0]
    assert it.stage_targets == [100.0, 40.0, 35.0] and it.at(100) == 35.0


def test_tensor_observations_stay_tensors_until_a_stage_ends():
    it = S.Iterative(factor=0.5, stage_steps=2, start=10.0)
    it.observe(torch.tensor(8.0))
    it.step()
    it.observe(torch.tensor(6.0, requires_grad=True) * 1.0)
    it.step()
    assert it.stage_targets == [10.0, 3.0]


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5])
def test_resume_from_state_dict_gives_the_uninterrupted_targets(cut):
    steps = [[100.0, 90.0], [80.0], [60.0, 61.0], [50.0], [40.0], [30.0]]
    whole = S.Iterative(factor=0.5, stage_steps=2, window=2)
    want = feed(whole, steps)
    first = S.Iterative(factor=0.5, stage_steps=2, window=2)
    got = feed(first, steps[:cut])
    first.observe(7.0)   # a half-finished step: its observations are in the checkpoint too
    state = json.loads(json.dumps(first.state_dict()))   # plain values
    resumed = S.Iterative(factor=0.5, stage_steps=2, window=2)
    resumed.load_state_dict(state)
    first.observe(3.0)
    resumed.observe(3.0)
    assert resumed.value == first.value
    first.step()
    resumed.step()
    assert resumed.stage_targets == first.stage_targets and resumed.achieved == first.achieved
    # and without the extra observations, a checkpoint between steps continues the uninterrupted run exactly
    again = S.Iterative(factor=0.5, stage_steps=2, window=2)
    feed(again, steps[:cut])
    cont = S.Iterative(factor=0.5, stage_steps=2, window=2)
    cont.load_state_dict(json.loads(json.dumps(again.state_dict())))
    assert got + feed(cont, steps[cut:]) == want
    assert cont.stage_targets == whole.stage_targets


def test_synchronize_sums_the_ranks_only_before_the_step_that_ends_a_stage():
    calls = []

    def two_ranks(t):   # the other rank saw the same batches plus 20 synops per batch more
        calls.append(t.clone())
        other = t.clone()
        other[:, 0] += 20.0 * t[:, 1]
        return t + other

    it = S.Iterative(factor=0.5, stage_steps=2, start=100.0, window=2)
    it.observe(60.0)
    it.synchronize(two_ranks)   # the next step does not end the stage: nothing to do
    assert calls == []
    it.step()
    it.observe(40.0)
    it.synchronize(two_ranks)
    assert len(calls) == 1 and calls[0].tolist() == [[60.0, 1.0], [40.0, 1.0]]
    it.step()
    # achieved = mean of 60, 40 (this rank) and 80, 60 (the other) = 60
    assert it.stage_targets == [100.0, 30.0]


def test_misuse_is_named():
    with pytest.raises(ValueError, match="factor must be in"):
        S.Iterative(factor=1.5)
    with pytest.raises(ValueError, match="window"):
        S.Iterative(stage_steps=2, window=3)
    with pytest.raises(ValueError, match="start"):
        S.Iterative(start=0.0)
    with pytest.raises(TypeError, match="cannot be wrapped"):
        S.Warmup(S.Iterative(), steps=2)
    with pytest.raises(TypeError, match="cannot be wrapped"):
        S.Iterative() * 2
    with pytest.raises(RuntimeError, match="no target before its first observation"):
        S.Iterative().value
    it = S.Iterative(stage_steps=1, start=5.0)
    with pytest.raises(RuntimeError, match="no synops observed"):
        it.step()
    with pytest.raises(ValueError, match="first observed synops are 0"):
        S.Iterative().observe(0.0)
    with pytest.raises(ValueError, match="synops"):
        S.Iterative().observe(float("nan"))


# ---------------------------------------------------------------------------- in SynOpsLoss


def net_and_batches(n_batches: int = 5):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    xs = [(torch.rand(4, 6, generator=g) < 0.3 + 0.1 * k).float() for k in range(n_batches)]
    return net, xs


def test_in_the_loss_targets_follow_the_hand_counted_network_driven_synops():
    net, xs = net_and_batches()
    counter = sl.SynOpsCounter(net, neurons=False)
    it = S.Iterative(factor=0.5, stage_steps=2)
    loss_fn = sl.SynOpsLoss(counter, target=it)
    hand = [linear_pair_synops(net, x)["2"] for x in xs]   # layer "2" is the network-driven one; weights fixed
    for k, x in enumerate(xs):
        counter.reset()
        net(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sl.UnreachableTargetWarning)
            value = loss_fn()
        t = loss_fn.targets()["driven"]
        want_t = 0.5 * hand[0] if k < 2 else 0.5 * hand[1] if k < 4 else 0.5 * hand[3]
        assert t == pytest.approx(want_t, rel=1e-6)
        assert float(value.detach()) == pytest.approx(((hand[k] - want_t) / want_t) ** 2, rel=1e-5)
        loss_fn.step()
    # the loss's state holds the schedule's: a new loss on a new counter resumes with the same target
    counter2 = sl.SynOpsCounter(net, neurons=False)
    loss2 = sl.SynOpsLoss(counter2, target=S.Iterative(factor=0.5, stage_steps=2))
    loss2.load_state_dict(json.loads(json.dumps(loss_fn.state_dict())))
    assert loss2.targets() == loss_fn.targets()
    counter.remove()
    counter2.remove()


def test_evaluating_the_loss_without_gradients_does_not_move_the_target():
    net, xs = net_and_batches(2)
    counter = sl.SynOpsCounter(net, neurons=False)
    it = S.Iterative(factor=0.5, stage_steps=1, start=10.0)
    loss_fn = sl.SynOpsLoss(counter, target=it, shape="hinge")
    counter.reset()
    net(xs[0])
    loss_fn()
    with torch.no_grad():   # a validation batch
        counter.reset()
        net(xs[1])
        loss_fn()
    loss_fn.step()
    assert it.achieved == pytest.approx([linear_pair_synops(net, xs[0])["2"]], rel=1e-6)
    counter.remove()


def test_an_iterative_fraction_is_refused():
    net, xs = net_and_batches(1)
    counter = sl.SynOpsCounter(net, neurons=False)
    with pytest.raises(ValueError, match="pass it as target=, not fraction="):  # (when the loss is made)
        sl.SynOpsLoss(counter, fraction=S.Iterative(start=0.5))
    counter.remove()


# ---------------------------------------------------------------------------- in Lightning


def _lightning_fit(tmp_path, version: int, epochs: int, ckpt=None):
    L = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from synopsloss.lightning import SynOpsRegularizer

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net, _ = net_and_batches(0)
            self.reg = SynOpsRegularizer(target=S.Iterative(factor=0.7, stage_steps=2, window=2), weight=0.5)

        def configure_callbacks(self):
            return [self.reg]

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y) + self.reg.loss()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(12, 6, generator=g) < torch.linspace(0.2, 0.8, 12).unsqueeze(1)).float()
    data = TensorDataset(x, torch.randint(0, 3, (12,), generator=g))
    module = Module()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / f"ckpt{version}", save_last=True)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[checkpoint])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(data, batch_size=4), ckpt_path=ckpt)
    return module, tmp_path / f"ckpt{version}" / "last.ckpt", data


def test_lightning_equals_the_plain_loop_and_resumes_exactly(tmp_path):
    whole, _, data = _lightning_fit(tmp_path, 0, 4)   # 12 optimizer steps, stages of 2
    # the same training by hand: counter + loss, loss.step() per optimizer step
    net, _ = net_and_batches(0)
    counter = sl.SynOpsCounter(net, neurons=False)
    it = S.Iterative(factor=0.7, stage_steps=2, window=2)
    loss_fn = sl.SynOpsLoss(counter, target=it, weight=0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(4):
        for i in range(0, 12, 4):
            x, y = data.tensors[0][i:i + 4], data.tensors[1][i:i + 4]
            counter.reset()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss = nn.functional.cross_entropy(net(x), y) + loss_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_fn.step()
    counter.remove()
    target = whole.reg.loss_fn.state_dict()["terms"][0]["schedule"]
    assert len(target["stage_targets"]) == 7 and target["stage_targets"] == pytest.approx(it.stage_targets, rel=1e-6)
    assert target["achieved"] == pytest.approx(it.achieved, rel=1e-6)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(whole.net.parameters(), net.parameters()))
    # two epochs, a checkpoint, two more: the same targets and weights as four uninterrupted epochs
    _, ckpt, _ = _lightning_fit(tmp_path, 1, 2)
    resumed, _, _ = _lightning_fit(tmp_path, 2, 4, ckpt=ckpt)
    assert resumed.reg.loss_fn.state_dict()["terms"][0]["schedule"] == target
    assert all(torch.equal(p, q) for p, q in zip(resumed.net.parameters(), whole.net.parameters()))


def test_a_stage_of_uneven_batches_achieves_its_per_sample_mean():
    """An epoch of batches of 8 and 1 samples: "achieved" is the epoch's per-sample synops (as the regularizer
    logs them), not the mean of the two batch means (the 1-sample batch weighed as much as the 8)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    xs = [torch.rand(8, 6), torch.rand(1, 6) * 3]
    counter = sl.SynOpsCounter(net, neurons=False)
    it = S.Iterative(factor=0.8, stage_steps=1, start=1e6)
    loss_fn = sl.SynOpsLoss(counter, target=it)
    totals = []  # per batch: the network-driven layer's synops summed over its samples, by hand (the loss's term)
    for x in xs:
        counter.reset()
        net(x)
        h = torch.relu(net[0](x)).detach().double()
        totals.append(float((h * (net[2].weight != 0).sum(0)).sum()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sl.UnreachableTargetWarning)
            loss_fn()
    loss_fn.step()  # the epoch (one step) ends the stage
    assert it.achieved == [pytest.approx(sum(totals) / 9, rel=1e-6)]
    assert it.stage_targets[-1] == pytest.approx(0.8 * sum(totals) / 9, rel=1e-6)
    counter.remove()
