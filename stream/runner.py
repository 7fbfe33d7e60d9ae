"""Per-runner state and the pure step ``(state, event) -> (state, outputs)``.

The Faust agent keeps one :class:`RunnerState` per runner in a table and calls
:func:`process_event` once per Kafka record (a batch of samples, a session start/end or a
pain report). Everything here is deterministic in event time: replaying a record gives
the same state, and a record already seen changes nothing.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from ingest.contract import (
    PainReport,
    PainWhen,
    RunnerEvent,
    Sample,
    SampleBatch,
    SessionEvent,
    Sport,
)
from rules import return_to_run as rtr_plan
from rules.alerts import Alert
from rules.evaluator import Observation, RuleState, evaluate
from rules.roster import RunnerProfile
from stream import metrics as m
from stream import signals
from stream.asymmetry import AsymmetryReading, AsymmetryState, update_asymmetry
from stream.load import load_ratio, week_change
from stream.metrics import MetricPoint

RUNNING_SPORTS = frozenset({Sport.RUNNING, Sport.TRAIL_RUNNING, Sport.TREADMILL})
# a batch without session id joins the device's open session unless this much time passed
SESSION_GAP_S = 30 * 60
KEEP_SESSIONS_DAYS = 42
KEEP_DAYS = 120
# gaps in a device's sequence numbers remembered before old ones are folded away
MAX_RANGES = 128


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class SeenSequences(_Model):
    """Sequences seen on one device stream, as merged closed ranges.

    Devices may start anywhere (FIT imports number from the file's start time), and QoS 1
    or several bridges may deliver out of order, so this is a set, not a high-water mark.
    Past ``MAX_RANGES`` gaps, the oldest ranges fold into ``floor``: everything at or below
    it counts as seen (an ancient straggler is dropped rather than counted twice).
    """

    floor: int = -1
    ranges: tuple[tuple[int, int], ...] = ()

    def contains(self, seq: int) -> bool:
        return seq <= self.floor or any(lo <= seq <= hi for lo, hi in self.ranges)

    def below_window(self, seq: int) -> bool:
        """Older than the gaps still remembered: maybe new, but cannot be told apart."""
        return seq <= self.floor and not any(lo <= seq <= hi for lo, hi in self.ranges)

    def add(self, seq: int) -> SeenSequences:
        ranges = list(self.ranges)
        i = bisect.bisect_left(ranges, (seq, seq))
        lo, hi = seq, seq
        # merge with the neighbour before and after when they touch
        if i > 0 and ranges[i - 1][1] >= seq - 1:
            i -= 1
            lo, hi = ranges[i][0], max(ranges[i][1], seq)
            del ranges[i]
        if i < len(ranges) and ranges[i][0] <= hi + 1:
            hi = max(hi, ranges[i][1])
            del ranges[i]
        ranges.insert(i, (lo, hi))
        floor = self.floor
        while len(ranges) > MAX_RANGES:
            floor = max(floor, ranges.pop(0)[1])
        return SeenSequences(floor=floor, ranges=tuple(ranges))


class SessionSummary(_Model):
    session_id: str
    device: str
    sport: Sport = Sport.RUNNING
    shoe: str | None = None
    surface: str | None = None
    start_t: float
    end_t: float
    ended: bool = False
    # the time the session was first seen at: its InfluxDB point keeps this timestamp even
    # when a late batch moves start_t earlier, so the point is rewritten, not duplicated
    anchor_t: float | None = None
    first_distance: tuple[float, float] | None = None  # (t, cumulative m) earliest
    last_distance: tuple[float, float] | None = None  # (t, cumulative m) latest
    speed_distance_m: float = 0.0
    foot_steps: int = 0
    cadence_sum: float = 0.0
    cadence_n: int = 0
    balance_sum: float = 0.0
    balance_n: int = 0
    gct_sum: float = 0.0
    gct_n: int = 0
    hr_sum: float = 0.0
    hr_n: int = 0
    climb_m: float = 0.0
    trimp: float = 0.0
    pronation_sum: float = 0.0
    pronation_n: int = 0
    # smoothed left share of contact time, averaged over the run (compensation baseline)
    balance_read_sum: float = 0.0
    balance_read_n: int = 0
    # speed bucket (m/s, 0.25 wide) -> (cadence sum, samples): cadence at similar speed
    cadence_by_speed: dict[str, tuple[float, int]] = Field(default_factory=dict)
    fast_s: float = 0.0
    running_s: float = 0.0
    longest_bout_s: float = 0.0
    bout_start_t: float | None = None
    last_sample_t: float | None = None
    last_running: bool = False

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end_t - self.start_t)

    @property
    def distance_m(self) -> float:
        if self.first_distance and self.last_distance:
            return max(0.0, self.last_distance[1] - self.first_distance[1])
        return self.speed_distance_m

    @property
    def mean_cadence_spm(self) -> float | None:
        return self.cadence_sum / self.cadence_n if self.cadence_n else None

    @property
    def steps(self) -> float:
        if self.foot_steps:
            return float(self.foot_steps)
        cadence = self.mean_cadence_spm
        return cadence * self.duration_s / 60.0 if cadence else 0.0

    @property
    def gct_balance_pct(self) -> float | None:
        return self.balance_sum / self.balance_n if self.balance_n else None

    @property
    def counts_as_running(self) -> bool:
        return self.sport in RUNNING_SPORTS

    @property
    def mean_pronation_deg(self) -> float | None:
        return self.pronation_sum / self.pronation_n if self.pronation_n else None

    @property
    def mean_balance_reading(self) -> float | None:
        return self.balance_read_sum / self.balance_read_n if self.balance_read_n else None


class DayTotals(_Model):
    distance_km: float = 0.0
    duration_min: float = 0.0
    runs: int = 0
    trimp: float = 0.0
    climb_m: float = 0.0
    fast_min: float = 0.0

    def plus(self, s: SessionSummary) -> DayTotals:
        return DayTotals(distance_km=self.distance_km + s.distance_m / 1000.0,
                         duration_min=self.duration_min + s.duration_s / 60.0,
                         runs=self.runs + 1, trimp=self.trimp + s.trimp,
                         climb_m=self.climb_m + s.climb_m,
                         fast_min=self.fast_min + s.fast_s / 60.0)


class ReturnToRun(_Model):
    """Where a runner is in the walk-run plan; started from the roster's injury entry."""

    plan_key: str
    stage: int
    stage_started: str  # iso date
    clean_runs: int = 0
    judged: tuple[str, ...] = ()  # session ids already counted for or against the stage
    done: bool = False


class RunnerState(_Model):
    runner: str
    seen: dict[str, SeenSequences] = Field(default_factory=dict)
    sessions: dict[str, SessionSummary] = Field(default_factory=dict)
    archived_days: dict[str, DayTotals] = Field(default_factory=dict)  # iso date -> totals
    first_day: str | None = None
    open_session: dict[str, str] = Field(default_factory=dict)  # device -> session id
    asymmetry: AsymmetryState = AsymmetryState()
    rules: RuleState = RuleState()
    latest_t: float | None = None
    shoe_km_archived: dict[str, float] = Field(default_factory=dict)
    return_to_run: ReturnToRun | None = None
    # the last local day that has a daily_load point (rest days after it get theirs later)
    load_days_through: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=True)

    @classmethod
    def from_json(cls, raw: str | bytes | None, runner: str) -> RunnerState:
        return cls(runner=runner) if not raw else cls.model_validate_json(raw)


