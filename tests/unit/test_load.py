"""Training load maths: bias-corrected EWMA, the acute:chronic ratio and weekly sums.

Expected values are computed by hand (arithmetic in comments) or by a reference written
from the definition in DESIGN.md / Williams et al. 2017, not by calling the code under test.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.load import (
    ACUTE_DAYS,
    CHRONIC_DAYS,
    daily_series,
    ewma,
    ewma_lambda,
    load_ratio,
    rolling_sum,
    week_change,
)

MONDAY = date(2024, 1, 1)  # a Monday
assert MONDAY.weekday() == 0


# --------------------------------------------------------------------------- reference


def reference_ewma(daily: list[float], days: int) -> float:
    """Bias-corrected EWMA written as a weighted mean, independent of ``stream.load``.

    With λ = 2/(N+1), the EWMA started at 0 after n days is Σ λ(1−λ)^age · x, and the bias
    correction divides by 1 − (1−λ)^n = Σ λ(1−λ)^age. So it equals the weighted mean of the
    days with weight (1−λ)^age, age 0 for the last day.
    """
    lam = 2.0 / (days + 1)
    n = len(daily)
    weights = [(1.0 - lam) ** (n - 1 - i) for i in range(n)]
    return sum(w * x for w, x in zip(weights, daily, strict=True)) / sum(weights)


def reference_acwr(daily: list[float]) -> float:
    return reference_ewma(daily, 7) / reference_ewma(daily, 28)


# --------------------------------------------------------------------------- ewma


def test_lambda_follows_two_over_n_plus_one() -> None:
    assert ewma_lambda(7) == pytest.approx(0.25)  # 2 / 8
    assert ewma_lambda(28) == pytest.approx(2 / 29)
    with pytest.raises(ValueError):
        ewma_lambda(0)


@pytest.mark.parametrize("days", [ACUTE_DAYS, CHRONIC_DAYS, 1, 3])
@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_constant_load_reads_that_load_from_day_one(days: int, n: int) -> None:
    # bias correction: value_n = c (1 − (1−λ)^n), divided by (1 − (1−λ)^n) gives c
    assert ewma([6.5] * n, days) == pytest.approx(6.5, rel=1e-12)


def test_ewma_first_day_exact() -> None:
    # λ = 0.25: value = 0.25 · 8 = 2; weight = 1 − 0.75 = 0.25; 2 / 0.25 = 8 exactly
    assert ewma([8.0], 7) == 8.0


def test_ewma_three_days_by_hand() -> None:
    # λ = 2/(7+1) = 0.25, loads 4, 0, 8
    # v1 = 0.25·4              = 1
    # v2 = 0.25·0 + 0.75·1     = 0.75
    # v3 = 0.25·8 + 0.75·0.75  = 2 + 0.5625 = 2.5625 = 41/16
    # weight = 1 − 0.75³ = 1 − 0.421875 = 0.578125 = 37/64
    # ewma = (41/16) / (37/64) = 164/37 ≈ 4.4324
    assert ewma([4.0, 0.0, 8.0], 7) == pytest.approx(164 / 37, rel=1e-12)


def test_ewma_weights_recent_days_more() -> None:
    # same loads, different order: the later the big day, the higher the average
    assert ewma([0.0, 0.0, 10.0], 7) > ewma([10.0, 0.0, 0.0], 7)


def test_ewma_empty_is_zero() -> None:
    assert ewma([], 7) == 0.0


# --------------------------------------------------------------------------- load ratio


def _weekly_pattern(day_index: int, km: float) -> float:
    """``km`` on Mon/Wed/Fri/Sun (weekday 0, 2, 4, 6), rest otherwise."""
    return km if (MONDAY + timedelta(days=day_index)).weekday() in (0, 2, 4, 6) else 0.0


def _golden_loads() -> dict[date, float]:
    """Four weeks of 5 km on Mon/Wed/Fri/Sun, then two weeks of 10 km on the same days."""
    loads: dict[date, float] = {}
    for i in range(42):
        km = _weekly_pattern(i, 5.0 if i < 28 else 10.0)
        if km:
            loads[MONDAY + timedelta(days=i)] = km
    return loads


@pytest.mark.parametrize("day_index", [27, 28, 29, 30, 34, 35, 41])
def test_load_ratio_golden_six_weeks(day_index: int) -> None:
    loads = _golden_loads()
    day = MONDAY + timedelta(days=day_index)
    # the reference builds the calendar itself (rest days 0) and never calls stream.load
    calendar = [loads.get(MONDAY + timedelta(days=i), 0.0) for i in range(day_index + 1)]
    got = load_ratio(loads, day)
    assert got.history_days == day_index + 1
    assert got.acute == pytest.approx(reference_ewma(calendar, 7), rel=1e-9)
    assert got.chronic == pytest.approx(reference_ewma(calendar, 28), rel=1e-9)
    assert got.ratio == pytest.approx(reference_acwr(calendar), rel=1e-9)


def test_load_ratio_golden_flags_the_doubling() -> None:
    loads = _golden_loads()
    # while steady the ratio stays near 1; the first 10 km Monday (day 28) lifts it over 1.3
    steady = load_ratio(loads, MONDAY + timedelta(days=27)).ratio
    first_double = load_ratio(loads, MONDAY + timedelta(days=28)).ratio
    assert steady is not None and first_double is not None
    assert 0.9 < steady < 1.2
    assert first_double > 1.3


def test_load_ratio_first_day_defaults_to_first_load_day() -> None:
    loads = {MONDAY + timedelta(days=2): 5.0, MONDAY + timedelta(days=40): 5.0}
    day = MONDAY + timedelta(days=40)
    implicit = load_ratio(loads, day)
    explicit = load_ratio(loads, day, first_day=MONDAY + timedelta(days=2))
    assert implicit == explicit
    assert implicit.history_days == 39  # days 2..40 inclusive


def test_load_ratio_explicit_first_day_counts_leading_rest_days() -> None:
    # a runner registered on day 0 whose first run was on day 10: days 0..9 are rest days
    loads = {MONDAY + timedelta(days=10): 6.0, MONDAY + timedelta(days=30): 6.0}
    day = MONDAY + timedelta(days=30)
    got = load_ratio(loads, day, first_day=MONDAY)
    calendar = [loads.get(MONDAY + timedelta(days=i), 0.0) for i in range(31)]
    assert got.history_days == 31
    assert got.ratio == pytest.approx(reference_acwr(calendar), rel=1e-9)


def test_load_ratio_none_before_28_days_of_history() -> None:
    loads = {MONDAY + timedelta(days=i): 5.0 for i in range(40)}
    day_27th = load_ratio(loads, MONDAY + timedelta(days=26))  # 27 days of history
    day_28th = load_ratio(loads, MONDAY + timedelta(days=27))  # 28 days of history
    assert day_27th.history_days == 27 and day_27th.ratio is None
    # acute and chronic are still reported while the ratio is withheld
    assert day_27th.acute == pytest.approx(5.0) and day_27th.chronic == pytest.approx(5.0)
    assert day_28th.history_days == 28
    assert day_28th.ratio == pytest.approx(1.0)  # steady load: 5 / 5


def test_load_ratio_none_with_zero_chronic() -> None:
    got = load_ratio({}, MONDAY + timedelta(days=60), first_day=MONDAY)
    assert got.history_days == 61
    assert got.chronic == 0.0 and got.ratio is None
    zeros = {MONDAY + timedelta(days=i): 0.0 for i in range(35)}
    assert load_ratio(zeros, MONDAY + timedelta(days=34)).ratio is None


def test_load_ratio_custom_windows() -> None:
    loads = {MONDAY + timedelta(days=i): float(i % 3) for i in range(10)}
    calendar = [float(i % 3) for i in range(10)]
    got = load_ratio(loads, MONDAY + timedelta(days=9), acute_days=3, chronic_days=9,
                     min_history_days=10)
    assert got.ratio == pytest.approx(reference_ewma(calendar, 3) / reference_ewma(calendar, 9))
    assert load_ratio(loads, MONDAY + timedelta(days=8), acute_days=3, chronic_days=9,
                      min_history_days=10).ratio is None


# --------------------------------------------------------------------------- sums


def test_rolling_sum_is_inclusive_of_day_and_n_days_long() -> None:
    loads = {MONDAY + timedelta(days=i): float(i) for i in range(20)}
    # days 4..10 inclusive: 4+5+6+7+8+9+10 = 49
    assert rolling_sum(loads, MONDAY + timedelta(days=10), 7) == 49.0
    assert rolling_sum(loads, MONDAY + timedelta(days=10), 1) == 10.0
    assert rolling_sum(loads, MONDAY - timedelta(days=1), 7) == 0.0


def test_week_change_ratio() -> None:
    # previous week (days 0..6): 10 km a day = 70; this week (days 7..13): 11 km a day = 77
    loads = {MONDAY + timedelta(days=i): (10.0 if i < 7 else 11.0) for i in range(14)}
    this_week, last_week, change = week_change(loads, MONDAY + timedelta(days=13))
    assert (this_week, last_week) == (77.0, 70.0)
    assert change == pytest.approx(1.1)  # 77 / 70


def test_week_change_none_without_last_week() -> None:
    loads = {MONDAY + timedelta(days=7): 12.0}
    assert week_change(loads, MONDAY + timedelta(days=13)) == (12.0, 0.0, None)


# --------------------------------------------------------------------------- properties

day_loads = st.dictionaries(
    st.integers(min_value=0, max_value=70).map(lambda i: MONDAY + timedelta(days=i)),
    st.floats(min_value=-50, max_value=300, allow_nan=False, allow_infinity=False),
    max_size=40)


@settings(max_examples=150, deadline=None)
@given(loads=day_loads, offset=st.integers(min_value=0, max_value=80))
def test_loads_and_ratio_never_negative(loads: dict[date, float], offset: int) -> None:
    got = load_ratio(loads, MONDAY + timedelta(days=offset), first_day=MONDAY)
    assert got.acute >= 0.0
    assert got.chronic >= 0.0
    assert got.ratio is None or got.ratio >= 0.0
    assert got.history_days == offset + 1


@settings(max_examples=150, deadline=None)
@given(loads=day_loads, first=st.integers(min_value=-5, max_value=80),
       last=st.integers(min_value=-5, max_value=80))
def test_daily_series_one_value_per_day(loads: dict[date, float], first: int,
                                        last: int) -> None:
    start, end = MONDAY + timedelta(days=first), MONDAY + timedelta(days=last)
    series = daily_series(loads, start, end)
    assert len(series) == max(0, last - first + 1)
    for i, value in enumerate(series):
        assert value == max(0.0, loads.get(start + timedelta(days=i), 0.0))
