"""Kafka client factories that honour the settings, topic creation and offset commits.

Every topic is created up front with the partition count the tables expect: a broker
that auto-creates topics picks its own count, and a table whose changelog and source
differ in partitions cannot be co-partitioned.

The local broker's end offsets are wrong for multi-record batches. Only table recovery
reads a topic up to its end offset, so only the worker's Faust producer (which writes the
changelog) sends one record per batch there (``changelog_batch_bytes``); every other
producer batches normally, and readers of other topics use the fetch's high watermark
(``high_watermarks``), which is correct. Consumers commit exactly the records they handled
(``commit_offsets``): the sink after a write landed, the notifier after an alert was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from base.settings import Settings

log = logging.getLogger("stridewatch.kafka")  # the name the logs have always shown

# aiokafka closes a batch once the next record does not fit: a limit below one record
# means one record per batch, which keeps Tansu's end offsets exact.
ONE_RECORD_BATCH_BYTES = 1
NORMAL_BATCH_BYTES = 16384
NORMAL_LINGER_MS = 5


def changelog_batch_bytes(settings: Settings) -> int:
    """Batch size of the producer that writes table changelogs (Faust's)."""
    return ONE_RECORD_BATCH_BYTES if settings.kafka_one_record_per_batch \
        else NORMAL_BATCH_BYTES


def changelog_linger_ms(settings: Settings) -> int:
    return 0 if settings.kafka_one_record_per_batch else NORMAL_LINGER_MS


def make_producer(settings: Settings, **extra: Any) -> AIOKafkaProducer:
    """A producer for every topic but a changelog: batched normally on any broker."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap, "acks": "all",
        "enable_idempotence": False, "max_batch_size": NORMAL_BATCH_BYTES,
        "linger_ms": NORMAL_LINGER_MS, "request_timeout_ms": 15000}
    options.update(extra)
    return AIOKafkaProducer(**options)


def make_consumer(settings: Settings, *topics: str, group_id: str | None, **extra: Any
                  ) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.kafka_heartbeat_s * 1000),
        **extra,
    )


async def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's high watermark (the offset after the newest record), from a fetch.

    Unlike ``end_offsets()`` (ListOffsets) it is right on the local broker whatever the
    producer's batching.
    """
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        consumer.assign(parts)
        # fetch from near the end: little data, and the answer carries the watermark
        # (the broker's end offset is at most too small, so ends - 1 is a real offset)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, max(0, ends[tp] - 1))
        deadline = asyncio.get_running_loop().time() + 30
        while any(consumer.highwater(tp) is None for tp in parts):
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"no fetch answer for {topic} within 30 s")
            await consumer.getmany(*parts, timeout_ms=200, max_records=1)
        return {tp.partition: int(consumer.highwater(tp)) for tp in parts}
    finally:
        await consumer.stop()


def topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    """Compacted topics keep each key's newest record for ever: the forgotten runners must
    never expire, and a changelog keeps every state (Kafka's default deletes after 7 days,
    which would lose runners' states)."""
    compacted = {settings.forgotten_topic, settings.state_changelog_topic}
    return {"cleanup.policy": "compact"} if topic in compacted else {}


async def ensure_topics(settings: Settings, attempts: int = 30) -> None:
    """Create every pipeline topic if it is missing; wait for the broker if it is starting."""
    last: Exception | None = None
    for _ in range(attempts):
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in settings.all_topics() if t not in existing]
            if missing:
                # another process may create one between list and create
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([
                        NewTopic(t, settings.kafka_partitions, settings.kafka_replication,
                                 topic_configs=topic_configs(settings, t))
                        for t in missing
                    ])
                log.info("created topics %s with %d partitions", missing,
                         settings.kafka_partitions)
            await _check_partitions(admin, settings)
            return
        except KafkaError as exc:
            last = exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    raise RuntimeError(f"Kafka at {settings.kafka_bootstrap} did not accept topic creation: {last}")


