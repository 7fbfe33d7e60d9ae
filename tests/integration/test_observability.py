"""Operating the pipeline on the real stack: /healthz, /readyz, Prometheus metrics and logs.

Each test starts a stack and the four processes of its own (each process serving on a
port of its own), sends a known set of messages, and checks that the counters moved by
exactly what was sent, that readiness follows the stack's services, that JSON log lines
parse, and that no log line of the run holds a password, a token or a raw payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from base.kafka import make_producer
from base.settings import Settings
from deploy.stack import LocalStack
from ingest.publisher import RunnerPublisher
from stream.metrics import MetricPoint, decode_points, encode_points
from stridewatch import services
from stridewatch.processes import Component
from tests.conftest import AlertInbox, free_port, new_stack_settings, read_topic_records, wait_for
from tests.integration.test_outputs import Receiver

pytestmark = pytest.mark.integration

RUNNER = "obs-runner"
# secrets this run uses; none may appear in any log line
HOOK_USER, HOOK_TOKEN, HOOK_PATH = "obshook", "HookT0kenQ7w", "PathT0kenZ3"
INFLUX_PASSWORD, INFLUX_TOKEN = "InfluxPassw0rdK9", "InfluxT0kenM4"
# a raw health payload's marker: a device's words, which no log line may repeat
PAYLOAD_MARKER = "HealthMarker8841"
# far beyond the database's retention policy on any date: InfluxDB refuses it
REFUSED_TIME_S = 946_684_800.0  # 2000-01-01T00:00:00Z
PROCESSES = {"bridge": "bridge", "worker": "worker", "sink": "sink", "notify": "notifier"}


def roster_yaml(port: int) -> str:
    url = f"json://{HOOK_USER}:{HOOK_TOKEN}@127.0.0.1:{port}/push/{HOOK_PATH}"
    return f"""\
teams:
  - id: observers
    name: Observers
    tz: UTC
runners:
  - id: {RUNNER}
    name: Observed Runner
    team: observers
    notify: ["{url}"]
"""


class Run:
    """A stack and the four processes, each serving /healthz, /readyz, /metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = LocalStack(settings)
        self.ports = {name: free_port() for name in PROCESSES}
        self.components = {
            name: Component(settings.model_copy(update={"ops_port": port}), name)
            for name, port in self.ports.items()}

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def get(self, name: str, path: str) -> httpx.Response:
        return httpx.get(self.url(name, path), timeout=5)

    def code(self, name: str, path: str) -> int | None:
        try:
            return self.get(name, path).status_code
        except httpx.HTTPError:
            return None

    def metrics(self, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of a process's /metrics: (name, sorted labels) -> value."""
        text = self.get(name, "/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def value(self, name: str, metric: str, **labels: str) -> float:
        return self.metrics(name).get((metric, tuple(sorted(labels.items()))), 0.0)

    def all_ready(self) -> bool:
        return all(self.code(name, "/readyz") == 200 for name in PROCESSES)

    def log_lines(self) -> list[str]:
        return [line for c in self.components.values()
                for line in Path(c.log_file).read_text(errors="replace").splitlines()]

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.log_tail(40)}"
                         for c in self.components.values())


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[Run]:
    run = Run(settings)
    run.stack.up(echo=lambda line: None)
    try:
        for component in run.components.values():
            component.start()
        wait_for(run.all_ready, timeout=120, what="/readyz 200 on all four processes")
        yield run
    except BaseException:
        print(run.logs())
        raise
    finally:
        for component in run.components.values():
            component.stop()
        run.stack.down(echo=lambda line: None)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def settings_for(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver,
                 log_format: str) -> Settings:
    roster = tmp_path_factory.mktemp("roster") / "roster.yaml"
    roster.write_text(roster_yaml(receiver.port))
    # InfluxDB 1.x here runs without authentication and ignores the credentials: they
    # are set so that the log check has them to look for
    return new_stack_settings(
        tmp_path_factory, roster_file=roster, log_format=log_format,
        influx_username="sw-writer", influx_password=SecretStr(INFLUX_PASSWORD),
        influx_token=SecretStr(INFLUX_TOKEN))


def pain(t: float, score: int, seq: int) -> tuple[str, bytes]:
    body = {"seq": seq, "t": t, "score": score, "where": "achilles", "when": "after"}
    return f"runners/{RUNNER}/pain", json.dumps(body).encode()


def send_traffic(run: Run) -> tuple[str, list[tuple[str, bytes]]]:
    """Four pain reports (one above 5/10, which alerts) and one payload that is not
    JSON, each as the runner with their own credentials. Returns the password."""
    password = run.stack.mosquitto.add_runner(RUNNER)
    now = time.time()
    good = [pain(now - 600 + i, score, seq=i + 1) for i, score in enumerate((2, 3, 7, 1))]
    bad = (f"runners/{RUNNER}/watch/samples", f"not json {PAYLOAD_MARKER}".encode())
    with RunnerPublisher(run.settings) as publisher:
        publisher.publish_all([*good, bad])
    return password, [*good, bad]


