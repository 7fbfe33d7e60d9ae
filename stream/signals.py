"""Signals the rules watch, computed from a runner's sessions, days and smoothed gait.

Each function returns :class:`rules.evaluator.Observation` values: a signal name, an event
time, a number, and the evidence a runner or coach would want to check. Personal
baselines use the runner's own previous 28 days, never the current run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from rules.evaluator import Observation
from stream.days import BASELINE_DAYS, LONGEST_RUN_DAYS, DayFigures, HistoryView, WeekFigures
from stream.gait import GaitReading
from stream.session_fold import speed_bucket
from stream.state import SessionSummary

MIN_BASELINE_RUNS = 3
# cadence at a speed needs this many samples at that speed in the baseline
MIN_BUCKET_SAMPLES = 30
# floors for the spread, so a very consistent runner is not flagged for noise
MIN_BALANCE_SD = 0.3
MIN_PRONATION_SD = 1.0
# a week this small (in load units) is too small a base for percentage growth
WEEK_BASE_MIN = {"distance_km": 5.0, "duration_min": 30.0, "trimp": 50.0}
MIN_LONGEST_RUN_KM = 2.0
# a run is compared with "the longest of the previous 30 days" only once those 30 days
# are inside the runner's history: against a few days, a usual long run looks like a spike
SPIKE_WINDOW_DAYS = LONGEST_RUN_DAYS
MIN_WEEKLY_CLIMB_M = 50.0
MIN_WEEKLY_FAST_MIN = 10.0


@dataclass(frozen=True)
class Baselines:
    balance_mean: float | None = None
    balance_sd: float | None = None
    pronation_mean: float | None = None
    pronation_sd: float | None = None
    cadence_by_speed: Mapping[str, float] = field(default_factory=dict)
    runs: int = 0


def _mean_sd(values: list[float], floor: float) -> tuple[float | None, float | None]:
    """Mean and sample SD (n - 1); plain floats: statistics.stdev is exact but slow."""
    n = len(values)
    if n < MIN_BASELINE_RUNS:
        return None, None
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, max(floor, sd)


def _reading_mean_sd(sessions: list[SessionSummary]) -> tuple[float | None, float | None]:
    """Mean and SD of the smoothed balance readings themselves, pooled over runs.

    The compensation rule compares one reading with these, so the spread is the readings'
    (sample SD, n - 1), not that of whole-run means, which is much narrower.
    """
    if len(sessions) < MIN_BASELINE_RUNS:
        return None, None
    n = sum(s.balance_read_n for s in sessions)
    offset = sum(s.balance_read_sum - 50.0 * s.balance_read_n for s in sessions) / n
    squares = sum(s.balance_read_sq for s in sessions)
    variance = max(0.0, (squares - n * offset * offset) / (n - 1))
    return 50.0 + offset, max(MIN_BALANCE_SD, math.sqrt(variance))


def baselines(sessions: Iterable[SessionSummary], before_t: float,
              exclude: str | None = None) -> Baselines:
    """The runner's own normal over the 28 days before ``before_t``."""
    since = before_t - BASELINE_DAYS * 86400
    recent = [s for s in sessions if since <= s.start_t < before_t
              and s.session_id != exclude and s.counts_as_running]
    pronation = [p for s in recent if (p := s.mean_pronation_deg) is not None]
    pooled: dict[str, tuple[float, int]] = {}
    for s in recent:
        for key, (total, n) in s.cadence_by_speed.items():
            t0, n0 = pooled.get(key, (0.0, 0))
            pooled[key] = (t0 + total, n0 + n)
    bal_mean, bal_sd = _reading_mean_sd([s for s in recent if s.has_reading_spread])
    pro_mean, pro_sd = _mean_sd(pronation, MIN_PRONATION_SD)
    cadence = {k: total / n for k, (total, n) in pooled.items() if n >= MIN_BUCKET_SAMPLES}
    return Baselines(bal_mean, bal_sd, pro_mean, pro_sd, cadence, len(recent))


def baselines_before(view: HistoryView, session: SessionSummary) -> Baselines:
    """The current session's baselines: computed once per session from the view."""
    key = ("baselines", session.start_t)
    cached = view.memo.get(key)
    if not isinstance(cached, Baselines):
        if view.is_compact:
            raise AssertionError("a compact history view was asked for new baselines")
        cached = baselines(view.sessions, session.start_t)
        view.memo[key] = cached
    return cached


