"""All configuration in one frozen, validated object.

Values come from (highest first):

1. keyword arguments (a command's options, e.g. ``stridewatch start --roster``);
2. ``STRIDEWATCH_*`` environment variables;
3. the settings ``stridewatch start`` was given, recorded in
   ``<data_dir>/started-settings.json`` (see below);
4. the TOML file named by ``STRIDEWATCH_CONFIG`` (or ``stridewatch.toml`` in the working
   directory);
5. the defaults below, which describe the local stack started by ``stridewatch stack up``.

``stridewatch start`` records what it was given from the environment and its options
(not secrets, not ``data_dir`` or the TOML file's name) in ``started-settings.json``, so
that every later command and every service restarted on that data dir uses the same
roster, ports and names without exporting anything again. The file sits below the
environment, so an exported variable still wins for one command, and above the TOML
file, so an edit of the TOML file cannot make ``status`` or ``roster`` disagree with the
running services; a value given to a later ``start`` replaces the recorded one. Secrets
never go into it: service passwords are in ``<data_dir>/mosquitto/service-secrets.json``
(mode 0600), InfluxDB credentials stay in the environment or the TOML file.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path(".stack")
ENV_PREFIX = "STRIDEWATCH_"
STARTED_SETTINGS_FILE = "started-settings.json"
# where the settings come from rather than what they are: never recorded
NOT_RECORDED = frozenset({"data_dir", "config"})


def _config_file() -> Path | None:
    named = os.environ.get("STRIDEWATCH_CONFIG")
    if named:
        return Path(named)
    local = Path("stridewatch.toml")
    return local if local.is_file() else None


def _data_dir_for(init_kwargs: Mapping[str, Any]) -> Path:
    """The data dir the other sources will give: needed first, to find the recorded file."""
    if init_kwargs.get("data_dir") is not None:
        return Path(init_kwargs["data_dir"])
    if os.environ.get(f"{ENV_PREFIX}DATA_DIR"):
        return Path(os.environ[f"{ENV_PREFIX}DATA_DIR"])
    config = _config_file()
    if config is not None and config.is_file():
        with config.open("rb") as f:
            named = tomllib.load(f).get("data_dir")
        if named:
            return Path(str(named))
    return DEFAULT_DATA_DIR


def started_settings_path(data_dir: Path) -> Path:
    return data_dir / STARTED_SETTINGS_FILE


def read_started_settings(data_dir: Path) -> dict[str, Any]:
    """What ``stridewatch start`` recorded for this data dir; {} if nothing."""
    try:
        data = json.loads(started_settings_path(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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
    # MQTT over TLS: with mqtt_tls the clients connect to mqtt_tls_port and trust
    # mqtt_ca_file, else the local stack's CA (<data_dir>/mosquitto/tls/ca.crt) when it made
    # one; `stack up` makes the CA and server certificate and opens that TLS listener.
    # mqtt_plain_listener=false closes the plain port, where passwords cross in the clear.
    mqtt_tls_port: int = Field(18883, ge=1, le=65535)
    mqtt_plain_listener: bool = True
    bridge_username: str = "svc-bridge"
    bridge_password: SecretStr = SecretStr("")
    notifier_username: str = "svc-notifier"
    notifier_password: SecretStr = SecretStr("")
    # the simulator / importer publish as each runner, with the runner's own credentials,
    # which the local stack keeps in <data_dir>/mosquitto/runner-secrets.json
    bridge_client_id: str = "stridewatch-bridge-1"
    # empty: plain subscriptions, for one bridge only (they survive a Mosquitto restart)
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
    # Faust's table store: "memory://" reads the whole state changelog at every start;
    # "rocksdb://" keeps the tables on disk under <data_dir>/faust, so a restarted worker
    # reads only what was written since it stopped (needs rocksdict: pip install '.[rocksdb]')
    worker_store: Literal["memory://", "rocksdb://"] = "memory://"

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

    # privacy: how long single measurements are kept when that is shorter than the
    # database's retention, e.g. {"run_window": "90d"} (the per-second detail of runs is
    # the most revealing part and the dashboards need it least); the sink deletes older
    # points every influx_prune_every_s. Measurements stay in the default policy, which is
    # what the dashboards' InfluxQL reads (docs/influxdb.md, "Retention per measurement").
    influx_retention_by_measurement: dict[str, str] = Field(default_factory=dict)
    influx_prune_every_s: float = Field(3600.0, ge=10)

    # domain
    roster_file: Path | None = None
    rules_dir: Path | None = None

    # logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # operations (base/ops.py): each process serves /healthz, /readyz and /metrics on
    # ops_host:ops_port (0 = off; `stridewatch start` gives each process a port of its
    # own); ready means caught up to within ops_ready_max_lag records of its topic.
    # json: one object per line, for log collectors (Loki, Elasticsearch, CloudWatch)
    log_format: Literal["text", "json"] = "text"
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(0, ge=0, le=65535)
    ops_ready_max_lag: int = Field(1000, ge=0)
    # the notifier's push retries: a target that fails a few quick tries keeps the alert
    # in the sent-log's pending list and is tried again with backoff (first wait, longest
    # wait) for this long; an outage of hours loses nothing, a day-old alert is stale
    notifier_retry_first_s: float = Field(5.0, gt=0)
    notifier_retry_max_s: float = Field(300.0, gt=0)
    notifier_retry_for_s: float = Field(86_400.0, gt=0)

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
        init_kwargs = init_settings.init_kwargs if isinstance(
            init_settings, InitSettingsSource) else {}
        started = started_settings_path(_data_dir_for(init_kwargs))
        if started.is_file():
            sources.append(JsonConfigSettingsSource(settings_cls, json_file=started))
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

    @field_validator("influx_retention_by_measurement")
    @classmethod
    def _durations(cls, value: dict[str, str]) -> dict[str, str]:
        # InfluxQL durations ("90d", "12w", "36h"): a measurement kept forever needs no entry
        for measurement, duration in value.items():
            if not re.fullmatch(r"(\d+(ns|us|u|ms|s|m|h|d|w))+", duration.strip()):
                raise ValueError(f"{measurement}: {duration!r} is not an InfluxDB duration "
                                 "such as 90d, 12w or 36h")
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

    @model_validator(mode="after")
    def _some_mqtt_listener(self) -> Settings:
        # the plain listener may only close when the TLS one takes its place
        if not self.mqtt_plain_listener and not self.mqtt_tls:
            raise ValueError("mqtt_plain_listener=false needs mqtt_tls=true: no listener is left")
        if self.mqtt_tls and self.mqtt_plain_listener and self.mqtt_tls_port == self.mqtt_port:
            raise ValueError("mqtt_tls_port and mqtt_port must differ (two listeners)")
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
    def forgotten_topic(self) -> str:
        # compacted: the runners `stridewatch forget` removed (base/forgotten.py)
        return self.topic("forgotten")

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
            self.forgotten_topic,
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

    @property
    def mqtt_tls_dir(self) -> Path:
        return self.mqtt_dir / "tls"

    @property
    def mqtt_client_port(self) -> int:
        """The port the clients connect to: the TLS listener's when TLS is on."""
        return self.mqtt_tls_port if self.mqtt_tls else self.mqtt_port

    @property
    def mqtt_trusted_ca(self) -> Path | None:
        """The CA the clients trust over TLS; None: the system's trust store."""
        if self.mqtt_ca_file is not None:
            return self.mqtt_ca_file
        local = self.mqtt_tls_dir / "ca.crt"
        return local if local.is_file() else None


def secret_fields() -> frozenset[str]:
    return frozenset(name for name, info in Settings.model_fields.items()
                     if info.annotation is SecretStr)


def record_started_settings(settings: Settings, given: Mapping[str, object]) -> Path:
    """Record, for later commands, the settings ``start`` was given (see the docstring).

    ``given`` are the command's options; the ``STRIDEWATCH_*`` environment is added,
    and earlier recorded values stay unless replaced. Values are taken from ``settings``
    (validated, paths made absolute); secrets are never written.
    """
    skip = NOT_RECORDED | secret_fields()
    names = {key[len(ENV_PREFIX):].lower() for key in os.environ
             if key.startswith(ENV_PREFIX)} | set(given)
    names = {n for n in names if n in Settings.model_fields and n not in skip}
    recorded = {k: v for k, v in read_started_settings(settings.data_dir).items()
                if k in Settings.model_fields and k not in skip}
    values = settings.model_dump(mode="json")
    for name in names:
        value = getattr(settings, name)
        recorded[name] = str(value.resolve()) if isinstance(value, Path) else values[name]
    path = started_settings_path(settings.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(recorded, out, indent=2, sort_keys=True)
    tmp.replace(path)
    return path


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
