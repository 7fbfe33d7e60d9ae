"""Pure rule evaluation: (state, observations) -> (state, alerts).

A level fires once its condition has held for its sustain window; an alert for a rule is
sent again only after the rule's cooldown, or at once when the severity rises. All times
are event times, so a replay of the same data gives the same alerts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from rules.alerts import Alert, Evidence, alert_id, format_value
from rules.catalogue import Rule, Severity
from rules.causes import one_message_per_cause

# readings further apart than this break a sustained condition (pause, new run)
MAX_SUSTAIN_GAP_S = 120.0


@dataclass(frozen=True, slots=True)
class Observation:
    """One value of a signal at an event time, with the numbers a person would check."""

    signal: str
    t: float
    value: float
    evidence: Evidence = field(default_factory=dict)


class RuleTrack(msgspec.Struct, frozen=True, array_like=True):
    since: dict[str, float] = msgspec.field(default_factory=dict)  # severity -> start
    last_t: float | None = None


class AlertMemory(msgspec.Struct, frozen=True, array_like=True):
    severity: str
    fired_at: float


class RuleState(msgspec.Struct, frozen=True, array_like=True):
    tracks: dict[str, RuleTrack] = msgspec.field(default_factory=dict)
    memory: dict[str, AlertMemory] = msgspec.field(default_factory=dict)
    # cause -> (severity, fired at) of the last message the runner was sent about it
    causes: dict[str, tuple[str, float]] = msgspec.field(default_factory=dict)


NO_TRACK = RuleTrack()
# rule index per rule set: the same profile's rules are evaluated on every batch
_BY_SIGNAL: dict[int, tuple[Mapping[str, Rule], dict[str, list[Rule]]]] = {}


def rules_by_signal(rules: Mapping[str, Rule]) -> dict[str, list[Rule]]:
    """The enabled rules watching each signal, built once per rule set."""
    cached = _BY_SIGNAL.get(id(rules))
    if cached is not None and cached[0] is rules:
        return cached[1]
    by_signal: dict[str, list[Rule]] = {}
    for rule in rules.values():
        if rule.enabled:
            for signal in rule.signals:
                by_signal.setdefault(signal, []).append(rule)
    if len(_BY_SIGNAL) > 100_000:
        _BY_SIGNAL.clear()
    _BY_SIGNAL[id(rules)] = (rules, by_signal)  # keeps ``rules`` alive, so ids stay unique
    return by_signal


def _advance(rule: Rule, track: RuleTrack, obs: Observation) -> tuple[RuleTrack, str | None]:
    """Update when each level's condition started; return the highest level now due."""
    if track.last_t is not None and obs.t < track.last_t:
        # a late reading cannot extend a sustained condition: judge it on its own
        late_due = None
        for level in rule.levels:
            if (rule.level_signal(level) == obs.signal and level.sustain_s == 0
                    and rule.passes(obs.value, level.threshold)):
                late_due = level.severity
        return track, late_due
    since = dict(track.since)
    if track.last_t is not None and obs.t - track.last_t > MAX_SUSTAIN_GAP_S:
        since = {}
    due: str | None = None
    for level in rule.levels:
        if rule.level_signal(level) != obs.signal:
            continue
        if rule.passes(obs.value, level.threshold):
            start = since.setdefault(level.severity, obs.t)
            if obs.t - start >= level.sustain_s:
                due = level.severity
        else:
            since.pop(level.severity, None)
    last_t = obs.t if track.last_t is None else max(track.last_t, obs.t)
    return RuleTrack(since=since, last_t=last_t), due


def _should_send(rule: Rule, memory: AlertMemory | None, severity: str, t: float) -> bool:
    if memory is None:
        return True
    if Severity.parse(severity) > Severity.parse(memory.severity):
        return True  # escalation is news
    return abs(t - memory.fired_at) >= rule.cooldown_h * 3600.0


def _filled(template: str, values: Mapping[str, str]) -> str:
    # an empty optional part (a note, site advice) leaves no stray spaces
    return " ".join(template.format(**values).split())


def build_alert(rule: Rule, severity: str, obs: Observation, runner: str, team: str) -> Alert:
    level = rule.level(severity)
    threshold = level.threshold
    evidence: Evidence = {k: obs.evidence[k] for k in rule.evidence if k in obs.evidence}
    values = {k: format_value(v) for k, v in evidence.items()}
    values.update(value=format_value(obs.value), threshold=format_value(threshold),
                  severity=severity)
    missing = {k: "?" for k in rule.evidence if k not in values}
    fmt = {**missing, **values}
    return Alert(
        alert_id=alert_id(runner, rule.id, severity, obs.t), runner=runner, team=team,
        rule=rule.id, severity=severity, title=rule.title,
        message=_filled(level.message or rule.message, fmt),
        next_step=_filled(level.next_step or rule.next_step, fmt),
        evidence={**evidence, "value": round(obs.value, 4), "threshold": threshold},
        source=f"{rule.source}; this level: {level.source}" if level.source else rule.source,
        caveat=rule.caveat or "", cause=rule.cause or "", fired_at=obs.t)


def evaluate(state: RuleState, observations: Iterable[Observation], rules: Mapping[str, Rule],
             runner: str, team: str) -> tuple[RuleState, list[Alert]]:
    by_signal = rules_by_signal(rules)
    watched = [o for o in observations if o.signal in by_signal]
    if not watched:
        return state, []
    tracks = dict(state.tracks)
    memory = dict(state.memory)
    # one alert per rule and moment: when two levels fire at once (weekly and two-weekly
    # growth), the more severe one replaces the other
    fired: dict[tuple[str, float], Alert] = {}
    for obs in sorted(watched, key=lambda o: o.t):
        for rule in by_signal[obs.signal]:
            track, due = _advance(rule, tracks.get(rule.id, NO_TRACK), obs)
            tracks[rule.id] = track
            if due is None or not _should_send(rule, memory.get(rule.id), due, obs.t):
                continue
            fired.pop((rule.id, obs.t), None)
            fired[(rule.id, obs.t)] = build_alert(rule, due, obs, runner, team)
            memory[rule.id] = AlertMemory(severity=due, fired_at=obs.t)
    causes, alerts = one_message_per_cause(state.causes, list(fired.values()))
    return RuleState(tracks=tracks, memory=memory, causes=causes), alerts
