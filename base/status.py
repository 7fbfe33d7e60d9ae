"""Each pipeline process's status file: what ``stridewatch status`` reads.

A process started by ``stridewatch start`` writes ``<data_dir>/run/<name>.status.json``
every few seconds (atomically replaced, readable by its owner only): its pid, when it
started, a heartbeat time, whether it reached its working state (``ready``), its
counters and its last warning or error with the time. Nothing secret goes in: counters
are numbers, and the last error is a log line, which never carries a password.

The writer is one daemon thread per process, so it works the same inside asyncio loops
and Faust's worker; a service updates its counters with :func:`current` ``.update()``.
A process without a reporter (tests, ``stridewatch run``) gets a no-op one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.settings import Settings

HEARTBEAT_S = 2.0
# a heartbeat older than this means the process hangs (or is gone)
STALE_AFTER_S = 15.0


def run_dir(settings: Settings) -> Path:
    """Where pid and status files of the pipeline's processes live."""
    return settings.data_dir.resolve() / "run"


def status_path(settings: Settings, name: str) -> Path:
    return run_dir(settings) / f"{name}.status.json"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` in one step (a reader never sees half a file); mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, sort_keys=True)
    tmp.replace(path)


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class LoggedError:
    at: float
    level: str
    message: str


class StatusReporter:
    """Holds one process's status and writes it every ``HEARTBEAT_S`` seconds.

    ``ready_marker`` is the start of the log message a service logs once it works
    (subscribed, consuming); until then the process is starting, not healthy.
    """

    def __init__(self, path: Path, name: str, ready_marker: str | None = None) -> None:
        self.path = path
        self.name = name
        self.ready_marker = ready_marker
        self.started_at = time.time()
        self.ready = ready_marker is None
        # the port of the process's /healthz, /readyz and /metrics (base/ops.py), if served
        self.ops_port: int | None = None
        self._counters: dict[str, Any] = {}
        self._sources: list[Callable[[], dict[str, Any]]] = []
        self._last_error: LoggedError | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what services call ------------------------------------------------------------
    def update(self, **counters: Any) -> None:
        """Set counters (numbers, short strings, or None); the next heartbeat shows them."""
        with self._lock:
            self._counters.update(counters)

    def watch(self, source: Callable[[], dict[str, Any]]) -> None:
        """Read counters from ``source`` at every heartbeat (e.g. a service's stats)."""
        self._sources.append(source)

    def mark_ready(self) -> None:
        self.ready = True

    def record_error(self, level: str, message: str, at: float | None = None) -> None:
        with self._lock:
            self._last_error = LoggedError(at or time.time(), level, message[:500])

    # -- the file ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        for source in self._sources:
            with contextlib.suppress(Exception):  # a status must never break the service
                self.update(**source())
        with self._lock:
            error = self._last_error
            return {"name": self.name, "pid": os.getpid(), "started_at": self.started_at,
                    "heartbeat_at": time.time(), "ready": self.ready,
                    "counters": dict(self._counters), "ops_port": self.ops_port,
                    "last_error": None if error is None else
                    {"at": error.at, "level": error.level, "message": error.message}}

    def write(self) -> None:
        with contextlib.suppress(OSError):  # a full disk must not stop the service
            write_json_atomic(self.path, self.snapshot())

    def start(self) -> StatusReporter:
        self.write()
        self._thread = threading.Thread(target=self._beat, name=f"{self.name}-status",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.write()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.write()


class _NoReporter(StatusReporter):
    def __init__(self) -> None:
        super().__init__(Path(os.devnull), "none")

    def write(self) -> None:
        return None


_current: StatusReporter = _NoReporter()


def current() -> StatusReporter:
    """This process's reporter (a no-op one unless :func:`install` was called)."""
    return _current


class _LastErrorHandler(logging.Handler):
    """Keeps the last WARNING/ERROR line and notices the ready marker."""

    def __init__(self, reporter: StatusReporter) -> None:
        super().__init__(level=logging.INFO)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the logger's problem, not ours
            return
        marker = self.reporter.ready_marker
        if not self.reporter.ready and marker is not None and message.startswith(marker):
            self.reporter.mark_ready()
        if record.levelno >= logging.WARNING:
            self.reporter.record_error(record.levelname, f"{record.name}: {message}",
                                       record.created)


def install(settings: Settings, name: str, ready_marker: str | None = None
            ) -> StatusReporter:
    """Start this process's status file and watch its log for errors and readiness."""
    global _current
    reporter = StatusReporter(status_path(settings, name), name, ready_marker)
    root = logging.getLogger()
    if root.getEffectiveLevel() > logging.INFO:
        # the ready marker is an INFO line: let it reach us, keep the log as configured
        for handler in root.handlers:
            handler.setLevel(max(handler.level, root.getEffectiveLevel()))
        root.setLevel(logging.INFO)
    root.addHandler(_LastErrorHandler(reporter))
    _current = reporter.start()
    return reporter
