"""Personal baselines, TRIMP and the growth signals, checked against hand arithmetic."""

from __future__ import annotations

import math
import time
from datetime import date, timedelta

import msgspec
import pytest

from ingest.decoders import InboundMessage
from ingest.routing import decode_message
from rules.catalogue import load_catalogue
from stream import signals
from stream.days import week_figures
from stream.runner import (
    DayTotals,
    RunnerState,
    SessionSummary,
    day_loads,
    day_totals,
    process_event,
    trimp_per_minute,
)
from team.roster import Roster
from tests.scenarios import TODAY, Gait, run

T0 = 1_790_000_000.0


def session(i: int, start: float, balance: tuple[float, ...] = (),
            pronation: float | None = None, cadence: dict[str, tuple[float, int]] | None = None
            ) -> SessionSummary:
    """A past run; ``balance``: its smoothed balance readings."""
    return SessionSummary(
        session_id=f"s{i}", device="watch", start_t=start, end_t=start + 1800,
        balance_read_sum=sum(balance), balance_read_n=len(balance),
        balance_read_sq=sum((b - 50.0) ** 2 for b in balance),
        pronation_sum=pronation or 0.0, pronation_n=1 if pronation is not None else 0,
        cadence_by_speed=cadence or {})


def test_baseline_mean_and_sd_from_the_previous_28_days_only() -> None:
    day = 86400.0
    sessions = [session(1, T0 - 40 * day, balance=(60.0,)),  # too old: left out
                session(2, T0 - 20 * day, balance=(49.0, 51.0), pronation=6.0),
                session(3, T0 - 10 * day, balance=(51.0,), pronation=8.0),
                session(4, T0 - 5 * day, balance=(52.0, 52.0), pronation=10.0),
                # the current run: never its own baseline
                session(5, T0 + 60, balance=(70.0,))]
    base = signals.baselines(sessions, T0, exclude="s5")
    # balance, over the readings themselves (not run means): 49, 51, 51, 52, 52 have mean
    # 51 and sample SD sqrt((4 + 0 + 0 + 1 + 1) / 4) = sqrt(1.5); the run means (50, 51,
    # 52) would give SD 1
    assert base.balance_mean == pytest.approx(51.0)
    assert base.balance_sd == pytest.approx(1.5 ** 0.5)
    # pronation: mean 8, SD sqrt((4 + 0 + 4) / 2) = 2
    assert base.pronation_mean == pytest.approx(8.0)
    assert base.pronation_sd == pytest.approx(2.0)
    assert base.runs == 3


def test_baseline_needs_three_runs_and_has_a_floor_on_spread() -> None:
    two = [session(1, T0 - 3 * 86400, balance=(50.0, 50.0)),
           session(2, T0 - 86400, balance=(50.0, 50.0))]
    assert signals.baselines(two, T0).balance_mean is None
    three = [*two, session(3, T0 - 2 * 86400, balance=(50.0, 50.0))]
    assert signals.baselines(three, T0).balance_sd == signals.MIN_BALANCE_SD
    # a run stored before the readings' spread was kept is left out of the baseline
    old = msgspec.structs.replace(three[2], balance_read_sq=-1.0)
    assert signals.baselines([*two, old], T0).balance_mean is None


def test_cadence_at_speed_pools_samples_across_runs() -> None:
    sessions = [session(1, T0 - 86400, cadence={"3.00": (170.0 * 20, 20)}),
                session(2, T0 - 2 * 86400, cadence={"3.00": (174.0 * 20, 20),
                                                     "4.00": (180.0 * 5, 5)})]
    base = signals.baselines(sessions, T0)
    # 40 samples at 3.00 m/s: (3400 + 3480) / 40 = 172; only 5 at 4.00: not enough
    assert base.cadence_by_speed == {"3.00": pytest.approx(172.0)}


def test_trimp_rate_by_hand() -> None:
    # HR 150, rest 50, max 200: reserve 100/150 = 2/3; 2/3 · 0.64 · e^(1.28) = 1.5360
    assert trimp_per_minute(150, 50, 200) == pytest.approx(2 / 3 * 0.64 * math.exp(1.28))
    assert trimp_per_minute(40, 50, 200) == 0.0  # below resting: no load
    assert trimp_per_minute(250, 50, 200) == pytest.approx(0.64 * math.exp(1.92))


