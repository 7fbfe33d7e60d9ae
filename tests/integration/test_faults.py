"""Faults on the real stack, proven with counts (sent = stored, each alert sent once).

- SIGTERM to every process while a team publishes: each flushes, commits, leaves its
  group, logs that it stopped and exits 0; after the restart every event is in Kafka and
  nothing is lost or doubled (points, loads, alerts in the inbox).
- A rolling restart of two workers under load: nothing lost and nothing doubled (each
  alert the pure core fires sent once, each point produced and stored as often as the
  pure core's).
- The notifier's push target down for two minutes (refused connections, then errors,
  and a notifier restart in between): MQTT delivery goes on, the push alerts are kept,
  retried, and delivered once each when the target returns.

One stack for the module; each test uses runners of its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from base.settings import Settings
from ingest.contract import RunnerEvent
from ingest.publisher import RunnerPublisher
from ingest.simulator import SimulatedRunner, plan_history, plan_live
from rules.alerts import Alert
from stream.metrics import MetricPoint, decode_points
from stridewatch.processes import Component
from tests.conftest import (
    ROSTER,
    history_end,
    new_stack_settings,
    read_events,
    read_topic_records,
    wait_for,
)
from tests.integration.conftest import Pipeline, own_pipeline
from tests.integration.test_outputs import COUNTED, identity, profile_for, publish_paced, pure_core
from tests.integration.test_pipeline_e2e import pain_report
from tests.integration.test_scaleout import interleaved, shared

pytestmark = pytest.mark.integration

STOPPED = {"bridge": "bridge stridewatch-bridge-1 stopped:", "worker": "worker sw-faults stopped:",
           "sink": "sink stopped:", "notify": "notifier stopped after handling"}
OUTAGE_S = 120.0  # the push target is away this long: refused for half, errors for half
DOWN_RUNNERS = ("tn-a", "tn-b", "tn-c")


# --------------------------------------------------------------------------- push target


class PushTarget:
    """A phone push service on a fixed port that can be up, refuse connections (closed)
    or answer 503; records every request it answered."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.lock = threading.Lock()
        self.ok: list[dict[str, Any]] = []  # delivered: path and body
        self.refused_at: list[float] = []  # when a 503 was answered (monotonic)
        self.failing = False
        self.server: ThreadingHTTPServer | None = None
        self.up()

    def up(self) -> None:
        import json

        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with target.lock:
                    if target.failing:
                        target.refused_at.append(time.monotonic())
                        status = 503
                    else:
                        target.ok.append({"path": self.path, "body": json.loads(raw)})
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Closed: connections are refused."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def delivered(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.ok if p["path"] == path]


def module_roster(port: int) -> str:
    """The suite's roster, plus a team whose runners and coach have push targets here."""
    data = yaml.safe_load(ROSTER.read_text())
    base = f"json://127.0.0.1:{port}"
    data["teams"].append({"id": "down", "name": "Down Testers", "tz": "UTC", "coaches": [
        {"id": "coachd", "name": "Coach D", "notify": [f"{base}/coach"]}]})
    data["runners"] += [{"id": r, "name": r, "team": "down", "notify": [f"{base}/runner/{r}"]}
                        for r in DOWN_RUNNERS]
    return yaml.safe_dump(data)


@pytest.fixture(scope="module")
def target() -> Iterator[PushTarget]:
    server = PushTarget()
    yield server
    server.down()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, target: PushTarget
             ) -> Iterator[Pipeline]:
    roster = tmp_path_factory.mktemp("roster") / "roster.yaml"
    roster.write_text(module_roster(target.port))
    # a shorter retry schedule than the default (5 s doubling to 5 min) makes two minutes
    # of outage span many tries, and shows the return within seconds
    settings = new_stack_settings(tmp_path_factory, topic_prefix="sw-faults",
                                  roster_file=roster, notifier_retry_first_s=2.0,
                                  notifier_retry_max_s=10.0)
    with own_pipeline(settings) as pipe:
        yield pipe


# --------------------------------------------------------------------------- helpers


def sigterm_all(components: list[Component]) -> dict[str, int | None]:
    """SIGTERM to every one at once; their exit codes."""
    for component in components:
        assert component.proc is not None and component.alive(), component.log_tail()
        os.killpg(component.proc.pid, signal.SIGTERM)
    codes: dict[str, int | None] = {}
    for component in components:
        assert component.proc is not None
        codes[component.name] = component.proc.wait(60)
    return codes


def windows_on_topic(settings: Settings, prefix: str) -> dict[tuple[str, str], int]:
    """run_window points on the metrics topic, per runner: each record processed once?"""
    produced: Counter[tuple[str, str]] = Counter()
    for value in read_topic_records(settings, settings.metrics_topic):
        for point in decode_points(value):
            runner = dict(point.tags)["runner"]
            if runner.startswith(prefix) and point.measurement == "run_window":
                produced[(runner, "run_window")] += 1
    return dict(produced)


