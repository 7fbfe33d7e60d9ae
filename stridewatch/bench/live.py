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
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from base.settings import Settings
from stridewatch.bench.collector import PointCollector, topic_size
from stridewatch.bench.common import Variant, err, percentiles, progress, scaled, variant_settings
from stridewatch.bench.fleet import RUNNERS_PER_SHARD
from stridewatch.bench.procstats import CpuMeter, ProcessStats, python_pid, stack_pids
from stridewatch.bench.stream import BenchPart, wait_progress, wait_until
from stridewatch.bench.workload import Message, Workload
from stridewatch.processes import Component, settings_env

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

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # alert id → (runner, rule, fired_at, arrival)
        self.arrivals: dict[str, tuple[str, str, float, float]] = {}
        self.clock = clock
        self._lock = threading.Lock()

    def on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = self.clock()
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

    from base.kafka import make_consumer

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
    from base.mqtt import connect_blocking, make_client

    client, props = make_client(settings, settings.bridge_client_id, settings.bridge_username,
                                settings.bridge_password.get_secret_value())
    connect_blocking(settings, client, props, clean_start=True)  # session expiry 0
    client.disconnect()
    client.loop_stop()


class Shard:
    """One ``stridewatch.bench.fleet`` process: a share of the runners, one JSON line per
    answer on its stdout."""

    def __init__(self, stack_settings: Settings, workload: Workload, index: int, count: int,
                 client_prefix: str, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.log = logs / f"fleet-{index + 1}.log"
        with self.log.open("ab") as log:
            # the stack's settings: the runners' MQTT passwords are in its data folder
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stridewatch.bench.fleet", "--runners",
                 str(len(workload.runners)), "--seconds", str(workload.seconds), "--end-t",
                 repr(workload.end_t), "--shard", str(index), "--shards", str(count),
                 "--client-prefix", client_prefix],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env=settings_env(stack_settings), text=True, start_new_session=True)

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"a publisher shard exited; its log ends:\n{tail}")
        return line

    def wait_ready(self) -> None:
        if self._line().strip() != "ready":
            raise RuntimeError("a publisher shard did not get ready")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        data = json.loads(self._line())
        assert isinstance(data, dict)
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class LiveBench(BenchPart):
    """Runs the whole stack live, one variant after another."""

    def run(self, variant: Variant) -> LiveResult:
        from base.kafka import ensure_topics

        w = self.workload
        tag = f"bench-{self.run_id}-live-{variant.name.lower()}"
        folder = self.workdir / tag
        folder.mkdir(parents=True, exist_ok=True)
        settings = variant_settings(self.stack_settings, variant, tag, folder)
        result = LiveResult(variant.name, variant.describe, tag, len(w.runners),
                            w.seconds / 60, float(len(w.runners)), batches=w.batches,
                            strides=w.samples, messages=len(w.messages))
        collector = PointCollector(settings, w.batch_keys(), clock=time.time)
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
        count = max(1, math.ceil(len(w.runners) / RUNNERS_PER_SHARD))
        shards = [Shard(self.stack_settings, w, i, count, settings.topic_prefix,
                        settings.data_dir / "logs") for i in range(count)]
        try:
            for shard in shards:
                shard.wait_ready()
            wait_until(lambda: collector.warmups >= len(w.runners), 180,
                       "the warm-up points (bridge and worker up)", check)
            meter.start()
            first = time.time() + 1.0  # every shard has the word before the first slot
            for shard in shards:
                shard.send(f"go {first!r}")
            with progress() as bar:
                task = bar.add_task(f"live {result.variant}: run_window points",
                                    total=w.batches)
                last_publish = max(float(shard.answer()["flushed"]) for shard in shards)
                wait_progress(lambda: collector.matched, w.batches, self.stall_timeout,
                              "run_window points", check,
                              lambda k: bar.update(task, completed=k))
            meter.stop()
            result.processes = meter.stats()
            last_point = collector.last_arrival or time.time()
            result.drain_s = max(0.0, last_point - last_publish)
            result.batches_per_s = w.batches / (last_point - first)
            # alerts: wait until every alert on Kafka has reached its runner's phone
            deadline = time.monotonic() + ALERTS_SETTLE_S
            while True:
                expected = asyncio.run(alert_ids_on_kafka(settings))
                received: set[str] = set()
                for shard in shards:
                    shard.send("report")
                    received |= set(shard.answer()["alert_ids"])
                if expected <= received or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            result.alerts_on_kafka = len(expected)
            inbox = AlertInbox()
            sent: dict[int, float] = {}
            result.behind_s = 0.0
            for shard in shards:
                shard.send("stop")
                final = shard.answer()
                sent.update({int(k): float(v) for k, v in final["sent"].items()})
                result.behind_s = max(result.behind_s, float(final["behind_s"]))
                result.unrouted += int(final["unrouted"])
                for runner, rule, fired_at, arrived in final["alerts"]:
                    inbox.arrivals[f"{runner}/{rule}/{fired_at}/{arrived}"] = (
                        runner, rule, fired_at, arrived)
        finally:
            for shard in shards:
                shard.close()
        batch_latency = [a - sent[i] for i, m in enumerate(w.messages)
                         if (k := m.batch_key) is not None
                         and (a := collector.arrival(k)) is not None and i in sent]
        result.batch_latency_ms = scaled(percentiles(batch_latency), 1000)
        result.sustained = (result.behind_s <= BEHIND_SLACK_S
                            and result.drain_s <= SUSTAIN_SLACK_S
                            and max(batch_latency, default=math.inf) <= SUSTAIN_SLACK_S)
        latencies, result.alerts_unmatched, result.alert_rules = alert_latencies(
            w.messages, list(inbox.arrivals.values()), sent)
        result.alerts = len(inbox.arrivals)
        result.alert_latency_ms = scaled(percentiles(latencies), 1000)


def alert_latencies(messages: Sequence[Message], alerts: Sequence[tuple[str, str, float, float]],
                    sent: dict[int, float]) -> tuple[list[float], int, dict[str, int]]:
    """Seconds from the publish of the message carrying each alert's ``fired_at`` (the
    event time of the sample that fired it) to the alert's arrival on the runner's topic;
    how many alerts no published message carries; alerts per rule.

    ``alerts`` are (runner, rule, fired_at, arrival); ``sent`` maps a message's index in
    ``messages`` to its publish time (same clock as the arrivals).
    """
    index: dict[str, tuple[list[float], list[int]]] = {}
    for i, m in enumerate(messages):  # a runner's event times only grow
        ends, rows = index.setdefault(m.runner, ([], []))
        ends.append(m.last_t)
        rows.append(i)
    latencies: list[float] = []
    unmatched = 0
    rules: dict[str, int] = {}
    for runner, rule, fired_at, arrived in alerts:
        rules[rule] = rules.get(rule, 0) + 1
        ends, rows = index.get(runner, ([], []))
        j = bisect.bisect_left(ends, fired_at - 1e-3)  # event times carry 1 ms
        if j >= len(rows) or messages[rows[j]].first_t > fired_at + 1e-3 \
                or rows[j] not in sent:
            unmatched += 1
            continue
        latencies.append(arrived - sent[rows[j]])
    return latencies, unmatched, dict(sorted(rules.items()))
