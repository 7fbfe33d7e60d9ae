"""``stridewatch bench``: throughput, latency and memory of the pure step and the pipeline.

Two parts, one table each (docs/benchmarks.md explains every column):

- **core**: :func:`stream.runner.process_event` over a simulated team (weeks of history,
  then today's live run), in this process, record by record as the worker does it (state
  read from JSON, stepped, written back as JSON). Events/s, per-event latency, peak RSS
  growth and the size of each runner's state.
- **pipeline**: the real processes on a real stack (Mosquitto → bridge → Tansu → Faust
  worker, optionally the InfluxDB writer). Each *variant* (settings overrides, e.g.
  ``kafka_one_record_per_batch=false``) gets its own topics, Faust app id and bridge MQTT
  session, and the same workload: every runner's live run published over MQTT (QoS 1) as
  fast as the acknowledgements allow. Each sample batch is timed from just before its
  publish until its ``run_window`` point arrives on the metrics topic; every batch must
  produce exactly one such point, or the row says FAIL.

Performance targets live here, as numbers to compare, never as test assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ingest.simulator import SimulatedRunner, demo_team, plan_history, plan_live
from stream.metrics import RUN_WINDOW, decode_points
from stridewatch.processes import Component
from stridewatch.settings import Settings, load_settings

DEFAULT_VARIANTS = ("one-record:kafka_one_record_per_batch=true",
                    "batched:kafka_one_record_per_batch=false")
# settings that place the stack or name a variant's topics: the bench sets them itself
STACK_KEYS = frozenset({"data_dir", "mqtt_host", "mqtt_port", "kafka_bootstrap", "influx_url",
                        "influx_rpc_port", "topic_prefix", "app_id", "bridge_client_id",
                        "bridge_share_group"})
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
RUNNER_PREFIX = "bench"
WARMUP_SESSION = "bench-warmup"
WARMUP_MARK = f'"session_id":"{WARMUP_SESSION}"'.encode()
PERCENTILES = (50.0, 95.0, 99.0)

err = Console(stderr=True, highlight=False)


# ------------------------------------------------------------------------------ helpers
def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 (nearest rank) and max of ``values``; NaN for an empty sequence."""
    ordered = sorted(values)
    out: dict[str, float] = {}
    for p in PERCENTILES:
        key = f"p{p:g}"
        out[key] = ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered \
            else math.nan
    out["max"] = ordered[-1] if ordered else math.nan
    return out


def bench_team(runners: int) -> list[SimulatedRunner]:
    """``runners`` simulated runners cycling through the demo team's profiles (steady,
    load spike, imbalance, cadence drop, pain), so the rules have something to fire on."""
    base = demo_team()
    return [replace(base[i % len(base)], runner=f"{RUNNER_PREFIX}-{i:02d}", seed=i)
            for i in range(runners)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process, from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_pid(pid: int) -> int:
    """The pid of the Python process running ``stridewatch.cli``: ``pid`` itself (a
    component is started as ``python -m stridewatch.cli``), else the first descendant
    whose command line says so, should a wrapper ever start it."""
    queue = [pid]
    while queue:
        candidate = queue.pop(0)
        if b"stridewatch.cli" in _cmdline(candidate):
            return candidate
        with contextlib.suppress(OSError, ValueError):
            queue += [int(c) for c in Path(f"/proc/{candidate}/task/{candidate}/children"
                                           ).read_text().split()]
    return pid


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# ------------------------------------------------------------------------------ variants
@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, str]

    @property
    def describe(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.overrides.items()) or "(defaults)"


