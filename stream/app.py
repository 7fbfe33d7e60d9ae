"""The Faust app: thin glue between Kafka and :func:`stream.runner.process_event`.

One agent consumes ``<prefix>.events``. A record is a group of events of the runners of
its partition (the bridge's format) or one event (the older format); see
``ingest/records.py``. The agent decodes a record once, splits it by runner, folds each
runner's events into their state (``stream.runner_states.step_runner``), sends alerts
and one metrics record per input record, waits for the alerts to be in Kafka, then
writes each touched runner's state once. An event that does not parse or fails goes to
the dead-letter topic alone, with its reason; the rest of its record is processed.

With the local-broker workaround on (``kafka_one_record_per_batch``), two producers leave
the worker: Faust's, which writes only the ``runner_state`` changelog, one record per
batch (table recovery relies on the broker's end offsets), and :class:`Outputs`, batched
normally, for alerts, metric points and dead letters; Faust flushes both before every
offset commit (:class:`_ChangelogProducer`). Without it (Apache Kafka) everything goes
through Faust's producer, batched, and exactly_once commits outputs, state and offsets
together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata, TopicPartition
from faust.transport.drivers.aiokafka import Producer as FaustKafkaProducer
from faust.types import AgentT, StreamT, TableT, TopicT
from mode.types.signals import BaseSignalT

from base import ops, status
from base.forgotten import (
    FORGOTTEN_REASON,
    ForgottenList,
    forget_request_runner,
    is_forget_request,
)
from base.json_logs import runner_extra
from base.kafka import changelog_batch_bytes, changelog_linger_ms, make_producer
from base.settings import Settings
from ingest.contract import RunnerEvent
from ingest.dead_letters import DeadLetter
from ingest.records import BadEvent, decode_record
from rules.catalogue import load_catalogue
from stream.in_order import InOrderConsumer
from stream.metrics import MetricPoint, encode_points
from stream.runner import MAX_RANGES
from stream.runner_states import RunnerStates, RunnerStep, step_runner
from stream.state_codec import history_key, seen_key
from team.roster import RosterError, RosterFile, RunnerProfile, unknown_runner_warning

log = logging.getLogger("stridewatch.stream")
REPORT_EVERY_S = 30.0
STATUS_EVERY_S = 3.0
FINISH_RECORD_S = 20.0  # on stop, the longest the record in hand may take to finish


def dead_letter(reason: str, topic: str, raw: bytes, runner: str | None = None,
                device: str | None = None) -> bytes:
    """A record the stream stage refuses, in the one dead-letter format."""
    return DeadLetter(reason, topic, raw, time.time(), "stream", runner, device).encode()


class Output(Protocol):
    """One topic the worker writes to (a test may stand in for it); ``send`` returns what
    to await for Kafka's acknowledgement."""

    async def send(self, key: bytes | None = None, value: bytes = b"",
                   partition: int | None = None) -> Awaitable[Any] | None: ...


