"""The Faust app: thin glue between Kafka and :func:`stream.runner.process_event`.

One agent consumes ``<prefix>.events`` (keyed by runner id), keeps each runner's state in
the ``runner_state`` table (one changelog write per record, not per stride), and sends
alerts and metric points to their topics. A record that does not parse goes to the
dead-letter topic; the agent keeps going.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import faust
from pydantic import ValidationError

from ingest.contract import RunnerEvent
from rules.catalogue import load_catalogue
from rules.roster import RunnerProfile, load_roster
from stream.metrics import encode_points
from stream.runner import MAX_RANGES, RunnerState, process_event
from stream.state_codec import decode, encode, history_key, park, seen_key
from stridewatch.kafka import producer_batch_bytes
from stridewatch.settings import Settings

log = logging.getLogger("stridewatch.stream")


def dead_letter(reason: str, topic: str, raw: bytes, runner: str | None = None,
                device: str | None = None) -> bytes:
    """The dead-letter record: why, where from, when, and the raw bytes (base64)."""
    import base64

    return json.dumps({"reason": reason, "topic": topic, "runner": runner, "device": device,
                       "at": time.time(), "stage": "stream",
                       "raw_b64": base64.b64encode(raw).decode()}).encode()


@dataclass
class StreamApp:
    """The Faust app and the channels its agent uses (tests reach them through this)."""

    app: faust.App
    agent: Any
    events: Any
    alerts: Any
    metrics: Any
    deadletters: Any
    table: Any
    stats: dict[str, int] = field(default_factory=dict)


def build_app(settings: Settings) -> StreamApp:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap.split(',')[0]}",
        store="memory://",
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication,
        topic_allow_declare=False,  # topics are created up front (stridewatch.kafka)
        processing_guarantee=settings.kafka_processing_guarantee,
        producer_max_batch_size=producer_batch_bytes(settings),
        producer_linger_ms=0 if settings.kafka_one_record_per_batch else 5,
        producer_acks=-1,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_s,
        broker_commit_every=100,
        broker_commit_interval=timedelta(seconds=1),
        table_standby_replicas=0,
        web_enabled=False,
        datadir=str(settings.data_dir / "faust"),
        key_serializer="raw",
        value_serializer="raw",
    )
    events = app.topic(settings.events_topic, key_type=bytes, value_type=bytes)
    alerts = app.topic(settings.alerts_topic, key_type=bytes, value_type=bytes)
    metrics = app.topic(settings.metrics_topic, key_type=bytes, value_type=bytes)
    deadletters = app.topic(settings.deadletter_topic, key_type=bytes, value_type=bytes)
    table = app.Table("runner_state", default=None, partitions=settings.kafka_partitions,
                      key_type=bytes, value_type=bytes)

    catalogue = load_catalogue(settings.rules_dir)
    roster = load_roster(settings.roster_file)
    roster.check_against(catalogue)
    profiles: dict[str, RunnerProfile] = {}

    def profile(runner: str) -> RunnerProfile:
        if runner not in profiles:
            profiles[runner] = roster.profile(runner, catalogue)
        return profiles[runner]

    stats = {"events": 0, "duplicates": 0, "alerts": 0, "deadletters": 0}
    # States stay in memory between records (the table holds their encoded form for
    # recovery); a runner's state is decoded once, after a start or a rebalance.
    states: dict[bytes, RunnerState] = {}

    def load_state(key: bytes, runner: str) -> RunnerState:
        state = states.get(key)
        if state is None:
            state = decode(table.get(key), table.get(seen_key(key)),
                           table.get(history_key(key)), runner)
            states[key] = state
        return state

    def store_state(key: bytes, state: RunnerState) -> None:
        stored = encode(state)
        table[key] = stored.live
        if stored.seen is not None:
            table[seen_key(key)] = stored.seen
        if stored.history is not None:
            table[history_key(key)] = stored.history
        # the live batches to come need none of the history: keep it encoded (memory)
        park(state, stored.history or table.get(history_key(key)))

    async def handle(raw: bytes) -> None:
        try:
            event = RunnerEvent.from_bytes(raw)
        except ValidationError as exc:
            stats["deadletters"] += 1
            reason = f"record does not match contract v1: {exc.errors()[0]['msg']}"
            log.warning("dead-lettered a record from %s: %s", settings.events_topic, reason)
            await deadletters.send(value=dead_letter(reason, settings.events_topic, raw))
            return
        key = event.runner.encode()
        try:
            await step_runner(key, event)
        except Exception:
            # the in-memory state may hold half a step: read the stored one next time
            states.pop(key, None)
            raise

    async def step_runner(key: bytes, event: RunnerEvent) -> None:
        state = load_state(key, event.runner)
        new_state, out = process_event(state, event, profile(event.runner))
        stats["events"] += 1
        if out.duplicate:
            stats["duplicates"] += 1
            if out.too_old:
                log.warning("skipped %s seq %d from %s/%s: older than the %d sequence gaps "
                            "remembered for that device; counted as already seen",
                            event.kind, event.seq, event.runner, event.device, MAX_RANGES)
            return
        deliveries = []
        for alert in out.alerts:
            stats["alerts"] += 1
            log.info("alert %s %s for %s", alert.rule, alert.severity, alert.runner)
            deliveries.append(await alerts.send(key=key, value=alert.to_bytes()))
        if out.points:
            await metrics.send(key=key, value=encode_points(out.points))
        # The state marks this record as seen, so it is written only once Kafka holds the
        # record's alerts: a crash in between replays the record instead of losing them.
        # Alerts are rare, so the wait is too; metric points ride on the producer's order
        # and Faust's flush before every offset commit.
        for delivery in deliveries:
            if delivery is not None:
                await delivery
        store_state(key, new_state)

    async def forget_states(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # another worker may update these runners now; after a rebalance, read the table
        states.clear()

    app.on_partitions_revoked.connect(forget_states)

    @app.agent(events, name="runner-load")
    async def runner_load(stream: Any) -> None:
        async for raw in stream:
            try:
                await handle(raw)
            except Exception as exc:  # one bad record must not stop every runner's stream
                stats["deadletters"] += 1
                log.exception("could not process a record; dead-lettered")
                await deadletters.send(value=dead_letter(
                    f"processing failed: {type(exc).__name__}: {exc}", settings.events_topic,
                    raw if isinstance(raw, bytes) else b""))

    @app.timer(interval=30.0)  # type: ignore[untyped-decorator]
    async def report() -> None:
        log.info("processed %(events)d records (%(duplicates)d duplicates), %(alerts)d alerts, "
                 "%(deadletters)d dead letters", stats)

    return StreamApp(app, runner_load, events, alerts, metrics, deadletters, table, stats)
