"""Keeping notification secrets out of logs.

Apprise URLs carry tokens. Every log record of Apprise and the HTTP libraries passes a
filter (``SCRUBBER``) that blanks the secret parts of the configured URLs; the
notifier's own records name targets by label only.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from team.roster import Roster

# loggers whose records may quote a target URL (request lines, debug dumps)
# (the notifier's own records name targets by label only and scrub error details)
SCRUBBED_LOGGERS = ("apprise", "urllib3", "urllib3.connectionpool", "urllib3.connection",
                    "requests")


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