@dataclass(frozen=True)
class StepOutput:
    alerts: list[Alert] = field(default_factory=list)
    points: list[MetricPoint] = field(default_factory=list)
    duplicate: bool = False
    # skipped because it is older than the device's remembered sequence window
    too_old: bool = False


# --------------------------------------------------------------------------- day loads


def local_day(t: float, profile: RunnerProfile) -> date:
    return datetime.fromtimestamp(t, profile.tz).date()


def day_start_s(day: date, profile: RunnerProfile) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=profile.tz).timestamp()


def day_totals(state: RunnerState, profile: RunnerProfile) -> dict[date, DayTotals]:
    """Running totals per local day: archived days plus the sessions still kept."""
    totals = {date.fromisoformat(d): t for d, t in state.archived_days.items()}
    for s in state.sessions.values():
        if not s.counts_as_running:
            continue
        day = local_day(s.start_t, profile)
        totals[day] = totals.get(day, DayTotals()).plus(s)
    return totals


def day_loads(totals: dict[date, DayTotals], profile: RunnerProfile) -> dict[date, float]:
    return {d: getattr(t, profile.load_metric) for d, t in totals.items()}


LOAD_UNITS = {"distance_km": "km", "duration_min": "min", "trimp": "TRIMP"}


# --------------------------------------------------------------------------- folding


