"""Bad input gets a clear error (what happened, what to do); nothing is silently miscounted.

Each test provokes one misuse and checks both halves of the message: the diagnosis and the
remedy. Where the counter must keep counting (two counters, weights that change shape), the
numbers are checked against brute force from ``tests/helpers.py``.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

import synopsloss as sl
from synopsloss.maps import OpCounts
from synopsloss.registry import register_rule

from helpers import brute_force_counts


def _linear(n_in: int = 3, n_out: int = 2) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(n_in, n_out, bias=False)


def _spikes(*shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(shape, generator=g) < 0.5).float()


# ----------------------------------------------------------------------------- attach-time errors


def test_model_without_countable_layer_is_refused_with_remedy() -> None:
    net = nn.Sequential(nn.ReLU(), nn.MaxPool1d(2))
    with pytest.raises(ValueError) as err:
        sl.SynOpsCounter(net)
    msg = str(err.value)
    assert "no layer synopsloss can count" in msg and "nothing would be counted" in msg
    assert "register_rule" in msg
    assert not net._forward_hooks and not net._forward_pre_hooks  # refused: nothing left attached


class _Bilinearish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = _linear()
        self.emb = nn.Embedding(4, 3)
        self.bil = nn.Bilinear(2, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_unsupported_layers_are_named_in_one_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counter = sl.SynOpsCounter(_Bilinearish())
    counter.remove()
    msgs = [str(w.message) for w in caught if issubclass(w.category, sl.UnsupportedLayerWarning)]
    assert len(msgs) == 1
    assert "emb (Embedding)" in msgs[0] and "bil (Bilinear)" in msgs[0]
    assert "NOT included" in msgs[0] and "register_rule" in msgs[0]
    assert counter.unsupported == ["emb (Embedding)", "bil (Bilinear)"]


def test_unsupported_layers_raise_with_strict_and_leave_no_hooks() -> None:
    net = _Bilinearish()
    with pytest.raises(TypeError, match=r"emb \(Embedding\).*bil \(Bilinear\).*register_rule"):
        sl.SynOpsCounter(net, strict=True)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


# ----------------------------------------------------------------------------- call-time errors


class _TwoInputs(nn.Linear):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x + y)


class _CallsTwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = _TwoInputs(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x, x)


def test_parameter_layer_called_with_two_tensors_is_refused_with_remedy() -> None:
    net = _CallsTwoInputs()
    counter = sl.SynOpsCounter(net, ops="none")  # module hooks only (ops="auto" counts its forward op by op)
    with pytest.raises(ValueError) as err:
        net(_spikes(2, 3))
    msg = str(err.value)
    assert "'mix'" in msg and "2 tensor inputs" in msg
    assert "register a custom rule" in msg.lower() and "counter.paused()" in msg
    # the remedy works: paused calls are not counted and do not raise
    counter.reset()
    with counter.paused():
        net(_spikes(2, 3))
    with pytest.raises(RuntimeError, match="before any forward pass"):
        counter.snapshot().per_layer()
    counter.remove()


class _CroppedConv(nn.Conv1d):
    """A Conv1d that drops its first output position: the Conv1d map no longer fits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., 1:]


def test_shape_the_map_does_not_fit_names_layer_and_rule() -> None:
    net = nn.Sequential(_CroppedConv(1, 1, 3))
    counter = sl.SynOpsCounter(net, ops="none")  # noqa: F841 (keeps the hooks alive; module hooks only)
    with pytest.raises(ValueError) as err:
        net(_spikes(2, 1, 6))
    msg = str(err.value)
    assert "layer '0'" in msg and "(4,)" in msg and "(3,)" in msg  # computed vs observed output shape
    assert "register_rule" in msg


