"""The live part: the whole stack, N runners each sending one batch a second, paced.

Mosquitto → bridge → Kafka → worker → sink (InfluxDB) and notifier (alerts back over MQTT).
Every runner publishes with its own credentials over MQTT QoS 1 and subscribes to its own
``runners/<r>/alerts``, as a phone would. The bench checks that every published stride
reached a ``run_window`` point, whether the pipeline kept up with the offered rate, and
how long an alert took from the publish that completed its condition to the phone.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from stridewatch.bench.collector import WARMUP_SESSION, PointCollector, topic_size
from stridewatch.bench.common import Variant, err, percentiles, progress, scaled, variant_settings
from stridewatch.bench.procstats import CpuMeter, ProcessStats, python_pid, stack_pids
from stridewatch.bench.stream import wait_progress, wait_until
from stridewatch.bench.workload import Workload
from stridewatch.processes import Component
from stridewatch.settings import Settings

# the pipeline kept up if the publisher never fell further behind its schedule than this,
# and no batch's point (the last one included) came later than this after its publish
SUSTAIN_SLACK_S = 5.0
BEHIND_SLACK_S = 1.0
ALERTS_SETTLE_S = 30.0


@dataclass
class LiveResult:
    variant: str
    describe: str
    topic_prefix: str
    runners: int
    minutes: float
    offered_batches_per_s: float
    batches: int = 0
    strides: int = 0
    messages: int = 0
    behind_s: float = math.nan  # publisher's worst lag behind its schedule
    drain_s: float = math.nan  # last publish → last run_window point
    sustained: bool = False
    lost: int = 0  # published strides that reached no run_window point
    batches_per_s: float = math.nan  # achieved: batches ÷ first publish → last point
    batch_latency_ms: dict[str, float] = field(default_factory=dict)
    alerts: int = 0  # received on the runners' MQTT topics
    alerts_on_kafka: int = 0
    alerts_unmatched: int = 0  # no published message carries the alert's fired_at
    alert_latency_ms: dict[str, float] = field(default_factory=dict)
    alert_rules: dict[str, int] = field(default_factory=dict)
    processes: dict[str, ProcessStats] = field(default_factory=dict)
    changelog_records: int = 0
    changelog_bytes_per_record: float = math.nan
    points_matched: int = 0
    duplicates: int = 0
    unexpected: int = 0
    dead_letters: int = 0
    unrouted: int = 0
    ok: bool = False
    error: str | None = None


class AlertInbox:
    """Alerts arriving on the runners' own MQTT topics, first arrival per alert id."""

    def __init__(self) -> None:
        self.arrivals: dict[str, tuple[str, str, float, float]] = {}  # id → runner, rule..
        self._lock = threading.Lock()

    def on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.perf_counter()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            alert = json.loads(message.payload)
            with self._lock:
                self.arrivals.setdefault(str(alert["alert_id"]), (
                    str(alert["runner"]), str(alert["rule"]), float(alert["fired_at"]), now))

    def ids(self) -> set[str]:
        with self._lock:
            return set(self.arrivals)


async def alert_ids_on_kafka(settings: Settings) -> set[str]:
    from aiokafka.structs import TopicPartition

    from stridewatch.kafka import make_consumer

    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
    await consumer.start()
    ids: set[str] = set()
    try:
        consumer.assign([TopicPartition(settings.alerts_topic, p)
                         for p in range(settings.kafka_partitions)])
        await consumer.seek_to_beginning()
        quiet = time.monotonic()
        while time.monotonic() - quiet < 1.0:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    with contextlib.suppress(ValueError, KeyError):
                        ids.add(str(json.loads(record.value or b"")["alert_id"]))
                    quiet = time.monotonic()
    finally:
        await consumer.stop()
    return ids


