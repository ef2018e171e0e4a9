"""Every way a user can get a wrong count either counts right or says what to do.

Each test computes the right number independently (by hand or brute force)
or checks the error class and the words of its message.
"""

from __future__ import annotations

import copy
import gc
import pickle
import warnings

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import synopsloss as sl
from helpers import brute_force_counts


def _lin(n_in: int, n_out: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out, bias=False)


def _fan(layer: nn.Linear) -> torch.Tensor:
    return (layer.weight != 0).sum(0).double()


# --------------------------------------------------------------------------- signed and real inputs


def test_signed_spikes_count_their_magnitude_and_do_not_cancel():
    net = nn.Sequential(_lin(4, 3))
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, 0.0, 0.0, 1.0]])
    counter = sl.SynOpsCounter(net)
    net(x)
    got = counter.snapshot().per_layer()["0"]
    want = float((x.abs().double() * _fan(net[0])).sum()) / 2  # 6 events x 3 synapses / 2 samples
    assert want == 9.0
    assert got["synops"] == pytest.approx(want)
    assert got["eff_acs"] == 9.0 and got["eff_macs"] == 0.0  # {-1, 0, 1}: spikes


def test_flipping_signs_cannot_lower_the_loss_and_gradient_at_zero_is_the_map():
    net = nn.Sequential(_lin(3, 2))
    counter = sl.SynOpsCounter(net)
    x = torch.tensor([[1.0, 0.0, -2.0]], requires_grad=True)
    net(x)
    s = counter.synops()
    s.backward()
    fan = _fan(net[0]).float()
    assert float(s.detach()) == pytest.approx(float((x.detach().abs() * fan).sum()))
    # +fan-out at x >= 0 (also at 0: silent neurons still get a gradient), -fan-out below 0
    torch.testing.assert_close(x.grad, torch.tensor([[1.0, 1.0, -1.0]]) * fan)
    counter.reset()
    net(-x.detach())
    assert float(counter.synops().detach()) == pytest.approx(float(s.detach()))


# --------------------------------------------------------------------------- ambiguous layouts


def test_time_first_input_with_batch_a_multiple_of_t_is_an_error_not_a_guess():
    net = nn.Sequential(_lin(5, 2))
    counter = sl.SynOpsCounter(net)
    net(torch.ones(3, 6, 5))  # [T=3, B=6, C]: 6 is a multiple of 3
    with pytest.raises(ValueError, match=r"batch_dim=1 for time-first \[T, B, \.\.\.\]"):
        counter.snapshot()
    fixed = sl.SynOpsCounter(net, batch_dim=1)
    net(torch.ones(3, 6, 5))
    assert fixed.samples == 6
    assert fixed.snapshot().per_layer()["0"]["dense"] == 3 * 5 * 2  # 3 steps x 10 taps per sample


class _StateFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.rec = _lin(3, 4), _lin(4, 4, seed=1)

    def forward(self, h0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.inp(x) + self.rec(h0[0]))


def test_model_called_with_the_state_first_does_not_take_its_first_dim_as_the_batch():
    net = _StateFirst()
    counter = sl.SynOpsCounter(net)
    net(torch.zeros(1, 8, 4), torch.ones(8, 3))  # h0 [layers, B, H] first: dim 0 is 1, not B
    with pytest.raises(ValueError, match="batch_size=B"):
        counter.snapshot()
    fixed = sl.SynOpsCounter(net, batch_size=8)
    net(torch.zeros(1, 8, 4), torch.ones(8, 3))
    assert fixed.snapshot().per_layer()["inp"]["eff_acs"] == float(_fan(net.inp).sum())


# --------------------------------------------------------------------------- forgotten reset


def test_evaluation_loop_without_reset_warns_that_batches_add_up():
    net = nn.Sequential(_lin(3, 2))
    counter = sl.SynOpsCounter(net)
    net(torch.ones(2, 3))
    counter.snapshot()
    with pytest.warns(sl.SynOpsWarning, match=r"without counter.reset\(\)"):
        net(torch.ones(2, 3))


def test_training_loop_without_reset_says_reset_not_backward_twice():
    net = nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 2))
    counter = sl.SynOpsCounter(net)
    x = torch.ones(2, 3)
    net(x).sum().add(counter.synops()).backward()
    with pytest.raises(RuntimeError, match=r"backpropagated, without counter.reset\(\)"):
        net(x)


