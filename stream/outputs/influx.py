"""InfluxDB writers behind one interface: the v1 ``/write`` API and the v2 write API.

Both send gzip-compressed line protocol with millisecond precision. A point's identity is
measurement, tags and time, so writing a batch again (after a crash, an outage or a
replay) overwrites the same points, never adds any.

A failed write raises :class:`WriteError`, which says what the caller can do about it:

- ``retryable``: the server or the network is away (connection refused, timeout, 5xx,
  429), or it refuses us rather than the data (401/403 credentials, 404 missing database
  or bucket). The points are fine; write them again later. Nothing is dropped for these.
- not retryable, ``partial``: the server refused some points of the batch and wrote the
  rest (InfluxDB reports "partial write"): the batch is done.
- not retryable, ``too_large`` (413): send the batch in smaller pieces.
- not retryable otherwise (400/422): the server refused the data itself (a field type
  conflict, a bad line). Only the refused points are skipped (see ``sink.py``).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from base.influx_query import InfluxReader, server_name
from base.settings import Settings
from stream.metrics import FieldValue, MetricPoint

log = logging.getLogger("stridewatch.influx")

RETENTION_POLICY = "stridewatch"
GZIP_LEVEL = 5


class WriteError(RuntimeError):
    """A write that did not land; see the module docstring for what each kind means."""

    def __init__(self, message: str, retryable: bool, *, status: int | None = None,
                 partial: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.partial = partial
        self.retry_after = retry_after

    @property
    def too_large(self) -> bool:
        return self.status == 413


class PointWriter(Protocol):
    def prepare(self) -> None:
        """Get the server ready (create the v1 database); raise a retryable WriteError
        while it is not reachable."""

    def write(self, points: Sequence[MetricPoint]) -> None:
        """Write all points or raise WriteError."""

    def close(self) -> None: ...


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare for write APIs, the backoff covers it


def error_for_status(status: int, body: str, server: str,
                     retry_after: str | None = None) -> WriteError:
    """Classify an HTTP answer to a write (see the module docstring)."""
    text = " ".join(body.split())[:300]
    if status in (400, 422):
        return WriteError(f"{server} refused the points ({status}): {text}", retryable=False,
                          status=status, partial="partial write" in text)
    if status == 413:
        return WriteError(f"{server}: batch too large (413)", retryable=False, status=413)
    hint = ""
    if status in (401, 403):
        hint = (" (check STRIDEWATCH_INFLUX_USERNAME/_PASSWORD for v1 or "
                "STRIDEWATCH_INFLUX_TOKEN for v2; points are held until it works)")
    elif status == 404:
        hint = " (database or bucket missing; points are held until it exists)"
    return WriteError(f"{server} answered {status}{hint}: {text}", retryable=True,
                      status=status, retry_after=_retry_after(retry_after))


def _escape_key(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def to_line_protocol(point: MetricPoint) -> str:
    """InfluxDB line protocol with millisecond precision."""
    measurement = point.measurement.replace(",", r"\,").replace(" ", r"\ ")
    tags = "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in point.tags if v != "")
    fields = ",".join(f"{_escape_key(k)}={_field(v)}" for k, v in point.fields)
    return f"{measurement}{tags} {fields} {point.time_ms}"


def line_protocol(points: Sequence[MetricPoint]) -> bytes:
    return "\n".join(to_line_protocol(p) for p in points).encode()


class InfluxV1Writer:
    """InfluxDB 1.x: POST /write?db=…&precision=ms, gzip-compressed line protocol."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.settings = settings
        self.server = f"InfluxDB at {server_name(settings.influx_url)}"
        auth = None
        if settings.influx_username:
            auth = (settings.influx_username, settings.influx_password.get_secret_value())
        self.client = httpx.Client(base_url=settings.influx_url, auth=auth,
                                   timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))
        # statements (CREATE DATABASE, DROP …) go over /query like any reading
        self.statements = InfluxReader(settings, timeout)

    def query(self, q: str, epoch: str = "ms") -> dict[str, Any]:
        return self.statements.query(q, epoch)

    def prepare(self) -> None:
        """Create the database with its retention policy if it is missing (idempotent)."""
        db = self.settings.influx_db
        statement = (f'CREATE DATABASE "{db}" WITH DURATION {self.settings.influx_retention} '
                     f'NAME "{RETENTION_POLICY}"')
        try:
            data = self.query(statement)
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if status in (401, 403):
                # a write-only account may not create databases: the operator did
                log.warning("%s does not let this account create database '%s' (%d); "
                            "assuming it exists", self.server, db, status)
                return
            raise WriteError(f"{self.server}: CREATE DATABASE answered {status}: "
                             f"{exc.response.text[:200]}", retryable=True,
                             status=status) from None
        except httpx.HTTPError as exc:
            raise WriteError(f"{self.server} unreachable: {type(exc).__name__}",
                             retryable=True) from None
        errors = [r["error"] for r in data.get("results", []) if "error" in r]
        if errors and "conflicts with an existing policy" not in errors[0]:
            raise WriteError(f"{self.server}: cannot create database '{db}': {errors[0]}",
                             retryable=True)
        # a conflict means the database exists with the operator's own policy: keep it

    def write(self, points: Sequence[MetricPoint]) -> None:
        if not points:
            return
        try:
            response = self.client.post(
                "/write", params={"db": self.settings.influx_db, "precision": "ms"},
                content=gzip.compress(line_protocol(points), compresslevel=GZIP_LEVEL),
                headers={"Content-Encoding": "gzip",
                         "Content-Type": "text/plain; charset=utf-8"})
        except httpx.HTTPError as exc:
            raise WriteError(f"{self.server} unreachable: {type(exc).__name__}",
                             retryable=True) from None
        if response.is_success:
            return
        if response.status_code == 404 and "database not found" in response.text:
            # dropped under us, or a fresh server: create it; the retry writes the points
            try:
                self.prepare()
            except WriteError as exc:
                log.warning("%s", exc)
        raise error_for_status(response.status_code, response.text, self.server,
                               response.headers.get("Retry-After"))

    def close(self) -> None:
        self.client.close()
        self.statements.close()


