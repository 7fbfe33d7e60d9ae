"""Each process's operations endpoint: ``/healthz``, ``/readyz`` and ``/metrics``.

A process (bridge, worker, sink, notifier) started with ``ops_port`` > 0 serves on
``ops_host:ops_port``, from a daemon thread of its own (a small WSGI server), so it
works the same beside asyncio and beside Faust (whose own web server stays off):

- ``/healthz`` — alive: the process's event loop ran a callback the server scheduled
  on it within the last ``HEALTH_STALE_S`` seconds. 200 or 503. A hung loop (a
  blocking call, a deadlock) fails it; a Kafka outage does not.
- ``/readyz`` — doing its work: every readiness condition holds (200), else 503 with
  the condition that fails. The conditions: the process's Kafka answered the last
  poll (every ``POLL_S`` s); a consumer's committed lag, summed over its partitions, is
  at most ``ops_ready_max_lag`` records; and what each service adds (the bridge and
  the notifier: connected to MQTT; the worker: partitions assigned; the sink:
  InfluxDB answers ``/ping`` and the last write did not fail).
- ``/metrics`` — Prometheus text format (``prometheus-client``); every metric is in
  :data:`METRICS` and in the table of docs/operations.md.

Services count with :func:`inc` / :func:`set_gauge` and state their conditions with
:func:`condition`; without a server these only update memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    make_wsgi_app,
)

from base.settings import Settings

log = logging.getLogger("stridewatch.ops")

POLL_S = 5.0
POLL_TIMEOUT_S = 10.0
HEALTH_STALE_S = 20.0
# a Kafka poll older than this is no answer (the poll itself hangs)
POLL_STALE_S = 3 * POLL_S + POLL_TIMEOUT_S

Process = Literal["bridge", "worker", "sink", "notifier"]


@dataclass(frozen=True)
class MetricSpec:
    kind: Literal["counter", "gauge"]
    help: str
    labels: tuple[str, ...] = ()


# Every metric a process exports. Names follow Prometheus conventions: the process in
# the name, ``_total`` for counters. Label values stay few (reasons are classes, see
# :func:`reason_class`; no runner ids).
METRICS: dict[str, MetricSpec] = {
    # bridge
    "stridewatch_bridge_records_in_total": MetricSpec(
        "counter", "MQTT messages received from devices"),
    "stridewatch_bridge_records_out_total": MetricSpec(
        "counter", "Event records sent to Kafka (a record groups the messages of a window)"),
    "stridewatch_bridge_dead_letters_total": MetricSpec(
        "counter", "Messages sent to the dead-letter topic, by reason", ("reason",)),
    "stridewatch_bridge_mqtt_in_flight": MetricSpec(
        "gauge", "MQTT messages received and not acknowledged yet (waiting for Kafka)"),
    # worker
    "stridewatch_worker_records_in_total": MetricSpec(
        "counter", "Event records consumed from Kafka"),
    "stridewatch_worker_events_total": MetricSpec(
        "counter", "Events processed (duplicates included)"),
    "stridewatch_worker_records_out_total": MetricSpec(
        "counter", "Records sent, by topic (alerts, metrics, deadletters)", ("topic",)),
    "stridewatch_worker_dead_letters_total": MetricSpec(
        "counter", "Events or records dead-lettered by the stream, by reason", ("reason",)),
    "stridewatch_worker_consumer_rewinds_total": MetricSpec(
        "counter", "Times the consumer skipped records after a seek and read them again"),
    "stridewatch_worker_consumer_lag": MetricSpec(
        "gauge", "Records of the events topic not yet committed by the worker group",
        ("topic", "partition")),
    # sink
    "stridewatch_sink_records_in_total": MetricSpec(
        "counter", "Metric records consumed from Kafka"),
    "stridewatch_sink_points_written_total": MetricSpec(
        "counter", "Points InfluxDB accepted"),
    "stridewatch_sink_points_refused_total": MetricSpec(
        "counter", "Points InfluxDB refused as data (skipped, logged with the reason)"),
    "stridewatch_sink_influx_write_failures_total": MetricSpec(
        "counter", "Write attempts that failed on the server side (retried)"),
    "stridewatch_sink_consumer_lag": MetricSpec(
        "gauge", "Records of the metrics topic not yet committed by the sink group",
        ("topic", "partition")),
    # notifier
    "stridewatch_notifier_records_in_total": MetricSpec(
        "counter", "Alert records consumed from Kafka"),
    "stridewatch_notifier_alert_deliveries_total": MetricSpec(
        "counter", "Alert deliveries, by channel (mqtt or the Apprise scheme) and outcome "
        "(sent, duplicate, rate_limited, gave_up)", ("channel", "outcome")),
    "stridewatch_notifier_consumer_lag": MetricSpec(
        "gauge", "Records of the alerts topic not yet committed by the notifier group",
        ("topic", "partition")),
}

# reason classes for the dead-letter label: the start of the reason text -> the class
REASON_CLASSES: tuple[tuple[str, str], ...] = (
    ("payload is not json", "not_json"),
    ("payload is not utf-8", "not_utf8"),
    ("payload json is nested", "too_nested"),
    ("payload must be a json object", "not_object"),
    ("unknown message type", "unknown_topic"),
    ("topic ", "unknown_topic"),
    ("runner id", "bad_id"),
    ("device id", "bad_id"),
    ("invalid rsc", "bad_ble_rsc"),
    ("rsc readings", "bad_ble_rsc"),
    ("readings.", "bad_ble_rsc"),
    ("invalid ", "invalid_fields"),
    ("decoder failed", "decoder_failed"),
    ("record does not match contract", "bad_record"),
    ("processing failed", "processing_failed"),
    ("kafka refused the record", "too_large"),
    ("runner forgotten", "runner_forgotten"),
)


def reason_class(reason: str) -> str:
    """A dead letter's reason as one of a few label values (the full text is in the
    dead letter itself): ``payload is not JSON: Expecting value …`` -> ``not_json``."""
    text = reason.strip().lower()
    if text.startswith("payload is ") and "bytes; the limit" in text:
        return "too_large"
    for prefix, label in REASON_CLASSES:
        if text.startswith(prefix):
            return label
    return "other"


class _Metrics:
    """The process's registry; metrics are made when first used (or :meth:`declare`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            with contextlib.suppress(ValueError):  # not on every platform
                self.registry.register(collector)
        self._made: dict[str, Counter | Gauge] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Counter | Gauge:
        metric = self._made.get(name)
        if metric is not None:
            return metric
        spec = METRICS[name]  # an unknown name is a bug: fail loudly
        with self._lock:
            metric = self._made.get(name)
            if metric is None:
                if spec.kind == "counter":
                    metric = Counter(name.removesuffix("_total"), spec.help, spec.labels,
                                     registry=self.registry)
                else:
                    metric = Gauge(name, spec.help, spec.labels, registry=self.registry)
                self._made[name] = metric
        return metric

    def declare(self, process: str) -> None:
        """Make the process's unlabelled metrics now, so they read 0 before any event."""
        for name in METRICS:
            if name.startswith(f"stridewatch_{process}_"):
                self.get(name)


