"""Shared fixtures: the real local stack on free ports, and the pipeline's processes.

The stack is started once per test session by the project's own code
(``deploy.stack.LocalStack``), in a temporary data directory, so it never collides with a
stack a developer has running.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from base.settings import Settings
from deploy.stack import LocalStack

ROSTER = Path(__file__).parent / "integration" / "roster.yaml"
# the real FIT files the tests import live beside the project, in shared/data/fit
FIT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "fit"


def pytest_sessionstart(session: pytest.Session) -> None:
    # missing test data fails the run; it never silently skips the FIT tests
    if not FIT_DIR.is_dir():
        raise pytest.UsageError(f"the real FIT test files are missing: {FIT_DIR} "
                                "(the project expects ../shared/data/fit beside it)")


# the longest files (minutes each) go first, so two test workers finish close together
LONGEST_FIRST = ("test_bench.py", "test_faults.py", "test_outputs.py", "test_scaleout.py",
                 "test_restart_rocksdb.py", "test_services.py", "test_restart.py")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        integration = "integration" in item.path.parts
        if integration and name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + (0 if integration else 1)

    items.sort(key=rank)  # stable: the order inside a file stays


# every scenario's history ends on a Wednesday, whatever day the suite runs
HISTORY_ENDS_ON = 2  # date.weekday(): Monday is 0


def history_end(today: date | None = None) -> datetime:
    """The "today" a scenario's history is planned up to (``plan_history``): noon UTC of
    the latest Wednesday on or before ``today``. The runs fall on the same weekdays and the
    same rules fire on every day the suite runs; a week back at most, well inside the
    database's retention and the last-week queries."""
    day = today or datetime.now(UTC).date()
    day -= timedelta(days=(day.weekday() - HISTORY_ENDS_ON) % 7)
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.3,
             what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def new_stack_settings(tmp_path_factory: pytest.TempPathFactory, **overrides: Any
                       ) -> Settings:
    """Settings for a stack of its own: free ports, a fresh data folder.

    Tests that stop or restart a service use one of these (with ``LocalStack`` and
    ``Pipeline``) so they never disturb the shared session stack.
    """
    values: dict[str, Any] = {
        "data_dir": tmp_path_factory.mktemp("stack"), "mqtt_port": free_port(),
        "kafka_bootstrap": f"127.0.0.1:{free_port()}",
        "influx_url": f"http://127.0.0.1:{free_port()}", "influx_rpc_port": free_port(),
        # the Faust app id (the worker's group) follows the prefix
        "roster_file": ROSTER, "kafka_partitions": 4, "topic_prefix": "sw-test",
        "influx_flush_s": 0.3,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return new_stack_settings(tmp_path_factory)


@pytest.fixture(scope="session")
def local_stack(stack_settings: Settings) -> Iterator[LocalStack]:
    stack = LocalStack(stack_settings)
    stack.up(echo=lambda line: None)
    yield stack
    stack.down(echo=lambda line: None)


class AlertInbox:
    """Subscribes as a runner (their own credentials) and collects what arrives."""

    def __init__(self, settings: Settings, username: str, password: str, topic: str) -> None:
        from base.mqtt import connect_blocking, make_client

        self.messages: list[dict[str, Any]] = []
        self.granted: list[int] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client, props = make_client(settings, f"inbox-{username}-{time.monotonic_ns()}",
                                    username, password)

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, p: Any) -> None:
            c.subscribe(topic, qos=1)

        def on_subscribe(c: Any, userdata: Any, mid: Any, reasons: Any, p: Any) -> None:
            self.granted = [r.value for r in reasons]
            self._subscribed.set()

        def on_message(c: Any, userdata: Any, message: Any) -> None:
            with self._lock:
                self.messages.append(json.loads(message.payload))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        connect_blocking(settings, client, props)
        assert self._subscribed.wait(10), "subscription not acknowledged"
        self.client = client

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def read_topic_records(settings: Settings, topic: str) -> list[bytes]:
    from stridewatch.demo import read_topic

    async def collect() -> list[bytes]:
        return [r.value async for r in read_topic(settings, topic, idle_s=1.5)]

    return asyncio.run(collect())


def read_events(settings: Settings) -> list[tuple[int, Any]]:
    """Every event on the events topic (group or single records) with its partition."""
    from ingest.records import decode_record
    from stridewatch.demo import read_topic

    async def collect() -> list[tuple[int, Any]]:
        return [(r.partition, e) async for r in read_topic(settings, settings.events_topic,
                                                            idle_s=1.5)
                for e in decode_record(r.value)]

    return asyncio.run(collect())


def read_topic_with_partitions(settings: Settings, topic: str
                               ) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of every record of ``topic``."""
    from stridewatch.demo import read_topic

    async def collect() -> list[tuple[int, bytes, bytes]]:
        return [(r.partition, r.key or b"", r.value or b"")
                async for r in read_topic(settings, topic, idle_s=1.5)]

    return asyncio.run(collect())
