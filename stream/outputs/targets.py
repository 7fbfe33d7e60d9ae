"""Where an alert goes: the runner's MQTT inbox and the Apprise URLs of runner and coaches.

A target's URL may hold secrets and is never logged; its ``key`` (the sent-log and
rate-limit key) and ``label`` (what logs show) are safe.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from ingest import topics
from rules.alerts import Alert
from team.roster import Roster

MQTT_SCHEME = "mqtt"


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
