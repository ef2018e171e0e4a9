"""Large calls made without gradients are reduced when they are made (:func:`synopsloss.records.reduce_now`).

Their input is read while it is in cache and is not held until the forward returns. The numbers must be the
ones of the general reduction (calls made with gradients, reduced at the read) and of a hand count: the fan-out
map of a convolution is the gradient of its output's sum with respect to an all-ones input, with the weights
replaced by their nonzero pattern (independent of the package's transposed convolutions).
"""

from __future__ import annotations

import gc
import math
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import synopsloss as sl
from synopsloss.records import reducible_now

B, C, H = 8, 4, 48  # 8 x 4 x 48 x 48 = 73728 values: a call large enough to be reduced at once


class _Seen(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the name of every aten op run inside it (into ``ops``)."""

    def __init__(self, ops: list) -> None:
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _conv() -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(C, 6, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[conv.weight.abs() < 0.05] = 0.0  # some pruned taps
    return conv


def _fanout(conv: nn.Conv2d) -> torch.Tensor:
    w01 = (conv.weight != 0).double()
    ones = torch.ones(1, C, H, H, dtype=torch.float64, requires_grad=True)
    F.conv2d(ones, w01, None, conv.stride, conv.padding, conv.dilation, conv.groups).sum().backward()
    return ones.grad[0]


def _dense(conv: nn.Conv2d) -> float:
    ones = torch.ones(1, C, H, H, dtype=torch.float64, requires_grad=True)
    F.conv2d(ones, torch.ones_like(conv.weight, dtype=torch.float64), None, conv.stride, conv.padding).sum().backward()
    return float(ones.grad.sum())


def _hand(conv: nn.Conv2d, x: torch.Tensor, events: bool = True) -> dict:
    fan, xd = _fanout(conv), x.double()
    eff = float(((xd != 0).double() * fan).sum()) / B
    synops = float((xd.abs() * fan).sum()) / B
    spiking = bool(((xd == 0) | (xd.abs() == 1)).all())
    integer = events and bool((xd == xd.round()).all())
    return {"synops": synops, "dense": _dense(conv),
            "eff_acs": eff if spiking else synops if integer else 0.0,
            "eff_macs": 0.0 if spiking or integer else eff}


def _inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    r = torch.rand(B, C, H, H, generator=g)
    return {
        "spikes": (r < 0.2).float(),
        "signed spikes": (r < 0.1).float() - (r > 0.9).float(),
        "ReLU activations": torch.relu(torch.randn(B, C, H, H, generator=g)),
        "signed activations": torch.randn(B, C, H, H, generator=g),
        "spike counts": (r * 4).floor(),
        "float64 spikes": (r < 0.3).double(),
        # (the first 4096 values are read first: whole numbers there, a real value past them)
        "spikes and one real value at the end": torch.cat([(r < 0.2).float().view(-1)[:-1],
                                                           torch.tensor([0.5])]).view(B, C, H, H),
        "zeros first, then ReLU activations": torch.relu(torch.randn(B, C, H, H, generator=g)).view(-1).index_fill(
            0, torch.arange(5000), 0.0).view(B, C, H, H),
    }


def _counts(net: nn.Module, x: torch.Tensor, grad: bool, **kw) -> dict:
    counter = sl.SynOpsCounter(net, neurons=False, **kw)
    if grad:
        net(x.clone().requires_grad_(True))
    else:
        with torch.no_grad():
            net(x)
    total = counter.snapshot().total()
    counter.remove()
    return {k: total[k] for k in ("synops", "dense", "eff_acs", "eff_macs")}


class _Functional(nn.Conv2d):
    """Overrides ``forward``: counted by the function mode, not the module hook."""

    def forward(self, x):
        return F.conv2d(x, self.weight * 1.0, None, self.stride, self.padding)


@pytest.mark.parametrize("kind", list(_inputs()))
def test_a_large_call_without_gradients_counts_as_by_hand_and_as_with_gradients(kind):
    x = _inputs()[kind]
    conv = _conv().to(x.dtype)
    assert reducible_now(x, B, C * H * H)
    want = _hand(conv, x)
    fn = _Functional(C, 6, 3, stride=2, padding=1, bias=False).to(x.dtype)
    fn.load_state_dict(conv.state_dict())
    for net in (nn.Sequential(conv), nn.Sequential(fn)):
        now = _counts(net, x, grad=False)
        later = _counts(net, x, grad=True)
        for key, value in want.items():
            # (|x| of analog values is summed over the rows in float32, as at the read: to 1e-6 of float64)
            tol = 1e-6 if key == "synops" and "activations" in kind else 1e-12
            assert now[key] == pytest.approx(value, rel=tol), (kind, key)
            assert now[key] == pytest.approx(later[key], rel=1e-12), (kind, key)


def test_spike_counts_follow_the_integer_spike_option_when_reduced_at_once():
    x = _inputs()["spike counts"]
    conv = _conv()
    got = _counts(nn.Sequential(conv), x, grad=False, integer_spikes="neurobench")
    want = _hand(conv, x, events=False)
    assert got == pytest.approx(want, rel=1e-12)
    assert got["eff_acs"] == 0.0 and got["eff_macs"] > 0


def test_a_layer_pruned_between_batches_without_gradients_is_counted_with_its_new_map():
    conv = _conv()
    net = nn.Sequential(conv)
    x = _inputs()["spikes"]
    counter = sl.SynOpsCounter(net, neurons=False)
    with torch.no_grad():
        net(x)
    assert counter.snapshot().total()["eff_acs"] == pytest.approx(_hand(conv, x)["eff_acs"])
    counter.reset()
    with torch.no_grad():
        conv.weight[:, :2] = 0.0  # in place: its version moves
        net(x)
    assert counter.snapshot().total()["eff_acs"] == pytest.approx(_hand(conv, x)["eff_acs"])
    counter.reset()
    with torch.no_grad():
        conv.weight.data[:, 2] = 0.0  # through .data: no version bump, a new batch checks the map anyway
        net(x)
    assert counter.snapshot().total()["eff_acs"] == pytest.approx(_hand(conv, x)["eff_acs"])


def test_a_weight_changed_in_place_between_two_steps_of_a_batch_counts_each_step_with_its_weight():
    conv = _conv()
    net = nn.Sequential(conv)
    x = _inputs()["spikes"]
    counter = sl.SynOpsCounter(net, neurons=False)
    first = _hand(conv, x)["eff_acs"]
    with torch.no_grad():
        net(x)
        conv.weight[:3] = 0.0
        net(x)
    second = _hand(conv, x)["eff_acs"]
    assert second < first
    assert counter.snapshot().total()["eff_acs"] == pytest.approx(first + second)


def test_a_large_call_without_gradients_is_not_held_after_the_forward():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))
    seen = []
    net[1].register_forward_hook(lambda m, a, out: seen.append(weakref.ref(out)))
    counter = sl.SynOpsCounter(net, neurons=False)
    x = torch.randn(256, 512)
    with torch.no_grad():
        net(x)
    gc.collect()
    assert seen and seen[0]() is None  # the second layer's input (256 x 512 values) was reduced and let go
    fan = (net[2].weight != 0).sum(0).double()
    hidden = torch.relu(net[0](x)).detach().double()
    assert counter.synops(by_layer=True)["2"].item() == pytest.approx(float((hidden.abs() * fan).sum()) / 256)


def test_a_large_call_with_nan_is_reported_when_read():
    net = nn.Sequential(_conv())
    counter = sl.SynOpsCounter(net, neurons=False)
    x = _inputs()["spikes"]
    x[0, 0, 0, 0] = math.nan
    with torch.no_grad():
        net(x)
    with pytest.raises(FloatingPointError, match="NaN or inf in the input of layer"):
        counter.synops()


def _linear_pair():
    torch.manual_seed(7)
    lin = nn.Linear(512, 64, bias=False)
    x0 = (torch.rand(256, 512, generator=torch.Generator().manual_seed(8)) < 0.3).float()
    x1 = (torch.rand(256, 512, generator=torch.Generator().manual_seed(9)) < 0.3).float()
    return lin, x0, x1


def _hand_linear(lin: nn.Linear, x: torch.Tensor) -> float:
    return float((x @ (lin.weight != 0).sum(0).float()).sum()) / x.shape[0]


def test_a_weight_edited_through_data_between_two_steps_without_gradients_counts_each_step_with_its_weight():
    lin, x0, x1 = _linear_pair()
    net = nn.Sequential(lin)
    counter = sl.SynOpsCounter(net, neurons=False)
    first = _hand_linear(lin, x0)
    with torch.no_grad():
        net(x0)
        lin.weight.data[:, :256] = 0.0  # no version bump: the next forward checks the map by value
        net(x1)
    assert counter.synops().item() == pytest.approx(first + _hand_linear(lin, x1), rel=1e-9)


def test_a_call_with_gradients_then_an_in_place_edit_without_them_counts_each_call_with_its_weight():
    lin, x0, x1 = _linear_pair()
    net = nn.Sequential(lin)
    counter = sl.SynOpsCounter(net, neurons=False)
    first = _hand_linear(lin, x0)
    net(x0)  # held for the read, with the weight's nonzero pattern at the call
    with torch.no_grad():
        lin.weight[:, :256] = 0.0
        net(x1)  # reduced at once, with the edited weight
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no warning about the weight: each call has its own)
        warnings.filterwarnings("ignore", "synopsloss: this batch ran the model 1 time", sl.SynOpsWarning)
        assert counter.synops().item() == pytest.approx(first + _hand_linear(lin, x1), rel=1e-9)


@pytest.mark.parametrize("edit", ["data", "fused_adamw"])
def test_a_weight_changed_after_the_forward_without_a_version_bump_leaves_the_count_of_that_forward(edit):
    """A fused optimizer step (or an edit through ``.data``) after the forward and before the read moves no
    version counter: the forward is counted with the weights it used, not with those at the read."""
    lin, x0, _ = _linear_pair()
    with torch.no_grad():
        lin.weight[:, ::3] = 0.0  # exact zeros at the forward
    net = nn.Sequential(lin)
    counter = sl.SynOpsCounter(net, neurons=False)
    want = _hand_linear(lin, x0)
    version = lin.weight._version
    if edit == "data":
        net(x0)
        lin.weight.data[:, 256:] = 0.0
    else:
        try:
            opt = torch.optim.AdamW(lin.parameters(), lr=0.5, fused=True)
        except (RuntimeError, ValueError) as err:  # pragma: no cover - a torch without CPU fused AdamW
            pytest.skip(str(err))
        net(x0).pow(2).sum().backward()
        opt.step()  # the zeros move off zero
        assert bool((lin.weight != 0).all())
    assert lin.weight._version == version  # (no version counter moved)
    assert _hand_linear(lin, x0) != pytest.approx(want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert counter.synops().item() == pytest.approx(want, rel=1e-9)
    counter.reset()
    net(x0)  # the next batch: the new pattern
    assert counter.synops().item() == pytest.approx(_hand_linear(lin, x0), rel=1e-9)


class _Ops(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten ops launched inside it that run a kernel (views, which only make tensor metadata, are not
    counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += not func.is_view
        return func(*args, **(kwargs or {}))


def _same_frame_steps(net: nn.Module, frames, grad: bool = False) -> dict:
    counter = sl.SynOpsCounter(net, neurons=False)
    with torch.set_grad_enabled(grad):
        for step in frames:
            net(step() if callable(step) else step)
    total = counter.snapshot().total()
    counter.remove()
    return {k: total[k] for k in ("synops", "dense", "eff_acs", "eff_macs")}


@pytest.mark.parametrize("kind", ["spikes", "ReLU activations", "spike counts"])
def test_the_same_frame_at_every_step_counts_each_step(kind):
    """Direct encoding (snntorch's tutorials feed the same image at every step): the repeated calls take the
    counts of the first, and the numbers are T times the hand count, as with gradients."""
    x = _inputs()[kind]
    conv = _conv()
    T = 5
    want = _hand(conv, x)
    now = _same_frame_steps(nn.Sequential(conv), [x] * T)
    later = _same_frame_steps(nn.Sequential(conv), [x.clone().requires_grad_(True)] * T, grad=True)
    for key, value in want.items():
        tol = 1e-6 if key == "synops" and "activations" in kind else 1e-12
        assert now[key] == pytest.approx(T * value, rel=tol), key
        assert now[key] == pytest.approx(later[key], rel=1e-12), key


def test_a_frame_viewed_anew_at_each_step_counts_each_step():
    lin, x0, _ = _linear_pair()
    frame = x0.reshape(256, 8, 64)
    now = _same_frame_steps(nn.Sequential(lin), [lambda: frame.view(256, 512)] * 4)
    assert now["synops"] == pytest.approx(4 * _hand_linear(lin, x0), rel=1e-12)


@pytest.mark.parametrize("edit", ["data", "numpy", "copy_"])
def test_a_frame_rewritten_between_steps_counts_each_step_with_its_values(edit):
    """The same tensor object with new values: through ``.data`` or numpy (no version bump) or ``copy_``."""
    lin, x0, x1 = _linear_pair()
    frames = [x0, x1, x0, x1, x1]
    buf = x0.clone()
    seen = []

    def step(i):
        def make():
            if edit == "data":
                buf.data[:] = frames[i]
            elif edit == "numpy":
                buf.numpy()[:] = frames[i].numpy()
            else:
                buf.copy_(frames[i])
            seen.append(buf.clone())
            return buf
        return make

    now = _same_frame_steps(nn.Sequential(lin), [step(i) for i in range(len(frames))])
    want = sum(_hand_linear(lin, f) for f in seen)
    assert len(seen) == 5 and now["synops"] == pytest.approx(want, rel=1e-12)


def test_a_frame_repeated_after_the_weight_is_pruned_counts_with_the_new_map():
    lin, x0, _ = _linear_pair()
    net = nn.Sequential(lin)
    counter = sl.SynOpsCounter(net, neurons=False)
    with torch.no_grad():
        net(x0)
        net(x0)
        first = _hand_linear(lin, x0)
        lin.weight[:, :300] = 0.0
        net(x0)
        net(x0)
    assert counter.synops().item() == pytest.approx(2 * first + 2 * _hand_linear(lin, x0), rel=1e-12)


def test_a_repeated_frame_is_not_read_again():
    """From the third call on (the second keeps a copy), a repeat costs one comparison, not the reads."""
    lin, x0, _ = _linear_pair()
    net = nn.Sequential(lin)
    plain = nn.Sequential(nn.Linear(512, 64, bias=False))
    counter = sl.SynOpsCounter(net, neurons=False)
    with torch.no_grad():
        for _ in range(3):
            net(x0)
        counted, bare = _Ops(), _Ops()
        with counted:
            net(x0)
        with bare:
            plain(x0)
    # the weight's nonzero pattern checked once per forward (a count and its read), then one comparison of the input
    # with its copy (views not counted: they launch nothing): a call read anew launches more than twice that many
    assert counted.n - bare.n <= 5
    assert counter.synops().item() == pytest.approx(4 * _hand_linear(lin, x0), rel=1e-12)


class _Scale(nn.Module):
    def forward(self, x):
        return x.mul_(0.5)


@pytest.mark.parametrize("scaled", [False, True])
def test_a_whole_spike_neurons_output_is_reduced_without_a_test_for_spikes(scaled):
    """A SpikingJelly IF neuron makes 0 and 1 by construction: a large layer reading its output unchanged takes its
    range (one aminmax) and one product, no integer pass. Changed in place after the neuron, the input is read
    (halved spikes are MACs)."""
    from spikingjelly.activation_based import neuron

    torch.manual_seed(0)
    lin = nn.Linear(512, 64, bias=False)
    with torch.no_grad():
        lin.weight[lin.weight.abs() < 0.02] = 0.0
    net = nn.Sequential(neuron.IFNode(v_threshold=0.5), *([_Scale()] if scaled else []), lin)
    x = torch.rand(256, 512)
    spikes = (x >= 0.5).double() * (0.5 if scaled else 1.0)
    want = float((spikes * (lin.weight != 0).sum(0)).sum()) / 256
    counter = sl.SynOpsCounter(net, neurons=False)
    ops = []


    with torch.no_grad(), _Seen(ops):
        net(x)
    total = counter.snapshot().total()
    assert total["synops"] == pytest.approx(want, rel=1e-12)
    assert (total["eff_acs"], total["eff_macs"]) == ((0.0, pytest.approx(2 * want)) if scaled
                                                     else (pytest.approx(want), 0.0))
    # trusted: its range (one aminmax), no integer test; scaled in place: read (its frac too)
    assert bool([f for f in ops if "frac" in f]) is scaled
    assert len([f for f in ops if "aminmax" in f]) == 1 or scaled


class _DataEdit(nn.Module):
    """Edits the spikes through ``.data`` (no version bump) or negates them."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x):
        (x.data.mul_(0.5) if self.how == "half" else x.data.neg_())
        return x


@pytest.mark.parametrize("edit", ["half", "neg", "hook", "maxspike"])
def test_whole_spikes_changed_where_no_version_counter_sees_are_read_anew(edit):
    """The spikes of a whole-spike neuron are trusted by their range too: halved or negated through .data, edited
    in a user's forward hook, or capped at 1.5 (MaxSpike), they were counted as 0/1 spikes (negative synops for
    negated ones)."""
    import sinabs.activation as sa
    import sinabs.layers as sll

    torch.manual_seed(0)
    lin = nn.Linear(10000, 3, bias=False)  # ([B=4, T=2, 10000]: 80000 values, reduced at once)
    fn = sa.MaxSpike(1.5) if edit == "maxspike" else sa.SingleSpike
    iaf = sll.IAF(spike_fn=fn)
    if edit == "hook":
        iaf.register_forward_hook(lambda m, a, o: o.mul_(0.5))
    layers = [iaf] + ([_DataEdit(edit)] if edit in ("half", "neg") else []) + [lin]
    net = nn.Sequential(*layers)
    x = torch.rand(4, 2, 10000) * 3
    seen = []
    lin.register_forward_hook(lambda m, a, o: seen.append(a[0].detach().double().clone()))
    with torch.no_grad():
        net(x)
    iaf.reset_states()
    s = seen[0]
    fan = (lin.weight != 0).sum(0).double()
    spiking = bool(((s == 0) | (s.abs() == 1)).all())
    want = float((s.abs() * fan).sum()) / 4
    eff = float(((s != 0).double() * fan).sum()) / 4
    counter = sl.SynOpsCounter(net, neurons=False)
    with torch.no_grad():
        net(x)
    total = counter.snapshot().total()
    assert total["synops"] == pytest.approx(want, rel=1e-12) and want > 0
    assert (total["eff_acs"], total["eff_macs"]) == ((pytest.approx(eff), 0.0) if spiking
                                                     else (0.0, pytest.approx(eff)))


def test_counters_in_two_threads_count_each_batch_exactly():
    """Each thread its own model and counter, no_grad forwards at the same time: the reused work buffers are the
    thread's own (torch releases the GIL inside its ops: a shared buffer was overwritten between a copy and its
    read, and a batch of zeros counted 131139 synops)."""
    import threading

    n = 1 << 16
    results: dict = {"zeros": [], "spikes": []}
    g = torch.Generator().manual_seed(5)
    inputs = {"zeros": torch.zeros(2, n), "spikes": (torch.rand(2, n, generator=g) < 0.3).float()}
    errors: list = []

    def work(kind: str) -> None:
        try:
            torch.manual_seed(0)
            lin = nn.Linear(n, 8, bias=False)
            counter = sl.SynOpsCounter(lin, neurons=False)
            for _ in range(120):
                with torch.no_grad():
                    lin(inputs[kind])
                results[kind].append(counter.snapshot().total()["synops"])
                counter.reset()
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    want = float(inputs["spikes"].sum()) * 8 / 2  # each spike reaches the 8 outputs (no zero weight)
    assert results["zeros"] == [0.0] * 120
    assert results["spikes"] == [want] * 120


def test_a_large_call_reads_the_same_first_values_with_and_without_gradients():
    """The first values tell real inputs from spikes before any pass; both reads take the same ones (the first in
    memory), so both choose the same arithmetic: no_grad equals the same call with gradients, and the float64
    brute force to float32 rounding of one sum."""
    torch.manual_seed(1)
    lin = nn.Linear(16, 20)
    x = torch.rand(8, 1000, 16, generator=torch.Generator().manual_seed(2))
    x[0, 0] = 0  # (the first row: zeros, which look like spikes; real values after it)
    counter = sl.SynOpsCounter(lin, neurons=False, batch_dim=0)
    with torch.no_grad():
        lin(x)
    now = counter.snapshot().total()["synops"]
    counter.reset()
    lin(x.clone().requires_grad_(True))
    later = counter.snapshot().total()["synops"]
    brute = float((x.double().abs() * (lin.weight != 0).double().sum(0)).sum()) / 8
    assert now == later
    assert now == pytest.approx(brute, rel=1e-9)


@pytest.mark.parametrize("edit", ["none", "scaled", "half_data"])
def test_a_whole_spike_neurons_output_read_with_gradients_needs_no_integer_pass(edit):
    """With gradients the calls are read at the read: a large input that is a SpikingJelly IF neuron's unchanged
    0/1 output (range [0, 1], one of 0 and 1 at its ends) is read with no integer pass; scaled in place (a new
    version) or halved through .data (its max is then 0.5), it is read in full and counted as the values it holds."""
    from spikingjelly.activation_based import neuron

    torch.manual_seed(0)
    lin = nn.Linear(512, 64, bias=False)
    with torch.no_grad():
        lin.weight[lin.weight.abs() < 0.02] = 0.0
    mid = {"none": [], "scaled": [_Scale()], "half_data": [_DataEdit("half")]}[edit]
    net = nn.Sequential(neuron.IFNode(v_threshold=0.5), *mid, lin)
    x = torch.rand(256, 512, requires_grad=True)
    spikes = (x.detach() >= 0.5).double() * (1.0 if edit == "none" else 0.5)
    fan = (lin.weight != 0).sum(0).double()
    want = float((spikes * fan).sum()) / 256
    eff = float(((spikes != 0).double() * fan).sum()) / 256
    counter = sl.SynOpsCounter(net, neurons=False)
    if edit == "scaled":
        net(x.detach())  # (an in-place op on a leaf's view that needs grad is refused by torch: no graph here)
    else:
        net(x)
    ops = []


    with _Seen(ops):
        total = counter.snapshot().total()
    assert total["synops"] == pytest.approx(want, rel=1e-12)
    assert (total["eff_acs"], total["eff_macs"]) == ((pytest.approx(eff), 0.0) if edit == "none"
                                                     else (0.0, pytest.approx(eff)))
    assert bool([f for f in ops if "frac" in f]) is (edit != "none")  # the integer pass only when not trusted


def _half_some(module, args, out):
    """A user's hook, run before the counter's (prepend=True): 0.5 in place of some spikes past the first values."""
    new = out.clone()
    flat = new.view(-1)
    flat[8192::3] = flat[8192::3] * 0.5
    return new


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("change", ["prepend_hook", "spiking_mode_off"])
def test_a_whole_spike_neuron_changed_after_attaching_is_read_anew(change, grad):
    """The trust in a neuron's 0/1 spikes is decided at each call: a user's hook that runs before the counter's
    (prepend=True) and returns 0.5s, or SpikingJelly's surrogate switched to its non-spiking mode after the counter
    attached (sigmoid outputs, exactly 0 and 1 where saturated), are read as the values they are (MACs)."""
    from spikingjelly.activation_based import layer, neuron, surrogate

    torch.manual_seed(0)
    node = neuron.LIFNode(step_mode="m", surrogate_function=surrogate.Sigmoid())
    lin = layer.Linear(40000, 3, bias=False, step_mode="m")
    net = nn.Sequential(node, lin)
    counter = sl.SynOpsCounter(net, neurons=False)
    if change == "prepend_hook":
        node.register_forward_hook(_half_some, prepend=True)
    else:
        node.surrogate_function.set_spiking_mode(False)
    seen = []
    lin.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().double().clone()))
    x = torch.randn(2, 2, 40000) * 200  # [T, B, N]: 160000 values (saturated: exactly 0 and 1 at the ends)
    with torch.set_grad_enabled(grad):
        net(x.requires_grad_(grad))
    s = seen[0]
    assert not bool(((s == 0) | (s == 1)).all())  # no spikes: values
    fan = (lin.weight != 0).sum(0).double()
    total = counter.snapshot().total()
    assert total["synops"] == pytest.approx(float((s.abs() * fan).sum()) / 2, rel=1e-6)
    assert (total["eff_acs"], total["eff_macs"]) == (0.0, pytest.approx(float(((s != 0).double() * fan).sum()) / 2))


