"""The pure per-runner step ``process_event(state, event, profile) -> (state, outputs)``.

Scenarios are built from contract events as the bridge would produce them; expected
figures come from the scenario's own definition (distances, days, the catalogue's
thresholds and sustain windows), never from running the code.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.contract import PainReport, RunnerEvent, Sample, SampleBatch, SessionEvent
from rules.alerts import Alert
from rules.catalogue import load_catalogue
from stream import metrics
from stream.metrics import MetricPoint
from stream.runner import (
    MAX_RANGES,
    DayTotals,
    RunnerState,
    SeenSequences,
    StepOutput,
    day_totals,
    process_event,
)
from stream.state_codec import decode, encode, encode_history, encode_live, encode_seen
from team.roster import Roster, RunnerProfile

CATALOGUE = load_catalogue()
UTC_PROFILE = Roster().profile("ann", CATALOGUE)
LA = "America/Los_Angeles"
LA_ROSTER = Roster.model_validate({
    "teams": [{"id": "west", "name": "West Coast Striders", "tz": LA}],
    "runners": [{"id": "ann", "name": "Ann", "team": "west"}]})
LA_PROFILE = LA_ROSTER.profile("ann", CATALOGUE)

MONDAY = date(2024, 1, 1)
ALLOWED_TAGS = {"team", "runner", "device", "sport", "rule", "severity", "when"}


def utc(day: date, hour: int = 7, minute: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp()


def run_batch(seq: int, start_t: float, km: float, minutes: float, *,
              session_id: str | None = None, device: str = "watch", runner: str = "ann",
              start_km: float = 0.0, points: int = 2) -> RunnerEvent:
    """A batch covering ``minutes`` of running from ``start_t``, cumulative distance from
    ``start_km`` to ``start_km + km``, with ``points`` evenly spaced samples."""
    samples = [Sample(t=start_t + minutes * 60 * i / (points - 1),
                      distance_m=(start_km + km * i / (points - 1)) * 1000, cadence_spm=170)
               for i in range(points)]
    batch = SampleBatch(seq=seq, session_id=session_id, samples=samples)
    return RunnerEvent.wrap(runner, device, batch, received_at=samples[-1].t + 1)


def pain_event(t: float, score: int, when: str, runner: str = "ann") -> RunnerEvent:
    report = PainReport.model_validate(
        {"t": t, "score": score, "where": "inner_ankle", "when": when})
    return RunnerEvent.wrap(runner, "app", report, received_at=t + 1)


def feed(events: Iterable[RunnerEvent], profile: RunnerProfile,
         state: RunnerState | None = None) -> tuple[RunnerState, list[StepOutput]]:
    state = state or RunnerState(runner=profile.runner)
    outputs = []
    for event in events:
        state, out = process_event(state, event, profile)
        outputs.append(out)
    return state, outputs


def stored(state: RunnerState) -> tuple[bytes, bytes, bytes]:
    """Every byte the table would hold for the state."""
    return encode_live(state), encode_seen(state), encode_history(state)


def round_trip(state: RunnerState) -> RunnerState:
    out = encode(state)
    assert out.seen is not None and out.history is not None
    return decode(out.live, out.seen, out.history, state.runner)


def alerts_of(outputs: list[StepOutput], rule: str | None = None) -> list[Alert]:
    return [a for out in outputs for a in out.alerts if rule is None or a.rule == rule]


def points_of(outputs: list[StepOutput], measurement: str | None = None) -> list[MetricPoint]:
    return [p for out in outputs for p in out.points
            if measurement is None or p.measurement == measurement]


# --------------------------------------------------------------------------- idempotency


def _one_of_each(t: float) -> list[RunnerEvent]:
    start = SessionEvent(seq=1, session_id="s1", phase="start", t=t, shoe="pegasus")
    end = SessionEvent(seq=2, session_id="s1", phase="end", t=t + 1800)
    return [RunnerEvent.wrap("ann", "watch", start, t),
            run_batch(7, t, 5.0, 30, session_id="s1"),
            RunnerEvent.wrap("ann", "watch", end, t + 1800),
            pain_event(t + 3600, 7, "after")]


@pytest.mark.parametrize("index", range(4), ids=["session-start", "samples", "session-end",
                                                 "pain"])
def test_same_event_twice_changes_nothing(index: int) -> None:
    events = _one_of_each(utc(MONDAY))
    state, _ = feed(events[:index], UTC_PROFILE)
    before = stored(state)
    once, first = process_event(state, events[index], UTC_PROFILE)
    after_once = stored(once)
    assert after_once != before
    twice, second = process_event(once, events[index], UTC_PROFILE)
    assert not first.duplicate and first.points
    assert stored(twice) == after_once
    assert second.duplicate is True
    assert second.alerts == [] and second.points == []


def test_redelivery_after_other_events_is_still_a_duplicate() -> None:
    events = _one_of_each(utc(MONDAY))
    state, _ = feed(events, UTC_PROFILE)
    before = stored(state)
    again, outputs = feed(events, UTC_PROFILE, state)
    assert stored(again) == before
    assert all(o.duplicate for o in outputs)


def test_state_survives_the_table_round_trip() -> None:
    # the Faust table stores the encoded parts; reading them back gives the same state
    events = [*_one_of_each(utc(MONDAY)), run_batch(8, utc(MONDAY, 18), 3.0, 20)]
    state, _ = feed(events, UTC_PROFILE)
    assert round_trip(state) == state
    assert decode(None, None, None, "ann") == RunnerState(runner="ann")


def test_state_read_back_between_batches_gives_the_same_outputs() -> None:
    """A worker that restarts after any record carries on exactly as one that did not."""
    events = [*_one_of_each(utc(MONDAY)), run_batch(8, utc(MONDAY, 18), 3.0, 20),
              run_batch(9, utc(MONDAY, 18, 20), 3.0, 20, start_km=3.0),
              pain_event(utc(MONDAY, 20), 4, "after")]
    steady, steady_out = feed(events, UTC_PROFILE)
    state = RunnerState(runner="ann")
    outputs = []
    for event in events:
        live = encode(state)  # what the table held, written part by part
        state = decode(live.live, live.seen or encode_seen(state),
                       live.history or encode_history(state), "ann")
        state, out = process_event(state, event, UTC_PROFILE)
        outputs.append(out)
    assert state == steady
    assert outputs == steady_out


# --------------------------------------------------------------------------- SeenSequences


def test_seen_sequences_contains_and_add() -> None:
    seen = SeenSequences()
    assert not seen.contains(0)
    seen.add(5)
    assert seen.contains(5) and not seen.contains(4) and not seen.contains(6)
    seen.add(5)
    assert seen.ranges() == [(5, 5)]  # adding again changes nothing
    seen.add(6)
    seen.add(4)
    assert seen.ranges() == [(4, 6)]
    seen.add(10)
    assert seen.ranges() == [(4, 6), (10, 10)]
    assert not seen.contains(8)


def test_seen_sequences_out_of_order_merges() -> None:
    seen = SeenSequences()
    for seq in (10, 8, 12, 9, 11):
        seen.add(seq)
    assert seen.ranges() == [(8, 12)]
    assert all(seen.contains(s) for s in range(8, 13))
    assert not seen.contains(7) and not seen.contains(13)


def test_seen_sequences_many_gaps_fold_into_floor() -> None:
    # pairs 3i, 3i+1 with a gap at 3i+2: every pair is its own range (3i, 3i+1); n of them
    # leave n ranges, so the oldest n − MAX_RANGES fold into the floor, which becomes the
    # top of the last folded range
    n = MAX_RANGES + 40
    seen = SeenSequences()
    for i in range(n):
        seen.add(3 * i + 1)
        seen.add(3 * i)
    folded = n - MAX_RANGES
    assert len(seen.ranges()) == MAX_RANGES
    assert seen.floor == 3 * (folded - 1) + 1
    assert seen.ranges()[0] == (3 * folded, 3 * folded + 1)
    assert seen.ranges()[-1] == (3 * (n - 1), 3 * (n - 1) + 1)
    # everything at or below the floor counts as seen, even the gaps never added
    assert seen.contains(2) and seen.contains(3 * (folded - 1) - 1)
    # above the floor the gaps are still gaps
    assert not seen.contains(3 * folded + 2)
    assert not seen.contains(3 * folded - 1)
    assert seen.contains(3 * (n - 1) + 1) and not seen.contains(3 * n)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=60))
def test_seen_sequences_is_a_set_below_the_range_limit(seqs: list[int]) -> None:
    seen = SeenSequences()
    for s in seqs:
        seen.add(s)
    assert seen.floor == -1  # at most 60 ranges, far below MAX_RANGES
    for probe in range(0, 402):
        assert seen.contains(probe) == (probe in seqs)
    # ranges are sorted, disjoint and not adjacent
    for (_, hi), (lo, _) in itertools.pairwise(seen.ranges()):
        assert lo > hi + 1


# --------------------------------------------------------------------------- order and duplication


@dataclass(frozen=True)
class Run:
    day: int  # days after MONDAY
    hour: int
    km: float
    minutes: int
    pieces: int  # how many batches the run is split into


# km and minutes are chosen so every sum is exact in binary floating point
RUNS = [Run(0, 7, 5.0, 30, 3), Run(0, 18, 10.5, 60, 2), Run(1, 7, 8.0, 45, 1),
        Run(3, 6, 12.0, 72, 4), Run(3, 12, 2.5, 15, 1)]
POD_RUN = Run(2, 7, 6.0, 36, 3)  # a foot pod without session ids


def _run_events(run: Run, device: str, first_seq: int, with_session: bool
                ) -> list[RunnerEvent]:
    start = utc(MONDAY + timedelta(days=run.day), run.hour)
    km, minutes = run.km / run.pieces, run.minutes / run.pieces
    sid = f"{device}-run-{run.day}-{run.hour}" if with_session else None
    return [run_batch(first_seq + i, start + i * minutes * 60, km, minutes, session_id=sid,
                      device=device, start_km=i * km, points=3) for i in range(run.pieces)]


def _all_batches() -> list[RunnerEvent]:
    events: list[RunnerEvent] = []
    for run in RUNS:
        events += _run_events(run, "watch", 100 + len(events), with_session=True)
    events += _run_events(POD_RUN, "pod", 1, with_session=False)
    return events


def _expected_totals() -> dict[date, DayTotals]:
    expected: dict[date, DayTotals] = {}
    for run in [*RUNS, POD_RUN]:
        day = MONDAY + timedelta(days=run.day)
        prev = expected.get(day, DayTotals())
        expected[day] = DayTotals(distance_km=prev.distance_km + run.km,
                                  duration_min=prev.duration_min + run.minutes,
                                  runs=prev.runs + 1)
    return expected


def test_in_order_day_totals_match_the_runs() -> None:
    state, _ = feed(_all_batches(), UTC_PROFILE)
    assert day_totals(state, UTC_PROFILE) == _expected_totals()


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_day_totals_do_not_depend_on_order_or_duplication(data: st.DataObject) -> None:
    batches = _all_batches()
    extra = data.draw(st.lists(st.sampled_from(batches), max_size=8), label="redelivered")
    order = data.draw(st.permutations(batches + extra), label="delivery order")
    state, outputs = feed(order, UTC_PROFILE)
    assert day_totals(state, UTC_PROFILE) == _expected_totals()
    assert sum(o.duplicate for o in outputs) == len(extra)


def test_late_batch_without_session_id_keeps_its_own_run() -> None:
    # a foot pod (no session ids) syncs Tuesday's run, then Monday's run arrives late
    monday = _run_events(Run(0, 7, 5.0, 30, 1), "pod", 1, with_session=False)
    tuesday = _run_events(Run(1, 7, 6.0, 36, 1), "pod", 2, with_session=False)
    expected = {MONDAY: DayTotals(distance_km=5.0, duration_min=30.0, runs=1),
                MONDAY + timedelta(days=1): DayTotals(distance_km=6.0, duration_min=36.0, runs=1)}
    in_order, _ = feed(monday + tuesday, UTC_PROFILE)
    assert day_totals(in_order, UTC_PROFILE) == expected
    late, _ = feed(tuesday + monday, UTC_PROFILE)
    assert day_totals(late, UTC_PROFILE) == expected


# --------------------------------------------------------------------------- local days


def _la_midnight_s(day: date) -> float:
    # Pacific Daylight Time (UTC−7) from 10 March 2024: local midnight is 07:00 UTC
    return datetime(day.year, day.month, day.day, 7, tzinfo=UTC).timestamp()


def _daily_load_by_time(outputs: list[StepOutput]) -> dict[int, dict[str, metrics.FieldValue]]:
    return {p.time_ms: dict(p.fields) for p in points_of(outputs, metrics.DAILY_LOAD)}


def test_late_batch_lands_on_its_local_day() -> None:
    # 2024-03-12 16:00 UTC is 09:00 on the 12th in Los Angeles;
    # 2024-03-12 03:00 UTC is 20:00 on the 11th there: the previous local day
    morning_12 = datetime(2024, 3, 12, 16, tzinfo=UTC).timestamp()
    evening_11 = datetime(2024, 3, 12, 3, tzinfo=UTC).timestamp()
    on_time = run_batch(2, morning_12, 8.0, 48, session_id="on-time")
    late = run_batch(1, evening_11, 5.0, 30, session_id="late-run")
    state, outputs = feed([on_time, late], LA_PROFILE)
    the_11th, the_12th = date(2024, 3, 11), date(2024, 3, 12)
    assert day_totals(state, LA_PROFILE) == {
        the_11th: DayTotals(distance_km=5.0, duration_min=30.0, runs=1),
        the_12th: DayTotals(distance_km=8.0, duration_min=48.0, runs=1)}
    # the late batch's outputs carry the daily load of the 11th and of the days after it,
    # each stamped at that day's local midnight
    late_days = _daily_load_by_time(outputs[1:])
    assert set(late_days) == {round(_la_midnight_s(the_11th) * 1000),
                              round(_la_midnight_s(the_12th) * 1000)}
    assert late_days[round(_la_midnight_s(the_11th) * 1000)]["distance_km"] == 5.0
    assert late_days[round(_la_midnight_s(the_12th) * 1000)]["distance_km"] == 8.0
    assert state.first_day == the_11th.isoformat()


# --------------------------------------------------------------------------- load ratio rule


def _weekly_km(day: int, spike_km: float | None) -> float:
    """5 km on Mon/Wed/Fri/Sun; on day 35 (a Monday) the spike runner runs ``spike_km``."""
    if day == 35 and spike_km is not None:
        return spike_km
    return 5.0 if (MONDAY + timedelta(days=day)).weekday() in (0, 2, 4, 6) else 0.0


def _season(runner: str, spike_km: float | None, days: int = 49) -> list[RunnerEvent]:
    events = []
    for day in range(days):
        km = _weekly_km(day, spike_km)
        if km:
            events.append(run_batch(day, utc(MONDAY + timedelta(days=day)), km, km * 6,
                                    session_id=f"{runner}-{day}", runner=runner))
    return events


def _reference_acwr(calendar: list[float]) -> float:
    """EWMA (λ = 2/(N+1)), bias-corrected: a weighted mean with weights (1 − λ)^age."""
    def ewma(n_days: int) -> float:
        keep = 1 - 2 / (n_days + 1)
        weights = [keep ** (len(calendar) - 1 - i) for i in range(len(calendar))]
        return sum(w * x for w, x in zip(weights, calendar, strict=True)) / sum(weights)
    return ewma(7) / ewma(28)


def test_load_ratio_alert_fires_once_for_a_spike() -> None:
    spike = Roster().profile("spike", CATALOGUE)
    _, outputs = feed(_season("spike", spike_km=20.0), spike)
    alerts = alerts_of(outputs, "load_ratio")  # other rules (session spike, …) may fire too
    # reference: day 34 ratio ≈ 1.04 (quiet), day 35 with 20 km ≈ 1.74 (> 1.5: notice,
    # the rule's only level), day 37 ≈ 1.36 and later under 1.5: quiet
    calendar = [_weekly_km(d, 20.0) for d in range(36)]
    expected_ratio = _reference_acwr(calendar)
    assert expected_ratio > 1.5
    assert _reference_acwr(calendar[:35]) < 1.3
    for later in (37, 39, 41):
        later_ratio = _reference_acwr([_weekly_km(d, 20.0) for d in range(later + 1)])
        assert later_ratio < 1.5 and (later_ratio < 1.3 or later - 35 < 3)
    assert [(a.rule, a.severity) for a in alerts] == [("load_ratio", "notice")]
    alert = alerts[0]
    # the message names the EWMA values as such and shows the plain averages beside them
    assert "EWMA-weighted" in alert.message and "Plain averages" in alert.message
    assert alert.evidence["acute_mean"] == pytest.approx(
        sum(calendar[29:36]) / 7, rel=1e-9)
    assert alert.evidence["chronic_mean"] == pytest.approx(
        sum(calendar[8:36]) / 28, rel=1e-9)
    spike_end = utc(MONDAY + timedelta(days=35)) + 20.0 * 6 * 60
    assert alert.fired_at == spike_end
    assert alert.evidence["acwr"] == pytest.approx(expected_ratio, rel=1e-9)
    assert alert.evidence["day"] == (MONDAY + timedelta(days=35)).isoformat()
    assert alert.evidence["load_unit"] == "km"
    assert alert.runner == "spike" and alert.team == "unassigned"


def test_steady_runner_never_alerts() -> None:
    steady = Roster().profile("steady", CATALOGUE)
    # reference: with 5 km four days a week the ratio stays between 0.85 and 1.15
    calendar = [_weekly_km(d, None) for d in range(49)]
    assert max(_reference_acwr(calendar[:n]) for n in range(28, 50)) < 1.3
    _, outputs = feed(_season("steady", spike_km=None), steady)
    assert alerts_of(outputs, "load_ratio") == []
    acwr = [dict(p.fields).get("acwr") for p in points_of(outputs, metrics.DAILY_LOAD)]
    assert any(a is not None for a in acwr)


def test_no_load_ratio_before_28_days() -> None:
    # 27 days of history, the last one a huge run: no ratio yet, so no alert
    events = [run_batch(d, utc(MONDAY + timedelta(days=d)), 5.0, 30, session_id=f"r{d}")
              for d in range(26)]
    events.append(run_batch(26, utc(MONDAY + timedelta(days=26)), 40.0, 240,
                            session_id="r26"))
    _, outputs = feed(events, UTC_PROFILE)
    assert alerts_of(outputs, "load_ratio") == []
    assert all("acwr" not in dict(p.fields) for p in points_of(outputs, metrics.DAILY_LOAD))


# --------------------------------------------------------------------------- gct balance rule


def _balance_run(t0: float, balances: list[float], seq0: int = 0,
                 session_id: str = "tilt-run") -> list[RunnerEvent]:
    """A watch reporting contact-time balance once a second, 5 samples per batch."""
    samples = [Sample(t=t0 + i, gct_balance_pct=b, cadence_spm=172, speed_mps=3.2)
               for i, b in enumerate(balances)]
    return [RunnerEvent.wrap("ann", "watch", SampleBatch(seq=seq0 + k, session_id=session_id,
                                                         samples=samples[i:i + 5]),
                             received_at=samples[min(i + 4, len(samples) - 1)].t)
            for k, i in enumerate(range(0, len(samples), 5))]


def _first_reading_at_or_after(t0: float, sustain_s: float) -> float:
    # readings every 5 s from the first sample; a level is due at the first reading
    # sustain_s after the condition started (t0)
    return t0 + 5 * math.ceil(sustain_s / 5)


def test_a_30_second_imbalance_does_not_fire() -> None:
    t0 = utc(MONDAY)
    # 60 s even, 30 s at 53.5 %, 3 min even: even with smoothing the offset is above 0.7
    # for well under the 60 s notice window (rise ~3 s in, fall 15·ln 5 ≈ 24 s after)
    events = _balance_run(t0, [50.0] * 60 + [53.5] * 30 + [50.0] * 180)
    _, outputs = feed(events, UTC_PROFILE)
    assert alerts_of(outputs, "gct_balance") == []


@pytest.mark.parametrize(("balance", "side"), [(53.5, "left"), (46.5, "right")])
def test_three_minutes_of_imbalance_fire_notice_then_warn(balance: float, side: str) -> None:
    t0 = utc(MONDAY)
    rule = UTC_PROFILE.rules["gct_balance"]
    sustain = {lv.severity: lv.sustain_s for lv in rule.levels}
    _, outputs = feed(_balance_run(t0, [balance] * 180), UTC_PROFILE)
    alerts = alerts_of(outputs, "gct_balance")
    # offset |53.5 − 50| = 3.5 is over both 0.7 (notice) and 2.2 (warn) from the first sample
    assert [(a.severity, a.fired_at) for a in alerts] == [
        ("notice", _first_reading_at_or_after(t0, sustain["notice"])),
        ("warn", _first_reading_at_or_after(t0, sustain["warn"]))]
    for alert in alerts:
        assert alert.evidence["gct_balance_pct"] == pytest.approx(balance)
        assert alert.evidence["heavier_side"] == side
        assert alert.evidence["session_id"] == "tilt-run"
        assert alert.evidence["value"] == pytest.approx(3.5)
        assert side in alert.message
    assert alerts_of(outputs, "load_ratio") == []


# --------------------------------------------------------------------------- pain rule


@pytest.mark.parametrize(("score", "when", "fires"), [
    (7, "after", True), (6, "after", True), (5, "after", False), (2, "after", False),
    (7, "during", False), (9, "morning", False), (10, "night", False)])
def test_pain_after_run(score: int, when: str, fires: bool) -> None:
    t = utc(MONDAY, 9)
    _, outputs = feed([pain_event(t, score, when)], UTC_PROFILE)
    alerts = alerts_of(outputs, "pain_after_run")  # e.g. night pain may fire bone_stress
    if fires:
        assert [(a.rule, a.severity, a.fired_at) for a in alerts] == [
            ("pain_after_run", "warn", t)]
        assert alerts[0].evidence["score"] == score
        assert alerts[0].evidence["where"] == "inner-ankle"
        assert "arch-lowering" in alerts[0].next_step  # the inner ankle's own next step
        assert f"{score}" in alerts[0].message and "ankle" in alerts[0].message
    else:
        assert alerts == []
    pain_points = points_of(outputs, metrics.PAIN)
    assert len(pain_points) == 1
    assert dict(pain_points[0].tags) == {"team": "unassigned", "runner": "ann", "when": when}
    assert dict(pain_points[0].fields)["score"] == score


def test_pain_alert_respects_cooldown() -> None:
    t = utc(MONDAY, 9)
    cooldown_s = CATALOGUE["pain_after_run"].cooldown_h * 3600
    events = [pain_event(t, 6, "after"), pain_event(t + 60, 7, "after"),
              pain_event(t + cooldown_s, 6, "after")]
    _, outputs = feed(events, UTC_PROFILE)
    assert [a.fired_at for a in alerts_of(outputs, "pain_after_run")] == [t, t + cooldown_s]


# --------------------------------------------------------------------------- metric points


def _mixed_scenario() -> list[RunnerEvent]:
    t0 = utc(MONDAY)
    return (_one_of_each(t0) + _balance_run(t0 + 7200, [53.5] * 130, seq0=500)
            + [run_batch(9, t0 + 86400, 6.0, 36, session_id="s2"),
               run_batch(10, t0 + 86400 + 36 * 60, 2.0, 12, session_id="s2", start_km=6.0)])


def test_points_have_low_cardinality_tags_only() -> None:
    _, outputs = feed(_mixed_scenario(), UTC_PROFILE)
    points = points_of(outputs)
    wanted = {metrics.RUN_WINDOW, metrics.SESSION, metrics.DAILY_LOAD, metrics.ALERT,
              metrics.PAIN}
    assert wanted <= {p.measurement for p in points} <= set(metrics.MEASUREMENTS)
    for point in points:
        tags = dict(point.tags)
        assert set(tags) <= ALLOWED_TAGS, point
        assert tags["team"] == "unassigned" and tags["runner"] == "ann"
        assert tags.get("severity", "notice") in {"info", "notice", "warn", "critical"}
        assert tags.get("when", "after") in {"during", "after", "morning", "night"}
        assert tags.get("sport", "running") in {"running", "walking", "trail_running",
                                                "treadmill"}
        assert tags.get("device", "watch") in {"watch", "app"}
    assert {"gct_balance", "pain_after_run"} <= {
        dict(p.tags)["rule"] for p in points_of(outputs, metrics.ALERT)}


def test_same_input_gives_the_same_points() -> None:
    events = _mixed_scenario()
    _, first = feed(events, UTC_PROFILE)
    _, second = feed(events, UTC_PROFILE)
    assert [o.points for o in first] == [o.points for o in second]
    assert [o.alerts for o in first] == [o.alerts for o in second]


def test_session_and_daily_points_have_stable_times() -> None:
    t0 = utc(MONDAY + timedelta(days=1))
    events = [run_batch(1, t0, 3.0, 18, session_id="s2"),
              run_batch(2, t0 + 18 * 60, 3.0, 18, session_id="s2", start_km=3.0)]
    _, outputs = feed(events, UTC_PROFILE)
    sessions = points_of(outputs, metrics.SESSION)
    daily = points_of(outputs, metrics.DAILY_LOAD)
    # every batch of a session rewrites the same point: stamped at the session start
    assert [p.time_ms for p in sessions] == [round(t0 * 1000)] * 2
    assert [dict(p.fields)["distance_km"] for p in sessions] == [3.0, 6.0]
    # the day's load point is stamped at local midnight (UTC here), whatever the batch time
    midnight = datetime(2024, 1, 2, tzinfo=UTC).timestamp()
    assert [p.time_ms for p in daily] == [round(midnight * 1000)] * 2
    assert [dict(p.fields)["distance_km"] for p in daily] == [3.0, 6.0]
    assert dict(daily[-1].fields)["runs"] == 1


def test_a_batch_older_than_the_remembered_window_is_flagged_not_counted() -> None:
    from stream.runner import MAX_RANGES, SeenSequences

    seen = SeenSequences()
    for seq in range(0, 2 * (MAX_RANGES + 5), 2):  # every other number: one gap each
        seen.add(seq)
    assert len(seen.ranges()) == MAX_RANGES
    assert seen.contains(1) and seen.below_window(1)  # an old gap: treated as seen
    newest_gap = 2 * (MAX_RANGES + 5) - 3
    assert not seen.contains(newest_gap) and not seen.below_window(newest_gap)
