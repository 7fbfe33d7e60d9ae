"""The production Mosquitto config, with the files make-secrets.sh writes, on a real
Mosquitto: only the container's paths and ports are swapped for a temporary folder's.

It starts, refuses anonymous clients on both listeners (the compose health check tells
it from a stopped broker), takes the service accounts' passwords over TLS with the CA
make-secrets.sh made, and refuses a client that does not trust that CA.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploy import consistency
from deploy.production_files import CONTAINER_PATHS, PLAIN_PORT, TLS_PORT, acl, mosquitto_conf
from tests.conftest import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Broker:
    def __init__(self, folder: Path, plain: int, tls: int) -> None:
        self.folder, self.plain, self.tls = folder, plain, tls
        self.secrets = folder / "secrets"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    folder = tmp_path_factory.mktemp("production-mosquitto")
    env = {**os.environ, "MQTT_PUBLIC_HOST": "localhost"}
    subprocess.run(["sh", str(ROOT / "deploy/production/make-secrets.sh"),
                    str(folder / "secrets")], check=True, capture_output=True, env=env)
    for name in ("data", "log", "certs"):
        (folder / name).mkdir()
    (folder / "acl").write_text(acl())
    b = Broker(folder, free_port(), free_port())
    conf = mosquitto_conf()
    for key, container_path in CONTAINER_PATHS.items():
        local = {"passwd": b.secrets / "mosquitto_passwd", "acl": folder / "acl",
                 "data": folder / "data", "log": folder / "log" / "mosquitto.log"}[key]
        conf = conf.replace(container_path, str(local))
    conf = conf.replace("/mosquitto/secrets/server.key", str(b.secrets / "mqtt_server.key"))
    conf = conf.replace("/mosquitto/certs/server.crt", str(b.secrets / "mqtt_server.crt"))
    conf = conf.replace("/mosquitto/certs/ca.crt", str(b.secrets / "mqtt_ca.crt"))
    conf = conf.replace(f"listener {PLAIN_PORT} 0.0.0.0", f"listener {b.plain} 127.0.0.1")
    conf = conf.replace(f"listener {TLS_PORT} 0.0.0.0", f"listener {b.tls} 127.0.0.1")
    if os.geteuid() == 0:
        # the image runs it as its own user; here it would drop to "mosquitto"
        conf = f"user {os.environ.get('USER', 'root')}\n" + conf
    (folder / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen(["mosquitto", "-c", str(folder / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and healthcheck(b.plain) != 0:
            time.sleep(0.2)
        yield b
    finally:
        proc.terminate()
        proc.wait(10)


def healthcheck(port: int) -> int:
    """compose.yaml's health check of Mosquitto, on ``port``."""
    compose = yaml.safe_load((ROOT / consistency.COMPOSE).read_text())
    command = compose["services"]["mosquitto"]["healthcheck"]["test"][1]
    assert "-p 1883" in command
    return subprocess.run(["sh", "-c", command.replace("-p 1883", f"-p {port}")],
                          capture_output=True, timeout=20, check=False).returncode


def publish(b: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(b.tls), "-q", "1",
                           "-m", "{}", *args], capture_output=True, text=True, timeout=20,
                          check=False)


def test_the_health_check_tells_a_running_broker_from_none(broker: Broker) -> None:
    assert healthcheck(broker.plain) == 0
    assert healthcheck(free_port()) != 0


def test_service_accounts_publish_over_tls_with_the_ca(broker: Broker) -> None:
    password = (broker.secrets / "stridewatch_notifier_password").read_text()
    sent = publish(broker, "--cafile", str(broker.secrets / "mqtt_ca.crt"), "-u",
                   "svc-notifier", "-P", password, "-t", "runners/ana/alerts")
    assert sent.returncode == 0, sent.stderr


def test_a_wrong_password_and_anonymous_clients_are_refused(broker: Broker) -> None:
    ca = str(broker.secrets / "mqtt_ca.crt")
    wrong = publish(broker, "--cafile", ca, "-u", "svc-notifier", "-P", "not-it", "-t",
                    "runners/ana/alerts")
    assert wrong.returncode != 0 and "not authorised" in wrong.stderr.lower()
    anonymous = publish(broker, "--cafile", ca, "-t", "runners/ana/alerts")
    assert anonymous.returncode != 0


def test_a_client_that_does_not_trust_the_ca_is_refused(broker: Broker, tmp_path: Path
                                                         ) -> None:
    other = tmp_path / "other-ca.crt"
    subprocess.run(shlex.split(
        f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        f"-days 1 -subj /CN=other -keyout {tmp_path / 'other.key'} -out {other}"),
        check=True, capture_output=True)
    password = (broker.secrets / "stridewatch_notifier_password").read_text()
    refused = publish(broker, "--cafile", str(other), "-u", "svc-notifier", "-P", password,
                      "-t", "runners/ana/alerts")
    assert refused.returncode != 0
    assert "certificate verify failed" in refused.stderr.lower() or \
        "tls" in refused.stderr.lower(), refused.stderr
