"""All configuration in one frozen, validated object.

Values come from (highest first): keyword arguments, ``STRIDEWATCH_*`` environment
variables, the TOML file named by ``STRIDEWATCH_CONFIG`` (or ``stridewatch.toml`` in
the working directory), then the defaults below. The defaults describe the local
stack started by ``stridewatch stack up``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path(".stack")


def _config_file() -> Path | None:
    named = os.environ.get("STRIDEWATCH_CONFIG")
    if named:
        return Path(named)
    local = Path("stridewatch.toml")
    return local if local.is_file() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STRIDEWATCH_", frozen=True, extra="forbid", validate_default=True
    )

    # where the local stack keeps configs, data and logs
    data_dir: Path = DEFAULT_DATA_DIR

    # MQTT (Mosquitto)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(11883, ge=1, le=65535)
    mqtt_tls: bool = False
    mqtt_ca_file: Path | None = None
    bridge_username: str = "svc-bridge"
    bridge_password: SecretStr = SecretStr("")
    notifier_username: str = "svc-notifier"
    notifier_password: SecretStr = SecretStr("")
    # the simulator / importer publish as each runner, with the runner's own credentials,
    # which the local stack keeps in <data_dir>/mosquitto/runner-secrets.json
    bridge_client_id: str = "stridewatch-bridge-1"
    bridge_share_group: str = "stridewatch-bridge"
    bridge_max_in_flight: int = Field(500, ge=1, le=100_000)
    # the bridge groups the events of runners that share a partition into one record per
    # window: fewer, fuller records (the worker's cost is mostly per record)
    bridge_group_window_s: float = Field(0.25, ge=0, le=10)
    bridge_group_max_events: int = Field(500, ge=1, le=100_000)
    # under Kafka's default max.message.bytes (1 MiB)
    bridge_group_max_bytes: int = Field(900 * 1024, ge=1024, le=64 * 1024 * 1024)

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_partitions: int = Field(4, ge=1, le=1024)
    kafka_replication: int = Field(1, ge=1, le=9)
    # Tansu reports wrong end offsets for multi-record batches (see docs/operations.md);
    # one record per producer batch keeps table recovery exact on the local stack.
    kafka_one_record_per_batch: bool = True
    kafka_session_timeout_s: float = Field(6.0, gt=0)
    kafka_heartbeat_s: float = Field(1.0, gt=0)
    kafka_processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # the deployment's name on Kafka: topics are "<prefix>.<name>", consumer groups
    # "<prefix>-<service>", so two deployments on one Kafka never share a group
    topic_prefix: str = "stridewatch"

    # Faust: the worker's consumer group and changelog names; defaults to topic_prefix
    app_id: str = "stridewatch"
    # runner states a worker keeps decoded in memory (about 11 kB each while a run goes
    # on); the least recently active beyond this are read from the table when they return
    worker_states_in_memory: int = Field(50_000, ge=1, le=10_000_000)

    # InfluxDB
    influx_api: Literal["v1", "v2"] = "v1"
    influx_url: str = "http://127.0.0.1:18086"
    influx_rpc_port: int = Field(18088, ge=1, le=65535)
    influx_db: str = "stridewatch"
    influx_username: str = ""
    influx_password: SecretStr = SecretStr("")
    influx_retention: str = "400d"
    # v2 API (InfluxDB 2.x/3.x, or any server speaking /api/v2/write)
    influx_org: str = "stridewatch"
    influx_bucket: str = "stridewatch"
    influx_token: SecretStr = SecretStr("")
    influx_batch_size: int = Field(1000, ge=1, le=100_000)
    influx_flush_s: float = Field(1.0, gt=0)

    # domain
    roster_file: Path | None = None
    rules_dir: Path | None = None

    # logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = _config_file()
        if config is not None:
            if not config.is_file():
                raise ValueError(f"STRIDEWATCH_CONFIG names {config}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _app_id_from_prefix(cls, data: object) -> object:
        # a deployment that only names its prefix gets a worker group of its own too
        if isinstance(data, dict) and "topic_prefix" in data and "app_id" not in data:
            return {**data, "app_id": data["topic_prefix"]}
        return data

    @field_validator("topic_prefix", "app_id")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("use letters, digits, '-', '_' or '.' only")
        return value

    @model_validator(mode="after")
    def _no_exactly_once_on_memory_broker(self) -> Settings:
        # Tansu has no transactions: fail at start rather than silently fall back.
        if self.kafka_processing_guarantee == "exactly_once" and self.kafka_one_record_per_batch:
            raise ValueError(
                "exactly_once needs a broker with transactions (Apache Kafka, Redpanda); "
                "the local memory broker has none. Set "
                "STRIDEWATCH_KAFKA_ONE_RECORD_PER_BATCH=false when pointing at a real Kafka."
            )
        return self

    # ---- derived names -------------------------------------------------------------
    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def events_topic(self) -> str:
        return self.topic("events")

    @property
    def alerts_topic(self) -> str:
        return self.topic("alerts")

    @property
    def metrics_topic(self) -> str:
        return self.topic("metrics")

    @property
    def deadletter_topic(self) -> str:
        return self.topic("deadletters")

    @property
    def state_changelog_topic(self) -> str:
        # Faust names a table's changelog "<app id>-<table name>-changelog".
        return f"{self.app_id}-runner_state-changelog"

    @property
    def worker_group(self) -> str:
        # Faust's consumer group is its app id
        return self.app_id

    @property
    def sink_group(self) -> str:
        return f"{self.topic_prefix}-influx-writer"

    @property
    def notifier_group(self) -> str:
        return f"{self.topic_prefix}-notifier"

    def all_topics(self) -> list[str]:
        return [
            self.events_topic,
            self.alerts_topic,
            self.metrics_topic,
            self.deadletter_topic,
            self.state_changelog_topic,
        ]

    @property
    def mqtt_dir(self) -> Path:
        return self.data_dir / "mosquitto"

    @property
    def runner_secrets_file(self) -> Path:
        return self.mqtt_dir / "runner-secrets.json"

    @property
    def service_secrets_file(self) -> Path:
        return self.mqtt_dir / "service-secrets.json"


def load_settings(**overrides: object) -> Settings:
    """Build settings once at start; a bad value stops the program with a clear message."""
    return Settings(**overrides)  # type: ignore[arg-type]


def command_settings(**overrides: object) -> Settings:
    """The settings of a ``stridewatch`` command: the one way every command loads them.

    A bad value ends the command with the setting named, never a traceback.
    """
    import click  # the commands' library; the services load settings without it

    try:
        return load_settings(**overrides)
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from None
