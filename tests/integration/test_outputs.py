"""Outputs against real services: InfluxDB 1.x, VictoriaMetrics (the v2 write API),
Kafka (Tansu), Mosquitto, and phones stood in for by a local HTTP receiver.

Most tests share one stack and pipeline of this module (its roster points the runners'
and coaches' Apprise URLs at the receiver); the outage test stops and restarts that
stack's InfluxDB, so it runs last and never touches the shared session stack.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from base.kafka import make_producer
from base.settings import Settings
from deploy.stack import Tansu, VictoriaMetrics, ensure_packages
from ingest.decoders import InboundMessage
from ingest.publisher import RunnerPublisher
from ingest.routing import decode_message
from ingest.simulator import SimulatedRunner, plan_history, plan_live, plan_run
from rules.alerts import Alert
from rules.catalogue import load_catalogue
from stream.metrics import MetricPoint
from stream.outputs.influx import InfluxV1Writer
from stream.outputs.notifier import Notifier
from stream.outputs.sink import Backoff, write_with_retry
from stream.runner import RunnerState, day_start_s, day_totals, local_day, process_event
from stridewatch.processes import Component
from team.roster import RunnerProfile, load_roster
from tests.conftest import (
    ROSTER,
    free_port,
    history_end,
    new_stack_settings,
    read_topic_records,
    wait_for,
)
from tests.integration.conftest import Pipeline, own_pipeline

pytestmark = pytest.mark.integration

DISCLAIMER_LINE = "information, not a diagnosis"
SECRET_USER, SECRET_PASSWORD, SECRET_PATH = "hookuser", "S3cretT0kenXyz", "PathT0ken42"
OUTAGE_S = 120.0  # the issue says two minutes
OUTAGE_RUNNERS = ("out-a", "out-b", "out-c")


# --------------------------------------------------------------------------- receiver


class Receiver:
    """Stands in for phone push services: records every POST; paths under /fail get 500."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                with receiver.lock:
                    receiver.posts.append({"path": self.path, "body": body,
                                           "auth": self.headers.get("Authorization")})
                status = 500 if self.path.startswith("/fail") else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def to(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.posts if p["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def roster_yaml(port: int) -> str:
    base = f"127.0.0.1:{port}"
    return f"""\
teams:
  - id: phones
    name: Phone Testers
    tz: Europe/Oslo
    coaches:
      - {{id: coachy, name: Coachy, notify: ["json://{base}/coach"]}}
  - id: flaky
    name: Flaky Club
    coaches:
      - {{id: coachf, name: Coach F, notify: ["json://{base}/fail/coach"]}}
  - id: outage
    name: Outage Testers
    tz: UTC
runners:
  - {{id: ph-runner, name: Phone Runner, team: phones, notify: ["json://{base}/runner"]}}
  - id: ph-flaky
    name: Flaky Runner
    team: flaky
    notify: ["json://{SECRET_USER}:{SECRET_PASSWORD}@{base}/ok/{SECRET_PATH}"]
  - {{id: out-a, name: Outage A, team: outage}}
  - {{id: out-b, name: Outage B, team: outage}}
  - {{id: out-c, name: Outage C, team: outage}}
"""



# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Pipeline]:
    """A stack and pipeline of this module, with a roster whose targets are the receiver."""
    roster = tmp_path_factory.mktemp("roster") / "roster.yaml"
    roster.write_text(roster_yaml(receiver.port))
    settings = new_stack_settings(tmp_path_factory, roster_file=roster)
    with own_pipeline(settings) as pipe:
        yield pipe


# --------------------------------------------------------------------------- helpers


def profile_for(roster: Path, runner: str) -> RunnerProfile:
    return load_roster(roster).profile(runner, load_catalogue())


def pure_core(profile: RunnerProfile, messages: list[tuple[str, bytes]]
              ) -> tuple[RunnerState, list[Alert], list[MetricPoint]]:
    """What the pure step computes for these messages, in order."""
    state = RunnerState(runner=profile.runner)
    alerts: list[Alert] = []
    points: list[MetricPoint] = []
    for topic, payload in messages:
        event = decode_message(InboundMessage(topic, payload, time.time()))
        state, out = process_event(state, event, profile)
        alerts += out.alerts
        points += out.points
    return state, alerts, points


def pain(runner: str, t: float, score: int, seq: int) -> tuple[str, bytes]:
    body = {"seq": seq, "t": t, "score": score, "where": "achilles", "when": "after"}
    return f"runners/{runner}/pain", json.dumps(body).encode()


def log_text(component: Component) -> str:
    return Path(component.log_file).read_text(errors="replace")


def influx_rows(writer: InfluxV1Writer, query: str) -> list[dict[str, Any]]:
    rows = []
    for result in writer.query(query).get("results", []):
        assert "error" not in result, result["error"]
        for series in result.get("series", []):
            for values in series["values"]:
                rows.append({**(series.get("tags") or {}),
                             **dict(zip(series["columns"], values, strict=True))})
    return rows


def identity(point: MetricPoint) -> tuple[str, tuple[tuple[str, str], ...], int]:
    return point.measurement, point.tags, point.time_ms


# one field every point of a measurement has: counting it counts the points
COUNTED = {"run_window": "samples", "session": "distance_km", "daily_load": "load",
           "alert": "alert_id", "pain": "score"}


# --------------------------------------------------------------------------- phones


def alert_posts(receiver: Receiver, path: str, runner: str) -> list[dict[str, Any]]:
    return [p for p in receiver.to(path) if runner in str(p["body"].get("title", ""))]


def test_alert_reaches_runner_and_coach_phones_exactly_once(own: Pipeline,
                                                            receiver: Receiver) -> None:
    runner = "ph-runner"
    password = own.runner(runner)
    inbox = own.inbox(runner, password)
    try:
        with RunnerPublisher(own.settings) as publisher:
            publisher.publish_all([pain(runner, time.time() - 120, 7, seq=1)])
        wait_for(lambda: alert_posts(receiver, "/runner", runner)
                 and alert_posts(receiver, "/coach", runner) and inbox.received(),
                 timeout=120, what="the alert on the runner's and the coach's phone and MQTT")
        time.sleep(3)  # anything sent twice would arrive right behind
        messages = inbox.received()
    finally:
        inbox.close()
    assert len(messages) == 1
    alert = Alert.model_validate(messages[0])
    assert alert.rule == "pain_after_run" and alert.severity == "warn"
    for path in ("/runner", "/coach"):
        posts = alert_posts(receiver, path, runner)
        assert len(posts) == 1, posts
        body = posts[0]["body"]
        assert alert.title in body["title"] and "[warn]" in body["title"]
        assert body["type"] == "warning"
        assert alert.message in body["message"]
        assert f"Next step: {alert.next_step}" in body["message"]
        assert DISCLAIMER_LINE in body["message"]
        assert "score 7" in body["message"]

    # a replay of the alerts topic after a restart sends nothing again (sent-log)
    notify = own.components["notify"]
    notify.stop()

    async def replay() -> None:
        producer = make_producer(own.settings)
        await producer.start()
        try:
            await producer.send_and_wait(own.settings.alerts_topic, alert.to_bytes(),
                                         key=runner.encode())
        finally:
            await producer.stop()

    asyncio.run(replay())
    inbox = own.inbox(runner, password)
    try:
        notify.start()
        skipped = f"alert {alert.alert_id} already sent to"
        wait_for(lambda: log_text(notify).count(skipped) >= 3, timeout=90,
                 what="the restarted notifier skipping the replayed alert for all 3 targets")
        time.sleep(1)
        assert inbox.received() == []
    finally:
        inbox.close()
    assert len(alert_posts(receiver, "/runner", runner)) == 1
    assert len(alert_posts(receiver, "/coach", runner)) == 1
    assert log_text(notify).count(f"sent alert {alert.alert_id} ") == 3  # mqtt + 2 phones


def test_failing_target_is_retried_then_kept_others_delivered_no_secret_logged(
        own: Pipeline, receiver: Receiver) -> None:
    runner = "ph-flaky"
    own.runner(runner)
    with RunnerPublisher(own.settings) as publisher:
        publisher.publish_all([pain(runner, time.time() - 120, 9, seq=1)])
    notify = own.components["notify"]
    wait_for(lambda: "after 4 failed attempts: retried with backoff" in log_text(notify),
             timeout=120, what="the notifier keeping the alert for the failing coach target")
    ok = receiver.to(f"/ok/{SECRET_PATH}")
    assert len(ok) == 1, "the runner's target is delivered although the coach's fails"
    expected_auth = base64.b64encode(f"{SECRET_USER}:{SECRET_PASSWORD}".encode()).decode()
    assert ok[0]["auth"] == f"Basic {expected_auth}", "the URL's credentials were used"
    assert DISCLAIMER_LINE in ok[0]["body"]["message"]
    # four attempts at once, then later tries (the first after notifier_retry_first_s)
    assert len(receiver.to("/fail/coach")) == 4, "four attempts on the failing target"
    assert "gave up sending alert" not in log_text(notify)
    text = log_text(notify)
    assert "attempt 4/4" in text and "(coach coachf," in text
    for secret in (SECRET_USER, SECRET_PASSWORD, SECRET_PATH):
        assert secret not in text
    data_dir = own.settings.data_dir / "notifier"
    for path in data_dir.iterdir():
        assert SECRET_PASSWORD.encode() not in path.read_bytes(), path


def test_in_process_notifier_scrubs_debug_logs_rate_limits_and_dedups(
        own: Pipeline, receiver: Receiver, caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    # a sent-log of its own: the pipeline's notifier already used this hour's budget
    settings = own.settings.model_copy(update={
        "data_dir": tmp_path,
        "notifier_password": SecretStr(own.stack.mosquitto.service_password("notifier"))})
    notifier = Notifier(settings, per_target_per_hour=1, attempts=2, retry_delay_s=0.05)
    try:
        def alert(n: int, severity: str = "warn") -> Alert:
            return Alert(alert_id=f"test-{time.time_ns()}-{n}", runner="ph-flaky",
                         team="flaky", rule="pain_after_run", severity=severity,
                         title=f"Test alert {n}", message="m", next_step="s",
                         evidence={"score": 9.0}, source="test", fired_at=time.time())

        before = len(receiver.to(f"/ok/{SECRET_PATH}"))
        first = alert(1)
        deliveries = notifier.deliver(first)
        failing_before = len(receiver.to("/fail/coach"))
        assert [d.outcome for d in deliveries] == ["sent", "sent", "pending"]
        assert [d.target.split(" (")[0] for d in deliveries] == [
            "mqtt runners/ph-flaky/alerts", "json://…", "json://…"]
        assert deliveries[2].attempts == 2 and "500" in deliveries[2].detail
        assert [d.outcome for d in notifier.deliver(first)] == ["duplicate", "duplicate",
                                                                 "pending"]
        # one per hour per target: the next warn is held back from the phone that got one
        # (not from MQTT); the failing target has one waiting, so the new one queues
        second = [d.outcome for d in notifier.deliver(alert(2))]
        assert second == ["sent", "rate_limited", "pending"]
        third = [d.outcome for d in notifier.deliver(alert(3, "critical"))]
        assert third == ["sent", "sent", "pending"], "critical alerts pass the limit"
        assert len(receiver.to(f"/ok/{SECRET_PATH}")) == before + 2
        assert len(receiver.to("/fail/coach")) == failing_before, "queued, not tried"
        assert notifier.sent_log.pending_count() == 3
        # a retry pass tries the target's oldest alert once and leaves the others waiting
        retried = notifier.retry_due(time.time() + settings.notifier_retry_first_s)
        assert [d.outcome for d in retried] == ["pending"]
        assert len(receiver.to("/fail/coach")) == failing_before + 1
        # past the retry window the kept alerts are given up, each logged
        late = time.time() + settings.notifier_retry_for_s + 10 * settings.notifier_retry_max_s
        given_up = [notifier.retry_due(late) for _ in range(3)]
        assert [d.outcome for pass_ in given_up for d in pass_] == ["gave_up"] * 3
        assert notifier.sent_log.pending_count() == 0
    finally:
        notifier.close()
    text = caplog.text
    assert "JSON POST URL: http://127.0.0.1" in text, "Apprise's debug log was captured"
    assert "/ok/***" in text, "the secret path was blanked where Apprise logged it"
    for secret in (SECRET_USER, SECRET_PASSWORD, SECRET_PATH):
        assert secret not in text


# --------------------------------------------------------------------------- InfluxDB 1.x


def test_points_written_twice_do_not_duplicate_in_influxdb_1x(own: Pipeline) -> None:
    settings = own.settings.model_copy(update={"influx_db": "sw_idempotent"})
    profile = profile_for(ROSTER, "it-idem")
    runner = SimulatedRunner("it-idem", imbalance_pts=3.0, pain_after=7, seed=4)
    messages = [*plan_history(runner, history_end(), 2),
                *plan_live(runner, time.time() - 3 * 3600, minutes=3)]
    _, alerts, points = pure_core(profile, messages)
    distinct = {identity(p): p for p in points}  # the last write of each point wins
    expected = {m: sum(1 for k in distinct if k[0] == m) for m in COUNTED}
    assert all(expected.values()) and alerts
    assert len(points) > len(distinct), "the scenario rewrites points (sessions, days)"
    writer = InfluxV1Writer(settings)
    try:
        writer.prepare()

        def counts() -> dict[str, int]:
            out = {}
            for measurement, field in COUNTED.items():
                rows = influx_rows(writer, f'SELECT count("{field}") FROM "{measurement}"')
                out[measurement] = rows[0]["count"] if rows else 0
            return out

        for start in range(0, len(points), 500):
            writer.write(points[start:start + 500])
        first = counts()
        assert first == expected
        shuffled = list(points)
        random.Random(1).shuffle(shuffled)
        result = asyncio.run(write_with_retry(writer, shuffled, asyncio.Event(),
                                              Backoff(initial_s=0.1)))
        assert result.done and result.refused == 0
        writer.write(points)  # in order again: the newest version of each point last
        assert counts() == first
        sessions = influx_rows(writer, "SELECT distance_km, ended FROM session")
        finals = [p for k, p in distinct.items() if k[0] == "session"]
        assert sorted(r["distance_km"] for r in sessions) == sorted(
            dict(p.fields)["distance_km"] for p in finals)
        assert all(r["ended"] for r in sessions)
    finally:
        with contextlib.suppress(httpx.HTTPError):
            writer.query('DROP DATABASE "sw_idempotent"')
        writer.close()


def test_points_influxdb_refuses_are_skipped_alone(own: Pipeline,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """InfluxDB 1.x refuses a whole request whose points disagree on a field's type, and
    writes the rest of one whose points disagree with what is stored ("partial write").
    Either way exactly the refused points are skipped and logged."""
    settings = own.settings.model_copy(update={"influx_db": "sw_refused"})

    def point(i: int, samples: int | float | str) -> MetricPoint:
        return MetricPoint.make("run_window", {"team": "t", "runner": "it-ref", "device": "w"},
                                {"samples": samples, "cadence_spm": 170.0},
                                time.time() - 600 + i)

    writer = InfluxV1Writer(settings)
    try:
        writer.prepare()
        # 1. a fresh database, one batch with integer and float "samples": all refused
        batch = [*(point(i, 3) for i in range(20)), point(20, 3.5),
                 *(point(i, 3) for i in range(21, 41))]
        result = asyncio.run(write_with_retry(writer, batch, asyncio.Event(),
                                              Backoff(initial_s=0.1)))
        assert (result.done, result.written, result.refused, result.failures) == (
            True, 40, 1, 0)
        assert 2 < result.attempts <= 2 * 6 + 1, "bisected, not one request per point"
        # 2. a string where integers are stored: InfluxDB writes the others itself, but
        # its count leaves out what it drops for other reasons, so the batch is bisected
        # (rewriting what landed changes nothing) until the refused point is alone
        result = asyncio.run(write_with_retry(
            writer, [point(100 + i, "three" if i == 5 else 3) for i in range(10)],
            asyncio.Event()))
        assert (result.written, result.refused) == (9, 1)
        assert 1 < result.attempts <= 2 * 4 + 1
        rows = influx_rows(writer, 'SELECT count("samples") FROM "run_window"')
        assert rows[0]["count"] == 49
    finally:
        with contextlib.suppress(httpx.HTTPError):
            writer.query('DROP DATABASE "sw_refused"')
        writer.close()
    assert "splitting the batch of 41" in caplog.text
    assert "is type float, already exists as type integer dropped=1" in caplog.text


# --------------------------------------------------------------------------- v2 write API


@pytest.fixture(scope="module")
def v2_stack(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Settings, VictoriaMetrics]]:
    """Kafka (Tansu) and VictoriaMetrics of their own; settings pointing the v2 writer at it."""
    ensure_packages(VictoriaMetrics.binaries, echo=lambda line: None)
    settings = new_stack_settings(tmp_path_factory, influx_api="v2",
                                  influx_url=f"http://127.0.0.1:{free_port()}",
                                  influx_token="sw-test-token", influx_bucket="stridewatch")
    kafka, vm = Tansu(settings), VictoriaMetrics(settings)
    kafka.start()
    try:
        vm.start()
        yield settings, vm
    finally:
        vm.stop()
        kafka.stop()


async def produce_points(settings: Settings, points: list[MetricPoint]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        sent = [await producer.send(settings.metrics_topic, p.to_json(),
                                    key=dict(p.tags)["runner"].encode()) for p in points]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def vm_export(vm: VictoriaMetrics, match: str) -> list[dict[str, Any]]:
    vm.flush()
    response = httpx.post(f"{vm.url}/api/v1/export", data={"match[]": match}, timeout=10)
    response.raise_for_status()
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


Sample = tuple[tuple[tuple[str, str], ...], int]  # (tags, time in ms): a point's identity


def samples_of(series: list[dict[str, Any]], name: str, runner: str) -> dict[Sample, float]:
    """Samples of one metric of one runner by tags and time; one stored twice fails."""
    out: dict[Sample, float] = {}
    count = 0
    for s in series:
        labels = {k: v for k, v in s["metric"].items() if k != "__name__"}
        if s["metric"]["__name__"] == name and labels.get("runner") == runner:
            tags = tuple(sorted(labels.items()))
            out.update(((tags, t), v) for t, v in zip(s["timestamps"], s["values"],
                                                      strict=True))
            count += len(s["timestamps"])
    assert count == len(out), f"{name} of {runner}: {count - len(out)} duplicate samples"
    return out


def test_v2_writer_lands_real_points_in_victoriametrics(
        v2_stack: tuple[Settings, VictoriaMetrics]) -> None:
    from base.kafka import group_lag

    settings, vm = v2_stack
    runners = ("vm-a", "vm-b")
    points: list[MetricPoint] = []
    for i, name in enumerate(runners):
        simulated = SimulatedRunner(name, imbalance_pts=3.5 * i, pain_after=7 + i, seed=30 + i)
        _, alerts, produced = pure_core(profile_for(ROSTER, name), list(
            plan_live(simulated, time.time() - 3600, minutes=2)))
        assert alerts, "the scenario fires alerts"
        points += produced
    distinct = {identity(p): p for p in points}
    # every record twice, as after a replay: the second copy must not add samples
    asyncio.run(produce_points(settings, [*points, *points]))
    sink = Component(settings, "sink").start()
    try:
        wait_for(lambda: asyncio.run(group_lag(settings, settings.sink_group,
                                                  settings.metrics_topic)) == 0,
                 timeout=90, what="the sink writing and committing every record")
        assert sink.alive(), sink.log_tail()
        series = vm_export(vm, '{__name__=~"(run_window|session|daily_load|pain|alert)_.+"}')
    finally:
        sink.stop()
    assert "to InfluxDB v2 API at" in log_text(sink)
    for name in runners:
        mine = [p for key, p in distinct.items() if dict(key[1])["runner"] == name]

        def expected(measurement: str, field: str, mine: list[MetricPoint] = mine
                     ) -> dict[Sample, float]:
            return {(p.tags, p.time_ms): float(dict(p.fields)[field]) for p in mine
                    if p.measurement == measurement and field in dict(p.fields)}

        # points written once each: every numeric value as sent
        for measurement, field in (("run_window", "cadence_spm"), ("run_window", "samples"),
                                   ("run_window", "gct_ms"), ("pain", "score"),
                                   ("alert", "value")):
            want = expected(measurement, field)
            assert want, f"{name}: no {measurement}.{field} in the scenario"
            got = samples_of(series, f"{measurement}_{field}", name)
            assert got == pytest.approx(want), f"{name}: {measurement}.{field}"
        # rewritten points (a session as it grows, a day as runs add up): one sample each
        for measurement, field in (("session", "distance_km"), ("daily_load", "load")):
            want = expected(measurement, field)
            assert samples_of(series, f"{measurement}_{field}", name).keys() == want.keys()


# --------------------------------------------------------------------------- outage


def interleave(lists: list[list[tuple[str, bytes]]]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for i in range(max(len(x) for x in lists)):
        out += [x[i] for x in lists if i < len(x)]
    return out


def publish_paced(publisher: RunnerPublisher, messages: list[tuple[str, bytes]],
                  until: float) -> None:
    """Spread the messages evenly from now until ``until`` (time.monotonic)."""
    start = time.monotonic()
    span = max(0.0, until - start)
    for i, (topic, payload) in enumerate(messages):
        wait = start + span * i / max(1, len(messages)) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        publisher.publish(topic, payload)
    publisher.flush()


def wait_rows(pipe: Pipeline, query: str, n: int, what: str) -> None:
    wait_for(lambda: len(pipe.influx(query)) == n, timeout=60, what=what)


@pytest.mark.timeout(900)
def test_influxdb_outage_of_two_minutes_loses_no_point(own: Pipeline) -> None:
    from base.kafka import group_lag

    settings = own.settings
    assert settings.roster_file is not None
    live_start = time.time() - 2 * 3600
    per_runner: dict[str, list[tuple[str, bytes]]] = {}
    for i, name in enumerate(OUTAGE_RUNNERS):
        own.runner(name)
        simulated = SimulatedRunner(name, seed=50 + i, imbalance_pts=3.5 if i == 1 else 0.0)
        history = list(plan_history(simulated, history_end(), 2))
        live = list(plan_run(simulated, live_start + 60 * i, 760.0, "pod", 1.0, 3,
                             imbalance=True, rng=random.Random(i), per_foot=True))
        report_t = live_start - 600
        per_runner[name] = [*history, pain(name, report_t, 7, round(report_t * 1000)), *live]
    ordered = interleave(list(per_runner.values()))
    cut_pre, cut_post = len(ordered) // 10, len(ordered) - len(ordered) // 20
    pre, during, after = ordered[:cut_pre], ordered[cut_pre:cut_post], ordered[cut_post:]
    sink = own.components["sink"]

    def window_counts() -> dict[str, int]:
        rows = own.influx("SELECT count(samples) FROM run_window WHERE runner =~ /^out-/ "
                          "GROUP BY runner")
        return {r["runner"]: r["count"] for r in rows}

    with RunnerPublisher(settings) as publisher:
        publisher.publish_all(pre)
        publisher.flush()
        wait_for(window_counts, timeout=120, what="points flowing before the outage")
        influx = own.stack.influx
        influx.stop()
        down_at = time.monotonic()
        assert not influx.healthy()
        publish_paced(publisher, during, until=down_at + OUTAGE_S - 3)
        assert "retrying in" in log_text(sink), "the sink noticed the outage"
        backlog = asyncio.run(group_lag(settings, settings.sink_group, settings.metrics_topic))
        time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        outage_s = time.monotonic() - down_at
        influx.start()
        up_at = time.monotonic()
        publisher.publish_all(after)
    assert outage_s >= OUTAGE_S
    assert backlog > 0, "points waited in Kafka during the outage"

    batches = {name: sum(1 for topic, _ in msgs if topic.endswith("/samples"))
               for name, msgs in per_runner.items()}
    try:
        wait_for(lambda: window_counts() == batches, timeout=180,
                 what=f"every sample batch as a run_window point: {batches}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; run_window points found: {window_counts()}\n"
                             f"{own.logs()}") from None
    caught_up_s = time.monotonic() - up_at
    assert sink.alive(), sink.log_tail()
    assert "InfluxDB accepts writes again after" in log_text(sink)

    for name in OUTAGE_RUNNERS:
        profile = profile_for(settings.roster_file, name)
        state, _, _ = pure_core(profile, per_runner[name])
        want_sessions = {s.session_id: s.distance_m / 1000 for s in state.sessions.values()}
        wait_rows(own, f"SELECT ended FROM session WHERE runner = '{name}' AND ended = true",
                  len(want_sessions), what=f"{name}: every session ended in InfluxDB")
        rows = own.influx(f"SELECT session_id, distance_km, ended FROM session "
                          f"WHERE runner = '{name}'")
        assert {r["session_id"]: r["distance_km"] for r in rows} == pytest.approx(
            want_sessions, abs=1e-3)
        totals = day_totals(state, profile)
        assert state.latest_t is not None
        last_day = max([*totals, local_day(state.latest_t, profile)])
        all_days = [min(totals) + timedelta(days=k)
                    for k in range((last_day - min(totals)).days + 1)]
        got = {r["time"]: r["distance_km"] for r in own.influx(
            f"SELECT distance_km FROM daily_load WHERE runner = '{name}'")}
        want_days = {int(day_start_s(d, profile) * 1000): (
            totals[d].distance_km if d in totals else 0.0) for d in all_days}
        assert got == pytest.approx(want_days, abs=1e-3), f"{name}: daily_load incomplete"
        pains = own.influx(f"SELECT score FROM pain WHERE runner = '{name}'")
        assert [r["score"] for r in pains] == [7]

    fired = [Alert.from_bytes(r) for r in read_topic_records(settings, settings.alerts_topic)]
    fired = [a for a in fired if a.runner in OUTAGE_RUNNERS]
    assert {a.runner for a in fired if a.rule == "pain_after_run"} == set(OUTAGE_RUNNERS)
    stored = wait_for(lambda: {r["alert_id"] for r in own.influx(
        "SELECT alert_id FROM alert WHERE runner =~ /^out-/")} == {a.alert_id for a in fired}
        and len(fired), timeout=60, what="every alert as a point")
    published = len(ordered)
    print(f"\noutage {outage_s:.1f} s; published {published} messages ({len(during)} during "
          f"the outage); metrics backlog in Kafka before the restart {backlog} records; "
          f"caught up {caught_up_s:.1f} s after the restart; run_window points {batches}; "
          f"alerts {stored}")
