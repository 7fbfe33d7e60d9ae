"""Run the Faust worker from settings (``stridewatch worker``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from base import ops
from base.kafka import ensure_topics
from base.settings import Settings


class BrokerUnsuitable(RuntimeError):
    pass


async def check_transactions(settings: Settings, timeout_s: float = 15.0) -> None:
    """exactly_once needs broker transactions: find out now, not on the first commit."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                transactional_id=f"{settings.app_id}-transactions-check")
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        async with producer.transaction():
            pass
    except (TimeoutError, KafkaError, OSError) as exc:
        raise BrokerUnsuitable(
            f"kafka_processing_guarantee=exactly_once needs a broker with transactions; "
            f"{settings.kafka_bootstrap} refused one ({type(exc).__name__}: {exc}). "
            "Use at_least_once (duplicates are counted once anyway).") from None
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


log = logging.getLogger("stridewatch.stream")


def run_worker(settings: Settings, instance: str | None = None) -> None:
    import faust

    from stream.app import build_app

    # Faust makes its data folder without parents: a fresh data dir would crash it
    faust_dir = settings.data_dir / "faust"
    if instance:
        # workers sharing a data dir (several on one machine) keep their files apart
        faust_dir = faust_dir / instance
    faust_dir.mkdir(parents=True, exist_ok=True)
    log.info("worker %s consuming %s as group %s (Kafka %s, %d partitions, %s); state "
             "changelog %s; writing %s, %s and %s; its partitions are logged once assigned",
             instance or settings.app_id, settings.events_topic, settings.worker_group,
             settings.kafka_bootstrap, settings.kafka_partitions,
             settings.kafka_processing_guarantee, settings.state_changelog_topic,
             settings.alerts_topic, settings.metrics_topic, settings.deadletter_topic)
    asyncio.run(ensure_topics(settings))
    if settings.kafka_processing_guarantee == "exactly_once":
        asyncio.run(check_transactions(settings))
    stream_app = build_app(settings, faust_dir=faust_dir)
    # quiet: no banner on the terminal, which would break JSON log lines
    worker = faust.Worker(stream_app.app, loglevel=logging.getLevelName(settings.log_level),
                          override_logging=False, quiet=settings.log_format == "json")
    # Faust's progress spinner writes terminal escapes even into a log file
    worker.spinner = None
    ops.health().watch_loop(worker.loop)  # /healthz: Faust's loop runs
    try:
        # on SIGTERM Faust finishes the record in hand, flushes the producers, commits the
        # offsets, leaves the group, then exits 0
        worker.execute_from_commandline()
    finally:
        log.info("worker %s stopped: %s", instance or settings.app_id,
                 ", ".join(f"{v} {k}" for k, v in stream_app.stats.items()))