async def _send_metrics_record(settings: Settings, value: bytes) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.metrics_topic, value, partition=0)
    finally:
        await producer.stop()


def secrets_of(run: Run, runner_password: str) -> dict[str, str]:
    services = json.loads(run.settings.service_secrets_file.read_text())
    found = {f"service password {k}": str(v) for k, v in services.items() if str(v)}
    found.update({"runner password": runner_password, "InfluxDB password": INFLUX_PASSWORD,
                  "InfluxDB token": INFLUX_TOKEN, "Apprise URL password": HOOK_TOKEN,
                  "Apprise URL path token": HOOK_PATH})
    assert len(found) >= 7, found  # both service passwords are among them
    return found


def assert_no_secret_in_logs(run: Run, secrets: dict[str, str],
                             sent: list[tuple[str, bytes]]) -> int:
    for component in run.components.values():
        logged = Path(component.log_file).read_text(errors="replace").splitlines()
        assert len(logged) >= 3, f"{component.name} logged almost nothing: {logged}"
    lines = run.log_lines()
    for what, secret in secrets.items():
        leaked = [line for line in lines if secret in line]
        assert not leaked, f"{what} in the logs: {leaked[:3]}"
    leaked = [line for line in lines if PAYLOAD_MARKER in line
              or any(payload.decode() in line for _, payload in sent)]
    assert not leaked, f"raw payload text in the logs: {leaked[:3]}"
    return len(lines)


