"""Run the Faust worker from settings (``stridewatch worker``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stridewatch.kafka import ensure_topics
from stridewatch.settings import Settings


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


def run_worker(settings: Settings) -> None:
    import faust

    from stream.app import build_app

    asyncio.run(ensure_topics(settings))
    if settings.kafka_processing_guarantee == "exactly_once":
        asyncio.run(check_transactions(settings))
    app = build_app(settings).app
    worker = faust.Worker(app, loglevel=logging.getLevelName(settings.log_level),
                          override_logging=False)
    worker.execute_from_commandline()
