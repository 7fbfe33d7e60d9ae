"""A runner's way through the walk-run return to running (the table: rules.return_to_run).

A plan starts from the coach's roster entry (``injury``), or by itself once the runner's
own sprain report is followed by a recovery check that meets every entry criterion
(``stream.sprain``); a grade III sprain, or one reported with red flags, also waits for a
clinician's sign-off in the roster. The coach's entry wins over the runner's report.

Sessions are judged once the next one is under way, so the pain reports about a session
(during it, after it, the next morning) have arrived by then. A session counts as clean
when it stayed within the stage (bouts, total running, walking breaks), on flat, even
ground, a rest day after the session before, and no pain above 2/10 was reported about
it. Pain above 2/10 sends the runner back a stage at once (``step_back``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ingest.contract import PainReport, PainWhen
from rules import return_to_run as plan
from rules.evaluator import Observation
from stream.days import local_day
from stream.metrics import MetricPoint
from stream.points import return_to_run_point
from stream.state import ReturnToRun, RunnerState, SessionSummary, SprainCase
from team.roster import RunnerProfile

# pain reported this long after a session's end is still about that session
PAIN_ABOUT_SESSION_S = 36 * 3600.0
PAINFUL_WHEN = (PainWhen.DURING.value, PainWhen.AFTER.value, PainWhen.MORNING.value)


@dataclass(frozen=True, slots=True)
class PlanEntry:
    key: str
    first_day: date
    stage: int
    grade: int
    by_coach: bool


def needs_sign_off(sprain: SprainCase) -> bool:
    return sprain.grade == 3 or bool(sprain.red_flags)


def signed_off(sprain: SprainCase, profile: RunnerProfile) -> bool:
    cleared = profile.cleared_to_run
    return cleared is not None and cleared.isoformat() >= sprain.day


def plan_entry(state: RunnerState, profile: RunnerProfile) -> PlanEntry | None:
    injury = profile.injury
    if injury is not None:
        return PlanEntry(f"roster:{injury.since.isoformat()}:{injury.stage}:{injury.grade}",
                         injury.since, injury.stage, injury.grade, by_coach=True)
    sprain = state.sprain
    if sprain is None or sprain.criteria_met_day is None:
        return None
    if needs_sign_off(sprain) and not signed_off(sprain, profile):
        return None
    return PlanEntry(f"report:{sprain.criteria_met_day}:{sprain.day}:{sprain.grade}",
                     date.fromisoformat(sprain.criteria_met_day), 1, sprain.grade,
                     by_coach=False)


def current_plan(state: RunnerState, profile: RunnerProfile, t: float
                 ) -> tuple[ReturnToRun | None, list[Observation]]:
    """The runner's plan progress, (re)started whenever its entry changes."""
    entry = plan_entry(state, profile)
    if entry is None:
        return None, []
    progress = state.return_to_run
    if progress is not None and progress.plan_key == entry.key:
        return progress, []
    progress = ReturnToRun(plan_key=entry.key, stage=entry.stage,
                           stage_started=entry.first_day.isoformat())
    why = ("Your coach started your return-to-run plan" if entry.by_coach
           else "Your recovery check met every entry criterion, so your return to running "
                "starts")
    return progress, [stage_observation(progress, entry.grade, why, t)]


def stage_observation(progress: ReturnToRun, grade: int, why: str, t: float) -> Observation:
    return Observation("return_to_run_stage", t, float(progress.stage), {
        "why": why, "stage": float(progress.stage),
        "plan": plan.stage(progress.stage).describe(), "min_days": float(plan.min_days(grade))})


def _grade(profile: RunnerProfile, state: RunnerState) -> int:
    if profile.injury is not None:
        return profile.injury.grade
    return state.sprain.grade if state.sprain is not None else 1


def shape(session: SessionSummary) -> plan.SessionShape:
    return plan.SessionShape(session.longest_bout_s, session.running_s,
                             session.shortest_walk_s, session.surface, session.climb_m,
                             session.distance_m / 1000)


def _painful(state: RunnerState, session: SessionSummary, next_start: float | None) -> bool:
    until = session.end_t + PAIN_ABOUT_SESSION_S
    if next_start is not None:
        until = min(until, next_start)
    return any(n.score > plan.PAIN_LIMIT and n.when in PAINFUL_WHEN
               and session.start_t <= n.t < until for n in state.pain_notes)


def _plan_sessions(state: RunnerState, profile: RunnerProfile, first_day: date
                   ) -> list[SessionSummary]:
    return sorted((s for s in state.sessions.values() if s.counts_as_running
                   and local_day(s.start_t, profile) >= first_day), key=lambda s: s.start_t)


