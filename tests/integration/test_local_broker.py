"""The local broker's end-offset defect, and the producer setting that avoids it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from base.kafka import (
    changelog_batch_bytes,
    changelog_linger_ms,
    high_watermarks,
    make_consumer,
    make_producer,
)
from base.settings import Settings
from ingest.records import partition_for
from stream.app import build_app

pytestmark = pytest.mark.integration


async def _end_offset_after_burst(settings: Settings,
                                  make: Callable[[], AIOKafkaProducer], records: int
                                  ) -> tuple[int, int]:
    """(end offset, high watermark) of a new one-partition topic after a burst."""
    producer = make()
    topic = f"burst-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    await producer.start()
    try:
        futures = [await producer.send(topic, f"r{i}".encode()) for i in range(records)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        end = int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()
    one_partition = settings.model_copy(update={"kafka_partitions": 1})
    return end, (await high_watermarks(one_partition, topic))[0]


def test_one_record_per_batch_gives_exact_end_offsets(local_stack: object,
                                                      stack_settings: Settings) -> None:
    # what the worker's changelog producer (Faust's) does on the local stack
    assert stack_settings.kafka_one_record_per_batch

    def changelog_producer() -> AIOKafkaProducer:
        return AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_bootstrap,
                                max_batch_size=changelog_batch_bytes(stack_settings),
                                linger_ms=changelog_linger_ms(stack_settings))

    assert asyncio.run(_end_offset_after_burst(stack_settings, changelog_producer, 25)) \
        == (25, 25)


def test_the_local_broker_miscounts_batched_records(local_stack: object,
                                                    stack_settings: Settings) -> None:
    # Why the setting exists: with ordinary batching the broker reports the last batch's
    # base offset + 1. If this starts failing, the broker was fixed (see docs/operations.md).
    def batching() -> AIOKafkaProducer:
        return AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_bootstrap, linger_ms=50)

    end, watermark = asyncio.run(_end_offset_after_burst(stack_settings, batching, 25))
    assert end < 25
    # the fetch's high watermark is right: what readers of batched topics rely on
    assert watermark == 25


def test_producers_other_than_the_changelogs_batch_normally(local_stack: object,
                                                             stack_settings: Settings) -> None:
    assert stack_settings.kafka_one_record_per_batch
    end, watermark = asyncio.run(_end_offset_after_burst(
        stack_settings, lambda: make_producer(stack_settings, linger_ms=50), 25))
    assert watermark == 25 and end < 25  # batched: several records per batch


def test_partition_for_is_where_the_producer_puts_a_keyed_record(
        local_stack: object, stack_settings: Settings) -> None:
    runners = [f"runner-{i}" for i in range(40)]

    async def placed() -> dict[str, int]:
        producer = make_producer(stack_settings)
        await producer.start()
        try:
            futures = {r: await producer.send(stack_settings.events_topic + "-keys",
                                              b"{}", key=r.encode()) for r in runners}
            return {r: (await f).partition for r, f in futures.items()}
        finally:
            await producer.stop()

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack_settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(stack_settings.events_topic + "-keys",
                                                stack_settings.kafka_partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(create())
    where = asyncio.run(placed())
    assert len(set(where.values())) == stack_settings.kafka_partitions
    assert where == {r: partition_for(r, stack_settings.kafka_partitions) for r in runners}


def test_faust_producer_uses_the_workaround(stack_settings: Settings) -> None:
    app = build_app(stack_settings).app
    assert app.conf.producer_max_batch_size == 1
    production = stack_settings.model_copy(update={"kafka_one_record_per_batch": False})
    assert build_app(production).app.conf.producer_max_batch_size == 16384


def test_exactly_once_fails_fast_on_a_broker_without_transactions(
        local_stack: object, stack_settings: Settings) -> None:
    from stream.worker import BrokerUnsuitable, check_transactions

    settings = stack_settings.model_copy(update={
        "kafka_one_record_per_batch": False, "kafka_processing_guarantee": "exactly_once"})
    with pytest.raises(BrokerUnsuitable, match="needs a broker with transactions"):
        asyncio.run(check_transactions(settings, timeout_s=20))


def test_worker_outputs_leave_batched_and_are_flushed_before_each_commit(
        local_stack: object, stack_settings: Settings) -> None:
    from base.kafka import ensure_topics
    from stream.app import _ChangelogProducer, _FaustTopicOutput

    built = build_app(stack_settings)

    async def send_then_flush() -> int:
        await ensure_topics(stack_settings)
        producer = built.app.producer
        assert isinstance(producer, _ChangelogProducer) and producer.outputs is built.outputs
        futures = [await built.metrics.send(value=b"[]", partition=0) for _ in range(25)]
        try:
            # what Faust calls before it commits offsets
            await producer.flush()
            assert all(f is not None and f.done() for f in futures)  # type: ignore[attr-defined]
        finally:
            await built.outputs.stop()
        return len(futures)

    assert asyncio.run(send_then_flush()) == 25
    production = stack_settings.model_copy(update={"kafka_one_record_per_batch": False})
    # on Apache Kafka one producer batches everything (and exactly_once covers outputs)
    assert isinstance(build_app(production).metrics, _FaustTopicOutput)