def test_a_forward_set_on_a_relu_instance_after_attaching_is_read_as_values():
    """relu.forward replaced after the counter attached: the values after the average pool are read as they are."""
    lin = nn.Linear(2 * 4 * 4, 5, bias=False)
    relu = nn.ReLU()
    net = nn.Sequential(nn.AvgPool2d(2), relu, nn.Flatten(), lin)
    counter = sl.SynOpsCounter(net, neurons=False, batch_size=3)
    relu.forward = lambda t: 3 * t
    g = torch.Generator().manual_seed(9)
    x = (torch.rand(3, 2, 8, 8, generator=g) < 0.5).float()
    with torch.no_grad():
        net(x)
    h = (3 * F.avg_pool2d(x, 2).flatten(1)).double()
    fan = (lin.weight != 0).sum(0).double()
    got = counter.snapshot().per_layer()["3"]
    assert got["synops"] == pytest.approx(float((h * fan).sum()) / 3) and got["eff_acs"] == 0.0


def test_a_buffer_filled_step_by_step_is_named_as_such_and_counted_right():
    """Spikes written into a preallocated [T, B, D] buffer (h[t] = ...), a Linear reading h[t]: each write moves the
    version the views share, so the read cannot tell which part changed; the warning says the input is part of a
    buffer and that writes elsewhere leave the count right (it said the input was counted with new values). The
    count equals the hand count."""
    T, B, D = 3, 2, 6

    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(D, D), nn.Linear(D, D)

        def forward(self, x):
            h = torch.zeros(T, B, D)
            out = 0
            for t in range(T):
                h[t] = (self.fc1(x[t]) > 0).float()
                out = out + self.fc2(h[t])
            self.h = h.detach().clone()
            return out

    torch.manual_seed(0)
    net = Loop()
    counter = sl.SynOpsCounter(net, time_dim=0, neurons=False)
    net((torch.rand(T, B, D) < 0.5).float())
    with pytest.warns(sl.SynOpsWarning, match=r"is part of a tensor of shape \(3, 2, 6\) .* buf\[t\] = \.\.\."):
        got = counter.snapshot().per_layer()["fc2"]["synops"]
    assert got == pytest.approx(float((net.h.double() @ (net.fc2.weight != 0).double().sum(0)).sum()) / B)


