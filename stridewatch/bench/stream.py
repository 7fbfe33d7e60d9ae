"""The stream part: one pre-filled events topic's records, consumed by one consumer after
another — the StrideWatch worker (per variant), the same computation in Quix Streams, and
a plain aiokafka loop (the ceiling).

Every consumer gets its own topics holding the same records (the bridge's layout, from
:func:`~stridewatch.bench.workload.bridge_records`) and is timed from its first output to
its last: process start-up and group joins are not part of the figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import math
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape

from base.settings import Settings
from ingest import topics
from stridewatch.bench.collector import WARMUP_SESSION, PointCollector
from stridewatch.bench.common import Variant, err, progress, variant_settings
from stridewatch.bench.procstats import CpuMeter, ProcessStats, python_pid, stack_pids
from stridewatch.bench.workload import Message, Record, Workload, bridge_records
from stridewatch.processes import Component, settings_env

QUIX_MISSING = "Quix Streams is not installed: pip install -e '.[bench]'"


@dataclass
class StreamResult:
    """One consumer over the same records."""

    consumer: str  # "stridewatch", "quix", "raw"
    variant: str
    describe: str
    workers: int = 1
    records: int = 0  # Kafka records on the events topic
    batches: int = 0  # device batches in them (what runners sent)
    strides: int = 0
    batches_done: int = 0  # device batches whose output came (raw: consumed)
    seconds: float = math.nan
    batches_per_s: float = math.nan
    strides_per_s: float = math.nan
    cpu_ms_per_batch: float = math.nan  # the consumer process(es)
    broker_cpu_ms_per_batch: float = math.nan
    processes: dict[str, ProcessStats] = field(default_factory=dict)
    duplicates: int = 0
    unexpected: int = 0
    dead_letters: int = 0
    ok: bool = False
    error: str | None = None


async def produce(settings: Settings, topic: str, records: Sequence[Record]) -> None:
    """Send ``records`` with normal batching (the events topic needs no exact end offsets;
    the consumers under test do their own batching)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                linger_ms=5, max_batch_size=256 * 1024,
                                enable_idempotence=False)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, partition=partition)
                   for partition, key, value in records]
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()


