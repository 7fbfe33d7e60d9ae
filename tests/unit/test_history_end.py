"""The integration scenarios' history ends on the same weekday whatever day the suite
runs, and never more than a week back."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from ingest.simulator import SimulatedRunner, plan_history
from tests.conftest import HISTORY_ENDS_ON, history_end

FORTNIGHT = [date(2026, 12, 2) + timedelta(days=n) for n in range(14)]


@pytest.mark.parametrize("today", FORTNIGHT, ids=str)
def test_the_history_ends_on_the_latest_wednesday(today: date) -> None:
    end = history_end(today)
    assert end.weekday() == HISTORY_ENDS_ON
    assert 0 <= (today - end.date()).days < 7
    assert (end.hour, end.tzinfo) == (12, UTC)


def test_the_planned_runs_are_the_same_whichever_day_of_the_week_it_is() -> None:
    # a week apart the runs move by a week and nothing else
    def run_days(today: date) -> list[tuple[int, float]]:
        starts = []
        for topic, payload in plan_history(SimulatedRunner("r", spike=2.0, seed=3),
                                           history_end(today), 3):
            data = json.loads(payload)
            if topic.endswith("/session") and data["phase"] == "start":
                starts.append(float(data["t"]))
        end = history_end(today).timestamp()
        return [(int((end - t) // 86_400), round(t % 86_400)) for t in starts]

    plans = {tuple(run_days(today)) for today in FORTNIGHT}
    assert len(plans) == 1 and plans.pop()
    assert history_end(datetime(2026, 12, 9, 8, tzinfo=UTC).date()) == datetime(
        2026, 12, 9, 12, tzinfo=UTC)
