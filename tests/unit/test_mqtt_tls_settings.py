"""MQTT over TLS settings, the certificate names and the bridge's topic filters."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from base.settings import Settings
from deploy.tls import subject_alt_names
from ingest.bridge import subscription_filters
from ingest.routing import SUBSCRIPTIONS


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in ("STRIDEWATCH_MQTT_TLS", "STRIDEWATCH_MQTT_PORT", "STRIDEWATCH_MQTT_TLS_PORT",
                "STRIDEWATCH_MQTT_CA_FILE", "STRIDEWATCH_MQTT_PLAIN_LISTENER",
                "STRIDEWATCH_CONFIG", "STRIDEWATCH_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_clients_take_the_tls_port_only_with_tls(clean_env: Path) -> None:
    plain = Settings(data_dir=clean_env, mqtt_port=1111, mqtt_tls_port=2222)
    assert plain.mqtt_client_port == 1111
    tls = Settings(data_dir=clean_env, mqtt_port=1111, mqtt_tls_port=2222, mqtt_tls=True)
    assert tls.mqtt_client_port == 2222


def test_the_plain_listener_closes_only_when_tls_takes_its_place(clean_env: Path) -> None:
    with pytest.raises(ValidationError, match="no listener is left"):
        Settings(data_dir=clean_env, mqtt_plain_listener=False)
    with pytest.raises(ValidationError, match="must differ"):
        Settings(data_dir=clean_env, mqtt_tls=True, mqtt_port=3333, mqtt_tls_port=3333)
    only_tls = Settings(data_dir=clean_env, mqtt_tls=True, mqtt_port=3333, mqtt_tls_port=3333,
                        mqtt_plain_listener=False)
    assert only_tls.mqtt_client_port == 3333


def test_trusted_ca_is_the_named_file_else_the_local_ca_else_the_system(
        clean_env: Path) -> None:
    settings = Settings(data_dir=clean_env, mqtt_tls=True)
    assert settings.mqtt_trusted_ca is None  # no local CA yet: the system's trust store
    local = settings.mqtt_tls_dir / "ca.crt"
    local.parent.mkdir(parents=True)
    local.write_text("not read here")
    assert settings.mqtt_trusted_ca == local
    named = clean_env / "corporate-ca.pem"
    assert Settings(data_dir=clean_env, mqtt_tls=True,
                    mqtt_ca_file=named).mqtt_trusted_ca == named


def test_server_certificate_names_the_local_names_and_the_host_once() -> None:
    assert subject_alt_names(()) == "IP:127.0.0.1,IP:::1,DNS:localhost"
    assert subject_alt_names(("127.0.0.1",)) == "IP:127.0.0.1,IP:::1,DNS:localhost"
    assert subject_alt_names(("mqtt.example.org", "10.0.0.5")) == (
        "IP:127.0.0.1,IP:::1,DNS:localhost,DNS:mqtt.example.org,IP:10.0.0.5")


def test_bridge_filters_are_shared_in_a_group_and_plain_without_one() -> None:
    assert subscription_filters("g") == [f"$share/g/{f}" for f in SUBSCRIPTIONS]
    assert subscription_filters("") == list(SUBSCRIPTIONS)