def reading_observations(readings: Iterable[GaitReading], base: Baselines,
                         session_id: str) -> list[Observation]:
    """Per smoothed reading during a run: balance, symmetry, compensation, cadence, pronation."""
    out: list[Observation] = []
    for r in readings:
        if r.gct_balance_pct is not None:
            b = r.gct_balance_pct
            out.append(Observation("gct_balance_offset", r.t, abs(b - 50.0), {
                "gct_balance_pct": b, "heavier_side": "left" if b > 50 else "right",
                "session_id": session_id}))
            if base.balance_mean is not None and base.balance_sd:
                z = abs(b - base.balance_mean) / base.balance_sd
                out.append(Observation("asymmetry_z", r.t, z, {
                    "gct_balance_pct": b, "baseline_pct": base.balance_mean,
                    "baseline_sd": base.balance_sd, "sd_away": z}))
        si = r.symmetry_pct
        if si is not None:
            out.append(Observation("symmetry_index", r.t, si, {
                "symmetry_pct": si,
                "measure": "stance time" if r.gct_symmetry_pct is not None
                and abs(r.gct_symmetry_pct) >= abs(r.step_symmetry_pct or 0) else "step length",
                "session_id": session_id}))
        if r.cadence_spm and r.speed_mps:
            usual = base.cadence_by_speed.get(speed_bucket(r.speed_mps))
            if usual:
                out.append(Observation("cadence_vs_baseline", r.t, r.cadence_spm / usual, {
                    "cadence_spm": r.cadence_spm, "baseline_spm": usual,
                    "speed_mps": r.speed_mps, "percent_of_usual": 100 * r.cadence_spm / usual}))
        if r.pronation_deg is not None and base.pronation_mean is not None and base.pronation_sd:
            z = (r.pronation_deg - base.pronation_mean) / base.pronation_sd
            out.append(Observation("pronation_z", r.t, z, {
                "pronation_deg": r.pronation_deg, "baseline_deg": base.pronation_mean,
                "sd_away": z}))
    return out


def longest_previous_run_km(sessions: Iterable[SessionSummary], current: SessionSummary,
                            days: int = SPIKE_WINDOW_DAYS) -> float | None:
    since = current.start_t - days * 86400
    runs = [s.distance_m / 1000 for s in sessions if s.counts_as_running
            and since <= s.start_t < current.start_t and s.session_id != current.session_id]
    return max(runs) if runs else None


def spike_observation(current: SessionSummary, longest: float | None, t: float,
                      history_days: int) -> list[Observation]:
    """This run against the longest of the previous 30 days.

    ``history_days``: whole days between the runner's first recorded run and this run's
    day; below ``SPIKE_WINDOW_DAYS`` the comparison window is not covered yet.
    """
    if history_days < SPIKE_WINDOW_DAYS or longest is None or longest < MIN_LONGEST_RUN_KM:
        return []
    km = current.distance_m / 1000
    return [Observation("session_vs_longest", t, km / longest, {
        "session_km": km, "longest_km": longest, "percent": 100 * km / longest})]


def session_spike(sessions: Iterable[SessionSummary], current: SessionSummary, t: float,
                  history_days: int) -> list[Observation]:
    """From scratch: the current run against the other sessions."""
    return spike_observation(current, longest_previous_run_km(sessions, current), t,
                             history_days)


def load_ratio_observation(figures: DayFigures, t: float, unit: str) -> list[Observation]:
    ratio = figures.ratio
    if ratio.ratio is None:
        return []
    loads = figures.weeks.loads
    # the plain averages beside the EWMA-weighted ones, so the message says both
    return [Observation("acwr", t, ratio.ratio, {
        "acwr": ratio.ratio, "acute_load": ratio.acute, "chronic_load": ratio.chronic,
        "acute_mean": loads[0] / 7, "chronic_mean": sum(loads[:4]) / 28,
        "load_unit": unit, "day": figures.day.isoformat()})]


def growth_observations(weeks: WeekFigures, day: date, t: float, metric: str, unit: str,
                        first_day: date) -> list[Observation]:
    """Week-over-week and two-week load growth, and hills / fast running vs 4 weeks.

    A comparison week must lie wholly inside the runner's history: a first, partial week
    would make any normal week look like a jump.
    """
    known_days = (day - first_day).days

    def covered(weeks_back: int) -> bool:
        return known_days >= 7 * weeks_back + 6

    out: list[Observation] = []
    this_week, last_week, two_back = weeks.loads[0], weeks.loads[1], weeks.loads[2]
    base_min = WEEK_BASE_MIN.get(metric, 0.0)
    evidence: dict[str, float | str] = {"this_week": this_week, "last_week": last_week,
                                        "two_weeks_ago": two_back, "load_unit": unit}
    if covered(1) and last_week >= base_min:
        out.append(Observation("week_over_week", t, this_week / last_week,
                               {**evidence, "percent": 100 * this_week / last_week}))
    if covered(2) and two_back >= base_min:
        out.append(Observation("two_week_increase", t, this_week / two_back,
                               {**evidence, "percent": 100 * this_week / two_back}))
    for values, signal, floor, label in (
            (weeks.climb_m, "climb_vs_4wk", MIN_WEEKLY_CLIMB_M, "m"),
            (weeks.fast_min, "fast_vs_4wk", MIN_WEEKLY_FAST_MIN, "min")):
        now = values[0]
        usual = statistics.fmean(values[1:5])
        if covered(4) and usual >= floor:
            out.append(Observation(signal, t, now / usual, {
                "this_week": now, "four_week_mean": usual, "unit": label,
                "percent": 100 * now / usual}))
    return out


def shoe_observation(shoe: str, km: float, t: float) -> list[Observation]:
    return [Observation("shoe_km", t, km, {"shoe": shoe, "shoe_km": km})]