# walking is slower than this; without speed, a cadence this high means running
RUNNING_SPEED_MPS = 1.8
RUNNING_CADENCE_SPM = 140.0
# readings further apart than this are a pause, not time spent running
MAX_STEP_GAP_S = 10.0


def _is_running(sample: Sample) -> bool:
    if sample.speed_mps is not None:
        return sample.speed_mps >= RUNNING_SPEED_MPS
    return sample.cadence_spm is not None and sample.cadence_spm >= RUNNING_CADENCE_SPM


def trimp_per_minute(hr: float, resting: float, maximum: float) -> float:
    """Banister's TRIMP rate: HRr · 0.64 · e^(1.92 · HRr), HRr = heart-rate reserve share."""
    reserve = min(1.0, max(0.0, (hr - resting) / (maximum - resting)))
    return reserve * 0.64 * math.exp(1.92 * reserve)


def speed_bucket(speed_mps: float) -> str:
    return f"{round(speed_mps * 4) / 4:.2f}"


def _fold_batch(session: SessionSummary, batch: SampleBatch, profile: RunnerProfile
                ) -> SessionSummary:
    s = session.model_dump()
    prev_speed: float | None = None
    for sample in batch.samples:
        last_t = s["last_sample_t"]
        dt = sample.t - last_t if last_t is not None and sample.t >= last_t else None
        if dt is not None and dt > MAX_STEP_GAP_S:
            dt = None  # a pause
        s["start_t"] = min(s["start_t"], sample.t)
        s["end_t"] = max(s["end_t"], sample.t)
        if sample.distance_m is not None:
            point = (sample.t, sample.distance_m)
            if s["first_distance"] is None or sample.t < s["first_distance"][0]:
                s["first_distance"] = point
            if s["last_distance"] is None or sample.t >= s["last_distance"][0]:
                s["last_distance"] = point
        if sample.speed_mps is not None:
            if dt is not None and prev_speed is not None:
                s["speed_distance_m"] += prev_speed * dt
            prev_speed = sample.speed_mps
            if dt is not None and sample.speed_mps >= profile.fast_speed_mps:
                s["fast_s"] += dt
            if sample.cadence_spm:
                key = speed_bucket(sample.speed_mps)
                total, n = s["cadence_by_speed"].get(key, (0.0, 0))
                s["cadence_by_speed"][key] = (total + sample.cadence_spm, n + 1)
        running = _is_running(sample)
        if running:
            if dt is not None and s["last_running"]:
                s["running_s"] += dt
            else:
                s["bout_start_t"] = sample.t
            bout = sample.t - (s["bout_start_t"] or sample.t)
            s["longest_bout_s"] = max(s["longest_bout_s"], bout)
        s["last_running"] = running
        if sample.foot is not None:
            s["foot_steps"] += 1
        if sample.cadence_spm is not None and sample.cadence_spm > 0:
            s["cadence_sum"] += sample.cadence_spm
            s["cadence_n"] += 1
        if sample.gct_balance_pct is not None:
            s["balance_sum"] += sample.gct_balance_pct
            s["balance_n"] += 1
        if sample.gct_ms is not None:
            s["gct_sum"] += sample.gct_ms
            s["gct_n"] += 1
        if sample.heart_rate_bpm is not None:
            s["hr_sum"] += sample.heart_rate_bpm
            s["hr_n"] += 1
            if dt is not None and profile.resting_hr_bpm and profile.max_hr_bpm:
                s["trimp"] += dt / 60.0 * trimp_per_minute(
                    sample.heart_rate_bpm, profile.resting_hr_bpm, profile.max_hr_bpm)
        if sample.pronation_deg is not None:
            s["pronation_sum"] += sample.pronation_deg
            s["pronation_n"] += 1
        if sample.elevation_gain_m is not None:
            s["climb_m"] += sample.elevation_gain_m
        if last_t is None or sample.t >= last_t:
            s["last_sample_t"] = sample.t
    return SessionSummary(**s)


