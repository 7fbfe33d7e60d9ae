"""CPU time and peak memory of the pipeline's processes, read from /proc."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from base.settings import Settings


@dataclass
class ProcessStats:
    peak_rss_mb: float | None = None
    cpu_s: float | None = None  # during the measured interval


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory over the process's life (``VmHWM``)."""
    kb = status_kb(pid, "VmHWM")
    return kb / 1024 if kb is not None else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process, from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def python_pid(pid: int, marker: bytes = b"stridewatch") -> int:
    """The pid of the Python process whose command line has ``marker``: ``pid`` itself (a
    component is started as ``python -m stridewatch.cli``), else the first descendant that
    has it, should a wrapper ever start it."""
    queue = [pid]
    while queue:
        candidate = queue.pop(0)
        if marker in cmdline(candidate):
            return candidate
        with contextlib.suppress(OSError, ValueError):
            queue += [int(c) for c in Path(f"/proc/{candidate}/task/{candidate}/children"
                                           ).read_text().split()]
    return pid


def stack_pids(settings: Settings) -> dict[str, int]:
    """Pids of the local stack's brokers (none where the stack is not a local one)."""
    from deploy.stack import LocalStack

    stack = LocalStack(settings)
    pids = {"kafka": stack.kafka.pid(), "mosquitto": stack.mosquitto.pid()}
    return {name: pid for name, pid in pids.items() if pid is not None}


class CpuMeter:
    """CPU seconds of several processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, float | None] = {}
        self.after: dict[str, float | None] = {}

    def start(self) -> None:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        self.after = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stats(self) -> dict[str, ProcessStats]:
        out = {}
        for name, pid in self.pids.items():
            before, after = self.before.get(name), self.after.get(name)
            out[name] = ProcessStats(
                peak_rss_mb=peak_rss_mb(pid),
                cpu_s=after - before if after is not None and before is not None else None)
        return out
