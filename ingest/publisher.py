"""Publish contract messages as a runner would: own credentials, QoS 1, acknowledged."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import paho.mqtt.client as mqtt

from stridewatch.mqtt import MqttError, connect_blocking, make_client, runner_password
from stridewatch.settings import Settings


class RunnerPublisher:
    """One MQTT connection per runner; at most ``window`` messages unacknowledged."""

    def __init__(self, settings: Settings, window: int = 200) -> None:
        self.settings = settings
        self.window = window
        self.clients: dict[str, mqtt.Client] = {}
        self.in_flight: deque[mqtt.MQTTMessageInfo] = deque()
        self.published = 0

    def _client(self, runner: str, password: str | None) -> mqtt.Client:
        if runner not in self.clients:
            client, props = make_client(self.settings, f"device-{runner}", runner,
                                        password or runner_password(self.settings, runner))
            connect_blocking(self.settings, client, props)
            self.clients[runner] = client
        return self.clients[runner]

    def publish(self, topic: str, payload: bytes, password: str | None = None) -> None:
        runner = topic.split("/")[1]
        info = self._client(runner, password).publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        self.in_flight.append(info)
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
        info = self.in_flight.popleft()
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise MqttError("the broker did not acknowledge a QoS 1 publish within "
                            f"{timeout:.0f} s")

    def flush(self) -> None:
        while self.in_flight:
            self._wait_one()

    def close(self) -> None:
        self.flush()
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()
        self.clients.clear()

    def __enter__(self) -> RunnerPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
