"""MQTT → Kafka bridge (``stridewatch bridge``).

Delivery (docs/ingest.md, "Delivery guarantees"):

- Persistent MQTT 5 session (clean start off, a week's session expiry) and manual
  acknowledgement: a message is acknowledged to the broker only after Kafka acknowledged
  its record (or its dead letter). Acknowledgements go out in the order the messages
  arrived, as MQTT requires.
- In flight is bounded by MQTT 5's receive maximum (``bridge_max_in_flight``): the broker
  should send no more than that many unacknowledged messages and queue the rest. Mosquitto
  2.0.x does not hold to it (after a PUBACK it refills the window by the acknowledged
  message's position, so in-order acknowledgements let it overshoot), so the bridge also
  bounds itself: while that many messages wait for Kafka, paho's network thread waits
  (up to a second per message) before it takes the next, which leaves the rest in the
  broker. It never waits while Kafka is away, so keepalive pings keep going.
- While Kafka is away the bridge keeps what it holds unacknowledged, retries with capped
  exponential backoff and one producer (recreated once per outage, never one per message),
  logs one line when Kafka goes away, a status line every 10 s and one when it is back.
  Before producing again it re-creates missing topics with the configured partition count
  (a memory broker that restarted has forgotten them; an auto-created topic would get the
  broker's default count).
- MQTT keepalive is paho's network thread's job; nothing on that thread waits for Kafka.
  If the MQTT connection drops, acknowledgements of messages received on the old
  connection are not sent: the broker resends those messages on the new connection (same
  packet ids), and the stream counts a redelivered sequence once.
- A record Kafka can never take (too large) is dead-lettered instead of blocking the
  stream behind it; every bad message becomes a dead letter with a reason.

Fewer, fuller records (``ingest/records.py``): the events of runners whose ids hash to the
same partition, received within ``bridge_group_window_s`` (at most
``bridge_group_max_events`` / ``bridge_group_max_bytes``), go to that partition as one
group record. A message is acknowledged once the record holding it is in Kafka. A
partition's groups are sent one after the other, so a runner's events keep their order.
Dead letters stay one record each.

Sending, retrying while Kafka is away, and telling of outages live in
``ingest/kafka_sender.py``; this module holds the flow control and the acknowledgement
order.

Scale-out: every instance subscribes through the shared subscription
``$share/<bridge_share_group>/…``, so the broker splits the messages between them. The
instance with the configured client id (``bridge_client_id``) is the anchor: it keeps its
subscription when it stops, so that while no bridge runs the broker queues messages for
it instead of dropping them. Any other instance (``--client-id bridge-2``) unsubscribes
when it stops gracefully and drains what the broker had already queued for it, so the
remaining instances get the new messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from base.mqtt import connect_blocking, make_client, service_password
from base.settings import Settings
from ingest.contract import RunnerEvent
from ingest.dead_letters import MAX_DEAD_LETTER_RAW
from ingest.decoders import InboundMessage
from ingest.kafka_sender import BRIDGE_HEADER, UNSENDABLE, KafkaSender
from ingest.records import (
    GROUP_OVERHEAD_BYTES,
    KafkaRecord,
    dead_letter_record,
    group_value,
    partition_for,
    to_event,
    to_record,
)
from ingest.routing import SUBSCRIPTIONS

log = logging.getLogger("stridewatch.bridge")

STATUS_EVERY_S = 10.0
REPORT_EVERY_S = 30.0
DRAIN_TIMEOUT_S = 10.0
QUIET_S = 1.0


__all__ = ["MAX_DEAD_LETTER_RAW", "Bridge", "KafkaRecord", "dead_letter_record", "to_record"]


@dataclass
class BridgeStats:
    received: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    kafka_retries: int = 0
    acked: int = 0
    # event records sent to Kafka (a group record holds many messages)
    records: int = 0
    # most messages at once waiting for Kafka / held unacknowledged
    max_waiting: int = 0
    # acknowledgements not sent because the MQTT connection they belonged to is gone
    left_for_redelivery: int = 0
    max_in_flight: int = 0
    outages: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        return (f"{self.received} received, {self.delivered} delivered to Kafka "
                f"({self.dead_lettered} dead letters) in {self.records} event records, "
                f"{self.acked} acknowledged, "
                f"{self.left_for_redelivery} left for redelivery, {self.kafka_retries} Kafka "
                f"retries, {self.outages} Kafka outages, max {self.max_waiting} waiting for "
                f"Kafka, max {self.max_in_flight} in flight")


@dataclass(slots=True)
class _Group:
    """The events of one partition's runners, collected for one window."""

    partition: int
    first_runner: str
    sent: asyncio.Future[None]
    events: list[bytes] = field(default_factory=list)
    messages: list[InboundMessage] = field(default_factory=list)
    size: int = GROUP_OVERHEAD_BYTES


@dataclass(slots=True)
class _InFlight:
    task: asyncio.Task[None]
    mid: int
    qos: int
    generation: int


