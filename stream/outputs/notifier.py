"""The notifier (``stridewatch notify``): alerts topic → the runner's phone and coaches.

Each alert goes to ``runners/<runner>/alerts`` over MQTT (QoS 1, for the phone app) and
to the Apprise URLs of the runner and their team's coaches from the roster. A sent-log
keyed by alert id and target makes redeliveries harmless: nothing is sent twice. Offsets
are committed only after an alert was handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from rules.alerts import Alert
from rules.roster import Roster, load_roster
from stridewatch.kafka import ensure_topics, make_consumer
from stridewatch.mqtt import connect_blocking, make_client, service_password
from stridewatch.settings import Settings

log = logging.getLogger("stridewatch.notifier")
NOTIFIER_GROUP = "stridewatch-notifier"
MQTT_TARGET = "mqtt"


def redact(target: str) -> str:
    """Apprise URLs carry tokens: log only the scheme and host."""
    if target == MQTT_TARGET:
        return target
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.hostname or '…'}/…"


class SentLog:
    """Which (alert, target) pairs were delivered, persisted across restarts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS sent (alert_id TEXT, target TEXT, at REAL, "
                        "PRIMARY KEY (alert_id, target))")
        self.db.commit()

    def was_sent(self, alert_id: str, target: str) -> bool:
        with self._lock:
            row = self.db.execute("SELECT 1 FROM sent WHERE alert_id=? AND target=?",
                                  (alert_id, target)).fetchone()
        return row is not None

    def mark_sent(self, alert_id: str, target: str) -> None:
        with self._lock:
            self.db.execute("INSERT OR IGNORE INTO sent VALUES (?, ?, ?)",
                            (alert_id, target, time.time()))
            self.db.commit()

    def close(self) -> None:
        self.db.close()


class RateLimiter:
    """At most ``per_hour`` alerts per target in any rolling hour; critical ones always pass."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self.clock = clock
        self.sent: dict[str, deque[float]] = {}

    def allow(self, target: str, severity: str) -> bool:
        now = self.clock()
        window = self.sent.setdefault(target, deque())
        while window and now - window[0] > 3600:
            window.popleft()
        if severity != "critical" and len(window) >= self.per_hour:
            return False
        window.append(now)
        return True


def targets_for(alert: Alert, roster: Roster) -> list[str]:
    targets = [MQTT_TARGET]
    runner = roster.runner(alert.runner)
    if runner is not None:
        targets += runner.notify
        team = roster.team(runner.team)
        if team is not None:
            for coach in team.coaches:
                targets += coach.notify
    return list(dict.fromkeys(targets))


@dataclass
class Delivery:
    target: str
    ok: bool
    detail: str


class Notifier:
    def __init__(self, settings: Settings, per_target_per_hour: int = 12,
                 attempts: int = 4) -> None:
        self.settings = settings
        self.roster = load_roster(settings.roster_file)
        self.sent_log = SentLog(settings.data_dir / "notifier" / "sent.sqlite")
        self.limiter = RateLimiter(per_target_per_hour)
        self.attempts = attempts
        self.client, props = make_client(settings, "stridewatch-notifier",
                                         settings.notifier_username,
                                         service_password(settings, "notifier"))
        connect_blocking(settings, self.client, props)

    def _send_mqtt(self, alert: Alert) -> None:
        info = self.client.publish(f"runners/{alert.runner}/alerts", alert.to_bytes(), qos=1)
        info.wait_for_publish(timeout=10)
        if not info.is_published():
            raise RuntimeError(f"MQTT publish not acknowledged (rc={info.rc})")

    def _send_apprise(self, alert: Alert, target: str) -> None:
        import apprise

        notifier = apprise.Apprise()
        if not notifier.add(target):
            raise ValueError("not a valid Apprise URL")
        body = f"{alert.message}\n\nNext step: {alert.next_step}\n\n{alert.disclaimer}"
        if not notifier.notify(title=f"StrideWatch {alert.severity}: {alert.title}",
                               body=body):
            raise RuntimeError("the push service did not accept the notification")

    def deliver(self, alert: Alert) -> list[Delivery]:
        results = []
        for target in targets_for(alert, self.roster):
            if self.sent_log.was_sent(alert.alert_id, target):
                continue
            if not self.limiter.allow(target, alert.severity):
                log.warning("rate limit: not sending %s to %s", alert.alert_id, redact(target))
                results.append(Delivery(target, False, "rate limited"))
                continue
            results.append(self._deliver_one(alert, target))
        return results

    def _deliver_one(self, alert: Alert, target: str) -> Delivery:
        delay = 0.5
        detail = ""
        for attempt in range(1, self.attempts + 1):
            try:
                if target == MQTT_TARGET:
                    self._send_mqtt(alert)
                else:
                    self._send_apprise(alert, target)
            except Exception as exc:  # any push backend failure is retried, then logged
                detail = f"{type(exc).__name__}: {exc}"
                log.warning("sending %s to %s failed (attempt %d/%d): %s", alert.alert_id,
                            redact(target), attempt, self.attempts, detail)
                time.sleep(delay)
                delay *= 2
                continue
            self.sent_log.mark_sent(alert.alert_id, target)
            log.info("sent %s %s/%s for %s to %s", alert.alert_id, alert.rule, alert.severity,
                     alert.runner, redact(target))
            return Delivery(target, True, "sent")
        log.error("gave up sending %s to %s: %s", alert.alert_id, redact(target), detail)
        return Delivery(target, False, detail)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.sent_log.close()


async def run_notifier(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    await ensure_topics(settings)
    notifier = await asyncio.to_thread(Notifier, settings)
    consumer = make_consumer(settings, settings.alerts_topic, group_id=NOTIFIER_GROUP)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            for records in batches.values():
                for record in records:
                    try:
                        alert = Alert.from_bytes(record.value)
                    except ValidationError as exc:
                        log.error("skipping a malformed alert record at offset %d: %s",
                                  record.offset, exc.errors()[0]["msg"])
                        continue
                    await asyncio.to_thread(notifier.deliver, alert)
            if batches:
                await consumer.commit()
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        notifier.close()