def test_auto_reset_makes_each_call_one_batch():
    net = nn.Sequential(_lin(3, 2))
    counter = sl.SynOpsCounter(net, auto_reset=True)
    xs = [torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])]
    for x in xs:
        net(x)
    acc = counter.snapshot(accumulated=True)
    want = sum(float((x.abs().double() * _fan(net[0])).sum()) for x in xs) / 3  # 3 samples in all
    assert acc.samples == 3
    assert acc.per_layer()["0"]["synops"] == pytest.approx(want)
    assert counter.snapshot().per_layer()["0"]["synops"] == pytest.approx(
        float((xs[1].double() * _fan(net[0])).sum()) / 2)


def test_truncated_bptt_error_names_the_fix():
    net = nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 2))
    counter = sl.SynOpsCounter(net)
    for _ in range(2):  # the first chunk of two time steps
        net(torch.ones(2, 3))
    counter.synops().backward()
    with pytest.raises(RuntimeError, match=r"truncated BPTT, after each backward"):
        net(torch.ones(2, 3))
    counter.reset()  # the documented fix: one chunk per reset
    net(torch.ones(2, 3))
    counter.synops().backward()


# --------------------------------------------------------------------------- checkpointing and failed forwards


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing_counts_each_forward_once(reentrant):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = _lin(3, 4), _lin(4, 2, seed=2)

        def forward(self, x):
            h = checkpoint(lambda t: torch.relu(self.a(t)), x, use_reentrant=reentrant)
            return self.b(h)

    net = Net()
    x = torch.rand(2, 3, requires_grad=True)
    counter = sl.SynOpsCounter(net)
    out = net(x)
    before = counter.snapshot().per_layer()
    (out.sum() + counter.synops()).backward()  # re-runs self.a's forward
    after = counter.snapshot().per_layer()
    assert after == before
    assert after["a"]["eff_macs"] == pytest.approx(brute_force_counts(net.a, x.detach(), 2)["eff_macs"])
    counter.reset()
    assert counter.snapshot(accumulated=True).per_layer() == before


def test_a_forward_that_raised_never_enters_the_totals():
    class Flaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = _lin(3, 2)
            self.fail = False

        def forward(self, x):
            y = self.a(x)
            if self.fail:
                raise RuntimeError("boom")
            return y

    net = Flaky()
    counter = sl.SynOpsCounter(net)
    net(torch.ones(2, 3))
    counter.reset()
    net.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        net(torch.ones(4, 3))
    with pytest.raises(RuntimeError, match="last forward pass of the model raised"):
        counter.synops()
    counter.reset()  # drops the partial batch
    acc = counter.snapshot(accumulated=True)
    assert acc.samples == 2
    assert acc.per_layer()["a"]["eff_acs"] == float(_fan(net.a).sum())


# --------------------------------------------------------------------------- AvgPool spike events


def _pool_net(pool: nn.Module, head: nn.Module) -> nn.Sequential:
    return nn.Sequential(pool, head)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_spikes_into_avgpool_are_corrected(dtype):
    torch.manual_seed(0)
    spikes = (torch.rand(2, 1, 6, 6) < 0.5).to(dtype)
    net = nn.Sequential(nn.AvgPool2d(3), nn.Flatten(), nn.Linear(4, 2, bias=False)).to(dtype)
    counter = sl.SynOpsCounter(net)
    net(spikes)
    events = torch.nn.functional.avg_pool2d(spikes.double(), 3, divisor_override=1).reshape(2, 4)
    want = float((events * _fan(net[2])).sum()) / 2
    assert counter.snapshot().per_layer()["2"]["synops"] == pytest.approx(want, rel=1e-9)


