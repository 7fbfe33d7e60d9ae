"""The pipeline's own processes (bridge, worker, sink, notifier) against the real stack."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from base.settings import Settings
from deploy.stack import LocalStack
from stridewatch.processes import Component
from tests.conftest import AlertInbox

pytestmark = pytest.mark.integration


class Pipeline:
    def __init__(self, settings: Settings, stack: LocalStack) -> None:
        self.settings = settings
        self.stack = stack
        self.components = {name: Component(settings, name)
                           for name in ("bridge", "worker", "sink", "notify")}

    def start(self) -> None:
        for component in self.components.values():
            component.start()
        self.components["bridge"].wait_for_log("subscribed to", timeout=60)

    def stop(self) -> None:
        for component in self.components.values():
            component.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.log_tail(40)}"
                         for c in self.components.values())

    def runner(self, runner: str) -> str:
        """Credentials for a runner (created once, then reused); returns the password."""
        known = self.stack.mosquitto.runner_password(runner)
        return known if known is not None else self.stack.mosquitto.add_runner(runner)

    def inbox(self, runner: str, password: str) -> AlertInbox:
        return AlertInbox(self.settings, runner, password, f"runners/{runner}/alerts")

    def influx(self, query: str) -> list[dict[str, Any]]:
        """Rows of an InfluxQL query, as dicts (with tags merged in), read the way the
        report and the demo read them."""
        from base.influx_query import InfluxReader

        client = InfluxReader(self.settings)
        try:
            data = client.query(query)
        finally:
            client.close()
        rows = []
        for result in data.get("results", []):
            assert "error" not in result, result["error"]
            for series in result.get("series", []):
                for values in series["values"]:
                    rows.append({**(series.get("tags") or {}),
                                 **dict(zip(series["columns"], values, strict=True))})
        return rows


@contextlib.contextmanager
def own_pipeline(settings: Settings) -> Iterator[Pipeline]:
    """A stack and pipeline of their own, for tests that stop or restart services."""
    stack = LocalStack(settings)
    stack.up(echo=lambda line: None)
    pipe = Pipeline(settings, stack)
    try:
        pipe.start()
        yield pipe
    finally:
        pipe.stop()
        stack.down(echo=lambda line: None)


@pytest.fixture(scope="session")
def pipeline(local_stack: LocalStack, stack_settings: Settings) -> Iterator[Pipeline]:
    pipe = Pipeline(stack_settings, local_stack)
    pipe.start()
    yield pipe
    pipe.stop()


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "pipeline" in request.fixturenames:
        print(request.getfixturevalue("pipeline").logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