def test_custom_rule_returning_wrong_map_shape_is_reported() -> None:
    class Gain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    rules: dict = {}

    @register_rule(Gain, sample_ndim=1, registry=rules)
    def _wrong(module, w01, in_shape, out_shape):  # forgets one neuron
        return w01[:-1].clone()

    net = nn.Sequential(Gain())
    counter = sl.SynOpsCounter(net, custom_rules=rules)  # noqa: F841
    with pytest.raises(ValueError, match=r"layer '0'.*returned a map of shape \(3,\) for an input sample of shape \(4,\)"):
        net(_spikes(2, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_input_raises_floating_point_error_naming_the_layer(bad: float) -> None:
    net = nn.Sequential(_linear(3, 4), nn.ReLU(), _linear(4, 2))
    counter = sl.SynOpsCounter(net)
    x = _spikes(2, 3)
    x[1, 0] = bad
    net(x)
    with pytest.raises(FloatingPointError) as err:
        counter.synops()
    assert "NaN or inf" in str(err.value) and "'0'" in str(err.value)
    assert "Check the data" in str(err.value)
    with pytest.raises(FloatingPointError, match=r"NaN or inf in the input of layer '0'.*Check the data"):
        counter.snapshot().per_layer()
    # after a reset and clean data everything reads again, equal to brute force
    counter.reset()
    clean = _spikes(2, 3)
    net(clean)
    assert counter.snapshot().per_layer()["0"] == pytest.approx(brute_force_counts(net[0], clean, 2))


def test_batch_size_undeterminable_when_only_a_submodule_is_called() -> None:
    net = nn.Sequential(_linear())
    counter = sl.SynOpsCounter(net)
    net[0](_spikes(2, 3))  # the root model never sees the batch
    for read in (counter.synops, counter.snapshot):
        with pytest.raises(ValueError) as err:
            read()
        assert "cannot tell how many samples" in str(err.value)
        assert "the model itself was not called" in str(err.value)
        assert "batch_size=B" in str(err.value)
    # the remedy
    fixed = sl.SynOpsCounter(nn.Sequential(net[0]), batch_size=2)
    fixed.model[0](_spikes(2, 3))
    assert fixed.snapshot().per_layer()["0"] == pytest.approx(brute_force_counts(net[0], _spikes(2, 3), 2))


class _KwargsOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = _linear()

    def forward(self, *, batch: dict) -> torch.Tensor:
        return self.fc(batch["x"])


def test_samples_found_in_nested_keyword_inputs() -> None:
    net = _KwargsOnly()
    counter = sl.SynOpsCounter(net)
    net(batch={"x": _spikes(2, 3)})
    assert counter.samples == 2


class _MakesItsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = _linear()

    def forward(self, n: int) -> torch.Tensor:
        return self.fc(torch.ones(n, 3))


def test_batch_size_undeterminable_without_tensor_argument() -> None:
    net = _MakesItsInput()
    counter = sl.SynOpsCounter(net)
    net(2)
    with pytest.raises(ValueError, match=r"called without a tensor argument.*batch_size=B"):
        counter.synops()


class _Regroups(nn.Module):
    """Reshapes [2, 3] into [3, 2] rows: rows are not a multiple of the 2 samples."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = _linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(-1, 2))


def test_rows_not_a_multiple_of_samples_are_refused() -> None:
    net = _Regroups()
    counter = sl.SynOpsCounter(net)
    net(_spikes(2, 3))
    with pytest.raises(ValueError) as err:
        counter.snapshot().per_layer()
    msg = str(err.value)
    assert "'fc' received 3 rows" in msg and "not a multiple of the 2 samples" in msg
    assert "batch_dim=1" in msg and "batch_size=B" in msg


def test_new_batch_size_without_reset_is_refused() -> None:
    net = nn.Sequential(_linear())
    counter = sl.SynOpsCounter(net)
    net(_spikes(2, 3))
    with pytest.raises(ValueError, match=r"called with 4 samples .* after 2 .*call counter.reset\(\)"):
        net(_spikes(4, 3))


def test_reading_before_any_forward_pass_says_run_the_model() -> None:
    counter = sl.SynOpsCounter(nn.Sequential(_linear()))
    for what, read in [("synops", counter.synops), ("snapshot", counter.snapshot),
                       ("synops", lambda: counter.synops(by_layer=True))]:
        with pytest.raises(RuntimeError) as err:
            read()
        assert f"counter.{what}() was called before any forward pass" in str(err.value)
        assert "run the model on a batch first" in str(err.value)
    with pytest.raises(RuntimeError, match="before any forward pass"):
        counter.snapshot(accumulated=True).per_layer()
    with pytest.raises(RuntimeError, match="before any forward pass"):
        _ = counter.samples


# ----------------------------------------------------------------------------- two counters, shapes, devices


def test_two_counters_on_one_model_each_count_once() -> None:
    net = nn.Sequential(_linear(3, 4), nn.ReLU(), _linear(4, 2))
    x = _spikes(2, 3)
    ref0 = brute_force_counts(net[0], x, 2)
    ref2 = brute_force_counts(net[2], net[1](net[0](x)).detach(), 2)
    first = sl.SynOpsCounter(net)
    second = sl.SynOpsCounter(net)
    nested = sl.SynOpsCounter(net[2], batch_size=2)  # a third one on a submodule
    net(x)
    for counter in (first, second):
        assert counter.snapshot().per_layer()["0"] == pytest.approx(ref0)
        assert counter.snapshot().per_layer()["2"] == pytest.approx(ref2)
        assert float(counter.synops().detach()) == pytest.approx(ref0["synops"] + ref2["synops"], rel=1e-6)
    assert nested.snapshot().per_layer()[""] == pytest.approx(ref2)
    # removing one leaves the others counting, still once per call
    first.remove()
    second.reset()
    nested.reset()  # it was read too: without a reset the next call would be more steps of its batch (and warn)
    net(x)
    assert second.snapshot().per_layer()["0"] == pytest.approx(ref0)
    second.remove()
    nested.remove()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_attach_twice_is_a_noop_not_a_double_count() -> None:
    net = nn.Sequential(_linear())
    counter = sl.SynOpsCounter(net)
    counter.attach()
    with counter:  # __enter__ attaches again
        x = _spikes(2, 3)
        net(x)
        assert counter.snapshot().per_layer()["0"] == pytest.approx(brute_force_counts(net[0], x, 2))


def test_weights_that_change_shape_rebuild_the_map() -> None:
    net = nn.Sequential(_linear(3, 2))
    counter = sl.SynOpsCounter(net)
    x = _spikes(2, 3)
    net(x)
    assert counter.snapshot().per_layer()["0"] == pytest.approx(brute_force_counts(net[0], x, 2))
    # a new, bigger parameter with some zeros (e.g. a grown layer)
    with torch.no_grad():
        net[0].weight = nn.Parameter(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0], [4.0, 5.0, 0.0], [1.0, 1.0, 1.0]]))
    counter.reset()
    net(x)
    assert counter.snapshot().per_layer()["0"] == pytest.approx(brute_force_counts(net[0], x, 2))
    # resized in place (same Parameter object, new storage)
    with torch.no_grad():
        net[0].weight.set_(torch.tensor([[0.0, 1.0, 1.0]]))
    counter.reset()
    net(x)
    assert counter.snapshot().per_layer()["0"] == pytest.approx(brute_force_counts(net[0], x, 2))
    # and a change of shape in the middle of a batch: each call is counted with its own map
    counter.reset()
    net(x)
    first = brute_force_counts(net[0], x, 2)
    net[0].weight = nn.Parameter(torch.ones(5, 3))
    net(x)
    second = brute_force_counts(net[0], x, 2)
    assert counter.snapshot().per_layer()["0"] == pytest.approx({k: first[k] + second[k] for k in first})


def test_meta_input_is_refused_with_remedy() -> None:
    net = nn.Sequential(_linear()).to("meta")
    counter = sl.SynOpsCounter(net)  # noqa: F841
    with pytest.raises(ValueError) as err:
        net(torch.ones(2, 3, device="meta"))
    assert "received a meta tensor" in str(err.value) and "move the model and input to cpu or cuda" in str(err.value)


class _MovesInput(nn.Linear):
    """Moves its input to its weight's device inside forward: the hook sees the two devices differ."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.device))


def test_input_and_weight_on_different_devices_are_refused() -> None:
    net = nn.Sequential(_MovesInput(3, 2)).to("meta")
    counter = sl.SynOpsCounter(net, ops="none")  # noqa: F841 (module hooks only)
    with pytest.raises(ValueError) as err:
        net(_spikes(2, 3))
    msg = str(err.value)
    assert "layer '0' received its input on cpu but its weight is on meta" in msg
    assert "move the input and the model to the same device" in msg


class _Gain(nn.Module):
    """y = w * x; counted per call by a custom rule that reports on the input's device."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, 0.0, 2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.to(x.device)


def _gain_counts(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> OpCounts:
    x = args[0]
    w01 = (module.weight.detach() != 0).to(x.device, torch.float64)
    rows = x.numel() // x.shape[-1]
    flat = x.reshape(rows, -1).double()
    f64 = dict(device=x.device, dtype=torch.float64)
    return OpCounts(
        synops=(flat.sum(0) * w01).sum(),
        dense=torch.tensor(float(x.numel()), **f64),
        effective=((flat != 0).double().sum(0) * w01).sum(),
        spiking=torch.all((flat == 0) | (flat.abs() == 1)),
        rows=rows, in_shape=(x.shape[-1],), out_shape=(x.shape[-1],),
        input_sum=flat.sum().detach(), input_nonzero=(flat != 0).sum().double(), in_neurons=x.shape[-1],
    )


def test_device_change_within_one_batch_is_refused_with_remedy() -> None:
    rules: dict = {}
    register_rule(_Gain, counts=True, registry=rules)(_gain_counts)
    net = nn.Sequential(_Gain())
    counter = sl.SynOpsCounter(net, custom_rules=rules)
    x = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    net(x)
    with pytest.raises(ValueError) as err:
        net(x.to("meta"))
    msg = str(err.value)
    assert re.search(r"layer '0' received input on meta after cpu within one batch", msg)
    assert "call counter.reset() after moving the model" in msg
    counter.reset()
    net(x)
    # by hand: effective taps of w = [1, 0, 2] reached by nonzero inputs: 1 + 2 = 3 over 2 samples
    assert counter.snapshot().per_layer()["0"] == {"dense": 3.0, "eff_macs": 0.0, "eff_acs": 1.5, "synops": 1.5}


def test_a_forward_that_reaches_no_counted_layer_says_so_not_that_the_model_never_ran():
    """The model ran (its branch skipped the only Linear): the read says which layers were not called, not that no
    forward pass happened."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.readout = nn.Linear(3, 2)

        def forward(self, x, read=False):
            return self.readout(x) if read else torch.relu(x)

    net = Net()
    counter = sl.SynOpsCounter(net)
    for _ in range(3):
        net(torch.ones(2, 3))
    with pytest.raises(RuntimeError, match=r"the model ran 3 time\(s\) since the last reset\(\), but none of its "
                                           r"counted layers \('readout'\) was called"):
        counter.snapshot()
    net(torch.ones(2, 3), read=True)
    assert counter.snapshot().total()["synops"] == pytest.approx(3 * 2)  # (the one call that reached it)
