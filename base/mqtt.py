"""paho-mqtt client factory and helpers shared by the bridge, notifier and simulator."""

from __future__ import annotations

import json
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from base.settings import Settings

SESSION_EXPIRY_S = 7 * 24 * 3600


class MqttError(RuntimeError):
    pass


def service_password(settings: Settings, account: str) -> str:
    """A service account's password: from settings, else from the local stack's secrets."""
    configured = {"bridge": settings.bridge_password,
                  "notifier": settings.notifier_password}[account].get_secret_value()
    if configured:
        return configured
    return _from_file(settings.service_secrets_file, account, f"STRIDEWATCH_{account.upper()}"
                      "_PASSWORD")


def runner_password(settings: Settings, runner: str) -> str:
    return _from_file(settings.runner_secrets_file, runner,
                      f"`stridewatch runners add {runner}`")


def read_secrets(path: Path) -> dict[str, str]:
    """The local stack's password file (account or runner -> password); {} if missing."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_secrets(path: Path, data: dict[str, str]) -> None:
    """Write a password file readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def _from_file(path: Path, key: str, hint: str) -> str:
    value = read_secrets(path).get(key)
    if value is None:
        raise MqttError(f"no MQTT password for '{key}': set {hint}, or start the local stack "
                        "so it creates one")
    return value


def make_client(settings: Settings, client_id: str, username: str, password: str, *,
                persistent: bool = False, receive_maximum: int | None = None,
                manual_ack: bool = False) -> tuple[mqtt.Client, Properties]:
    """An MQTT 5 client; ``persistent`` keeps the session (and queued QoS 1) across drops."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    client.username_pw_set(username, password)
    if settings.mqtt_tls:
        ca = settings.mqtt_trusted_ca
        # verifies the broker's certificate and that it names mqtt_host
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        client.tls_set_context(context)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if persistent:
        props.SessionExpiryInterval = SESSION_EXPIRY_S
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return client, props


def connect_blocking(settings: Settings, client: mqtt.Client, props: Properties, *,
                     clean_start: bool = True, timeout: float = 15.0) -> None:
    """Connect, start the network thread and wait for CONNACK; raise with the reason."""
    done = threading.Event()
    result: dict[str, Any] = {}

    previous: Any = client.on_connect

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, p: Any) -> None:
        result["reason"] = reason
        done.set()
        if previous is not None:
            previous(c, userdata, flags, reason, p)  # e.g. subscribe, on every reconnect

    client.on_connect = on_connect
    host, port = settings.mqtt_host, settings.mqtt_client_port
    try:
        client.connect(host, port, keepalive=30, clean_start=clean_start, properties=props)
    except ssl.SSLError as exc:
        trusted = settings.mqtt_trusted_ca or "the system's trust store"
        raise MqttError(f"TLS with the MQTT broker at {host}:{port} failed: {exc}. The "
                        f"client trusts {trusted} (STRIDEWATCH_MQTT_CA_FILE); the broker's "
                        f"certificate must be signed by it and name {host}") from None
    except OSError as exc:
        raise MqttError(f"cannot reach MQTT broker at {host}:{port}: {exc}") from None
    client.loop_start()
    if not done.wait(timeout):
        client.loop_stop()
        raise MqttError(f"MQTT broker at {host}:{port} did not answer within {timeout:.0f} s")
    reason = result["reason"]
    if reason.is_failure:
        client.loop_stop()
        raise MqttError(f"MQTT broker refused the connection: {reason}")
