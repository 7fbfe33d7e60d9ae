"""A runner's data on request: ``stridewatch forget R`` and ``stridewatch export R``.

**forget**, in this order (docs/operations.md, "Privacy"):

1. R goes on the forgotten topic (``base.forgotten``): from then on every worker
   dead-letters R's events ("runner forgotten"), every sink drops R's points and every
   notifier R's alerts, across restarts;
2. a forget request goes to R's partition of the events topic; the worker that owns it
   deletes R's three state keys from its table (tombstones on the changelog, the
   in-memory copy dropped). This command waits for the tombstones; if no worker handled
   the request in time it writes them itself (the worker still drops its copy when it
   meets the request);
3. once the sink has caught up, R's series are dropped from InfluxDB;
4. R's rows leave the notifier's sent-log, R's MQTT credentials are revoked, and R
   leaves the roster.

**export** writes one JSON and one CSV file per measurement, the roster entry and the
worker's state summary, and ``index.json`` listing every file with its row count.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx
from aiokafka import TopicPartition

from base.forgotten import (
    CONTROL_HEADER,
    FORGET_REQUEST,
    forget_request_value,
    publish_forgotten,
)
from base.influx_query import InfluxReader
from base.kafka import (
    changelog_batch_bytes,
    group_lag,
    high_watermarks,
    make_consumer,
    make_producer,
)
from base.settings import Settings
from ingest.contract import is_valid_id
from ingest.records import partition_for
from stream.metrics import MEASUREMENTS
from stream.outputs.sent_log import SentLog
from stream.outputs.targets import Target
from stream.state_codec import decode, history_key, seen_key

EXPORT_PAGE_ROWS = 10_000


class PrivacyError(RuntimeError):
    """What stopped forget or export, said for the operator."""


def check_runner_id(runner: str) -> None:
    if not is_valid_id(runner):
        raise PrivacyError(f"'{runner}' is not a runner id (lowercase letters, digits, "
                           "'-', '_')")


def state_keys(runner: str) -> tuple[bytes, bytes, bytes]:
    key = runner.encode()
    return key, seen_key(key), history_key(key)


# ------------------------------------------------------------------------ the changelog


class ChangelogView:
    """The newest value of a runner's state keys on the worker table's changelog (their
    partition), read incrementally up to the high watermark."""

    def __init__(self, settings: Settings, runner: str) -> None:
        self.settings = settings
        self.keys = set(state_keys(runner))
        self.partition = partition_for(runner, settings.kafka_partitions)
        self.last: dict[bytes, bytes | None] = {}
        self.position = 0

    async def refresh(self) -> None:
        topic = self.settings.state_changelog_topic
        mark = (await high_watermarks(self.settings, topic))[self.partition]
        if self.position >= mark:
            return
        tp = TopicPartition(topic, self.partition)
        consumer = make_consumer(self.settings, group_id=None, fetch_max_wait_ms=100)
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, self.position)
            deadline = time.monotonic() + 60
            while self.position < mark:
                if time.monotonic() > deadline:
                    raise PrivacyError(f"{topic}[{self.partition}] could not be read to "
                                       "its end within 60 s")
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
                for record in batch.get(tp, []):
                    self.position = record.offset + 1
                    if record.key in self.keys:
                        self.last[record.key] = record.value or None
        finally:
            await consumer.stop()

    def live(self) -> dict[bytes, bytes]:
        return {k: v for k, v in self.last.items() if v is not None}


async def _tombstone(settings: Settings, partition: int, keys: list[bytes]) -> None:
    # one record per batch, like the worker's own changelog writes (docs/operations.md)
    producer = make_producer(settings, max_batch_size=changelog_batch_bytes(settings),
                             linger_ms=0)
    await producer.start()
    try:
        for key in keys:
            await (await producer.send(settings.state_changelog_topic, None, key=key,
                                       partition=partition))
    finally:
        await producer.stop()


async def _send_forget_request(settings: Settings, runner: str, partition: int) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await (await producer.send(settings.events_topic, forget_request_value(runner),
                                   key=runner.encode(), partition=partition,
                                   headers=[(CONTROL_HEADER, FORGET_REQUEST)]))
    finally:
        await producer.stop()


async def _alert_ids_in_kafka(settings: Settings, runner: str) -> set[str]:
    from rules.alerts import Alert
    from stridewatch.demo import read_topic

    ids: set[str] = set()
    async for record in read_topic(settings, settings.alerts_topic, idle_s=1.0):
        if record.key == runner.encode():
            try:
                ids.add(Alert.from_bytes(record.value).alert_id)
            except ValueError:
                continue
    return ids


# ------------------------------------------------------------------------------ InfluxDB


def _series(reader: InfluxReader, runner: str) -> dict[str, int]:
    data = reader.query(f"SHOW SERIES WHERE \"runner\" = '{runner}'")
    counts: dict[str, int] = {}
    for result in data.get("results", []):
        error = result.get("error")
        if error and "database not found" not in error:
            raise PrivacyError(f"{reader.server}: SHOW SERIES failed: {error}")
        for series in result.get("series", []):
            for values in series["values"]:
                measurement = str(values[0]).split(",", 1)[0]
                counts[measurement] = counts.get(measurement, 0) + 1
    return counts


def influx_series(settings: Settings, runner: str) -> dict[str, int]:
    """measurement -> how many series InfluxDB holds for the runner."""
    with InfluxReader(settings) as reader:
        return _series(reader, runner)


def drop_series(settings: Settings, runner: str) -> dict[str, int]:
    """Delete every series tagged with the runner; returns what there was."""
    if settings.influx_api == "v2":
        return _delete_v2(settings, runner)
    with InfluxReader(settings) as reader:
        found = _series(reader, runner)
        if found:
            data = reader.query(f"DROP SERIES WHERE \"runner\" = '{runner}'")
            errors = [r["error"] for r in data.get("results", []) if "error" in r]
            if errors:
                raise PrivacyError(f"{reader.server} refused DROP SERIES: {errors[0]}")
            left = _series(reader, runner)
            if left:
                raise PrivacyError(f"{reader.server} still holds series of {runner}: {left}")
    return found


def _delete_v2(settings: Settings, runner: str) -> dict[str, int]:
    """InfluxDB 2.x: the delete API with a tag predicate over all time."""
    found = influx_series(settings, runner)  # through the DBRP mapping
    response = httpx.post(
        f"{settings.influx_url.rstrip('/')}/api/v2/delete",
        params={"org": settings.influx_org, "bucket": settings.influx_bucket},
        headers={"Authorization": f"Token {settings.influx_token.get_secret_value()}"},
        json={"start": "1970-01-01T00:00:00Z", "stop": "2262-04-11T00:00:00Z",
              "predicate": f'runner="{runner}"'}, timeout=30)
    if not response.is_success:
        raise PrivacyError(f"the v2 delete API answered {response.status_code}: "
                           f"{response.text[:200]}")
    return found


def alert_ids_in_influx(settings: Settings, runner: str) -> set[str]:
    with InfluxReader(settings) as reader:
        rows = reader.rows(f"SELECT \"alert_id\" FROM \"alert\" WHERE \"runner\" = '{runner}'")
    return {str(r["alert_id"]) for r in rows if r.get("alert_id")}


# -------------------------------------------------------------------------------- forget


@dataclass
class ForgetReport:
    runner: str
    series: dict[str, int] = field(default_factory=dict)
    state_keys: int = 0
    state_note: str = ""
    sink_note: str = ""
    sent_log_rows: int = 0
    credentials: str = ""
    roster: str = ""

    def lines(self) -> list[str]:
        by = ", ".join(f"{m} {n}" for m, n in sorted(self.series.items())) or "none"
        return [
            f"forgot runner {self.runner}; their data is refused from now on "
            "(dead letters: \"runner forgotten\")",
            f"InfluxDB: {sum(self.series.values())} series dropped ({by})",
            f"worker state: {self.state_keys} keys tombstoned on the changelog "
            f"({self.state_note})",
            f"sink: {self.sink_note}",
            f"notifier sent-log: {self.sent_log_rows} rows deleted",
            f"MQTT: {self.credentials}",
            f"roster: {self.roster}",
        ]


async def forget_in_kafka(settings: Settings, runner: str, report: ForgetReport,
                          wait_s: float) -> None:
    view = ChangelogView(settings, runner)
    await view.refresh()
    await publish_forgotten(settings, runner)
    await _send_forget_request(settings, runner, view.partition)
    found = set(view.live())
    deadline = time.monotonic() + wait_s
    while view.live() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        await view.refresh()
        found |= set(view.live())
    report.state_keys = len(found)
    if not found:
        report.state_note = "the table held none"
    elif view.live():
        await _tombstone(settings, view.partition, sorted(view.live()))
        report.state_note = (f"no worker handled the request within {wait_s:.0f} s, so "
                             "written by forget; a worker drops its copy when it meets it")
    else:
        report.state_note = "by the worker that owns their partition"
    loop_deadline = time.monotonic() + min(wait_s, 30.0)
    while time.monotonic() < loop_deadline:
        if await group_lag(settings, settings.sink_group, settings.metrics_topic) == 0:
            report.sink_note = "caught up before the series were dropped"
            return
        await asyncio.sleep(0.5)
    report.sink_note = ("behind (or not running): it drops the runner's points it has "
                        "not written yet")


def forget_runner(settings: Settings, runner: str, *, roster_file: Path | None,
                  wait_s: float = 60.0) -> ForgetReport:
    from deploy.stack import Mosquitto, StackError
    from team.cli import remove_runner_from_roster

    check_runner_id(runner)
    report = ForgetReport(runner)
    # the alert ids first: the sent-log knows alerts by id only
    alert_ids = alert_ids_in_influx(settings, runner) if settings.influx_api == "v1" \
        else set()
    alert_ids |= asyncio.run(_alert_ids_in_kafka(settings, runner))
    asyncio.run(forget_in_kafka(settings, runner, report, wait_s))
    report.series = drop_series(settings, runner)
    sent_log_path = settings.data_dir / "notifier" / "sent.sqlite"
    if sent_log_path.exists():
        sent_log = SentLog(sent_log_path)
        try:
            report.sent_log_rows = sent_log.forget(alert_ids, {Target.mqtt(runner).key})
        finally:
            sent_log.close()
    try:
        had = Mosquitto(settings).remove_runner(runner)
        report.credentials = "credentials revoked" if had else "had no credentials here"
    except StackError as exc:
        report.credentials = f"not revoked: {exc}"
    if roster_file is None:
        report.roster = "no roster file set"
    else:
        report.roster = remove_runner_from_roster(roster_file, runner)
    return report


# -------------------------------------------------------------------------------- export


def _iso(ms: object) -> str:
    return datetime.fromtimestamp(float(ms) / 1000, UTC).isoformat() \
        if isinstance(ms, (int, float)) else ""


def measurement_rows(reader: InfluxReader, measurement: str, runner: str
                     ) -> list[dict[str, Any]]:
    """Every point of the runner in one measurement, oldest first, in pages."""
    rows: list[dict[str, Any]] = []
    while True:
        page = reader.rows(f"SELECT * FROM \"{measurement}\" WHERE \"runner\" = '{runner}' "
                           f"ORDER BY time ASC LIMIT {EXPORT_PAGE_ROWS} OFFSET {len(rows)}")
        rows += page
        if len(page) < EXPORT_PAGE_ROWS:
            return rows


def _private_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        out.write(text)


def _write_table(out_dir: Path, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    columns = sorted({c for row in rows for c in row} - {"time"})
    ordered = [{"time": r.get("time"), "time_utc": _iso(r.get("time")),
                **{c: r.get(c) for c in columns}} for r in rows]
    _private_file(out_dir / f"{name}.json", json.dumps(ordered, indent=1, default=str))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["time", "time_utc", *columns])
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in ordered)
    _private_file(out_dir / f"{name}.csv", text.getvalue())
    return {"rows": len(rows), "json": f"{name}.json", "csv": f"{name}.csv"}


def state_summary(settings: Settings, runner: str) -> dict[str, Any] | None:
    """What the worker's table holds for the runner, read from its changelog."""
    view = ChangelogView(settings, runner)
    asyncio.run(view.refresh())
    live = view.live()
    if not live:
        return None
    key, seen, history = state_keys(runner)
    state = decode(live.get(key), live.get(seen), live.get(history), runner)
    sessions = sorted(state.sessions.values(), key=lambda s: s.start_t)
    return {
        "stored_keys": sorted(k.decode() for k in live),
        "first_day": state.first_day,
        "sessions": [{"session_id": s.session_id, "device": s.device,
                      "sport": s.sport.value, "start_utc": _iso(s.start_t * 1000),
                      "distance_m": round(s.distance_m, 1), "ended": s.ended}
                     for s in sessions],
        "pain_notes": len(state.pain_notes),
        "shoe_km": {k: round(v, 2) for k, v in state.shoe_km_archived.items()},
        "return_to_run_stage": state.return_to_run.stage
        if state.return_to_run is not None else None,
    }


