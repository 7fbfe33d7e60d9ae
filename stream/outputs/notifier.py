"""The notifier (``stridewatch notify``): alerts topic → the runner's phone and coaches.

Each alert goes to ``runners/<runner>/alerts`` over MQTT (QoS 1, the phone app's inbox)
and to the Apprise URLs of the runner and of their team's coaches from the roster.

- Alerts marked ``to_runner = False`` are not sent: another alert of the same cause
  already carries their evidence (``rules.causes``: one message per cause).
- Every delivery is tried a few times with backoff; a target that keeps failing is
  logged as given up and does not hold back the others.
- Push targets are rate limited per target (rolling hour; critical alerts always pass).
  The MQTT inbox is not: the app shows every alert the dashboards show.
- A sent-log (SQLite in the data folder) keyed by alert id and target makes redeliveries
  and replays harmless: nothing is sent twice to the same target. Offsets are committed
  only after an alert was handled.
- Apprise URLs carry tokens. Logs name a target by scheme, owner and a fingerprint
  (``pover://… (coach kim, 3fa2c1d0)``); the sent-log stores only the fingerprint; and
  every log record of Apprise and the HTTP libraries passes a filter that blanks the
  secret parts of the configured URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from base.kafka import commit_offsets, ensure_topics, make_consumer
from base.mqtt import connect_blocking, make_client, service_password
from base.settings import Settings
from ingest import topics
from rules.alerts import Alert, format_value
from rules.roster import Roster, RosterError, load_roster

log = logging.getLogger("stridewatch.notifier")
MQTT_SCHEME = "mqtt"
# Apprise notification types by alert severity (icons and colours on the phone)
NOTIFY_TYPES = {"notice": "info", "warn": "warning", "critical": "failure"}
KEEP_LOG_DAYS = 30
# loggers whose records may quote a target URL (request lines, debug dumps)
# (the notifier's own records name targets by label only and scrub error details)
SCRUBBED_LOGGERS = ("apprise", "urllib3", "urllib3.connectionpool", "urllib3.connection",
                    "requests")

Outcome = Literal["sent", "duplicate", "rate_limited", "gave_up"]


# --------------------------------------------------------------------------- targets


def fingerprint(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def redact(url: str) -> str:
    """A target URL as logs may show it: scheme and a fingerprint, nothing secret."""
    scheme = urlsplit(url).scheme or "?"
    return f"{scheme}://… ({fingerprint(url)[:8]})"


@dataclass(frozen=True)
class Target:
    """One place an alert goes: a runner's MQTT inbox, or an Apprise URL of a runner or
    a coach. ``url`` may hold secrets and is never logged; ``key`` and ``label`` are safe."""

    url: str
    owner: str  # "runner ana", "coach kim"

    @classmethod
    def mqtt(cls, runner: str) -> Target:
        return cls(f"{MQTT_SCHEME}:{topics.alerts_topic(runner)}", f"runner {runner}")

    @property
    def is_mqtt(self) -> bool:
        return self.url.startswith(f"{MQTT_SCHEME}:runners/")

    @property
    def topic(self) -> str:
        return self.url.partition(":")[2]

    @property
    def key(self) -> str:
        """The sent-log and rate-limit key."""
        return self.url if self.is_mqtt else f"apprise:{fingerprint(self.url)}"

    @property
    def label(self) -> str:
        if self.is_mqtt:
            return f"mqtt {self.topic}"
        scheme = urlsplit(self.url).scheme or "?"
        return f"{scheme}://… ({self.owner}, {fingerprint(self.url)[:8]})"


def targets_for(alert: Alert, roster: Roster) -> list[Target]:
    """The runner's inbox, the runner's push URLs, then each coach's (a URL once)."""
    targets = [Target.mqtt(alert.runner)]
    runner = roster.runner(alert.runner)
    if runner is not None:
        targets += [Target(url, f"runner {runner.id}") for url in runner.notify]
        team = roster.team(runner.team)
        if team is not None:
            for coach in team.coaches:
                targets += [Target(url, f"coach {coach.id}") for url in coach.notify]
    unique: dict[str, Target] = {}
    for target in targets:
        unique.setdefault(target.key, target)
    return list(unique.values())


