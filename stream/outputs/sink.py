"""The metrics sink (``stridewatch sink``): Kafka metrics topic → InfluxDB.

Durability, in order:

1. A batch is read from Kafka (up to ``influx_batch_size`` records, or what arrived
   within ``influx_flush_s`` of its first record) and written as one gzip request.
2. While InfluxDB is away (refused connections, timeouts, 5xx, 429, bad credentials, a
   missing database) the same batch is retried with exponential backoff and jitter, for
   as long as it takes. Nothing is committed meanwhile, so the points wait in Kafka.
3. Only after the batch landed are its offsets committed (exactly the offsets of the
   records written). A crash anywhere before that rewrites the batch on restart, which
   is harmless: a point's identity is measurement + tags + time, so it overwrites itself.
4. A point the database refuses as data (a field type conflict, a time outside the
   retention policy) must not block the stream forever: the batch is split in halves
   until the refused points are isolated; those are logged with the reason and skipped,
   every other point is written. InfluxDB 1.x itself writes the rest of a batch and
   answers "partial write: ... dropped=N". For points beyond the retention policy N is
   exact and counted with the reason. For any other reason (a field type conflict) N
   leaves out the points it also dropped for retention, so such a batch is split like
   any other refusal (what was written overwrites itself): every refused point is counted.

The counts (written, refused, since when, the last reason) are in the report line every
30 s and in the status file ``stridewatch status`` and ``stridewatch stack status`` show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from base import ops, status
from base.forgotten import ForgottenList
from base.kafka import commit_offsets, ensure_topics, make_consumer
from base.settings import Settings
from stream.metrics import MetricPoint, decode_points
from stream.outputs.influx import PointWriter, WriteError, make_writer, to_line_protocol
from stream.outputs.retention import Pruner

log = logging.getLogger("stridewatch.sink")
REPORT_EVERY_S = 30.0
DROPPED = re.compile(r"dropped=(\d+)")  # InfluxDB's count of points refused in a partial write
# the one partial-write reason whose count is the whole count (InfluxDB 1.x reports one
# reason: a field type conflict hides the retention drops of the same batch)
RETENTION_DROP = "points beyond retention policy"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial_s`` · ``factor``^(n-1), at most ``max_s``, minus up to
    ``jitter`` of it at random so that several sinks do not retry in lockstep."""

    initial_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        base = min(self.max_s, self.initial_s * self.factor ** max(0, failures - 1))
        return base * (1.0 - self.jitter * (rng or random).random())


DEFAULT_BACKOFF = Backoff()


@dataclass
class BatchResult:
    """How a batch went: ``done`` is False only when asked to stop before it landed."""

    done: bool
    written: int = 0
    refused: int = 0
    attempts: int = 0
    failures: int = 0
    refused_reason: str | None = None  # the last refusal's reason, as InfluxDB gave it


async def write_with_retry(writer: PointWriter, points: Sequence[MetricPoint],
                           stop: asyncio.Event, backoff: Backoff = DEFAULT_BACKOFF
                           ) -> BatchResult:
    """Write ``points`` until they land (see the module docstring for the rules)."""
    result = BatchResult(done=True)
    pending: list[Sequence[MetricPoint]] = [points] if points else []
    failures = 0  # consecutive failures of the server (not of the data)
    outage_since: float | None = None
    while pending:
        chunk = pending[0]
        result.attempts += 1
        try:
            await asyncio.to_thread(writer.write, chunk)
        except WriteError as exc:
            if not exc.retryable:
                pending.pop(0)
                _on_refused(exc, chunk, pending, result)
                continue
            error: Exception = exc
            retry_after = exc.retry_after
        except Exception as exc:  # a bug or an unexpected client error: hold the points
            log.exception("unexpected error writing %d points; will retry", len(chunk))
            error, retry_after = exc, None
        else:
            pending.pop(0)
            result.written += len(chunk)
            ops.condition("influx_write", None)
            if outage_since is not None:
                log.info("InfluxDB accepts writes again after %.1f s and %d failed attempts",
                         time.monotonic() - outage_since, failures)
                outage_since, failures = None, 0
            continue
        failures += 1
        result.failures += 1
        ops.inc("stridewatch_sink_influx_write_failures_total")
        ops.condition("influx_write", f"the last write failed: {type(error).__name__}")
        outage_since = outage_since or time.monotonic()
        delay = backoff.delay(failures)
        if retry_after is not None:
            delay = max(delay, min(retry_after, 6 * backoff.max_s))
        log.warning("%s; attempt %d failed, retrying in %.1f s (%d points held, offsets not "
                    "committed)", error, failures, delay, sum(len(c) for c in pending))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            result.done = False
            return result
    return result