_metrics = _Metrics()


def inc(name: str, amount: float = 1, **labels: str) -> None:
    metric = _metrics.get(name)
    (metric.labels(**labels) if labels else metric).inc(amount)


def set_gauge(name: str, value: float, **labels: str) -> None:
    metric = _metrics.get(name)
    assert isinstance(metric, Gauge), name
    (metric.labels(**labels) if labels else metric).set(value)


def gauge_from(name: str, read: Callable[[], float]) -> None:
    """A gauge read at each scrape (e.g. the bridge's in-flight count)."""
    metric = _metrics.get(name)
    assert isinstance(metric, Gauge), name
    metric.set_function(read)


def registry() -> CollectorRegistry:
    return _metrics.registry


# --------------------------------------------------------------------------- health
class Health:
    """Liveness and readiness of this process (see the module docstring)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.beat_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conditions: dict[str, str | None] = {}
        self._checks: dict[str, Callable[[], str | None]] = {}
        self._lock = threading.Lock()

    # -- liveness ------------------------------------------------------------------
    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def ping_loop(self) -> None:
        """From the server's thread: ask the loop to note that it runs."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._beat)

    def _beat(self) -> None:
        self.beat_at = time.monotonic()

    def alive(self) -> tuple[bool, str]:
        if self.beat_at is None:
            if time.monotonic() - self.started < HEALTH_STALE_S:
                return True, "starting"
            return False, "the event loop has not run since the process started"
        age = time.monotonic() - self.beat_at
        if age > HEALTH_STALE_S:
            return False, f"the event loop has not run for {age:.0f} s"
        return True, "ok"

    # -- readiness -----------------------------------------------------------------
    def condition(self, name: str, problem: str | None) -> None:
        """Set a readiness condition: None when it holds, else what is wrong."""
        with self._lock:
            self._conditions[name] = problem

    def check(self, name: str, read: Callable[[], str | None]) -> None:
        """A condition read at each /readyz (None: holds)."""
        self._checks[name] = read

    def ready(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            found: dict[str, str | None] = dict(self._conditions)
        for name, read in self._checks.items():
            try:
                found[name] = read()
            except Exception as exc:  # a check that breaks says so, it does not crash
                found[name] = f"check failed: {type(exc).__name__}"
        alive, why = self.alive()
        found["loop"] = None if alive else why
        shown = {name: problem or "ok" for name, problem in sorted(found.items())}
        return all(p is None for p in found.values()), shown


_health = Health()


def health() -> Health:
    return _health


def condition(name: str, problem: str | None) -> None:
    _health.condition(name, problem)


# --------------------------------------------------------------------------- polls
@dataclass(frozen=True)
class Consumed:
    """The consumer group and topic a process reads (its lag is polled)."""

    group: str
    topic: str
    lag_metric: str


async def poll_kafka(settings: Settings, consumed: Consumed | None) -> str | None:
    """One poll: Kafka answers, and a consumer is caught up. None if all is well."""
    from base.kafka import group_lag_by_partition, high_watermarks

    if consumed is None:
        await high_watermarks(settings, settings.events_topic)
        return None
    lags = await group_lag_by_partition(settings, consumed.group, consumed.topic)
    for partition, lag in lags.items():
        set_gauge(consumed.lag_metric, lag, topic=consumed.topic, partition=str(partition))
    total = sum(lags.values())
    if total > settings.ops_ready_max_lag:
        return (f"lag {total} records on {consumed.topic} (ready at "
                f"{settings.ops_ready_max_lag} or less)")
    return None


def ping_url(url: str, timeout_s: float = 3.0) -> str | None:
    """None if ``url`` answers 2xx (InfluxDB's /ping), else what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            code = int(answer.status)
    except Exception as exc:  # refused, timeout, HTTP error: all mean "not reachable"
        return f"{type(exc).__name__}"
    return None if 200 <= code < 300 else f"HTTP {code}"


class _Poller(threading.Thread):
    """Polls Kafka (and optionally a URL) every ``POLL_S`` s in a loop of its own."""

    def __init__(self, settings: Settings, consumed: Consumed | None,
                 ping: str | None) -> None:
        super().__init__(name="ops-poll", daemon=True)
        self.settings = settings
        self.consumed = consumed
        self.ping = ping
        self.stopping = threading.Event()
        self.kafka_ok_at: float | None = None
        self.kafka_problem: str | None = "not polled yet"

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        pinger = asyncio.create_task(self._ping_loop())
        try:
            await self._poll()
        finally:
            pinger.cancel()

    async def _ping_loop(self) -> None:
        while True:
            _health.ping_loop()
            await asyncio.sleep(1.0)

    async def _poll(self) -> None:
        while not self.stopping.is_set():
            try:
                problem = await asyncio.wait_for(poll_kafka(self.settings, self.consumed),
                                                 POLL_TIMEOUT_S)
            except Exception as exc:  # Kafka away or the poll hung
                problem = f"Kafka not answering ({type(exc).__name__})"
            else:
                self.kafka_ok_at = time.monotonic()
            self.kafka_problem = problem
            if self.ping is not None:
                bad = await asyncio.to_thread(ping_url, self.ping)
                _health.condition("influxdb", None if bad is None else
                                  f"InfluxDB /ping: {bad}")
            await asyncio.to_thread(self.stopping.wait, POLL_S)

    def problem(self) -> str | None:
        if self.kafka_ok_at is None or time.monotonic() - self.kafka_ok_at > POLL_STALE_S:
            return self.kafka_problem or "Kafka not answering"
        return self.kafka_problem


# --------------------------------------------------------------------------- server
class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would flood the log


def _app(metrics_app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            if path == "/healthz":
                ok, why = _health.alive()
                body: dict[str, Any] = {"alive": ok, "detail": why}
            else:
                ok, checks = _health.ready()
                body = {"ready": ok, "checks": checks}
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/healthz, /readyz or /metrics\n"]

    return app


class OpsServer:
    def __init__(self, settings: Settings, process: Process, consumed: Consumed | None,
                 ping: str | None) -> None:
        _metrics.declare(process)
        self.poller = _Poller(settings, consumed, ping)
        _health.check("kafka", self.poller.problem)
        self.httpd = make_server(settings.ops_host, settings.ops_port,
                                 _app(make_wsgi_app(_metrics.registry)),
                                 server_class=_Server, handler_class=_QuietHandler)
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ops-http",
                                        daemon=True)

    def start(self) -> OpsServer:
        self._thread.start()
        self.poller.start()
        return self

    def stop(self) -> None:
        self.poller.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# what each process waits for before it is ready (the service clears each condition)
STARTING: dict[str, dict[str, str]] = {
    "bridge": {"mqtt": "not connected to MQTT yet"},
    "worker": {"assigned": "no partitions assigned yet"},
    "sink": {"consuming": "not consuming yet"},
    "notifier": {"mqtt": "not connected to MQTT yet"},
}


def serve(settings: Settings, process: Process, consumed: Consumed | None = None,
          ping: str | None = None) -> OpsServer | None:
    """Start the endpoint if ``ops_port`` is set; None (and nothing served) when 0."""
    for name, problem in STARTING[process].items():
        _health.condition(name, problem)
    if settings.ops_port == 0:
        return None
    server = OpsServer(settings, process, consumed, ping).start()
    log.info("serving /healthz, /readyz and /metrics on http://%s:%d", settings.ops_host,
             server.port)
    return server