# --------------------------------------------------------------------------- secrets


def _is_host_name(host: str) -> bool:
    """A real host name or address (safe to show) rather than a token in host position
    (``pover://USER@TOKEN``, ``ntfy://TOPIC``, ``tgram://BOT:TOKEN/``)."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return "." in host


def secret_parts(url: str) -> set[str]:
    """The parts of an Apprise URL that may be secret: the URL itself, user and password
    (3 characters or more), and token-like hosts, path segments, query values and the
    fragment (8 characters or more: tokens are long, words like ``alerts`` stay readable)."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    credentials = {url, userinfo, *userinfo.split(":")}
    if userinfo:
        credentials.add(parts.netloc)
    pieces: set[str] = set(parts.path.split("/"))
    host, _, port = hostport.partition(":")
    if not _is_host_name(host) or (port and not port.isdigit()):
        pieces |= {hostport, host, port}
    pieces |= {value for _, value in parse_qsl(parts.query)}
    pieces.add(parts.fragment)
    found = {p for p in credentials | {unquote(c) for c in credentials} if len(p) >= 3}
    return found | {p for p in pieces | {unquote(p) for p in pieces} if len(p) >= 8}


class SecretScrubber(logging.Filter):
    """Blanks known secrets in every record of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add_urls(self, urls: Iterable[str]) -> None:
        with self._lock:
            known = set(self._secrets)
            for url in urls:
                known |= secret_parts(url)
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the raw template only
            message = str(record.msg)
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = self.scrub(message)
        record.args = None
        return True


SCRUBBER = SecretScrubber()


def protect_logs(urls: Iterable[str]) -> None:
    """Register secrets and attach the scrubber (once) to the loggers that may quote them."""
    SCRUBBER.add_urls(urls)
    for name in SCRUBBED_LOGGERS:
        logger = logging.getLogger(name)
        if SCRUBBER not in logger.filters:
            logger.addFilter(SCRUBBER)


def without_snippets(message: str) -> str:
    """A YAML error without the quoted lines of the file (they may hold tokens); the line
    and column numbers stay."""
    return "\n".join(line for line in message.splitlines() if not line.startswith("    "))


def roster_urls(roster: Roster) -> list[str]:
    urls = [url for runner in roster.runners for url in runner.notify]
    urls += [url for team in roster.teams for coach in team.coaches for url in coach.notify]
    return urls


# --------------------------------------------------------------------------- sent-log


class SentLog:
    """What was delivered where, persisted (SQLite, WAL) across restarts and processes.

    One row per (alert id, target key) with the outcome of the latest try; a row that
    says ``sent`` is final. Target keys are fingerprints: no secrets on disk.
    """

    def __init__(self, path: Path, keep_days: float = KEEP_LOG_DAYS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, timeout=10.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS deliveries (alert_id TEXT NOT NULL, "
            "target TEXT NOT NULL, label TEXT NOT NULL, outcome TEXT NOT NULL, "
            "at REAL NOT NULL, detail TEXT NOT NULL DEFAULT '', "
            "PRIMARY KEY (alert_id, target))")
        self.db.execute("CREATE INDEX IF NOT EXISTS deliveries_at ON deliveries (at)")
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


# --------------------------------------------------------------------------- notifier


class DeliveryError(RuntimeError):
    pass


@dataclass(frozen=True)
class Delivery:
    target: str  # the target's label: safe to show
    outcome: Outcome
    attempts: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("sent", "duplicate")


def notification(alert: Alert) -> tuple[str, str]:
    """Title and body of the push notification."""
    title = f"StrideWatch [{alert.severity}] {alert.runner}: {alert.title}"
    # figures and short labels; sentences (site advice, plan text) are in the message
    evidence = ", ".join(f"{k.replace('_', ' ')} {format_value(v)}"
                         for k, v in alert.evidence.items()
                         if not isinstance(v, str) or len(v) <= 40)
    lines = [alert.message]
    if evidence:
        lines.append(f"Evidence: {evidence}.")
    lines.append(f"Next step: {alert.next_step}")
    if alert.caveat:
        lines.append(f"How sure this is: {alert.caveat}")
    lines += ["", alert.disclaimer]
    return title, "\n".join(lines)


class Notifier:
    def __init__(self, settings: Settings, per_target_per_hour: int = 12, attempts: int = 4,
                 retry_delay_s: float = 0.5) -> None:
        self.settings = settings
        self.attempts = max(1, attempts)
        self.retry_delay_s = retry_delay_s
        self.roster = Roster()
        self._roster_mtime: float | None = None
        self.reload_roster(force=True)
        self.sent_log = SentLog(settings.data_dir / "notifier" / "sent.sqlite")
        self.limiter = RateLimiter(per_target_per_hour)
        for key, at in self.sent_log.sent_since(time.time() - RateLimiter.WINDOW_S):
            self.limiter.record(key, at)
        self.client, props = make_client(settings, f"stridewatch-notifier-{time.time_ns()}",
                                         settings.notifier_username,
                                         service_password(settings, "notifier"))
        connect_blocking(settings, self.client, props)

    # -- roster ----------------------------------------------------------------------
    def reload_roster(self, force: bool = False) -> None:
        """(Re)read the roster when its file changed; keep the old one if the new is bad."""
        path = self.settings.roster_file
        if path is None:
            return
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = None
        if not force and mtime == self._roster_mtime:
            return
        self._roster_mtime = mtime
        try:
            roster = load_roster(path)
        except RosterError as exc:
            reason = SCRUBBER.scrub(without_snippets(str(exc)))
            if force:
                raise RosterError(reason) from None
            log.error("roster not reloaded, keeping the previous one: %s", reason)
            return
        protect_logs(roster_urls(roster))
        self.roster = roster
        self._check_targets(roster)

    def _check_targets(self, roster: Roster) -> None:
        import apprise

        seen: dict[str, Target] = {}
        for runner in roster.runners:
            seen.update((t.key, t) for t in (Target(u, f"runner {runner.id}")
                                             for u in runner.notify))
        for team in roster.teams:
            for coach in team.coaches:
                seen.update((t.key, t) for t in (Target(u, f"coach {coach.id}")
                                                 for u in coach.notify))
        bad = [t.label for t in seen.values() if apprise.Apprise.instantiate(t.url) is None]
        log.info("roster: %d runners, %d push targets%s", len(roster.runners), len(seen),
                 f"; not valid Apprise URLs: {', '.join(bad)}" if bad else "")

    # -- delivery --------------------------------------------------------------------
    def deliver(self, alert: Alert) -> list[Delivery]:
        if not alert.to_runner:
            # another alert of the same cause carries this one's evidence (rules.causes);
            # InfluxDB and the coach's dashboard have it
            log.info("alert %s (%s/%s for %s) is part of a %s message already sent: "
                     "recorded, not sent again", alert.alert_id, alert.rule, alert.severity,
                     alert.runner, alert.cause)
            return []
        results = []
        for target in targets_for(alert, self.roster):
            if self.sent_log.was_sent(alert.alert_id, target.key):
                log.info("alert %s already sent to %s: not sending again", alert.alert_id,
                         target.label)
                results.append(Delivery(target.label, "duplicate"))
                continue
            if not target.is_mqtt and not self.limiter.allow(target.key, alert.severity):
                log.warning("rate limit (%d per hour) reached for %s: not sending alert %s "
                            "(%s/%s for %s)", self.limiter.per_hour, target.label,
                            alert.alert_id, alert.rule, alert.severity, alert.runner)
                self.sent_log.record(alert.alert_id, target.key, target.label,
                                     "rate_limited")
                results.append(Delivery(target.label, "rate_limited"))
                continue
            results.append(self._deliver_one(alert, target))
        return results

    def _deliver_one(self, alert: Alert, target: Target) -> Delivery:
        delay = self.retry_delay_s
        detail = ""
        for attempt in range(1, self.attempts + 1):
            try:
                if target.is_mqtt:
                    self._send_mqtt(alert, target)
                else:
                    self._send_apprise(alert, target)
            except Exception as exc:  # any push backend failure is retried, then logged
                detail = SCRUBBER.scrub(f"{type(exc).__name__}: {exc}")
                log.warning("sending alert %s to %s failed (attempt %d/%d): %s",
                            alert.alert_id, target.label, attempt, self.attempts, detail)
                if attempt < self.attempts:
                    time.sleep(delay)
                    delay *= 2
                continue
            self.sent_log.record(alert.alert_id, target.key, target.label, "sent")
            if not target.is_mqtt:
                self.limiter.record(target.key)
            log.info("sent alert %s (%s/%s for %s) to %s%s", alert.alert_id, alert.rule,
                     alert.severity, alert.runner, target.label,
                     f" on attempt {attempt}" if attempt > 1 else "")
            return Delivery(target.label, "sent", attempt, "sent")
        log.error("gave up sending alert %s (%s/%s for %s) to %s after %d attempts: %s",
                  alert.alert_id, alert.rule, alert.severity, alert.runner, target.label,
                  self.attempts, detail)
        self.sent_log.record(alert.alert_id, target.key, target.label, "gave_up", detail)
        return Delivery(target.label, "gave_up", self.attempts, detail)

    def _send_mqtt(self, alert: Alert, target: Target) -> None:
        info = self.client.publish(target.topic, alert.to_bytes(), qos=1)
        info.wait_for_publish(timeout=10)
        if not info.is_published():
            raise DeliveryError(f"MQTT publish not acknowledged (rc={info.rc})")

    def _send_apprise(self, alert: Alert, target: Target) -> None:
        import apprise

        service = apprise.Apprise()
        if not service.add(target.url):
            raise DeliveryError("not a valid Apprise URL")
        title, body = notification(alert)
        result: Any = service.notify(title=title, body=body,
                                     notify_type=NOTIFY_TYPES.get(alert.severity, "info"))
        try:
            if not result:
                raise DeliveryError(_apprise_reason(result))
        finally:
            with contextlib.suppress(Exception):
                result.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.sent_log.close()


def _apprise_reason(result: Any) -> str:
    """The last warning Apprise logged for a failed call (Apprise ≥ 2 returns them)."""
    messages = []
    with contextlib.suppress(Exception):
        messages = [str(entry.message) for entry in result.logs()]
    reason = messages[-1] if messages else "the push service did not accept the notification"
    return SCRUBBER.scrub(reason)


async def run_notifier(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    await ensure_topics(settings)
    notifier = await asyncio.to_thread(Notifier, settings)
    consumer = make_consumer(settings, settings.alerts_topic, group_id=settings.notifier_group)
    await consumer.start()
    log.info("sending alerts from %s to MQTT and push targets", settings.alerts_topic)
    handled = 0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            await asyncio.to_thread(notifier.reload_roster)
            done: list[ConsumerRecord[bytes, bytes]] = []
            for records in batches.values():
                for record in records:
                    if stop.is_set():
                        break  # the rest is handled after the restart
                    try:
                        alert = Alert.from_bytes(record.value or b"")
                    except ValidationError as exc:
                        log.error("skipping a malformed alert record at %s[%d]@%d: %s",
                                  record.topic, record.partition, record.offset,
                                  exc.errors()[0]["msg"])
                    else:
                        await asyncio.to_thread(notifier.deliver, alert)
                        handled += 1
                    done.append(record)
            if done:
                await commit_offsets(consumer, done)
    finally:
        with contextlib.suppress(KafkaError):
            await consumer.stop()
        notifier.close()
        log.info("notifier stopped after handling %d alerts", handled)