def test_slices_and_permutes_of_pool_outputs_are_corrected_position_by_position():
    class SlicePermute(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d((2, 3))  # uneven windows over 5x7: divisors differ
            self.fc = nn.Linear(2, 3, bias=False)

        def forward(self, x):
            y = self.pool(x)  # [B, C, 2, 3]
            return self.fc(y[:, :2].permute(0, 1, 3, 2))  # a slice, then the H axis last

    torch.manual_seed(0)
    x = (torch.rand(2, 3, 5, 7) < 0.5).float()
    net = SlicePermute()
    counter = sl.SynOpsCounter(net, batch_dim=0)
    net(x)
    # events: spikes summed over each adaptive window (by hand: window bounds of adaptive pooling)
    ev = torch.zeros(2, 3, 2, 3, dtype=torch.float64)
    for i in range(2):
        for j in range(3):
            h0, h1 = (i * 5) // 2, -((-(i + 1) * 5) // 2)
            w0, w1 = (j * 7) // 3, -((-(j + 1) * 7) // 3)
            ev[:, :, i, j] = x[:, :, h0:h1, w0:w1].double().sum((-1, -2))
    ev = ev[:, :2].permute(0, 1, 3, 2)
    want = float((ev * _fan(net.fc)).sum()) / 2
    assert counter.snapshot().per_layer()["fc"]["synops"] == pytest.approx(want, rel=1e-9)


def test_pool_output_modified_in_place_is_flagged_not_corrected():
    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool, self.fc = nn.AvgPool1d(2), nn.Linear(2, 2, bias=False)

        def forward(self, x):
            y = self.pool(x)
            y.mul_(3.0)
            return self.fc(y)

    net = InPlace()
    x = torch.ones(1, 1, 4)
    counter = sl.SynOpsCounter(net)
    with pytest.warns(sl.SynOpsWarning, match="modified in place after pooling"):
        net(x)
    got = counter.snapshot().per_layer()["fc"]["synops"]
    assert got == pytest.approx(float((torch.full((2,), 3.0).double() * _fan(net.fc)).sum()))


def test_real_valued_pool_inputs_are_not_turned_into_events():
    # the pooled values times the divisor happen to be integers (0.5 + 1.5), but the input is no spike count
    net = nn.Sequential(nn.AvgPool1d(2), nn.Linear(2, 1, bias=False))
    x = torch.tensor([[[0.5, 1.5, 0.25, 0.75]]])
    counter = sl.SynOpsCounter(net)
    net(x)
    pooled = torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert counter.snapshot().per_layer()["1"]["synops"] == pytest.approx(float((pooled * _fan(net[1])).sum()))


# --------------------------------------------------------------------------- data-fed layers


def test_a_recurrent_state_passed_back_in_is_not_data():
    class Rec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.rec = _lin(3, 4), _lin(4, 4, seed=1)

        def forward(self, x, h):
            h = torch.relu(self.inp(x) + self.rec(h))
            return h, h

    net = Rec()
    counter = sl.SynOpsCounter(net)
    h = torch.zeros(2, 4)
    with torch.no_grad():
        for _ in range(3):
            _, h = net(torch.ones(2, 3), h)
    assert counter.data_fed_layers() == ["inp"]


def test_a_buffer_passed_as_an_argument_is_not_data():
    class WithBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = _lin(3, 3), _lin(3, 3, seed=1)
            self.register_buffer("bias_input", torch.ones(2, 3))

        def forward(self, x, extra):
            return self.a(x) + self.b(extra)

    net = WithBuffer()
    counter = sl.SynOpsCounter(net)
    net(torch.ones(2, 3), net.bias_input)
    assert counter.data_fed_layers() == ["a"]


# --------------------------------------------------------------------------- clear errors


def test_vmap_with_a_counter_attached_says_what_to_do():
    net = nn.Sequential(_lin(3, 2))
    counter = sl.SynOpsCounter(net)
    with pytest.raises(RuntimeError, match=r"torch.func transform.*counter.paused\(\)"):
        torch.func.vmap(net)(torch.ones(4, 1, 3))
    with counter.paused():
        torch.func.vmap(net)(torch.ones(4, 1, 3))


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python integer")  # expected here; the test is about something else
def test_jit_trace_with_a_counter_attached_says_what_to_do():
    net = nn.Sequential(_lin(3, 2))
    counter = sl.SynOpsCounter(net)
    with pytest.raises(RuntimeError, match=r"torch.jit.trace.*counter.remove\(\)"):
        torch.jit.trace(net, torch.ones(1, 3))
    counter.remove()
    torch.jit.trace(net, torch.ones(1, 3))


def test_copying_or_pickling_a_counter_or_a_loss_explains_the_alternative():
    net = nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 2))
    counter = sl.SynOpsCounter(net)
    loss = sl.SynOpsLoss(counter, target=1.0)
    for obj, what in ((counter, "counter.snapshot()"), (loss, "state_dict()")):
        with pytest.raises(TypeError, match=what.replace("(", r"\(").replace(")", r"\)")):
            copy.deepcopy(obj)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(obj)
    net(torch.ones(2, 3))
    snap = pickle.loads(pickle.dumps(counter.snapshot()))  # plain data pickles
    assert snap.per_layer() == counter.snapshot().per_layer()


