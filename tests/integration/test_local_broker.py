"""The local broker's end-offset defect, and the producer setting that avoids it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from stream.app import build_app
from stridewatch.kafka import make_consumer, make_producer
from stridewatch.settings import Settings

pytestmark = pytest.mark.integration


async def _end_offset_after_burst(settings: Settings,
                                  make: Callable[[], AIOKafkaProducer], records: int) -> int:
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
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


def test_one_record_per_batch_gives_exact_end_offsets(local_stack: object,
                                                      stack_settings: Settings) -> None:
    assert stack_settings.kafka_one_record_per_batch
    end = asyncio.run(_end_offset_after_burst(stack_settings,
                                             lambda: make_producer(stack_settings), 25))
    assert end == 25


def test_the_local_broker_miscounts_batched_records(local_stack: object,
                                                    stack_settings: Settings) -> None:
    # Why the setting exists: with ordinary batching the broker reports the last batch's
    # base offset + 1. If this starts failing, the broker was fixed (see docs/operations.md).
    def batching() -> AIOKafkaProducer:
        return AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_bootstrap, linger_ms=50)

    end = asyncio.run(_end_offset_after_burst(stack_settings, batching, 25))
    assert end < 25


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
