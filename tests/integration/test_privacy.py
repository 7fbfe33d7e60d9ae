"""`stridewatch export` and `stridewatch forget` on the real stack, and retention per
measurement: a runner with a history goes through the pipeline, is exported (the files
hold what InfluxDB holds), then forgotten (nothing of them is left or comes back, a
publish with their old password is refused, what still arrives is dead-lettered) while
another runner is untouched."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from base.influx_query import InfluxReader
from base.kafka import make_producer
from ingest.decoders import InboundMessage
from ingest.records import partition_for
from ingest.routing import decode_message
from ingest.simulator import SimulatedRunner, plan_history
from stream.metrics import MEASUREMENTS, MetricPoint, encode_points
from stream.outputs.influx import InfluxV1Writer
from stream.outputs.retention import prune_statement
from stridewatch.privacy import ChangelogView, influx_series
from stridewatch.processes import Component
from team.roster import load_roster
from tests.conftest import ROSTER, history_end, new_stack_settings, read_topic_records, wait_for
from tests.integration.conftest import Pipeline, own_pipeline
from tests.integration.test_pipeline_e2e import expected_from_pure_core, pain_report, publish
from tests.integration.test_roster_accounts import puback, stridewatch

pytestmark = pytest.mark.integration

GONE, KEPT = "pv-gone", "pv-kept"


@pytest.fixture(scope="module")
def roster_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = yaml.safe_load(ROSTER.read_text())
    data["runners"] += [{"id": GONE, "name": "Gone", "team": "testers"},
                        {"id": KEPT, "name": "Kept", "team": "testers"}]
    path = tmp_path_factory.mktemp("privacy-roster") / "roster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, roster_file: Path
             ) -> Iterator[Pipeline]:
    """A stack of its own: the worker and the sink are restarted here."""
    with own_pipeline(new_stack_settings(tmp_path_factory, roster_file=roster_file)) as pipe:
        yield pipe


def points(pipeline: Pipeline, measurement: str, runner: str) -> int:
    return len(pipeline.influx(f"SELECT * FROM \"{measurement}\" WHERE \"runner\" = "
                               f"'{runner}'"))


def counts(pipeline: Pipeline, runner: str) -> dict[str, int]:
    return {m: points(pipeline, m, runner) for m in MEASUREMENTS}


def live_state_keys(pipeline: Pipeline, runner: str) -> set[bytes]:
    view = ChangelogView(pipeline.settings, runner)
    asyncio.run(view.refresh())
    return set(view.live())


def send(pipeline: Pipeline, topic: str, value: bytes, key: bytes | None,
         partition: int | None) -> None:
    async def go() -> None:
        producer = make_producer(pipeline.settings)
        await producer.start()
        try:
            await (await producer.send(topic, value, key=key, partition=partition))
        finally:
            await producer.stop()

    asyncio.run(go())


def inject_event(pipeline: Pipeline, runner: str, topic: str, payload: bytes) -> None:
    """An event put on the events topic directly, past the bridge (and the broker's ACL)."""
    event = decode_message(InboundMessage(topic, payload, time.time()))
    send(pipeline, pipeline.settings.events_topic, event.to_bytes(), runner.encode(),
         partition_for(runner, pipeline.settings.kafka_partitions))


def log_count(component: Component, text: str) -> int:
    return component.log_file.read_text(errors="replace").count(text) \
        if component.log_file.exists() else 0


def test_export_matches_influx_then_forget_leaves_nothing_and_refuses_what_comes(
        pipeline: Pipeline, roster_file: Path, tmp_path: Path) -> None:
    settings = pipeline.settings
    passwords = {r: pipeline.runner(r) for r in (GONE, KEPT)}
    today = history_end()
    ended: dict[str, int] = {}
    for runner, seed in ((GONE, 31), (KEPT, 32)):
        messages = [*plan_history(SimulatedRunner(runner, seed=seed), today, 2),
                    pain_report(runner, 7, seq=9001)]
        publish(pipeline, messages)
        state, fired = expected_from_pure_core(runner, messages)
        assert fired, "the pain report must fire an alert"
        ended[runner] = sum(1 for s in state.sessions.values() if s.ended)
        assert ended[runner] >= 2

    def stored(runner: str) -> bool:
        sessions = pipeline.influx(f"SELECT count(distance_km) FROM session WHERE runner = "
                                   f"'{runner}' AND ended = true")
        return (sessions == [{"time": 0, "count": ended[runner]}]
                and points(pipeline, "alert", runner) >= 1
                and points(pipeline, "pain", runner) == 1)

    for runner in (GONE, KEPT):
        wait_for(lambda r=runner: stored(r), timeout=180,  # type: ignore[misc]
                 what=f"{runner}'s sessions and pain alert stored")
    time.sleep(2)  # the last points of the pain report's record
    before = counts(pipeline, GONE)
    kept_before = counts(pipeline, KEPT)
    for measurement in ("session", "daily_load", "run_window", "alert", "pain"):
        assert before[measurement] > 0, measurement
    series_before = influx_series(settings, GONE)
    assert live_state_keys(pipeline, GONE) and live_state_keys(pipeline, KEPT)

    # ---- export: one JSON and one CSV per measurement, counts as InfluxDB's
    out = tmp_path / "export"
    result = stridewatch(settings, "export", GONE, "--out", str(out))
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["runner"] == GONE
    for measurement in MEASUREMENTS:
        rows = json.loads((out / f"{measurement}.json").read_text())
        with (out / f"{measurement}.csv").open(newline="") as handle:
            table = list(csv.DictReader(handle))
        assert len(rows) == len(table) == index["files"][measurement]["rows"] \
            == before[measurement], measurement
        assert all(row["runner"] == GONE for row in rows)
    assert json.loads((out / "roster.json").read_text())["id"] == GONE
    state = json.loads((out / "state.json").read_text())
    assert sum(1 for s in state["sessions"] if s["ended"]) == ended[GONE]
    assert state["pain_notes"] == 1
    assert (out / "index.json").stat().st_mode & 0o077 == 0  # health data: owner only

    # ---- forget
    result = stridewatch(settings, "forget", GONE)
    assert result.returncode == 0, result.stderr + result.stdout
    keys = len(live_state_keys(pipeline, KEPT))  # the kept runner's keys: the same three
    assert f"InfluxDB: {sum(series_before.values())} series dropped" in result.stdout
    assert f"worker state: {keys} keys tombstoned" in result.stdout
    assert "by the worker that owns their partition" in result.stdout
    assert "MQTT: credentials revoked" in result.stdout
    assert f"removed runner {GONE}" in result.stdout
    assert counts(pipeline, GONE) == dict.fromkeys(MEASUREMENTS, 0)
    assert influx_series(settings, GONE) == {}
    assert live_state_keys(pipeline, GONE) == set()
    assert load_roster(roster_file).runner(GONE) is None
    assert puback(settings, GONE, passwords[GONE], f"runners/{GONE}/pain") == -1
    again = stridewatch(settings, "forget", GONE, "--wait", "5")
    assert again.returncode == 0, again.stderr
    assert "InfluxDB: 0 series dropped (none)" in again.stdout
    assert "worker state: 0 keys tombstoned on the changelog (the table held none)" \
        in again.stdout
    assert "MQTT: had no credentials here" in again.stdout
    assert f"runner {GONE} is not in" in again.stdout

    # ---- a restarted worker: the state does not come back, the runner stays forgotten
    worker = pipeline.components["worker"]
    assigned = log_count(worker, "assigned partitions")
    worker.stop()
    worker.start()
    wait_for(lambda: log_count(worker, "assigned partitions") > assigned, timeout=90,
             what="the restarted worker's assignment")
    inject_event(pipeline, GONE, *pain_report(GONE, 8, seq=9100))
    inject_event(pipeline, KEPT, *pain_report(KEPT, 1, seq=9101))

    def forgotten_letters() -> list[dict[str, object]]:
        letters = [json.loads(r) for r in read_topic_records(settings,
                                                             settings.deadletter_topic)]
        return [d for d in letters if d.get("runner") == GONE]

    letters = wait_for(forgotten_letters, timeout=90, what="the forgotten runner's event "
                       "dead-lettered")
    assert len(letters) == 1
    assert letters[0]["reason"] == "runner forgotten" and letters[0]["stage"] == "stream"
    assert json.loads(base64.b64decode(str(letters[0]["raw_b64"])))["runner"] == GONE
    wait_for(lambda: points(pipeline, "pain", KEPT) == 2, timeout=90,
             what="the kept runner's new report processed by the restarted worker")
    assert live_state_keys(pipeline, GONE) == set()
    assert counts(pipeline, GONE) == dict.fromkeys(MEASUREMENTS, 0)

    # ---- a point of the forgotten runner still in the metrics topic is dropped, counted
    sink = pipeline.components["sink"]
    point = MetricPoint.make("pain", {"team": "testers", "runner": GONE, "when": "after"},
                             {"score": 3}, time.time() - 30)
    send(pipeline, settings.metrics_topic, encode_points([point]), None, 0)
    wait_for(lambda: log_count(sink, "dropped 1 points of forgotten runners (1 so far)"),
             timeout=60, what="the sink dropping the forgotten runner's point")
    assert counts(pipeline, GONE) == dict.fromkeys(MEASUREMENTS, 0)

    # ---- the other runner is untouched
    after = counts(pipeline, KEPT)
    assert after == {**kept_before, "pain": kept_before["pain"] + 1}
    assert len(live_state_keys(pipeline, KEPT)) == keys
    assert load_roster(roster_file).runner(KEPT) is not None
    assert puback(settings, KEPT, passwords[KEPT], f"runners/{KEPT}/pain") in (0, 16)


def test_run_windows_kept_shorter_than_the_rest(pipeline: Pipeline) -> None:
    """``influx_retention_by_measurement``: the sink deletes older run windows at start;
    sessions of the same age and recent run windows stay."""
    runner = "pv-retained"
    now = time.time()
    writer = InfluxV1Writer(pipeline.settings)
    try:
        writer.write([
            MetricPoint.make("run_window", {"team": "testers", "runner": runner,
                                            "device": "watch"}, {"samples": 1}, now - days)
            for days in (40 * 86_400, 35 * 86_400, 86_400)] + [
            MetricPoint.make("session", {"team": "testers", "runner": runner,
                                         "sport": "running"}, {"distance_km": 5.0},
                             now - 40 * 86_400)])
    finally:
        writer.close()
    assert points(pipeline, "run_window", runner) == 3
    shorter = pipeline.settings.model_copy(
        update={"influx_retention_by_measurement": {"run_window": "30d"}})
    sink = pipeline.components["sink"]
    sink.stop()
    restarted = Component(shorter, "sink")  # the same log file
    pipeline.components["sink"] = restarted.start()
    wait_for(lambda: points(pipeline, "run_window", runner) == 1, timeout=60,
             what="run windows older than 30 days deleted by the sink")
    assert log_count(restarted, "keeping run_window 30d") == 1
    assert points(pipeline, "session", runner) == 1
    with InfluxReader(pipeline.settings) as reader:
        rows = reader.rows(f"SELECT * FROM run_window WHERE runner = '{runner}'")
    assert [round((now * 1000 - r["time"]) / 86_400_000) for r in rows] == [1]
    shown = stridewatch(shorter, "influx", "retention")
    assert shown.returncode == 0, shown.stderr
    assert "run_window: kept 30 days (older points deleted by the sink)" in shown.stdout
    assert prune_statement("run_window", "30d") == \
        'DELETE FROM "run_window" WHERE time < now() - 30d'