def test_a_batch_of_zero_samples_says_so():
    net = nn.Sequential(_lin(3, 2))
    counter = sl.SynOpsCounter(net)
    net(torch.ones(0, 3))
    with pytest.raises(ValueError, match="batch of 0 samples"):
        counter.synops()


def test_unbatched_calls_get_advice_that_fixes_them():
    net = nn.Sequential(_lin(3, 2))
    counter = sl.SynOpsCounter(net)
    x = torch.tensor([1.0, 0.0, 1.0])
    net(x)  # one sample without a batch dimension: dim 0 has 3 entries
    with pytest.raises(ValueError, match=r"x.unsqueeze\(0\)"):
        counter.snapshot()
    with pytest.warns(sl.SynOpsWarning, match="leaves the last batch out"):
        counter.reset()
    net(x.unsqueeze(0))  # the advice
    assert counter.snapshot().per_layer()["0"]["eff_acs"] == float(_fan(net[0])[[0, 2]].sum())


def test_reading_after_remove_says_the_counter_is_detached():
    net = nn.Sequential(_lin(3, 2))
    with sl.SynOpsCounter(net) as counter:
        pass
    net(torch.ones(1, 3))
    with pytest.raises(RuntimeError, match=r"detached .*counter.attach\(\)"):
        counter.synops()


def test_samples_are_found_in_nested_list_inputs_like_neurobench_cells():
    class Cell(nn.Module):  # NeuroBench's recurrent-cell tests call model([x, (h, c)])
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.LSTMCell(3, 4)

        def forward(self, inputs):
            x, (h, c) = inputs
            return self.cell(x, (h, c))

    net = Cell()
    counter = sl.SynOpsCounter(net)
    net([torch.ones(5, 3), (torch.zeros(5, 4), torch.zeros(5, 4))])
    assert counter.samples == 5


# --------------------------------------------------------------------------- the loss


@pytest.mark.filterwarnings("ignore:SynOpsLoss. the target for")  # expected here; the test is about something else
@pytest.mark.filterwarnings("ignore:synopsloss. the model was called again after this batch")  # expected here; the test is about something else
def test_loss_warns_when_its_synops_carry_no_gradient():
    net = nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 2, seed=1), nn.ReLU(), _lin(2, 2, seed=2))
    counter = sl.SynOpsCounter(net)
    loss = sl.SynOpsLoss(counter, target=1.0)
    with torch.no_grad():  # forward without gradient, loss computed with it on
        net(torch.ones(2, 3))
    with pytest.warns(UserWarning, match="carry no gradient"):
        loss()
    # a frozen first layer: nothing trainable feeds layer 2
    for p in net[0].parameters():
        p.requires_grad_(False)
    for p in net[2].parameters():
        p.requires_grad_(False)
    counter2 = sl.SynOpsCounter(net)
    loss2 = sl.SynOpsLoss(counter2, target=1.0, layers=["2"])
    net(torch.ones(2, 3))
    with pytest.warns(UserWarning, match=r"\['2'\] carry no gradient"):
        loss2()


def test_a_schedule_never_stepped_warns_that_the_loss_stays_at_zero():
    net = nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 2, seed=1))
    counter = sl.SynOpsCounter(net)
    loss = sl.SynOpsLoss(counter, target=1.0, weight=sl.schedules.Warmup(1.0, steps=10))
    loss.unstepped_warning_calls = 3
    caught = []
    for _ in range(3):
        counter.reset()
        net(torch.ones(2, 3))
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            value = loss()
        caught += [str(m.message) for m in w]
    assert float(value) == 0.0
    assert any("loss.step() was never called" in m and "weight is 0" in m for m in caught)


# --------------------------------------------------------------------------- memory


