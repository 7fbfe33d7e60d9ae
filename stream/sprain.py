"""The runner's own sprain report: red flags, the first days' care, the entry criteria.

An ``injured`` report with a red flag of the Ottawa ankle rules (could not take four
steps; tender on the bone) says get assessed now. Without one, the runner is sent the
first days' care: PEACE for days 1-3, then LOVE. A ``recovery_check`` report that meets
every entry criterion starts the walk-run plan (``stream.return_to_run``) at the grade
given or estimated; a grade III sprain, or one with red flags, waits for a clinician's
sign-off recorded in the roster. The grade estimate follows the guidance's sprain table
and says what it rests on; it is information, not a diagnosis.
"""

from __future__ import annotations

from datetime import timedelta

from ingest.contract import InjuryPhase, InjuryReport, Swelling
from rules.evaluator import Observation
from stream.days import local_day
from stream.return_to_run import current_plan, needs_sign_off, signed_off
from stream.state import ReturnToRun, RunnerState, SprainCase
from team.roster import RunnerProfile

BACK_TO_RUNNING = {1: "1-2 weeks", 2: "3-6 weeks", 3: "8-12 weeks or more, with rehab"}
ROMAN = {1: "I", 2: "II", 3: "III"}
# PEACE for days 1-3, LOVE from day 3
LOVE_FROM_DAY = 3
CRITERIA = (
    ("weight_bearing_pain_free", "you can bear your full weight without pain"),
    ("walks_without_limp", "you walk at normal pace without a limp"),
    ("range_of_motion_near_full", "your ankle moves fully or nearly fully"),
    ("hop_pain_free", "you can hop on that leg without pain"),
)


def estimate_grade(report: InjuryReport) -> tuple[int, str]:
    """The grade a clinician gave, or the sprain table's reading of the report."""
    if report.grade is not None:
        return report.grade, "the grade you were given"
    if report.swelling is Swelling.SEVERE or report.could_take_four_steps is False:
        return 3, "estimated from " + ("severe swelling" if report.swelling is Swelling.SEVERE
                                       else "not being able to take four steps")
    reasons = [text for text, present in (
        ("moderate swelling", report.swelling is Swelling.MODERATE),
        ("a pop", report.heard_pop), ("bruising", report.bruising)) if present]
    if reasons:
        return 2, "estimated from " + " and ".join(reasons)
    return 1, "estimated from mild or no swelling and weight bearing"


def _injured(state: RunnerState, report: InjuryReport, profile: RunnerProfile
             ) -> list[Observation]:
    day = local_day(report.t, profile)
    grade, grade_from = estimate_grade(report)
    side = report.side.value if report.side is not None else ""
    state.sprain = SprainCase(reported_t=report.t, day=day.isoformat(), side=side or None,
                              grade=grade, grade_from=grade_from,
                              red_flags=tuple(report.red_flags))
    if report.red_flags:
        return [Observation("sprain_red_flags", report.t, float(len(report.red_flags)), {
            "red_flags": " and ".join(report.red_flags), "side": side})]
    note = ("A grade III sprain must be assessed by a sports physician or physiotherapist; "
            "your walk-run plan starts after their sign-off." if grade == 3 else "")
    return [Observation("sprain_reported", report.t, 1.0, {
        "side": side, "grade": ROMAN[grade], "grade_from": grade_from,
        "back_to_running": BACK_TO_RUNNING[grade],
        "love_from": (day + timedelta(days=LOVE_FROM_DAY - 1)).isoformat(),
        "grade_note": note})]


def _waiting(t: float, waiting_for: str) -> list[Observation]:
    return [Observation("return_to_run_waiting", t, 1.0, {"waiting_for": waiting_for})]


def _recovery_check(state: RunnerState, report: InjuryReport, profile: RunnerProfile
                    ) -> list[Observation]:
    sprain = state.sprain
    if sprain is None:
        return _waiting(report.t, "you have sent a sprain report (what happened) from the app")
    day = local_day(report.t, profile)
    unmet = tuple(text for name, text in CRITERIA if getattr(report, name) is not True)
    met_day = sprain.criteria_met_day
    if not unmet and met_day is None:
        met_day = day.isoformat()
    state.sprain = SprainCase(
        reported_t=sprain.reported_t, day=sprain.day, side=sprain.side, grade=sprain.grade,
        grade_from=sprain.grade_from, red_flags=sprain.red_flags, criteria_met_day=met_day,
        unmet=unmet)
    if met_day is None:
        return _waiting(report.t, "; ".join(unmet))
    if needs_sign_off(state.sprain) and not signed_off(state.sprain, profile):
        why = ("the red flags you reported" if state.sprain.red_flags
               else "a grade III sprain")
        return _waiting(report.t, f"a clinician has assessed your ankle and signed you off "
                                  f"(because of {why}); your coach records the sign-off")
    return []


def injury_observations(state: RunnerState, report: InjuryReport, profile: RunnerProfile
                        ) -> tuple[list[Observation], ReturnToRun | None]:
    """What the report means, and the plan it starts (if it starts one)."""
    if report.phase is InjuryPhase.INJURED:
        return _injured(state, report, profile), None
    out = _recovery_check(state, report, profile)
    progress, started = current_plan(state, profile, report.t)
    if started and progress is not None:
        return out + started, progress
    return out, None