def test_metrics_count_what_was_sent_readiness_follows_the_stack_no_secret_logged(
        tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> None:
    settings = settings_for(tmp_path_factory, receiver, "text")
    with running(settings) as run:
        for name, process in PROCESSES.items():
            alive = run.get(name, "/healthz")
            assert alive.status_code == 200 and alive.json()["alive"] is True, name
            ready = run.get(name, "/readyz").json()
            assert ready["ready"] is True and set(ready["checks"].values()) == {"ok"}, ready
            # every counter of the process is there before anything happened
            counted = run.metrics(name)
            assert counted[(f"stridewatch_{process}_records_in_total", ())] == 0, name
            assert run.get(name, "/nothing").status_code == 404

        password, sent = send_traffic(run)
        inbox = AlertInbox(settings, RUNNER, password, f"runners/{RUNNER}/alerts")
        try:
            wait_for(lambda: run.value("notify", "stridewatch_notifier_alert_deliveries_total",
                                       channel="json", outcome="sent") >= 1,
                     timeout=120, what="the alert delivered to the push target")
            # metrics and dead letters settle; anything counted twice would show
            wait_for(lambda: run.value("sink", "stridewatch_sink_points_written_total") > 0
                     and run.value("sink", "stridewatch_sink_consumer_lag",
                                   topic=settings.metrics_topic, partition="0") == 0,
                     timeout=60, what="the sink writing the points")
            time.sleep(3)
            mqtt_alerts = inbox.received()
        finally:
            inbox.close()

        # bridge: every message in, the bad one dead-lettered by its reason
        assert run.value("bridge", "stridewatch_bridge_records_in_total") == len(sent)
        assert run.value("bridge", "stridewatch_bridge_dead_letters_total",
                         reason="not_json") == 1
        assert run.value("bridge", "stridewatch_bridge_mqtt_in_flight") == 0
        bridge_out = run.value("bridge", "stridewatch_bridge_records_out_total")
        assert bridge_out >= 1
        # worker: the bridge's records in, the four events, one alert
        events_records = read_topic_records(settings, settings.events_topic)
        assert run.value("worker", "stridewatch_worker_records_in_total") == bridge_out \
            == len(events_records)
        assert run.value("worker", "stridewatch_worker_events_total") == len(sent) - 1
        alerts = read_topic_records(settings, settings.alerts_topic)
        assert len(alerts) >= 1
        assert run.value("worker", "stridewatch_worker_records_out_total",
                         topic="alerts") == len(alerts)
        assert run.value("worker", "stridewatch_worker_dead_letters_total",
                         reason="not_json") == 0
        # sink: the metric records and their points
        metric_records = read_topic_records(settings, settings.metrics_topic)
        points = sum(len(decode_points(r)) for r in metric_records)
        assert run.value("worker", "stridewatch_worker_records_out_total",
                         topic="metrics") == len(metric_records)
        assert run.value("sink", "stridewatch_sink_records_in_total") == len(metric_records)
        assert run.value("sink", "stridewatch_sink_points_written_total") == points
        assert run.value("sink", "stridewatch_sink_points_refused_total") == 0
        # notifier: each alert read once; what it counts is what arrived
        assert run.value("notify", "stridewatch_notifier_records_in_total") == len(alerts)
        assert run.value("notify", "stridewatch_notifier_alert_deliveries_total",
                         channel="json", outcome="sent") == len(receiver.posts)
        assert run.value("notify", "stridewatch_notifier_alert_deliveries_total",
                         channel="mqtt", outcome="sent") == len(mqtt_alerts) >= 1
        for name in ("worker", "sink", "notify"):
            lags = [v for (metric, _), v in run.metrics(name).items()
                    if metric.endswith("_consumer_lag")]
            assert len(lags) == settings.kafka_partitions, (name, lags)

        # a point InfluxDB refuses: +1 refused, nothing else written
        written = run.value("sink", "stridewatch_sink_points_written_total")
        old = MetricPoint.make("pain", {"runner": RUNNER, "team": "observers"},
                               {"score": 4}, REFUSED_TIME_S)
        asyncio.run(_send_metrics_record(settings, encode_points([old])))
        wait_for(lambda: run.value("sink", "stridewatch_sink_points_refused_total") == 1,
                 timeout=60, what="the refused point counted")
        assert run.value("sink", "stridewatch_sink_records_in_total") == \
            len(metric_records) + 1
        assert run.value("sink", "stridewatch_sink_points_written_total") == written

        # InfluxDB down: the sink is not ready (and says why), the others are
        run.stack.influx.stop()
        try:
            wait_for(lambda: run.code("sink", "/readyz") == 503, timeout=60,
                     what="the sink not ready while InfluxDB is down")
            assert "InfluxDB" in run.get("sink", "/readyz").json()["checks"]["influxdb"]
            assert run.code("sink", "/healthz") == 200
            for name in ("bridge", "worker", "notify"):
                assert run.code(name, "/readyz") == 200, name
        finally:
            run.stack.influx.start()
        wait_for(lambda: run.code("sink", "/readyz") == 200, timeout=60,
                 what="the sink ready again once InfluxDB is back")

        # Kafka down: nobody is ready, everybody is alive
        run.stack.kafka.stop()
        try:
            wait_for(lambda: all(run.code(n, "/readyz") == 503 for n in PROCESSES),
                     timeout=60, what="every process not ready while Kafka is down")
            for name in PROCESSES:
                assert run.code(name, "/healthz") == 200, name
                assert "Kafka" in run.get(name, "/readyz").json()["checks"]["kafka"], name
        finally:
            run.stack.kafka.start()
        wait_for(lambda: run.code("bridge", "/readyz") == 200, timeout=90,
                 what="the bridge ready again once Kafka is back")

        secrets = secrets_of(run, password)
    assert_no_secret_in_logs(run, secrets, sent)


def test_json_logs_parse_name_the_runner_and_hold_no_secret(
        tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> None:
    settings = settings_for(tmp_path_factory, receiver, "json")
    with running(settings) as run:
        password, sent = send_traffic(run)
        wait_for(lambda: run.value("notify", "stridewatch_notifier_alert_deliveries_total",
                                   channel="json", outcome="sent") >= 1,
                 timeout=120, what="the alert delivered to the push target")
        secrets = secrets_of(run, password)
    # stopped: the shutdown lines are in the logs too
    entries = []
    for line in run.log_lines():
        entry = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        assert entry["time"].endswith("Z")
        entries.append(entry)
    assert {e["logger"].split(".")[0] for e in entries} >= {"stridewatch"}
    about_runner = [e for e in entries if e.get("runner") == RUNNER]
    assert any(e["logger"] == "stridewatch.notifier" and "sent alert" in e["message"]
               for e in about_runner), about_runner
    assert any(e["logger"] == "stridewatch.bridge" and e["level"] == "WARNING"
               for e in about_runner), "the dead letter line names its runner"
    assert_no_secret_in_logs(run, secrets, sent)


def test_start_gives_each_process_its_own_endpoint_and_status_shows_it(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = new_stack_settings(tmp_path_factory)
    stack = LocalStack(settings)
    stack.up(echo=lambda line: None)
    try:
        services.start_all(settings, timeout_s=120, echo=lambda line: None)
        statuses = {s.name: s for s in services.status_all(settings, with_lag=False)}
        ports = {name: s.ops_port for name, s in statuses.items()}
        assert None not in ports.values() and len(set(ports.values())) == 4, ports
        for name, port in ports.items():
            assert f"ops: http://127.0.0.1:{port}/healthz" in "\n".join(
                services.status_lines(statuses[name]))
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
            ready = f"http://127.0.0.1:{port}/readyz"
            wait_for(lambda: httpx.get(ready, timeout=5).status_code == 200,  # noqa: B023
                     timeout=60, what=f"{name} ready")
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert f"stridewatch_{PROCESSES[name]}_records_in_total 0.0" in text, name
    finally:
        services.stop_all(settings, echo=lambda line: None)
        stack.down(echo=lambda line: None)