def parse_variant(text: str) -> Variant:
    """``NAME:KEY=VALUE[,KEY=VALUE...]`` → :class:`Variant` (keys are settings fields)."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not VARIANT_NAME.match(name):
        raise ValueError(f"variant name {name!r}: use letters, digits, '-', '_', '.' "
                         "(at most 40)")
    overrides: dict[str, str] = {}
    for pair in (p.strip() for p in rest.split(",")):
        if not pair:
            continue
        key, eq, value = pair.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise ValueError(f"variant {name}: expected KEY=VALUE, got {pair!r}")
        if key in STACK_KEYS:
            raise ValueError(f"variant {name}: {key} is set by the bench (one stack, own "
                             "topics per variant)")
        if key not in Settings.model_fields:
            raise ValueError(f"variant {name}: {key!r} is not a setting "
                             "(see stridewatch/settings.py)")
        overrides[key] = value.strip()
    return Variant(name, overrides)


def variant_settings(base: Settings, variant: Variant, tag: str, workdir: Path) -> Settings:
    """``base`` with the variant's overrides, its own topics, app id and bridge session.

    ``workdir`` holds the variant's logs; the bridge password is carried over explicitly
    because the secrets file lives in the stack's data folder, not in ``workdir``.
    """
    from stridewatch.mqtt import service_password

    values: dict[str, Any] = base.model_dump()
    values.update(variant.overrides)
    bridge_password = base.bridge_password.get_secret_value() or service_password(base,
                                                                                 "bridge")
    values.update(topic_prefix=tag, app_id=tag, bridge_client_id=f"{tag}-bridge",
                  bridge_share_group=tag, data_dir=workdir,
                  bridge_password=SecretStr(bridge_password))
    for name in ("roster_file", "rules_dir"):  # children start in another folder
        if values.get(name) is not None:
            values[name] = Path(values[name]).resolve()
    return Settings(**values)


# ------------------------------------------------------------------------------ core
@dataclass
class CoreResult:
    runners: int
    history_weeks: int
    live_minutes: float
    events: int
    samples: int
    alerts: int
    points: int
    step_events_per_s: float
    step_samples_per_s: float
    step_latency_ms: dict[str, float]
    # the live run's per-foot batches (~3 samples, ~1 s), as the pipeline part sends them
    live_batch_latency_ms: dict[str, float]
    worker_loop_events_per_s: float
    state_json_ms: dict[str, float]
    peak_rss_growth_mb: float
    state_bytes_mean: float
    state_bytes_max: int


def run_core(settings: Settings, runners: int, history_weeks: int, minutes: float,
             end: datetime) -> CoreResult:
    """Fold every runner's history and live run through the pure step, timing each call.

    Per event, as the worker does: state from JSON, :func:`process_event`, state to JSON.
    The step and the JSON round trip are timed separately. Inputs are planned and decoded
    per runner outside the timed calls.
    """
    from ingest.decoders import InboundMessage
    from ingest.routing import decode_message
    from rules.catalogue import load_catalogue
    from rules.roster import load_roster
    from stream.runner import RunnerState, process_event
    from stream.state_codec import encode, encode_history, encode_live, encode_seen

    catalogue = load_catalogue(settings.rules_dir)
    roster = load_roster(settings.roster_file)
    team = bench_team(runners)
    step_s: list[float] = []
    live_s: list[float] = []
    json_s: list[float] = []
    samples = alerts = points = 0
    states: dict[str, int] = {}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    clock = time.perf_counter
    with _progress() as progress:
        task = progress.add_task("core: process_event", total=runners)
        for r in team:
            profile = roster.profile(r.runner, catalogue)
            history = list(plan_history(r, end, history_weeks))
            messages = history + list(plan_live(r, end.timestamp(), minutes))
            events = [decode_message(InboundMessage(topic, payload, end.timestamp()))
                      for topic, payload in messages]
            live_from = len(history)
            state = RunnerState(runner=r.runner)
            for i, event in enumerate(events):
                t0 = t1 = clock()  # the worker keeps states in memory: nothing to read
                state, out = process_event(state, event, profile)
                t2 = clock()
                encode(state)  # what it writes to the table
                t3 = clock()
                step_s.append(t2 - t1)
                json_s.append((t1 - t0) + (t3 - t2))
                alerts += len(out.alerts)
                points += len(out.points)
                if event.samples is not None:
                    samples += len(event.samples.samples)
                    if i >= live_from:
                        live_s.append(t2 - t1)
            states[r.runner] = len(encode_live(state) + encode_seen(state)
                                   + encode_history(state))
            progress.advance(task)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sizes = list(states.values())
    step_total = sum(step_s)
    loop_total = step_total + sum(json_s)
    return CoreResult(
        runners=runners, history_weeks=history_weeks, live_minutes=minutes,
        events=len(step_s), samples=samples, alerts=alerts, points=points,
        step_events_per_s=len(step_s) / step_total if step_total else math.nan,
        step_samples_per_s=samples / step_total if step_total else math.nan,
        step_latency_ms={k: v * 1000 for k, v in percentiles(step_s).items()},
        live_batch_latency_ms={k: v * 1000 for k, v in percentiles(live_s).items()},
        worker_loop_events_per_s=len(step_s) / loop_total if loop_total else math.nan,
        state_json_ms={k: v * 1000 for k, v in percentiles(json_s).items()},
        peak_rss_growth_mb=max(0, rss_after - rss_before) / 1024,  # ru_maxrss is in KiB
        state_bytes_mean=sum(sizes) / len(sizes) if sizes else 0.0,
        state_bytes_max=max(sizes, default=0))


# ------------------------------------------------------------------------------ pipeline
@dataclass(frozen=True)
class Workload:
    """Every runner's live run, interleaved round-robin the way live devices send."""

    messages: list[tuple[str, bytes]]
    # per message: (runner, time_ms of the batch's last sample) for a sample batch, else None
    batch_keys: list[tuple[str, int] | None]
    runners: list[str]
    samples: int
    minutes: float
    end_t: float

    @property
    def batches(self) -> int:
        return sum(1 for k in self.batch_keys if k is not None)


