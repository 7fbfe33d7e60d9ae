"""The operations endpoint and JSON logs without the stack: dead-letter reason classes
from the real decoders, the metrics table in the docs, JSON log lines, liveness of a
running and of a hung event loop, readiness while Kafka cannot be reached, and the
ports ``start`` gives. The four real processes are checked in
tests/integration/test_observability.py."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from base import ops
from base.json_logs import JsonFormatter, runner_extra
from base.settings import Settings
from ingest.decoders import InboundMessage
from ingest.records import to_event
from stridewatch import services
from tests.conftest import free_port

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def reason_of(topic: str, payload: bytes) -> str:
    reason = to_event(InboundMessage(topic, payload, 1_700_000_000.0))
    assert isinstance(reason, str), reason
    return reason


@pytest.mark.parametrize(("topic", "payload", "expected"), [
    ("runners/ana/watch/samples", b"not json", "not_json"),
    ("runners/ana/watch/samples", b"\xff\xfe", "not_utf8"),
    ("runners/ana/watch/samples", b"[1, 2]", "not_object"),
    ("runners/ana/pain", b'{"seq": 1, "t": 1700000000, "score": 2, "where": "achilles", '
     b'"when": "after", "extra": 1}', "invalid_fields"),
    ("runners/ana/watch/nonsense", b"{}", "unknown_topic"),
    ("runners/Ana!/watch/samples", b"{}", "bad_id"),
])
def test_dead_letter_reasons_of_the_real_decoders_fall_in_few_classes(
        topic: str, payload: bytes, expected: str) -> None:
    reason = reason_of(topic, payload)
    assert ops.reason_class(reason) == expected, reason


def test_reason_classes_of_the_stream_and_unknown_reasons() -> None:
    assert ops.reason_class("processing failed: KeyError: 'x'") == "processing_failed"
    assert ops.reason_class("record does not match contract v1: bad") == "bad_record"
    assert ops.reason_class("payload is 300000 bytes; the limit is 262144") == "too_large"
    assert ops.reason_class("something nobody wrote yet") == "other"


def test_every_metric_is_in_the_docs_table_and_nothing_else_is() -> None:
    text = DOCS.read_text()
    documented = set(re.findall(r"^\| `(stridewatch_[a-z_]+)` \|", text, re.MULTILINE))
    assert documented == set(ops.METRICS)
    for name, spec in ops.METRICS.items():
        assert name.startswith(("stridewatch_bridge_", "stridewatch_worker_",
                                "stridewatch_sink_", "stridewatch_notifier_")), name
        assert name.endswith("_total") == (spec.kind == "counter"), name
        assert "runner" not in spec.labels  # one series per runner would not scale


def test_json_log_line_has_time_level_logger_message_runner_and_traceback() -> None:
    logger = logging.getLogger("stridewatch.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord("stridewatch.test", logging.ERROR, __file__, 1,
                                   "alert %s for %s", ("pain_after_run", "ana"),
                                   sys.exc_info(), extra=runner_extra("ana"))
    record.created = 1_764_633_600.25  # 2025-12-02T00:00:00.250Z
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["time"] == "2025-12-02T00:00:00.250Z"
    assert (entry["level"], entry["logger"], entry["message"], entry["runner"]) == (
        "ERROR", "stridewatch.test", "alert pain_after_run for ana", "ana")
    assert "ValueError: boom" in entry["exception"]
    plain = logger.makeRecord("x", logging.INFO, __file__, 1, "no runner", (), None)
    assert "runner" not in json.loads(JsonFormatter().format(plain))


@pytest.fixture
def fresh_health(monkeypatch: pytest.MonkeyPatch) -> Iterator[ops.Health]:
    health = ops.Health()
    monkeypatch.setattr(ops, "_health", health)
    yield health


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_endpoint_alive_while_the_loop_runs_not_ready_without_kafka_dead_when_loop_hangs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_health: ops.Health,
        loop_thread: asyncio.AbstractEventLoop) -> None:
    # nothing listens on Kafka's port: the poll fails as it would during an outage
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                        ops_port=free_port())
    fresh_health.watch_loop(loop_thread)
    server = ops.serve(settings, "sink", ops.Consumed(
        settings.sink_group, settings.metrics_topic, "stridewatch_sink_consumer_lag"))
    assert server is not None
    base = f"http://127.0.0.1:{server.port}"
    try:
        before = ops.registry().get_sample_value("stridewatch_sink_points_refused_total")
        ops.inc("stridewatch_sink_points_refused_total", 2)
        samples = {s.name: s.value for f in text_string_to_metric_families(
            httpx.get(f"{base}/metrics").text) for s in f.samples}
        assert samples["stridewatch_sink_points_refused_total"] == (before or 0) + 2
        assert "stridewatch_sink_points_written_total" in samples  # declared, 0 or more
        assert "stridewatch_bridge_records_in_total" not in samples  # another process's

        def beat_seen() -> bool:
            return fresh_health.beat_at is not None

        deadline = time.monotonic() + 10
        while not beat_seen() and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = httpx.get(f"{base}/healthz")
        assert alive.status_code == 200 and alive.json() == {"alive": True, "detail": "ok"}

        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["consuming"] == "not consuming yet"
        ops.condition("consuming", None)
        deadline = time.monotonic() + 30
        while "Kafka" not in httpx.get(f"{base}/readyz").json()["checks"]["kafka"]:
            assert time.monotonic() < deadline, "the failed Kafka poll was not reported"
            time.sleep(0.2)
        assert httpx.get(f"{base}/readyz").status_code == 503

        # a loop blocked in a call (no callback runs) is not alive
        monkeypatch.setattr(ops, "HEALTH_STALE_S", 0.5)
        loop_thread.call_soon_threadsafe(time.sleep, 2.0)
        time.sleep(1.2)
        hung = httpx.get(f"{base}/healthz")
        assert hung.status_code == 503 and "has not run for" in hung.json()["detail"]
        # the loop runs again and answers the next ping (a busy machine may take a while)
        deadline = time.monotonic() + 15
        while httpx.get(f"{base}/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the loop ran again but stayed not alive"
            monkeypatch.setattr(ops, "HEALTH_STALE_S", 2.0)
            time.sleep(0.2)
        assert httpx.get(f"{base}/other").status_code == 404
    finally:
        server.stop()


def test_no_port_no_server(tmp_path: Path, fresh_health: ops.Health) -> None:
    assert ops.serve(Settings(data_dir=tmp_path), "bridge") is None
    # the conditions still say what the process waits for
    assert fresh_health.ready()[1]["mqtt"] == "not connected to MQTT yet"


def test_start_gives_each_process_its_own_port(tmp_path: Path) -> None:
    free = {services.ops_port(Settings(data_dir=tmp_path), n) for n in services.NAMES}
    assert len(free) == len(services.NAMES) and 0 not in free
    based = [services.ops_port(Settings(data_dir=tmp_path, ops_port=9400), n)
             for n in services.NAMES]
    assert based == [9400, 9401, 9402, 9403]


def test_status_shows_the_endpoint(tmp_path: Path) -> None:
    status = services.ProcessStatus("sink", "running", 4242, 12.0, tmp_path / "sink.log",
                                    {"written": 3}, ops_port=40123)
    assert ("        ops: http://127.0.0.1:40123/healthz, /readyz, /metrics"
            in services.status_lines(status))
    stopped = services.ProcessStatus("sink", "stopped", None, None, tmp_path / "sink.log",
                                     ops_port=40123)
    assert not any("ops:" in line for line in services.status_lines(stopped))