def _session_for_batch(state: RunnerState, device: str, batch: SampleBatch
                       ) -> tuple[str, dict[str, str]]:
    open_sessions = dict(state.open_session)
    if batch.session_id:
        open_sessions[device] = batch.session_id
        return batch.session_id, open_sessions
    first_t = batch.samples[0].t
    # a batch belongs to the device's session whose time span (give or take the gap) holds
    # it; a late batch of an earlier run finds that run, not the one open now
    current = open_sessions.get(device)
    candidates = sorted((s for s in state.sessions.values() if s.device == device
                         and s.start_t - SESSION_GAP_S <= first_t <= s.end_t + SESSION_GAP_S
                         and (not s.ended or first_t <= s.end_t)),
                        key=lambda s: (s.session_id != current, abs(first_t - s.end_t)))
    if candidates:
        return candidates[0].session_id, open_sessions
    new_id = f"{device}-{int(first_t)}"
    if current is None or current not in state.sessions or \
            first_t > state.sessions[current].end_t:
        open_sessions[device] = new_id
    return new_id, open_sessions


def _prune(state: RunnerState, profile: RunnerProfile) -> RunnerState:
    """Fold sessions older than ``KEEP_SESSIONS_DAYS`` into day totals; forget old days."""
    if state.latest_t is None:
        return state
    today = local_day(state.latest_t, profile)
    session_cutoff = today - timedelta(days=KEEP_SESSIONS_DAYS)
    old = {k: s for k, s in state.sessions.items()
           if local_day(s.start_t, profile) < session_cutoff}
    if not old:
        return state
    archive = dict(state.archived_days)
    shoes = dict(state.shoe_km_archived)
    for s in old.values():
        if s.shoe:
            shoes[s.shoe] = shoes.get(s.shoe, 0.0) + s.distance_m / 1000.0
        if not s.counts_as_running:
            continue
        key = local_day(s.start_t, profile).isoformat()
        archive[key] = archive.get(key, DayTotals()).plus(s)
    day_cutoff = (today - timedelta(days=KEEP_DAYS)).isoformat()
    archive = {d: t for d, t in archive.items() if d >= day_cutoff}
    sessions = {k: s for k, s in state.sessions.items() if k not in old}
    open_session = {d: sid for d, sid in state.open_session.items() if sid in sessions}
    return state.model_copy(update={"sessions": sessions, "archived_days": archive,
                                    "open_session": open_session, "shoe_km_archived": shoes})


# --------------------------------------------------------------------------- outputs


def _tags(profile: RunnerProfile, **extra: str) -> dict[str, str]:
    return {"team": profile.team, "runner": profile.runner, **extra}


def _session_point(s: SessionSummary, profile: RunnerProfile) -> MetricPoint:
    return MetricPoint.make(m.SESSION, _tags(profile, sport=s.sport.value), {
        "session_id": s.session_id, "device": s.device,
        "distance_km": round(s.distance_m / 1000.0, 4), "duration_min": round(s.duration_s / 60, 3),
        "steps": round(s.steps), "cadence_spm": s.mean_cadence_spm,
        "gct_balance_pct": s.gct_balance_pct,
        "gct_ms": s.gct_sum / s.gct_n if s.gct_n else None,
        "heart_rate_bpm": s.hr_sum / s.hr_n if s.hr_n else None,
        "ended": s.ended, "shoe": s.shoe, "surface": s.surface,
    }, s.anchor_t if s.anchor_t is not None else s.start_t)


