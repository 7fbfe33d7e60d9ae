"""InfluxDB's retention, checked before a run is imported, and how to change it.

InfluxDB 1.x drops points older than the database's default retention policy at write
time ("partial write: points beyond retention policy dropped"), while the stream still
counts the run's load. So the importer reads the retention first
(``SHOW RETENTION POLICIES ON <db>``) and refuses a run that InfluxDB would drop, unless
told to go on. ``STRIDEWATCH_INFLUX_RETENTION`` only applies when the database is created;
:func:`set_retention` changes an existing database's default policy
(``ALTER RETENTION POLICY … DEFAULT``).

InfluxDB 2.x/3.x (``STRIDEWATCH_INFLUX_API=v2``): the retention belongs to the bucket. The
v1 compatibility endpoint answers ``SHOW RETENTION POLICIES`` through the DBRP mapping
where the server supports it, and the check uses that; a server that does not answer it
is treated as unreadable (refused, with the flag to go on). The bucket's retention is
changed with ``influx bucket update``, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from base.influx_query import InfluxReader
from base.settings import Settings

# the day's load point is stamped at the run's local midnight, up to a day before the run
DAY_MARGIN_S = 86_400.0
_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "u": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
            "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|u|ms|s|m|h|d|w)")


class RetentionUnknown(Exception):
    """The retention could not be read (or changed); the message says why and what to do."""


def duration_s(text: str) -> float | None:
    """Seconds of an InfluxDB duration ("400d", "9600h0m0s"); None for infinite ("INF",
    "0s": InfluxDB's way of showing an infinite policy)."""
    value = text.strip()
    if value.upper() == "INF":
        return None
    parts = _PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not an InfluxDB duration: {text!r} (e.g. 400d, 52w, INF)")
    seconds = sum(float(n) * _UNITS_S[u] for n, u in parts)
    return seconds if seconds > 0 else None


def describe(seconds: float | None) -> str:
    if seconds is None:
        return "infinite"
    days = seconds / 86_400
    return f"{days:g} days" if days >= 1 else f"{seconds / 3600:g} hours"


@dataclass(frozen=True, slots=True)
class Retention:
    """The database's default retention policy: what the writer's points fall under."""

    database: str
    policy: str
    seconds: float | None  # None: infinite
    server: str
    exists: bool = True  # False: the database is missing; the sink creates it with this

    def oldest_kept(self, now: float) -> float | None:
        """The oldest start time whose points InfluxDB keeps (None: any)."""
        if self.seconds is None:
            return None
        return now - self.seconds + DAY_MARGIN_S

    def refusal(self, start_t: float, now: float, settings: Settings) -> str | None:
        """Why a run starting at ``start_t`` would lose its points, or None."""
        oldest = self.oldest_kept(now)
        if oldest is None or start_t >= oldest:
            return None
        age_days = (now - start_t) / 86_400
        return (f"the run is {age_days:.0f} days old and {self.server} keeps "
                f"{describe(self.seconds)} (retention policy '{self.policy}' of database "
                f"'{self.database}'), so it would drop the run's points. "
                f"{how_to_change(settings, age_days)}")


def how_to_change(settings: Settings, age_days: float) -> str:
    wanted = f"{int(age_days) + 30}d"
    if settings.influx_api == "v2":
        return (f"Lengthen the bucket's retention (influx bucket update --id <bucket id> "
                f"--retention {wanted}), or import with --past-retention.")
    return (f"Lengthen it with `stridewatch influx retention {wanted}` (or INF), or import "
            "with --past-retention (the load still counts; InfluxDB drops the points).")


def _answer(reader: InfluxReader, q: str) -> dict[str, object]:
    try:
        data = reader.query(q)
    except httpx.HTTPStatusError as exc:
        raise RetentionUnknown(f"{reader.server} answered {exc.response.status_code} to "
                               f"{q.split(' ON ')[0]}: {exc.response.text[:200]}") from None
    except httpx.HTTPError as exc:
        raise RetentionUnknown(f"{reader.server} is unreachable ({type(exc).__name__})"
                               ) from None
    results = data.get("results") or [{}]
    first: dict[str, object] = results[0] if isinstance(results, list) else {}
    return first


def read_retention(settings: Settings) -> Retention:
    """The default retention policy of ``STRIDEWATCH_INFLUX_DB``; raises
    :class:`RetentionUnknown` when InfluxDB cannot be asked."""
    db = settings.influx_db
    with InfluxReader(settings) as reader:
        result = _answer(reader, f'SHOW RETENTION POLICIES ON "{_quoted(db)}"')
        server = reader.server
    error = result.get("error")
    if isinstance(error, str):
        if "database not found" in error:
            # the sink creates it at start with the configured retention
            return Retention(db, "stridewatch", duration_s(settings.influx_retention), server,
                             exists=False)
        raise RetentionUnknown(f"{server}: SHOW RETENTION POLICIES failed: {error}")
    for series in result.get("series") or []:  # type: ignore[attr-defined]
        columns = series.get("columns", [])
        for values in series.get("values", []):
            row = dict(zip(columns, values, strict=False))
            if row.get("default"):
                return Retention(db, str(row.get("name")), duration_s(str(row["duration"])),
                                 server)
    raise RetentionUnknown(f"{server}: database '{db}' has no default retention policy")


def set_retention(settings: Settings, duration: str) -> Retention:
    """Make the database's default policy keep ``duration`` (e.g. "1000d", "INF").

    InfluxDB 1.x only; shortening it deletes the points beyond it at the next check.
    """
    if settings.influx_api == "v2":
        raise RetentionUnknown("with STRIDEWATCH_INFLUX_API=v2 the retention is the "
                               "bucket's: influx bucket update --id <bucket id> "
                               f"--retention {duration}")
    seconds = duration_s(duration)  # ValueError for a malformed duration
    current = read_retention(settings)
    db = _quoted(settings.influx_db)
    if not current.exists:
        statement = (f'CREATE DATABASE "{db}" WITH DURATION {duration} '
                     f'NAME "{_quoted(current.policy)}"')
    else:
        statement = (f'ALTER RETENTION POLICY "{_quoted(current.policy)}" ON "{db}" '
                     f"DURATION {duration} DEFAULT")
    with InfluxReader(settings) as reader:
        result = _answer(reader, statement)
    error = result.get("error")
    if isinstance(error, str):
        raise RetentionUnknown(f"{current.server} refused the change: {error}")
    changed = read_retention(settings)
    if changed.seconds != seconds:  # pragma: no cover - the server did not apply it
        raise RetentionUnknown(f"{changed.server} still keeps {describe(changed.seconds)}")
    return changed


def _quoted(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')
