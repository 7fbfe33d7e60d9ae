"""Per-runner state and the pure step ``(state, event) -> (state, outputs)``.

The Faust agent keeps one :class:`RunnerState` per runner in a table and calls
:func:`process_event` once per Kafka record (a batch of samples, a session start/end or a
pain report). Everything here is deterministic in event time: replaying a record gives
the same state, and a record already seen changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from ingest.contract import (
    PainReport,
    PainWhen,
    RunnerEvent,
    SampleBatch,
    SessionEvent,
    Sport,
)
from rules.alerts import Alert
from rules.evaluator import Observation, RuleState, evaluate
from rules.roster import RunnerProfile
from stream import metrics as m
from stream.asymmetry import AsymmetryReading, AsymmetryState, update_asymmetry
from stream.load import load_ratio, week_change
from stream.metrics import MetricPoint

RUNNING_SPORTS = frozenset({Sport.RUNNING, Sport.TRAIL_RUNNING, Sport.TREADMILL})
# a batch without session id joins the device's open session unless this much time passed
SESSION_GAP_S = 30 * 60
KEEP_SESSIONS_DAYS = 42
KEEP_DAYS = 120
# gaps in a device's sequence numbers remembered before old ones are folded away
MAX_RANGES = 256


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

    def add(self, seq: int) -> SeenSequences:
        merged: list[list[int]] = []
        for lo, hi in sorted([*self.ranges, (seq, seq)]):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        floor = self.floor
        while len(merged) > MAX_RANGES:
            floor = max(floor, merged.pop(0)[1])
        return SeenSequences(floor=floor, ranges=tuple((lo, hi) for lo, hi in merged))


class SessionSummary(_Model):
    session_id: str
    device: str
    sport: Sport = Sport.RUNNING
    shoe: str | None = None
    surface: str | None = None
    start_t: float
    end_t: float
    ended: bool = False
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


class DayTotals(_Model):
    distance_km: float = 0.0
    duration_min: float = 0.0
    runs: int = 0


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
        prev = totals.get(day, DayTotals())
        totals[day] = DayTotals(distance_km=prev.distance_km + s.distance_m / 1000.0,
                                duration_min=prev.duration_min + s.duration_s / 60.0,
                                runs=prev.runs + 1)
    return totals


def day_loads(totals: dict[date, DayTotals], profile: RunnerProfile) -> dict[date, float]:
    return {d: getattr(t, profile.load_metric) for d, t in totals.items()}


LOAD_UNITS = {"distance_km": "km", "duration_min": "min"}


# --------------------------------------------------------------------------- folding


def _fold_batch(session: SessionSummary, batch: SampleBatch) -> SessionSummary:
    s = session.model_dump()
    prev_t: float | None = None
    prev_speed: float | None = None
    for sample in batch.samples:
        s["start_t"] = min(s["start_t"], sample.t)
        s["end_t"] = max(s["end_t"], sample.t)
        if sample.distance_m is not None:
            point = (sample.t, sample.distance_m)
            if s["first_distance"] is None or sample.t < s["first_distance"][0]:
                s["first_distance"] = point
            if s["last_distance"] is None or sample.t >= s["last_distance"][0]:
                s["last_distance"] = point
        if sample.speed_mps is not None:
            if prev_t is not None and prev_speed is not None:
                s["speed_distance_m"] += prev_speed * min(sample.t - prev_t, 10.0)
            prev_t, prev_speed = sample.t, sample.speed_mps
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
        if sample.elevation_gain_m is not None:
            s["climb_m"] += sample.elevation_gain_m
    return SessionSummary(**s)


def _session_for_batch(state: RunnerState, device: str, batch: SampleBatch
                       ) -> tuple[str, dict[str, str]]:
    open_sessions = dict(state.open_session)
    if batch.session_id:
        open_sessions[device] = batch.session_id
        return batch.session_id, open_sessions
    current = open_sessions.get(device)
    first_t = batch.samples[0].t
    if current in state.sessions:
        known = state.sessions[current]
        if not known.ended and first_t - known.end_t <= SESSION_GAP_S:
            return current, open_sessions
    new_id = f"{device}-{int(first_t)}"
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
    for s in old.values():
        if not s.counts_as_running:
            continue
        key = local_day(s.start_t, profile).isoformat()
        prev = archive.get(key, DayTotals())
        archive[key] = DayTotals(distance_km=prev.distance_km + s.distance_m / 1000.0,
                                 duration_min=prev.duration_min + s.duration_s / 60.0,
                                 runs=prev.runs + 1)
    day_cutoff = (today - timedelta(days=KEEP_DAYS)).isoformat()
    archive = {d: t for d, t in archive.items() if d >= day_cutoff}
    sessions = {k: s for k, s in state.sessions.items() if k not in old}
    open_session = {d: sid for d, sid in state.open_session.items() if sid in sessions}
    return state.model_copy(update={"sessions": sessions, "archived_days": archive,
                                    "open_session": open_session})


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
    }, s.start_t)


def _day_observations_and_points(state: RunnerState, profile: RunnerProfile, day: date, t: float
                                 ) -> tuple[list[Observation], list[MetricPoint]]:
    """Load figures for ``day`` and the days after it up to the latest (late data)."""
    totals = day_totals(state, profile)
    loads = day_loads(totals, profile)
    first = date.fromisoformat(state.first_day) if state.first_day else day
    latest = local_day(state.latest_t, profile) if state.latest_t else day
    unit = LOAD_UNITS[profile.load_metric]
    observations: list[Observation] = []
    points: list[MetricPoint] = []
    current = day
    while current <= latest and (current - day).days <= KEEP_SESSIONS_DAYS:
        ratio = load_ratio(loads, current, first_day=first)
        week, last_week, change = week_change(loads, current)
        day_total = totals.get(current, DayTotals())
        points.append(MetricPoint.make(m.DAILY_LOAD, _tags(profile), {
            "load": round(loads.get(current, 0.0), 4), "load_unit": unit,
            "distance_km": round(day_total.distance_km, 4),
            "duration_min": round(day_total.duration_min, 3), "runs": day_total.runs,
            "acute": round(ratio.acute, 4), "chronic": round(ratio.chronic, 4),
            "acwr": round(ratio.ratio, 4) if ratio.ratio is not None else None,
            "week_load": round(week, 4), "last_week_load": round(last_week, 4),
            "week_change": round(change, 4) if change is not None else None,
        }, day_start_s(current, profile)))
        if current == day and ratio.ratio is not None:
            observations.append(Observation("acwr", t, ratio.ratio, {
                "acwr": ratio.ratio, "acute_load": ratio.acute, "chronic_load": ratio.chronic,
                "load_unit": unit, "day": current.isoformat()}))
        current += timedelta(days=1)
    return observations, points


def _balance_observations(readings: list[tuple[float, float]], session_id: str
                          ) -> list[Observation]:
    out = []
    for t, balance in readings:
        heavier = "left" if balance > 50 else "right"
        out.append(Observation("gct_balance_offset", t, abs(balance - 50.0), {
            "gct_balance_pct": balance, "heavier_side": heavier, "session_id": session_id}))
    return out


def _on_samples(state: RunnerState, event: RunnerEvent, batch: SampleBatch,
                profile: RunnerProfile) -> tuple[RunnerState, list[Observation], list[MetricPoint]]:
    session_id, open_sessions = _session_for_batch(state, event.device, batch)
    first_t = batch.samples[0].t
    existing = state.sessions.get(session_id) or SessionSummary(
        session_id=session_id, device=event.device, sport=batch.sport, start_t=first_t,
        end_t=first_t)
    session = _fold_batch(existing, batch)
    asymmetry, readings = update_asymmetry(state.asymmetry, batch.samples)
    last_t = batch.samples[-1].t
    day = local_day(session.start_t, profile)
    first_day = min(filter(None, [state.first_day, day.isoformat()])) if session.counts_as_running \
        else state.first_day
    state = state.model_copy(update={
        "sessions": {**state.sessions, session_id: session}, "open_session": open_sessions,
        "asymmetry": asymmetry, "first_day": first_day,
        "latest_t": max(state.latest_t or last_t, last_t)})

    balance = [(r.t, r.gct_balance_pct) for r in readings if r.gct_balance_pct is not None]
    observations = _balance_observations(balance, session_id)
    points = [_session_point(session, profile)]
    if session.counts_as_running:
        load_obs, day_points = _day_observations_and_points(state, profile, day, last_t)
        observations += load_obs
        points += day_points
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
                profile: RunnerProfile) -> tuple[RunnerState, list[MetricPoint]]:
    existing = state.sessions.get(msg.session_id) or SessionSummary(
        session_id=msg.session_id, device=event.device, sport=msg.sport, start_t=msg.t,
        end_t=msg.t)
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
    return state, [_session_point(session, profile)]


def _on_pain(report: PainReport, profile: RunnerProfile
             ) -> tuple[list[Observation], list[MetricPoint]]:
    point = MetricPoint.make(m.PAIN, _tags(profile, when=report.when.value), {
        "score": report.score, "where": report.where,
        "pinpoint_on_bone": report.pinpoint_on_bone,
        "worse_as_run_goes_on": report.worse_as_run_goes_on}, report.t)
    observations = []
    if report.when is PainWhen.AFTER:
        observations.append(Observation("pain_after_run", report.t, float(report.score),
                                        {"score": float(report.score), "where": report.where}))
    return observations, [point]


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
        return state, StepOutput(duplicate=True)
    state = state.model_copy(update={"seen": {**state.seen, stream_key: seen.add(event.seq)}})

    observations: list[Observation] = []
    points: list[MetricPoint] = []
    body = event.body
    if isinstance(body, SampleBatch):
        state, observations, points = _on_samples(state, event, body, profile)
    elif isinstance(body, SessionEvent):
        state, points = _on_session(state, event, body, profile)
    else:
        observations, points = _on_pain(body, profile)

    rule_state, alerts = evaluate(state.rules, observations, profile.rules, profile.runner,
                                  profile.team)
    state = _prune(state.model_copy(update={"rules": rule_state}), profile)
    points += [_alert_point(a, profile) for a in alerts]
    return state, StepOutput(alerts=alerts, points=points)
