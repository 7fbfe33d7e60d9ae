"""A worker killed mid-stream and restarted keeps every runner's state exactly.

This catches the local broker's end-offset defect: if the state changelog were produced
in multi-record batches, recovery would stop short of the newest updates, the replayed
history would count again, and the load ratio and alerts below would change.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from base.kafka import group_lag
from ingest.simulator import SimulatedRunner, plan_history, plan_run
from rules.catalogue import load_catalogue
from stream.load import load_ratio
from stream.runner import day_loads, day_totals
from team.roster import load_roster
from tests.conftest import ROSTER, history_end, new_stack_settings, read_events, wait_for
from tests.integration.conftest import Pipeline, own_pipeline
from tests.integration.test_pipeline_e2e import expected_from_pure_core, pain_report, publish

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A stack of its own: this test kills the worker, and recovery time grows with the
    changelog, which the memory broker never compacts."""
    with own_pipeline(new_stack_settings(tmp_path_factory)) as pipe:
        yield pipe


def test_state_survives_a_killed_worker_and_replays_count_once(pipeline: Pipeline) -> None:
    runner = "it-restart"
    password = pipeline.runner(runner)
    inbox = pipeline.inbox(runner, password)
    simulated = SimulatedRunner(runner, spike=2.0, seed=21)
    history = list(plan_history(simulated, history_end(), 6))
    # end on sample batches (a watch that never said "end"): the newest state changes the
    # day's distance, so losing it after the restart shows in the numbers below
    assert history[-1][0].endswith("/session")
    history = history[:-1]
    state, fired = expected_from_pure_core(runner, history, to_runner_only=True)
    profile = load_roster(ROSTER).profile(runner, load_catalogue())
    totals = day_totals(state, profile)
    loads = day_loads(totals, profile)
    last_day = max(loads)
    # after the restart: one more short run on that day, from another device
    evening = datetime(last_day.year, last_day.month, last_day.day, 18, tzinfo=profile.tz)
    extra = list(plan_run(simulated, evening.timestamp(), 1500.0, "phone", 10.0, 60,
                          imbalance=False, rng=random.Random(5)))
    after, _ = expected_from_pure_core(runner, history + extra)
    expected_km = day_totals(after, profile)[last_day].distance_km
    assert expected_km == pytest.approx(totals[last_day].distance_km + 1.5, abs=0.05)
    expected_ratio = load_ratio(loads, last_day, first_day=min(loads)).ratio
    assert expected_ratio is not None and fired, "the scenario must fire load alerts"
    midnight_ms = datetime(last_day.year, last_day.month, last_day.day,
                           tzinfo=profile.tz).timestamp() * 1000

    def last_day_in_influx(field: str) -> float | None:
        rows = pipeline.influx(f"SELECT {field} FROM daily_load WHERE runner = '{runner}' "
                               f"AND time = {int(midnight_ms)}ms")
        return rows[0][field] if rows else None

    def ratio_in_influx() -> float | None:
        return last_day_in_influx("acwr")

    worker = pipeline.components["worker"]
    try:
        # a backlog processed at full speed: the state changelog is written in bursts
        worker.stop()
        publish(pipeline, history)
        # the bridge groups messages into fewer records: count the events they hold
        wait_for(lambda: len(read_events(pipeline.settings)) >= len(history), timeout=60,
                 what="the history waiting in Kafka")
        assert asyncio.run(group_lag(pipeline.settings, pipeline.settings.worker_group,
                                        pipeline.settings.events_topic)) > 0
        worker.start()
        wait_for(lambda: ratio_in_influx() == pytest.approx(expected_ratio, abs=1e-4),
                 timeout=120, what="the history processed")
        # the inbox gets one message per cause (``fired``: those the runner is sent)
        wait_for(lambda: len(inbox.received()) == len(fired), timeout=30,
                 what=f"{len(fired)} messages before the restart")
        time.sleep(2.5)  # past the commit interval: the source offsets are committed

        worker.stop(hard=True)  # SIGKILL: no clean shutdown, no final flush
        worker.start()
        # the recovered state must hold every run: the day's total is history + extra
        publish(pipeline, extra)
        wait_for(lambda: last_day_in_influx("distance_km") is not None
                 and last_day_in_influx("distance_km") != pytest.approx(
                     totals[last_day].distance_km, abs=1e-4),
                 timeout=150, what="the restarted worker processing the extra run")
        time.sleep(2)
        assert last_day_in_influx("distance_km") == pytest.approx(expected_km, abs=1e-3)
        publish(pipeline, history)  # a full re-sync of the same runs
        publish(pipeline, [pain_report(runner, 7, seq=7001)])
        wait_for(lambda: any(a["rule"] == "pain_after_run" for a in inbox.received()),
                 timeout=150, what="the restarted worker processing new data")
        time.sleep(3)
        rules = sorted(f"{a['rule']}/{a['severity']}" for a in inbox.received())
    finally:
        inbox.close()
    assert rules == sorted([*fired, "pain_after_run/warn"])
    assert last_day_in_influx("distance_km") == pytest.approx(expected_km, abs=1e-3)
    ended = sum(1 for session in after.sessions.values() if session.ended)
    wait_for(lambda: pipeline.influx(
        f"SELECT count(distance_km) FROM session WHERE runner = '{runner}' AND ended = true"
    )[0]["count"] == ended, timeout=30, what=f"{ended} ended sessions in InfluxDB")