def plan_workload(runners: int, minutes: float, end_t: float) -> Workload:
    team = bench_team(runners)
    plans = [list(plan_live(r, end_t, minutes)) for r in team]
    messages: list[tuple[str, bytes]] = []
    keys: list[tuple[str, int] | None] = []
    samples = 0
    for i in range(max(len(p) for p in plans)):
        for plan in plans:
            if i >= len(plan):
                continue
            topic, payload = plan[i]
            messages.append((topic, payload))
            key = None
            if topic.endswith("/samples"):
                batch = json.loads(payload)["samples"]
                samples += len(batch)
                # the run_window point's time is the batch's last sample (stream/metrics.py)
                key = (topic.split("/")[1], round(float(batch[-1]["t"]) * 1000))
            keys.append(key)
    distinct = {k for k in keys if k is not None}
    assert len(distinct) == sum(1 for k in keys if k is not None), "batch keys must be unique"
    return Workload(messages, keys, [r.runner for r in team], samples, minutes, end_t)


def warmup_messages(runners: Sequence[str], t: float) -> list[tuple[str, bytes]]:
    """One session start per runner on a device of its own: connects every runner's MQTT
    client and proves bridge and worker are up before anything is timed."""
    body = {"seq": 1, "session_id": WARMUP_SESSION, "phase": "start", "t": t,
            "sport": "walking"}
    return [(f"runners/{r}/warmup/session", json.dumps(body).encode()) for r in runners]


class PointCollector:
    """Reads the variant's metrics and dead-letter topics from the start, in a thread.

    Records the arrival time (``time.perf_counter``, same clock as the publisher) of every
    ``run_window`` point by (runner, time_ms), and counts repeats, strays, warm-up points
    and dead letters.
    """

    def __init__(self, settings: Settings, expected: set[tuple[str, int]]) -> None:
        self.settings = settings
        self.expected = expected
        self.arrivals: dict[tuple[str, int], float] = {}
        self.duplicates = 0
        self.unexpected = 0
        self.warmups = 0
        self.dead_letters = 0
        self.metric_records = 0
        self.positions: dict[int, int] = {}  # metrics partition -> next offset
        self.last_arrival: float | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="bench-collector", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"could not read {self.settings.metrics_topic} "
                               f"within {timeout:.0f} s: {self.error}")
        if self.error is not None:
            raise RuntimeError(f"could not read {self.settings.metrics_topic}: {self.error}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)

    @property
    def matched(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def latencies(self, sent: dict[tuple[str, int], float]) -> list[float]:
        """Seconds from each publish in ``sent`` to its point, for the points that came."""
        with self._lock:
            return [self.arrivals[k] - t for k, t in sent.items() if k in self.arrivals]

    def metric_positions(self) -> dict[int, int]:
        with self._lock:
            return dict(self.positions)

    def _main(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:  # reported to the main thread
            self.error = exc
            self._ready.set()

    async def _consume(self) -> None:
        from aiokafka.structs import TopicPartition

        from stridewatch.kafka import make_consumer

        s = self.settings
        consumer = make_consumer(s, group_id=None, fetch_max_wait_ms=50)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(t, p) for t in (s.metrics_topic, s.deadletter_topic)
                             for p in range(s.kafka_partitions)])
            await consumer.seek_to_beginning()
            self._ready.set()
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                with self._lock:
                    for tp, records in batches.items():
                        if tp.topic == s.deadletter_topic:
                            self.dead_letters += len(records)
                            continue
                        for record in records:
                            self._take(record.value, now)
                        if records:
                            self.positions[tp.partition] = records[-1].offset + 1
        finally:
            await consumer.stop()

    def _take(self, raw: bytes, now: float) -> None:
        self.metric_records += 1
        if WARMUP_MARK in raw:
            self.warmups += 1
        for point in decode_points(raw):
            if point.measurement != RUN_WINDOW:
                continue
            key = (dict(point.tags).get("runner", ""), point.time_ms)
            if key not in self.expected:
                self.unexpected += 1
            elif key in self.arrivals:
                self.duplicates += 1
            else:
                self.arrivals[key] = now
                self.last_arrival = now


@dataclass
class ProcessStats:
    peak_rss_mb: float | None = None
    cpu_s: float | None = None  # during the timed part


@dataclass
class VariantResult:
    variant: str
    overrides: dict[str, str]
    topic_prefix: str
    records: int = 0
    batches: int = 0
    samples: int = 0
    publish_msgs_per_s: float = math.nan
    e2e_records_per_s: float = math.nan
    e2e_samples_per_s: float = math.nan
    e2e_s: float = math.nan
    latency_ms: dict[str, float] = field(default_factory=dict)
    worker_cpu_ms_per_record: float = math.nan
    bridge_cpu_ms_per_record: float = math.nan
    kafka_cpu_ms_per_record: float = math.nan
    mqtt_cpu_ms_per_record: float = math.nan
    processes: dict[str, ProcessStats] = field(default_factory=dict)
    sink_caught_up_s: float | None = None
    dead_letters: int = 0
    points_matched: int = 0
    points_missing: int = 0
    points_duplicate: int = 0
    points_unexpected: int = 0
    unrouted: int = 0
    ok: bool = False
    error: str | None = None

    @property
    def describe(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.overrides.items()) or "(defaults)"


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=True)


