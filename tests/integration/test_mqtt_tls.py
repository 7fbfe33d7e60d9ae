"""MQTT over TLS against the real Mosquitto: the local stack's CA and server certificate,
the TLS listener, the project's clients and ``mosquitto_pub`` over it, and clients that do
not trust the CA refused.

Each test here needs only Mosquitto, so each module fixture starts just that service.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from base.mqtt import MqttError, connect_blocking, make_client
from base.settings import Settings
from deploy.mosquitto import Mosquitto
from deploy.tls import TlsFiles, ensure_ca, issue_client_certificate
from ingest import topics
from ingest.publisher import RunnerPublisher
from stridewatch.cli import main
from stridewatch.processes import settings_env
from tests.conftest import free_port, new_stack_settings, wait_for

pytestmark = pytest.mark.integration

RUNNER = "tls-ana"
OTHER = "tls-ben"
SAMPLES = topics.device_topic(RUNNER, "watch", "samples")


def sample(seq: int) -> bytes:
    # fixed times: the broker does not read them, the payload only has to be unique
    return json.dumps({"seq": seq, "t": 1_780_000_000.0 + seq, "hr": 140 + seq % 20}).encode()


class Collector:
    """Subscribes as the bridge's account (over whatever the settings say) and collects."""

    def __init__(self, settings: Settings, password: str, topic: str = SAMPLES) -> None:
        self.payloads: list[bytes] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client, props = make_client(settings, f"collector-{time.monotonic_ns()}",
                                         settings.bridge_username, password)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, reasons, p: subscribed.set()

        def on_message(c: Any, userdata: Any, message: Any) -> None:
            with self._lock:
                self.payloads.append(message.payload)

        self.client.on_message = on_message
        connect_blocking(settings, self.client, props)
        assert subscribed.wait(10), "subscription not acknowledged"

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.payloads)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mosquitto_pub(settings: Settings, cafile: Path, password: str, payload: bytes,
                  *extra: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("mosquitto_pub")
    assert binary is not None, "mosquitto_pub is missing: run deploy/setup.sh"
    return subprocess.run(
        [binary, "-h", settings.mqtt_host, "-p", str(settings.mqtt_tls_port), "-V", "mqttv5",
         "--cafile", str(cafile), "-u", RUNNER, "-P", password, "-q", "1", "-t", SAMPLES,
         "-m", payload.decode(), *extra],
        capture_output=True, text=True, timeout=30, check=False)


def connack(host: str, port: int, username: str, password: str,
            context: ssl.SSLContext | None = None) -> int | str:
    """The broker's CONNACK reason code (0: accepted), or why there was none."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.time_ns()}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    if context is not None:
        client.tls_set_context(context)
    answers: list[int] = []
    client.on_connect = lambda c, u, f, reason, p: answers.append(reason.value)
    try:
        client.connect(host, port, keepalive=10)
    except OSError as exc:  # ssl.SSLError is one too
        return type(exc).__name__
    client.loop_start()
    try:
        deadline = time.monotonic() + 5
        while not answers and time.monotonic() < deadline:
            time.sleep(0.05)
        return answers[0] if answers else "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture(scope="module")
def tls_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return new_stack_settings(tmp_path_factory, mqtt_tls=True, mqtt_tls_port=free_port())


@pytest.fixture(scope="module")
def broker(tls_settings: Settings) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tls_settings)
    mosquitto.start()
    mosquitto.add_runner(RUNNER)
    mosquitto.add_runner(OTHER)
    yield mosquitto
    mosquitto.stop()


def test_stack_makes_a_ca_and_server_certificate_with_private_keys_0600(
        broker: Mosquitto, tls_settings: Settings) -> None:
    tls = tls_settings.mqtt_tls_dir
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((tls / key).stat().st_mode) == 0o600, key
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    text = subprocess.run(["openssl", "x509", "-in", str(tls / "server.crt"), "-noout",
                           "-ext", "subjectAltName"], capture_output=True, text=True,
                          check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(tls / "ca.crt"),
                               str(tls / "server.crt")], capture_output=True, text=True,
                              check=False)
    assert verified.returncode == 0, verified.stderr
    conf = broker.conf_file.read_text()
    assert f"listener {tls_settings.mqtt_tls_port} 127.0.0.1" in conf
    assert f"certfile {tls / 'server.crt'}" in conf
    assert broker.status().healthy and "(TLS)" in broker.status().address


def test_project_clients_publish_and_subscribe_over_tls(broker: Mosquitto,
                                                        tls_settings: Settings) -> None:
    collector = Collector(tls_settings, broker.service_password("bridge"))
    try:
        sock = collector.client.socket()
        # the clients take the TLS port and the local CA from the settings alone
        assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
        assert sock.getpeername()[1] == tls_settings.mqtt_tls_port
        sent = [sample(seq) for seq in range(50)]
        with RunnerPublisher(tls_settings) as publisher:
            publisher.publish_all((SAMPLES, p) for p in sent)
            publisher.flush()
            assert publisher.unrouted == 0
        wait_for(lambda: len(collector.received()) >= len(sent), timeout=20,
                 what=f"{len(sent)} messages over TLS")
        time.sleep(0.5)
        assert sorted(collector.received()) == sorted(sent)
    finally:
        collector.close()


def test_mosquitto_pub_with_the_cafile_publishes(broker: Mosquitto,
                                                 tls_settings: Settings) -> None:
    collector = Collector(tls_settings, broker.service_password("bridge"))
    try:
        payload = sample(1001)
        result = mosquitto_pub(tls_settings, tls_settings.mqtt_tls_dir / "ca.crt",
                               broker.runner_password(RUNNER) or "", payload)
        assert result.returncode == 0, result.stderr
        wait_for(lambda: payload in collector.received(), timeout=10,
                 what="the mosquitto_pub message")
    finally:
        collector.close()


def test_clients_that_do_not_trust_the_ca_are_refused(
        broker: Mosquitto, tls_settings: Settings, tmp_path: Path) -> None:
    other_ca = ensure_ca(tmp_path / "other-ca")
    collector = Collector(tls_settings, broker.service_password("bridge"))
    password = broker.runner_password(RUNNER) or ""
    try:
        # the project's clients: another CA, and the system trust store (no CA given and
        # a data dir without the local CA)
        for trusted in ({"mqtt_ca_file": other_ca},
                        {"data_dir": tmp_path / "elsewhere", "mqtt_ca_file": None}):
            untrusting = tls_settings.model_copy(update=trusted)
            with pytest.raises(MqttError, match="certificate verify failed"), \
                    RunnerPublisher(untrusting) as publisher:
                publisher.publish(SAMPLES, sample(2001), password=password)
        result = mosquitto_pub(tls_settings, other_ca, password, sample(2002))
        assert result.returncode != 0
        assert "A TLS error occurred" in result.stderr, result.stderr
        # a client that trusts the CA still checks the name: the certificate names
        # 127.0.0.1, ::1 and localhost only
        context = ssl.create_default_context(cafile=str(tls_settings.mqtt_tls_dir / "ca.crt"))
        with socket.create_connection((tls_settings.mqtt_host, tls_settings.mqtt_tls_port),
                                      timeout=5) as raw, \
                pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            context.wrap_socket(raw, server_hostname="mqtt.example.org")
        time.sleep(1)
        assert collector.received() == [], "nothing from a refused client arrives"
    finally:
        collector.close()


def test_plain_port_stays_open_beside_tls_and_does_not_speak_tls(
        broker: Mosquitto, tls_settings: Settings) -> None:
    # docs/operations.md: with TLS on, the plain listener stays (for tools on the machine)
    # unless STRIDEWATCH_MQTT_PLAIN_LISTENER=false; each port speaks only its own protocol
    host, password = tls_settings.mqtt_host, broker.runner_password(RUNNER) or ""
    assert connack(host, tls_settings.mqtt_port, RUNNER, password) == 0
    assert connack(host, tls_settings.mqtt_port, RUNNER, "wrong") == 135  # not authorized
    # plain MQTT on the TLS port gets no CONNACK at all, nor TLS on the plain port (the
    # broker drops the connection: a reset or a failed handshake, whichever comes first)
    assert isinstance(connack(host, tls_settings.mqtt_tls_port, RUNNER, password), str)
    trusting = ssl.create_default_context(cafile=str(tls_settings.mqtt_tls_dir / "ca.crt"))
    assert connack(host, tls_settings.mqtt_tls_port, RUNNER, password, trusting) == 0
    assert isinstance(connack(host, tls_settings.mqtt_port, RUNNER, password, trusting), str)


def test_plain_listener_off_leaves_only_tls(tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = new_stack_settings(tmp_path_factory, mqtt_tls=True, mqtt_tls_port=free_port(),
                                  mqtt_plain_listener=False)
    mosquitto = Mosquitto(settings)
    mosquitto.start()
    try:
        password = mosquitto.add_runner(RUNNER)
        assert f"listener {settings.mqtt_port} " not in mosquitto.conf_file.read_text()
        assert connack(settings.mqtt_host, settings.mqtt_port, RUNNER,
                       password) == "ConnectionRefusedError"
        collector = Collector(settings, mosquitto.service_password("bridge"))
        try:
            with RunnerPublisher(settings) as publisher:
                publisher.publish(SAMPLES, sample(3001))
            wait_for(lambda: collector.received() == [sample(3001)], timeout=10,
                     what="the message over TLS")
        finally:
            collector.close()
    finally:
        mosquitto.stop()


class CertificateMosquitto(Mosquitto):
    """The TLS listener as docs/operations.md shows it for client certificates: a
    certificate signed by the CA is required and its common name is the user name."""

    def _listener_lines(self) -> str:
        return (super()._listener_lines()
                + "\nrequire_certificate true\nuse_identity_as_username true")


def test_client_certificates_identify_the_user_and_the_acl_applies(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = new_stack_settings(tmp_path_factory, mqtt_tls=True, mqtt_tls_port=free_port(),
                                  mqtt_plain_listener=False)
    mosquitto = CertificateMosquitto(settings)
    mosquitto.start()
    try:
        issued = CliRunner().invoke(main, ["stack", "client-cert", RUNNER],
                                    env=settings_env(settings))
        assert issued.exit_code == 0, issued.output
        ana = TlsFiles(settings.mqtt_tls_dir / "ca.crt",
                       settings.mqtt_tls_dir / f"client-{RUNNER}.crt",
                       settings.mqtt_tls_dir / f"client-{RUNNER}.key")
        assert f"key (mode 0600): {ana.key}" in issued.output
        bridge = issue_client_certificate(settings.mqtt_tls_dir, settings.bridge_username)
        assert stat.S_IMODE(ana.key.stat().st_mode) == 0o600

        def context(files: Any = None) -> ssl.SSLContext:
            made = ssl.create_default_context(cafile=str(settings.mqtt_tls_dir / "ca.crt"))
            if files is not None:
                made.load_cert_chain(str(files.cert), str(files.key))
            return made

        received: list[bytes] = []
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cert-bridge",
                          protocol=mqtt.MQTTv5)
        sub.tls_set_context(context(bridge))
        sub.on_connect = lambda c, u, f, r, p: c.subscribe("runners/+/+/samples", qos=1)
        sub.on_message = lambda c, u, m: received.append(bytes(m.payload))
        sub.connect(settings.mqtt_host, settings.mqtt_tls_port)
        sub.loop_start()
        acks: list[int] = []
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cert-ana",
                          protocol=mqtt.MQTTv5)
        pub.tls_set_context(context(ana))  # no user name, no password: the certificate
        pub.on_publish = lambda c, u, mid, reason, p: acks.append(reason.value)
        pub.connect(settings.mqtt_host, settings.mqtt_tls_port)
        pub.loop_start()
        try:
            wait_for(pub.is_connected, timeout=10, what="ana connected by certificate")
            time.sleep(0.5)  # the subscription is in place
            pub.publish(SAMPLES, sample(4001), qos=1)
            pub.publish(topics.device_topic(OTHER, "watch", "samples"), sample(4002), qos=1)
            wait_for(lambda: len(acks) == 2, timeout=10, what="two PUBACKs")
            assert acks == [0, 135]  # her own topic; another runner's is not authorized
            wait_for(lambda: received == [sample(4001)], timeout=10, what="ana's message")
        finally:
            for client in (pub, sub):
                client.disconnect()
                client.loop_stop()
        # without a certificate the handshake fails, whatever the password
        assert isinstance(connack(settings.mqtt_host, settings.mqtt_tls_port, RUNNER, "any",
                                  context()), str)
    finally:
        mosquitto.stop()