def export_runner(settings: Settings, runner: str, out_dir: Path,
                  roster_file: Path | None) -> dict[str, Any]:
    """Write everything held about the runner under ``out_dir``; returns the index."""
    from team.roster import load_roster

    check_runner_id(runner)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir.chmod(0o700)  # health data: the operator's eyes only
    files: dict[str, Any] = {}
    with InfluxReader(settings) as reader:
        for measurement in MEASUREMENTS:
            files[measurement] = _write_table(
                out_dir, measurement, measurement_rows(reader, measurement, runner))
    entry = load_roster(roster_file).runner(runner) if roster_file is not None else None
    roster = entry.model_dump(mode="json") if entry is not None else None
    _private_file(out_dir / "roster.json", json.dumps(roster, indent=1))
    files["roster"] = {"rows": int(roster is not None), "json": "roster.json"}
    try:
        summary: dict[str, Any] | None = state_summary(settings, runner)
        note = "read from the worker table's changelog"
    except Exception as exc:  # the export of InfluxDB's data must not depend on Kafka
        summary, note = None, f"not readable: {type(exc).__name__}: {exc}"
    _private_file(out_dir / "state.json", json.dumps(summary, indent=1))
    files["state"] = {"rows": int(summary is not None), "json": "state.json", "note": note}
    index = {"runner": runner, "exported_at": datetime.now(UTC).isoformat(),
             "source": {"influxdb": reader.server, "database": settings.influx_db,
                        "roster": str(roster_file) if roster_file else None},
             "files": files,
             "note": "times are epoch milliseconds (time) and UTC (time_utc); "
                     "alerts are information, not a diagnosis"}
    _private_file(out_dir / "index.json", json.dumps(index, indent=1))
    return index


