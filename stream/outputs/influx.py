"""InfluxDB writers behind one interface: the v1 ``/write`` API and the v2 write API.

Points are written with millisecond precision; a point's identity is measurement, tags
and time, so writing a batch again (after a crash or a replay) overwrites, never adds.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from stream.metrics import MetricPoint, to_line_protocol
from stridewatch.settings import Settings

log = logging.getLogger("stridewatch.influx")


class WriteError(RuntimeError):
    """A write that did not land; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class PointWriter(Protocol):
    def prepare(self) -> None: ...

    def write(self, points: Sequence[MetricPoint]) -> None: ...

    def close(self) -> None: ...


class InfluxV1Writer:
    """InfluxDB 1.x: POST /write?db=…&precision=ms, gzip-compressed line protocol."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.settings = settings
        auth = None
        if settings.influx_username:
            auth = (settings.influx_username, settings.influx_password.get_secret_value())
        self.client = httpx.Client(base_url=settings.influx_url, timeout=timeout, auth=auth)

    def query(self, q: str, epoch: str = "ms") -> dict[str, Any]:
        response = self.client.post("/query", params={"db": self.settings.influx_db,
                                                      "q": q, "epoch": epoch})
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def prepare(self) -> None:
        db = self.settings.influx_db
        try:
            self.query(f'CREATE DATABASE "{db}" WITH DURATION '
                       f'{self.settings.influx_retention} NAME "stridewatch"')
        except httpx.HTTPStatusError:
            # database exists with another default policy: leave the operator's choice
            self.query(f'CREATE DATABASE "{db}"')
        except httpx.HTTPError as exc:
            raise WriteError(f"InfluxDB at {self.settings.influx_url} unreachable: "
                             f"{type(exc).__name__}", retryable=True) from None

    def write(self, points: Sequence[MetricPoint]) -> None:
        body = "\n".join(to_line_protocol(p) for p in points).encode()
        try:
            response = self.client.post(
                "/write", params={"db": self.settings.influx_db, "precision": "ms"},
                content=gzip.compress(body, compresslevel=5),
                headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})
        except httpx.HTTPError as exc:
            raise WriteError(f"InfluxDB unreachable: {type(exc).__name__}", True) from None
        if response.status_code == 204:
            return
        retryable = response.status_code >= 500 or response.status_code == 429
        if response.status_code == 404:
            # database dropped under us: create it again and retry
            retryable = True
            self.prepare()
        raise WriteError(f"InfluxDB answered {response.status_code}: {response.text[:300]}",
                         retryable)

    def close(self) -> None:
        self.client.close()


class InfluxV2Writer:
    """InfluxDB 2.x / 3.x (or any /api/v2/write server) through ``influxdb-client``."""

    def __init__(self, settings: Settings) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.settings = settings
        self.client = InfluxDBClient(url=settings.influx_url,
                                     token=settings.influx_token.get_secret_value(),
                                     org=settings.influx_org, enable_gzip=True, timeout=10_000)
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def prepare(self) -> None:
        """Buckets are created by the operator on v2 servers; nothing to do here."""

    def write(self, points: Sequence[MetricPoint]) -> None:
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.domain.write_precision import WritePrecision
        from urllib3.exceptions import HTTPError

        records = [to_line_protocol(p) for p in points]
        try:
            self.api.write(bucket=self.settings.influx_bucket, org=self.settings.influx_org,
                           record=records,
                           write_precision=WritePrecision.MS)  # type: ignore[arg-type]
        except InfluxDBError as exc:
            status = getattr(exc.response, "status", None) or 0
            raise WriteError(f"InfluxDB v2 write failed ({status}): {exc.message}",
                             retryable=status == 0 or status >= 500 or status == 429
                             ) from None
        except (HTTPError, OSError) as exc:
            raise WriteError(f"InfluxDB v2 unreachable: {type(exc).__name__}", True) from None

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


def make_writer(settings: Settings) -> PointWriter:
    return InfluxV1Writer(settings) if settings.influx_api == "v1" else InfluxV2Writer(settings)
