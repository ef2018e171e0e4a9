"""``fold`` combines two states field by field by each field's declared rule (generated once per class)."""

from __future__ import annotations

import copy
import random
from collections import Counter
from dataclasses import fields

import pytest
import torch

from synopsloss.state import NeuronState, Reduce, SynapseState, fold


def _reference(into, other, detach=True):
    """The rules written out by hand, one field at a time."""
    for f in fields(into):
        rule = f.metadata.get("reduce")
        a, b = getattr(into, f.name), getattr(other, f.name)
        if rule is Reduce.SUM:
            if b is None:
                v = a
            elif isinstance(b, torch.Tensor):
                b = b.detach() if detach else b
                v = b if a is None else (None if a.shape != b.shape else a + b)
                if v is None and hasattr(into, "shape_changed"):
                    into.shape_changed = True
            else:
                v = b if a is None else a + b
        elif rule is Reduce.LAST:
            v = a if b is None or b == () else b
        elif rule is Reduce.MIN:
            v = a if b is None else (b if a is None else min(a, b))
        elif rule is Reduce.ANY:
            v = bool(a) or bool(b)
        elif rule is Reduce.UNION:
            v = set(a) | set(b)
        else:
            continue
        setattr(into, f.name, v)
    return into


def _random_state(cls, rng: random.Random):
    st = cls()
    for f in fields(st):
        rule = f.metadata.get("reduce")
        if rule is None or rng.random() < 0.25:
            continue  # left at its default (None, 0, empty)
        default = getattr(st, f.name)
        if rule is Reduce.SUM:
            if isinstance(default, Counter):
                value = Counter({(rng.randint(1, 3),): rng.randint(1, 4)})
            elif isinstance(default, (int, float)) and default is not None and f.name not in ("synops",):
                value = type(default)(rng.randint(0, 9))
            else:
                value = torch.full((rng.choice([(), (), (2,), (3,)]) if f.name == "per_neuron" else ()),
                                   float(rng.randint(0, 9)), requires_grad=rng.random() < 0.5)
        elif rule is Reduce.LAST:
            value = rng.choice([(), (rng.randint(1, 4),), rng.randint(0, 5), None])
        elif rule is Reduce.MIN:
            value = rng.choice([None, rng.randint(0, 50)])
        elif rule is Reduce.ANY:
            value = rng.random() < 0.5
        else:
            value = {rng.randint(1, 5) for _ in range(rng.randint(0, 3))}
        setattr(st, f.name, value)
    return st


def _plain(st):
    out = {}
    for f in fields(st):
        if f.metadata.get("reduce") is None:
            continue
        v = getattr(st, f.name)
        out[f.name] = (tuple(v.shape), v.tolist(), v.requires_grad) if isinstance(v, torch.Tensor) else v
    return out


@pytest.mark.parametrize("cls", [SynapseState, NeuronState])
@pytest.mark.parametrize("detach", [True, False])
def test_fold_follows_every_declared_rule(cls, detach: bool) -> None:
    rng = random.Random(0)
    for _ in range(60):
        a, b = _random_state(cls, rng), _random_state(cls, rng)
        ra, rb = copy.deepcopy(a), copy.deepcopy(b)
        got = _plain(fold(a, b, detach=detach))
        want = _plain(_reference(ra, rb, detach=detach))
        assert got == want


def test_fold_of_two_batches_by_hand() -> None:
    a, b = SynapseState(), SynapseState()
    a.dense, a.calls, a.rows, a.in_shape, a.first_seen = torch.tensor(6.0), 2, {4}, (3,), 7
    b.dense, b.calls, b.rows, b.in_shape, b.first_seen = torch.tensor(4.0), 1, {8}, (5,), 3
    total = fold(fold(SynapseState(), a), b)
    assert float(total.dense) == 10.0 and total.calls == 3 and total.rows == {4, 8}
    assert total.in_shape == (5,) and total.first_seen == 3
