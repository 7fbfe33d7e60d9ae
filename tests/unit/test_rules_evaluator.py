"""The pure rule evaluator: thresholds, sustain windows, cooldown and escalation.

One table of scenarios (quix-streams style): a small rule, a sequence of (event time,
value) observations, and the alerts expected as (event time, severity).
"""

from __future__ import annotations

from typing import Any

import pytest

from rules.alerts import Alert, alert_id
from rules.catalogue import Rule, load_catalogue
from rules.evaluator import MAX_SUSTAIN_GAP_S, Observation, RuleState, build_alert, evaluate

RUNNER, TEAM = "ann", "harriers"
HOUR = 3600.0
GAP = MAX_SUSTAIN_GAP_S


def make_rule(**overrides: Any) -> Rule:
    data: dict[str, Any] = {
        "id": "test_rule", "title": "Test rule", "signal": "sig", "direction": "above",
        "levels": [{"severity": "notice", "threshold": 1.0}],
        "cooldown_h": 1.0, "evidence": ["x"],
        "message": "Value {value} passed {threshold} ({x}).",
        "next_step": "Take it easy for a while.", "source": "unit test",
        "evidence_strength": "guidance"}
    data.update(overrides)
    return Rule.model_validate(data)


TWO_LEVELS = [{"severity": "notice", "threshold": 1.0}, {"severity": "warn", "threshold": 2.0}]
SUSTAINED = [{"severity": "notice", "threshold": 1.0, "sustain_s": 60}]

# (scenario, rule overrides, observations (t, value), expected alerts (t, severity))
SCENARIOS: list[tuple[str, dict[str, Any], list[tuple[float, float]], list[tuple[float, str]]]] = [
    ("equal to threshold does not fire", {}, [(0, 1.0)], []),
    ("strictly above fires", {}, [(0, 1.0001)], [(0, "notice")]),
    ("fires at the crossing", {}, [(0, 0.5), (10, 1.0), (20, 1.2)], [(20, "notice")]),
    ("below: under the threshold fires",
     {"direction": "below", "levels": [{"severity": "notice", "threshold": 10}]},
     [(0, 12), (5, 10), (9, 9.9)], [(9, "notice")]),
    ("below: highest due level wins",
     {"direction": "below", "levels": [{"severity": "notice", "threshold": 10},
                                       {"severity": "warn", "threshold": 8}]},
     [(0, 7.5)], [(0, "warn")]),
    ("above: highest due level wins", {"levels": TWO_LEVELS}, [(0, 2.5)], [(0, "warn")]),
    ("sustain: fires only once the window has held",
     {"levels": SUSTAINED}, [(0, 2), (30, 2), (59, 2), (60, 2), (70, 2)], [(60, "notice")]),
    ("sustain: a dip resets the window",
     {"levels": SUSTAINED}, [(0, 2), (30, 2), (50, 0.5), (60, 2), (100, 2), (119, 2), (120, 2)],
     [(120, "notice")]),
    ("sustain: a gap longer than MAX_SUSTAIN_GAP_S resets the window",
     {"levels": SUSTAINED}, [(0, 2), (50, 2), (50 + GAP + 1, 2), (110 + GAP, 2),
                             (111 + GAP, 2)],
     [(111 + GAP, "notice")]),
    ("sustain: a gap of exactly MAX_SUSTAIN_GAP_S does not break it",
     {"levels": SUSTAINED}, [(0, 2), (GAP, 2)], [(GAP, "notice")]),
    ("sustain: a value that never holds long enough never fires",
     {"levels": SUSTAINED}, [(0, 2), (40, 2), (45, 0), (50, 2), (100, 2), (105, 0)], []),
    ("cooldown: no repeat within the cooldown",
     {}, [(0, 2), (1800, 2), (HOUR - 1, 2)], [(0, "notice")]),
    ("cooldown: repeat once it has passed",
     {}, [(0, 2), (1800, 2), (HOUR, 2)], [(0, "notice"), (HOUR, "notice")]),
    ("cooldown: zero means every observation",
     {"cooldown_h": 0}, [(0, 2), (1, 2), (2, 0), (3, 2)], [(0, "notice"), (1, "notice"),
                                                          (3, "notice")]),
    ("escalation notice -> warn fires at once within the cooldown",
     {"levels": TWO_LEVELS}, [(0, 1.5), (10, 1.8), (20, 2.5)], [(0, "notice"), (20, "warn")]),
    ("de-escalation within the cooldown does not fire",
     {"levels": TWO_LEVELS}, [(0, 2.5), (10, 1.5), (HOUR - 1, 1.5)], [(0, "warn")]),
    ("de-escalation after the cooldown fires the lower level",
     {"levels": TWO_LEVELS}, [(0, 2.5), (10, 1.5), (HOUR, 1.5)],
     [(0, "warn"), (HOUR, "notice")]),
    ("repeated warn within the cooldown after an escalation stays quiet",
     {"levels": TWO_LEVELS}, [(0, 1.5), (10, 2.5), (20, 2.5), (HOUR, 2.5), (HOUR + 10, 2.5)],
     [(0, "notice"), (10, "warn"), (HOUR + 10, "warn")]),
    ("escalation waits for its own sustain window",
     {"levels": [{"severity": "notice", "threshold": 1.0},
                 {"severity": "warn", "threshold": 2.0, "sustain_s": 120}]},
     [(0, 2.5), (60, 2.5), (119, 2.5), (120, 2.5)], [(0, "notice"), (120, "warn")]),
    ("a disabled rule never fires", {"enabled": False}, [(0, 5), (HOUR * 2, 5)], []),
]