def test_team_load_metric_trimp_uses_heart_rate() -> None:
    roster = Roster.model_validate({
        "teams": [{"id": "t", "name": "T", "load_metric": "trimp"}],
        "runners": [{"id": "hr", "name": "HR", "team": "t", "resting_hr_bpm": 50,
                     "max_hr_bpm": 195}]})
    profile = roster.profile("hr", load_catalogue())
    state = RunnerState(runner="hr")
    for topic, payload in run("hr", TODAY, Gait(km=3.6)):
        state, _ = process_event(state, decode_message(
            InboundMessage(topic, payload, time.time())), profile)
    totals = day_totals(state, profile)
    day = TODAY.date()
    # 3.6 km at 3 m/s = 1200 s at HR 145 (samples every 10 s: 1190 s between the first
    # and last); reserve (145 - 50) / 145 = 0.6552; rate 0.6552 · 0.64 · e^(1.258) = 1.4746
    reserve = 95 / 145
    expected = 1190 / 60 * reserve * 0.64 * math.exp(1.92 * reserve)
    assert totals[day].trimp == pytest.approx(expected, rel=1e-6)
    assert day_loads(totals, profile)[day] == pytest.approx(expected, rel=1e-6)


def test_growth_waits_for_whole_comparison_weeks() -> None:
    day = date(2026, 11, 16)
    totals = {day - timedelta(days=i): DayTotals(distance_km=10.0) for i in range(0, 14, 2)}
    loads = {d: t.distance_km for d, t in totals.items()}
    # history began 13 days ago: last week (days 7-13) is whole, the week before is not
    first = day - timedelta(days=13)
    weeks = week_figures(totals, loads, day)
    obs = {o.signal: o for o in signals.growth_observations(
        weeks, day, 0.0, "distance_km", "km", first)}
    assert "week_over_week" in obs and "two_week_increase" not in obs
    # this week: days 0, 2, 4, 6 = 40 km; last week: days 8, 10, 12 = 30 km
    assert obs["week_over_week"].value == pytest.approx(40 / 30)
    later = {o.signal for o in signals.growth_observations(
        weeks, day, 0.0, "distance_km", "km", day - timedelta(days=12))}
    assert later == set()  # one day less of history: last week is not whole either


def test_session_spike_compares_with_the_longest_of_the_previous_30_days() -> None:
    day = 86400.0
    older = [SessionSummary(session_id=f"o{i}", device="w", start_t=T0 - d * day,
                            end_t=T0 - d * day + 1, first_distance=(0, 0.0),
                            last_distance=(1, km * 1000))
             for i, (d, km) in enumerate([(40, 30.0), (20, 10.0), (5, 8.0)])]
    today = SessionSummary(session_id="now", device="w", start_t=T0, end_t=T0 + 1,
                           first_distance=(0, 0.0), last_distance=(1, 12_000.0))
    (obs,) = signals.session_spike([*older, today], today, T0, history_days=40)
    # the 30 km run is 40 days old: the longest within 30 days is 10 km; 12 / 10 = 1.2
    assert obs.value == pytest.approx(1.2)
    assert obs.evidence["longest_km"] == pytest.approx(10.0)


@pytest.mark.parametrize("history_days", [0, 5, 29])
def test_session_spike_waits_for_30_days_of_history(history_days: int) -> None:
    """A runner's first long run after connecting is compared with nothing yet."""
    day = 86400.0
    older = [SessionSummary(session_id="o", device="w", start_t=T0 - 2 * day,
                            end_t=T0 - 2 * day + 1, first_distance=(0, 0.0),
                            last_distance=(1, 5000.0))]
    today = SessionSummary(session_id="now", device="w", start_t=T0, end_t=T0 + 1,
                           first_distance=(0, 0.0), last_distance=(1, 12_000.0))
    assert signals.session_spike([*older, today], today, T0, history_days) == []
    assert signals.session_spike([*older, today], today, T0, 30) != []


def test_rest_days_between_runs_get_their_daily_load_points() -> None:
    profile = Roster().profile("rest", load_catalogue())
    state = RunnerState(runner="rest")
    points = []
    for start in (TODAY - timedelta(days=3), TODAY):
        for topic, payload in run("rest", start, Gait(km=1.5)):
            state, out = process_event(state, decode_message(
                InboundMessage(topic, payload, time.time())), profile)
            points += out.points
    days = {p.time_ms for p in points if p.measurement == "daily_load"}
    midnights = {int((TODAY.replace(hour=0) - timedelta(days=i)).timestamp() * 1000)
                 for i in range(4)}
    assert days == midnights  # the run days and both rest days in between
    rest_day = [p for p in points if p.measurement == "daily_load"
                and p.time_ms == min(midnights) + 86_400_000]
    assert dict(rest_day[-1].fields)["distance_km"] == 0.0