def _on_refused(exc: WriteError, chunk: Sequence[MetricPoint],
                pending: list[Sequence[MetricPoint]], result: BatchResult) -> None:
    """The server refused data, not us: keep every point it would accept."""
    found = DROPPED.search(str(exc)) if exc.partial else None
    if found and (RETENTION_DROP in str(exc) or len(chunk) == 1):
        # the server wrote the rest of the batch itself (InfluxDB "partial write")
        dropped = min(len(chunk), int(found.group(1)))
        log.error("InfluxDB refused %d of a batch of %d points (the others are written): "
                  "%s", dropped, len(chunk), exc)
        result.written += len(chunk) - dropped
        result.refused += dropped
        result.refused_reason = refusal_reason(exc)
        return
    # no count, or one that may be short: isolate the refused points
    if len(chunk) > 1:
        half = len(chunk) // 2
        pending[0:0] = [chunk[:half], chunk[half:]]
        if not exc.too_large:
            log.warning("%s; splitting the batch of %d to isolate the refused points",
                        exc, len(chunk))
        return
    result.refused += 1
    result.refused_reason = refusal_reason(exc)
    log.error("InfluxDB refused a point, skipping it: %s; point: %s", exc,
              to_line_protocol(chunk[0])[:500])


def refusal_reason(exc: WriteError) -> str:
    """InfluxDB's reason without the server prefix and the JSON around it, short."""
    text = str(exc)
    for marker in ("partial write:", '"error":"'):
        if marker in text:
            text = text.split(marker, 1)[1]
    return DROPPED.sub("", text).replace('\\"', '"').strip(' "{}\n').rstrip(",")[:200]


async def next_batch(consumer: AIOKafkaConsumer, size: int, flush_s: float,
                     stop: asyncio.Event) -> list[ConsumerRecord[bytes, bytes]]:
    """Up to ``size`` records, or what arrived within ``flush_s`` of the first one."""
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline: float | None = None
    while len(records) < size and not stop.is_set():
        wait_s = flush_s if deadline is None else deadline - time.monotonic()
        if wait_s <= 0:
            break
        got = await consumer.getmany(timeout_ms=max(1, int(wait_s * 1000)),
                                     max_records=size - len(records))
        new = [r for rs in got.values() for r in rs]
        if not new and deadline is None:
            break  # nothing at all: let the caller look at ``stop``
        if deadline is None:
            deadline = time.monotonic() + flush_s
        records += new
    return records


def without_forgotten(points: list[MetricPoint], forgotten: ForgottenList
                      ) -> tuple[list[MetricPoint], int]:
    """The points of runners not forgotten, and how many were left out: a forgotten
    runner's points still in the metrics topic must not bring their series back."""
    if not len(forgotten):
        return points, 0
    kept = [p for p in points if dict(p.tags).get("runner") not in forgotten]
    return kept, len(points) - len(kept)


