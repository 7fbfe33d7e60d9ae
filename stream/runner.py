"""The pure per-runner step ``(state, event) -> (state, outputs)``.

The Faust agent keeps one :class:`RunnerState` per runner and calls :func:`process_event`
once per contract event (a batch of samples, a session start/end or a pain report). The
step updates the state in place and returns it. Everything is deterministic in event
time: replaying a record gives the same state, and a record already seen changes nothing.

A live batch costs the same on a runner's first day and their four hundredth: it folds
its samples into the current session and adds that session's figures to the history
view (``stream.days.HistoryView``), which is built once per session, not per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from ingest.contract import InjuryReport, PainReport, RunnerEvent, SampleBatch, SessionEvent
from rules.alerts import Alert
from rules.evaluator import Observation, evaluate
from stream import points as pt
from stream import signals
from stream.days import (
    LOAD_UNITS,
    by_start,
    day_loads,
    day_start_s,
    day_totals,
    history_view,
    local_day,
)
from stream.gait import update_gait
from stream.metrics import MetricPoint
from stream.pain import pain_observations
from stream.return_to_run import current_plan, judge_runs, session_observations, step_back
from stream.session_fold import (
    fits_session,
    fold_batch,
    session_for_batch,
    speed_bucket,
    trimp_per_minute,
)
from stream.sprain import injury_observations
from stream.state import (
    KEEP_DAYS,
    KEEP_SESSIONS_DAYS,
    MAX_RANGES,
    NO_DAY,
    DayTotals,
    ReturnToRun,
    RunnerState,
    SeenSequences,
    SessionSummary,
)
from stream.state_codec import unpark
from team.roster import RunnerProfile

__all__ = ["MAX_RANGES", "DayTotals", "RunnerState", "SeenSequences", "SessionSummary",
           "StepOutput", "day_loads", "day_start_s", "day_totals", "local_day",
           "process_event", "speed_bucket", "trimp_per_minute"]


@dataclass(frozen=True)
class StepOutput:
    alerts: list[Alert] = field(default_factory=list)
    points: list[MetricPoint] = field(default_factory=list)
    duplicate: bool = False
    # skipped because it is older than the device's remembered sequence window
    too_old: bool = False


Outputs = tuple[list[Observation], list[MetricPoint]]
# load signals a return-to-run plan replaces while it runs
PLAN_GOVERNS = frozenset({"acwr", "week_over_week", "two_week_increase", "session_vs_longest"})


def _make_current(state: RunnerState, session_id: str) -> None:
    """The session about to change becomes the live one; the one before joins history."""
    if state.current != session_id:
        state.current = session_id
        state.touch_history()


def _prune(state: RunnerState, profile: RunnerProfile, touched: SessionSummary | None) -> None:
    """Fold sessions older than ``KEEP_SESSIONS_DAYS`` into day totals; forget old days.

    Only a new day or a session older than the cut-off can have anything to fold.
    """
    if state.latest_t is None:
        return
    today = local_day(state.latest_t, profile)
    session_cutoff = today - timedelta(days=KEEP_SESSIONS_DAYS)
    if state.pruned_day == today.isoformat() and (
            touched is None or local_day(touched.start_t, profile) >= session_cutoff):
        return
    state.pruned_day = today.isoformat()
    state.history_will_change()
    old = [s for s in by_start(state.sessions.values())
           if local_day(s.start_t, profile) < session_cutoff]
    if not old:
        return
    day_cutoff = (today - timedelta(days=KEEP_DAYS)).isoformat()
    archive, shoes = state.archived_days, state.shoe_km_archived
    for s in old:
        if s.shoe:
            shoes[s.shoe] = shoes.get(s.shoe, 0.0) + s.distance_m / 1000.0
        del state.sessions[s.session_id]
        if not s.counts_as_running:
            continue
        key = local_day(s.start_t, profile).isoformat()
        archive[key] = archive.get(key, NO_DAY).plus(s)
    for d in [d for d in archive if d < day_cutoff]:
        del archive[d]
    state.open_session = {d: sid for d, sid in state.open_session.items()
                          if sid in state.sessions}
    if state.current not in state.sessions:
        state.current = None
    state.touch_history()


# --------------------------------------------------------------------------- load figures


def _day_outputs(state: RunnerState, profile: RunnerProfile, session: SessionSummary,
                 day: date, t: float, rest_from: date | None) -> Outputs:
    """Load figures for ``day`` and the days after it up to the latest (late data).

    ``rest_from``: the first day not written yet; rest days from there to ``day`` get
    their (falling) figures too, so charts show the ratio easing on days off.
    """
    view = history_view(state, profile)
    latest = local_day(state.latest_t, profile) if state.latest_t else day
    start = day if rest_from is None or rest_from >= day else max(
        rest_from, day - timedelta(days=KEEP_SESSIONS_DAYS))
    span = min((latest - start).days, 2 * KEEP_SESSIONS_DAYS)
    days = [start + timedelta(days=i) for i in range(span + 1)]
    unit = LOAD_UNITS[profile.load_metric]
    first = date.fromisoformat(state.first_day) if state.first_day else day
    observations: list[Observation] = []
    points: list[MetricPoint] = []
    for figures in view.figures(days, session, profile):
        points.append(pt.daily_load_point(figures, profile))
        if figures.day == day:
            observations += signals.load_ratio_observation(figures, t, unit)
            observations += signals.growth_observations(figures.weeks, day, t,
                                                        profile.load_metric, unit, first)
    return observations, points


def _shoe_observations(state: RunnerState, session: SessionSummary, profile: RunnerProfile,
                       t: float) -> list[Observation]:
    if not session.shoe:
        return []
    view = history_view(state, profile)
    km = profile.shoe_start_km.get(session.shoe, 0.0) + view.shoe_km.get(session.shoe, 0.0) \
        + session.distance_m / 1000
    return signals.shoe_observation(session.shoe, km, t)


def _spike_observations(state: RunnerState, session: SessionSummary, profile: RunnerProfile,
                        day: date, t: float) -> list[Observation]:
    view = history_view(state, profile)
    known_days = (day - date.fromisoformat(state.first_day)).days if state.first_day else 0
    since = session.start_t - signals.SPIKE_WINDOW_DAYS * 86400
    longest = view.longest_run_km(since, session.start_t)
    return signals.spike_observation(session, longest, t, known_days)


# --------------------------------------------------------------------------- events


def _on_samples(state: RunnerState, event: RunnerEvent, batch: SampleBatch,
                profile: RunnerProfile) -> tuple[Outputs, SessionSummary]:
    session_id = session_for_batch(state, event.device, batch)
    first_t = batch.samples[0].t
    _make_current(state, session_id)
    session = state.sessions.get(session_id)
    if session is None:
        session = SessionSummary(session_id=session_id, device=event.device, sport=batch.sport,
                                 start_t=first_t, end_t=first_t, anchor_t=first_t)
        state.sessions[session_id] = session
    fold_batch(session, batch, profile)
    _, readings = update_gait(state.gait, batch.samples)
    balances = [r.gct_balance_pct for r in readings if r.gct_balance_pct is not None]
    if balances:
        if session.balance_read_n == 0 and session.balance_read_sq < 0:
            session.balance_read_sq = 0.0
        if session.balance_read_sq >= 0:
            session.balance_read_sq += sum((b - 50.0) ** 2 for b in balances)
        session.balance_read_sum += sum(balances)
        session.balance_read_n += len(balances)
    last_t = batch.samples[-1].t
    day = local_day(session.start_t, profile)
    rest_from = (date.fromisoformat(state.load_days_through) + timedelta(days=1)
                 if state.load_days_through else None)
    if session.counts_as_running and (state.first_day is None
                                      or day.isoformat() < state.first_day):
        state.first_day = day.isoformat()
        state.touch_history()
    state.latest_t = max(state.latest_t or last_t, last_t)

    view = history_view(state, profile)
    observations = signals.reading_observations(
        readings, signals.baselines_before(view, session), session_id)
    points = [pt.session_point(session, profile)]
    if session.counts_as_running:
        load_obs, day_points = _day_outputs(state, profile, session, day, last_t, rest_from)
        through = local_day(state.latest_t, profile).isoformat()
        state.load_days_through = max(through, state.load_days_through or through)
        observations += load_obs
        observations += _spike_observations(state, session, profile, day, last_t)
        points += day_points
    observations += _shoe_observations(state, session, profile, last_t)
    progress, started = current_plan(state, profile, first_t)
    if progress is not None:
        progress, plan_obs, plan_points = judge_runs(progress, state, profile, session,
                                                     first_t)
        observations += started + plan_obs
        points += plan_points
        if not progress.done:
            # the walk-run plan sets the progression while it runs: its growth from
            # nothing is not an overload
            observations = [o for o in observations if o.signal not in PLAN_GOVERNS]
        observations += session_observations(progress, state, session, profile, last_t)
        _set_plan(state, progress)
    points.append(pt.window_point(batch, event.device, profile,
                                  readings[-1] if readings else None))
    if state.view is not None:
        state.view.ready_for = (session_id, session.start_t, day.isoformat())
    return (observations, points), session


def _on_session(state: RunnerState, event: RunnerEvent, msg: SessionEvent,
                profile: RunnerProfile) -> tuple[Outputs, SessionSummary]:
    _make_current(state, msg.session_id)
    session = state.sessions.get(msg.session_id)
    if session is None:
        session = SessionSummary(session_id=msg.session_id, device=event.device,
                                 sport=msg.sport, start_t=msg.t, end_t=msg.t, anchor_t=msg.t)
        state.sessions[msg.session_id] = session
    session.sport = msg.sport
    if msg.shoe:
        session.shoe = msg.shoe
    if msg.surface:
        session.surface = msg.surface.value
    changes_day = False
    if msg.timer_s is not None and msg.timer_s != session.device_timer_s:
        session.device_timer_s = msg.timer_s
        changes_day = True
    if msg.steps is not None:
        session.device_steps = msg.steps
    if msg.phase == "end":
        session.ended = True
        changes_day = changes_day or msg.t > session.end_t
        session.end_t = max(session.end_t, msg.t)
        if state.open_session.get(event.device) == msg.session_id:
            del state.open_session[event.device]
    else:
        session.start_t = min(session.start_t, msg.t)
        state.open_session[event.device] = msg.session_id
    state.latest_t = max(state.latest_t or msg.t, msg.t)
    observations = _shoe_observations(state, session, profile, msg.t) if msg.shoe else []
    points = [pt.session_point(session, profile)]
    if changes_day and session.counts_as_running and session.last_sample_t is not None:
        # the run's duration changed after its batches wrote the day: rewrite the day's
        # figures so the day and the session agree (the load rules saw the batches)
        day = local_day(session.start_t, profile)
        _, day_points = _day_outputs(state, profile, session, day, msg.t, None)
        points += day_points
    return (observations, points), session


def _set_plan(state: RunnerState, progress: ReturnToRun) -> None:
    if progress != state.return_to_run:
        state.history_will_change()
        state.return_to_run = progress


def _on_pain(state: RunnerState, report: PainReport, profile: RunnerProfile) -> Outputs:
    state.history_will_change()
    observations = pain_observations(state, report, profile)
    progress, started = current_plan(state, profile, report.t)
    if progress is not None:
        progress, back = step_back(progress, state, profile, report)
        observations += started + back
        _set_plan(state, progress)
    return observations, [pt.pain_point(report, profile)]


def _on_injury(state: RunnerState, report: InjuryReport, profile: RunnerProfile) -> Outputs:
    state.history_will_change()
    observations, progress = injury_observations(state, report, profile)
    if progress is not None:
        _set_plan(state, progress)
    return observations, []


# --------------------------------------------------------------------------- the step


def _parked_state_serves(state: RunnerState, event: RunnerEvent, profile: RunnerProfile
                         ) -> bool:
    """Whether a parked state (history kept encoded) has all this event needs.

    The usual live batch does: the next batch of the current session, on the same day as
    the batches before it, with nothing to prune and no return-to-run plan to judge.
    """
    body = event.body
    view = state.view
    current = state.sessions.get(state.current) if state.current is not None else None
    if (not isinstance(body, SampleBatch) or profile.injury is not None
            or state.sprain is not None or current is None
            or view is None or not view.fits(state, profile) or current.device != event.device):
        return False
    first_t, last_t = body.samples[0].t, body.samples[-1].t
    if body.session_id is not None:
        if body.session_id != current.session_id:
            return False
    elif (state.open_session.get(event.device) != current.session_id
          or not fits_session(current, event.device, first_t)):
        return False
    if first_t < current.start_t:
        return False  # the run's start moves: its day and baselines may change
    day = local_day(current.start_t, profile).isoformat()
    latest = local_day(max(state.latest_t or last_t, last_t), profile).isoformat()
    return (view.ready_for == (current.session_id, current.start_t, day)
            and latest == day == state.load_days_through == state.pruned_day)


def process_event(state: RunnerState, event: RunnerEvent, profile: RunnerProfile
                  ) -> tuple[RunnerState, StepOutput]:
    """Fold one contract event into the runner's state; return alerts and metric points."""
    stream_key = event.dedup_stream
    seen = state.seen.get(stream_key)
    if seen is None:
        seen = state.seen[stream_key] = SeenSequences()
    seq = event.seq
    if seen.contains(seq):
        return state, StepOutput(duplicate=True, too_old=seen.below_window(seq))
    state.mark_seen(stream_key, seen, seq)

    if state.parked_history is not None and not _parked_state_serves(state, event, profile):
        unpark(state)
    body = event.body
    touched: SessionSummary | None = None
    if isinstance(body, SampleBatch):
        (observations, points), touched = _on_samples(state, event, body, profile)
    elif isinstance(body, SessionEvent):
        (observations, points), touched = _on_session(state, event, body, profile)
    elif isinstance(body, PainReport):
        observations, points = _on_pain(state, body, profile)
    else:
        observations, points = _on_injury(state, body, profile)

    state.rules, alerts = evaluate(state.rules, observations, profile.rules, profile.runner,
                                   profile.team)
    _prune(state, profile, touched)
    points += [pt.alert_point(a, profile) for a in alerts]
    return state, StepOutput(alerts=alerts, points=points)
