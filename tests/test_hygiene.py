"""Hook hygiene: the counter never damages the user's model or keeps their tensors alive.

Every model is built twice with identical weights; one twin is used with a counter, the other
without, and after ``remove()`` (or leaving the ``with`` block, also through an exception) the
two must be indistinguishable: same hooks (none), same attributes, buffers and ``state_dict``,
same outputs, and the same result from pickle, ``copy.deepcopy``, ``torch.jit`` and
``torch.compile``.
"""

from __future__ import annotations

import copy
import gc
import io
import pickle
import shutil
import weakref
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import synopsloss as sl

snn = pytest.importorskip("snntorch")
sinabs_layers = pytest.importorskip("sinabs.layers")
from snntorch import utils as snn_utils  # noqa: E402

HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)


# ----------------------------------------------------------------------------- models


def _plain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Dropout(0.0), nn.Linear(12, 4))


def _snntorch() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), snn.Leaky(beta=0.8, init_hidden=True), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(12, 4), snn.Leaky(beta=0.8, init_hidden=True, output=True))


def _sinabs() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), sinabs_layers.IAFSqueeze(batch_size=2), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(12, 4), sinabs_layers.IAFSqueeze(batch_size=2))


def _pruned() -> nn.Module:
    net = _plain()
    prune.l1_unstructured(net[0], "weight", amount=0.5)
    prune.random_unstructured(net[5], "weight", amount=0.3)
    return net


MODELS: Dict[str, Callable[[], nn.Module]] = {"plain": _plain, "snntorch": _snntorch, "sinabs": _sinabs,
                                              "pruned": _pruned}