def decode(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[MetricPoint]:
    points = []
    for record in records:
        try:
            points.extend(decode_points(record.value or b""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("skipping a malformed metric record at %s[%d]@%d: %s",
                      record.topic, record.partition, record.offset, exc)
    return points


@dataclass
class SinkStats:
    written: int = 0
    refused: int = 0
    forgotten_dropped: int = 0  # points of forgotten runners, never written
    batches: int = 0
    since: float = field(default_factory=time.monotonic)
    refused_since: float | None = None  # wall-clock time of the first refusal
    last_refused_at: float | None = None
    last_refused_reason: str | None = None

    def add(self, result: BatchResult) -> None:
        self.written += result.written
        self.refused += result.refused
        self.batches += 1
        if result.refused:
            now = time.time()
            self.refused_since = self.refused_since or now
            self.last_refused_at = now
            self.last_refused_reason = result.refused_reason

    def counters(self) -> dict[str, int | float | str | None]:
        """What the status file shows (base/status.py)."""
        return {"written": self.written, "refused": self.refused, "batches": self.batches,
                "forgotten_dropped": self.forgotten_dropped,
                "refused_since": self.refused_since, "last_refused_at": self.last_refused_at,
                "last_refused_reason": self.last_refused_reason}

    def report(self) -> str:
        line = f"wrote {self.written} points in {self.batches} batches so far"
        if not self.refused:
            return line + " (0 refused)"
        return (f"{line}; {self.refused} points refused by InfluxDB since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(self.refused_since))} UTC "
                f"(last: {self.last_refused_reason})")


async def _prepare(writer: PointWriter, stop: asyncio.Event, backoff: Backoff) -> bool:
    failures = 0
    while not stop.is_set():
        try:
            await asyncio.to_thread(writer.prepare)
            return True
        except WriteError as exc:
            failures += 1
            delay = backoff.delay(failures)
            log.warning("%s; waiting for InfluxDB (next try in %.1f s)", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    return False


async def run_sink(settings: Settings, stop: asyncio.Event | None = None,
                   backoff: Backoff = DEFAULT_BACKOFF) -> None:
    stop = stop or asyncio.Event()
    await ensure_topics(settings)
    writer = make_writer(settings)
    stats = SinkStats()
    reporter = status.current()
    reporter.update(**stats.counters())
    forgotten = ForgottenList(settings)
    try:
        pruner = Pruner(settings)
    except ValueError as exc:  # a setting the operator must fix: say which, stop
        log.error("%s", exc)
        writer.close()
        raise SystemExit(2) from None
    try:
        if not await _prepare(writer, stop, backoff):
            return
        await forgotten.start()
        consumer = make_consumer(settings, settings.metrics_topic, group_id=settings.sink_group,
                                 max_poll_records=settings.influx_batch_size)
        await consumer.start()
        log.info("writing %s to %s in batches of up to %d points (flush every %.1f s)",
                 settings.metrics_topic, writer_server(writer), settings.influx_batch_size,
                 settings.influx_flush_s)
        ops.condition("consuming", None)
        last_report = time.monotonic()
        try:
            while not stop.is_set():
                records = await next_batch(consumer, settings.influx_batch_size,
                                           settings.influx_flush_s, stop)
                await pruner.maybe_prune()
                if not records:
                    continue
                ops.inc("stridewatch_sink_records_in_total", len(records))
                points, dropped = without_forgotten(decode(records), forgotten)
                if dropped:
                    stats.forgotten_dropped += dropped
                    log.warning("dropped %d points of forgotten runners (%d so far)",
                                dropped, stats.forgotten_dropped)
                result = await write_with_retry(writer, points, stop, backoff)
                if not result.done:
                    break  # stopping: nothing committed, the batch is written next time
                await commit_offsets(consumer, records)
                stats.add(result)
                ops.inc("stridewatch_sink_points_written_total", result.written)
                ops.inc("stridewatch_sink_points_refused_total", result.refused)
                reporter.update(**stats.counters())
                if time.monotonic() - last_report > REPORT_EVERY_S:
                    log.info("%s", stats.report())
                    last_report = time.monotonic()
        finally:
            with contextlib.suppress(KafkaError):
                await consumer.stop()
    finally:
        await forgotten.stop()
        writer.close()
        reporter.update(**stats.counters())
        log.info("sink stopped: %s", stats.report())


def writer_server(writer: PointWriter) -> str:
    """``InfluxDB at host:port`` / ``InfluxDB v2 API at host:port``: never credentials."""
    return str(getattr(writer, "server", type(writer).__name__))
