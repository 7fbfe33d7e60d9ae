"""The notifier (``stridewatch notify``): alerts topic → the runner's phone and coaches.

Each alert goes to ``runners/<runner>/alerts`` over MQTT (QoS 1, the phone app's inbox)
and to the Apprise URLs of the runner and of their team's coaches from the roster.

- Alerts marked ``to_runner = False`` are not sent: another alert of the same cause
  already carries their evidence (``rules.causes``: one message per cause).
- Every delivery is tried a few times at once. A target that keeps failing gets the
  alert in the sent-log's pending list (durable: it survives a restart) and is tried
  again with backoff (``notifier_retry_first_s`` doubling up to ``notifier_retry_max_s``)
  for ``notifier_retry_for_s``; only then is it logged as given up. While a target has
  alerts pending, new ones for it join the list at once, so a broken push service never
  holds back the MQTT inbox or the other targets, and its alerts arrive in order when it
  returns. The offset of an alert is committed once every target has it or keeps it.
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
from stream.outputs.sent_log import Outcome, Pending, RateLimiter, SentLog
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
        self.retry_first_s = settings.notifier_retry_first_s
        self.retry_max_s = settings.notifier_retry_max_s
        self.retry_for_s = settings.notifier_retry_for_s
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
        if self.sent_log.is_pending(alert.alert_id, target.key):
            # a redelivered alert whose retries go on: the retry pass owns it
            log.info("alert %s is waiting for %s already: not sending now", alert.alert_id,
                     target.label)
            return Delivery(target.label, "pending")
        if self.sent_log.target_has_pending(target.key):
            # the target is down: queue behind its other alerts instead of trying now
            self.sent_log.add_pending(alert.alert_id, target.key, target.label,
                                      alert.to_bytes(), time.time(), 0,
                                      "queued behind earlier alerts")
            log.warning("%s has alerts waiting for retry: alert %s (%s/%s for %s) joins them",
                        target.label, alert.alert_id, alert.rule, alert.severity,
                        alert.runner)
            return Delivery(target.label, "pending", 0, "queued behind earlier alerts")
        delay = self.retry_delay_s
        detail = ""
        for attempt in range(1, self.attempts + 1):
            try:
                self._send(alert, target)
            except Exception as exc:  # any push backend failure is retried, then kept
                detail = SCRUBBER.scrub(f"{type(exc).__name__}: {exc}")
                log.warning("sending alert %s to %s failed (attempt %d/%d): %s",
                            alert.alert_id, target.label, attempt, self.attempts, detail)
                if attempt < self.attempts:
                    time.sleep(delay)
                    delay *= 2
                continue
            self._sent(alert, target, f" on attempt {attempt}" if attempt > 1 else "")
            return Delivery(target.label, "sent", attempt, "sent")
        self.sent_log.add_pending(alert.alert_id, target.key, target.label, alert.to_bytes(),
                                  time.time() + self.retry_first_s, self.attempts, detail)
        self.sent_log.record(alert.alert_id, target.key, target.label, "pending", detail)
        log.warning("alert %s (%s/%s for %s) kept for %s after %d failed attempts: retried "
                    "with backoff for up to %.0f s (next in %.0f s)", alert.alert_id,
                    alert.rule, alert.severity, alert.runner, target.label, self.attempts,
                    self.retry_for_s, self.retry_first_s)
        return Delivery(target.label, "pending", self.attempts, detail)

    def _send(self, alert: Alert, target: Target) -> None:
        if target.is_mqtt:
            self._send_mqtt(alert, target)
        else:
            self._send_apprise(alert, target)

    def _sent(self, alert: Alert, target: Target, how: str = "") -> None:
        self.sent_log.record(alert.alert_id, target.key, target.label, "sent")
        if not target.is_mqtt:
            self.limiter.record(target.key)
        log.info("sent alert %s (%s/%s for %s) to %s%s", alert.alert_id, alert.rule,
                 alert.severity, alert.runner, target.label, how,
                 extra=runner_extra(alert.runner))

    def retry_due(self, now: float | None = None) -> list[Delivery]:
        """One try of each pending delivery whose time has come (the oldest of each
        target first; a target that fails again is not tried further in this pass)."""
        now = time.time() if now is None else now
        failed: set[str] = set()
        results = []
        for item in self.sent_log.due(now):
            if item.target in failed:
                continue
            results.append(self._retry(item, now, failed))
        return results

    def _retry(self, item: Pending, now: float, failed: set[str]) -> Delivery:
        waited_s = now - item.first_failed_at
        try:
            alert = Alert.from_bytes(item.alert)
        except ValidationError:
            return self._give_up(item, "the kept alert no longer parses")
        if waited_s > self.retry_for_s:
            return self._give_up(item, f"still failing after {waited_s:.0f} s: "
                                       f"{item.detail}")
        target = next((t for t in targets_for(alert, self.roster) if t.key == item.target),
                      None)
        if target is None:
            return self._give_up(item, "no longer a target of this runner in the roster")
        if self.sent_log.was_sent(alert.alert_id, target.key):
            self.sent_log.resolve(alert.alert_id, target.key)
            return Delivery(target.label, "duplicate")
        try:
            self._send(alert, target)
        except Exception as exc:  # still down: wait longer (doubling, capped)
            detail = SCRUBBER.scrub(f"{type(exc).__name__}: {exc}")
            tries = item.tries + 1
            delay = min(self.retry_max_s, self.retry_first_s * 2 ** max(0, tries - 1
                                                                        - self.attempts))
            self.sent_log.retry_later(item, now + delay, detail)
            failed.add(item.target)
            log.warning("sending alert %s to %s failed again (try %d, %.0f s since the "
                        "first failure; next in %.0f s): %s", alert.alert_id, target.label,
                        tries, waited_s, delay, detail)
            return Delivery(target.label, "pending", tries, detail)
        self._sent(alert, target, f" after {item.tries + 1} tries, {waited_s:.0f} s after "
                                  "the first failure")
        self.sent_log.resolve(alert.alert_id, target.key)
        return Delivery(target.label, "sent", item.tries + 1, "sent")

    def _give_up(self, item: Pending, reason: str) -> Delivery:
        log.error("gave up sending alert %s to %s after %d tries: %s", item.alert_id,
                  item.label, item.tries, reason)
        self.sent_log.record(item.alert_id, item.target, item.label, "gave_up", reason)
        self.sent_log.resolve(item.alert_id, item.target)
        return Delivery(item.label, "gave_up", item.tries, reason)

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
    log.info("sending alerts from %s to MQTT and push targets (%d deliveries waiting for "
             "retry)", settings.alerts_topic, notifier.sent_log.pending_count())
    handled = forgotten_skipped = 0
    forgotten = ForgottenList(settings)
    leaving = asyncio.Event()

    async def retry_pending() -> None:
        # beside the main loop: a slow or broken push service holds up only its own alerts
        while not (stop.is_set() or leaving.is_set()):
            try:
                await asyncio.to_thread(notifier.retry_due)
            except Exception:  # e.g. the sent-log locked for too long: next pass
                log.exception("retrying pending alerts failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    retrier = asyncio.create_task(retry_pending())
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
        leaving.set()
        with contextlib.suppress(Exception):
            await retrier  # a try under way finishes before the sent-log closes
        await forgotten.stop()
        with contextlib.suppress(KafkaError):
            await consumer.stop()  # commits nothing more, leaves the group
        pending = notifier.sent_log.pending_count()
        notifier.close()
        log.info("notifier stopped after handling %d alerts; %d deliveries waiting for "
                 "retry (kept in the sent-log)", handled, pending)
