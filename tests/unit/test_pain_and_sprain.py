"""Pain trends, sprain reports and the return to running, event by event in the pure core.

Each test builds its history from fixed dates (``tests.scenarios.TODAY``, a Monday).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import msgspec
import pytest

from ingest.contract import InjuryReport
from ingest.decoders import InboundMessage
from ingest.routing import decode_message
from rules.alerts import Alert
from rules.catalogue import load_catalogue
from stream.runner import RunnerState, process_event
from stream.sprain import estimate_grade
from stream.state_codec import HistoryPart, decode, encode
from team.roster import Roster, RosterError, load_roster
from tests.scenarios import (
    TODAY,
    Gait,
    Message,
    _day,
    injury,
    pain,
    recovery_check,
    run,
    stage_session,
)

CATALOGUE = load_catalogue()


def roster(**runner: Any) -> Roster:
    return Roster.model_validate({"teams": [{"id": "t", "name": "T"}],
                                  "runners": [{"id": "ana", "name": "Ana", "team": "t",
                                               **runner}]})


def alerts(messages: list[Message], team: Roster | None = None
           ) -> tuple[RunnerState, list[Alert]]:
    profile = (team or roster()).profile("ana", CATALOGUE)
    state = RunnerState(runner="ana")
    out: list[Alert] = []
    for topic, payload in messages:
        state, step = process_event(state, decode_message(InboundMessage(topic, payload, 0.0)),
                                    profile)
        out += step.alerts
    return state, out


def rules(found: list[Alert]) -> list[tuple[str, str]]:
    return [(a.rule, a.severity) for a in found]


# --- pain ---------------------------------------------------------------------------------

def test_a_morning_report_without_a_run_the_day_before_is_not_a_24_hour_response() -> None:
    _, found = alerts([*run("ana", _day(-3), Gait()),
                       pain("ana", _day(0, 7), 7, kind="morning", where="achilles")])
    assert "pain_next_morning" not in {a.rule for a in found}
    _, found = alerts([*run("ana", _day(-1), Gait()),
                       pain("ana", _day(0, 7), 7, kind="morning", where="achilles")])
    assert rules(found) == [("pain_next_morning", "warn")]
    assert "6.0 km yesterday" in found[0].message and "heel-drop" in found[0].next_step
    # settled by the morning (2/10): nothing
    _, found = alerts([*run("ana", _day(-1), Gait()),
                       pain("ana", _day(0, 7), 2, kind="morning", where="achilles")])
    assert found == []


@pytest.mark.parametrize(("scores", "fires"), [
    ((2, 2, 3, 4), True),   # rising by 2 points within the week
    ((4, 3, 3, 2), False),  # settling
    ((2, 4), False),        # two reports are no trend
    ((3, 3, 3, 4), False),  # one point: within the noise of a 0-10 scale
])
def test_morning_stiffness_rising_over_a_week(scores: tuple[int, ...], fires: bool) -> None:
    days = range(-2 * (len(scores) - 1), 1, 2)
    _, found = alerts([pain("ana", _day(d), s, kind="morning", where="achilles", seq=10 + i)
                       for i, (d, s) in enumerate(zip(days, scores, strict=True))])
    assert ("morning_stiffness_rising" in {a.rule for a in found}) is fires


@pytest.mark.parametrize(("days_and_scores", "fires"), [
    (((-22, 4), (-15, 4), (-8, 4), (-1, 4)), True),   # 21 days, as bad as at first
    (((-22, 6), (-15, 5), (-8, 3), (-1, 2)), False),  # improving
    (((-15, 4), (-8, 4), (-1, 4)), False),            # two weeks: too early to say
    (((-30, 4), (-15, 4), (-1, 4)), False),           # 15 days apart: two spells
])
def test_pain_not_improving_after_three_weeks(days_and_scores: tuple[tuple[int, int], ...],
                                              fires: bool) -> None:
    _, found = alerts([pain("ana", _day(d, 9), s, where="outer_ankle_gradual", seq=50 + d)
                       for d, s in days_and_scores])
    assert ("pain_not_improving" in {a.rule for a in found}) is fires


def test_old_free_text_where_still_loads_and_is_named_in_the_runner_s_words() -> None:
    _, found = alerts([pain("ana", _day(0, 9), 6, where="left ankle, outside")])
    assert rules(found) == [("pain_after_run", "warn")]
    assert "left ankle, outside pain 6/10" in found[0].message


@pytest.mark.parametrize(("details", "signs"), [
    ({"where": "bone_spot"}, "pain pinpoint on a bone"),
    ({"hop_hurts": True}, "sharp pain hopping on that leg"),
    ({"worse_as_run_goes_on": True}, "pain that grows as the run goes on"),
])
def test_each_bone_stress_sign_counts(details: dict[str, Any], signs: str) -> None:
    _, found = alerts([pain("ana", _day(0, 9), 3, kind="during", **details)])
    bone = [a for a in found if a.rule == "bone_stress"]
    assert [a.severity for a in bone] == ["warn"] and signs in bone[0].message
    assert "GP or sports physician" in bone[0].next_step


# --- sprains ------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "grade"), [
    ({"swelling": "mild", "could_take_four_steps": True}, 1),
    ({"swelling": "moderate", "could_take_four_steps": True}, 2),
    ({"heard_pop": True, "could_take_four_steps": True}, 2),
    ({"swelling": "severe", "could_take_four_steps": True}, 3),
    ({"swelling": "mild", "could_take_four_steps": False}, 3),
    ({"swelling": "severe", "could_take_four_steps": True, "grade": 2}, 2),  # the given one
])
def test_grade_estimate_follows_the_sprain_table(fields: dict[str, Any], grade: int) -> None:
    report = InjuryReport.model_validate({"t": TODAY.timestamp(), "phase": "injured",
                                          **fields})
    assert estimate_grade(report)[0] == grade


def test_red_flags_say_get_assessed_and_no_first_days_care() -> None:
    _, found = alerts([injury("ana", _day(0, 18), "injured", side="left",
                              could_take_four_steps=True, bone_tenderness=True)])
    assert rules(found) == [("sprain_red_flags", "critical")]
    assert "tender on the bone" in found[0].message and "Ottawa" in found[0].message
    assert "assessed today" in found[0].next_step


def test_first_days_care_is_peace_then_love_from_day_three() -> None:
    _, found = alerts([injury("ana", _day(0, 18), "injured", swelling="mild",
                              could_take_four_steps=True)])
    assert rules(found) == [("sprain_care", "info")]
    love = (TODAY + timedelta(days=2)).date().isoformat()
    assert f"until {love}: PEACE" in found[0].next_step
    assert f"From {love}: LOVE" in found[0].next_step
    assert "avoid anti-inflammatories" in found[0].next_step


def test_a_recovery_check_without_a_sprain_report_says_what_is_missing() -> None:
    _, found = alerts([recovery_check("ana", _day(0), seq=1)])
    assert rules(found) == [("return_to_run_waiting", "info")]
    assert "sprain report" in found[0].message


def test_the_coach_s_plan_wins_over_the_runner_s_report() -> None:
    coach = roster(injury={"grade": 2, "since": _day(-1).date().isoformat(), "stage": 3})
    state, found = alerts([injury("ana", _day(-10, 18), "injured", swelling="mild",
                                  could_take_four_steps=True),
                           recovery_check("ana", _day(-2), seq=2),
                           *stage_session("ana", _day(0), 3)], coach)
    assert state.return_to_run is not None and state.return_to_run.stage == 3
    assert state.return_to_run.plan_key.startswith("roster:")
    assert ("return_to_run_progress", "info") in rules(found)


def test_grade_three_in_the_roster_needs_a_clinician_s_sign_off(tmp_path: Any) -> None:
    since = date(2026, 11, 10)
    with pytest.raises(ValueError, match="sign-off"):
        roster(injury={"grade": 3, "since": since.isoformat()})
    roster(injury={"grade": 3, "since": since.isoformat()},
           cleared_to_run={"signed_on": since.isoformat(), "by": "physio A. Berg"})
    # a sign-off dated after the plan's first day is not one for it
    path = tmp_path / "roster.yaml"
    path.write_text("teams: [{id: t, name: T}]\nrunners: [{id: ana, name: Ana, team: t, "
                    "injury: {grade: 3, since: 2026-11-10}, "
                    "cleared_to_run: {signed_on: 2026-11-12, by: dr K}}]\n")
    with pytest.raises(RosterError, match="sign-off"):
        load_roster(path)


# --- the return to running ----------------------------------------------------------------

def coach_plan(grade: int = 1, since: int = -20) -> Roster:
    return roster(injury={"grade": grade, "since": _day(since).date().isoformat()})


def test_a_painful_session_never_counts_as_clean() -> None:
    # two stage-1 sessions, the second with 4/10 after it: back to stage 1 (from 1), and
    # the third session does not move the runner up
    state, found = alerts([*stage_session("ana", _day(-8), 1),
                           *stage_session("ana", _day(-6), 1),
                           pain("ana", _day(-6, 12), 4, seq=1),
                           *stage_session("ana", _day(-4), 1),
                           *stage_session("ana", _day(-2), 1)], coach_plan())
    assert rules(found) == [("return_to_run_progress", "info"),
                            ("return_to_run_step_back", "notice")]
    progress = state.return_to_run
    assert progress is not None and progress.stage == 1 and progress.clean_runs == 1


def test_pain_drops_back_a_stage_once_per_session() -> None:
    state, found = alerts([*stage_session("ana", _day(-8), 1),
                           *stage_session("ana", _day(-6), 1),
                           *stage_session("ana", _day(-4), 2),  # moved up to stage 2
                           pain("ana", _day(-4, 8), 3, kind="during", seq=1),
                           pain("ana", _day(-4, 12), 5, seq=2),  # the same session
                           pain("ana", _day(-3, 7), 4, kind="morning", seq=3)],
                          coach_plan())
    assert [r for r, _ in rules(found)].count("return_to_run_step_back") == 1
    assert state.return_to_run is not None and state.return_to_run.stage == 1
    # pain of 2/10 or less is within the stage
    _, found = alerts([*stage_session("ana", _day(-8), 1),
                       pain("ana", _day(-8, 12), 2, seq=1)], coach_plan())
    assert "return_to_run_step_back" not in {a.rule for a in found}


def test_grade_two_waits_a_week_longer_per_stage() -> None:
    # the plan starts on day -12; the third session, 4 days in, moves a grade I runner up;
    # grade II needs 11 days in the stage
    sessions = [m for d in (-12, -10, -8) for m in stage_session("ana", _day(d), 1)]
    state, _ = alerts(sessions, coach_plan(grade=1, since=-12))
    assert state.return_to_run is not None and state.return_to_run.stage == 2
    state, _ = alerts(sessions, coach_plan(grade=2, since=-12))
    assert state.return_to_run is not None and state.return_to_run.stage == 1


def test_a_history_part_written_before_pain_notes_and_sprains_still_reads() -> None:
    state, _ = alerts([*run("ana", _day(-1), Gait()), pain("ana", _day(0, 9), 6)])
    stored = encode(state)
    assert stored.history is not None
    part = msgspec.msgpack.decode(stored.history, type=HistoryPart)
    assert part.pain_notes  # the report was kept
    # the same part as the release before wrote it: without the two trailing fields
    older = msgspec.msgpack.encode(msgspec.msgpack.decode(stored.history)[:-2])
    back = decode(stored.live, stored.seen, older, "ana")
    assert back.pain_notes == [] and back.sprain is None
    assert back.sessions == state.sessions
