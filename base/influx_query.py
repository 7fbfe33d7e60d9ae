"""Reading InfluxDB: InfluxQL over ``/query``, whichever server the writer writes to.

The dashboards, the coach report and the demo's summary read through this, never
through a writer. ``influx_api`` (the writer's setting) picks how to authenticate:

- ``v1`` (InfluxDB 1.x): database ``influx_db``, user and password when set;
- ``v2`` (InfluxDB 2.x/3.x): the v1 compatibility endpoint with ``Authorization: Token
  …``; ``influx_db`` must be mapped to the bucket by a DBRP mapping
  (``influx v1 dbrp create --db <influx_db> --rp autogen --bucket-id …``), the same
  mapping the Grafana InfluxQL data source needs (docs/influxdb.md).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from base.settings import Settings


def server_name(url: str) -> str:
    """``host:port`` of a URL, for messages: never the credentials a URL may carry."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


class InfluxReader:
    """``query(q)`` returns the JSON answer of an InfluxQL statement."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.settings = settings
        self.server = f"InfluxDB at {server_name(settings.influx_url)}"
        auth: tuple[str, str] | None = None
        headers: dict[str, str] = {}
        if settings.influx_api == "v2":
            headers["Authorization"] = f"Token {settings.influx_token.get_secret_value()}"
        elif settings.influx_username:
            auth = (settings.influx_username, settings.influx_password.get_secret_value())
        self.client = httpx.Client(base_url=settings.influx_url, auth=auth, headers=headers,
                                   timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))

    def query(self, q: str, epoch: str = "ms") -> dict[str, Any]:
        response = self.client.post("/query", params={"db": self.settings.influx_db,
                                                      "q": q, "epoch": epoch})
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def rows(self, q: str) -> list[dict[str, Any]]:
        """The answer's rows as dicts, each series' tags merged in."""
        out: list[dict[str, Any]] = []
        for result in self.query(q).get("results", []):
            for series in result.get("series", []):
                tags = series.get("tags") or {}
                out += [{**tags, **dict(zip(series["columns"], values, strict=True))}
                        for values in series["values"]]
        return out

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> InfluxReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
