"""JSON-lines logs (``log_format = "json"``): one object per line for log collectors.

Each line holds ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger`` and
``message``; ``runner`` when the log call names the runner (``extra={"runner": …}``);
``exception`` with the traceback when there is one. The message is the same text as in
the plain format, so what keeps secrets out of one keeps them out of the other.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# record attributes a log call may add with ``extra=`` that go into the object
EXTRA_FIELDS = ("runner", "device")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def runner_extra(runner: str | None) -> dict[str, object]:
    """``extra=`` for a log call about one runner (their id goes into the JSON object)."""
    return {"runner": runner} if runner else {}
