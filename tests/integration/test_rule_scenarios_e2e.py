"""Every scenario end to end on the real stack: the same alerts as the pure core, every
rule's alert in InfluxDB, and one message per cause in the runner's inbox."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from rules.alerts import Alert
from tests.conftest import read_topic_records, wait_for
from tests.integration.conftest import Pipeline
from tests.integration.test_pipeline_e2e import publish
from tests.scenarios import OVERLOAD_WEEK_MESSAGES, all_messages, roster_for, run_core, scenarios

pytestmark = pytest.mark.integration
SCENARIOS = scenarios()


def test_every_scenario_gives_its_alerts_end_to_end(pipeline: Pipeline) -> None:
    passwords = {s.runner: pipeline.runner(s.runner) for s in SCENARIOS}
    week = next(s for s in SCENARIOS if s.runner.endswith("overload-week"))
    inbox = pipeline.inbox(week.runner, passwords[week.runner])
    core = {s.runner: run_core(s.runner, s.messages, roster_for(SCENARIOS))[1]
            for s in SCENARIOS}
    expected = {r: [a.alert_id for a in alerts] for r, alerts in core.items()}
    try:
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
        # the overload week reaches the runner's phone as one message per cause
        sent = [a.alert_id for a in core[week.runner] if a.to_runner]
        assert len(sent) == OVERLOAD_WEEK_MESSAGES
        messages = wait_for(lambda: len(m := inbox.received()) >= len(sent) and m,
                            timeout=90, what="the overload week's messages")
    finally:
        inbox.close()
    for scenario in SCENARIOS:
        assert sorted(got.get(scenario.runner, [])) == sorted(expected[scenario.runner]), \
            scenario.runner
    control = next(s for s in SCENARIOS if not s.rule)
    assert got.get(control.runner, []) == []
    assert sorted(m["alert_id"] for m in messages) == sorted(sent)
    assert len(core[week.runner]) > len(sent)  # the others were recorded, not sent
    # every rule's own alert is in InfluxDB, sent to the runner or not
    rows = wait_for(lambda: (r := pipeline.influx(
        "SELECT count(alert_id) FROM alert WHERE team = 'scenario' GROUP BY runner, rule"))
        and sum(x["count"] for x in r) >= sum(map(len, expected.values())) and r,
        what="alert points")
    by_rule = {(r["runner"], r["rule"]): r["count"] for r in rows}
    for scenario in SCENARIOS:
        for rule, count in Counter(rule for rule, _ in scenario.expected).items():
            assert by_rule.get((scenario.runner, rule)) == count, (scenario.runner, rule)
