"""Schedules: values at chosen steps (computed by hand), stepping, composition, state_dict round trips."""

from __future__ import annotations

import math

import pytest

from synopsloss import schedules as S


def _walk(s: S.Schedule, n: int) -> list:
    """Values seen while stepping explicitly n times (value before each step)."""
    out = []
    for _ in range(n):
        out.append(s.value)
        s.step()
    return out


def test_constant_never_changes():
    assert _walk(S.Constant(0.3), 5) == [0.3] * 5


def test_linear_values_by_hand_and_holds_end():
    s = S.Linear(1.0, 0.5, steps=4)
    # 1 - 0.5 * k / 4
    assert _walk(s, 7) == pytest.approx([1.0, 0.875, 0.75, 0.625, 0.5, 0.5, 0.5])


def test_cosine_values_by_hand():
    s = S.Cosine(2.0, 1.0, steps=4)
    # 1 + 1 * (1 + cos(pi k / 4)) / 2
    expected = [2.0, 1 + (1 + math.sqrt(0.5)) / 2, 1.5, 1 + (1 - math.sqrt(0.5)) / 2, 1.0, 1.0]
    assert [s.at(k) for k in range(6)] == pytest.approx(expected)


def test_exponential_values_and_limit():
    assert [S.Exponential(8.0, 0.5).at(k) for k in range(4)] == [8.0, 4.0, 2.0, 1.0]
    assert [S.Exponential(8.0, 0.5, limit=3.0).at(k) for k in range(4)] == [8.0, 4.0, 3.0, 3.0]
    assert [S.Exponential(1.0, 2.0, limit=5.0).at(k) for k in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_milestones_multiply_by_gamma_at_each_milestone():
    s = S.Milestones(0.8, milestones=[2, 4], gamma=0.5)
    assert _walk(s, 6) == [0.8, 0.8, 0.4, 0.4, 0.2, 0.2]


def test_warmup_ramps_factor_from_start_factor():
    s = S.Warmup(S.Constant(0.4), steps=4)
    assert [s.at(k) for k in range(6)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    s2 = S.Warmup(S.Linear(1.0, 0.0, steps=10), steps=2, start_factor=0.5)
    # inner 1 - k/10 times factor 0.5 + 0.5 * min(k, 2) / 2
    assert [s2.at(k) for k in range(4)] == pytest.approx([0.5, 0.9 * 0.75, 0.8, 0.7])


def test_sequential_restarts_each_schedule_at_its_milestone():
    s = S.Sequential([S.Constant(1.0), S.Linear(1.0, 0.5, steps=5), 0.25], milestones=[3, 10])
    values = _walk(s, 12)
    assert values == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.25, 0.25])


def test_product_of_schedules_and_numbers():
    s = S.Linear(1.0, 0.0, steps=4) * S.Milestones(2.0, [2], 0.5)
    assert [s.at(k) for k in range(5)] == pytest.approx([2.0, 1.5, 0.5, 0.25, 0.0])
    assert (3 * S.Constant(0.5)).at(7) == 1.5


def test_stepping_is_explicit_and_value_follows_last_step():
    s = S.Linear(0.0, 1.0, steps=10)
    assert s.value == 0.0 and s.value == 0.0  # reading does not advance
    for _ in range(3):
        s.step()
    assert s.last_step == 3 and s.value == pytest.approx(0.3)
    assert s.at(5) == pytest.approx(0.5) and s.last_step == 3  # at() does not change the state


@pytest.mark.parametrize(
    "make",
    [
        lambda: S.Constant(0.2),
        lambda: S.Linear(1.0, 0.5, 7),
        lambda: S.Cosine(1.0, 0.1, 9),
        lambda: S.Exponential(1.0, 0.9, limit=0.3),
        lambda: S.Milestones(1.0, [3, 6], 0.1),
        lambda: S.Warmup(S.Cosine(1.0, 0.5, 10), 4, start_factor=0.1),
        lambda: S.Sequential([S.Constant(1.0), S.Exponential(1.0, 0.5)], [4]),
        lambda: S.Linear(1.0, 0.0, 8) * S.Warmup(0.5, 3),
    ],
)
def test_state_dict_round_trip_resumes_the_same_values(make):
    a = make()
    _walk(a, 5)
    state = a.state_dict()
    b = make()
    b.load_state_dict(state)
    assert b.last_step == 5
    assert _walk(b, 8) == _walk(a, 8)


def test_state_dict_restores_parameters_too():
    a = S.Linear(1.0, 0.2, steps=5)
    a.step()
    b = S.Linear(9.0, 9.0, steps=1)
    b.load_state_dict(a.state_dict())
    assert (b.start, b.end, b.steps, b.value) == (1.0, 0.2, 5, a.value)


def test_loading_another_kind_of_schedule_is_an_error():
    with pytest.raises(ValueError, match="Cosine schedule into a Linear"):
        S.Linear(1, 0, 3).load_state_dict(S.Cosine(1, 0, 3).state_dict())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: S.Linear(1.0, 0.5, steps=0), "steps must be an int >= 1"),
        (lambda: S.Cosine(1.0, float("nan"), 3), "end must be a finite number"),
        (lambda: S.Exponential(1.0, 0.0), "gamma must be > 0"),
        (lambda: S.Milestones(1.0, [5, 2], 0.5), "milestones must be increasing"),
        (lambda: S.Sequential([S.Constant(1.0), S.Constant(2.0)], []), "len\\(milestones\\) == len\\(schedules\\) - 1"),
        (lambda: S.Warmup(S.Constant(1.0), steps=3, start_factor=-1), "start_factor must be >= 0"),
    ],
)
def test_bad_parameters_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_as_schedule_rejects_non_numbers():
    assert S.as_schedule(2).at(3) == 2.0
    with pytest.raises(TypeError, match="must be a number or a synopsloss.schedules.Schedule"):
        S.as_schedule("0.5")
