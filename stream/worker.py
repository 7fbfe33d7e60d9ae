"""Run the Faust worker from settings (``stridewatch worker``)."""

from __future__ import annotations

import asyncio
import logging

from stridewatch.kafka import ensure_topics
from stridewatch.settings import Settings


def run_worker(settings: Settings) -> None:
    import faust

    from stream.app import build_app

    asyncio.run(ensure_topics(settings))
    app = build_app(settings).app
    worker = faust.Worker(app, loglevel=logging.getLevelName(settings.log_level),
                          override_logging=False)
    worker.execute_from_commandline()
