"""Reading what a consumer produced: ``run_window`` points, dead letters, topic sizes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from base.settings import Settings
from stream.metrics import RUN_WINDOW, decode_points

WARMUP_SESSION = "bench-warmup"


class PointCollector:
    """Reads a metrics topic (and a dead-letter topic) from the start, in a thread.

    Records the arrival time (``clock``, the publisher's clock) of every
    ``run_window`` point by (runner, time_ms) and the strides it covers; counts repeats,
    strays, warm-up points and dead letters. ``on_first`` runs in the reader's thread at
    the first expected point (e.g. to read CPU counters right then).
    """

    def __init__(self, settings: Settings, expected: set[tuple[str, int]], *,
                 metrics_topic: str | None = None, deadletter_topic: str | None = None,
                 on_first: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics_topic = metrics_topic or settings.metrics_topic
        self.deadletter_topic = deadletter_topic or settings.deadletter_topic
        self.expected = expected
        self.on_first = on_first
        self.arrivals: dict[tuple[str, int], float] = {}
        self.strides = 0
        self.duplicates = 0
        self.unexpected = 0
        self.warmups = 0
        self.dead_letters = 0
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="bench-collector", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout) or self.error is not None:
            raise RuntimeError(f"could not read {self.metrics_topic}: {self.error}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)

    @property
    def matched(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def arrival(self, key: tuple[str, int]) -> float | None:
        with self._lock:
            return self.arrivals.get(key)

    def _main(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:  # reported to the main thread
            self.error = exc
            self._ready.set()

    async def _consume(self) -> None:
        from aiokafka.structs import TopicPartition

        from base.kafka import make_consumer

        s = self.settings
        consumer = make_consumer(s, group_id=None, fetch_max_wait_ms=50)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(t, p)
                             for t in (self.metrics_topic, self.deadletter_topic)
                             for p in range(s.kafka_partitions)])
            await consumer.seek_to_beginning()
            self._ready.set()
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                now = self.clock()
                with self._lock:
                    for tp, records in batches.items():
                        if tp.topic == self.deadletter_topic:
                            self.dead_letters += len(records)
                            continue
                        for record in records:
                            self._take(record.value or b"", now)
        finally:
            await consumer.stop()

    def _take(self, raw: bytes, now: float) -> None:
        # one metrics record holds the points of a whole group record: count points
        for point in decode_points(raw):
            if point.measurement != RUN_WINDOW:
                if dict(point.fields).get("session_id") == WARMUP_SESSION:
                    self.warmups += 1
                continue
            key = (dict(point.tags).get("runner", ""), point.time_ms)
            if key not in self.expected:
                self.unexpected += 1
            elif key in self.arrivals:
                self.duplicates += 1
            else:
                if self.first_arrival is None:
                    self.first_arrival = now
                    if self.on_first is not None:
                        self.on_first()
                self.arrivals[key] = now
                self.last_arrival = now
                samples = dict(point.fields).get("samples", 0)
                self.strides += int(samples) if isinstance(samples, int | float) else 0


async def topic_size(settings: Settings, topic: str, quiet_s: float = 1.0) -> tuple[int, int]:
    """(records, bytes of keys and values) on ``topic``, read from the start until no new
    record came for ``quiet_s`` (the local broker's end offsets cannot be trusted)."""
    from aiokafka.structs import TopicPartition

    from base.kafka import make_consumer

    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
    await consumer.start()
    records = size = 0
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.kafka_partitions)])
        await consumer.seek_to_beginning()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            batches = await consumer.getmany(timeout_ms=200)
            for got in batches.values():
                for record in got:
                    records += 1
                    size += len(record.key or b"") + len(record.value or b"")
                if got:
                    quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return records, size
