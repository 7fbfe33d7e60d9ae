"""The history view's incremental figures equal the from-scratch definitions.

``stream.days.HistoryView`` adds the current session to sums built without it; the
definitions it must agree with are ``stream.load.load_ratio`` and ``week_figures`` over
``day_totals`` (every session, every archived day).
"""

from __future__ import annotations

import random
import time
from datetime import date, timedelta

import pytest

from ingest.decoders import InboundMessage
from ingest.routing import decode_message
from rules.catalogue import load_catalogue
from stream.days import HistoryView, day_loads, day_totals, local_day, week_figures
from stream.load import load_ratio
from stream.runner import RunnerState, process_event
from tests.scenarios import Message, Scenario, roster_for, scenarios

SCENARIOS = [s for s in scenarios("days") if s.rule in (
    "", "load_ratio", "weekly_increase", "hill_load", "fast_running_load")]


def _state(runner: str, messages: list[Message]) -> RunnerState:
    profile = roster_for(SCENARIOS).profile(runner, load_catalogue())
    state = RunnerState(runner=runner)
    for topic, payload in messages:
        state, _ = process_event(state, decode_message(
            InboundMessage(topic, payload, time.time())), profile)
    return state


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.runner for s in SCENARIOS])
@pytest.mark.parametrize("order", ["in-order", "shuffled"])
def test_view_figures_equal_the_definitions(scenario: Scenario, order: str) -> None:
    runner, messages = scenario.runner, list(scenario.messages)
    if order == "shuffled":
        random.Random(7).shuffle(messages)
    profile = roster_for(SCENARIOS).profile(runner, load_catalogue())
    state = _state(runner, messages)
    assert state.current is not None and state.first_day is not None
    current = state.sessions[state.current]
    view = HistoryView.build(state, profile)
    totals = day_totals(state, profile)
    loads = day_loads(totals, profile)
    first = date.fromisoformat(state.first_day)
    latest = local_day(state.latest_t or 0.0, profile)
    days = [latest - timedelta(days=i) for i in range(20, -1, -1)]
    for figures in view.figures(days, current, profile):
        day = figures.day
        want = load_ratio(loads, day, first_day=first)
        assert figures.load == pytest.approx(loads.get(day, 0.0), abs=1e-9)
        assert figures.ratio.acute == pytest.approx(want.acute, rel=1e-9, abs=1e-12)
        assert figures.ratio.chronic == pytest.approx(want.chronic, rel=1e-9, abs=1e-12)
        assert (figures.ratio.ratio is None) == (want.ratio is None)
        if want.ratio is not None:
            assert figures.ratio.ratio == pytest.approx(want.ratio, rel=1e-9)
        weeks = week_figures(totals, loads, day)
        assert figures.weeks.loads == pytest.approx(weeks.loads, abs=1e-9)
        assert figures.weeks.climb_m == pytest.approx(weeks.climb_m, abs=1e-9)
        assert figures.weeks.fast_min == pytest.approx(weeks.fast_min, abs=1e-9)