def events_on_topic(settings: Settings, prefix: str) -> dict[str, int]:
    return dict(Counter(e.runner for _, e in read_events(settings)
                        if isinstance(e, RunnerEvent) and e.runner.startswith(prefix)))


def log_text(component: Component) -> str:
    return Path(component.log_file).read_text(errors="replace")


def expected_points(runners: dict[str, list[tuple[str, bytes]]]
                    ) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...], int],
                                        MetricPoint]]:
    """Per runner, the distinct points the pure core writes (the last version of each)."""
    out = {}
    for runner, messages in runners.items():
        _, _, points = pure_core(profile_for(ROSTER, runner), messages)
        out[runner] = {identity(p): p for p in points}
    return out


def influx_counts(pipeline: Pipeline, prefix: str) -> dict[tuple[str, str], int]:
    """(runner, measurement) → points stored."""
    counts = {}
    for measurement, field in COUNTED.items():
        for row in pipeline.influx(f'SELECT count("{field}") FROM "{measurement}" '
                                   f"WHERE runner =~ /^{prefix}/ GROUP BY runner"):
            counts[(row["runner"], measurement)] = row["count"]
    return counts


def counts_of(points: dict[str, dict[Any, MetricPoint]]) -> dict[tuple[str, str], int]:
    counts: Counter[tuple[str, str]] = Counter()
    for runner, mine in points.items():
        for key in mine:
            counts[(runner, key[0])] += 1
    return dict(counts)


def daily_loads(pipeline: Pipeline, runner: str) -> dict[int, float]:
    return {r["time"]: r["load"] for r in pipeline.influx(
        f"SELECT load FROM daily_load WHERE runner = '{runner}'")}


def expected_loads(points: dict[Any, MetricPoint]) -> dict[int, float]:
    return {p.time_ms: float(dict(p.fields)["load"]) for key, p in points.items()
            if key[0] == "daily_load"}


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_to_every_process_mid_stream_loses_and_doubles_nothing(
        pipeline: Pipeline) -> None:
    started = time.monotonic()
    team = [SimulatedRunner("tf-spike", spike=2.0, seed=21),
            SimulatedRunner("tf-steady", seed=22),
            SimulatedRunner("tf-tilt", imbalance_pts=3.5, pain_after=7, seed=23),
            SimulatedRunner("tf-pain", pain_after=8, seed=24)]
    today = history_end()
    plans = {r.runner: [*plan_history(r, today, 6), *plan_live(r, time.time() - 3600, 1.5)]
             for r in team}
    expected = expected_points(plans)
    to_phone = {runner: sorted(f"{a.rule}/{a.severity}" for a in
                               pure_core(profile_for(ROSTER, runner), msgs)[1] if a.to_runner)
                for runner, msgs in plans.items()}
    assert sum(len(v) for v in to_phone.values()) >= 3, to_phone
    inboxes = {r.runner: pipeline.inbox(r.runner, pipeline.runner(r.runner)) for r in team}
    messages = interleaved(list(plans.values()))
    components = list(pipeline.components.values())
    try:
        with RunnerPublisher(pipeline.settings) as publisher:
            # the team keeps publishing while every process is stopped and started again
            third = len(messages) // 3
            publish_paced(publisher, messages[:third], until=time.monotonic() + 12)
            stopping = threading.Thread(target=publish_paced, args=(
                publisher, messages[third:], time.monotonic() + 30))
            stopping.start()
            time.sleep(3)
            codes = sigterm_all(components)
            stopped_s = time.monotonic()
            assert codes == dict.fromkeys(codes, 0), {c.name: c.log_tail(15)
                                                      for c in components}
            for component in components:
                assert STOPPED[component.name] in log_text(component), component.log_tail(15)
            time.sleep(3)  # devices publish on; Mosquitto queues for the bridge's session
            pipeline.start()
            restarted_s = time.monotonic() - stopped_s
            stopping.join()

        def stored() -> dict[tuple[str, str], int]:
            return influx_counts(pipeline, "tf-")

        want = counts_of(expected)

        def settled() -> bool:
            return stored() == want and all(
                len(inboxes[r].received()) >= len(to_phone[r]) for r in plans)

        # the assertions below say what differs if this times out
        with contextlib.suppress(AssertionError):
            wait_for(settled, timeout=150, interval=5.0, what="the pipeline settled")
        time.sleep(3)  # anything sent twice would arrive right behind
        received = {r: inboxes[r].received() for r in plans}
    finally:
        for inbox in inboxes.values():
            inbox.close()
    # every event reached Kafka
    assert {r: n for r, n in events_on_topic(pipeline.settings, "tf-").items()} == {
        r: len(m) for r, m in plans.items()}
    # nothing doubled: no point stored, no alert received more often than the pure core's
    got_points = stored()
    bridge = log_text(pipeline.components["bridge"])
    summary = re.findall(r"bridge \S+ stopped: (.*)", bridge)[0]
    print(f"SIGTERM test: {sum(got_points.values())} of {sum(want.values())} points stored; "
          f"{len(messages)} messages; stopped and restarted in {restarted_s:.1f} s; bridge "
          f"at SIGTERM: {summary}; {time.monotonic() - started:.0f} s in all")
    # nothing lost or doubled: every point the pure core gives, stored once
    wrong = {k: (got_points.get(k, 0), n) for k in want.keys() | got_points.keys()
             if got_points.get(k, 0) != (n := want.get(k, 0))}
    assert not wrong, f"points stored (got, the pure core's): {wrong}"
    for runner in plans:
        got = received[runner]
        assert len({a["alert_id"] for a in got}) == len(got), runner
        assert sorted(f"{a['rule']}/{a['severity']}" for a in got) == to_phone[runner], runner
        # each day's load the pure core's (a doubled or lost run would show)
        loads, want_loads = daily_loads(pipeline, runner), expected_loads(expected[runner])
        assert loads.keys() == want_loads.keys(), runner
        assert all(abs(v - want_loads[t]) < 1e-6 for t, v in loads.items()), runner


