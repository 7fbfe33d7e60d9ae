"""The pipeline as a service on one machine: ``stridewatch start``, ``stop``, ``status``.

The four processes (bridge, worker, sink, notifier) run detached from the terminal (a
session of their own), each with the settings ``start`` was given (recorded in the data
dir, see ``base/settings.py``), a log ``<data_dir>/logs/<name>.log``, a pid file
``<data_dir>/run/<name>.pid`` and a status file ``<data_dir>/run/<name>.status.json``
that the process itself refreshes every few seconds (``base/status.py``). ``status``
reads those, checks each pid is alive and still runs our command (a pid file left by a
crash, or a pid the system gave to another program, counts as stopped), and computes
each consumer group's lag from Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from base.settings import Settings
from base.status import STALE_AFTER_S, read_status, run_dir, status_path
from stridewatch.processes import log_path, settings_env

NAMES = ("bridge", "worker", "sink", "notify")
# the start of the log message each logs once it works: until then it is "starting"
READY_MARKERS = {"bridge": "connected to MQTT as", "worker": "assigned partitions",
                 "sink": "writing ", "notify": "sending alerts from"}
# the counters `status` prints (the status file holds them all)
SHOWN_COUNTERS = {
    "bridge": ("received", "delivered", "dead_lettered", "kafka_retries", "outages"),
    "worker": ("records", "events", "duplicates", "alerts", "deadletters"),
    "sink": ("written", "batches"),
}
LOG_LEVELS = (" ERROR ", " WARNING ", " CRITICAL ")


def consumes(settings: Settings, name: str) -> tuple[str, str] | None:
    """(consumer group, topic) of a process that reads Kafka."""
    return {"worker": (settings.worker_group, settings.events_topic),
            "sink": (settings.sink_group, settings.metrics_topic),
            "notify": (settings.notifier_group, settings.alerts_topic)}.get(name)


def pid_path(settings: Settings, name: str) -> Path:
    return run_dir(settings) / f"{name}.pid"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_ours(pid: int, name: str) -> bool:
    """Whether ``pid`` runs ``stridewatch.cli <name>`` (not a program that reused the pid)."""
    argv = _cmdline(pid)
    # a process just started reads an empty command line for a moment (its exec is under
    # way): taken for gone, `start` called it exited and left it running
    waited = 0
    while not argv and waited < 20 and _alive(pid):
        time.sleep(0.05)
        waited += 1
        argv = _cmdline(pid)
    if not argv:
        return False
    try:
        at = argv.index("stridewatch.cli")
    except ValueError:
        return False
    return argv[at + 1:at + 2] == [name]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) is not running
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def recorded_pid(settings: Settings, name: str) -> int | None:
    try:
        return int(pid_path(settings, name).read_text().strip())
    except (OSError, ValueError):
        return None


def live_pid(settings: Settings, name: str) -> int | None:
    """The pid of the running process, or None (no pid file, or a stale one)."""
    pid = recorded_pid(settings, name)
    if pid is None or not _alive(pid) or not is_ours(pid, name):
        return None
    return pid


def _group_pids(pgid: int) -> list[int]:
    """Every live process of process group ``pgid`` (a service and anything it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return sorted(pids)


def group_pids(settings: Settings) -> dict[str, list[int]]:
    """The processes of each running service's group (each runs in a session of its own)."""
    out = {}
    for name in NAMES:
        pid = live_pid(settings, name)
        if pid is not None:
            out[name] = _group_pids(pid)
    return out


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------ start
class StartError(RuntimeError):
    """A process did not start or did not become healthy; the message says where to look."""


def spawn(settings: Settings, name: str) -> int:
    """Start ``name`` detached (own session, no terminal), record its pid; return it."""
    log = log_path(settings, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    status_path(settings, name).unlink(missing_ok=True)  # the old one describes a dead process
    env = settings_env(settings)
    # without this the services would write no status file (tests, `stridewatch run`)
    env["STRIDEWATCH_STATUS_FILE"] = "1"
    env["STRIDEWATCH_OPS_PORT"] = str(ops_port(settings, name))
    with log.open("ab") as out:
        out.write(f"--- started by `stridewatch start` at "
                  f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC ---\n".encode())
        out.flush()
        proc = subprocess.Popen([sys.executable, "-m", "stridewatch.cli", name],
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                close_fds=True)
    pid_path(settings, name).write_text(f"{proc.pid}\n")
    # the child outlives this command; forget it here so no warning is printed at exit
    proc.returncode = 0
    return proc.pid


def ops_port(settings: Settings, name: str) -> int:
    """Each process's /healthz, /readyz and /metrics port: ``ops_port`` + its place in
    NAMES when ``ops_port`` is set, else a free port (``status`` shows it)."""
    if settings.ops_port:
        return settings.ops_port + NAMES.index(name)
    with socket.socket() as sock:
        sock.bind((settings.ops_host, 0))
        return int(sock.getsockname()[1])


def healthy_now(settings: Settings, name: str) -> bool:
    pid = live_pid(settings, name)
    data = read_status(status_path(settings, name))
    return (pid is not None and data is not None and data.get("pid") == pid
            and bool(data.get("ready"))
            and time.time() - float(data.get("heartbeat_at", 0)) < STALE_AFTER_S)


def wait_healthy(settings: Settings, names: Iterable[str], timeout_s: float) -> None:
    """Wait until each of ``names`` reports healthy; raise with its log tail otherwise."""
    waiting = list(names)
    deadline = time.monotonic() + timeout_s
    while waiting:
        for name in list(waiting):
            if healthy_now(settings, name):
                waiting.remove(name)
            elif live_pid(settings, name) is None:
                raise StartError(f"{name} exited while starting; its log "
                                 f"({log_path(settings, name)}) ends:\n"
                                 f"{log_tail(log_path(settings, name))}")
        if not waiting:
            return
        if time.monotonic() > deadline:
            name = waiting[0]
            raise StartError(f"{', '.join(waiting)} not healthy within {timeout_s:.0f} s; "
                             f"the log of {name} ({log_path(settings, name)}) ends:\n"
                             f"{log_tail(log_path(settings, name))}")
        time.sleep(0.3)


def start_all(settings: Settings, timeout_s: float, echo: Callable[[str], None] = print
              ) -> list[str]:
    """Start every process that does not run yet; return the names started."""
    started = []
    for name in NAMES:
        pid = live_pid(settings, name)
        if pid is not None:
            echo(f"{name:<7} already running (pid {pid})")
            continue
        if recorded_pid(settings, name) is not None:
            echo(f"{name:<7} pid file {pid_path(settings, name)} is stale (process gone); "
                 "starting anew")
        pid = spawn(settings, name)
        started.append(name)
        echo(f"{name:<7} started (pid {pid}), log: {log_path(settings, name)}")
    try:
        wait_healthy(settings, NAMES, timeout_s)
    except StartError:
        if started:
            stop_all(settings, names=started, echo=lambda line: None)
        raise
    return started


# ------------------------------------------------------------------------------ stop
def stop_all(settings: Settings, timeout_s: float = 30.0, names: Iterable[str] = NAMES,
             echo: Callable[[str], None] = print) -> None:
    """SIGTERM each process group, wait, SIGKILL what is left; remove the pid files."""
    groups: dict[str, int] = {}
    for name in names:
        pid = live_pid(settings, name)
        if pid is None:
            if recorded_pid(settings, name) is not None:
                echo(f"{name:<7} was not running (stale pid file removed)")
            else:
                echo(f"{name:<7} not running")
            pid_path(settings, name).unlink(missing_ok=True)
            continue
        groups[name] = pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_group_pids(p) for p in groups.values()):
        time.sleep(0.2)
    for name, pid in groups.items():
        left = _group_pids(pid)
        if left:
            echo(f"{name:<7} did not stop within {timeout_s:.0f} s: killing {left}")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            end = time.monotonic() + 5
            while _group_pids(pid) and time.monotonic() < end:
                time.sleep(0.1)
        else:
            echo(f"{name:<7} stopped")
        # the status file stays: its counters (e.g. refused points) outlive the process
        pid_path(settings, name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------ status
@dataclass(frozen=True)
class ProcessStatus:
    name: str
    state: str  # running | starting | hanging | stopped
    pid: int | None
    uptime_s: float | None
    log: Path
    counters: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None
    lag: int | None = None
    lag_topic: str | None = None
    lag_error: str | None = None
    stale_pid_file: bool = False
    ops_port: int | None = None

    @property
    def healthy(self) -> bool:
        return self.state == "running" and self.lag_error is None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def last_logged_error(path: Path) -> str | None:
    """The last WARNING/ERROR line of a log (or a command's ``Error:`` line)."""
    for line in reversed(log_tail(path, 400).splitlines()):
        if any(level in line for level in LOG_LEVELS) or line.startswith("Error:"):
            return line.strip()[:300]
    return None


def process_status(settings: Settings, name: str) -> ProcessStatus:
    pid = live_pid(settings, name)
    log = log_path(settings, name)
    data = read_status(status_path(settings, name))
    if data is not None and data.get("pid") != pid:
        data = None  # written by an earlier process
    error = None
    if data is not None and data.get("last_error"):
        e = data["last_error"]
        error = f"{_when(float(e['at']))} {e['level']} {e['message']}"
    elif pid is None:
        error = last_logged_error(log)
    if pid is None:
        state = "stopped"
    elif data is None or not data.get("ready"):
        state = "starting"
    elif time.time() - float(data.get("heartbeat_at", 0)) >= STALE_AFTER_S:
        state = "hanging"
    else:
        state = "running"
    uptime = time.time() - float(data["started_at"]) if data else None
    stale = pid is None and recorded_pid(settings, name) is not None
    port = (data or {}).get("ops_port")
    return ProcessStatus(name, state, pid, uptime, log, dict((data or {}).get("counters", {})),
                         error, stale_pid_file=stale,
                         ops_port=port if isinstance(port, int) else None)


async def _with_lag(settings: Settings, status: ProcessStatus) -> ProcessStatus:
    from dataclasses import replace

    from base.kafka import group_lag

    consumed = consumes(settings, status.name)
    if consumed is None:
        return status
    group, topic = consumed
    try:
        lag = await asyncio.wait_for(group_lag(settings, group, topic), 30)
    except Exception as exc:  # Kafka away: say so, do not crash the status
        return replace(status, lag_topic=topic,
                       lag_error=f"{type(exc).__name__}: {exc}"[:200] or "Kafka unreachable")
    return replace(status, lag=lag, lag_topic=topic)


def status_all(settings: Settings, with_lag: bool = True) -> list[ProcessStatus]:
    statuses = [process_status(settings, name) for name in NAMES]
    if not with_lag:
        return statuses

    async def lags() -> list[ProcessStatus]:
        return [await _with_lag(settings, s) for s in statuses]

    return asyncio.run(lags())


def refused_line(counters: dict[str, Any]) -> str | None:
    """The sink's count of points InfluxDB refused, for ``status`` and ``stack status``."""
    refused = int(counters.get("refused", 0) or 0)
    if not refused:
        return None
    since = counters.get("refused_since")
    when = f" since {_when(float(since))}" if since else ""
    reason = counters.get("last_refused_reason")
    return (f"{refused} points refused by InfluxDB{when}"
            + (f" (last: {reason})" if reason else ""))


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def status_lines(status: ProcessStatus) -> list[str]:
    label = {"running": "running, healthy", "starting": "running, starting (not ready yet)",
             "hanging": "running, NOT healthy (no heartbeat)", "stopped": "stopped"}
    head = f"{status.name:<7} {label.get(status.state, status.state):<18}"
    if status.pid is not None:
        head += f" pid {status.pid:<8}"
    if status.uptime_s is not None:
        head += f" up {duration(status.uptime_s):<8}"
    if status.lag is not None:
        head += f" lag {status.lag} ({status.lag_topic})"
    elif status.lag_error is not None:
        head += f" lag unknown: {status.lag_error}"
    lines = [head]
    shown = [(k, status.counters[k]) for k in SHOWN_COUNTERS.get(status.name, ())
             if isinstance(status.counters.get(k), int)]
    if shown:
        lines.append("        " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in shown))
    if status.ops_port is not None and status.pid is not None:
        lines.append(f"        ops: http://127.0.0.1:{status.ops_port}/healthz, /readyz, "
                     "/metrics")
    refused = refused_line(status.counters)
    if refused:
        lines.append(f"        {refused}")
    if status.stale_pid_file:
        lines.append("        stale pid file (the process is gone)")
    if status.last_error:
        lines.append(f"        last error: {status.last_error}")
    lines.append(f"        log: {status.log}")
    return lines


def sink_counters(settings: Settings) -> dict[str, Any]:
    """The running sink's counters, or the last ones a stopped sink left; {} if none."""
    data = read_status(status_path(settings, "sink"))
    return dict((data or {}).get("counters", {}))


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-30``, ``2026-11-30T06:00`` (UTC unless it says), or ``3d`` / ``12h`` /
    ``90m`` before ``now``."""
    from datetime import timedelta

    units = {"d": "days", "h": "hours", "m": "minutes"}
    stripped = text.strip()
    if stripped[-1:] in units and stripped[:-1].replace(".", "", 1).isdigit():
        return (now or datetime.now(UTC)) - timedelta(**{units[stripped[-1]]:
                                                         float(stripped[:-1])})
    try:
        when = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"expected a date, a date and time, or e.g. 3d / 12h, got "
                         f"{text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
