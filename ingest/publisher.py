"""Publish contract messages as a runner would: own credentials, QoS 1, acknowledged.

The broker's answer to every publish is checked: MQTT 5 PUBACK carries a reason code, and
a publish the ACL refuses comes back as "Not authorized" (135) instead of silently
vanishing. Such a refusal raises :class:`~base.mqtt.MqttError`. A publish the
broker accepted but no subscriber wanted (16, "No matching subscribers": no bridge session
exists yet, so the message is gone) is counted in :attr:`RunnerPublisher.unrouted`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from base.mqtt import MqttError, connect_blocking, make_client, runner_password
from base.settings import Settings
from ingest import topics

NOT_AUTHORIZED = 135
NO_MATCHING_SUBSCRIBERS = 16


@dataclass(frozen=True, slots=True)
class _Sent:
    runner: str
    topic: str
    info: mqtt.MQTTMessageInfo


class RunnerPublisher:
    """One MQTT connection per runner; at most ``window`` messages unacknowledged."""

    def __init__(self, settings: Settings, window: int = 200, client_prefix: str = "device"
                 ) -> None:
        self.settings = settings
        self.window = window
        self.client_prefix = client_prefix
        self.clients: dict[str, mqtt.Client] = {}
        self.in_flight: deque[_Sent] = deque()
        self.published = 0
        self.unrouted = 0
        self._lock = threading.Lock()
        # (runner, mid) -> reason code, for publishes the broker answered with a failure
        self._refused: dict[tuple[str, int], str] = {}
        self._unrouted_mids: set[tuple[str, int]] = set()

    def _client(self, runner: str, password: str | None) -> mqtt.Client:
        if runner not in self.clients:
            client, props = make_client(self.settings, f"{self.client_prefix}-{runner}", runner,
                                        password or runner_password(self.settings, runner))

            def on_publish(c: mqtt.Client, userdata: Any, mid: int, reason: Any,
                           p: Any) -> None:
                # paho calls this before it marks the message published, so the answer is
                # recorded by the time wait_for_publish returns
                with self._lock:
                    if reason.is_failure:
                        self._refused[(runner, mid)] = f"{reason} ({reason.value})"
                    elif reason.value == NO_MATCHING_SUBSCRIBERS:
                        self._unrouted_mids.add((runner, mid))

            client.on_publish = on_publish
            connect_blocking(self.settings, client, props)
            self.clients[runner] = client
        return self.clients[runner]

    def publish(self, topic: str, payload: bytes, password: str | None = None) -> None:
        runner, _ = topics.owner(topic)
        if runner is None:
            raise MqttError(f"{topic} is not a runner's topic (runners/<runner>/…)")
        info = self._client(runner, password).publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        self.in_flight.append(_Sent(runner, topic, info))
        self.published += 1
        while len(self.in_flight) > self.window:
            self._wait_one()

    def publish_all(self, messages: Iterable[tuple[str, bytes]]) -> int:
        count = 0
        for topic, payload in messages:
            self.publish(topic, payload)
            count += 1
        return count

    def _wait_one(self, timeout: float = 30.0) -> None:
        sent = self.in_flight.popleft()
        sent.info.wait_for_publish(timeout)
        if not sent.info.is_published():
            raise MqttError("the broker did not acknowledge a QoS 1 publish within "
                            f"{timeout:.0f} s")
        key = (sent.runner, sent.info.mid)
        with self._lock:
            refused = self._refused.pop(key, None)
            if key in self._unrouted_mids:
                self._unrouted_mids.discard(key)
                self.unrouted += 1
        if refused is not None:
            raise MqttError(f"the broker refused the publish to {sent.topic} by "
                            f"'{sent.runner}': {refused}")

    def flush(self) -> None:
        while self.in_flight:
            self._wait_one()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            for client in self.clients.values():
                client.disconnect()
                client.loop_stop()
            self.clients.clear()

    def __enter__(self) -> RunnerPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            # already failing: do not wait for acknowledgements that may never come
            self.in_flight.clear()
        self.close()
