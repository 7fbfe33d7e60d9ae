"""What every local service shares: OS packages, ports, a process with its pid and log.

``Service`` runs one program from the OS packages (or a wheel) with a config rendered
into ``<data_dir>/<name>``; ``deploy/stack.py`` and ``deploy/mosquitto.py`` define the
services.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from base.settings import Settings

APT_PACKAGES = {"mosquitto": "mosquitto", "mosquitto_passwd": "mosquitto", "openssl": "openssl",
                "influxd": "influxdb",
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
