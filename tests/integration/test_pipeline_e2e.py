"""End to end on the real stack: MQTT in, alerts back over MQTT, points in InfluxDB."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from ingest.decoders import InboundMessage
from ingest.publisher import RunnerPublisher
from ingest.routing import decode_message
from ingest.simulator import SimulatedRunner, plan_history, plan_live
from rules.alerts import Alert
from rules.catalogue import load_catalogue
from stream.runner import RunnerState, process_event
from team.roster import load_roster
from tests.conftest import ROSTER, history_end, read_topic_records, wait_for
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration


def publish(pipeline: Pipeline, messages: list[tuple[str, bytes]]) -> None:
    with RunnerPublisher(pipeline.settings) as publisher:
        publisher.publish_all(messages)


def expected_from_pure_core(runner: str, messages: list[tuple[str, bytes]],
                            to_runner_only: bool = False) -> tuple[RunnerState, list[str]]:
    """What the pure step computes for the same messages: the pipeline must agree.

    ``to_runner_only``: only the alerts the runner's inbox gets (one message per cause).
    """
    profile = load_roster(ROSTER).profile(runner, load_catalogue())
    state = RunnerState(runner=runner)
    fired = []
    for topic, payload in messages:
        event = decode_message(InboundMessage(topic, payload, time.time()))
        state, out = process_event(state, event, profile)
        fired += [f"{a.rule}/{a.severity}" for a in out.alerts
                  if a.to_runner or not to_runner_only]
    return state, fired


def pain_report(runner: str, score: int, seq: int, when: str = "after") -> tuple[str, bytes]:
    body = {"seq": seq, "t": time.time() - 60, "score": score, "where": "achilles",
            "when": when}
    return f"runners/{runner}/pain", json.dumps(body).encode()


def test_pain_report_comes_back_as_alert_and_lands_in_influx(pipeline: Pipeline) -> None:
    password = pipeline.runner("it-pain")
    inbox = pipeline.inbox("it-pain", password)
    try:
        publish(pipeline, [pain_report("it-pain", 7, seq=1)])
        alerts = wait_for(inbox.received, timeout=90, what="an alert on runners/it-pain/alerts")
    finally:
        inbox.close()
    alert = alerts[0]
    assert alert["rule"] == "pain_after_run"
    assert alert["severity"] == "warn"
    assert alert["runner"] == "it-pain" and alert["team"] == "testers"
    assert alert["evidence"]["score"] == 7
    assert "information, not a diagnosis" in alert["disclaimer"]
    assert alert["next_step"]
    rows = wait_for(lambda: pipeline.influx(
        "SELECT * FROM alert WHERE runner = 'it-pain'"), what="the alert point in InfluxDB")
    assert [r["alert_id"] for r in rows] == [alert["alert_id"]]
    assert rows[0]["rule"] == "pain_after_run" and rows[0]["team"] == "testers"
    pain = pipeline.influx("SELECT score FROM pain WHERE runner = 'it-pain'")
    assert [r["score"] for r in pain] == [7]


def test_redelivered_report_alerts_once(pipeline: Pipeline) -> None:
    password = pipeline.runner("it-redeliver")
    inbox = pipeline.inbox("it-redeliver", password)
    try:
        message = pain_report("it-redeliver", 8, seq=41)
        publish(pipeline, [message, message])
        publish(pipeline, [message])
        wait_for(inbox.received, timeout=90, what="the first alert")
        # the copies went through the same path right behind it: give them time to show up
        time.sleep(6)
        assert len(inbox.received()) == 1
    finally:
        inbox.close()
    rows = pipeline.influx("SELECT count(score) FROM pain WHERE runner = 'it-redeliver'")
    assert rows[0]["count"] == 1


def test_imbalanced_run_fires_balance_alert_and_writes_windows(pipeline: Pipeline) -> None:
    password = pipeline.runner("it-tilt")
    inbox = pipeline.inbox("it-tilt", password)
    runner = SimulatedRunner("it-tilt", imbalance_pts=3.5, seed=7)
    messages = list(plan_live(runner, time.time() - 3600, minutes=5))
    state, to_phone = expected_from_pure_core("it-tilt", messages, to_runner_only=True)
    _, fired = expected_from_pure_core("it-tilt", messages)

    def tilt_alerts() -> list[Alert]:
        return [a for a in map(Alert.from_bytes, read_topic_records(
            pipeline.settings, pipeline.settings.alerts_topic)) if a.runner == "it-tilt"]

    try:
        publish(pipeline, messages)
        wait_for(lambda: {a.severity for a in tilt_alerts()
                          if a.rule == "gct_balance"} >= {"notice", "warn"},
                 timeout=120, what="gct_balance notice and warn")
        wait_for(lambda: len(inbox.received()) >= len(to_phone), timeout=60,
                 what="the uneven-stride message on the phone")
        time.sleep(3)  # anything sent that should not be would arrive right behind
    finally:
        inbox.close()
    evidence = [a.evidence for a in tilt_alerts() if a.rule == "gct_balance"]
    assert all(e["heavier_side"] == "left" and float(e["gct_balance_pct"]) > 52.2
               for e in evidence if e["threshold"] == 2.2)
    assert sorted(f"{a.rule}/{a.severity}" for a in tilt_alerts()) == sorted(fired)
    # balance and symmetry read the same uneven steps: the phone gets one message
    # listing both, not one per rule
    assert sorted(f"{a['rule']}/{a['severity']}" for a in inbox.received()) == sorted(to_phone)
    assert len(to_phone) < len(fired)
    assert any("Ground contact time was uneven" in a["message"] for a in inbox.received())
    session = next(iter(state.sessions.values()))
    assert session.ended
    # the session point is rewritten as the run goes on; the final one says ended=true
    rows = wait_for(lambda: [r for r in pipeline.influx(
        "SELECT distance_km, steps, ended FROM session WHERE runner = 'it-tilt'")
        if r["ended"]], what="the final session point")
    assert len(rows) == 1
    assert rows[0]["distance_km"] == pytest.approx(session.distance_m / 1000, abs=1e-3)
    assert rows[0]["steps"] == round(session.steps)
    batches = sum(1 for t, _ in messages if t.endswith("/samples"))
    windows = wait_for(lambda: [r for r in pipeline.influx(
        "SELECT last(gct_balance_pct) AS b, count(samples) AS n FROM run_window "
        "WHERE runner = 'it-tilt'") if r["n"] == batches], what=f"{batches} window points")
    assert windows[0]["b"] == pytest.approx(53.5, abs=0.6)


def test_load_spike_fires_load_ratio_and_influx_holds_the_computed_ratio(
        pipeline: Pipeline) -> None:
    password = pipeline.runner("it-spike")
    pipeline.runner("it-steady")
    inbox = pipeline.inbox("it-spike", password)
    today = history_end()
    spike = list(plan_history(SimulatedRunner("it-spike", spike=2.2, seed=11), today, 6))
    steady = list(plan_history(SimulatedRunner("it-steady", seed=12), today, 6))
    try:
        publish(pipeline, spike + steady)
        _, to_phone = expected_from_pure_core("it-spike", spike, to_runner_only=True)
        # the load rules' alerts reach the phone as one message per cause
        wait_for(lambda: len(inbox.received()) >= len(to_phone), timeout=120,
                 what="the overload messages")
    finally:
        inbox.close()
    _, fired_spike = expected_from_pure_core("it-spike", spike)
    _, fired_steady = expected_from_pure_core("it-steady", steady)
    assert "load_ratio/notice" in fired_spike and fired_steady == []
    assert sorted(f"{a['rule']}/{a['severity']}" for a in inbox.received()) == sorted(to_phone)
    assert len(to_phone) < len(fired_spike)
    # every rule's alert is recorded, load_ratio's too, sent to the phone or not
    wait_for(lambda: ("load_ratio", "notice") in {(r["rule"], r["severity"]) for r in
                                                  pipeline.influx(
        "SELECT count(alert_id) FROM alert WHERE runner = 'it-spike' GROUP BY rule, severity")},
        what="it-spike's load_ratio alert point")
    state, _ = expected_from_pure_core("it-spike", spike)
    from stream.load import load_ratio
    from stream.runner import day_loads, day_totals

    profile = load_roster(ROSTER).profile("it-spike", load_catalogue())
    loads = day_loads(day_totals(state, profile), profile)
    last_run_day = max(loads)
    expected = load_ratio(loads, last_run_day, first_day=min(loads)).ratio
    assert expected is not None

    def influx_ratio() -> float | None:
        rows = pipeline.influx("SELECT acwr FROM daily_load WHERE runner = 'it-spike' "
                               "ORDER BY time DESC LIMIT 40")
        local_midnight = datetime(last_run_day.year, last_run_day.month, last_run_day.day,
                                  tzinfo=profile.tz).timestamp() * 1000
        match = [r["acwr"] for r in rows if r["time"] == local_midnight]
        return match[0] if match and match[0] == pytest.approx(expected, abs=1e-3) else None

    wait_for(influx_ratio, timeout=60, what=f"acwr {expected:.4f} for {last_run_day}")
    alerts = pipeline.influx("SELECT count(message) FROM alert WHERE runner = 'it-steady'")
    assert alerts == []


def test_malformed_payload_is_dead_lettered_while_good_traffic_flows(
        pipeline: Pipeline) -> None:
    password = pipeline.runner("it-mixed")
    inbox = pipeline.inbox("it-mixed", password)
    garbage = b'{"seq": 3, "samples": [{"t": "yesterday"}]'
    try:
        publish(pipeline, [("runners/it-mixed/watch/samples", garbage),
                           ("runners/it-mixed/watch/samples", b"\xff\xfe not json"),
                           pain_report("it-mixed", 9, seq=5)])
        wait_for(inbox.received, timeout=90, what="the good report's alert")
    finally:
        inbox.close()

    def letters() -> list[dict[str, object]]:
        records = [json.loads(r) for r in read_topic_records(
            pipeline.settings, pipeline.settings.deadletter_topic)]
        return [r for r in records if r.get("runner") == "it-mixed"]

    found = wait_for(lambda: len(letters()) >= 2 and letters(), what="two dead letters")
    raws = sorted(base64.b64decode(str(r["raw_b64"])) for r in found)
    assert raws == sorted([garbage, b"\xff\xfe not json"])
    for letter in found:
        assert letter["topic"] == "runners/it-mixed/watch/samples"
        assert letter["device"] == "watch" and letter["stage"] == "ingest"
        assert "JSON" in str(letter["reason"]) or "UTF-8" in str(letter["reason"])
    assert all(Path(pipeline.components[n].log_file).exists() for n in pipeline.components)
    assert all(c.alive() for c in pipeline.components.values()), pipeline.logs()