def clear_bridge_session(settings: Settings) -> None:
    """Drop the variant bridge's persistent MQTT session, so the broker stops queueing
    the next variant's messages for it."""
    from stridewatch.mqtt import connect_blocking, make_client

    client, props = make_client(settings, settings.bridge_client_id, settings.bridge_username,
                                settings.bridge_password.get_secret_value())
    connect_blocking(settings, client, props, clean_start=True)  # session expiry 0
    client.disconnect()
    client.loop_stop()


async def _sink_caught_up(settings: Settings, positions: dict[int, int], within_s: float
                          ) -> float | None:
    """``time.perf_counter()`` once the sink has committed up to ``positions``; None if it
    did not within ``within_s``."""
    from aiokafka.structs import TopicPartition

    from stream.outputs.sink import SINK_GROUP
    from stridewatch.kafka import make_consumer

    consumer = make_consumer(settings, group_id=SINK_GROUP)
    await consumer.start()
    try:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            behind = 0
            for partition, end in positions.items():
                done = await consumer.committed(TopicPartition(settings.metrics_topic,
                                                               partition))
                behind += max(0, end - (done or 0))
            if not behind:
                return time.perf_counter()
            await asyncio.sleep(0.25)
        return None
    finally:
        await consumer.stop()


class PipelineBench:
    """Runs every variant, one after the other, against one stack."""

    def __init__(self, stack_settings: Settings, workdir: Path, *, rate: float,
                 with_sink: bool, stall_timeout: float) -> None:
        self.stack_settings = stack_settings
        self.workdir = workdir
        self.rate = rate
        self.with_sink = with_sink
        self.stall_timeout = stall_timeout
        self.run_id = secrets.token_hex(2)

    def run(self, variant: Variant, workload: Workload) -> VariantResult:
        from stridewatch.kafka import ensure_topics

        tag = f"bench-{self.run_id}-{variant.name.lower()}"
        folder = self.workdir / tag
        folder.mkdir(parents=True, exist_ok=True)
        settings = variant_settings(self.stack_settings, variant, tag, folder)
        result = VariantResult(variant.name, variant.overrides, tag,
                               records=len(workload.messages), batches=workload.batches,
                               samples=workload.samples)
        expected = {k for k in workload.batch_keys if k is not None}
        collector = PointCollector(settings, expected)
        names = ["bridge", "worker"] + (["sink"] if self.with_sink else [])
        components = {name: Component(settings, name) for name in names}
        try:
            asyncio.run(ensure_topics(settings))
            collector.start()
            # Faust makes "<app id>-data" in its working folder: keep it in the variant's
            with contextlib.chdir(folder):
                for component in components.values():
                    component.start()
            err.log(f"[bold]{variant.name}[/] ({variant.describe}): started "
                    f"{', '.join(names)}; logs in {folder / 'logs'}")
            components["bridge"].wait_for_log("subscribed to", timeout=90)
            self._measure(settings, workload, collector, components, result)
        except (RuntimeError, TimeoutError, OSError) as exc:
            result.error = str(exc)
        finally:
            for component in components.values():
                component.stop()
            collector.stop()
            with contextlib.suppress(Exception):
                clear_bridge_session(settings)
        result.dead_letters = collector.dead_letters
        result.points_matched = len(collector.arrivals)
        result.points_missing = len(expected) - len(collector.arrivals)
        result.points_duplicate = collector.duplicates
        result.points_unexpected = collector.unexpected
        result.ok = (result.error is None and result.points_missing == 0
                     and result.points_duplicate == 0 and result.points_unexpected == 0
                     and result.dead_letters == 0 and result.unrouted == 0)
        if result.error:
            err.log(f"[red]{variant.name} failed:[/] {escape(result.error)}")
            for component in components.values():
                err.print(f"--- {component.name} log ({component.log_file}) ---\n"
                          f"{component.log_tail(15)}", markup=False, style="dim")
        return result

    def _measure(self, settings: Settings, workload: Workload, collector: PointCollector,
                 components: dict[str, Component], result: VariantResult) -> None:
        from ingest.publisher import RunnerPublisher

        pids = {name: python_pid(c.proc.pid) for name, c in components.items()
                if c.proc is not None}
        # the brokers: CPU only (their peak RSS covers every variant run so far)
        services = {name: pid for name, pid in stack_pids(self.stack_settings).items()
                    if pid is not None}
        sent: dict[tuple[str, int], float] = {}
        clock = time.perf_counter
        # the stack's settings: the runners' MQTT passwords are in its data folder
        with RunnerPublisher(self.stack_settings, client_prefix=settings.topic_prefix
                             ) as publisher, _progress() as progress:
            warm = warmup_messages(workload.runners, workload.end_t - workload.minutes * 60
                                   - 3600)
            publisher.publish_all(warm)
            publisher.flush()
            self._wait(collector, components, lambda: collector.warmups >= len(warm), 180,
                       "the warm-up points (bridge and worker up)")
            unrouted_before = publisher.unrouted
            cpu_before = {n: _cpu_seconds(p) for n, p in (pids | services).items()}
            publish = progress.add_task(f"{result.variant}: publishing", total=len(
                workload.messages))
            first = clock()
            for i, ((topic, payload), key) in enumerate(zip(workload.messages,
                                                             workload.batch_keys,
                                                             strict=True)):
                if self.rate:
                    ahead = first + i / self.rate - clock()
                    if ahead > 0:
                        time.sleep(ahead)
                if key is not None:
                    sent[key] = clock()
                publisher.publish(topic, payload)
                if i % 64 == 0:
                    progress.update(publish, completed=i)
            publisher.flush()
            published = clock()
            progress.update(publish, completed=len(workload.messages))
            result.unrouted = publisher.unrouted - unrouted_before
            result.publish_msgs_per_s = len(workload.messages) / (published - first)
            points = progress.add_task(f"{result.variant}: run_window points",
                                       total=len(sent))
            stalled = self._wait_points(collector, components, len(sent),
                                        lambda: progress.update(points,
                                                                completed=collector.matched))
            cpu_after = {n: _cpu_seconds(p) for n, p in (pids | services).items()}
            for name, pid in (pids | services).items():
                hwm = _proc_status_kb(pid, "VmHWM") if name in pids else None
                before, after = cpu_before.get(name), cpu_after.get(name)
                result.processes[name] = ProcessStats(
                    peak_rss_mb=hwm / 1024 if hwm is not None else None,
                    cpu_s=after - before if after is not None and before is not None
                    else None)
            sink_done = None
            if self.with_sink and collector.last_arrival is not None:
                sink_done = asyncio.run(_sink_caught_up(settings, collector.metric_positions(),
                                                        120))
            time.sleep(1.0)  # a repeated point would come right behind
        for name, attr in (("worker", "worker_cpu_ms_per_record"),
                           ("bridge", "bridge_cpu_ms_per_record"),
                           ("kafka", "kafka_cpu_ms_per_record"),
                           ("mosquitto", "mqtt_cpu_ms_per_record")):
            cpu = result.processes[name].cpu_s if name in result.processes else None
            if cpu is not None:
                setattr(result, attr, cpu * 1000 / len(workload.messages))
        last = collector.last_arrival
        if last is not None:
            result.e2e_s = last - first
            result.e2e_records_per_s = len(workload.messages) / result.e2e_s
            result.e2e_samples_per_s = workload.samples / result.e2e_s
        result.latency_ms = {k: v * 1000
                             for k, v in percentiles(collector.latencies(sent)).items()}
        if sink_done is not None and last is not None:
            result.sink_caught_up_s = sink_done - last
        if stalled:
            raise TimeoutError(f"no new run_window point for {self.stall_timeout:.0f} s; "
                               f"{collector.matched}/{len(sent)} arrived")

    def _wait(self, collector: PointCollector, components: dict[str, Component],
              done: Callable[[], bool], within_s: float, what: str) -> None:
        deadline = time.monotonic() + within_s
        while not done():
            self._check_alive(collector, components)
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {within_s:.0f} s waiting for {what}")
            time.sleep(0.1)

    def _wait_points(self, collector: PointCollector, components: dict[str, Component],
                     expected: int, tick: Callable[[], None]) -> bool:
        """Wait for every point; True if it stalled (no new point for the stall timeout)."""
        seen, since = -1, time.monotonic()
        while True:
            matched = collector.matched
            tick()
            if matched >= expected:
                return False
            if matched != seen:
                seen, since = matched, time.monotonic()
            elif time.monotonic() - since > self.stall_timeout:
                return True
            self._check_alive(collector, components)
            time.sleep(0.1)

    @staticmethod
    def _check_alive(collector: PointCollector, components: dict[str, Component]) -> None:
        if collector.error is not None:
            raise RuntimeError(f"reading the metrics topic failed: {collector.error}")
        for component in components.values():
            if not component.alive():
                raise RuntimeError(f"{component.name} exited; its log ends:\n"
                                   f"{component.log_tail(15)}")