def _day_observations_and_points(state: RunnerState, profile: RunnerProfile, day: date, t: float,
                                 rest_from: date | None = None
                                 ) -> tuple[list[Observation], list[MetricPoint]]:
    """Load figures for ``day`` and the days after it up to the latest (late data).

    ``rest_from``: the first day not written yet; rest days from there to ``day`` get
    their (falling) figures too, so charts show the ratio easing on days off.
    """
    totals = day_totals(state, profile)
    loads = day_loads(totals, profile)
    first = date.fromisoformat(state.first_day) if state.first_day else day
    latest = local_day(state.latest_t, profile) if state.latest_t else day
    unit = LOAD_UNITS[profile.load_metric]
    observations: list[Observation] = []
    points: list[MetricPoint] = []
    runs = [s for s in state.sessions.values() if s.counts_as_running]
    start = day if rest_from is None or rest_from >= day else max(
        rest_from, day - timedelta(days=KEEP_SESSIONS_DAYS))
    current = start
    while current <= latest and (current - start).days <= 2 * KEEP_SESSIONS_DAYS:
        ratio = load_ratio(loads, current, first_day=first)
        week, last_week, change = week_change(loads, current)
        day_total = totals.get(current, DayTotals())
        end_of_day = day_start_s(current + timedelta(days=1), profile)
        longest = max((r.distance_m / 1000 for r in runs
                       if end_of_day - 30 * 86400 <= r.start_t < end_of_day), default=None)
        points.append(MetricPoint.make(m.DAILY_LOAD, _tags(profile), {
            "load": round(loads.get(current, 0.0), 4), "load_unit": unit,
            "distance_km": round(day_total.distance_km, 4),
            "duration_min": round(day_total.duration_min, 3), "runs": day_total.runs,
            "trimp": round(day_total.trimp, 2), "climb_m": round(day_total.climb_m, 1),
            "fast_min": round(day_total.fast_min, 2),
            "acute": round(ratio.acute, 4), "chronic": round(ratio.chronic, 4),
            "acwr": round(ratio.ratio, 4) if ratio.ratio is not None else None,
            "week_load": round(week, 4), "last_week_load": round(last_week, 4),
            "week_change": round(change, 4) if change is not None else None,
            "longest_run_km_30d": round(longest, 4) if longest is not None else None,
        }, day_start_s(current, profile)))
        if current == day:
            if ratio.ratio is not None:
                observations.append(Observation("acwr", t, ratio.ratio, {
                    "acwr": ratio.ratio, "acute_load": ratio.acute,
                    "chronic_load": ratio.chronic, "load_unit": unit,
                    "day": current.isoformat()}))
            observations += signals.growth_observations(totals, loads, current, t,
                                                        profile.load_metric, unit, first)
        current += timedelta(days=1)
    return observations, points


def _shoe_observations(state: RunnerState, session: SessionSummary, profile: RunnerProfile,
                       t: float) -> list[Observation]:
    if not session.shoe:
        return []
    km = profile.shoe_start_km.get(session.shoe, 0.0) + state.shoe_km_archived.get(
        session.shoe, 0.0) + sum(s.distance_m / 1000 for s in state.sessions.values()
                                 if s.shoe == session.shoe)
    return [Observation("shoe_km", t, km, {"shoe": session.shoe, "shoe_km": km})]


# --------------------------------------------------------------------------- return to run


def _plan_key(profile: RunnerProfile) -> str | None:
    injury = profile.injury
    return None if injury is None else f"{injury.since.isoformat()}:{injury.stage}:{injury.grade}"


def _return_to_run(state: RunnerState, profile: RunnerProfile) -> ReturnToRun | None:
    """The runner's plan progress, (re)started whenever the roster's injury entry changes."""
    key = _plan_key(profile)
    if key is None or profile.injury is None:
        return None
    current = state.return_to_run
    if current is None or current.plan_key != key:
        return ReturnToRun(plan_key=key, stage=profile.injury.stage,
                           stage_started=profile.injury.since.isoformat())
    return current


