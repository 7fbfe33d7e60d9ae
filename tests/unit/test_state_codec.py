"""The state's table format: version 1 states migrate, live writes stay small, and a live
batch does the same work whatever the length of the runner's history."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from ingest.contract import RunnerEvent, SessionEvent
from ingest.decoders import InboundMessage
from ingest.routing import decode_message
from ingest.simulator import SimulatedRunner, plan_history, plan_live
from rules.catalogue import load_catalogue
from stream.runner import RunnerState, process_event
from stream.state_codec import (
    SCHEMA_VERSION,
    StateFormatError,
    decode,
    encode,
    encode_history,
    encode_live,
    encode_seen,
    park,
    unpark,
)
from team.roster import Roster
from tests.scenarios import TODAY, Gait, Scenario, history, roster_for, run, scenarios

SCENARIOS = scenarios("park")
TESTDATA = Path(__file__).parent / "testdata" / "state_v1"
PROFILE = Roster().profile("sc-old", load_catalogue())
END = datetime(2026, 11, 30, 12, tzinfo=UTC)


def events_of(lines: list[dict[str, Any]]) -> Iterator[RunnerEvent]:
    for line in lines:
        yield decode_message(InboundMessage(line["topic"], json.dumps(line["payload"]).encode(),
                                            0.0))


def test_a_version_1_state_migrates_and_carries_on_as_before() -> None:
    """``input``: a JSON state written by the previous release mid-run; ``events.jsonl``:
    what arrived next; ``expected``: what that release sent for them."""
    state = decode((TESTDATA / "input").read_bytes(), None, None, "sc-old")
    expected = json.loads((TESTDATA / "expected").read_text())
    assert state.sessions and state.seen and state.first_day
    alerts, points = [], []
    lines = [json.loads(line) for line in (TESTDATA / "events.jsonl").read_text().splitlines()]
    rewritten_days = []
    for event in events_of(lines):
        state, out = process_event(state, event, PROFILE)
        alerts += [f"{a.rule}/{a.severity}@{a.fired_at}" for a in out.alerts]
        got_now = [json.loads(p.to_json()) for p in out.points]
        if isinstance(event.body, SessionEvent):
            # since then a session end that moves the run's end rewrites its day, so the
            # day's duration agrees with the session's
            rewritten_days += [p for p in got_now if p["m"] == "daily_load"]
            got_now = [p for p in got_now if p["m"] != "daily_load"]
        points += got_now
    assert alerts == expected["alerts"]
    assert len(rewritten_days) == 1
    ended = next(p for p in reversed(points) if p["m"] == "session")
    assert rewritten_days[0]["fields"]["duration_min"] == ended["fields"]["duration_min"]
    assert len(points) == len(expected["points"])
    for got, want in zip(points, expected["points"], strict=True):
        assert (got["m"], got["tags"], got["time_ms"]) == (want["m"], want["tags"],
                                                            want["time_ms"])
        # fields added since that release may join; every field it wrote stays the same
        assert got["fields"].keys() >= want["fields"].keys()
        for name, value in want["fields"].items():
            assert got["fields"][name] == (pytest.approx(value, rel=1e-9)
                                           if isinstance(value, float) else value), name
    # the next write stores every part in the current version
    stored = encode(state)
    assert stored.seen is not None and stored.history is not None
    again = decode(stored.live, stored.seen, stored.history, "sc-old")
    assert again == state
    assert encode_live(again)[:2] == encode_live(state)[:2]
    assert SCHEMA_VERSION == 2


def test_a_state_no_version_reads_is_refused_with_the_runner_named() -> None:
    with pytest.raises(StateFormatError, match="sc-old"):
        decode(b"\x93\x01\x02", None, None, "sc-old")
    with pytest.raises(StateFormatError, match="version 1"):
        decode(b'{"sessions": 3}', None, None, "sc-old")


def _with_history(weeks: int) -> tuple[RunnerState, list[RunnerEvent]]:
    runner = SimulatedRunner("sc-old", seed=3, imbalance_pts=1.0)
    state = RunnerState(runner="sc-old")
    for topic, payload in plan_history(runner, END, weeks):
        state, _ = process_event(state, decode_message(InboundMessage(topic, payload, 0.0)),
                                 PROFILE)
    live = [decode_message(InboundMessage(t, p, 0.0))
            for t, p in plan_live(runner, END.timestamp() + 5 * 3600, 4)]
    return state, [e for e in live if e.kind == "samples"]


def _calls_per_batch(weeks: int) -> tuple[float, float]:
    """Median Python calls and median bytes written per live batch, after the first."""
    state, live = _with_history(weeks)
    encode(state)
    calls: list[int] = []
    written: list[int] = []
    for event in live:
        count = 0

        def profiler(frame: FrameType, what: str, arg: object) -> None:
            nonlocal count
            if what in ("call", "c_call"):
                count += 1

        sys.setprofile(profiler)
        try:
            state, _ = process_event(state, event, PROFILE)
        finally:
            sys.setprofile(None)
        calls.append(count)
        written.append(encode(state).size)
    return statistics.median(calls[1:]), statistics.median(written[1:])


def test_a_live_batch_does_the_same_work_with_5_and_26_weeks_of_history() -> None:
    calls_5, bytes_5 = _calls_per_batch(5)
    calls_26, bytes_26 = _calls_per_batch(26)
    # five times the history, the same work per batch
    assert calls_26 == pytest.approx(calls_5, rel=0.05)
    # and about the same bytes: the live part holds one session and one entry per rule
    # that has seen a reading (a longer history has met a few more rules)
    assert bytes_26 == pytest.approx(bytes_5, rel=0.1)
    assert bytes_26 < 1024


def test_every_part_round_trips() -> None:
    state, live = _with_history(5)
    for event in live[:20]:
        state, _ = process_event(state, event, PROFILE)
    parts = encode_live(state), encode_seen(state), encode_history(state)
    assert decode(*parts, "sc-old") == state


def _as_the_worker_runs(runner: str, events: list[RunnerEvent], park_every: bool
                        ) -> tuple[RunnerState, list[Any]]:
    """Step as the worker does: encode after every record and (optionally) park."""
    profile = roster_for(SCENARIOS).profile(runner, load_catalogue())
    state = RunnerState(runner=runner)
    history: bytes | None = None
    outputs = []
    for event in events:
        state, out = process_event(state, event, profile)
        outputs.append(out)
        stored = encode(state)
        history = stored.history or history
        if park_every:
            park(state, history)
    unpark(state)
    return state, outputs


def _second_device_the_same_day() -> Scenario:
    # history, then a run on the watch and, later that day, one on the phone with a shoe
    runner = "park-phone"
    return Scenario("", runner, history(runner) + run(runner, TODAY.replace(hour=7), Gait())
                    + run(runner, TODAY.replace(hour=18), Gait(km=2.0, shoe="trainer-1"),
                          device="phone"))


@pytest.mark.parametrize("scenario", [*SCENARIOS, _second_device_the_same_day()],
                         ids=[*(s.runner for s in SCENARIOS), "park-phone"])
def test_a_parked_state_gives_the_same_outputs(scenario: Scenario) -> None:
    """Keeping the history encoded between records changes no output and no state."""
    events = [decode_message(InboundMessage(t, p, 0.0)) for t, p in scenario.messages]
    # late and repeated data too: the last run's batches again, then an old day's
    events += events[-5:] + events[len(events) // 3:len(events) // 3 + 5]
    plain, plain_out = _as_the_worker_runs(scenario.runner, events, park_every=False)
    parked, parked_out = _as_the_worker_runs(scenario.runner, events, park_every=True)
    assert parked_out == plain_out
    assert parked == plain


def test_parking_keeps_the_history_out_of_memory_until_needed() -> None:
    state, live = _with_history(6)
    stored = encode(state)
    assert stored.history is not None
    for event in live[:3]:
        state, _ = process_event(state, event, PROFILE)
        encode(state)
    park(state, stored.history)
    assert state.parked_history is not None and len(state.sessions) == 1
    for event in live[3:30]:  # the run goes on: nothing to unpark for
        state, out = process_event(state, event, PROFILE)
        assert out.points and state.parked_history is not None
    pain = decode_message(InboundMessage("runners/sc-old/pain", json.dumps({
        "seq": 1, "t": END.timestamp() + 6 * 3600, "score": 3, "where": "ankle",
        "when": "after"}).encode(), 0.0))
    state, _ = process_event(state, pain, PROFILE)  # a pain report reads the history
    assert state.parked_history is None and len(state.sessions) > 1
