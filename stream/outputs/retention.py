"""Retention per measurement: older points of one measurement deleted by the sink.

``STRIDEWATCH_INFLUX_RETENTION_BY_MEASUREMENT`` (e.g. ``{"run_window": "90d"}``) keeps a
measurement shorter than the database's retention. Every measurement stays in the
database's default retention policy, because that is what the dashboards' InfluxQL reads
(``FROM "run_window"``, no policy named); a policy per measurement would need every query
and, on InfluxDB 2, a DBRP mapping per policy. So the sink deletes instead, at start and
then every ``influx_prune_every_s``::

    DELETE FROM "run_window" WHERE time < now() - 90d

InfluxDB 1.x only. On InfluxDB 2.x the equivalent is the delete API (docs/influxdb.md):
``influx delete --bucket B --start 1970-01-01T00:00:00Z --stop <now - 90d>
--predicate '_measurement="run_window"'``, run on a schedule; the sink says so once.
A measurement cannot be kept *longer* than the default policy this way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

from base.influx_query import InfluxReader
from base.settings import Settings
from ingest.retention import duration_s
from stream.metrics import MEASUREMENTS

log = logging.getLogger("stridewatch.sink")


def retention_plan(settings: Settings) -> dict[str, str]:
    """measurement -> duration, checked: a name the stream never writes is a typo."""
    plan = dict(settings.influx_retention_by_measurement)
    unknown = sorted(set(plan) - set(MEASUREMENTS))
    if unknown:
        raise ValueError(f"influx_retention_by_measurement names {unknown}, which the "
                         f"stream never writes; measurements: {', '.join(MEASUREMENTS)}")
    for measurement, duration in plan.items():
        if duration_s(duration) is None:
            raise ValueError(f"influx_retention_by_measurement: {measurement} would be kept "
                             "forever; leave it out instead")
    return plan


def prune_statement(measurement: str, duration: str) -> str:
    return f'DELETE FROM "{measurement}" WHERE time < now() - {duration.strip()}'


def prune(settings: Settings, plan: dict[str, str]) -> list[str]:
    """Run the deletes (InfluxDB 1.x); returns the statements InfluxDB accepted."""
    done: list[str] = []
    with InfluxReader(settings) as reader:
        for measurement, duration in sorted(plan.items()):
            statement = prune_statement(measurement, duration)
            try:
                data = reader.query(statement)
            except httpx.HTTPError as exc:
                log.warning("%s: %s failed (%s); tried again later", reader.server,
                            statement, type(exc).__name__)
                continue
            errors = [r["error"] for r in data.get("results", []) if "error" in r]
            if errors:
                log.warning("%s refused %s: %s", reader.server, statement, errors[0])
                continue
            done.append(statement)
    return done


class Pruner:
    """Runs :func:`prune` at the first call and then every ``influx_prune_every_s``."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.settings = settings
        self.plan = retention_plan(settings)
        self.clock = clock
        self.next_at: float | None = None
        if self.plan and settings.influx_api == "v2":
            log.warning("influx_retention_by_measurement is applied on InfluxDB 1.x only; "
                        "on v2 schedule `influx delete` (docs/influxdb.md)")
            self.plan = {}
        elif self.plan:
            log.info("keeping %s", ", ".join(f"{m} {d}" for m, d in sorted(self.plan.items())))

    async def maybe_prune(self) -> list[str]:
        now = self.clock()
        if not self.plan or (self.next_at is not None and now < self.next_at):
            return []
        self.next_at = now + self.settings.influx_prune_every_s
        return await asyncio.to_thread(prune, self.settings, self.plan)
