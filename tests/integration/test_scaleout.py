"""Several workers in one consumer group, one added and one removed mid-run.

Counts of ``run_window`` points and alerts must equal the pure core's over the same
messages: nothing lost, nothing counted twice, no alert sent twice. Every runner's state
ends equal to the pure core's, and its changelog records sit on the runner's partition.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from ingest.contract import RunnerEvent
from ingest.publisher import RunnerPublisher
from ingest.records import partition_for
from ingest.simulator import SimulatedRunner, plan_live
from rules.alerts import Alert
from stream.metrics import decode_points
from stream.state_codec import decode, history_key, seen_key
from stridewatch.processes import Component
from tests.conftest import (
    new_stack_settings,
    read_events,
    read_topic_records,
    read_topic_with_partitions,
    wait_for,
)
from tests.integration.conftest import Pipeline, own_pipeline
from tests.integration.test_pipeline_e2e import expected_from_pure_core

pytestmark = pytest.mark.integration



def two_runners_per_partition(partitions: int = 4) -> list[str]:
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    i = 0
    while any(len(c) < 2 for c in chosen.values()):
        name = f"so-{i}"
        if len(chosen[partition_for(name, partitions)]) < 2:
            chosen[partition_for(name, partitions)].append(name)
        i += 1
    return sorted(n for c in chosen.values() for n in c)


RUNNERS = [SimulatedRunner(name, imbalance_pts=3.5 if i % 3 == 0 else 0.0,
                           pain_after=7 if i % 4 == 1 else None, seed=60 + i)
           for i, name in enumerate(two_runners_per_partition())]
LIVE_MINUTES = 3.0
ASSIGNED = re.compile(r"assigned partitions \[([0-9, ]*)\]")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    settings = new_stack_settings(tmp_path_factory, topic_prefix="sw-scale")
    assert settings.app_id == "sw-scale"  # the group carries the deployment's prefix
    with own_pipeline(settings) as pipe:
        yield pipe


def interleaved(plans: list[list[tuple[str, bytes]]]) -> list[tuple[str, bytes]]:
    """Messages of all runners as they would arrive live: one of each in turn."""
    out = []
    for i in range(max(len(p) for p in plans)):
        out += [p[i] for p in plans if i < len(p)]
    return out


def assigned(worker: Component) -> set[int] | None:
    """The partitions the worker's latest assignment gave it."""
    found = ASSIGNED.findall(worker.log_file.read_text(errors="replace")) \
        if worker.log_file.exists() else []
    return {int(p) for p in found[-1].split(",") if p.strip()} if found else None


def shared(*workers: Component) -> bool:
    """Each of ``workers`` owns some partitions, and together all of them, once each."""
    owned = [assigned(w) for w in workers]
    every = [p for o in owned if o for p in o]
    return all(owned) and sorted(every) == list(range(workers[0].settings.kafka_partitions))


