"""A runner's progress through the walk-run return to running (the plan: rules.return_to_run).

Started from the roster's injury entry; finished runs are judged for or against the
current stage, and the runner moves up once the stage's clean runs and days are done.
"""

from __future__ import annotations

from datetime import date

from rules import return_to_run as plan
from rules.evaluator import Observation
from rules.roster import RunnerProfile
from stream.days import local_day
from stream.metrics import MetricPoint
from stream.points import return_to_run_point
from stream.state import ReturnToRun, RunnerState, SessionSummary


def _plan_key(profile: RunnerProfile) -> str | None:
    injury = profile.injury
    return None if injury is None else f"{injury.since.isoformat()}:{injury.stage}:{injury.grade}"


def current_plan(state: RunnerState, profile: RunnerProfile) -> ReturnToRun | None:
    """The runner's plan progress, (re)started whenever the roster's injury entry changes."""
    key = _plan_key(profile)
    if key is None or profile.injury is None:
        return None
    progress = state.return_to_run
    if progress is None or progress.plan_key != key:
        return ReturnToRun(plan_key=key, stage=profile.injury.stage,
                           stage_started=profile.injury.since.isoformat())
    return progress


def judge_runs(progress: ReturnToRun, state: RunnerState, profile: RunnerProfile,
               before: SessionSummary | None, t: float
               ) -> tuple[ReturnToRun, list[Observation], list[MetricPoint]]:
    """Count finished runs for or against the stage; move up when the stage is done.

    A run is judged once the next run is under way, so a pain report sent after a run
    has arrived before that run counts as clean. Judged runs are remembered, so calling
    this on every batch counts each run once.
    """
    assert profile.injury is not None
    plan_start = profile.injury.since
    judged = set(progress.judged)
    clean = progress.clean_runs
    finished = sorted((s for s in state.sessions.values()
                       if s.counts_as_running and s.session_id not in judged
                       and (before is None or (s.session_id != before.session_id
                                               and s.start_t < before.start_t))
                       and local_day(s.start_t, profile) >= plan_start),
                      key=lambda s: s.start_t)
    for s in finished:
        judged.add(s.session_id)
        clean = clean + 1 if plan.within_stage(progress.stage, s.longest_bout_s,
                                               s.running_s) else 0
    stage, started = progress.stage, progress.stage_started
    observations: list[Observation] = []
    today = local_day(t, profile)
    done = progress.done
    if not done and plan.may_advance(stage, clean, date.fromisoformat(started), today,
                                     profile.injury.grade):
        stage, started, clean = stage + 1, today.isoformat(), 0
        observations.append(Observation("return_to_run_stage", t, float(stage), {
            "stage": float(stage), "plan": plan.stage(stage).describe()}))
    elif stage == plan.FINAL_STAGE and clean >= plan.CLEAN_RUNS_TO_ADVANCE:
        done = True
    updated = ReturnToRun(plan_key=progress.plan_key, stage=stage, stage_started=started,
                          clean_runs=clean, judged=tuple(sorted(judged)), done=done)
    if updated == progress:
        return progress, [], []
    return updated, observations, [return_to_run_point(updated, profile, t)]


def excess_observations(progress: ReturnToRun, session: SessionSummary, t: float
                        ) -> list[Observation]:
    """How far the run under way goes beyond the current stage."""
    if progress.done or not session.counts_as_running:
        return []
    current = plan.stage(progress.stage)
    over = plan.excess(progress.stage, session.longest_bout_s, session.running_s)
    return [Observation("return_to_run_excess", t, over, {
        "stage": float(progress.stage), "plan": current.describe(),
        "longest_bout_min": session.longest_bout_s / 60,
        "running_min": session.running_s / 60, "percent_of_stage": 100 * over})]