def _run(rule: Rule, observations: list[tuple[float, float]], one_at_a_time: bool
         ) -> list[Alert]:
    obs = [Observation(rule.signal, t, v, {"x": v}) for t, v in observations]
    rules = {rule.id: rule}
    if not one_at_a_time:
        return evaluate(RuleState(), obs, rules, RUNNER, TEAM)[1]
    state, alerts = RuleState(), []
    for o in obs:
        state, out = evaluate(state, [o], rules, RUNNER, TEAM)
        alerts += out
    return alerts


@pytest.mark.parametrize("one_at_a_time", [True, False], ids=["per-call", "one-call"])
@pytest.mark.parametrize(("scenario", "overrides", "observations", "expected"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_scenario(scenario: str, overrides: dict[str, Any],
                  observations: list[tuple[float, float]], expected: list[tuple[float, str]],
                  one_at_a_time: bool) -> None:
    alerts = _run(make_rule(**overrides), observations, one_at_a_time)
    assert [(a.fired_at, a.severity) for a in alerts] == expected


def test_observations_in_one_call_are_taken_in_event_time_order() -> None:
    rule = make_rule(levels=SUSTAINED)
    shuffled = [Observation("sig", t, 2.0) for t in (60, 0, 30)]
    _, alerts = evaluate(RuleState(), shuffled, {rule.id: rule}, RUNNER, TEAM)
    assert [(a.fired_at, a.severity) for a in alerts] == [(60, "notice")]


def test_other_signals_are_ignored() -> None:
    rule = make_rule()
    state, alerts = evaluate(RuleState(), [Observation("other", 0, 100.0)], {rule.id: rule},
                             RUNNER, TEAM)
    assert alerts == []
    assert state == RuleState()


def test_rules_on_the_same_signal_are_independent() -> None:
    low = make_rule(id="low_rule", cooldown_h=0)
    high = make_rule(id="high_rule", levels=[{"severity": "warn", "threshold": 5.0}])
    _, alerts = evaluate(RuleState(), [Observation("sig", 0, 2.0), Observation("sig", 1, 6.0)],
                         {r.id: r for r in (low, high)}, RUNNER, TEAM)
    assert [(a.rule, a.fired_at) for a in alerts] == [("low_rule", 0), ("low_rule", 1),
                                                       ("high_rule", 1)]


# --------------------------------------------------------------------------- alert content


def _acwr_rule() -> Rule:
    return make_rule(
        id="load_check", title="Load is rising", signal="acwr",
        levels=[{"severity": "notice", "threshold": 1.3}, {"severity": "warn", "threshold": 1.5}],
        evidence=["acwr", "day"], message="Ratio {acwr} on {day} is over {threshold} ({severity}).",
        next_step="Run easy for {day} and the next days.", source="Gabbett 2016",
        evidence_strength="contested", caveat="Contested in runners (Frandsen et al. 2025).")


def test_alert_carries_rule_severity_evidence_next_step_and_disclaimer() -> None:
    rule = _acwr_rule()
    obs = Observation("acwr", 1_700_000_000.0, 1.62345,
                      {"acwr": 1.62345, "day": "2024-02-05", "not_listed": 99.0})
    _, alerts = evaluate(RuleState(), [obs], {rule.id: rule}, RUNNER, TEAM)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.rule == "load_check" and alert.severity == "warn"
    assert alert.runner == RUNNER and alert.team == TEAM
    assert alert.title == "Load is rising" and alert.source == "Gabbett 2016"
    assert alert.fired_at == 1_700_000_000.0
    # only the evidence the rule lists, plus the value (rounded to 4 places) and threshold
    assert alert.evidence == {"acwr": 1.62345, "day": "2024-02-05", "value": 1.6235,
                              "threshold": 1.5}
    # numbers below 10 are shown with two decimals
    assert alert.message == "Ratio 1.62 on 2024-02-05 is over 1.50 (warn)."
    assert alert.next_step == "Run easy for 2024-02-05 and the next days."
    assert "information, not a diagnosis" in alert.disclaimer
    text = alert.as_text()
    assert "information, not a diagnosis" in text and alert.next_step in text
    assert Alert.from_bytes(alert.to_bytes()) == alert


def test_missing_evidence_shows_a_placeholder_not_an_error() -> None:
    rule = _acwr_rule()
    alert = build_alert(rule, "notice", Observation("acwr", 0.0, 1.4, {"acwr": 1.4}), RUNNER,
                        TEAM)
    assert alert.message == "Ratio 1.40 on ? is over 1.30 (notice)."
    assert "day" not in alert.evidence


def test_alert_id_is_deterministic() -> None:
    rule = _acwr_rule()
    obs = [Observation("acwr", 1_700_000_000.0, 1.4, {"acwr": 1.4, "day": "d"}),
           Observation("acwr", 1_700_000_100.0, 1.7, {"acwr": 1.7, "day": "d"})]
    first = evaluate(RuleState(), obs, {rule.id: rule}, RUNNER, TEAM)
    again = evaluate(RuleState(), obs, {rule.id: rule}, RUNNER, TEAM)
    assert first == again
    ids = [a.alert_id for a in first[1]]
    assert ids == [alert_id(RUNNER, "load_check", "notice", 1_700_000_000.0),
                   alert_id(RUNNER, "load_check", "warn", 1_700_000_100.0)]
    assert len(set(ids)) == 2
    assert alert_id(RUNNER, "r", "warn", 1.0) == alert_id(RUNNER, "r", "warn", 1.0)
    assert len({alert_id(RUNNER, "r", "warn", 1.0), alert_id("bob", "r", "warn", 1.0),
                alert_id(RUNNER, "q", "warn", 1.0), alert_id(RUNNER, "r", "notice", 1.0),
                alert_id(RUNNER, "r", "warn", 2.0)}) == 5


# --------------------------------------------------------------------------- shipped catalogue


def test_shipped_catalogue_loads_and_is_complete() -> None:
    catalogue = load_catalogue()
    assert {"load_ratio", "gct_balance", "pain_after_run"} <= set(catalogue)
    for rule_id, rule in catalogue.items():
        assert rule.id == rule_id
        assert rule.source.strip() and rule.message.strip() and rule.next_step.strip()
        # every placeholder can be filled from the rule's own evidence
        evidence: dict[str, float | str] = dict.fromkeys(rule.evidence, "E")
        alert = build_alert(rule, rule.levels[-1].severity,
                            Observation(rule.signal, 0.0, 1.0, evidence), RUNNER, TEAM)
        assert "{" not in alert.message + alert.next_step


def _thresholds(rule: Rule) -> dict[str, float]:
    return {lv.severity: lv.threshold for lv in rule.levels}


def test_shipped_thresholds_match_their_sources() -> None:
    catalogue = load_catalogue()
    # EWMA acute:chronic: only Gabbett's "danger zone" (> 1.5), at notice: contested
    assert catalogue["load_ratio"].signal == "acwr"
    assert _thresholds(catalogue["load_ratio"]) == {"notice": 1.5}
    # session spike: > 110 % (Frandsen's 10-100 % bands), > 200 % (the over-100 % band)
    assert _thresholds(catalogue["session_spike"]) == {"notice": 1.1, "warn": 2.0}
    # GCT balance beyond 50.7 % (notice) and 52.2 % for ≥ 2 min (warn), as offset from 50
    gct = catalogue["gct_balance"]
    assert _thresholds(gct) == pytest.approx({"notice": 0.7, "warn": 2.2})
    assert next(lv for lv in gct.levels if lv.severity == "warn").sustain_s >= 120
    # reported pain > 5/10 after a run; 8-10/10 says stop and get assessed
    pain = catalogue["pain_after_run"]
    assert pain.direction == "above" and _thresholds(pain) == {"warn": 5, "critical": 7}
    # pain during a run: > 5/10 ease off, 7/10 or more stop now
    assert _thresholds(catalogue["pain_during_run"]) == {"notice": 5, "warn": 6}
