"""``stridewatch start``, ``status``, ``stop`` and ``sink replay`` as a user runs them: the
real commands, in subprocesses, against a stack of their own (own ports, own data dir).

Only ``start`` gets the stack's settings in its environment; every later command gets
nothing but the data dir, so they prove the recorded settings. The tests run in file
order on one started pipeline: start → a record through it → replay → refused points →
stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from base.settings import Settings
from deploy.services import _port_free
from deploy.stack import LocalStack
from ingest.publisher import RunnerPublisher
from ingest.simulator import SimulatedRunner, plan_history
from stream.metrics import MetricPoint, encode_points
from stridewatch import services
from tests.conftest import ROSTER, history_end, new_stack_settings, wait_for
from tests.integration.conftest import Pipeline
from tests.integration.test_pipeline_e2e import pain_report

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DB = "sw_services"


def start_env(settings: Settings) -> dict[str, str]:
    """What a user exports once, for ``start``: the stack's ports and names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDEWATCH_")}
    env.update({"STRIDEWATCH_DATA_DIR": str(settings.data_dir),
                "STRIDEWATCH_MQTT_PORT": str(settings.mqtt_port),
                "STRIDEWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "STRIDEWATCH_INFLUX_URL": settings.influx_url,
                "STRIDEWATCH_INFLUX_RPC_PORT": str(settings.influx_rpc_port),
                "STRIDEWATCH_INFLUX_DB": settings.influx_db,
                "STRIDEWATCH_INFLUX_FLUSH_S": str(settings.influx_flush_s),
                "STRIDEWATCH_TOPIC_PREFIX": settings.topic_prefix})
    return env