def _data(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    rows = 6 if kind == "sinabs" else 2  # sinabs: [B*T, ...] with B = 2, T = 3
    return (torch.rand(rows, 1, 4, 4, generator=g) < 0.5).float() * 3


def _run(kind: str, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if kind == "snntorch":
        snn_utils.reset(net)
        return torch.stack([net(x)[0] for _ in range(3)])
    return net(x)


def _twins(kind: str) -> Tuple[nn.Module, nn.Module]:
    a, b = MODELS[kind](), MODELS[kind]()
    b.load_state_dict(a.state_dict())
    return a, b


# ----------------------------------------------------------------------------- inspection


def _fingerprint(net: nn.Module) -> Dict[str, tuple]:
    """Per module: attribute names, hook dicts, buffer and parameter names."""
    out = {}
    for name, m in net.named_modules():
        hooks = tuple(len(getattr(m, d, {})) for d in HOOK_DICTS)
        out[name] = (tuple(sorted(m.__dict__)), hooks, tuple(m._buffers), tuple(m._parameters), m.training)
    return out


def _assert_no_hooks(net: nn.Module, twin: Optional[nn.Module] = None) -> None:
    """No hook on any module; with ``twin``: exactly the hooks the twin has (pruning's), by type."""
    twins = dict(twin.named_modules()) if twin is not None else {}
    for name, m in net.named_modules():
        for d in HOOK_DICTS:
            hooks = [type(h).__name__ for h in getattr(m, d, {}).values()]
            expected = [type(h).__name__ for h in getattr(twins[name], d, {}).values()] if twin is not None else []
            assert hooks == expected, f"{name or '<root>'}.{d} = {getattr(m, d)}"


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _attempt(fn: Callable[[], object]) -> Tuple[str, object]:
    """('ok', result) or (exception type, None): a model must succeed or fail the same way as its twin."""
    try:
        return "ok", fn()
    except Exception as err:  # noqa: BLE001 - the type is what is compared
        return type(err).__name__, None


def _outcome(fn: Callable[[], object]) -> str:
    return _attempt(fn)[0]


# ----------------------------------------------------------------------------- after remove()


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("exit_by", ["remove", "context", "exception"])
def test_model_after_counting_equals_an_untouched_twin(kind: str, exit_by: str) -> None:
    used, untouched = _twins(kind)
    x = _data(kind)
    assert not torch.nn.modules.module._global_forward_hooks
    if exit_by == "remove":
        counter = sl.SynOpsCounter(used)
        _run(kind, used, x)
        counter.synops().backward()
        counter.remove()
    elif exit_by == "context":
        with sl.SynOpsCounter(used) as counter:
            _run(kind, used, x)
            counter.synops().backward()
    else:
        with pytest.raises(KeyError, match="raised inside"):
            with sl.SynOpsCounter(used) as counter:
                _run(kind, used, x)
                counter.synops().backward()
                raise KeyError("raised inside")
    _run(kind, untouched, x)
    sum(p.sum() for p in untouched.parameters()).backward()  # both twins have grads now

    _assert_no_hooks(used, untouched)
    if kind != "pruned":
        _assert_no_hooks(used)
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks
    assert _fingerprint(used) == _fingerprint(untouched)
    assert [n for n, _ in used.named_buffers()] == [n for n, _ in untouched.named_buffers()]
    _assert_same_state(used, untouched)
    assert not counter.attached
    assert counter.snapshot().per_layer()  # counts stay readable after removal
    # the model computes exactly what its twin computes
    torch.testing.assert_close(_run(kind, used, x), _run(kind, untouched, x), rtol=0, atol=0)


def test_counter_error_inside_the_with_block_still_removes_hooks() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="cannot tell how many samples"):
        with sl.SynOpsCounter(net) as counter:
            net[0](torch.ones(2, 3))  # only a submodule: the batch size is unknown
            counter.synops()
    _assert_no_hooks(net)


def test_user_hooks_survive_and_only_the_counters_are_removed() -> None:
    net = _plain()
    seen: List[str] = []
    handle = net[5].register_forward_hook(lambda m, a, o: seen.append("user"))
    pre = net.register_forward_pre_hook(lambda m, a: seen.append("user-pre"))
    with sl.SynOpsCounter(net):
        net(_data("plain"))
    assert len(net[5]._forward_hooks) == 1 and len(net._forward_pre_hooks) == 1
    net(_data("plain"))
    assert seen == ["user-pre", "user", "user-pre", "user"]
    handle.remove()
    pre.remove()
    _assert_no_hooks(net)


def test_remove_is_idempotent_and_reattach_counts_again() -> None:
    net = _plain()
    counter = sl.SynOpsCounter(net)
    counter.remove()
    counter.remove()
    _assert_no_hooks(net)
    counter.attach()
    counter.reset()
    net(_data("plain"))
    dense = counter.snapshot().per_layer()["5"]["dense"]
    assert dense == 12 * 4  # every tap of Linear(12, 4), one row per sample
    counter.remove()
    _assert_no_hooks(net)


# ----------------------------------------------------------------------------- serialisation / compilers


def _pickled(net: nn.Module) -> nn.Module:
    return pickle.loads(pickle.dumps(net))


def _torch_saved(net: nn.Module) -> nn.Module:
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("op", [_pickled, _torch_saved, copy.deepcopy], ids=["pickle", "torch.save", "deepcopy"])
def test_model_pickles_and_deep_copies_as_before(kind: str, op: Callable[[nn.Module], nn.Module]) -> None:
    used, untouched = _twins(kind)
    x = _data(kind)
    with sl.SynOpsCounter(used):
        _run(kind, used, x)
    _run(kind, untouched, x)
    if kind == "snntorch":  # snntorch's reset is class-wide: put both twins in the same (fresh) state
        snn_utils.reset(used)
    got, copy_used = _attempt(lambda: op(used))
    expected, copy_twin = _attempt(lambda: op(untouched))
    assert got == expected
    if kind == "plain":
        assert got == "ok"
    if got != "ok":  # e.g. sinabs' state after a forward is part of a graph: deepcopy fails, as before
        return
    _assert_no_hooks(copy_used, copy_twin)
    assert _fingerprint(copy_used) == _fingerprint(copy_twin)
    _assert_same_state(copy_used, copy_twin)
    if kind != "snntorch":  # (copies of snntorch neurons escape snntorch.utils.reset)
        torch.testing.assert_close(_run(kind, copy_used, x), _run(kind, copy_twin, x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", list(MODELS))
def test_model_scripts_and_traces_as_before(kind: str) -> None:
    used, untouched = _twins(kind)
    x = _data(kind)
    with sl.SynOpsCounter(used):
        _run(kind, used, x)
    _run(kind, untouched, x)
    used.eval()
    untouched.eval()
    assert _outcome(lambda: torch.jit.script(used)) == _outcome(lambda: torch.jit.script(untouched))
    traced_used = _outcome(lambda: torch.jit.trace(used, x, check_trace=False))
    traced_twin = _outcome(lambda: torch.jit.trace(untouched, x, check_trace=False))
    assert traced_used == traced_twin
    if kind == "plain":
        torch.testing.assert_close(torch.jit.script(used)(x), untouched(x), rtol=0, atol=0)
    if kind in ("plain", "pruned"):
        assert traced_used == "ok"
        torch.testing.assert_close(torch.jit.trace(used, x)(x), untouched(x), rtol=0, atol=0)


def test_model_compiles_with_dynamo_without_graph_breaks_after_removal() -> None:
    used, untouched = _twins("plain")
    x = _data("plain")
    with sl.SynOpsCounter(used):
        used(x)
    torch._dynamo.reset()
    explain_used = torch._dynamo.explain(used)(x)
    explain_twin = torch._dynamo.explain(untouched)(x)
    assert explain_used.graph_break_count == explain_twin.graph_break_count == 0
    assert explain_used.graph_count == explain_twin.graph_count
    compiled = torch.compile(used, backend="aot_eager")
    torch.testing.assert_close(compiled(x), untouched(x))


def _cxx_available() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not _cxx_available(), reason="torch.compile's inductor backend needs a C++ compiler "
                    "(g++/clang++) on PATH; none found")
def test_model_compiles_with_inductor_after_removal() -> None:
    """One tiny model through the default inductor backend (about 5-20 s on 2 CPU cores)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.ones(2, 4)
    expected = net(x)
    with sl.SynOpsCounter(net):
        net(x)
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(net)(x), expected)


# ----------------------------------------------------------------------------- deep copies while attached


def test_deep_copy_of_a_hooked_layer_is_not_counted() -> None:
    """NeuroBench (and EMA / teacher models) deep-copy layers; a copy carries the hook but is
    not the counted layer, so its calls are ignored."""
    net = _plain()
    x = _data("plain")
    counter = sl.SynOpsCounter(net)
    net(x)
    before = counter.snapshot().per_layer()
    layer_copy = copy.deepcopy(net[5])
    layer_copy(torch.ones(7, 12))  # 7 rows: would not even divide into 2 samples
    assert counter.snapshot().per_layer() == before
    counter.remove()


def test_deep_copy_of_a_hooked_model_works_and_is_not_counted() -> None:
    net = _plain()
    x = _data("plain")
    counter = sl.SynOpsCounter(net)
    net(x)
    synops = counter.synops()  # the batch's graph is alive in the counter
    before = counter.snapshot().per_layer()
    clone = copy.deepcopy(net)
    clone(torch.ones(7, 1, 4, 4))
    assert counter.snapshot().per_layer() == before
    assert float(counter.synops().detach()) == float(synops.detach())
    counter.remove()


@pytest.mark.filterwarnings("ignore:synopsloss. the model was called again after this batch")  # expected here; the test is about something else
def test_neurobench_run_while_counter_attached_leaves_counts_unchanged() -> None:
    from helpers import neurobench_synops

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), snn.Leaky(beta=0.8, init_hidden=True), nn.Linear(5, 3),
                        snn.Leaky(beta=0.8, init_hidden=True, output=True))
    data = (torch.rand(2, 3, 6) < 0.5).float()
    ref = neurobench_synops(net, data, snntorch=True)  # without our counter
    counter = sl.SynOpsCounter(net)
    snn_utils.reset(net)
    for t in range(3):
        net(data[:, t])
    ours = counter.snapshot().total()
    assert {k: ours[k] for k in ref} == pytest.approx(ref)
    during = neurobench_synops(net, data, snntorch=True)  # NeuroBench runs and deep-copies layers now
    assert during == pytest.approx(ref)
    counter.remove()


# ----------------------------------------------------------------------------- nothing kept alive


class _Saved:
    """Stands in for a tensor the autograd graph saves for backward: alive exactly as long as the graph."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t


@pytest.mark.filterwarnings("ignore:synopsloss. average pool")  # expected here; the test is about something else
@pytest.mark.parametrize("kind", ["plain", "snntorch", "sinabs"])
@pytest.mark.parametrize("backward", [False, True])
def test_reset_frees_previous_batch_inputs_activations_and_graph(kind: str, backward: bool) -> None:
    net = MODELS[kind]()
    counter = sl.SynOpsCounter(net)
    activations: List[weakref.ref] = []
    handles = [m.register_forward_hook(lambda m, a, o: activations.append(weakref.ref(o)) if isinstance(o, torch.Tensor)
                                       else None) for m in net]
    saved: List[weakref.ref] = []

    def pack(t: torch.Tensor) -> _Saved:
        holder = _Saved(t.detach())  # (holding t itself would make a C++ cycle through its grad_fn)
        saved.append(weakref.ref(holder))
        return holder

    x = _data(kind).requires_grad_(True)
    x_ref = weakref.ref(x)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda h: h.t):
        out = _run(kind, net, x)
        synops = counter.synops()
    assert synops.grad_fn is not None
    if backward:
        synops.backward()
    del x, out, synops
    if kind == "snntorch":
        snn_utils.reset(net)  # snntorch neurons keep their own last state until reset
    if kind == "sinabs":
        net[1].reset_states(), net[5].reset_states()
    for h in handles:
        h.remove()
    if not backward:  # the counter holds this batch's graph until reset() (so synops() can be called again)
        assert any(r() is not None for r in saved)
    counter.reset()

    def freed() -> None:
        assert x_ref() is None, "the previous batch's input is still alive"
        assert all(r() is None for r in saved), "the previous batch's autograd graph is still alive"
        alive = [r for r in activations if r() is not None]
        assert not alive, f"{len(alive)} activations of the previous batch are still alive"

    if kind != "sinabs":  # sinabs layers keep their last firing rate / spikes themselves until the next call
        freed()
    # the next batch: nothing of the first one may survive it
    out = _run(kind, net, _data(kind))
    (counter.synops() + out.sum()).backward()
    freed()
    counter.remove()


def test_no_reference_cycle_keeps_a_removed_counter_or_model_alive() -> None:
    net = _plain()
    counter = sl.SynOpsCounter(net)
    net(_data("plain"))
    counter.synops()
    counter.remove()
    net_ref, counter_ref = weakref.ref(net), weakref.ref(counter)
    del net, counter
    gc.collect()
    assert net_ref() is None and counter_ref() is None


# ----------------------------------------------------------------------------- short soak


def _load_soak():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("_synopsloss_soak", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_soak_keeps_live_tensor_count_flat() -> None:
    """150 training steps with the counter and the synops term (benchmarks/soak.py runs 1000)."""
    soak = _load_soak()
    records = soak.soak(steps=150, every=25, loss_kind="synopsloss", verbose=False)
    counts = [r["tensors"] for r in records]
    assert max(counts[1:]) <= counts[0], f"live tensors grew after warm-up: {counts}"
    assert soak.verdict(records)["flat"]


def test_short_soak_detects_a_planted_leak() -> None:
    """The measurement can fail: keeping each step's synops tensor (and its graph) is seen."""
    soak = _load_soak()
    kept: List[torch.Tensor] = []
    records = soak.soak(steps=40, every=10, loss_kind="raw", verbose=False,
                        on_step=lambda step, counter: kept.append(counter.synops()))
    counts = [r["tensors"] for r in records]
    assert counts[-1] > counts[0]
    assert not soak.verdict(records)["flat"]


def test_a_model_pickled_with_a_counter_attached_gets_a_clear_error_and_its_deep_copy_is_inert():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    counter = sl.SynOpsCounter(net, neurons=False)
    with pytest.raises(TypeError, match=r"attached cannot be pickled.*counter.remove\(\) first"):
        pickle.dumps(net)
    with pytest.raises(TypeError, match="cannot be pickled"):
        torch.save(net, io.BytesIO())
    twin = copy.deepcopy(net)  # e.g. a best-model or EMA copy taken while counting
    x = torch.ones(2, 4)
    net(x)
    twin(x)
    assert counter.samples == 2 and counter.snapshot().per_layer()["0"]["synops"] == 3 * 4  # the copy is not counted
    counter.remove()
    torch.testing.assert_close(_pickled(twin)(x), net(x))  # the copy pickles, and runs as the model
    _assert_no_hooks(net)
