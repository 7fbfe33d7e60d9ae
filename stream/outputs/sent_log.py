"""What was sent where (the sent-log), and how often a push target may be sent to.

The sent-log (SQLite in the data folder) is keyed by alert id and target, so redeliveries
and replays send nothing twice; it stores a target's fingerprint, never its URL. Its
pending list holds the alerts a target has not taken yet (the alert itself, the target's
fingerprint, when to try next), so a push service that is down for hours, or a notifier
restart meanwhile, loses nothing. The file is readable by its owner only.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

KEEP_LOG_DAYS = 30
Outcome = Literal["sent", "duplicate", "rate_limited", "pending", "gave_up"]


@dataclass(frozen=True)
class Pending:
    """An alert a target has not taken yet."""

    alert_id: str
    target: str  # the target's key (a fingerprint)
    label: str
    alert: bytes  # the alert as it came from Kafka
    first_failed_at: float
    next_try_at: float
    tries: int
    detail: str


class SentLog:
    """What was delivered where, persisted (SQLite, WAL) across restarts and processes.

    One row per (alert id, target key) with the outcome of the latest try; a row that
    says ``sent`` is final. Target keys are fingerprints: no secrets on disk.
    """

    def __init__(self, path: Path, keep_days: float = KEEP_LOG_DAYS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # pending alerts are health information: owner only (SQLite gives its WAL files
        # the database file's mode)
        path.touch(mode=0o600, exist_ok=True)
        with contextlib.suppress(OSError):
            path.chmod(0o600)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, timeout=10.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS deliveries (alert_id TEXT NOT NULL, "
            "target TEXT NOT NULL, label TEXT NOT NULL, outcome TEXT NOT NULL, "
            "at REAL NOT NULL, detail TEXT NOT NULL DEFAULT '', "
            "PRIMARY KEY (alert_id, target))")
        self.db.execute("CREATE INDEX IF NOT EXISTS deliveries_at ON deliveries (at)")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS pending (alert_id TEXT NOT NULL, "
            "target TEXT NOT NULL, label TEXT NOT NULL, alert BLOB NOT NULL, "
            "first_failed_at REAL NOT NULL, next_try_at REAL NOT NULL, "
            "tries INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '', "
            "PRIMARY KEY (alert_id, target))")
        self.db.execute("DELETE FROM deliveries WHERE at < ?",
                        (time.time() - keep_days * 86400,))
        self.db.commit()

    def was_sent(self, alert_id: str, target: str) -> bool:
        with self._lock:
            row = self.db.execute("SELECT 1 FROM deliveries WHERE alert_id=? AND target=? "
                                  "AND outcome='sent'", (alert_id, target)).fetchone()
        return row is not None

    def record(self, alert_id: str, target: str, label: str, outcome: Outcome,
               detail: str = "", at: float | None = None) -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (alert_id, target) DO UPDATE SET label=excluded.label, "
                "outcome=excluded.outcome, at=excluded.at, detail=excluded.detail "
                "WHERE deliveries.outcome != 'sent'",
                (alert_id, target, label, outcome, time.time() if at is None else at,
                 detail[:500]))
            self.db.commit()

    def mark_sent(self, alert_id: str, target: str, label: str = "") -> None:
        self.record(alert_id, target, label, "sent")

    def sent_since(self, since: float) -> list[tuple[str, float]]:
        """(target key, time) of every delivery since ``since``: seeds the rate limiter."""
        with self._lock:
            rows = self.db.execute("SELECT target, at FROM deliveries WHERE outcome='sent' "
                                   "AND at >= ? ORDER BY at", (since,)).fetchall()
        return [(str(target), float(at)) for target, at in rows]

    def outcomes(self, alert_id: str) -> dict[str, str]:
        with self._lock:
            rows = self.db.execute("SELECT label, outcome FROM deliveries WHERE alert_id=?",
                                   (alert_id,)).fetchall()
        return {str(label): str(outcome) for label, outcome in rows}

    def forget(self, alert_ids: set[str], targets: set[str]) -> int:
        """Delete the rows of these alerts and these target keys (a forgotten runner's
        alerts and inbox); returns how many went."""
        with self._lock:
            before = self.db.total_changes
            for table in ("deliveries", "pending"):
                for alert_id in alert_ids:
                    self.db.execute(f"DELETE FROM {table} WHERE alert_id=?", (alert_id,))
                for target in targets:
                    self.db.execute(f"DELETE FROM {table} WHERE target=?", (target,))
            self.db.commit()
            return self.db.total_changes - before

    # -- pending deliveries -----------------------------------------------------------
    def add_pending(self, alert_id: str, target: str, label: str, alert: bytes,
                    next_try_at: float, tries: int, detail: str = "") -> None:
        """Keep an alert for a target until it is delivered (a no-op if kept already)."""
        with self._lock:
            self.db.execute("INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (alert_id, target, label, alert, time.time(), next_try_at,
                             tries, detail[:500]))
            self.db.commit()

    def is_pending(self, alert_id: str, target: str) -> bool:
        with self._lock:
            row = self.db.execute("SELECT 1 FROM pending WHERE alert_id=? AND target=?",
                                  (alert_id, target)).fetchone()
        return row is not None

    def target_has_pending(self, target: str) -> bool:
        with self._lock:
            row = self.db.execute("SELECT 1 FROM pending WHERE target=? LIMIT 1",
                                  (target,)).fetchone()
        return row is not None

    def due(self, now: float) -> list[Pending]:
        """Pending deliveries whose time has come, the oldest first."""
        with self._lock:
            rows = self.db.execute(
                "SELECT alert_id, target, label, alert, first_failed_at, next_try_at, tries, "
                "detail FROM pending WHERE next_try_at <= ? ORDER BY first_failed_at, "
                "alert_id", (now,)).fetchall()
        return [Pending(str(a), str(t), str(la), bytes(b), float(f), float(n), int(k),
                        str(d)) for a, t, la, b, f, n, k, d in rows]

    def retry_later(self, item: Pending, next_try_at: float, detail: str) -> None:
        """One more failed try of ``item``; the target's other alerts wait as long."""
        with self._lock:
            self.db.execute("UPDATE pending SET tries=tries+1, detail=? WHERE alert_id=? "
                            "AND target=?", (detail[:500], item.alert_id, item.target))
            self.db.execute("UPDATE pending SET next_try_at=max(next_try_at, ?) "
                            "WHERE target=?", (next_try_at, item.target))
            self.db.commit()

    def resolve(self, alert_id: str, target: str) -> None:
        with self._lock:
            self.db.execute("DELETE FROM pending WHERE alert_id=? AND target=?",
                            (alert_id, target))
            self.db.commit()

    def pending_count(self) -> int:
        with self._lock:
            row = self.db.execute("SELECT count(*) FROM pending").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self.db.close()


# --------------------------------------------------------------------------- rate limit


class RateLimiter:
    """At most ``per_hour`` deliveries per target in any rolling hour; critical ones
    always pass. ``allow`` only asks; ``record`` counts a delivery that happened."""

    WINDOW_S = 3600.0

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.time) -> None:
        if per_hour < 1:
            raise ValueError("per_hour must be at least 1")
        self.per_hour = per_hour
        self.clock = clock
        self.sent: dict[str, deque[float]] = {}

    def _window(self, target: str) -> deque[float]:
        window = self.sent.setdefault(target, deque())
        now = self.clock()
        while window and now - window[0] >= self.WINDOW_S:
            window.popleft()
        return window

    def allow(self, target: str, severity: str) -> bool:
        return severity == "critical" or len(self._window(target)) < self.per_hour

    def record(self, target: str, at: float | None = None) -> None:
        self._window(target).append(self.clock() if at is None else at)