def stack_pids(settings: Settings) -> dict[str, int | None]:
    """Pids of the local stack's brokers (None where the stack is not a local one)."""
    from deploy.stack import LocalStack

    stack = LocalStack(settings)
    return {"kafka": stack.kafka.pid(), "mosquitto": stack.mosquitto.pid()}


@dataclass
class BenchStack:
    settings: Settings
    workdir: Path  # the variants' logs
    keep: bool = False  # keep the temporary folder (a variant failed)


@contextlib.contextmanager
def bench_stack(use_running: bool) -> Iterator[BenchStack]:
    """The stack's settings and a folder for the variants' logs.

    Without ``use_running``: a stack of its own on free ports in a temporary folder,
    stopped at the end; the folder is removed unless something failed.
    """
    from deploy.stack import LocalStack

    if use_running:
        settings = load_settings()
        folder = settings.data_dir.resolve() / "bench"
        folder.mkdir(parents=True, exist_ok=True)
        yield BenchStack(settings, folder)
        return
    root = Path(tempfile.mkdtemp(prefix="stridewatch-bench-"))
    settings = load_settings(
        data_dir=root / "stack", mqtt_port=free_port(),
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        influx_url=f"http://127.0.0.1:{free_port()}", influx_rpc_port=free_port())
    stack = LocalStack(settings)
    bench = BenchStack(settings, root, keep=True)
    try:
        stack.up(echo=lambda line: err.log(line))
        yield bench
    finally:
        stack.down(echo=lambda line: None)
        if bench.keep:
            err.log(f"kept {root} (logs of the stack and the variants)")
        else:
            shutil.rmtree(root, ignore_errors=True)


