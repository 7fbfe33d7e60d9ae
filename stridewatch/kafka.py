"""Kafka client factories that honour the settings, and explicit topic creation.

Every topic is created up front with the partition count the tables expect: a broker
that auto-creates topics picks its own count, and a table whose changelog and source
differ in partitions cannot be co-partitioned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from stridewatch.settings import Settings

log = logging.getLogger(__name__)

# aiokafka closes a batch once the next record does not fit: a limit below one record
# means one record per batch, which keeps Tansu's end offsets exact.
ONE_RECORD_BATCH_BYTES = 1


def producer_batch_bytes(settings: Settings) -> int:
    return ONE_RECORD_BATCH_BYTES if settings.kafka_one_record_per_batch else 16384


def make_producer(settings: Settings, **extra: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=False,
        max_batch_size=producer_batch_bytes(settings),
        linger_ms=0 if settings.kafka_one_record_per_batch else 5,
        request_timeout_ms=15000,
        **extra,
    )


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
                        NewTopic(t, settings.kafka_partitions, settings.kafka_replication)
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