class Outputs:
    """Alerts, metric points and dead letters: a producer of the worker's own, batched
    normally. Started on the first send, flushed before each offset commit, stopped (after
    sending what it holds) when the agent stops."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self.alerts = _TopicOutput(self, settings.alerts_topic)
        self.metrics = _TopicOutput(self, settings.metrics_topic)
        self.deadletters = _TopicOutput(self, settings.deadletter_topic)

    async def start(self) -> None:
        if self._producer is None:
            producer = make_producer(self.settings)
            await producer.start()
            self._producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   partition: int | None) -> asyncio.Future[RecordMetadata]:
        if self._producer is None:
            await self.start()
        assert self._producer is not None
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            topic, value, key=key, partition=partition)
        return future

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # sends what is buffered first


@dataclass
class _TopicOutput:
    outputs: Outputs
    topic: str

    async def send(self, key: bytes | None = None, value: bytes = b"",
                   partition: int | None = None) -> Awaitable[Any] | None:
        return await self.outputs.send(self.topic, key, value, partition)


@dataclass
class _FaustTopicOutput:
    """A topic sent to through Faust's producer: inside its transaction with
    exactly_once, and batched like everything else once the workaround is off."""

    topic: TopicT

    async def send(self, key: bytes | None = None, value: bytes = b"",
                   partition: int | None = None) -> Awaitable[Any] | None:
        sent: Awaitable[Any] = await self.topic.send(key=key, value=value,
                                                     partition=partition)
        return sent


class _ChangelogProducer(FaustKafkaProducer):
    """Faust's producer (table changelogs), which Faust flushes before every offset
    commit: flush the outputs' producer with it, so a committed record's metric points
    and dead letters are in Kafka."""

    logger = logging.getLogger("faust.producer.changelog")
    outputs: Outputs | None = None

    async def flush(self) -> None:
        if self.outputs is not None:
            await self.outputs.flush()
        await super().flush()


class _App(faust.App):
    # log under "faust", which the command line quiets below WARNING like Faust's own app
    logger = logging.getLogger("faust.app.stridewatch")
    outputs: Outputs | None = None
    in_order_topics: frozenset[str] = frozenset()

    def _new_consumer(self) -> InOrderConsumer:
        return InOrderConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.loop,
            in_order_topics=self.in_order_topics,
        )

    def _new_producer(self) -> _ChangelogProducer:
        producer = _ChangelogProducer(self.transport, loop=self.loop, beacon=self.beacon)
        producer.outputs = self.outputs
        return producer


@dataclass
class StreamApp:
    """The Faust app and the channels its agent uses (tests reach them through this)."""

    app: faust.App
    agent: AgentT[Any]
    events: TopicT
    alerts: Output
    metrics: Output
    deadletters: Output
    table: TableT[bytes, bytes | None]
    outputs: Outputs
    forgotten: ForgottenList
    stats: dict[str, int] = field(default_factory=dict)


def build_app(settings: Settings, faust_dir: Path | None = None) -> StreamApp:
    """The app; ``faust_dir`` is Faust's data folder (default ``<data_dir>/faust``)."""
    app = _App(
        settings.app_id,
        # every bootstrap broker: the worker starts while any one of them answers
        broker=";".join(f"kafka://{host.strip()}"
                        for host in settings.kafka_bootstrap.split(",") if host.strip()),
        store=settings.worker_store,
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication,
        topic_allow_declare=False,  # topics are created up front (base.kafka)
        processing_guarantee=settings.kafka_processing_guarantee,
        # with the local-broker workaround Faust's producer writes only the changelog
        # (outputs have their own, batched producer)
        producer_max_batch_size=changelog_batch_bytes(settings),
        producer_linger_ms=changelog_linger_ms(settings),
        producer_acks=-1,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_s,
        broker_commit_every=100,
        broker_commit_interval=timedelta(seconds=1),
        table_standby_replicas=0,
        web_enabled=False,
        datadir=str(faust_dir or settings.data_dir / "faust"),
        key_serializer="raw",
        value_serializer="raw",
    )
    # every record of the events topic, in order: none skipped after a seek
    app.in_order_topics = frozenset({settings.events_topic})
    outputs = Outputs(settings)
    events = app.topic(settings.events_topic, key_type=bytes, value_type=bytes)
    table = app.Table("runner_state", default=None, partitions=settings.kafka_partitions,
                      key_type=bytes, value_type=bytes)
    alerts: Output
    metrics: Output
    deadletters: Output
    if settings.kafka_one_record_per_batch:
        # only the changelog needs one record per batch: the rest leave batched
        app.outputs = outputs
        alerts, metrics, deadletters = outputs.alerts, outputs.metrics, outputs.deadletters
    else:
        # one producer batches everything, and exactly_once commits outputs with the state
        alerts, metrics, deadletters = (
            _FaustTopicOutput(app.topic(name, key_type=bytes, value_type=bytes))
            for name in (settings.alerts_topic, settings.metrics_topic,
                         settings.deadletter_topic))

    catalogue = load_catalogue(settings.rules_dir)
    roster_file = RosterFile(settings.roster_file, catalogue)
    profiles: dict[str, RunnerProfile] = {}
    stats: dict[str, int] = {"records": 0, "events": 0, "duplicates": 0, "alerts": 0,
                             "deadletters": 0, "unknown_runners": 0, "unassigned_events": 0,
                             "forgotten_runners": 0, "forgotten_events": 0}
    unknown: set[str] = set()  # runners the roster does not name, seen by this process

    def profile(runner: str, events: int) -> RunnerProfile:
        try:
            if roster_file.refresh(time.monotonic()):
                log.info("roster %s changed: read again (%d runners)", settings.roster_file,
                         len(roster_file.roster.runners))
                profiles.clear()
                unknown.clear()
        except RosterError as exc:
            log.error("roster not read again, keeping the previous one: %s", exc)
        known = profiles.get(runner)
        if known is None:
            known = profiles[runner] = roster_file.roster.profile(runner, catalogue)
            if roster_file.roster.runner(runner) is None:
                # processed with the defaults; said once per runner and process, and counted
                unknown.add(runner)
                stats["unknown_runners"] += 1
                log.warning("%s", unknown_runner_warning(runner, settings.roster_file))
        if runner in unknown:
            stats["unassigned_events"] += events
        return known

    states = RunnerStates(table, settings.worker_states_in_memory)
    forgotten = ForgottenList(settings)

    def forget(runner: str) -> int:
        """A forget request, met in the runner's partition after all they sent before it:
        delete their keys here (Faust writes the tombstones to the changelog) and refuse
        what comes after. Returns how many keys were deleted."""
        forgotten.add(runner)
        states.forget(runner)
        profiles.pop(runner, None)
        key = runner.encode()
        deleted = 0
        for name in (key, seen_key(key), history_key(key)):
            if name in table:
                del table[name]
                deleted += 1
        stats["forgotten_runners"] += 1
        log.info("forgot runner %s: %d state keys deleted from the table", runner, deleted)
        return deleted

    async def dead_lettered(reason: str, raw: bytes, runner: str | None = None,
                            device: str | None = None) -> None:
        stats["deadletters"] += 1
        ops.inc("stridewatch_worker_dead_letters_total", reason=ops.reason_class(reason))
        log.warning("dead-lettered an event from %s: %s", settings.events_topic, reason,
                    extra=runner_extra(runner))
        ops.inc("stridewatch_worker_records_out_total", topic="deadletters")
        await deadletters.send(value=dead_letter(reason, settings.events_topic, raw,
                                                       runner, device))

    async def handle(raw: bytes, partition: int | None) -> None:
        ops.inc("stridewatch_worker_records_in_total")
        try:
            decoded = decode_record(raw)
        except ValueError as exc:
            await dead_lettered(f"record does not match contract v1: {exc}", raw)
            return
        stats["records"] += 1
        by_runner: dict[str, list[RunnerEvent]] = {}
        for item in decoded:
            if isinstance(item, BadEvent):
                await dead_lettered(item.reason, item.raw, item.runner, item.device)
            elif item.runner in forgotten:
                stats["forgotten_events"] += 1
                await dead_lettered(FORGOTTEN_REASON, item.to_bytes(), item.runner,
                                    item.device)
            else:
                by_runner.setdefault(item.runner, []).append(item)
        steps: list[RunnerStep] = []
        for runner, runner_events in by_runner.items():
            try:
                steps.append(step_runner(states, runner, runner_events,
                                         profile(runner, len(runner_events))))
            except Exception as exc:  # e.g. a stored state it cannot read: this runner only
                log.exception("could not process %d events of %s", len(runner_events), runner)
                for event in runner_events:
                    await dead_lettered(f"processing failed: {type(exc).__name__}: {exc}",
                                        event.to_bytes(), event.runner, event.device)
        try:
            await emit_and_save(steps, partition)
        except Exception:
            # the states in memory are ahead of the table now: read them again next time
            for step in steps:
                states.forget(step.runner)
            raise

    async def emit_and_save(steps: list[RunnerStep], partition: int | None) -> None:
        deliveries: list[Awaitable[Any]] = []
        points: list[MetricPoint] = []
        for step in steps:
            key = step.runner.encode()
            for event, error in step.failed:
                log.error("could not process %s seq %d from %s/%s", event.kind, event.seq,
                          event.runner, event.device, exc_info=error)
                await dead_lettered(f"processing failed: {type(error).__name__}: {error}",
                                    event.to_bytes(), event.runner, event.device)
            for event, out in step.outputs:
                stats["events"] += 1
                ops.inc("stridewatch_worker_events_total")
                if out.duplicate:
                    stats["duplicates"] += 1
                    if out.too_old:
                        log.warning("skipped %s seq %d from %s/%s: older than the %d sequence "
                                    "gaps remembered for that device; counted as already "
                                    "seen", event.kind, event.seq, event.runner, event.device,
                                    MAX_RANGES)
                    continue
                for alert in out.alerts:
                    stats["alerts"] += 1
                    log.info("alert %s %s for %s", alert.rule, alert.severity, alert.runner,
                             extra=runner_extra(alert.runner))
                    ops.inc("stridewatch_worker_records_out_total", topic="alerts")
                    delivery = await alerts.send(key=key, value=alert.to_bytes())
                    if delivery is not None:
                        deliveries.append(delivery)
                points += out.points
        if points:
            # all points of the record in one metrics record, on the record's partition
            ops.inc("stridewatch_worker_records_out_total", topic="metrics")
            delivery = await metrics.send(key=None, value=encode_points(points),
                                          partition=partition)
            if delivery is not None:
                deliveries.append(delivery)
        # A state marks its events as seen, so it is written only once Kafka holds their
        # alerts and points: a crash or a stop in between replays the record (its points
        # overwrite themselves) instead of losing them. With group records that is one
        # wait per record of up to a few hundred events, not one per event.
        for delivery in deliveries:
            await delivery
        for step in steps:
            if step.save is not None:
                # Faust writes a table's changelog to the current event's partition; the
                # bridge put this record on the partition the producers' partitioner gives
                # each of its runners (ingest.records.partition_for), so every runner's
                # changelog lands on that runner's partition and recovery finds it there.
                step.save()

    @app.agent(events, name="runner-load")
    async def runner_load(stream: StreamT[bytes]) -> None:
        # every forgotten runner is known before the first record is handled
        await forgotten.start()
        consumer = app.consumer
        assert isinstance(consumer, InOrderConsumer)
        try:
            async for event in stream.events():
                tp, offset = event.message.tp, event.message.offset
                if not await consumer.in_order(tp, offset, time.monotonic()):
                    continue  # it comes again, in order
                if is_forget_request(event.headers):
                    try:
                        forget(forget_request_runner(event.value))
                    except Exception:  # a bad control record must not stop every runner
                        log.exception("could not handle a forget request; skipped")
                    consumer.processed(tp, offset)
                    continue
                work = asyncio.ensure_future(process(event.value, event.message.partition))
                try:
                    await asyncio.shield(work)
                except asyncio.CancelledError:
                    # stopping (SIGTERM): Faust acks the record in hand as the agent stops,
                    # and commits it; finish it first, or its events would be committed
                    # without their state and outputs
                    if await finish(work):
                        consumer.processed(tp, offset)
                    raise
                consumer.processed(tp, offset)
        finally:
            await forgotten.stop()
            await outputs.stop()

    async def process(raw: bytes, partition: int | None) -> None:
        try:
            await handle(raw, partition)
        except Exception as exc:  # one bad record must not stop every runner
            log.exception("could not process a record; dead-lettered")
            await dead_lettered(f"processing failed: {type(exc).__name__}: {exc}",
                                raw if isinstance(raw, bytes) else b"")

    async def finish(work: asyncio.Future[None]) -> bool:
        deadline = time.monotonic() + FINISH_RECORD_S
        while not work.done() and time.monotonic() < deadline:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({work}, timeout=deadline - time.monotonic())
        if not work.done():
            log.error("stopped in the middle of a record after waiting %.0f s for it: it "
                      "is not committed, the next worker processes it again",
                      FINISH_RECORD_S)
        return work.done()


    async def partitions_assigned(sender: Any, /, *args: Any, signal: BaseSignalT[Any],
                                  **_: Any) -> None:
        assigned: set[TopicPartition] = args[0] if args else set()
        mine = sorted(tp.partition for tp in assigned if tp.topic == settings.events_topic)
        log.info("assigned partitions %s of %s (group %s)", mine, settings.events_topic,
                 settings.worker_group)
        ops.condition("assigned", None)

    app.on_partitions_assigned.connect(partitions_assigned)

    async def partitions_revoked(sender: Any, /, *args: Any, signal: BaseSignalT[Any],
                                 **_: Any) -> None:
        # another worker may update these runners now: after a rebalance, read the table
        states.clear()
        ops.condition("assigned", "partitions revoked: rebalancing")

    app.on_partitions_revoked.connect(partitions_revoked)

    last_report = [0.0]  # monotonic time of the last report line; 0: none yet

    @app.timer(interval=STATUS_EVERY_S)  # type: ignore[untyped-decorator]
    async def report() -> None:
        # the status file every few seconds; a log line at once, then every 30 s
        status.current().update(**stats)
        if time.monotonic() - last_report[0] < REPORT_EVERY_S:
            return
        last_report[0] = time.monotonic()
        log.info("processed %(records)d records, %(events)d events (%(duplicates)d "
                 "duplicates), %(alerts)d alerts, %(deadletters)d dead letters; "
                 "%(unknown_runners)d runners not in the roster (%(unassigned_events)d events "
                 "in team unassigned)", stats)

    return StreamApp(app, runner_load, events, alerts, metrics, deadletters, table, outputs,
                     forgotten, stats)