# --------------------------------------------------------------------------- rolling restart


def test_rolling_restart_of_two_workers_under_load_loses_and_repeats_nothing(
        pipeline: Pipeline) -> None:
    started = time.monotonic()
    settings = pipeline.settings
    team = [SimulatedRunner(f"tr-{i}", imbalance_pts=3.5 if i % 3 == 0 else 0.0,
                            pain_after=7 if i % 2 else None, seed=80 + i) for i in range(8)]
    plans = {r.runner: list(plan_live(r, time.time() - 3600, 2.0)) for r in team}
    for r in team:
        pipeline.runner(r.runner)
    expected = expected_points(plans)
    fired = Counter(f"{a.rule}/{a.severity}" for runner, msgs in plans.items()
                    for a in pure_core(profile_for(ROSTER, runner), msgs)[1])
    assert fired
    messages = interleaved(list(plans.values()))
    worker_1 = pipeline.components["worker"]
    worker_2 = Component(settings, "worker", "--instance", "w2")
    restarts: list[float] = []
    try:
        worker_2.start()
        wait_for(lambda: shared(worker_1, worker_2), timeout=90,
                 what="two workers sharing the partitions")
        with RunnerPublisher(settings) as publisher:
            flowing = threading.Thread(target=publish_paced, args=(
                publisher, messages, time.monotonic() + 45))
            flowing.start()
            for worker in (worker_1, worker_2):
                time.sleep(6)
                before = log_text(worker).count("assigned partitions")
                at = time.monotonic()
                worker.stop()  # SIGTERM; the other takes its partitions meanwhile
                assert worker.proc is not None and worker.proc.returncode == 0, \
                    worker.log_tail(20)
                worker.start()

                def again(w: Component = worker, b: int = before) -> bool:
                    return log_text(w).count("assigned partitions") > b and shared(
                        worker_1, worker_2)

                wait_for(again, timeout=90, what="both workers sharing the partitions again")
                restarts.append(time.monotonic() - at)
            flowing.join()

        want = counts_of(expected)
        windows_want = {k: v for k, v in want.items() if k[1] == "run_window"}

        def settled() -> bool:
            # every window point on the metrics topic, and InfluxDB holds each of them
            now = windows_on_topic(settings, "tr-")
            stored = influx_counts(pipeline, "tr-")
            return now == windows_want and all(stored.get(k, 0) == n
                                               for k, n in now.items())

        # the assertions below say what differs if this times out
        with contextlib.suppress(AssertionError):
            wait_for(settled, timeout=150, interval=5.0,
                     what="the workers and the sink caught up")

        def alerts_on_topic() -> list[Alert]:
            return [a for a in (Alert.from_bytes(v) for v in read_topic_records(
                settings, settings.alerts_topic)) if a.runner.startswith("tr-")]

        time.sleep(3)
        assert worker_1.alive() and worker_2.alive()
    finally:
        worker_2.stop()
    # every event reached Kafka once
    assert events_on_topic(settings, "tr-") == {r: len(m) for r, m in plans.items()}
    # nothing doubled: no alert twice, none the pure core does not fire, no point
    # produced more often than the pure core produces it, none stored twice
    alerts = alerts_on_topic()
    assert len({a.alert_id for a in alerts}) == len(alerts), "an alert was sent twice"
    assert not Counter(f"{a.rule}/{a.severity}" for a in alerts) - fired
    produced = windows_on_topic(settings, "tr-")
    assert all(produced.get(k, 0) <= n for k, n in windows_want.items()), produced
    stored = influx_counts(pipeline, "tr-")
    assert all(stored.get(k, 0) <= n for k, n in want.items()), stored
    # nothing lost: every window point and every alert the pure core gives
    missing = {k: n - produced.get(k, 0) for k, n in windows_want.items()
               if produced.get(k, 0) != n}
    print(f"rolling restart: run_window points produced {sum(produced.values())} of "
          f"{sum(windows_want.values())}; alerts {len(alerts)} of {sum(fired.values())}")
    assert not missing, f"window points missing after the rolling restart: {missing}"
    assert Counter(f"{a.rule}/{a.severity}" for a in alerts) == fired
    print(f"rolling restart: {len(messages)} messages, {sum(fired.values())} alerts; "
          f"each restart until shared again {', '.join(f'{s:.1f} s' for s in restarts)}; "
          f"{time.monotonic() - started:.0f} s in all")


