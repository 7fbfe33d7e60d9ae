"""Training load maths: daily totals, rolling loads and the EWMA acute:chronic ratio.

Pure functions over plain numbers. The ratio uses exponentially weighted moving averages
with λ = 2 / (N + 1) (Williams et al., BJSM 2017) for a 7-day acute and a 28-day chronic
window. Averages start from zero on the runner's first recorded day and are divided by
``1 - (1 - λ)^n`` (bias correction), so a runner with a steady load reads 1.0 from the
start instead of a ratio inflated by the empty history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

ACUTE_DAYS = 7
CHRONIC_DAYS = 28


def ewma_lambda(days: int) -> float:
    if days < 1:
        raise ValueError("an EWMA window is at least one day")
    return 2.0 / (days + 1)


def ewma(daily: Sequence[float], days: int) -> float:
    """Bias-corrected EWMA of ``daily`` (oldest first) as of its last day; 0.0 if empty."""
    lam = ewma_lambda(days)
    value = 0.0
    for load in daily:
        value = lam * load + (1 - lam) * value
    weight = 1 - (1 - lam) ** len(daily)
    return value / weight if weight > 0 else 0.0


@dataclass(frozen=True, slots=True)
class LoadRatio:
    day: date
    acute: float
    chronic: float
    ratio: float | None  # None while history is too short or chronic load is zero
    history_days: int


def daily_series(by_day: Mapping[date, float], first: date, last: date) -> list[float]:
    """One value per calendar day from ``first`` to ``last``; rest days are 0."""
    if last < first:
        return []
    n = (last - first).days + 1
    return [max(0.0, by_day.get(first + timedelta(days=i), 0.0)) for i in range(n)]


def load_ratio(by_day: Mapping[date, float], day: date, first_day: date | None = None,
               acute_days: int = ACUTE_DAYS, chronic_days: int = CHRONIC_DAYS,
               min_history_days: int = CHRONIC_DAYS) -> LoadRatio:
    """EWMA acute:chronic ratio on ``day`` from daily loads (days with load only)."""
    start = first_day or (min(by_day) if by_day else day)
    series = daily_series(by_day, start, day)
    acute = ewma(series, acute_days)
    chronic = ewma(series, chronic_days)
    ratio = acute / chronic if chronic > 0 and len(series) >= min_history_days else None
    return LoadRatio(day, acute, chronic, ratio, len(series))


def rolling_sum(by_day: Mapping[date, float], day: date, days: int) -> float:
    """Sum of the ``days`` days ending on ``day`` (inclusive)."""
    return sum(by_day.get(day - timedelta(days=i), 0.0) for i in range(days))


def week_change(by_day: Mapping[date, float], day: date) -> tuple[float, float, float | None]:
    """(this 7 days, previous 7 days, this / previous) ending on ``day``."""
    this_week = rolling_sum(by_day, day, 7)
    last_week = rolling_sum(by_day, day - timedelta(days=7), 7)
    return this_week, last_week, (this_week / last_week if last_week > 0 else None)