# ------------------------------------------------------------------------------ commands


@click.command("forget")
@click.argument("runner")
@click.option("--roster", "roster_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Roster file (default: STRIDEWATCH_ROSTER_FILE).")
@click.option("--wait", "wait_s", default=60.0, show_default=True,
              help="Seconds to wait for the worker to delete the runner's state.")
def forget_command(runner: str, roster_file: Path | None, wait_s: float) -> None:
    """Remove RUNNER's data everywhere and refuse what still arrives for them."""
    from base.settings import command_settings

    settings = command_settings()
    try:
        report = forget_runner(settings, runner,
                               roster_file=roster_file or settings.roster_file, wait_s=wait_s)
    except (PrivacyError, httpx.HTTPError) as exc:
        raise click.ClickException(f"{runner} not (fully) forgotten: {exc}; run forget "
                                   "again once it is fixed (each step is idempotent)"
                                   ) from None
    for line in report.lines():
        click.echo(line)


@click.command("export")
@click.argument("runner")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder to write to (default: export-RUNNER).")
@click.option("--roster", "roster_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Roster file (default: STRIDEWATCH_ROSTER_FILE).")
def export_command(runner: str, out_dir: Path | None, roster_file: Path | None) -> None:
    """Write everything held about RUNNER as JSON and CSV, with an index."""
    from base.settings import command_settings

    settings = command_settings()
    target = out_dir or Path(f"export-{runner}")
    try:
        index = export_runner(settings, runner, target, roster_file or settings.roster_file)
    except (PrivacyError, httpx.HTTPError) as exc:
        raise click.ClickException(f"export of {runner} failed: {exc}") from None
    for name, entry in index["files"].items():
        click.echo(f"{name:<14} {entry['rows']:>7} rows")
    click.echo(f"written to {target}/ (index.json lists every file)")
