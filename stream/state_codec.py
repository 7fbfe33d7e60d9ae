"""The runner state's changelog format: three table keys, MessagePack, a schema version.

- ``<runner>`` holds the **live** part (the session being folded, smoothed gait, rule
  tracks, the sequences seen since the seen sets were last stored): rewritten with every
  batch, well under a kilobyte;
- ``<runner>#seen`` holds each device's seen sequences, delta-coded: rewritten once
  ``SEEN_SPILL`` new sequences have gathered in the live part, or with the history;
- ``<runner>#history`` holds the **history** part (the other sessions, old days, shoes,
  the return-to-run plan): rewritten only when it changed — once a session or a day.

``#`` cannot appear in a runner id, so the keys never collide. MessagePack through
msgspec was chosen by measurement (docs/benchmarks.md, "State codec"). Structs are
stored as arrays (no field names). A field added at the end of a struct with a default
reads from older writes as that default; any other change of a struct's fields bumps
``SCHEMA_VERSION`` and adds a migration here.

Version 1 is the JSON document of earlier releases (one key per runner, everything in
it); :func:`decode` reads it and the next write stores version 2.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import msgspec

from ingest.contract import Sport
from rules.evaluator import AlertMemory, RuleState, RuleTrack
from stream.gait import GaitState
from stream.state import (
    MAX_RANGES,
    DayTotals,
    PainNote,
    ReturnToRun,
    RunnerState,
    SeenSequences,
    SessionSummary,
    SprainCase,
)

SCHEMA_VERSION = 2
HISTORY_SUFFIX = b"#history"
SEEN_SUFFIX = b"#seen"
# new sequences carried in the live part before the seen sets are stored again
SEEN_SPILL = 24


class LivePart(msgspec.Struct, array_like=True):
    v: int
    runner: str
    unsaved_seen: dict[str, list[int]]
    current: SessionSummary | None
    open_session: dict[str, str]
    gait: GaitState
    rules: RuleState
    latest_t: float | None
    load_days_through: str | None


class SeenPart(msgspec.Struct, array_like=True):
    v: int
    # stream -> (floor, first bound - floor, then each bound minus the one before): the
    # differences of time-stamped sequences are small numbers, a few bytes each
    seen: dict[str, tuple[int, list[int]]]


class HistoryPart(msgspec.Struct, array_like=True):
    v: int
    sessions: list[SessionSummary]
    archived_days: dict[str, DayTotals]
    first_day: str | None
    shoe_km_archived: dict[str, float]
    return_to_run: ReturnToRun | None
    pruned_day: str | None
    # added after the first version-2 release: trailing and defaulted, so older history
    # parts read as "no pain reports, no sprain"
    pain_notes: list[PainNote] = msgspec.field(default_factory=list)
    sprain: SprainCase | None = None


_encoder = msgspec.msgpack.Encoder()
_live_decoder = msgspec.msgpack.Decoder(LivePart)
_seen_decoder = msgspec.msgpack.Decoder(SeenPart)
_history_decoder = msgspec.msgpack.Decoder(HistoryPart)


class StateFormatError(ValueError):
    """A stored state that no known schema version reads."""


@dataclass(frozen=True, slots=True)
class StoredState:
    """What one write puts in the table: the live part, and the others if they changed."""

    live: bytes
    seen: bytes | None = None
    history: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.live) + len(self.seen or b"") + len(self.history or b"")


def history_key(runner_key: bytes) -> bytes:
    return runner_key + HISTORY_SUFFIX


def seen_key(runner_key: bytes) -> bytes:
    return runner_key + SEEN_SUFFIX


def _pack_seen(seen: SeenSequences) -> tuple[int, list[int]]:
    bounds = seen.bounds.tolist()
    return seen.floor, [b - a for a, b in zip([seen.floor, *bounds], bounds, strict=False)]


def _unpack_seen(packed: tuple[int, list[int]]) -> SeenSequences:
    floor, deltas = packed
    bounds = itertools.accumulate(deltas, initial=floor)
    next(bounds)  # the floor itself
    return SeenSequences(floor=floor, bounds=bounds)


def encode_live(state: RunnerState) -> bytes:
    current = state.sessions.get(state.current) if state.current is not None else None
    return _encoder.encode(LivePart(
        SCHEMA_VERSION, state.runner, state.unsaved_seen, current, state.open_session,
        state.gait, state.rules, state.latest_t, state.load_days_through))


def encode_seen(state: RunnerState) -> bytes:
    return _encoder.encode(SeenPart(SCHEMA_VERSION, {
        k: _pack_seen(v) for k, v in state.seen.items()}))


def encode_history(state: RunnerState) -> bytes:
    if state.parked_history is not None:
        return state.parked_history  # unchanged since it was parked
    others = [s for sid, s in state.sessions.items() if sid != state.current]
    return _encoder.encode(HistoryPart(
        SCHEMA_VERSION, others, state.archived_days, state.first_day, state.shoe_km_archived,
        state.return_to_run, state.pruned_day, state.pain_notes, state.sprain))


def encode(state: RunnerState) -> StoredState:
    """What to write after a step: the live part, plus whichever others changed."""
    history = seen = None
    if state.history_changed or sum(map(len, state.unsaved_seen.values())) >= SEEN_SPILL:
        seen = encode_seen(state)
        state.unsaved_seen = {}
    if state.history_changed:
        history = encode_history(state)
        state.history_changed = False
    return StoredState(encode_live(state), seen, history)


def park(state: RunnerState, history: bytes | None) -> None:
    """Keep the stored history part encoded instead of decoded (a worker's memory).

    ``history`` must be what the table holds for the state's history part: a state is
    parked only when its history has not changed since it was written. The current
    session, the small history fields and the compact view stay; ``unpark`` brings the
    rest back when an event needs it (``stream.runner`` decides).
    """
    if history is None or state.history_changed or state.parked_history is not None:
        return
    current = state.sessions.get(state.current) if state.current is not None else None
    state.sessions = {current.session_id: current} if current is not None else {}
    state.archived_days = {}
    state.shoe_km_archived = {}
    state.parked_history = history
    state.view = state.view.compact() if state.view is not None else None


def unpark(state: RunnerState) -> None:
    raw = state.parked_history
    if raw is None:
        return
    try:
        h = _history_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise StateFormatError(f"stored history of {state.runner} does not read: {exc}"
                               ) from exc
    live_sessions = state.sessions
    state.sessions = {s.session_id: s for s in h.sessions}
    state.sessions.update(live_sessions)
    state.archived_days = h.archived_days
    state.shoe_km_archived = h.shoe_km_archived
    state.parked_history = None
    state.view = None


def decode(live: bytes | None, seen: bytes | None, history: bytes | None, runner: str
           ) -> RunnerState:
    """The state stored under a runner's three keys (any may be missing)."""
    if not live and not history and not seen:
        return RunnerState(runner=runner)
    if live and live[:1] == b"{":
        return _from_version_1(live, runner)
    state = RunnerState(runner=runner, history_changed=False)
    try:
        if history:
            h = _history_decoder.decode(history)
            state.sessions = {s.session_id: s for s in h.sessions}
            state.archived_days = h.archived_days
            state.first_day = h.first_day
            state.shoe_km_archived = h.shoe_km_archived
            state.return_to_run = h.return_to_run
            state.pruned_day = h.pruned_day
            state.pain_notes = h.pain_notes
            state.sprain = h.sprain
        if seen:
            state.seen = {k: _unpack_seen(v) for k, v in _seen_decoder.decode(seen).seen.items()}
        if live:
            p = _live_decoder.decode(live)
            for stream, seqs in p.unsaved_seen.items():
                for seq in seqs:
                    state.mark_seen(stream, state.seen.setdefault(stream, SeenSequences()), seq)
            state.open_session = p.open_session
            state.gait = p.gait
            state.rules = p.rules
            state.latest_t = p.latest_t
            state.load_days_through = p.load_days_through
            if p.current is not None:
                state.sessions[p.current.session_id] = p.current
                state.current = p.current.session_id
    except msgspec.DecodeError as exc:
        raise StateFormatError(f"stored state of {runner} is not schema version "
                               f"{SCHEMA_VERSION}: {exc}") from exc
    return state


# --------------------------------------------------------------------------- version 1


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def _session_v1(d: dict[str, Any]) -> SessionSummary:
    d = dict(d)
    d["sport"] = Sport(d.get("sport", Sport.RUNNING.value))
    d["first_distance"] = _pair(d.get("first_distance"))
    d["last_distance"] = _pair(d.get("last_distance"))
    d["cadence_by_speed"] = {k: (float(v[0]), int(v[1]))
                             for k, v in d.get("cadence_by_speed", {}).items()}
    return SessionSummary(**d)


def _seen_v1(d: dict[str, Any]) -> SeenSequences:
    seen = SeenSequences(floor=int(d.get("floor", -1)))
    for lo, hi in d.get("ranges", ()):
        seen.bounds.extend((int(lo), int(hi)))
    while len(seen.bounds) > 2 * MAX_RANGES:  # version 1 remembered more gaps
        seen.floor = max(seen.floor, seen.bounds[1])
        del seen.bounds[:2]
    return seen


def _from_version_1(raw: bytes, runner: str) -> RunnerState:
    try:
        doc = json.loads(raw)
        rules = doc.get("rules", {})
        rule_state = RuleState(
            tracks={k: RuleTrack(since=dict(v.get("since", {})), last_t=v.get("last_t"))
                    for k, v in rules.get("tracks", {}).items()},
            memory={k: AlertMemory(severity=v["severity"], fired_at=float(v["fired_at"]))
                    for k, v in rules.get("memory", {}).items()})
        plan = doc.get("return_to_run")
        state = RunnerState(
            runner=doc.get("runner", runner),
            seen={k: _seen_v1(v) for k, v in doc.get("seen", {}).items()},
            open_session=dict(doc.get("open_session", {})),
            gait=GaitState(**doc.get("asymmetry", {})),
            rules=rule_state,
            latest_t=doc.get("latest_t"),
            load_days_through=doc.get("load_days_through"),
            sessions={k: _session_v1(v) for k, v in doc.get("sessions", {}).items()},
            archived_days={k: DayTotals(**v) for k, v in doc.get("archived_days", {}).items()},
            first_day=doc.get("first_day"),
            shoe_km_archived=dict(doc.get("shoe_km_archived", {})),
            return_to_run=None if plan is None else ReturnToRun(
                **{**plan, "judged": tuple(plan.get("judged", ()))}),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StateFormatError(f"stored state of {runner} looks like schema version 1 "
                               f"(JSON) but does not read as it: {exc}") from exc
    state.history_changed = True  # the next write stores both parts in version 2
    return state