def _judge_runs(rtr: ReturnToRun, state: RunnerState, profile: RunnerProfile,
                before: SessionSummary | None, t: float
                ) -> tuple[ReturnToRun, list[Observation], list[MetricPoint]]:
    """Count finished runs for or against the stage; move up when the stage is done.

    A run is judged once the next run is under way, so a pain report sent after a run
    has arrived before that run counts as clean. Judged runs are remembered, so calling
    this on every batch counts each run once.
    """
    assert profile.injury is not None
    plan_start = profile.injury.since
    judged = set(rtr.judged)
    clean = rtr.clean_runs
    finished = sorted((s for s in state.sessions.values()
                       if s.counts_as_running and s.session_id not in judged
                       and (before is None or (s.session_id != before.session_id
                                               and s.start_t < before.start_t))
                       and local_day(s.start_t, profile) >= plan_start),
                      key=lambda s: s.start_t)
    for s in finished:
        judged.add(s.session_id)
        clean = clean + 1 if rtr_plan.within_stage(rtr.stage, s.longest_bout_s,
                                                   s.running_s) else 0
    stage, started = rtr.stage, rtr.stage_started
    observations: list[Observation] = []
    today = local_day(t, profile)
    done = rtr.done
    if not done and rtr_plan.may_advance(stage, clean, date.fromisoformat(started), today,
                                         profile.injury.grade):
        stage, started, clean = stage + 1, today.isoformat(), 0
        observations.append(Observation("return_to_run_stage", t, float(stage), {
            "stage": float(stage), "plan": rtr_plan.stage(stage).describe()}))
    elif stage == rtr_plan.FINAL_STAGE and clean >= rtr_plan.CLEAN_RUNS_TO_ADVANCE:
        done = True
    updated = rtr.model_copy(update={"stage": stage, "stage_started": started,
                                     "clean_runs": clean, "judged": tuple(sorted(judged)),
                                     "done": done})
    if updated == rtr:
        return rtr, [], []
    point = MetricPoint.make(m.RETURN_TO_RUN, _tags(profile), {
        "stage": stage, "clean_runs": clean, "done": done}, t)
    return updated, observations, [point]


def _rtr_observations(rtr: ReturnToRun, session: SessionSummary, t: float
                      ) -> list[Observation]:
    if rtr.done or not session.counts_as_running:
        return []
    current = rtr_plan.stage(rtr.stage)
    over = rtr_plan.excess(rtr.stage, session.longest_bout_s, session.running_s)
    return [Observation("return_to_run_excess", t, over, {
        "stage": float(rtr.stage), "plan": current.describe(),
        "longest_bout_min": session.longest_bout_s / 60,
        "running_min": session.running_s / 60, "percent_of_stage": 100 * over})]


# --------------------------------------------------------------------------- events