@pytest.mark.parametrize("kind", ["default", "graded", "own_spike_fn"])
def test_an_snntorch_leakys_spikes_are_trusted_only_with_a_snntorch_surrogate_and_factor_one(kind):
    """snntorch Leaky fires spike_grad(mem - threshold) * graded_spikes_factor: with a snntorch surrogate (the
    Heaviside step forward) and factor 1 its 0/1 output is trusted (a large layer reading it takes no integer pass);
    a factor of 0.5, or a spike function of one's own (a sigmoid), is read as the values it makes."""
    import snntorch as snn

    torch.manual_seed(0)
    kw = {"graded": dict(graded_spikes_factor=0.5), "own_spike_fn": dict(spike_grad=torch.sigmoid)}.get(kind, {})
    lif = snn.Leaky(beta=0.9, init_hidden=True, threshold=0.5, **kw)
    lin = nn.Linear(20000, 3, bias=False)
    net = nn.Sequential(lif, lin)
    counter = sl.SynOpsCounter(net, neurons=False)
    seen = []
    lin.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().double().clone()))
    ops = []


    with torch.no_grad(), _Seen(ops):
        net(torch.rand(4, 20000))
        total = counter.snapshot().total()
    s = seen[0]
    fan = (lin.weight != 0).sum(0).double()
    assert total["synops"] == pytest.approx(float((s.abs() * fan).sum()) / 4, rel=1e-6)
    spikes = bool(((s == 0) | (s == 1)).all())
    assert spikes is (kind == "default")
    eff = float(((s != 0).double() * fan).sum()) / 4
    assert (total["eff_acs"], total["eff_macs"]) == ((pytest.approx(eff), 0.0) if spikes else (0.0, pytest.approx(eff)))
    assert bool([f for f in ops if "frac" in f]) is (kind != "default")  # (trusted: no integer pass)
