"""The InfluxDB reader's requests, checked on the wire against a real HTTP listener.

InfluxDB 1.x answers the reader in the integration tests (``Pipeline.influx``, the
report, the demo summary); no InfluxDB 2.x runs here, so the token path is checked up to
the socket: method, path, parameters and the Authorization header.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from base.influx_query import InfluxReader
from base.settings import Settings

ANSWER = {"results": [{"statement_id": 0, "series": [
    {"name": "alert", "tags": {"runner": "ana"}, "columns": ["time", "count"],
     "values": [[0, 3]]}]}]}


@pytest.fixture
def listener() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            url = urlsplit(self.path)
            seen.append({"path": url.path, "params": parse_qs(url.query),
                         "authorization": self.headers.get("Authorization")})
            body = json.dumps(ANSWER).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_v2_reads_through_the_compatibility_endpoint_with_the_token(
        listener: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    url, seen = listener
    settings = Settings(data_dir=tmp_path, influx_url=url, influx_api="v2",
                        influx_token="s3cret-token", influx_db="club")
    with InfluxReader(settings) as reader:
        rows = reader.rows('SELECT count("message") FROM "alert" GROUP BY "runner"')
    assert rows == [{"runner": "ana", "time": 0, "count": 3}]
    [request] = seen
    assert request["path"] == "/query"
    assert request["params"]["db"] == ["club"] and request["params"]["epoch"] == ["ms"]
    assert request["authorization"] == "Token s3cret-token"


def test_v1_reads_with_user_and_password(listener: tuple[str, list[dict[str, Any]]],
                                         tmp_path: Path) -> None:
    url, seen = listener
    settings = Settings(data_dir=tmp_path, influx_url=url, influx_api="v1",
                        influx_username="coach", influx_password="pw", influx_db="club")
    with InfluxReader(settings) as reader:
        reader.query("SHOW MEASUREMENTS")
    [request] = seen
    assert request["authorization"] == "Basic " + base64.b64encode(b"coach:pw").decode()
    assert request["params"]["q"] == ["SHOW MEASUREMENTS"]