async def _check_partitions(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    described = await admin.describe_topics(settings.all_topics())
    wrong = {d["topic"]: len(d["partitions"]) for d in described
             if len(d["partitions"]) != settings.kafka_partitions}
    if wrong:
        raise RuntimeError(
            f"topics {wrong} do not have {settings.kafka_partitions} partitions; the state "
            "table cannot be co-partitioned with them. Recreate them or set "
            "STRIDEWATCH_KAFKA_PARTITIONS to match."
        )


async def commit_offsets(consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[
        bytes, bytes]]) -> bool:
    """Commit exactly the records handled; a rebalance in between is harmless (rewrites)."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    owned = consumer.assignment()
    offsets = {tp: offset for tp, offset in offsets.items() if tp in owned}
    if not offsets:
        return False
    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        log.warning("offset commit failed (%s: %s); the records will be handled again, "
                    "which is harmless", type(exc).__name__, exc)
        return False
    return True


async def group_lag(settings: Settings, group: str, topic: str) -> int:
    """Records of ``topic`` the consumer ``group`` has not committed yet, all partitions."""
    return sum((await group_lag_by_partition(settings, group, topic)).values())


async def group_lag_by_partition(settings: Settings, group: str, topic: str
                                 ) -> dict[int, int]:
    """Records of ``topic`` the consumer ``group`` has not committed yet, per partition.

    End offsets are the fetch's high watermarks (right on the local broker too); a
    partition the group never committed counts from its first offset.
    """
    marks = await high_watermarks(settings, topic)
    consumer = make_consumer(settings, group_id=group)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        starts = await consumer.beginning_offsets(parts)
        lags = {}
        for tp in parts:
            done = await consumer.committed(tp)
            lags[tp.partition] = max(0, marks[tp.partition]
                                     - (done if done is not None else starts[tp]))
        return lags
    finally:
        await consumer.stop()


async def reset_group_offsets(settings: Settings, group: str, topic: str,
                              since_ms: int | None = None, join_timeout_s: float = 30.0
                              ) -> dict[int, int]:
    """Set ``group``'s committed offsets on ``topic`` to its first records, or to the first
    record at or after ``since_ms`` (a partition with none after it: its end).

    It joins the group as its only member (brokers such as the local one accept commits
    from members only) and refuses if another member keeps any partition. Returns
    partition -> offset committed.
    """
    consumer = make_consumer(settings, topic, group_id=group)
    await consumer.start()
    try:
        parts = {TopicPartition(topic, p) for p in range(settings.kafka_partitions)}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + join_timeout_s
        while consumer.assignment() != parts:
            if loop.time() > deadline:
                raise RuntimeError(
                    f"another consumer of group {group} holds partitions "
                    f"{sorted(tp.partition for tp in parts - consumer.assignment())} of "
                    f"{topic}; stop every sink first")
            # polling is what completes the join; what it fetches is not used
            await consumer.getmany(timeout_ms=200, max_records=1)
        ordered = sorted(parts)
        targets: dict[TopicPartition, int] = dict(await consumer.beginning_offsets(ordered))
        if since_ms is not None:
            found = await first_offsets_since(settings, topic, since_ms)
            targets = {tp: found[tp.partition] for tp in ordered}
        await consumer.commit(targets)
        return {tp.partition: offset for tp, offset in targets.items()}
    finally:
        await consumer.stop()


async def first_offsets_since(settings: Settings, topic: str, since_ms: int
                              ) -> dict[int, int]:
    """Per partition, the offset of the first record stamped at or after ``since_ms`` (the
    high watermark if there is none).

    The broker's answer (ListOffsets by time) is only where the search starts: the local
    broker answers the first offset whatever the time, so the records from there are
    read until one is new enough. On a broker that answers right, that is one record.
    """
    marks = await high_watermarks(settings, topic)
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        consumer.assign(parts)
        hints = await consumer.offsets_for_times({tp: since_ms for tp in parts})
        loop = asyncio.get_running_loop()
        found: dict[int, int] = {}
        for tp in parts:
            end = marks[tp.partition]
            found[tp.partition] = end
            hint = hints.get(tp)
            position = hint.offset if hint is not None else end
            if position >= end:
                continue
            consumer.seek(tp, position)
            deadline = loop.time() + 30
            while position < end:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=500)
                records = batch.get(tp, [])
                if not records:
                    if loop.time() > deadline:
                        raise RuntimeError(f"no records of {topic}[{tp.partition}] from "
                                           f"offset {position} within 30 s")
                    continue
                newer = [r.offset for r in records if r.timestamp >= since_ms]
                if newer:
                    found[tp.partition] = newer[0]
                    break
                position = records[-1].offset + 1
        return found
    finally:
        await consumer.stop()
