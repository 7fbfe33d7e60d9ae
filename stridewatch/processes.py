"""Start and stop pipeline components as child processes (demo and integration tests)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from base.settings import Settings

COMPONENTS = ("bridge", "worker", "sink", "notify")


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that gives a child process the same settings as this one."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        key = f"STRIDEWATCH_{name.upper()}"
        if value is None:
            env.pop(key, None)
            continue
        secret = getattr(settings, name)
        if hasattr(secret, "get_secret_value"):
            value = secret.get_secret_value()
        if isinstance(value, (dict, list)):
            env[key] = json.dumps(value)  # how pydantic-settings reads complex values
            continue
        env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    env.pop("STRIDEWATCH_CONFIG", None)
    return env


class Component:
    def __init__(self, settings: Settings, name: str, *args: str) -> None:
        self.settings = settings
        self.name = name
        self.args = args
        logs = settings.data_dir.resolve() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        suffix = "-".join(a.lstrip("-") for a in args if a)
        self.log_file = logs / f"{name}{'-' + suffix if suffix else ''}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Component:
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stridewatch.cli", self.name, *self.args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=settings_env(self.settings), start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0, hard: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_file.exists() and text in self.log_file.read_text(errors="replace"):
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited; its log ({self.log_file}) ends:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not log {text!r} within {timeout:.0f} s; see "
                           f"{self.log_file}")


def log_path(settings: Settings, name: str) -> Path:
    return settings.data_dir.resolve() / "logs" / f"{name}.log"
