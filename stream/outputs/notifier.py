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

Its parts: ``targets`` (who gets an alert), ``secrets`` (the log filter), ``sent_log``
(the sent-log and the rate limit); this module delivers and runs the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from base import ops
from base.forgotten import ForgottenList
from base.json_logs import runner_extra
from base.kafka import commit_offsets, ensure_topics, make_consumer
from base.mqtt import connect_blocking, make_client, service_password
from base.settings import Settings
from rules.alerts import Alert, format_value
from stream.outputs.secrets import SCRUBBER, protect_logs, roster_urls, without_snippets
from stream.outputs.sent_log import Outcome, RateLimiter, SentLog
from stream.outputs.targets import Target, targets_for
from team.roster import Roster, RosterError, load_roster

log = logging.getLogger("stridewatch.notifier")
# Apprise notification types by alert severity (icons and colours on the phone)
NOTIFY_TYPES = {"notice": "info", "warn": "warning", "critical": "failure"}


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
            delivery = self._handle_one(alert, target)
            ops.inc("stridewatch_notifier_alert_deliveries_total", channel=channel(target),
                    outcome=delivery.outcome)
            results.append(delivery)
        return results

    def _handle_one(self, alert: Alert, target: Target) -> Delivery:
        if self.sent_log.was_sent(alert.alert_id, target.key):
            log.info("alert %s already sent to %s: not sending again", alert.alert_id,
                     target.label, extra=runner_extra(alert.runner))
            return Delivery(target.label, "duplicate")
        if not target.is_mqtt and not self.limiter.allow(target.key, alert.severity):
            log.warning("rate limit (%d per hour) reached for %s: not sending alert %s "
                        "(%s/%s for %s)", self.limiter.per_hour, target.label,
                        alert.alert_id, alert.rule, alert.severity, alert.runner,
                        extra=runner_extra(alert.runner))
            self.sent_log.record(alert.alert_id, target.key, target.label, "rate_limited")
            return Delivery(target.label, "rate_limited")
        return self._deliver_one(alert, target)

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
                     f" on attempt {attempt}" if attempt > 1 else "",
                     extra=runner_extra(alert.runner))
            return Delivery(target.label, "sent", attempt, "sent")
        log.error("gave up sending alert %s (%s/%s for %s) to %s after %d attempts: %s",
                  alert.alert_id, alert.rule, alert.severity, alert.runner, target.label,
                  self.attempts, detail, extra=runner_extra(alert.runner))
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


def channel(target: Target) -> str:
    """``mqtt`` or the Apprise URL's scheme (``ntfy``, ``pover``, …): never more of it."""
    if target.is_mqtt:
        return "mqtt"
    scheme = target.url.split("://", 1)[0].lower()
    return scheme if scheme.isalnum() and len(scheme) <= 16 else "other"


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
    ops.condition("mqtt", None)
    ops.health().check("mqtt", lambda: None if notifier.client.is_connected()
                       else "MQTT not connected")
    consumer = make_consumer(settings, settings.alerts_topic, group_id=settings.notifier_group)
    await consumer.start()
    log.info("sending alerts from %s to MQTT and push targets", settings.alerts_topic)
    handled = forgotten_skipped = 0
    forgotten = ForgottenList(settings)
    try:
        await forgotten.start()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            await asyncio.to_thread(notifier.reload_roster)
            done: list[ConsumerRecord[bytes, bytes]] = []
            for records in batches.values():
                for record in records:
                    if stop.is_set():
                        break  # the rest is handled after the restart
                    ops.inc("stridewatch_notifier_records_in_total")
                    try:
                        alert = Alert.from_bytes(record.value or b"")
                    except ValidationError as exc:
                        log.error("skipping a malformed alert record at %s[%d]@%d: %s",
                                  record.topic, record.partition, record.offset,
                                  exc.errors()[0]["msg"])
                    else:
                        if alert.runner in forgotten:
                            # still in the topic from before the forget: never sent now
                            forgotten_skipped += 1
                            log.info("alert %s of forgotten runner %s not sent (%d so far)",
                                     alert.alert_id, alert.runner, forgotten_skipped)
                        else:
                            await asyncio.to_thread(notifier.deliver, alert)
                            handled += 1
                    done.append(record)
            if done:
                await commit_offsets(consumer, done)
    finally:
        await forgotten.stop()
        with contextlib.suppress(KafkaError):
            await consumer.stop()
        notifier.close()
        log.info("notifier stopped after handling %d alerts", handled)
