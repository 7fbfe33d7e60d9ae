"""The forgotten runners: a compacted Kafka topic every process reads at start and follows.

``stridewatch forget R`` appends R to ``<prefix>.forgotten`` (key = runner id, value =
``{"runner": R, "forgotten_at": <epoch s>}``). Each worker, sink and notifier reads the
whole topic before it handles its first record and then polls it, so a forgotten
runner's events are dead-lettered ("runner forgotten"), their points and alerts dropped,
by every instance and after every restart. The topic is compacted (``cleanup.policy
compact``): a time-based retention would let a runner come back after a week.

The forget command also sends a **forget request** to ``<prefix>.events``: a record with
the header ``stridewatch-control: forget`` keyed by the runner, on the runner's partition.
The worker that owns that partition meets it in order, after everything the runner sent
before, and deletes the runner's keys from its table itself (Faust writes the tombstones to
the changelog and drops its in-memory copy), so no second writer touches the worker's
changelog while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from base.kafka import high_watermarks, make_consumer, make_producer
from base.settings import Settings

log = logging.getLogger("stridewatch.forgotten")

FORGOTTEN_REASON = "runner forgotten"
CONTROL_HEADER = "stridewatch-control"
FORGET_REQUEST = b"forget"
POLL_S = 1.0


def forgotten_value(runner: str, at: float) -> bytes:
    return json.dumps({"runner": runner, "forgotten_at": at}).encode()


def forgotten_runner(key: bytes | None, value: bytes | None) -> str | None:
    """The runner a record of the forgotten topic names; None for a tombstone or junk."""
    if value is None or key is None:
        return None
    try:
        runner = json.loads(value).get("runner")
    except (ValueError, AttributeError):
        return None
    return runner if isinstance(runner, str) and runner == key.decode(errors="replace") \
        else None


def forget_request_value(runner: str) -> bytes:
    return json.dumps({"runner": runner}).encode()


def is_forget_request(headers: object) -> bool:
    """Whether a record's headers (Faust: a dict; aiokafka: pairs) make it a forget request."""
    if isinstance(headers, dict):
        return bool(headers.get(CONTROL_HEADER) == FORGET_REQUEST)
    if isinstance(headers, (list, tuple)):
        return any(k == CONTROL_HEADER and v == FORGET_REQUEST for k, v in headers)
    return False


def forget_request_runner(value: bytes) -> str:
    runner = json.loads(value).get("runner")
    if not isinstance(runner, str) or not runner:
        raise ValueError("a forget request names no runner")
    return runner


async def publish_forgotten(settings: Settings, runner: str) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await (await producer.send(settings.forgotten_topic,
                                   forgotten_value(runner, time.time()),
                                   key=runner.encode()))
    finally:
        await producer.stop()


class ForgottenList:
    """The forgotten runners, read to the end by :meth:`start`, then followed."""

    def __init__(self, settings: Settings, poll_s: float = POLL_S) -> None:
        self.settings = settings
        self.poll_s = poll_s
        # False: only what ``add`` is told (Faust's test context has no broker)
        self.follow_topic = True
        self.runners: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, runner: object) -> bool:
        return runner in self.runners

    def __len__(self) -> int:
        return len(self.runners)

    def add(self, runner: str) -> None:
        """Known here before the topic says so (the worker meeting a forget request)."""
        self.runners.setdefault(runner, time.time())

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        runner = forgotten_runner(key, value)
        if runner is not None and runner not in self.runners:
            self.runners[runner] = time.time()
            log.info("runner %s is forgotten: their data is refused from now on", runner)

    async def start(self) -> None:
        """Read every forgotten runner so far (to the high watermarks), then follow."""
        if self._task is not None or not self.follow_topic:
            return
        topic = self.settings.forgotten_topic
        marks = await high_watermarks(self.settings, topic)
        consumer = make_consumer(self.settings, group_id=None, fetch_max_wait_ms=200)
        await consumer.start()
        parts = [TopicPartition(topic, p) for p in sorted(marks)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        try:
            while [tp for tp in parts
                   if await consumer.position(tp) < marks[tp.partition]]:
                if loop.time() > deadline:
                    raise RuntimeError(f"{topic} could not be read to its end within 60 s")
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batch.values():
                    for record in records:
                        self._take(record.key, record.value)
        except BaseException:
            await consumer.stop()
            raise
        log.info("%d forgotten runners read from %s", len(self.runners), topic)
        self._task = asyncio.create_task(self._follow(consumer))

    async def _follow(self, consumer: object) -> None:
        from aiokafka import AIOKafkaConsumer

        assert isinstance(consumer, AIOKafkaConsumer)
        try:
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=int(self.poll_s * 1000))
                except KafkaError as exc:
                    log.warning("reading %s failed (%s); trying again",
                                self.settings.forgotten_topic, exc)
                    await asyncio.sleep(self.poll_s)
                    continue
                for records in batch.values():
                    for record in records:
                        self._take(record.key, record.value)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
