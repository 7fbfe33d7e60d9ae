"""The recovery part: how long a worker takes to process again after a start, with
Faust's memory store and with its RocksDB store (``worker_store``).

The state changelog is filled once with the stored parts of ``runners`` runners (each the
parts a real runner with ``weeks`` of history leaves in the table, from the pure step);
then, for each store, a worker with an empty data folder starts (it reads the whole
changelog either way), stops cleanly, and starts again. Each start is timed to the
moment the worker has its partitions (the group joined) and to its first output: one
probe record is waiting on the events topic, and a worker processes records only once
its tables are recovered. With the memory store the second start reads the whole
changelog again; with RocksDB only what was written since the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from base.settings import Settings
from ingest.contract import RunnerEvent
from stridewatch.bench.common import Variant, bench_team, err, progress, variant_settings
from stridewatch.processes import Component

STORES = ("memory://", "rocksdb://")
ASSIGNED_MARKER = "assigned partitions"
# changelog records in flight while filling (each its own batch: see base.kafka)
FILL_WINDOW = 500


@dataclass
class StartTiming:
    """One worker start: seconds from the process start."""

    assigned_s: float = math.nan  # partitions assigned (group joined)
    first_output_s: float = math.nan  # the probe record's output on the metrics topic

    @property
    def recovery_s(self) -> float:
        """Between the two: reading the changelog, and the probe's own step."""
        return self.first_output_s - self.assigned_s


@dataclass
class RecoveryResult:
    store: str
    runners: int
    changelog_records: int
    changelog_mb: float
    starts: dict[str, StartTiming] = field(default_factory=dict)  # "first", "restart"
    ok: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Changelog:
    """What the changelog holds: key → value, and the partition of each key."""

    records: list[tuple[bytes, bytes, int]]

    @property
    def bytes(self) -> int:
        return sum(len(k) + len(v) for k, v, _ in self.records)


def runner_parts(settings: Settings, runners: int, weeks: int, end: datetime
                 ) -> tuple[list[tuple[bytes, bytes]], RunnerEvent, list[str]]:
    """The table rows of ``runners`` runners with ``weeks`` of history.

    The pure step folds the history of one runner per demo profile; the others get a copy
    of their profile's parts under their own keys (a state holds no runner id: the key
    names it). Also returns a live samples event of the first runner (the probe's
    template) and the runner ids.
    """
    from ingest.simulator import plan_history, plan_live
    from rules.catalogue import load_catalogue
    from stream.state_codec import history_key, seen_key
    from stridewatch.bench.core import HeldState, _decode, step_as_worker, stored_parts
    from team.roster import load_roster

    catalogue = load_catalogue(settings.rules_dir)
    roster = load_roster(settings.roster_file)
    team = bench_team(runners)
    models = team[:5]
    parts: list[tuple[bytes, bytes | None, bytes | None]] = []
    for r in models:
        profile = roster.profile(r.runner, catalogue)
        held: HeldState | None = None
        live: bytes = b""
        seen: bytes | None = None
        history: bytes | None = None
        for event in _decode(list(plan_history(r, end, weeks)), end.timestamp()):
            held, stored, _ = step_as_worker(held, event, profile)
            if stored is not None:
                live, new_seen, new_history = stored_parts(stored)
                seen = new_seen or seen
                history = new_history or history
        parts.append((live, seen, history))
    probe = next(e for e in _decode(list(plan_live(models[0], end.timestamp(), 1.0)),
                                    end.timestamp()) if e.samples is not None)
    rows: list[tuple[bytes, bytes]] = []
    for i, r in enumerate(team):
        live, seen, history = parts[i % len(parts)]
        key = r.runner.encode()
        rows.append((key, live))
        if seen is not None:
            rows.append((seen_key(key), seen))
        if history is not None:
            rows.append((history_key(key), history))
    return rows, probe, [r.runner for r in team]


def plan_changelog(settings: Settings, rows: Sequence[tuple[bytes, bytes]]) -> Changelog:
    """Every row on the partition Faust would write it to: its runner's partition."""
    from ingest.records import partition_for
    from stream.state_codec import HISTORY_SUFFIX, SEEN_SUFFIX

    def runner_of(key: bytes) -> str:
        # the seen and history keys extend the runner's key (stream.state_codec)
        return key.removesuffix(HISTORY_SUFFIX).removesuffix(SEEN_SUFFIX).decode()

    return Changelog([(k, v, partition_for(runner_of(k), settings.kafka_partitions))
                      for k, v in rows])