def _on_samples(state: RunnerState, event: RunnerEvent, batch: SampleBatch,
                profile: RunnerProfile) -> tuple[RunnerState, list[Observation], list[MetricPoint]]:
    session_id, open_sessions = _session_for_batch(state, event.device, batch)
    first_t = batch.samples[0].t
    existing = state.sessions.get(session_id) or SessionSummary(
        session_id=session_id, device=event.device, sport=batch.sport, start_t=first_t,
        end_t=first_t, anchor_t=first_t)
    session = _fold_batch(existing, batch, profile)
    asymmetry, readings = update_asymmetry(state.asymmetry, batch.samples)
    readings_sum = sum(r.gct_balance_pct for r in readings if r.gct_balance_pct is not None)
    readings_n = sum(1 for r in readings if r.gct_balance_pct is not None)
    if readings_n:
        session = session.model_copy(update={
            "balance_read_sum": session.balance_read_sum + readings_sum,
            "balance_read_n": session.balance_read_n + readings_n})
    last_t = batch.samples[-1].t
    day = local_day(session.start_t, profile)
    rest_from = (date.fromisoformat(state.load_days_through) + timedelta(days=1)
                 if state.load_days_through else None)
    first_day = min(filter(None, [state.first_day, day.isoformat()])) if session.counts_as_running \
        else state.first_day
    state = state.model_copy(update={
        "sessions": {**state.sessions, session_id: session}, "open_session": open_sessions,
        "asymmetry": asymmetry, "first_day": first_day,
        "latest_t": max(state.latest_t or last_t, last_t)})

    base = signals.baselines(state.sessions.values(), session.start_t, exclude=session_id)
    observations = signals.reading_observations(readings, base, session_id)
    points = [_session_point(session, profile)]
    if session.counts_as_running:
        load_obs, day_points = _day_observations_and_points(state, profile, day, last_t,
                                                            rest_from)
        through = local_day(state.latest_t or last_t, profile).isoformat()
        state = state.model_copy(update={"load_days_through": max(
            through, state.load_days_through or through)})
        observations += load_obs
        known_days = (day - date.fromisoformat(state.first_day)).days if state.first_day else 0
        observations += signals.session_spike(state.sessions.values(), session, last_t,
                                              known_days)
        points += day_points
    observations += _shoe_observations(state, session, profile, last_t)
    rtr = _return_to_run(state, profile)
    if rtr is not None:
        rtr, rtr_obs, rtr_points = _judge_runs(rtr, state, profile, session, first_t)
        observations += rtr_obs
        points += rtr_points
        observations += _rtr_observations(rtr, session, last_t)
        state = state.model_copy(update={"return_to_run": rtr})
    points.append(_window_point(batch, event.device, profile, readings[-1] if readings else None))
    return state, observations, points


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _window_point(batch: SampleBatch, device: str, profile: RunnerProfile,
                  reading: AsymmetryReading | None) -> MetricPoint:
    samples = batch.samples
    fields: dict[str, m.FieldValue | None] = {
        "samples": len(samples),
        "cadence_spm": _mean([s.cadence_spm for s in samples if s.cadence_spm]),
        "gct_ms": _mean([s.gct_ms for s in samples if s.gct_ms is not None]),
        "speed_mps": _mean([s.speed_mps for s in samples if s.speed_mps is not None]),
        "step_length_m": _mean([s.step_length_m for s in samples
                                if s.step_length_m is not None]),
        "heart_rate_bpm": _mean([s.heart_rate_bpm for s in samples
                                 if s.heart_rate_bpm is not None]),
        "pronation_deg": _mean([s.pronation_deg for s in samples
                                if s.pronation_deg is not None]),
    }
    if reading is not None:
        fields["gct_balance_pct"] = reading.gct_balance_pct
        fields["gct_symmetry_pct"] = reading.gct_symmetry_pct
        fields["step_symmetry_pct"] = reading.step_symmetry_pct
    return MetricPoint.make(m.RUN_WINDOW, _tags(profile, device=device), fields, samples[-1].t)


def _on_session(state: RunnerState, event: RunnerEvent, msg: SessionEvent,
                profile: RunnerProfile
                ) -> tuple[RunnerState, list[Observation], list[MetricPoint]]:
    existing = state.sessions.get(msg.session_id) or SessionSummary(
        session_id=msg.session_id, device=event.device, sport=msg.sport, start_t=msg.t,
        end_t=msg.t, anchor_t=msg.t)
    update: dict[str, object] = {"sport": msg.sport}
    if msg.shoe:
        update["shoe"] = msg.shoe
    if msg.surface:
        update["surface"] = msg.surface.value
    if msg.phase == "end":
        update["ended"] = True
        update["end_t"] = max(existing.end_t, msg.t)
    else:
        update["start_t"] = min(existing.start_t, msg.t)
    session = existing.model_copy(update=update)
    open_sessions = dict(state.open_session)
    if msg.phase == "start":
        open_sessions[event.device] = msg.session_id
    elif open_sessions.get(event.device) == msg.session_id:
        del open_sessions[event.device]
    state = state.model_copy(update={"sessions": {**state.sessions, msg.session_id: session},
                                     "open_session": open_sessions,
                                     "latest_t": max(state.latest_t or msg.t, msg.t)})
    observations = _shoe_observations(state, session, profile, msg.t) if msg.shoe else []
    return state, observations, [_session_point(session, profile)]