# --------------------------------------------------------------------------- push target down


def test_push_target_down_two_minutes_alerts_kept_and_sent_once_when_back(
        pipeline: Pipeline, target: PushTarget) -> None:
    started = time.monotonic()
    notify = pipeline.components["notify"]
    inboxes = {r: pipeline.inbox(r, pipeline.runner(r)) for r in DOWN_RUNNERS}
    alert_ids: dict[str, str] = {}
    try:
        target.down()  # refused connections for the first half
        down_at = time.monotonic()
        with RunnerPublisher(pipeline.settings) as publisher:
            for i, runner in enumerate(DOWN_RUNNERS):
                publisher.publish_all([pain_report(runner, 7, seq=500 + i)])
                publisher.flush()
                # the phone's MQTT inbox gets it while the push target is away
                got = wait_for(inboxes[runner].received, timeout=60,
                               what=f"{runner}'s alert over MQTT during the outage")
                alert_ids[runner] = got[0]["alert_id"]
                if i == 1:
                    # a notifier restart meanwhile: the kept alerts survive it
                    notify.stop()
                    assert notify.proc is not None and notify.proc.returncode == 0
                    notify.start()
                    wait_for(lambda: log_text(notify).count("sending alerts from") == 2,
                             timeout=60, what="the notifier started again")
                time.sleep(15)
        assert time.monotonic() - down_at < OUTAGE_S / 2 + 10
        time.sleep(max(0.0, down_at + OUTAGE_S / 2 - time.monotonic()))
        with target.lock:
            target.failing = True  # then errors (503) for the second half
        target.up()
        time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        outage_s = time.monotonic() - down_at
        with target.lock:
            target.failing = False
            errors = list(target.refused_at)
        assert target.ok == [], "nothing reached the target while it was away"

        def all_delivered() -> bool:
            return all(target.delivered(f"/runner/{r}") for r in DOWN_RUNNERS) and len(
                target.delivered("/coach")) >= len(DOWN_RUNNERS)

        wait_for(all_delivered, timeout=60, what="every kept alert once the target is back")
        back_s = time.monotonic() - down_at - outage_s
        time.sleep(5)  # anything sent twice would arrive right behind
        received = {r: inboxes[r].received() for r in DOWN_RUNNERS}
    finally:
        for inbox in inboxes.values():
            inbox.close()
    assert outage_s >= OUTAGE_S
    # tried all through the outage: errors were answered in its last quarter too
    assert any(t > down_at + OUTAGE_S * 0.75 for t in errors), errors
    for runner in DOWN_RUNNERS:
        assert [a["alert_id"] for a in received[runner]] == [alert_ids[runner]]
        posts = target.delivered(f"/runner/{runner}")
        assert len(posts) == 1, posts
        assert f"{runner}:" in posts[0]["body"]["title"]
        assert "information, not a diagnosis" in posts[0]["body"]["message"]
    coach = sorted(p["body"]["title"].split(": ")[0] for p in target.delivered("/coach"))
    assert coach == sorted(f"StrideWatch [warn] {r}" for r in DOWN_RUNNERS), coach
    text = log_text(notify)
    assert "gave up sending alert" not in text
    assert text.count("failed again") >= 5
    for runner in DOWN_RUNNERS:
        assert text.count(f"sent alert {alert_ids[runner]} ") >= 2  # push, coach (+ MQTT)
    print(f"push target down {outage_s:.0f} s ({len(errors)} requests answered 503); every "
          f"kept alert delivered {back_s:.1f} s after it returned; "
          f"{time.monotonic() - started:.0f} s in all")
