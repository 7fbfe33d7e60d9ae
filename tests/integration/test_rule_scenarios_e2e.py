"""Every rule's scenario end to end on the real stack: the same alerts as the pure core."""

from __future__ import annotations

from collections import defaultdict

import pytest

from rules.alerts import Alert
from tests.conftest import read_topic_records, wait_for
from tests.integration.conftest import Pipeline
from tests.integration.test_pipeline_e2e import publish
from tests.scenarios import all_messages, scenarios
from tests.unit.test_rule_scenarios import roster_for, run_core

pytestmark = pytest.mark.integration
SCENARIOS = scenarios()


def test_every_rule_fires_once_for_its_runner_end_to_end(pipeline: Pipeline) -> None:
    for scenario in SCENARIOS:
        pipeline.runner(scenario.runner)
    expected = {s.runner: [a.alert_id for a in run_core(
        s.runner, s.messages, roster_for(SCENARIOS))[1]] for s in SCENARIOS}
    publish(pipeline, list(all_messages(SCENARIOS)))

    def arrived() -> dict[str, list[str]]:
        got: dict[str, list[str]] = defaultdict(list)
        for raw in read_topic_records(pipeline.settings, pipeline.settings.alerts_topic):
            alert = Alert.from_bytes(raw)
            if alert.runner in expected:
                got[alert.runner].append(alert.alert_id)
        return got

    got = wait_for(lambda: (g := arrived()) and all(
        len(g.get(r, [])) >= len(ids) for r, ids in expected.items()) and g,
        timeout=240, interval=3, what="every scenario's alerts")
    for scenario in SCENARIOS:
        assert sorted(got.get(scenario.runner, [])) == sorted(expected[scenario.runner]), \
            scenario.runner
    control = next(s for s in SCENARIOS if not s.rule)
    assert got.get(control.runner, []) == []
    rows = wait_for(lambda: pipeline.influx(
        "SELECT count(alert_id) FROM alert WHERE team = 'scenario' GROUP BY runner, rule"),
        what="alert points")
    by_rule = {(r["runner"], r["rule"]): r["count"] for r in rows}
    for scenario in SCENARIOS:
        if scenario.rule:
            assert by_rule.get((scenario.runner, scenario.rule)) == 1, scenario.runner