def clear_bridge_session(settings: Settings) -> None:
    """Drop the variant bridge's persistent MQTT session, so the broker stops queueing
    the next variant's messages for it."""
    from stridewatch.mqtt import connect_blocking, make_client

    client, props = make_client(settings, settings.bridge_client_id, settings.bridge_username,
                                settings.bridge_password.get_secret_value())
    connect_blocking(settings, client, props, clean_start=True)  # session expiry 0
    client.disconnect()
    client.loop_stop()


class LiveBench:
    def __init__(self, stack_settings: Settings, workdir: Path, workload: Workload,
                 stall_timeout: float) -> None:
        self.stack_settings = stack_settings
        self.workdir = workdir
        self.workload = workload
        self.stall_timeout = stall_timeout
        self.run_id = secrets.token_hex(2)

    def run(self, variant: Variant) -> LiveResult:
        from stridewatch.kafka import ensure_topics

        w = self.workload
        tag = f"bench-{self.run_id}-live-{variant.name.lower()}"
        folder = self.workdir / tag
        folder.mkdir(parents=True, exist_ok=True)
        settings = variant_settings(self.stack_settings, variant, tag, folder)
        result = LiveResult(variant.name, variant.describe, tag, len(w.runners),
                            w.seconds / 60, float(len(w.runners)), batches=w.batches,
                            strides=w.samples, messages=len(w.messages))
        collector = PointCollector(settings, w.batch_keys())
        names = ("bridge", "worker", "sink", "notify")
        components = {name: Component(settings, name) for name in names}
        try:
            asyncio.run(ensure_topics(settings))
            collector.start()
            with contextlib.chdir(folder):  # Faust's "<app id>-data" stays in there
                for component in components.values():
                    component.start()
            err.log(f"[bold]live {escape(variant.name)}[/] ({escape(variant.describe)}): "
                    f"{len(w.runners)} runners × {w.seconds / 60:g} min; logs in "
                    f"{folder / 'logs'}")
            components["bridge"].wait_for_log("subscribed to", timeout=90)
            self._measure(settings, collector, components, result)
            result.changelog_records, size = asyncio.run(
                topic_size(settings, settings.state_changelog_topic))
            if result.changelog_records:
                result.changelog_bytes_per_record = size / result.changelog_records
        except (RuntimeError, TimeoutError, OSError) as exc:
            result.error = str(exc)
        finally:
            for component in components.values():
                component.stop()
            collector.stop()
            with contextlib.suppress(Exception):
                clear_bridge_session(settings)
        result.points_matched = collector.matched
        result.lost = w.samples - collector.strides
        result.duplicates, result.unexpected = collector.duplicates, collector.unexpected
        result.dead_letters = collector.dead_letters
        result.ok = (result.error is None and result.lost == 0
                     and result.points_matched == result.batches and not result.duplicates
                     and not result.unexpected and not result.dead_letters
                     and not result.unrouted)
        if result.error:
            err.log(f"[red]live {variant.name} failed:[/] {escape(result.error)}")
            for c in components.values():
                err.print(f"--- {c.name} log ({c.log_file}) ---\n{c.log_tail(15)}",
                          markup=False, style="dim")
        return result

    def _measure(self, settings: Settings, collector: PointCollector,
                 components: dict[str, Component], result: LiveResult) -> None:
        from ingest.publisher import RunnerPublisher

        w = self.workload

        def check() -> None:
            if collector.error is not None:
                raise RuntimeError(f"reading the metrics topic failed: {collector.error}")
            for c in components.values():
                if not c.alive():
                    raise RuntimeError(f"{c.name} exited; its log ends:\n{c.log_tail(15)}")

        pids = {name: python_pid(c.proc.pid) for name, c in components.items()
                if c.proc is not None} | stack_pids(self.stack_settings)
        meter = CpuMeter(pids)
        inbox = AlertInbox()
        sent: dict[int, float] = {}  # message index → publish time
        clock = time.perf_counter
        n = len(w.runners)
        order = {r: i for i, r in enumerate(w.runners)}
        with RunnerPublisher(self.stack_settings, client_prefix=settings.topic_prefix
                             ) as publisher, progress() as bar:
            t = 1_000_000_000.0
            body = json.dumps({"seq": 1, "session_id": WARMUP_SESSION, "phase": "start",
                               "t": t, "sport": "walking"}).encode()
            publisher.publish_all((f"runners/{r}/warmup/session", body) for r in w.runners)
            publisher.flush()
            for runner, client in publisher.clients.items():
                client.on_message = inbox.on_message
                client.subscribe(f"runners/{runner}/alerts", qos=1)
            wait_until(lambda: collector.warmups >= n, 180,
                       "the warm-up points (bridge and worker up)", check)
            unrouted_before = publisher.unrouted
            task = bar.add_task(f"live {result.variant}: publishing", total=len(w.messages))
            meter.start()
            first = clock()
            behind = 0.0
            for i, m in enumerate(w.messages):
                due = first + m.round + order[m.runner] / n
                ahead = due - clock()
                if ahead > 0:
                    time.sleep(ahead)
                else:
                    behind = max(behind, -ahead)
                sent[i] = clock()
                publisher.publish(m.topic, m.payload)
                if i % 64 == 0:
                    bar.update(task, completed=i)
                    check()
            publisher.flush()
            last_publish = clock()
            bar.update(task, completed=len(w.messages))
            result.unrouted = publisher.unrouted - unrouted_before
            result.behind_s = behind
            points = bar.add_task(f"live {result.variant}: run_window points",
                                  total=w.batches)
            wait_progress(lambda: collector.matched, w.batches, self.stall_timeout,
                          "run_window points", check,
                          lambda k: bar.update(points, completed=k))
            meter.stop()
            last_point = collector.last_arrival or clock()
            result.drain_s = max(0.0, last_point - last_publish)
            result.batches_per_s = w.batches / (last_point - first)
            # alerts: wait until every alert on Kafka has reached its runner's phone
            deadline = time.monotonic() + ALERTS_SETTLE_S
            expected = asyncio.run(alert_ids_on_kafka(settings))
            while not expected <= inbox.ids() and time.monotonic() < deadline:
                time.sleep(0.2)
                expected = asyncio.run(alert_ids_on_kafka(settings))
            result.alerts_on_kafka = len(expected)
        result.processes = meter.stats()
        batch_latency = [a - sent[i] for i, m in enumerate(w.messages)
                         if (k := m.batch_key) is not None
                         and (a := collector.arrival(k)) is not None]
        result.batch_latency_ms = scaled(percentiles(batch_latency), 1000)
        result.sustained = (result.behind_s <= BEHIND_SLACK_S
                            and result.drain_s <= SUSTAIN_SLACK_S
                            and max(batch_latency, default=math.inf) <= SUSTAIN_SLACK_S)
        self._alert_latency(inbox, sent, result)

    def _alert_latency(self, inbox: AlertInbox, sent: dict[int, float],
                       result: LiveResult) -> None:
        """From the publish of the message carrying the alert's ``fired_at`` (the event
        time of the sample that fired it) to the alert's arrival on the runner's topic."""
        index: dict[str, tuple[list[float], list[int]]] = {}
        for i, m in enumerate(self.workload.messages):
            ends, rows = index.setdefault(m.runner, ([], []))
            ends.append(m.last_t)
            rows.append(i)
        latencies: list[float] = []
        rules: dict[str, int] = {}
        for runner, rule, fired_at, arrived in inbox.arrivals.values():
            rules[rule] = rules.get(rule, 0) + 1
            ends, rows = index.get(runner, ([], []))
            j = bisect.bisect_left(ends, fired_at - 1e-3)
            message = self.workload.messages[rows[j]] if j < len(rows) else None
            if message is None or message.first_t > fired_at + 1e-3:
                result.alerts_unmatched += 1
                continue
            latencies.append(arrived - sent[rows[j]])
        result.alerts = len(inbox.arrivals)
        result.alert_rules = dict(sorted(rules.items()))
        result.alert_latency_ms = scaled(percentiles(latencies), 1000)