async def fill_changelog(settings: Settings, changelog: Changelog) -> None:
    from base.kafka import ONE_RECORD_BATCH_BYTES, ensure_topics, make_producer

    await ensure_topics(settings)
    # one record per batch: the local broker's end offsets stay exact (docs/operations.md)
    producer = make_producer(settings, max_batch_size=ONE_RECORD_BATCH_BYTES, linger_ms=0,
                             max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        with progress() as bar:
            task = bar.add_task("recovery: filling the state changelog",
                                total=len(changelog.records))
            for start in range(0, len(changelog.records), FILL_WINDOW):
                chunk = changelog.records[start:start + FILL_WINDOW]
                sent = [await producer.send(settings.state_changelog_topic, value=v, key=k,
                                            partition=p) for k, v, p in chunk]
                await asyncio.gather(*sent)
                bar.advance(task, len(chunk))
    finally:
        await producer.stop()


async def send_probe(settings: Settings, probe: RunnerEvent) -> None:
    from base.kafka import make_producer
    from ingest.records import partition_for, single_record

    record = single_record(settings, probe)
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(record.topic, record.value, key=record.key,
                                     partition=partition_for(probe.runner,
                                                             settings.kafka_partitions))
    finally:
        await producer.stop()


def _probe(template: RunnerEvent, n: int) -> RunnerEvent:
    """The template, ``n`` hours later with its own sequence number: never a duplicate."""
    batch = template.samples
    assert batch is not None
    shifted = [s.model_copy(update={"t": s.t + 3600 * n}) for s in batch.samples]
    return template.model_copy(update={"samples": batch.model_copy(
        update={"seq": batch.seq + 1_000_000 * n, "samples": shifted})})


def _metrics_count(settings: Settings) -> int:
    from base.kafka import high_watermarks

    return sum(asyncio.run(high_watermarks(settings, settings.metrics_topic)).values())


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def time_start(settings: Settings, worker: Component, probe: RunnerEvent, timeout_s: float
               ) -> StartTiming:
    """Start ``worker`` with ``probe`` waiting on the events topic; time the two moments."""
    timing = StartTiming()
    before = _metrics_count(settings)
    asyncio.run(send_probe(settings, probe))
    offset = _log_size(worker.log_file)
    t0 = time.monotonic()
    worker.start()
    deadline = t0 + timeout_s
    def assigned() -> bool:
        with worker.log_file.open("rb") as log:
            log.seek(offset)
            return ASSIGNED_MARKER.encode() in log.read()

    while time.monotonic() < deadline:
        if math.isnan(timing.assigned_s) and assigned():
            timing.assigned_s = time.monotonic() - t0
        if _metrics_count(settings) > before:
            timing.first_output_s = time.monotonic() - t0
            # a quick recovery can bring the output within one poll of the log line (or
            # before the line is flushed): it came no later than the output, then
            grace = time.monotonic() + 15
            while math.isnan(timing.assigned_s) and time.monotonic() < grace:
                if assigned():
                    timing.assigned_s = timing.first_output_s
                time.sleep(0.1)
            return timing
        if not worker.alive():
            raise RuntimeError(f"the worker exited; its log ({worker.log_file}) ends:\n"
                               f"{worker.log_tail()}")
        time.sleep(0.1)
    raise TimeoutError(f"no output within {timeout_s:.0f} s of the start; see "
                       f"{worker.log_file}")


def run_recovery(stack_settings: Settings, workdir: Path, runners: int, weeks: int,
                 end: datetime, timeout_s: float, stores: Sequence[str] = STORES
                 ) -> list[RecoveryResult]:
    """Both stores on one changelog (filled once), one after the other."""
    tag = f"rec-{secrets.token_hex(3)}"
    # one app id, so both stores read the same changelog; each its own data folder
    shared = variant_settings(stack_settings, Variant("recovery", {}), tag, workdir / tag)
    err.log(f"recovery: {runners:,} runners with {weeks} weeks of history each")
    rows, probe, _ = runner_parts(shared, runners, weeks, end)
    changelog = plan_changelog(shared, rows)
    asyncio.run(fill_changelog(shared, changelog))
    results: list[RecoveryResult] = []
    n = 0
    for store in stores:
        result = RecoveryResult(store, runners, len(changelog.records),
                                changelog.bytes / 1e6)
        results.append(result)
        name = store.removesuffix("://")
        settings = variant_settings(stack_settings,
                                    Variant(name, {"worker_store": store}), tag,
                                    workdir / tag / name)
        worker = Component(settings, "worker")
        try:
            for start in ("first", "restart"):
                n += 1
                err.log(f"recovery: {name} store, {start} start")
                result.starts[start] = time_start(settings, worker, _probe(probe, n),
                                                  timeout_s)
                worker.stop(timeout=60)
            result.ok = True
        except (RuntimeError, TimeoutError, OSError) as exc:
            result.error = str(exc)
        finally:
            with contextlib.suppress(Exception):
                worker.stop(timeout=60)
    return results