def test_counters_never_removed_do_not_pile_up_hooks():
    net = nn.Sequential(_lin(3, 4), nn.ReLU(), _lin(4, 2))

    def evaluate():
        counter = sl.SynOpsCounter(net)
        with torch.no_grad():
            net(torch.ones(2, 3))
        return counter.snapshot().total()["synops"]

    values = {evaluate() for _ in range(200)}
    gc.collect()
    assert len(values) == 1
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_map_cache_is_bounded_and_reported():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    net = nn.Sequential(conv)
    counter = sl.SynOpsCounter(net)
    cache = counter._maps["0"]
    cache.max_bytes = 2 * 8 * 8 * 8  # room for two 8x8 float64 maps
    sizes = (8, 6, 7, 8)
    for s in sizes:
        counter.reset()
        net(torch.ones(1, 1, s, s))
    assert counter.map_cache_bytes == cache.nbytes <= cache.max_bytes
    assert counter.map_cache_bytes == (8 * 8 + 7 * 7) * 8  # the two most recent shapes
    counter.reset()
    net(torch.ones(1, 1, 8, 8))  # still exact after evictions
    assert counter.snapshot().per_layer()["0"]["eff_acs"] == float(brute_force_counts(conv, torch.ones(1, 1, 8, 8), 1)["eff_acs"])


def test_sums_over_more_than_2_to_the_24_rows_are_exact():
    net = nn.Sequential(nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    n = (1 << 24) + 3
    counter = sl.SynOpsCounter(net, batch_dim=0)
    net(torch.ones(1, n, 1))
    got = counter.snapshot().per_layer()["0"]
    assert got["synops"] == float(n) and got["eff_acs"] == float(n)


class _DropConnect(nn.Module):
    """A parametrization drawing a new random mask at each evaluation (DropConnect, hard-concrete gates)."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list = []

    def forward(self, w):
        m = torch.rand_like(w) < 0.5
        self.masks.append(m)
        return w * m


def _dropconnect_run(count: bool):
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    lin = nn.Linear(8, 6, bias=False)
    drop = _DropConnect()
    parametrize.register_parametrization(lin, "weight", drop)
    xs = [(torch.rand(3, 8) < 0.4).float() for _ in range(4)]
    counter = sl.SynOpsCounter(lin) if count else None
    ys = [lin(x) for x in xs]
    got = counter.snapshot().per_layer()[""]["synops"] if counter else None
    return lin, drop, xs, ys, got


def test_a_random_parametrization_is_evaluated_once_per_call_and_its_mask_is_counted():
    """The counter read a parametrized weight again after each call (and at the read): a random mask was drawn
    anew, so the model's outputs changed (the random stream moved) and another mask was counted, silently. By
    hand: each call's mask is the one whose product gives that call's output."""
    _, _, _, plain, _ = _dropconnect_run(False)
    lin, drop, xs, ys, got = _dropconnect_run(True)
    assert all(torch.equal(a, b) for a, b in zip(plain, ys))  # attaching the counter changed nothing
    w0 = lin.parametrizations.weight.original.detach()
    want = 0.0
    for x, y in zip(xs, ys):
        (mask,) = [m for m in drop.masks if torch.equal(x @ (w0 * m).T, y)][:1]
        want += float((x.double() * (w0 * mask != 0).double().sum(0)).sum())
    assert got == pytest.approx(want / 3)


def test_spectral_norm_buffers_are_those_of_a_model_never_counted():
    """spectral_norm runs a power iteration at each evaluation in training: the counter's reads moved its ``_u``
    buffer (and the outputs). Reference: the same model run without the counter."""
    from torch.nn.utils.parametrizations import spectral_norm

    def run(count: bool):
        torch.manual_seed(0)
        net = nn.Sequential(spectral_norm(nn.Linear(8, 6)), nn.ReLU(), nn.Linear(6, 2)).train()
        xs = [(torch.rand(3, 8) < 0.4).float() for _ in range(3)]
        counter = sl.SynOpsCounter(net) if count else None
        ys = []
        for x in xs:
            if counter:
                counter.reset()
            ys.append(net(x))
            if counter:
                counter.synops()
                counter.table()
        return torch.stack(ys), net.state_dict()

    (a, sa), (b, sb) = run(False), run(True)
    assert torch.equal(a, b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
