"""The architecture's promises: a speed option never changes a number; state has one owner."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import warnings
from dataclasses import fields

import pytest
import torch
from torch import nn

import synopsloss as sl
from synopsloss.energy import ENERGY_PRESETS, get_energy_model, prices_neurons
from synopsloss.table import LayerRow

snn = pytest.importorskip("snntorch")
from snntorch import utils as snn_utils  # noqa: E402

PACKAGE = pathlib.Path(sl.__file__).parent


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.8, init_hidden=True), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5), snn.Leaky(beta=0.8, init_hidden=True), nn.Linear(5, 3),
    )


def _run(neurons: bool):
    net = _net()
    counter = sl.SynOpsCounter(net, neurons=neurons)
    gen = torch.Generator().manual_seed(1)
    counter.reset(accumulated=True)
    for batch in range(3):
        counter.reset()
        snn_utils.reset(net)
        for _ in range(4):  # time steps
            net((torch.rand(2 + batch, 1, 6, 6, generator=gen) < 0.4).float())
    return counter


@pytest.mark.parametrize("accumulated", [False, True], ids=["batch", "accumulated"])
@pytest.mark.parametrize("energy", sorted(ENERGY_PRESETS))
def test_neurons_false_changes_no_synaptic_number(energy, accumulated):
    default, lean = _run(True), _run(False)
    full = default.table(energy=energy, accumulated=accumulated, dt=1e-3)
    with warnings.catch_warnings(record=True) as seen:  # (the neuron energy it leaves out is named)
        warnings.simplefilter("always")
        small = lean.table(energy=energy, accumulated=accumulated, dt=1e-3)
    named = any("leaves out the neuron layers ['1', '5']" in str(w.message) for w in seen)
    assert named == prices_neurons(get_energy_model(energy))
    synaptic = [r for r in full if r.kind == "synaptic"]
    assert [r.name for r in small] == [r.name for r in synaptic] == ["0", "4", "6"]
    for a, b in zip(synaptic, small):
        for f in fields(LayerRow):
            if f.name == "share":  # share of the total, which with neurons=False has no neuron rows either way
                continue
            assert getattr(a, f.name) == getattr(b, f.name), f"{a.name}.{f.name} differs"
    assert small.total.synops == full.total.synops
    # the same plain data, but for the forward rank (the lean snapshot has no neuron layers between them)
    strip = lambda snap: {n: dataclasses.replace(s, order=0) for n, s in snap.layers.items()}  # noqa: E731
    assert strip(default.snapshot(accumulated)) == strip(lean.snapshot(accumulated))


def test_lemaire2022_io_term_is_kept_with_neurons_false_accumulated():
    lean = _run(False)
    with pytest.warns(sl.SynOpsWarning, match="leaves out the neuron layers"):
        rows = {r.name: r for r in lean.table(energy="lemaire2022", accumulated=True)}
    # one input read per input event (Eq. 5; the spike events of an average pool's input for layer 4, nonzero
    # inputs of a layer with MACs); it was 0 when the accumulated inputs came from the neuron monitor
    model = sl.Lemaire2022()
    for n in ("0", "4", "6"):
        r = rows[n]
        events = r.input_events if r.eff_macs else r.in_rate * r.in_neurons * r.time_steps
        assert r.energy_parts["mem_io"] == pytest.approx(events * model.e_mem(r.in_neurons))
    assert rows["0"].energy_parts["mem_io"] > 0 and rows["4"].energy_parts["mem_io"] > 0
    assert rows["4"].in_shape == (36,) and rows["4"].time_steps == 4.0 and rows["4"].in_rate is not None


# names of private state of synopsloss objects: only their owner may touch them
_PRIVATE_STATE = {
    "_batch", "_totals", "_total_samples", "_monitor", "_layers", "_maps", "_hooks", "_pools", "_tags",
    "_rules", "_unsupported", "_warned", "_handles", "_samples_fn", "_terms", "_calls", "_schedules",
    "_owner", "_eff", "_dense", "_root_batch", "_fold_batch", "_layout_given", "_batch_first_layers", "_layout",
    "_track_neurons", "_samples", "_merged", "_require_batch",
}


def test_no_module_reads_another_objects_private_state():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in _PRIVATE_STATE:
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_layer_kinds_are_one_enum_used_by_the_table():
    counter = _run(True)
    kinds = {r.kind for r in counter.table(energy=None)}
    assert kinds <= {k.value for k in sl.LayerKind}
    assert {"synaptic", "neuron", "pooling", "reshape"} <= kinds


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set:
    """The synopsloss modules ``path`` imports, at module level or inside functions (lazy imports count)."""
    name = _module_name(path)
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".") if name else []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{a.name}".strip(".") for a in node.names)
    return found


def test_imports_run_one_way():
    """No cycle among the package's modules, lazy imports included (the package's __init__ aside)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {t for t in _imports(p) if t in modules and t != m and t != ""} for m, p in modules.items() if m}
    for m in graph:
        graph[m].discard("cli") if m.startswith("cli.") else None
    cycles = []

    def reach(start: str, node: str, seen: set) -> None:
        for nxt in graph.get(node, ()):
            if nxt == start:
                cycles.append((start, node))
            elif nxt not in seen:
                seen.add(nxt)
                reach(start, nxt, seen)

    for m in graph:
        reach(m, m, {m})
    assert cycles == [], f"import cycles through: {sorted(set(cycles))}"


def test_no_module_calls_private_members_of_another_modules_classes():
    """``obj._name`` is allowed only where ``_name`` belongs to a class of the same module (or to torch)."""
    owned: dict = {}
    trees = {p: ast.parse(p.read_text(), filename=str(p)) for p in sorted(PACKAGE.rglob("*.py"))}
    for path, tree in trees.items():
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
            for n in ast.walk(cls):
                name = None
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = n.name
                elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name) \
                        and n.value.id == "self":
                    name = n.attr
                if name and name.startswith("_") and not name.startswith("__"):
                    owned.setdefault(name, set()).add(path)
    torch_owned = set(vars(torch.nn.Module())) | set(dir(torch.Tensor))  # torch's own internals (module._buffers)
    offenders = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in owned and path not in owned[node.attr] \
                    and node.attr not in torch_owned:
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
    assert offenders == []
