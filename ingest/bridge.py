"""MQTT → Kafka bridge (``stridewatch bridge``).

- Subscribes inside ``on_connect`` (so a reconnect resubscribes) through a shared
  subscription, so several bridges split the load.
- Persistent MQTT 5 session and manual acknowledgement: a message is acknowledged to the
  broker only after Kafka acknowledged the record (or its dead letter). If Kafka is away
  the bridge keeps retrying and the broker keeps the rest queued; nothing is lost.
- In flight is bounded by MQTT's receive maximum: the broker sends no more than that
  many unacknowledged messages.
- Every bad message becomes a dead letter with a reason; the bridge keeps going.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.contract import is_valid_id
from ingest.decoders import InboundMessage, Rejected
from ingest.routing import SUBSCRIPTIONS, decode_message
from stridewatch.kafka import ensure_topics, make_producer
from stridewatch.mqtt import connect_blocking, make_client, service_password
from stridewatch.settings import Settings

log = logging.getLogger("stridewatch.bridge")


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    key: bytes | None
    value: bytes


def dead_letter_record(settings: Settings, msg: InboundMessage, reason: str) -> KafkaRecord:
    parts = msg.topic.split("/")
    runner = parts[1] if len(parts) > 1 and parts[0] == "runners" and is_valid_id(parts[1]) \
        else None
    device = parts[2] if len(parts) == 4 and is_valid_id(parts[2]) else None
    value = json.dumps({
        "reason": reason, "topic": msg.topic, "runner": runner, "device": device,
        "at": msg.received_at, "stage": "ingest",
        "raw_b64": base64.b64encode(msg.payload).decode()}).encode()
    return KafkaRecord(settings.deadletter_topic, runner.encode() if runner else None, value)


def to_record(settings: Settings, msg: InboundMessage) -> tuple[KafkaRecord, str | None]:
    """The Kafka record for an MQTT message, and the rejection reason if it is a dead letter."""
    try:
        event = decode_message(msg)
    except Rejected as exc:
        return dead_letter_record(settings, msg, exc.reason), exc.reason
    except Exception as exc:  # a decoder bug must not stop ingest either
        reason = f"decoder failed: {type(exc).__name__}: {exc}"
        return dead_letter_record(settings, msg, reason), reason
    return KafkaRecord(settings.events_topic, event.runner.encode(), event.to_bytes()), None


@dataclass
class BridgeStats:
    received: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    kafka_retries: int = 0
    started: float = field(default_factory=time.monotonic)


class Bridge:
    def __init__(self, settings: Settings, client_id: str | None = None) -> None:
        self.settings = settings
        self.client_id = client_id or settings.bridge_client_id
        self.stats = BridgeStats()
        self._queue: asyncio.Queue[tuple[InboundMessage, int, int]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._producer: AIOKafkaProducer | None = None
        # the last delivery per runner: the next waits for it, so a runner's records reach
        # Kafka in the order the runner published them
        self._last_delivery: dict[str, asyncio.Task[None]] = {}
        self.connected = asyncio.Event()

    # -- MQTT side (paho's network thread) ----------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    props: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connection refused: %s", reason)
            return
        group = self.settings.bridge_share_group
        client.subscribe([(f"$share/{group}/{f}", SubscribeOptions(qos=1))
                          for f in SUBSCRIPTIONS])
        log.info("connected to MQTT; subscribed to %s (shared group %s)",
                 ", ".join(SUBSCRIPTIONS), group)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       props: Any) -> None:
        log.warning("MQTT disconnected (%s); reconnecting", reason)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
                    ) -> None:
        inbound = InboundMessage(message.topic, bytes(message.payload), time.time(),
                                 message.qos, bool(message.retain))
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait,
                                        (inbound, message.mid, message.qos))

    # -- Kafka side --------------------------------------------------------------------
    async def _send(self, record: KafkaRecord) -> None:
        """Send until Kafka acknowledges; back off while it is away."""
        delay = 0.2
        while True:
            producer = await self._ensure_producer()
            try:
                await (await producer.send(record.topic, record.value, key=record.key))
                return
            except UnknownTopicOrPartitionError:
                # a memory broker that restarted has forgotten its topics
                self.stats.kafka_retries += 1
                with contextlib.suppress(Exception):
                    await ensure_topics(self.settings, attempts=2)
            except (KafkaError, OSError) as exc:
                self.stats.kafka_retries += 1
                log.warning("Kafka unavailable (%s); retrying in %.1f s", type(exc).__name__,
                            delay)
                await self._reset_producer()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        while self._producer is None:
            producer = make_producer(self.settings)
            try:
                await producer.start()
                self._producer = producer
            except (KafkaError, OSError) as exc:
                log.warning("cannot reach Kafka at %s (%s); retrying",
                            self.settings.kafka_bootstrap, type(exc).__name__)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(1.0)
        return self._producer

    async def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

    async def _deliver(self, msg: InboundMessage, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.shield(before)
        record, reason = to_record(self.settings, msg)
        if reason is not None:
            self.stats.dead_lettered += 1
            log.warning("dead letter from %s: %s", msg.topic, reason)
        await self._send(record)
        self.stats.delivered += 1

    def _forget(self, runner: str, task: asyncio.Task[None]) -> None:
        if self._last_delivery.get(runner) is task:
            del self._last_delivery[runner]

    async def _acker(self, pending: deque[tuple[asyncio.Task[None], int, int]],
                     wake: asyncio.Event) -> None:
        # MQTT wants QoS 1 acknowledgements in the order the messages arrived
        while True:
            while not pending:
                wake.clear()
                await wake.wait()
            task, mid, qos = pending[0]
            await task
            pending.popleft()
            if qos > 0 and self._client is not None:
                self._client.ack(mid, qos)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        await ensure_topics(self.settings)
        await self._ensure_producer()
        client, props = make_client(
            self.settings, self.client_id, self.settings.bridge_username,
            service_password(self.settings, "bridge"), persistent=True,
            receive_maximum=self.settings.bridge_max_in_flight, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        await asyncio.to_thread(connect_blocking, self.settings, client, props,
                                clean_start=False)
        pending: deque[tuple[asyncio.Task[None], int, int]] = deque()
        wake = asyncio.Event()
        acker = asyncio.create_task(self._acker(pending, wake))
        reporter = asyncio.create_task(self._report())
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(self._queue.get())
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({getter, stopper},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                stopper.cancel()
                inbound, mid, qos = getter.result()
                self.stats.received += 1
                runner = inbound.topic.split("/")[1] if "/" in inbound.topic else ""
                before = self._last_delivery.get(runner)
                task = asyncio.create_task(self._deliver(inbound, before))
                self._last_delivery[runner] = task
                task.add_done_callback(functools.partial(self._forget, runner))
                pending.append((task, mid, qos))
                wake.set()
            # let what is in flight finish so its acknowledgements go out
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drain(pending), timeout=10)
        finally:
            for task in (acker, reporter):
                task.cancel()
            client.disconnect()
            client.loop_stop()
            await self._reset_producer()
            log.info("bridge stopped: %s", self.stats)

    async def _drain(self, pending: deque[tuple[asyncio.Task[None], int, int]]) -> None:
        await asyncio.gather(*(task for task, _, _ in list(pending)), return_exceptions=True)
        await asyncio.sleep(0)  # let the acker acknowledge the last of them

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(30)
            s = self.stats
            log.info("bridge: %d received, %d delivered, %d dead letters, %d Kafka retries",
                     s.received, s.delivered, s.dead_lettered, s.kafka_retries)
