"""Simulated histories built from "today" give the same verdict on every weekday.

The integration tests and the demo build their history from the current date and compare
the pipeline with the pure core; what they expect of the pure core (a steady runner fires
nothing, a load spike fires the load ratio, the demo team's alerts) is checked here for
seven consecutive end dates, so no weekday can turn CI red.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.decoders import InboundMessage
from ingest.routing import decode_message
from ingest.simulator import SimulatedRunner, demo_team, plan_history, plan_live
from rules.catalogue import load_catalogue
from stream.runner import RunnerState, process_event
from team.roster import load_roster
from tests.conftest import ROSTER

DEMO_ROSTER = Path(__file__).parents[2] / "deploy" / "local" / "demo-roster.yaml"
# Monday 30 November to Sunday 6 December 2026, at the hours the tests and demo run
END_DATES = [datetime(2026, 11, 30, hour, 17, tzinfo=UTC) + timedelta(days=d)
             for d in range(7) for hour in (9, 23)]


def fired(roster: Path, runner: str, messages: Iterable[tuple[str, bytes]]) -> set[str]:
    profile = load_roster(roster).profile(runner, load_catalogue())
    state = RunnerState(runner=runner)
    out: set[str] = set()
    for topic, payload in messages:
        event = decode_message(InboundMessage(topic, payload, time.time()))
        state, step = process_event(state, event, profile)
        out |= {f"{a.rule}/{a.severity}" for a in step.alerts}
    return out


@pytest.mark.parametrize("end", END_DATES, ids=lambda d: d.strftime("%a-%H"))
def test_steady_runner_fires_nothing_and_a_spike_fires_the_load_ratio(end: datetime) -> None:
    # the runners of test_pipeline_e2e and test_dashboards
    for runner, seed in (("it-steady", 12), ("dash-steady", 31)):
        history = plan_history(SimulatedRunner(runner, seed=seed), end, 6)
        assert fired(ROSTER, runner, history) == set(), runner
    for runner, seed in (("it-spike", 11), ("dash-spike", 32)):
        history = plan_history(SimulatedRunner(runner, spike=2.2, seed=seed), end, 6)
        assert "load_ratio/notice" in fired(ROSTER, runner, history), runner


# what `stridewatch run` shows for each demo runner, whatever the day
DEMO_RULES = {
    "ana": set(),
    "ben": {"load_ratio", "session_spike", "weekly_increase"},
    "cleo": {"gct_balance", "lr_symmetry", "compensation"},
    "dev": {"cadence_drop"},
    "eli": {"pain_after_run"},
}


@pytest.mark.parametrize("end", END_DATES, ids=lambda d: d.strftime("%a-%H"))
def test_demo_team_alerts_do_not_depend_on_the_day(end: datetime) -> None:
    for r in demo_team():
        messages = [*plan_history(r, end, 6), *plan_live(r, end.timestamp(), 6)]
        rules = {name.split("/")[0] for name in fired(DEMO_ROSTER, r.runner, messages)}
        assert rules == DEMO_RULES[r.runner], r.runner


@pytest.mark.parametrize("end", END_DATES, ids=lambda d: d.strftime("%a-%H"))
def test_restart_and_outputs_histories_fire_what_their_tests_expect(end: datetime) -> None:
    # test_restart: six weeks with a spike must fire load alerts
    restart = plan_history(SimulatedRunner("it-restart", spike=2.0, seed=21), end, 6)
    assert fired(ROSTER, "it-restart", restart), "it-restart"
    # test_outputs: two weeks, then a live run with an imbalance and a sore Achilles
    idem = SimulatedRunner("it-idem", imbalance_pts=3.0, pain_after=7, seed=4)
    messages = [*plan_history(idem, end, 2), *plan_live(idem, end.timestamp() - 3 * 3600, 3)]
    assert fired(ROSTER, "it-idem", messages) >= {"pain_after_run/warn"}
    for i, name in enumerate(("out-a", "out-b", "out-c")):
        # two weeks of steady history alone fire nothing for the outage runners
        history = plan_history(SimulatedRunner(name, seed=50 + i), end, 2)
        assert fired(ROSTER, name, history) == set(), name