def ensure_runner_accounts(settings: Settings, runners: Sequence[str]) -> None:
    from deploy.stack import Mosquitto

    mosquitto = Mosquitto(settings)
    missing = [r for r in runners if mosquitto.runner_password(r) is None]
    if missing:
        err.log(f"creating MQTT accounts for {len(missing)} simulated runners")
    for runner in missing:
        mosquitto.add_runner(runner)


# ------------------------------------------------------------------------------ tables
def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def core_table(core: CoreResult) -> Table:
    table = Table(title=f"core: process_event, {core.runners} runners, {core.history_weeks} "
                        f"weeks of history + a {core.live_minutes:g} min live run each",
                  title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    lat = core.step_latency_ms
    rows = [
        ("events (sample batches, sessions, pain reports)", _num(core.events)),
        ("samples", _num(core.samples)),
        ("events/s (process_event only)", _num(core.step_events_per_s)),
        ("samples/s (process_event only)", _num(core.step_samples_per_s)),
        ("latency per event p50 / p95 / p99 / max (ms)",
         " / ".join(_num(lat[k], 3) for k in ("p50", "p95", "p99", "max"))),
        ("  live per-foot batches only (~3 samples)",
         " / ".join(_num(core.live_batch_latency_ms[k], 3)
                    for k in ("p50", "p95", "p99", "max"))),
        ("events/s incl. state JSON round trip (the worker's loop)",
         _num(core.worker_loop_events_per_s)),
        ("state JSON round trip p50 / p99 (ms)",
         f"{_num(core.state_json_ms['p50'], 3)} / {_num(core.state_json_ms['p99'], 3)}"),
        ("peak RSS growth (MB)", _num(core.peak_rss_growth_mb, 1)),
        ("final state per runner, mean / max (bytes of JSON)",
         f"{_num(core.state_bytes_mean)} / {_num(core.state_bytes_max)}"),
        ("alerts / metric points emitted", f"{_num(core.alerts)} / {_num(core.points)}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def pipeline_table(results: Sequence[VariantResult], workload: Workload,
                   with_sink: bool) -> Table:
    table = Table(title=f"pipeline: {len(workload.runners)} runners × {workload.minutes:g} min "
                        f"live, {len(workload.messages):,} MQTT messages ({workload.batches:,} "
                        f"sample batches, {workload.samples:,} samples) per variant",
                  title_justify="left")
    columns = ["variant", "publish\nmsg/s", "e2e\nrec/s", "latency ms\np50", "p95", "p99",
               "max", "worker CPU\nms/rec", "Kafka CPU\nms/rec", "worker\nRSS MB",
               "bridge\nRSS MB"]
    if with_sink:
        columns += ["sink\nRSS MB", "sink done\n+s"]
    columns += ["dead\nletters", "every batch → one point"]
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i in (0, len(columns) - 1) else "right")
    for r in results:
        lat = r.latency_ms
        proc = r.processes
        row = [f"[bold]{escape(r.variant)}[/]\n[dim]{escape(r.describe)}[/]",
               _num(r.publish_msgs_per_s), _num(r.e2e_records_per_s),
               *(_num(lat.get(k), 0) for k in ("p50", "p95", "p99", "max")),
               _num(r.worker_cpu_ms_per_record, 2), _num(r.kafka_cpu_ms_per_record, 2),
               _num(proc["worker"].peak_rss_mb if "worker" in proc else None),
               _num(proc["bridge"].peak_rss_mb if "bridge" in proc else None)]
        if with_sink:
            row += [_num(proc["sink"].peak_rss_mb if "sink" in proc else None),
                    _num(r.sink_caught_up_s, 1)]
        verdict = (f"[green]ok[/] {r.points_matched:,}/{r.batches:,}" if r.ok else
                   f"[bold red]FAIL[/] {r.points_matched:,}/{r.batches:,}, "
                   f"{r.points_missing} missing, {r.points_duplicate} repeated, "
                   f"{r.points_unexpected} stray, {r.unrouted} unrouted"
                   + (f"; {escape(_gist(r.error))}" if r.error else ""))
        row += [str(r.dead_letters), verdict]
        table.add_row(*row)
    return table


def _gist(error: str) -> str:
    """First line of an error, and its last (e.g. a log tail's exception) if different."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"


# ------------------------------------------------------------------------------ command
@click.command("bench")
@click.option("--part", type=click.Choice(["all", "core", "pipeline"]), default="all",
              show_default=True, help="Which part to run.")
@click.option("--runners", type=click.IntRange(1, 200), default=None,
              help="Simulated runners.  [default: 20; 3 with --quick]")
@click.option("--history-weeks", type=click.IntRange(0, 52), default=None,
              help="core: weeks of past runs per runner before the live run.  "
                   "[default: 6; 2 with --quick]")
@click.option("--minutes", type=click.FloatRange(0.1, 180), default=None,
              help="Length of each runner's live run (per-foot samples, ~1 batch/s).  "
                   "[default: 5; 1 with --quick]")
@click.option("--variant", "variant_specs", multiple=True,
              metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
              help="pipeline: a settings variant to compare (repeat). [default: "
                   + " and ".join(DEFAULT_VARIANTS) + "]")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="pipeline: publish at most this many messages/s (0: as fast as QoS 1 "
                   "acknowledgements allow).")
@click.option("--with-sink", is_flag=True, help="pipeline: also run the InfluxDB writer.")
@click.option("--use-running-stack", is_flag=True,
              help="pipeline: use the stack the settings point at (`stridewatch stack up`) "
                   "instead of starting one on free ports.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the raw numbers to this file.")
@click.option("--quick", is_flag=True, help="A smoke run of about 30 s.")
@click.option("--stall-timeout", type=click.FloatRange(min=1), default=90.0,
              show_default=True,
              help="pipeline: give a variant up when no new point arrived for this long (s).")
def bench_command(part: str, runners: int | None, history_weeks: int | None,
                  minutes: float | None, variant_specs: tuple[str, ...], rate: float,
                  with_sink: bool, use_running_stack: bool, json_file: Path | None,
                  quick: bool, stall_timeout: float) -> None:
    """Measure throughput, latency and memory: the pure step (core) and the pipeline with
    each settings variant, in one run; print one table per part."""
    n_runners = runners or (3 if quick else 20)
    weeks = history_weeks if history_weeks is not None else (2 if quick else 6)
    live = minutes or (1.0 if quick else 5.0)
    try:
        settings = load_settings()
    except (ValueError, ValidationError) as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from None
    try:
        variants = [parse_variant(s) for s in (variant_specs or DEFAULT_VARIANTS)]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--variant") from None
    if len({v.name.lower() for v in variants}) != len(variants):
        raise click.BadParameter("variant names must be unique", param_hint="--variant")
    for v in variants:  # a bad value stops here, not after the core part ran
        try:
            Settings(**{**settings.model_dump(), **v.overrides})
        except ValidationError as exc:
            raise click.BadParameter(f"variant {v.name}: {exc}", param_hint="--variant"
                                     ) from None
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=180)
    # event time only matters to the maths: the runs end at the start of the current UTC
    # day, so the simulated workload (seeded by its end time) is the same all day long
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_start": os.getloadavg()},
        "params": {"part": part, "runners": n_runners, "history_weeks": weeks,
                   "minutes": live, "rate": rate, "with_sink": with_sink, "quick": quick,
                   "runs_end": end.isoformat(),
                   "variants": [asdict(v) for v in variants]},
    }
    tables: list[Table] = []
    failed = False
    if part in ("all", "core"):
        err.log(f"core: {n_runners} runners, {weeks} weeks of history + {live:g} min live")
        core = run_core(settings, n_runners, weeks, live, end)
        report["core"] = asdict(core)
        tables.append(core_table(core))
    if part in ("all", "pipeline"):
        workload = plan_workload(n_runners, live, end.timestamp())
        results: list[VariantResult] = []
        with bench_stack(use_running_stack) as stack:
            ensure_runner_accounts(stack.settings, workload.runners)
            bench = PipelineBench(stack.settings, stack.workdir, rate=rate,
                                  with_sink=with_sink, stall_timeout=stall_timeout)
            for variant in variants:
                results.append(bench.run(variant, workload))
            stack.keep = not all(r.ok for r in results)
        report["pipeline"] = {"runners": n_runners, "minutes": live,
                              "records": len(workload.messages),
                              "batches": workload.batches, "samples": workload.samples,
                              "variants": [asdict(r) for r in results]}
        tables.append(pipeline_table(results, workload, with_sink))
        failed = not all(r.ok for r in results)
    report["machine"]["load_avg_end"] = os.getloadavg()
    for table in tables:
        out.print(table)
    load = report["machine"]
    out.print(f"[dim]{load['cpus']} CPUs; load average {load['load_avg_start'][0]:.2f} at "
              f"start, {load['load_avg_end'][0]:.2f} at end: other work on the machine "
              "moves these numbers.[/]")
    if json_file is not None:
        json_file.write_text(json.dumps(_finite(report), indent=2, default=_json_default,
                                        allow_nan=False) + "\n")
        out.print(f"raw numbers in {json_file}")
    if failed:
        raise SystemExit(1)


def _finite(value: object) -> object:
    """NaN (a number that could not be measured) becomes null: the file stays valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


if __name__ == "__main__":
    bench_command()