def later_env(settings: Settings) -> dict[str, str]:
    """What every later command gets: the data dir only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDEWATCH_")}
    env["STRIDEWATCH_DATA_DIR"] = str(settings.data_dir)
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stridewatch.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def status_of(settings: Settings) -> tuple[int, str]:
    result = cli(later_env(settings), "status")
    return result.returncode, result.stdout + result.stderr


class Started:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pipe = Pipeline(settings, LocalStack(settings))
        self.start_output = ""

    def influx(self, query: str) -> list[dict[str, object]]:
        return self.pipe.influx(query)

    def drained(self) -> bool:
        """Every consumer group has committed everything (lag 0) twice in a row."""
        for _ in range(2):
            if any(s.lag != 0 for s in services.status_all(self.settings)
                   if services.consumes(self.settings, s.name)):
                return False
            time.sleep(1.0)
        return True


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    settings = new_stack_settings(tmp_path_factory, influx_db=DB, topic_prefix="sw-svc")
    here = Started(settings)
    try:
        result = cli(start_env(settings), "start", "--roster", str(ROSTER))
        here.start_output = result.stdout + result.stderr
        assert result.returncode == 0, here.start_output
        yield here
    finally:
        cli(later_env(settings), "stop", "--stack", timeout=120)
        LocalStack(settings).down(echo=lambda line: None)  # whatever a failure left behind


# ------------------------------------------------------------------------------ start
def test_start_runs_every_process_healthy_and_records_its_settings(started: Started) -> None:
    settings = started.settings
    out = started.start_output
    for name in services.NAMES:
        assert re.search(rf"^{name} +started \(pid \d+\), log: .*/logs/{name}\.log$", out,
                         re.M), out
    assert f"Logs: {settings.data_dir.resolve() / 'logs'}" in out
    recorded = json.loads((settings.data_dir / "started-settings.json").read_text())
    assert recorded["roster_file"] == str(ROSTER.resolve())
    assert recorded["mqtt_port"] == settings.mqtt_port and recorded["influx_db"] == DB
    secrets = json.loads(settings.service_secrets_file.read_text())
    text = (settings.data_dir / "started-settings.json").read_text()
    assert secrets and not any(password in text for password in secrets.values())

    # a later command finds the roster without anything exported but the data dir
    validated = cli(later_env(settings), "roster", "validate")
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.startswith(f"{ROSTER.resolve()}: ")

    code, out = status_of(settings)
    assert code == 0, out
    for name in services.NAMES:
        assert re.search(rf"^{name} +running, healthy +pid \d+ +up \d+m\d\ds", out, re.M), out
    for name, topic in (("worker", "sw-svc.events"), ("sink", "sw-svc.metrics"),
                        ("notify", "sw-svc.alerts")):
        assert re.search(rf"^{name} .* lag \d+ \({re.escape(topic)}\)$", out, re.M), out

    again = cli(later_env(settings), "start")
    assert again.returncode == 0, again.stderr
    for name in services.NAMES:
        assert re.search(rf"^{name} +already running \(pid \d+\)$", again.stdout, re.M)
    assert "pipeline was already running; healthy" in again.stdout

    # the worker said at once what it consumes, then its partitions and a first report
    log = (settings.data_dir / "logs" / "worker.log").read_text()
    assert "worker sw-svc consuming sw-svc.events as group sw-svc" in log
    assert "assigned partitions [0, 1, 2, 3] of sw-svc.events (group sw-svc)" in log
    assert "processed 0 records" in log
    assert all(password not in log for password in secrets.values())


# ------------------------------------------------------------------------------ a record
def test_a_record_through_the_running_services_reaches_influxdb_and_the_phone(
        started: Started) -> None:
    pipe = started.pipe
    password = pipe.runner("it-pain")
    inbox = pipe.inbox("it-pain", password)
    try:
        with RunnerPublisher(started.settings) as publisher:
            publisher.publish_all([pain_report("it-pain", 7, seq=1)])
        alerts = wait_for(inbox.received, timeout=120, what="the alert on the phone topic")
    finally:
        inbox.close()
    assert alerts[0]["rule"] == "pain_after_run"
    assert "information, not a diagnosis" in alerts[0]["disclaimer"]
    rows = wait_for(lambda: started.influx("SELECT score FROM pain WHERE runner = 'it-pain'"),
                    timeout=60, what="the pain point in InfluxDB")
    assert [r["score"] for r in rows] == [7]
    # the status files count it too (refreshed every 2 s)
    wait_for(lambda: services.process_status(started.settings, "bridge").counters.get(
        "delivered", 0) >= 1, timeout=20, what="the bridge's count")
    wait_for(lambda: services.process_status(started.settings, "worker").counters.get(
        "alerts", 0) >= 1, timeout=20, what="the worker's count")


# ------------------------------------------------------------------------------ replay
def daily_load(started: Started, runner: str) -> dict[object, tuple[object, object]]:
    return {r["time"]: (r["load"], r["distance_km"]) for r in started.influx(
        f"SELECT load, distance_km FROM daily_load WHERE runner = '{runner}'")}


def offsets_since(settings: Settings, since_ms: int) -> str:
    """What ``--since`` should set, found by reading the whole metrics topic."""
    from aiokafka.structs import TopicPartition

    from base.kafka import high_watermarks, make_consumer

    async def scan() -> dict[int, int]:
        marks = await high_watermarks(settings, settings.metrics_topic)
        consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
        await consumer.start()
        try:
            first = dict(marks)
            for p in range(settings.kafka_partitions):
                tp = TopicPartition(settings.metrics_topic, p)
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                while await consumer.position(tp) < marks[p]:
                    for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                        if record.timestamp >= since_ms:
                            first[p] = min(first[p], record.offset)
            return first
        finally:
            await consumer.stop()

    return ", ".join(f"{p}@{o}" for p, o in sorted(asyncio.run(scan()).items()))


def test_sink_replay_rewrites_the_points_and_the_daily_load_stays_the_same(
        started: Started) -> None:
    settings = started.settings
    runner = "it-steady"
    started.pipe.runner(runner)
    messages = list(plan_history(SimulatedRunner(runner, seed=41), history_end(), 2))
    history_from_ms = int(time.time() * 1000)  # the earlier test's records are older
    with RunnerPublisher(settings) as publisher:
        publisher.publish_all(messages)
    wait_for(started.drained, timeout=180, what="every group to catch up")
    before = daily_load(started, runner)
    run_days = [day for day, (load, _) in before.items() if load]
    assert len(run_days) >= 4, before

    running = cli(later_env(settings), "sink", "replay", "--from-start")
    assert running.returncode != 0
    assert "the sink is running" in running.stderr and "stridewatch stop" in running.stderr

    stopped = cli(later_env(settings), "stop")
    assert stopped.returncode == 0, stopped.stderr
    # what InfluxDB holds is gone (as after a retention change): only a replay brings it back
    started.influx("DROP MEASUREMENT daily_load")
    assert daily_load(started, runner) == {}
    # a time after every record: nothing to write again (record times are Kafka's)
    later = datetime.fromtimestamp(time.time() + 3600, UTC).strftime("%Y-%m-%dT%H:%M")
    none = cli(later_env(settings), "sink", "replay", "--since", later)
    assert none.returncode == 0, none.stderr
    assert ": 0 records of metric points will be written again" in none.stdout, none.stdout
    # from the history on: the earlier test's records stay behind
    since = datetime.fromtimestamp(history_from_ms / 1000, UTC).isoformat()
    middle = cli(later_env(settings), "sink", "replay", "--since", since)
    assert middle.returncode == 0, middle.stderr
    assert f"now at {offsets_since(settings, history_from_ms)}:" in middle.stdout
    some = cli(later_env(settings), "sink", "replay", "--since", "1d")
    assert some.returncode == 0, some.stderr
    replay = cli(later_env(settings), "sink", "replay", "--from-start")
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.split(" now at ")[1] == some.stdout.split(" now at ")[1], (
        "every record is younger than a day: --since 1d is --from-start")
    assert replay.stdout.split(" now at ")[1] != middle.stdout.split(" now at ")[1]
    pending = int(re.search(r": (\d+) records of metric points will be written again",
                            replay.stdout).group(1))  # type: ignore[union-attr]
    assert pending > 0, replay.stdout

    restarted = cli(later_env(settings), "start")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    wait_for(started.drained, timeout=180, what="the sink to write the replayed points")
    assert daily_load(started, runner) == before  # the same points, not doubled
    worker = wait_for(lambda: (s := services.process_status(settings, "worker")).counters
                      and s, what="the worker's first report")
    sink = services.process_status(settings, "sink")
    # the worker read nothing again (its group and load state are untouched); the sink did
    assert worker.counters.get("records") == 0, worker
    assert int(sink.counters["written"]) >= len(before), sink


# ------------------------------------------------------------------------------ refused
def probe_points(runner: str, times_s: list[float]) -> list[MetricPoint]:
    return [MetricPoint.make("run_window", {"team": "testers", "runner": runner,
                                            "device": "probe"},
                             {"samples": 1, "cadence_spm": 170.0 + i}, t)
            for i, t in enumerate(times_s)]


def produce(settings: Settings, records: list[list[MetricPoint]]) -> None:
    """Put metric records on the metrics topic, as the worker does."""
    from base.kafka import make_producer

    async def send() -> None:
        producer = make_producer(settings)
        await producer.start()
        try:
            for points in records:
                await producer.send_and_wait(settings.metrics_topic, encode_points(points))
        finally:
            await producer.stop()

    asyncio.run(send())


def test_points_beyond_the_retention_policy_are_counted_as_influxdb_refused_them(
        started: Started) -> None:
    settings = started.settings
    # the operator shortens the retention: older points are refused from now on
    started.influx('ALTER RETENTION POLICY "stridewatch" ON "sw_services" DURATION 1h '
                   "SHARD DURATION 1h")
    now = time.time()
    # 60 days back, where no shard of the earlier points is (InfluxDB 1.x still writes into
    # a shard that exists, whatever the policy's new duration)
    old = [now - 60 * 86400 - 60 * i for i in range(7)]
    new = [now - 60 - i for i in range(5)]
    sent = probe_points("it-probe", old + new)

    # in three records, mixing refused and accepted points
    produce(settings, [sent[:3], sent[3:9], sent[9:]])
    wait_for(started.drained, timeout=120, what="the sink to write the probe points")
    stored = started.influx("SELECT cadence_spm FROM run_window WHERE runner = 'it-probe'")
    refused_by_influx = len(sent) - len(stored)
    assert len(stored) == len(new)  # InfluxDB kept what is inside the hour

    # shown by `stack status` and by `status`, from the sink's own count
    shown = cli(later_env(settings), "stack", "status")
    line = re.search(r"^sink: (\d+) points refused by InfluxDB since "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(last: (.+)\)$", shown.stdout, re.M)
    assert line is not None, shown.stdout
    assert int(line.group(1)) == refused_by_influx
    assert line.group(2) == "points beyond retention policy"
    code, out = status_of(settings)
    assert code == 0, out
    assert f"{refused_by_influx} points refused by InfluxDB since" in out
    sink_log = (settings.data_dir / "logs" / "sink.log").read_text()
    assert "points beyond retention policy" in sink_log

    # a field type conflict in the same batch as points beyond the retention: InfluxDB
    # counts only the conflict in its answer, the sink still counts every refused point
    mixed = [*probe_points("it-probe2", [now - 61 * 86400 - i for i in range(3)]),
             *(MetricPoint.make("run_window", {"team": "testers", "runner": "it-probe2",
                                               "device": "probe"},
                                {"samples": 1, "cadence_spm": "not a number"}, now - 30 - i)
               for i in range(2)),
             *probe_points("it-probe2", [now - 20 - i for i in range(3)])]
    produce(settings, [mixed])
    wait_for(started.drained, timeout=120, what="the sink to write the mixed batch")
    stored2 = started.influx("SELECT * FROM run_window WHERE runner = 'it-probe2'")
    assert len(stored2) == 3
    refused_by_influx += len(mixed) - len(stored2)
    assert refused_by_influx == 7 + 5
    assert services.refused_line(services.sink_counters(settings)).startswith(  # type: ignore[union-attr]
        f"{refused_by_influx} points refused by InfluxDB since")
    assert "field type conflict" in (settings.data_dir / "logs" / "sink.log").read_text()


# ------------------------------------------------------------------------------ stop
def test_stop_leaves_no_process_behind(started: Started) -> None:
    settings = started.settings
    groups = services.group_pids(settings)
    assert set(groups) == set(services.NAMES)
    pids = [pid for group in groups.values() for pid in group]
    stopped = cli(later_env(settings), "stop")
    assert stopped.returncode == 0, stopped.stderr
    for name in services.NAMES:
        assert re.search(rf"^{name} +stopped$", stopped.stdout, re.M), stopped.stdout
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()
            and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"] == []
    assert not list((settings.data_dir / "run").glob("*.pid"))
    code, out = status_of(settings)
    assert code == 1
    for name in services.NAMES:
        assert re.search(rf"^{name} +stopped", out, re.M), out
    # the stack is left running by default
    assert all(s.healthy for s in LocalStack(settings).status())


def test_a_process_that_fails_at_start_is_named_with_its_log_and_nothing_is_left(
        started: Started) -> None:
    settings = started.settings
    env = {**later_env(settings), "STRIDEWATCH_RULES_DIR": str(settings.data_dir / "none")}
    failed = cli(env, "start")
    assert failed.returncode != 0
    assert "worker exited while starting; its log (" in failed.stderr, failed.stderr
    assert "no rule files (*.yaml)" in failed.stderr  # the end of the worker's log
    # what it had started is stopped again
    assert services.group_pids(settings) == {}
    assert not list((settings.data_dir / "run").glob("*.pid"))


def test_stop_with_stack_stops_the_stack_and_frees_its_ports(started: Started) -> None:
    settings = started.settings
    down = cli(later_env(settings), "stop", "--stack")
    assert down.returncode == 0, down.stderr
    host = "127.0.0.1"
    assert _port_free(host, settings.mqtt_port)
    assert _port_free(host, int(settings.kafka_bootstrap.rsplit(":", 1)[1]))
    assert _port_free(host, int(settings.influx_url.rsplit(":", 1)[1]))
