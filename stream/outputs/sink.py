"""The metrics sink (``stridewatch sink``): Kafka metrics topic → InfluxDB.

Reads a batch, writes it, and only then commits the offsets. While InfluxDB is away it
retries with backoff and commits nothing, so after an outage of any length the points
are written from where it stopped; a restart rewrites at most one batch (idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from stream.metrics import MetricPoint
from stream.outputs.influx import PointWriter, WriteError, make_writer
from stridewatch.kafka import ensure_topics, make_consumer
from stridewatch.settings import Settings

log = logging.getLogger("stridewatch.sink")
SINK_GROUP = "stridewatch-influx-writer"


async def write_with_retry(writer: PointWriter, points: Sequence[MetricPoint],
                           stop: asyncio.Event, max_delay: float = 10.0) -> bool:
    """Write until it lands; return False only if asked to stop first."""
    delay = 0.5
    while True:
        try:
            await asyncio.to_thread(writer.write, points)
            return True
        except WriteError as exc:
            if not exc.retryable:
                # a point the database refuses (bad type) must not block the rest forever
                log.error("InfluxDB refused %d points, skipping them: %s", len(points), exc)
                return True
            log.warning("%s; retrying in %.1f s (offsets not committed)", exc, delay)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return False
        delay = min(delay * 2, max_delay)


async def run_sink(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    await ensure_topics(settings)
    writer = make_writer(settings)
    while True:
        try:
            await asyncio.to_thread(writer.prepare)
            break
        except WriteError as exc:
            log.warning("%s; waiting for InfluxDB", exc)
            await asyncio.sleep(1.0)
    consumer = make_consumer(settings, settings.metrics_topic, group_id=SINK_GROUP,
                             max_poll_records=settings.influx_batch_size)
    await consumer.start()
    written = 0
    last_report = time.monotonic()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=int(settings.influx_flush_s * 1000),
                                             max_records=settings.influx_batch_size)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            points = []
            for record in records:
                try:
                    points.append(MetricPoint.from_json(record.value))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("skipping a malformed metric record at %s[%d]@%d: %s",
                              record.topic, record.partition, record.offset, exc)
            if points and not await write_with_retry(writer, points, stop):
                break
            await consumer.commit()
            written += len(points)
            if time.monotonic() - last_report > 30:
                log.info("wrote %d points to InfluxDB so far", written)
                last_report = time.monotonic()
    finally:
        await consumer.stop()
        writer.close()
        log.info("sink stopped after writing %d points", written)
