"""The bridge's Kafka side: one producer, sends retried with backoff, outages told once.

While Kafka is away, ``send`` keeps retrying (0.2 s doubling to 5 s, jittered), the
bridge is told (``on_away``) so it holds MQTT acknowledgements and stops taking more
work, and the outage is logged once when it starts, every status period while it lasts
(``report_outage``) and once when it ends, instead of aiokafka's line per connection
attempt. A broker that restarted may have forgotten the topics: they are created again,
with the configured partitions, before the new producer sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)

from base.kafka import ensure_topics, make_producer
from base.settings import Settings
from ingest.decoders.native import MAX_PAYLOAD_BYTES
from ingest.records import KafkaRecord

log = logging.getLogger("stridewatch.bridge")

# Kafka header naming the bridge instance that produced a record (provenance, scale-out)
BRIDGE_HEADER = "stridewatch-bridge"
# a payload may be up to MAX_PAYLOAD_BYTES; its record is about as large
MAX_RECORD_BYTES = 2 * MAX_PAYLOAD_BYTES
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
# errors after which sending the same record again cannot succeed
UNSENDABLE = (MessageSizeTooLargeError, RecordTooLargeError, CorruptRecordException)


class SendStats(Protocol):
    kafka_retries: int
    outages: int


class OutageLogFilter(logging.Filter):
    """While Kafka is known to be away, aiokafka's error line per connection attempt adds
    nothing to the bridge's own status lines."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.active and str(record.msg).startswith("Unable connect to"))


class KafkaSender:
    def __init__(self, settings: Settings, stats: SendStats,
                 headers: list[tuple[str, bytes]], *, on_away: Callable[[bool], None],
                 in_flight: Callable[[], int]) -> None:
        self.settings = settings
        self.stats = stats
        self.headers = headers
        self.on_away = on_away
        self.in_flight = in_flight
        self.log_filter = OutageLogFilter()
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._topics_ok = False
        self._closing: set[asyncio.Task[None]] = set()
        self._down_since: float | None = None
        self._down_reason = ""

    async def send(self, record: KafkaRecord) -> None:
        """Send until Kafka acknowledges; back off while it is away.

        Raises one of :data:`UNSENDABLE` for a record Kafka will never take.
        """
        delay = BACKOFF_MIN_S
        while True:
            producer = await self.producer_ready()
            try:
                future = await producer.send(record.topic, record.value, key=record.key,
                                             partition=record.partition,
                                             headers=self.headers)
                await future
            except UNSENDABLE:
                raise
            except (KafkaError, OSError) as exc:
                self.stats.kafka_retries += 1
                self._producer_failed(producer, exc)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            self.back()
            return

    async def producer_ready(self) -> AIOKafkaProducer:
        """The one producer; while Kafka is away, one caller at a time tries to make it."""
        async with self._producer_lock:
            delay = BACKOFF_MIN_S
            while self._producer is None:
                producer = None
                try:
                    if not self._topics_ok:
                        # a broker that restarted may have forgotten the topics; create them
                        # with the configured partitions before anything auto-creates them
                        await ensure_topics(self.settings, attempts=1)
                        self._topics_ok = True
                    producer = make_producer(self.settings, max_request_size=MAX_RECORD_BYTES)
                    await producer.start()
                    self._producer = producer
                except (KafkaError, OSError, RuntimeError) as exc:
                    if producer is not None:
                        self._close_later(producer)
                    self._away(exc)
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, BACKOFF_MAX_S)
            return self._producer

    def _producer_failed(self, producer: AIOKafkaProducer, exc: BaseException) -> None:
        self._away(exc)
        self._topics_ok = False
        if self._producer is producer:  # the first failure of this producer replaces it
            self._producer = None
            self._close_later(producer)

    def _close_later(self, producer: AIOKafkaProducer) -> None:
        async def close() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

        task = asyncio.create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _away(self, exc: BaseException) -> None:
        self._down_reason = f"{type(exc).__name__}: {exc}"[:300]
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.stats.outages += 1
            self.log_filter.active = True
            self.on_away(True)
            log.warning("Kafka at %s unavailable (%s); holding %d messages unacknowledged "
                        "(at most %d in flight, the broker queues the rest), retrying",
                        self.settings.kafka_bootstrap, self._down_reason, self.in_flight(),
                        self.settings.bridge_max_in_flight)

    def back(self) -> None:
        """Kafka answered: end the outage, if there was one."""
        if self._down_since is not None:
            log.info("Kafka is back after %.1f s; resuming with %d messages in flight",
                     time.monotonic() - self._down_since, self.in_flight())
            self._down_since = None
            self.log_filter.active = False
            self.on_away(False)

    def report_outage(self) -> None:
        """The periodic status line while Kafka is away."""
        if self._down_since is not None:
            log.warning("Kafka unavailable for %.0f s (%s): %d messages in flight, "
                        "unacknowledged (bound %d); %d retries so far",
                        time.monotonic() - self._down_since, self._down_reason,
                        self.in_flight(), self.settings.bridge_max_in_flight,
                        self.stats.kafka_retries)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)