def test_workers_added_and_removed_mid_run_lose_and_repeat_nothing(
        pipeline: Pipeline) -> None:
    settings = pipeline.settings
    partitions = settings.kafka_partitions
    assert len({partition_for(r.runner, partitions) for r in RUNNERS}) == partitions
    # a run that ended an hour ago: nothing here depends on the day of the week
    end_t = time.time() - 3600
    plans = {r.runner: list(plan_live(r, end_t, LIVE_MINUTES)) for r in RUNNERS}
    for r in RUNNERS:
        pipeline.runner(r.runner)
    expected = {runner: expected_from_pure_core(runner, messages)
                for runner, messages in plans.items()}
    expected_windows = {runner: sum(1 for t, _ in m if t.endswith("/samples"))
                        for runner, m in plans.items()}
    expected_alerts = Counter(a for _, fired in expected.values() for a in fired)
    assert expected_alerts, "the scenario fires alerts"
    ordered = interleaved(list(plans.values()))
    first, second, third = (ordered[: len(ordered) // 3],
                            ordered[len(ordered) // 3: 2 * len(ordered) // 3],
                            ordered[2 * len(ordered) // 3:])

    worker_1 = pipeline.components["worker"]
    worker_2 = Component(settings, "worker", "--instance", "w2")
    worker_3 = Component(settings, "worker", "--instance", "w3")
    # a worker makes its own data folder (it used to crash on a missing one)
    assert not (settings.data_dir / "faust" / "w2").exists()
    try:
        wait_for(lambda: assigned(worker_1) == set(range(partitions)), timeout=60,
                 what="worker 1 owning every partition")
        assert (f"consuming {settings.events_topic} as group {settings.worker_group}"
                in worker_1.log_file.read_text())
        with RunnerPublisher(settings) as publisher:
            publisher.publish_all(first)
            publisher.flush()
            # a second worker joins while the first is busy with the first third
            worker_2.start()
            wait_for(lambda: shared(worker_1, worker_2), timeout=90,
                     what="two workers sharing the partitions")
            assert (settings.data_dir / "faust" / "w2").is_dir()
            publisher.publish_all(second)
            publisher.flush()
            worker_3.start()
            wait_for(lambda: shared(worker_1, worker_2, worker_3), timeout=90,
                     what="three workers sharing the partitions")
            # the first worker leaves (SIGTERM) mid-run; the others take its partitions
            worker_1.stop()
            assert worker_1.proc is not None and worker_1.proc.returncode is not None
            publisher.publish_all(third)
            publisher.flush()
        wait_for(lambda: shared(worker_2, worker_3), timeout=90,
                 what="the two remaining workers owning every partition")

        def windows_in_influx() -> dict[str, int]:
            rows = pipeline.influx("SELECT count(samples) FROM run_window "
                                   "WHERE runner =~ /^so-/ GROUP BY runner")
            return {r["runner"]: r["count"] for r in rows}

        wait_for(lambda: windows_in_influx() == expected_windows, timeout=180,
                 what="every window point in InfluxDB")

        def alerts_on_topic() -> list[Alert]:
            return [a for a in (Alert.from_bytes(v) for v in read_topic_records(
                settings, settings.alerts_topic)) if a.runner.startswith("so-")]

        wait_for(lambda: len(alerts_on_topic()) >= sum(expected_alerts.values()),
                 timeout=60, what="every alert on the alerts topic")
        time.sleep(3)  # anything sent twice would follow right behind
        for worker in (worker_2, worker_3):
            assert worker.alive(), worker.log_tail()
    finally:
        worker_2.stop()
        worker_3.stop()

    alerts = alerts_on_topic()
    assert Counter(f"{a.rule}/{a.severity}" for a in alerts) == expected_alerts
    assert len({a.alert_id for a in alerts}) == len(alerts), "an alert was sent twice"
    # nothing counted twice: each window point was produced exactly once
    windows: Counter[str] = Counter()
    for value in read_topic_records(settings, settings.metrics_topic):
        for point in decode_points(value):
            runner = dict(point.tags)["runner"]
            if point.measurement == "run_window" and runner.startswith("so-"):
                windows[runner] += 1
    assert dict(windows) == expected_windows
    # every event reached Kafka once (the bridge does not duplicate without a reconnect)
    events = [e for _, e in read_events(settings)
              if isinstance(e, RunnerEvent) and e.runner.startswith("so-")]
    assert len(events) == len(ordered)
    # in fewer, fuller records: the bridge groups each window's events per partition
    assert len(read_topic_records(settings, settings.events_topic)) < len(ordered) / 4
    # the last state of each runner equals the pure core's, and sits on its partition
    last_state: dict[bytes, bytes] = {}
    for partition, key, value in read_topic_with_partitions(settings,
                                                            settings.state_changelog_topic):
        runner = key.split(b"#")[0].decode()
        if runner.startswith("so-"):
            assert partition == partition_for(runner, partitions), key
            last_state[key] = value
    assert {k.split(b"#")[0].decode() for k in last_state} == set(plans)
    for runner in plans:
        key = runner.encode()
        stored = decode(last_state.get(key), last_state.get(seen_key(key)),
                        last_state.get(history_key(key)), runner)
        assert stored == expected[runner][0], runner
