"""Backtest: run a file of contract events through the pure core, offline.

Each line of the input is one MQTT message as JSON, ``{"topic": …, "payload": {…}}``, in
the order the devices sent them. Every line goes the way the bridge and the worker would
take it: the payload is decoded by :func:`ingest.routing.decode_message` (so the contract
refuses here what it refuses live), each runner keeps one :class:`RunnerState`, and
:func:`stream.runner.process_event` folds the event in with the runner's profile from the
roster and the given rule catalogue. Nothing is published or stored.

:func:`backtest` yields what it finds in input order (an alert, a refused line, a
duplicate, a runner the roster does not know) and a :class:`BacktestSummary` last. It
prints nothing; ``stream.backtest_cli`` is the ``stridewatch rules backtest`` command.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

from ingest.decoders import InboundMessage, Rejected
from ingest.routing import decode_message
from rules.alerts import Alert, Evidence
from rules.catalogue import Rule, Severity
from stream.runner import RunnerState, process_event
from team.roster import Roster, RunnerProfile, unknown_runner_note

__all__ = ["SEVERITIES", "AlertRow", "BacktestSummary", "DuplicateLine", "Finding",
           "RefusedLine", "UnknownRunner", "backtest", "iso_utc"]

SEVERITIES: tuple[str, ...] = tuple(s.label for s in Severity)  # mildest first


def iso_utc(t: float) -> str:
    """Event time as ISO 8601 UTC to the second, e.g. ``2026-11-22T08:23:20Z``.

    Whole seconds, so jq's ``fromdateiso8601`` reads it and the strings sort in time order.
    """
    return datetime.fromtimestamp(int(t // 1), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert the rules fired, as a backtest reports it."""

    line: int  # the input line whose event fired it
    runner: str
    rule: str
    severity: str
    t: str  # ISO 8601 UTC, from the alert's fired_at
    evidence: Evidence
    message: str
    # whether the runner's phone gets it (one message per cause: rules.causes)
    to_runner: bool = True

    @classmethod
    def from_alert(cls, line: int, alert: Alert) -> AlertRow:
        return cls(line=line, runner=alert.runner, rule=alert.rule, severity=alert.severity,
                   t=iso_utc(alert.fired_at), evidence=dict(alert.evidence),
                   message=alert.message, to_runner=alert.to_runner)

    def to_json(self) -> str:
        """One JSON line: runner, rule, severity, t, evidence, message, to_runner; sorted."""
        return json.dumps({"runner": self.runner, "rule": self.rule,
                           "severity": self.severity, "t": self.t,
                           "evidence": self.evidence, "message": self.message,
                           "to_runner": self.to_runner},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _LineNote:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class RefusedLine(_LineNote):
    """A line that could not be used: not JSON, no topic or payload, refused by the contract."""


@dataclass(frozen=True, slots=True)
class DuplicateLine(_LineNote):
    """A line whose event the core had already counted (same device, kind and sequence)."""


@dataclass(frozen=True, slots=True)
class UnknownRunner:
    """A runner the roster does not name, first seen on ``line``: evaluated with defaults."""

    line: int
    runner: str

    def __str__(self) -> str:
        return (f"warning: runner '{self.runner}' (first on line {self.line}) is not in the "
                f"roster: {unknown_runner_note(self.runner)}")


Finding = AlertRow | RefusedLine | DuplicateLine | UnknownRunner


@dataclass(frozen=True, slots=True)
class BacktestSummary:
    """What a backtest read and fired; ``lines`` = ``events`` + refused + duplicates."""

    lines: int  # lines holding a message (blank lines and # comments are not counted)
    events: int  # events the core folded in
    alerts: int
    runners: tuple[str, ...]  # sorted
    refused: tuple[RefusedLine, ...] = ()
    duplicates: tuple[DuplicateLine, ...] = ()
    unknown_runners: tuple[str, ...] = ()  # in the order first seen
    # rule id -> severity -> alerts; only rules that fired
    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


def _received_at(payload: Mapping[str, object]) -> float:
    """The payload's ``t``, or its first sample's, else 0.0 (the core runs on event time)."""

    def number(value: object) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    t = number(payload.get("t"))
    if t is not None:
        return t
    samples = payload.get("samples")
    if isinstance(samples, list) and samples and isinstance(samples[0], dict):
        t = number(samples[0].get("t"))
        if t is not None:
            return t
    return 0.0


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _read_line(text: str) -> tuple[str, dict[str, object]]:
    """The topic and payload of one input line; raise Rejected with why not."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise Rejected(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except ValueError as exc:
        raise Rejected(f"not JSON: {exc}") from None
    except RecursionError:
        raise Rejected("not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise Rejected(f"not a JSON object with topic and payload, got {type(data).__name__}")
    topic, payload = data.get("topic"), data.get("payload")
    if topic is None:
        raise Rejected('no "topic"')
    if not isinstance(topic, str):
        raise Rejected(f'"topic" must be a string, got {type(topic).__name__}')
    if payload is None:
        raise Rejected('no "payload"')
    if not isinstance(payload, dict):
        raise Rejected(f'"payload" must be a JSON object, got {type(payload).__name__}')
    return topic, payload


def _text(raw: str | bytes) -> str:
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected("not UTF-8 text") from None
    return raw


def backtest(lines: Iterable[str | bytes], roster: Roster, catalogue: Mapping[str, Rule]
             ) -> Iterator[Finding | BacktestSummary]:
    """Run ``lines`` through the pure core; yield findings in input order, the summary last.

    Lines are numbered from 1; blank lines and lines starting with ``#`` are skipped. A
    runner's profile is built once, at their first event. Deterministic: the same lines
    give the same findings.
    """
    states: dict[str, RunnerState] = {}
    profiles: dict[str, RunnerProfile] = {}
    counts: dict[str, dict[str, int]] = {}
    refused: list[RefusedLine] = []
    duplicates: list[DuplicateLine] = []
    unknown: list[str] = []
    used = events = alerts = 0
    for number, raw in enumerate(lines, start=1):
        try:
            text = _text(raw)
        except Rejected as exc:
            used += 1
            refused.append(RefusedLine(number, exc.reason))
            yield refused[-1]
            continue
        stripped = text.strip().lstrip("\ufeff")
        if not stripped or stripped.startswith("#"):
            continue
        used += 1
        try:
            topic, payload = _read_line(stripped)
            message = InboundMessage(topic, json.dumps(payload, separators=(",", ":")).encode(),
                                     _received_at(payload))
            event = decode_message(message)
        except Rejected as exc:
            refused.append(RefusedLine(number, exc.reason))
            yield refused[-1]
            continue
        runner = event.runner
        profile = profiles.get(runner)
        if profile is None:
            profile = profiles[runner] = roster.profile(runner, catalogue)
            states[runner] = RunnerState(runner=runner)
            if roster.runner(runner) is None:
                unknown.append(runner)
                yield UnknownRunner(number, runner)
        states[runner], out = process_event(states[runner], event, profile)
        if out.duplicate:
            what = f"{runner}'s {event.dedup_stream} sequence {event.seq}"
            reason = (f"older than the sequences still remembered for {what}: ignored"
                      if out.too_old else f"duplicate of an earlier event ({what}): ignored")
            duplicates.append(DuplicateLine(number, reason))
            yield duplicates[-1]
            continue
        events += 1
        for alert in out.alerts:
            alerts += 1
            by_severity = counts.setdefault(alert.rule, {})
            by_severity[alert.severity] = by_severity.get(alert.severity, 0) + 1
            yield AlertRow.from_alert(number, alert)
    yield BacktestSummary(lines=used, events=events, alerts=alerts,
                          runners=tuple(sorted(states)), refused=tuple(refused),
                          duplicates=tuple(duplicates), unknown_runners=tuple(unknown),
                          counts={rule: dict(c) for rule, c in sorted(counts.items())})