def _on_pain(state: RunnerState, report: PainReport, profile: RunnerProfile
             ) -> tuple[RunnerState, list[Observation], list[MetricPoint]]:
    point = MetricPoint.make(m.PAIN, _tags(profile, when=report.when.value), {
        "score": report.score, "where": report.where,
        "pinpoint_on_bone": report.pinpoint_on_bone,
        "worse_as_run_goes_on": report.worse_as_run_goes_on}, report.t)
    observations = []
    if report.when is PainWhen.AFTER:
        observations.append(Observation("pain_after_run", report.t, float(report.score),
                                        {"score": float(report.score), "where": report.where}))
    signs = [name for name, present in (
        ("pain pinpoint on a bone", report.pinpoint_on_bone),
        ("pain that grows as the run goes on", report.worse_as_run_goes_on),
        ("pain at night", report.when is PainWhen.NIGHT)) if present and report.score > 0]
    if signs:
        day = local_day(report.t, profile)
        loads = day_loads(day_totals(state, profile), profile)
        _, _, change = week_change(loads, day)
        # only a full previous week inside the runner's history says mileage is rising
        known_since = date.fromisoformat(state.first_day) if state.first_day else day
        rising = change is not None and change > 1.1 and day - timedelta(days=13) >= known_since
        observations.append(Observation(
            "bone_stress_signs", report.t, len(signs) + (0.5 if rising else 0.0), {
                "signs": ", ".join(signs), "where": report.where, "score": float(report.score),
                "mileage": "rising" if rising else "not rising",
                "week_change_pct": 100 * change if change is not None else 0.0}))
    rtr = _return_to_run(state, profile)
    if rtr is not None and report.score > rtr_plan.PAIN_LIMIT and report.when in (
            PainWhen.AFTER, PainWhen.DURING, PainWhen.MORNING):
        # the stage was not tolerated: its clean runs start again
        state = state.model_copy(update={"return_to_run": rtr.model_copy(
            update={"clean_runs": 0})})
    return state, observations, [point]


def _alert_point(alert: Alert, profile: RunnerProfile) -> MetricPoint:
    return MetricPoint.make(m.ALERT, _tags(profile, rule=alert.rule, severity=alert.severity), {
        "alert_id": alert.alert_id, "title": alert.title, "message": alert.message,
        "value": float(alert.evidence.get("value", 0.0))}, alert.fired_at)


# --------------------------------------------------------------------------- the step


def process_event(state: RunnerState, event: RunnerEvent, profile: RunnerProfile
                  ) -> tuple[RunnerState, StepOutput]:
    """Fold one contract event into the runner's state; return alerts and metric points."""
    stream_key = event.dedup_stream
    seen = state.seen.get(stream_key, SeenSequences())
    if seen.contains(event.seq):
        return state, StepOutput(duplicate=True, too_old=seen.below_window(event.seq))
    state = state.model_copy(update={"seen": {**state.seen, stream_key: seen.add(event.seq)}})

    observations: list[Observation] = []
    points: list[MetricPoint] = []
    body = event.body
    if isinstance(body, SampleBatch):
        state, observations, points = _on_samples(state, event, body, profile)
    elif isinstance(body, SessionEvent):
        state, observations, points = _on_session(state, event, body, profile)
    else:
        state, observations, points = _on_pain(state, body, profile)

    rule_state, alerts = evaluate(state.rules, observations, profile.rules, profile.runner,
                                  profile.team)
    state = _prune(state.model_copy(update={"rules": rule_state}), profile)
    points += [_alert_point(a, profile) for a in alerts]
    return state, StepOutput(alerts=alerts, points=points)