def warmup_messages(settings: Settings, runners: Sequence[str], t: float) -> list[Message]:
    """A walking session start on a device of its own for one runner per partition: its
    output proves a consumer owns every partition, before anything is timed."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    parts = list(range(settings.kafka_partitions))
    chosen: dict[int, str] = {}
    for runner in runners:
        chosen.setdefault(partitioner(runner.encode(), parts, parts), runner)
        if len(chosen) == len(parts):
            break
    body = {"seq": round(t * 1000), "session_id": WARMUP_SESSION, "phase": "start", "t": t,
            "sport": "walking"}
    raw = json.dumps(body).encode()
    return [Message(r, topics.device_topic(r, "warmup", "session"), raw, 0, t, t, 0)
            for r in chosen.values()]


def wait_until(done: Callable[[], bool], within_s: float, what: str,
               check: Callable[[], None]) -> None:
    deadline = time.monotonic() + within_s
    while not done():
        check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def wait_progress(count: Callable[[], int], expected: int, stall_s: float, what: str,
                  check: Callable[[], None], tick: Callable[[int], None]) -> None:
    """Wait until ``count()`` reaches ``expected``; give up when it stalls for ``stall_s``."""
    seen, since = -1, time.monotonic()
    while (n := count()) < expected:
        tick(n)
        if n != seen:
            seen, since = n, time.monotonic()
        elif time.monotonic() - since > stall_s:
            raise TimeoutError(f"{what}: no progress for {stall_s:.0f} s at {n}/{expected}")
        check()
        time.sleep(0.05)
    tick(n)


class BenchPart:
    """A part of the bench that runs against the bench's stack, named by a run id of its
    own so its topics, groups and sessions share nothing with other parts."""

    def __init__(self, stack_settings: Settings, workdir: Path, workload: Workload,
                 stall_timeout: float) -> None:
        self.stack_settings = stack_settings
        self.workdir = workdir
        self.workload = workload
        self.stall_timeout = stall_timeout
        self.run_id = secrets.token_hex(2)


class StreamBench(BenchPart):
    """Runs the stream stage's consumers one after another against one stack."""

    def __init__(self, stack_settings: Settings, workdir: Path, workload: Workload,
                 stall_timeout: float) -> None:
        super().__init__(stack_settings, workdir, workload, stall_timeout)
        self.records = bridge_records(stack_settings, workload.messages, 0.0)
        self.brokers = stack_pids(stack_settings)

    def _settings(self, name: str, variant: Variant) -> tuple[Settings, Path]:
        tag = f"bench-{self.run_id}-{name}"
        folder = self.workdir / tag
        folder.mkdir(parents=True, exist_ok=True)
        return variant_settings(self.stack_settings, variant, tag, folder), folder

    def _result(self, consumer: str, variant: Variant, workers: int = 1) -> StreamResult:
        w = self.workload
        return StreamResult(consumer, variant.name, variant.describe, workers,
                            records=len(self.records), batches=w.batches, strides=w.samples)

    @staticmethod
    def _finish(result: StreamResult, seconds: float, cpu_s: float | None,
                broker_cpu_s: float | None) -> None:
        result.seconds = seconds
        if seconds > 0:
            result.batches_per_s = result.batches_done / seconds
            result.strides_per_s = result.strides / seconds
        if cpu_s is not None and result.batches_done:
            result.cpu_ms_per_batch = cpu_s * 1000 / result.batches_done
        if broker_cpu_s is not None and result.batches_done:
            result.broker_cpu_ms_per_batch = broker_cpu_s * 1000 / result.batches_done

    # ------------------------------------------------------------------ StrideWatch
    def stridewatch(self, variant: Variant, workers: int = 1, label: str = "") -> StreamResult:
        from base.kafka import ensure_topics

        name = label or f"stream-{variant.name.lower()}"
        settings, folder = self._settings(name, variant)
        result = self._result("stridewatch", variant, workers)
        components = [Component(settings, "worker") for _ in range(workers)]
        for i, c in enumerate(components):  # one log per worker
            c.log_file = c.log_file.with_name(f"worker-{i + 1}.log")
        meter = CpuMeter({})
        collector = PointCollector(settings, self.workload.batch_keys(), on_first=meter.start)

        def check() -> None:
            if collector.error is not None:
                raise RuntimeError(f"reading {settings.metrics_topic} failed: "
                                   f"{collector.error}")
            for c in components:
                if c.proc is not None and not c.alive():
                    raise RuntimeError(f"a worker exited; its log ends:\n{c.log_tail(15)}")

        try:
            asyncio.run(ensure_topics(settings))
            collector.start()
            for warm_round, component in enumerate(components, start=1):
                with contextlib.chdir(folder):  # Faust's "<app id>-data" stays in there
                    component.start()
                # an hour or so before the workload's runs, one second apart per round
                warm = warmup_messages(settings, self.workload.runners,
                                       self.workload.end_t - self.workload.seconds - 3600
                                       + warm_round)
                asyncio.run(produce(settings, settings.events_topic,
                                    bridge_records(settings, warm, 0.0)))
                target = collector.warmups + len(warm)

                def warmed(t: int = target) -> bool:
                    return collector.warmups >= t

                wait_until(warmed, 180, "the workers' warm-up outputs", check)
            meter.pids = {f"worker{i + 1}": python_pid(c.proc.pid)
                          for i, c in enumerate(components) if c.proc is not None} \
                | self.brokers
            err.log(f"[bold]{escape(name)}[/] ({escape(variant.describe)}, {workers} "
                    f"worker{'s' if workers > 1 else ''}): producing {len(self.records):,} "
                    "records")
            asyncio.run(produce(settings, settings.events_topic, self.records))
            with progress() as bar:
                task = bar.add_task(f"{name}: outputs", total=result.batches)
                wait_progress(lambda: collector.matched, result.batches, self.stall_timeout,
                              name, check, lambda n: bar.update(task, completed=n))
            meter.stop()
            result.processes = meter.stats()  # while the workers still run (peak RSS)
            time.sleep(0.5)  # a repeated output would come right behind
        except (RuntimeError, TimeoutError, OSError) as exc:
            result.error = str(exc)
        finally:
            for component in components:
                component.stop()
            collector.stop()
        stats = result.processes
        result.batches_done = collector.matched
        result.duplicates, result.unexpected = collector.duplicates, collector.unexpected
        result.dead_letters = collector.dead_letters
        if collector.first_arrival is not None and collector.last_arrival is not None:
            workers_cpu = [s.cpu_s for n, s in stats.items() if n.startswith("worker")]
            self._finish(result, collector.last_arrival - collector.first_arrival,
                         sum(c for c in workers_cpu if c is not None) if workers_cpu
                         else None, stats["kafka"].cpu_s if "kafka" in stats else None)
        result.ok = (result.error is None and result.batches_done == result.batches
                     and not result.duplicates and not result.unexpected
                     and not result.dead_letters)
        self._report_failure(result, components)
        return result

    # ------------------------------------------------------------------ Quix Streams
    def quix(self, variant: Variant) -> StreamResult:
        from base.kafka import ensure_topics

        result = self._result("quix", variant)
        if importlib.util.find_spec("quixstreams") is None:
            result.error = QUIX_MISSING
            return result
        settings, folder = self._settings("stream-quix", variant)
        meter = CpuMeter({})
        collector = PointCollector(settings, self.workload.batch_keys(), on_first=meter.start)
        log = folder / "quix.log"
        proc: subprocess.Popen[bytes] | None = None
        try:
            asyncio.run(ensure_topics(settings))
            asyncio.run(produce(settings, settings.events_topic, self.records))
            collector.start()
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "stridewatch.bench.peers", "quix",
                     "--input", settings.events_topic, "--output", settings.metrics_topic,
                     "--group", settings.app_id, "--state-dir", str(folder / "quix-state")],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=settings_env(settings), start_new_session=True)
            meter.pids = {"quix": proc.pid} | self.brokers

            def check() -> None:
                if collector.error is not None:
                    raise RuntimeError(f"reading the output failed: {collector.error}")
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError("the Quix app exited; its log ends:\n"
                                       + _tail(log))

            err.log(f"[bold]stream-quix[/]: {len(self.records):,} records")
            with progress() as bar:
                task = bar.add_task("quix: outputs", total=result.batches)
                wait_progress(lambda: collector.matched, result.batches,
                              self.stall_timeout + 60, "quix", check,
                              lambda n: bar.update(task, completed=n))
            meter.stop()
            result.processes = meter.stats()
            time.sleep(0.5)
        except (RuntimeError, TimeoutError, OSError) as exc:
            result.error = str(exc)
        finally:
            if proc is not None:
                _stop(proc)
            collector.stop()
        result.batches_done = collector.matched
        result.duplicates, result.unexpected = collector.duplicates, collector.unexpected
        if collector.first_arrival is not None and collector.last_arrival is not None:
            stats = result.processes
            self._finish(result, collector.last_arrival - collector.first_arrival,
                         stats["quix"].cpu_s if "quix" in stats else None,
                         stats["kafka"].cpu_s if "kafka" in stats else None)
        result.ok = (result.error is None and result.batches_done == result.batches
                     and not result.duplicates and not result.unexpected)
        if result.error:
            err.log(f"[red]quix failed:[/] {escape(result.error)}")
        return result

    # ------------------------------------------------------------------ raw loop
    def raw(self, variant: Variant) -> StreamResult:
        from base.kafka import ensure_topics

        result = self._result("raw", variant)
        settings, _ = self._settings("stream-raw", variant)
        try:
            asyncio.run(ensure_topics(settings))
            asyncio.run(produce(settings, settings.events_topic, self.records))
            err.log(f"[bold]stream-raw[/]: {len(self.records):,} records")
            run = subprocess.run(
                [sys.executable, "-m", "stridewatch.bench.peers", "raw", "--topic",
                 settings.events_topic, "--batches", str(result.batches), "--timeout",
                 str(self.stall_timeout * 3)],
                env=settings_env(settings), capture_output=True, text=True,
                timeout=self.stall_timeout * 3 + 60, check=False)
            if run.returncode != 0:
                raise RuntimeError(f"the raw loop failed: {run.stderr[-2000:]}")
            out = json.loads(run.stdout.strip().splitlines()[-1])
            result.batches_done = int(out["batches"])
            self._finish(result, float(out["seconds"]), float(out["cpu_s"]), None)
            result.strides_per_s = int(out["strides"]) / result.seconds
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
            result.error = str(exc)
        result.ok = result.error is None and result.batches_done == result.batches
        return result

    def _report_failure(self, result: StreamResult, components: Sequence[Component]) -> None:
        if not result.error:
            return
        err.log(f"[red]{result.consumer} {result.variant} failed:[/] {escape(result.error)}")
        for c in components:
            err.print(f"--- {c.name} log ({c.log_file}) ---\n{c.log_tail(15)}",
                      markup=False, style="dim")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    import os
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