class InfluxV2Writer:
    """InfluxDB 2.x / 3.x (or any /api/v2/write server) through ``influxdb-client``.

    Synchronous writes, gzip on, the client's own retries off: ``sink.write_with_retry``
    retries with backoff and decides when offsets may be committed.
    """

    def __init__(self, settings: Settings, timeout_ms: int = 10_000) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.settings = settings
        self.server = f"InfluxDB v2 API at {server_name(settings.influx_url)}"
        self.client = InfluxDBClient(url=settings.influx_url,
                                     token=settings.influx_token.get_secret_value(),
                                     org=settings.influx_org, enable_gzip=True,
                                     timeout=timeout_ms)
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def prepare(self) -> None:
        """Buckets belong to the operator on v2 servers: only say whether it answers."""
        if self.client.ping():
            log.info("%s answers; writing to bucket '%s' (org '%s')", self.server,
                     self.settings.influx_bucket, self.settings.influx_org)
        else:
            log.warning("%s does not answer /ping yet; writes will be retried", self.server)

    def write(self, points: Sequence[MetricPoint]) -> None:
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.domain.write_precision import WritePrecision
        from urllib3.exceptions import HTTPError

        if not points:
            return
        records = [to_line_protocol(p) for p in points]
        try:
            self.api.write(bucket=self.settings.influx_bucket, org=self.settings.influx_org,
                           record=records,
                           write_precision=WritePrecision.MS)  # type: ignore[arg-type]
        except InfluxDBError as exc:
            status = int(getattr(exc, "status", None)
                         or getattr(exc.response, "status", None) or 0)
            if not status:
                raise WriteError(f"{self.server} unreachable: {exc.message}",
                                 retryable=True) from None
            message = exc.message
            body = message.decode(errors="replace") if isinstance(message, bytes) \
                else str(message)
            raise error_for_status(status, body, self.server, exc.retry_after) from None
        except (HTTPError, OSError) as exc:
            raise WriteError(f"{self.server} unreachable: {type(exc).__name__}",
                             retryable=True) from None

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


def make_writer(settings: Settings) -> PointWriter:
    return InfluxV1Writer(settings) if settings.influx_api == "v1" else InfluxV2Writer(settings)
