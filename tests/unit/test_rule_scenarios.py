"""Every scenario gives exactly the alerts written down for it; the control runner none.

Through the pure core; tests/component and tests/integration run the same scenarios
through the Faust agent and the real stack.
"""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import pytest

from rules.catalogue import load_catalogue
from stream.runner import day_totals
from team.roster import Roster, load_roster
from tests.scenarios import (
    TODAY,
    Scenario,
    return_to_run_plan,
    roster_for,
    run_core,
    scenarios,
)

SCENARIOS = scenarios()


def test_every_rule_in_the_catalogue_has_a_scenario() -> None:
    covered = {rule for s in SCENARIOS for rule, _ in s.expected}
    assert set(load_catalogue()) <= covered, set(load_catalogue()) - covered


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.runner for s in SCENARIOS])
def test_scenario_gives_exactly_its_expected_alerts(scenario: Scenario) -> None:
    _, alerts = run_core(scenario.runner, scenario.messages, roster_for(SCENARIOS))
    assert [(a.rule, a.severity) for a in alerts] == list(scenario.expected)
    assert [a for a in alerts if a.rule == scenario.rule] or not scenario.rule
    for alert in alerts:
        assert alert.runner == scenario.runner and alert.team == "scenario"
        assert "information, not a diagnosis" in alert.disclaimer
        assert alert.next_step and alert.source
        assert "?" not in alert.message, alert.message  # every evidence field was filled
    to_runner = [a for a in alerts if a.to_runner]
    expected = len(alerts) if scenario.to_runner is None else scenario.to_runner
    assert len(to_runner) == expected, [(a.rule, a.severity, a.to_runner) for a in alerts]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.runner for s in SCENARIOS])
def test_processing_everything_twice_changes_nothing(scenario: Scenario) -> None:
    roster = roster_for(SCENARIOS)
    once_state, once = run_core(scenario.runner, scenario.messages, roster)
    doubled = [m for m in scenario.messages for _ in range(2)]
    twice_state, twice = run_core(scenario.runner, doubled, roster)
    assert [a.alert_id for a in twice] == [a.alert_id for a in once]
    assert twice_state == once_state


def test_history_arriving_out_of_order_gives_the_same_days() -> None:
    scenario = next(s for s in SCENARIOS if s.rule == "session_spike")
    roster = roster_for(SCENARIOS)
    profile = roster.profile(scenario.runner, load_catalogue())
    in_order, _ = run_core(scenario.runner, scenario.messages, roster)
    shuffled = list(scenario.messages)
    random.Random(4).shuffle(shuffled)
    mixed, _ = run_core(scenario.runner, shuffled, roster)
    expected = {d: (round(t.distance_km, 6), t.runs) for d, t in
                day_totals(in_order, profile).items()}
    assert {d: (round(t.distance_km, 6), t.runs) for d, t in
            day_totals(mixed, profile).items()} == expected


def test_a_run_synced_hours_later_lands_on_its_own_day() -> None:
    scenario = next(s for s in SCENARIOS if not s.rule)
    roster = roster_for(SCENARIOS)
    profile = roster.profile(scenario.runner, load_catalogue())
    # the second-to-last run (Sunday) arrives after today's run
    sessions_in_order = scenario.messages
    last_run_start = max(i for i, (topic, payload) in enumerate(sessions_in_order)
                         if topic.endswith("/session") and b'"start"' in payload)
    previous_start = max(i for i, (topic, payload) in enumerate(
        sessions_in_order[:last_run_start]) if topic.endswith("/session")
        and b'"start"' in payload)
    late = sessions_in_order[previous_start:last_run_start]
    reordered = sessions_in_order[:previous_start] + sessions_in_order[last_run_start:] + late
    expected, _ = run_core(scenario.runner, sessions_in_order, roster)
    got, _ = run_core(scenario.runner, reordered, roster)
    assert day_totals(got, profile) == day_totals(expected, profile)
    sunday = (TODAY.date().toordinal() - 1)
    assert any(d.toordinal() == sunday and t.runs == 1
               for d, t in day_totals(got, profile).items())


def return_to_run_roster(runner: str, grade: int, since: date) -> Roster:
    return Roster.model_validate({
        "teams": [{"id": "scenario", "name": "Scenario club"}],
        "runners": [{"id": runner, "name": "R", "team": "scenario", "injury": {
            "kind": "ankle_sprain", "grade": grade, "since": since.isoformat(), "stage": 1}}]})


def test_return_to_run_plan_followed_then_broken() -> None:
    messages, since = return_to_run_plan("plan-runner")
    state, alerts = run_core("plan-runner", messages, return_to_run_roster("plan-runner", 1, since))
    summary: list[tuple[str, str, Any]] = [(a.rule, a.severity, a.evidence.get("stage"))
                                           for a in alerts]
    # the coach's plan starts at stage 1 with the first session; stage 1 done after two
    # clean walk-runs: moved to stage 2 when the third session began; then today's
    # continuous run broke stage 2
    assert summary == [("return_to_run_progress", "info", 1.0),
                       ("return_to_run_progress", "info", 2.0),
                       ("return_to_run", "warn", 2.0)]
    assert state.return_to_run is not None and state.return_to_run.stage == 2
    broken = alerts[-1]
    assert "stage 2" in broken.message and "2 min run" in broken.message


def test_grade_two_sprain_waits_longer_per_stage() -> None:
    messages, since = return_to_run_plan("grade-two-runner")
    state, alerts = run_core("grade-two-runner", messages,
                             return_to_run_roster("grade-two-runner", 2, since))
    # 11 days minimum per stage for grade II: still on stage 1 on day -5 (5 days in),
    # so the stage-2 walk-run then already went beyond stage 1
    assert state.return_to_run is not None and state.return_to_run.stage == 1
    assert [a.rule for a in alerts].count("return_to_run_progress") == 1  # the start
    assert "return_to_run" in {a.rule for a in alerts}


def test_the_real_stack_s_roster_holds_every_scenario_runner_as_the_core_sees_it() -> None:
    # the integration stack reads tests/integration/roster.yaml: its scenario runners
    # must be exactly roster_for(SCENARIOS), or the stack and the core disagree
    from tests.conftest import ROSTER

    stack = load_roster(ROSTER)
    core = roster_for(SCENARIOS)
    for runner in core.runners:
        assert stack.runner(runner.id) == runner, runner.id
    assert {r.id for r in stack.runners if r.team == "scenario"} == {
        r.id for r in core.runners}