def judge_runs(progress: ReturnToRun, state: RunnerState, profile: RunnerProfile,
               before: SessionSummary | None, t: float
               ) -> tuple[ReturnToRun, list[Observation], list[MetricPoint]]:
    """Count finished sessions for or against the stage; move up when the stage is done.

    ``before``: the session under way, which is judged later. Judged sessions are
    remembered, so calling this on every batch counts each session once.
    """
    judged = set(progress.judged)
    clean = progress.clean_runs
    last_day = date.fromisoformat(progress.last_session_day) \
        if progress.last_session_day else None
    sessions = _plan_sessions(state, profile, _plan_start(progress))
    for i, s in enumerate(sessions):
        if s.session_id in judged or before is None or s.start_t >= before.start_t \
                or s.session_id == before.session_id:
            continue
        judged.add(s.session_id)
        next_start = sessions[i + 1].start_t if i + 1 < len(sessions) else None
        day = local_day(s.start_t, profile)
        over, _ = plan.beyond_stage(progress.stage, shape(s))
        rested = last_day is None or (day - last_day).days >= plan.MIN_DAYS_BETWEEN_SESSIONS
        if _painful(state, s, next_start):
            pass  # the pain report already sent the runner back (step_back)
        elif over > plan.TOLERANCE:
            clean = 0
        elif rested and plan.uneven_ground(shape(s)) is None:
            clean += 1
        last_day = day
    stage, started, done = progress.stage, progress.stage_started, progress.done
    observations: list[Observation] = []
    today = local_day(t, profile)
    grade = _grade(profile, state)
    if not done and plan.may_advance(stage, clean, (today - date.fromisoformat(started)).days,
                                     grade):
        why = f"Two sessions within stage {stage} without pain"
        stage, started, clean = stage + 1, today.isoformat(), 0
        observations.append(stage_observation(
            ReturnToRun(plan_key=progress.plan_key, stage=stage, stage_started=started),
            grade, why, t))
    elif not done and plan.completes_plan(stage, clean):
        done = True
        observations.append(Observation("return_to_run_complete", t, 1.0, {
            "plan": plan.stage(stage).describe()}))
    updated = ReturnToRun(plan_key=progress.plan_key, stage=stage, stage_started=started,
                          clean_runs=clean, judged=tuple(sorted(judged)), done=done,
                          last_session_day=last_day.isoformat() if last_day else None,
                          stepped_back_for=progress.stepped_back_for)
    if updated == progress:
        return progress, [], []
    return updated, observations, [return_to_run_point(updated, profile, t)]


def _plan_start(progress: ReturnToRun) -> date:
    """The plan's first day: its key is ``<roster|report>:<first day>:…``."""
    return date.fromisoformat(progress.plan_key.split(":")[1])


def session_observations(progress: ReturnToRun, state: RunnerState, session: SessionSummary,
                         profile: RunnerProfile, t: float) -> list[Observation]:
    """How the session under way sits with the stage: too much, no rest day, uneven ground."""
    if progress.done or not session.counts_as_running:
        return []
    current = plan.stage(progress.stage)
    run_shape = shape(session)
    over, beyond = plan.beyond_stage(progress.stage, run_shape)
    out = [Observation("return_to_run_excess", t, over, {
        "stage": float(progress.stage), "plan": current.describe(),
        "beyond": "; ".join(beyond) or "no", "percent_of_stage": 100 * over})]
    if progress.last_session_day:
        gap = (local_day(session.start_t, profile)
               - date.fromisoformat(progress.last_session_day)).days
        if gap < plan.MIN_DAYS_BETWEEN_SESSIONS:
            out.append(Observation("return_to_run_no_rest_day", t, 1.0, {
                "previous_day": progress.last_session_day, "stage": float(progress.stage)}))
    ground = plan.uneven_ground(run_shape)
    if ground is not None:
        out.append(Observation("return_to_run_uneven_ground", t, 1.0, {"ground": ground}))
    return out


def step_back(progress: ReturnToRun, state: RunnerState, profile: RunnerProfile,
              report: PainReport) -> tuple[ReturnToRun, list[Observation]]:
    """Pain above the limit about a plan session: back a stage (once per session)."""
    if (progress.done or report.score <= plan.PAIN_LIMIT
            or report.when.value not in PAINFUL_WHEN):
        return progress, []
    about = [s for s in _plan_sessions(state, profile, _plan_start(progress))
             if s.start_t <= report.t < s.end_t + PAIN_ABOUT_SESSION_S]
    if not about or about[-1].session_id == progress.stepped_back_for:
        return progress, []
    session = about[-1]
    stage = max(1, progress.stage - 1)
    day = local_day(report.t, profile)
    updated = ReturnToRun(
        plan_key=progress.plan_key, stage=stage, stage_started=day.isoformat(),
        clean_runs=0, judged=tuple(sorted({*progress.judged, session.session_id})),
        done=False, last_session_day=local_day(session.start_t, profile).isoformat(),
        stepped_back_for=session.session_id)
    when = {"during": "during", "after": "after",
            "morning": "the morning after"}[report.when.value]
    return updated, [Observation("return_to_run_step_back", report.t, float(stage), {
        "score": float(report.score), "when": when, "stage": float(stage),
        "plan": plan.stage(stage).describe()})]