class Bridge:
    def __init__(self, settings: Settings, client_id: str | None = None) -> None:
        self.settings = settings
        self.client_id = client_id or settings.bridge_client_id
        self.anchor = self.client_id == settings.bridge_client_id
        self.stats = BridgeStats()
        self.connected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._in_flight: deque[_InFlight] = deque()
        self._wake = asyncio.Event()
        # the group being filled per partition, and the last group sent per partition: a
        # partition's groups go to Kafka one after the other, so a runner's events reach
        # Kafka in the order the runner published them (through this instance)
        self._open_groups: dict[int, _Group] = {}
        self._last_group: dict[int, asyncio.Task[None]] = {}
        # bumped by paho's thread on every (re)connect; messages carry the one they came on
        self._generation = 0
        self._last_arrival = time.monotonic()
        self._leaving = False
        self._stopping = False
        self._unsubscribed = asyncio.Event()
        # messages taken from MQTT and not yet in Kafka; paho's thread waits for room
        self._room = threading.Condition()
        self._waiting = 0
        self._kafka_away = False
        # Kafka: the one producer, backoff while Kafka is away, outage bookkeeping
        self.kafka = KafkaSender(settings, self.stats,
                                 [(BRIDGE_HEADER, self.client_id.encode())],
                                 on_away=self._set_kafka_away, in_flight=lambda: self.in_flight)

    @property
    def in_flight(self) -> int:
        """Messages received from MQTT and not acknowledged yet."""
        return len(self._in_flight)

    # -- MQTT side (paho's network thread) ----------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    props: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connection refused: %s", reason)
            return
        self._generation += 1
        if self._leaving:
            return
        group = self.settings.bridge_share_group
        client.subscribe([(f"$share/{group}/{f}", SubscribeOptions(qos=1))
                          for f in SUBSCRIPTIONS])
        log.info("connected to MQTT as %s (session present: %s); subscribed to %s "
                 "(shared group %s)", self.client_id, bool(getattr(flags, "session_present",
                                                                   False)),
                 ", ".join(SUBSCRIPTIONS), group)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       props: Any) -> None:
        if self._stopping:
            log.info("MQTT disconnected (%s)", reason)
        else:
            log.warning("MQTT disconnected (%s); reconnecting", reason)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                        props: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._unsubscribed.set)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
                    ) -> None:
        bound = self.settings.bridge_max_in_flight
        with self._room:
            # the broker should not send more than the receive maximum; if it does, take
            # the next only once there is room (bounded wait: keepalive runs on this thread)
            self._room.wait_for(lambda: self._waiting < bound or self._kafka_away
                                or self._stopping, timeout=1.0)
            self._waiting += 1
            self.stats.max_waiting = max(self.stats.max_waiting, self._waiting)
        inbound = InboundMessage(message.topic, bytes(message.payload), time.time(),
                                 message.qos, bool(message.retain))
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._accept, inbound, message.mid, message.qos,
                                        self._generation)

    # -- asyncio side ------------------------------------------------------------------
    def _accept(self, msg: InboundMessage, mid: int, qos: int, generation: int) -> None:
        self.stats.received += 1
        self._last_arrival = time.monotonic()
        task = asyncio.create_task(self._deliver(msg))
        task.add_done_callback(self._make_room)
        self._in_flight.append(_InFlight(task, mid, qos, generation))
        self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._in_flight))
        self._wake.set()

    def _make_room(self, task: asyncio.Task[None]) -> None:
        with self._room:
            self._waiting -= 1
            self._room.notify()

    def _set_kafka_away(self, away: bool) -> None:
        with self._room:
            self._kafka_away = away
            self._room.notify_all()

    async def _deliver(self, msg: InboundMessage) -> None:
        # decoding happens before the first await, so a group holds events in arrival order
        event = to_event(msg)
        if isinstance(event, str):
            await self._dead_letter(msg, event)
        else:
            await asyncio.shield(self._join_group(msg, event).sent)
        self.stats.delivered += 1

    def _join_group(self, msg: InboundMessage, event: RunnerEvent) -> _Group:
        settings = self.settings
        partition = partition_for(event.runner, settings.kafka_partitions)
        raw = event.to_bytes()
        group = self._open_groups.get(partition)
        if group is not None and group.size + len(raw) + 1 > settings.bridge_group_max_bytes:
            self._close_group(group)
            group = None
        if group is None:
            assert self._loop is not None
            group = _Group(partition, event.runner, self._loop.create_future())
            self._open_groups[partition] = group
            self._loop.call_later(settings.bridge_group_window_s, self._close_group, group)
        group.events.append(raw)
        group.messages.append(msg)
        group.size += len(raw) + 1
        if len(group.events) >= settings.bridge_group_max_events:
            self._close_group(group)
        return group

    def _close_group(self, group: _Group) -> None:
        if self._open_groups.get(group.partition) is not group:
            return  # closed already (full, or its window ended)
        del self._open_groups[group.partition]
        before = self._last_group.get(group.partition)
        task = asyncio.create_task(self._send_group(group, before))
        self._last_group[group.partition] = task
        task.add_done_callback(lambda t: self._forget_group(group.partition, t))

    def _forget_group(self, partition: int, task: asyncio.Task[None]) -> None:
        if self._last_group.get(partition) is task:
            del self._last_group[partition]

    async def _send_group(self, group: _Group, before: asyncio.Task[None] | None) -> None:
        try:
            if before is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(before)
            record = KafkaRecord(self.settings.events_topic, group.first_runner.encode(),
                                 group_value(group.events), group.partition,
                                 len(group.events))
            try:
                await self.kafka.send(record)
                self.stats.records += 1
            except UNSENDABLE:
                # one of the events is too large for the topic: send them one by one, so
                # only that one becomes a dead letter
                for msg in group.messages:
                    await self._send_single(msg)
        except asyncio.CancelledError:
            group.sent.cancel()  # stopping: the messages stay unacknowledged
            raise
        except Exception as exc:
            if not group.sent.done():
                group.sent.set_exception(exc)
            raise
        group.sent.set_result(None)

    async def _send_single(self, msg: InboundMessage) -> None:
        record, _ = to_record(self.settings, msg)
        try:
            await self.kafka.send(record)
            self.stats.records += 1
        except UNSENDABLE as exc:
            reason = (f"Kafka refused the record ({type(exc).__name__}: {len(record.value)} "
                      "bytes); send smaller batches or raise the topic's max.message.bytes")
            await self._dead_letter(msg, reason)

    async def _dead_letter(self, msg: InboundMessage, reason: str) -> None:
        self.stats.dead_lettered += 1
        log.warning("dead letter from %s: %s", msg.topic, reason)
        try:
            await self.kafka.send(dead_letter_record(self.settings, msg, reason))
        except UNSENDABLE as refused:
            # cannot happen with the raw bytes capped; never block the stream on it
            log.error("Kafka refused the dead letter from %s (%s); dropped", msg.topic,
                      type(refused).__name__)

    async def _acker(self) -> None:
        # MQTT wants QoS 1 acknowledgements in the order the messages arrived
        while True:
            while not self._in_flight:
                self._wake.clear()
                await self._wake.wait()
            head = self._in_flight[0]
            with contextlib.suppress(Exception):
                await asyncio.shield(head.task)
            self._in_flight.popleft()
            if head.qos == 0 or self._client is None:
                continue
            if head.generation != self._generation:
                # received on a connection that is gone: the broker resends it on this one
                self.stats.left_for_redelivery += 1
                continue
            self._client.ack(head.mid, head.qos)
            self.stats.acked += 1

    async def _status(self) -> None:
        last_report = time.monotonic()
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            self.kafka.report_outage()
            if time.monotonic() - last_report >= REPORT_EVERY_S:
                last_report = time.monotonic()
                log.info("bridge %s: %s", self.client_id, self.stats.summary())

    async def run(self, stop: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        aiokafka_log = logging.getLogger("aiokafka")
        aiokafka_log.addFilter(self.kafka.log_filter)
        status = asyncio.create_task(self._status())
        client: mqtt.Client | None = None
        acker: asyncio.Task[None] | None = None
        try:
            # take messages only once Kafka answers (waits, does not give up, while it is away)
            ready = asyncio.create_task(self.kafka.producer_ready())
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not ready.done():
                ready.cancel()
                return
            ready.result()
            self.kafka.back()
            client, props = make_client(
                self.settings, self.client_id, self.settings.bridge_username,
                service_password(self.settings, "bridge"), persistent=True,
                receive_maximum=self.settings.bridge_max_in_flight, manual_ack=True)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            client.on_unsubscribe = self._on_unsubscribe
            self._client = client
            await asyncio.to_thread(connect_blocking, self.settings, client, props,
                                    clean_start=False)
            acker = asyncio.create_task(self._acker())
            await stop.wait()
            await self._leave(client)
        finally:
            with self._room:
                self._stopping = True
                self._room.notify_all()
            for task in (status, acker):
                if task is not None:
                    task.cancel()
            for item in list(self._in_flight):
                item.task.cancel()
            for group_task in list(self._last_group.values()):
                group_task.cancel()
            if client is not None:
                client.disconnect()
                client.loop_stop()
            await self.kafka.stop()
            aiokafka_log.removeFilter(self.kafka.log_filter)
            log.info("bridge %s stopped: %s", self.client_id, self.stats.summary())

    async def _leave(self, client: mqtt.Client) -> None:
        """Stop taking work and let what is in flight finish, so its acknowledgements go out.

        A non-anchor instance also unsubscribes, so the broker stops queueing messages for
        a session that may never come back, and takes what was already queued for it.
        """
        if not self.anchor:
            self._leaving = True
            group = self.settings.bridge_share_group
            client.unsubscribe([f"$share/{group}/{f}" for f in SUBSCRIPTIONS])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._unsubscribed.wait(), 5)
            self._last_arrival = time.monotonic()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            quiet = self.anchor or time.monotonic() - self._last_arrival >= QUIET_S
            if not self._in_flight and quiet:
                return
            await asyncio.sleep(0.1)
        log.warning("stopping with %d messages unacknowledged; the broker redelivers them "
                    "when %s connects again", self.in_flight, self.client_id)
