"""The Faust agent in Faust's test context: thin glue that matches the pure core.

No broker here: ``agent.test_context()`` feeds records straight into the agent, and the
agent's output channels record what it sends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from base.settings import Settings
from ingest.contract import RunnerEvent
from ingest.decoders import InboundMessage
from ingest.routing import decode_message
from rules.alerts import Alert
from stream.app import StreamApp, build_app
from stream.runner import RunnerState
from stream.state_codec import decode, history_key, seen_key
from tests.scenarios import roster_for, run_core, scenarios

SCENARIOS = scenarios()


class Recorder:
    """Stands in for a topic's ``send``: keeps (key, value) in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(self, key: bytes | None = None, value: bytes = b"", **_: Any) -> None:
        self.sent.append((key, value))


def _built(tmp_path: Path, **settings: Any) -> tuple[StreamApp, dict[str, Recorder]]:
    roster = tmp_path / "roster.yaml"
    roster.write_text(yaml.safe_dump(roster_for(SCENARIOS).model_dump(mode="json")))
    built = build_app(Settings(roster_file=roster, data_dir=tmp_path, **settings))
    built.app.finalize()
    built.forgotten.follow_topic = False  # no broker here: forget requests only
    recorders = {name: Recorder() for name in ("alerts", "metrics", "deadletters")}
    for name, recorder in recorders.items():
        getattr(built, name).send = recorder.send
    return built, recorders


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[tuple[StreamApp, dict[str, Recorder]]]:
    yield _built(tmp_path)


@pytest.fixture
def stream_keeping_one(tmp_path: Path) -> Iterator[tuple[StreamApp, dict[str, Recorder]]]:
    # one runner state in memory: every other runner is read back from the table
    yield _built(tmp_path, worker_states_in_memory=1)


def events(messages: list[tuple[str, bytes]]) -> list[tuple[bytes, bytes]]:
    out = []
    for topic, payload in messages:
        event = decode_message(InboundMessage(topic, payload, time.time()))
        out.append((event.runner.encode(), event.to_bytes()))
    return out


def stored_state(built: StreamApp, runner: str) -> RunnerState:
    """The runner's state as the table holds it (its three stored parts)."""
    key = runner.encode()
    return decode(built.table[key], built.table.get(seen_key(key)),
                  built.table.get(history_key(key)), runner)


async def feed(built: StreamApp, records: list[tuple[bytes | None, bytes]]) -> None:
    async with built.agent.test_context() as agent:
        for key, value in records:
            await agent.put(value, key=key)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.runner for s in SCENARIOS])
def test_agent_alerts_match_the_pure_core(stream: tuple[StreamApp, dict[str, Recorder]],
                                          scenario: Any) -> None:
    built, rec = stream
    records = events(scenario.messages)
    asyncio.run(feed(built, list(records)))
    expected_state, expected_alerts = run_core(scenario.runner, scenario.messages,
                                               roster_for(SCENARIOS))
    alerts = [Alert.from_bytes(v) for _, v in rec["alerts"].sent]
    assert [a.alert_id for a in alerts] == [a.alert_id for a in expected_alerts]
    assert [(a.rule, a.severity) for a in alerts] == list(scenario.expected)
    assert [a.to_runner for a in alerts] == [a.to_runner for a in expected_alerts]
    assert all(k == scenario.runner.encode() for k, _ in rec["alerts"].sent)
    # the table holds exactly the state the pure core computes
    assert stored_state(built, scenario.runner) == expected_state
    assert built.stats["events"] == len(records) and built.stats["duplicates"] == 0


def test_redelivered_records_change_nothing(stream: tuple[StreamApp, dict[str, Recorder]]
                                            ) -> None:
    built, rec = stream
    scenario = next(s for s in SCENARIOS if s.rule == "load_ratio")
    records = events(scenario.messages)
    asyncio.run(feed(built, [r for r in records for _ in range(2)]))
    alerts = [Alert.from_bytes(v) for _, v in rec["alerts"].sent]
    _, expected = run_core(scenario.runner, scenario.messages, roster_for(SCENARIOS))
    assert [a.alert_id for a in alerts] == [a.alert_id for a in expected]
    assert built.stats["duplicates"] == len(records)
    # metric points are only produced for records processed the first time
    first_only = len(rec["metrics"].sent)
    asyncio.run(feed(built, list(records)))
    assert len(rec["metrics"].sent) == first_only


def test_a_bad_record_is_dead_lettered_and_the_agent_keeps_going(
        stream: tuple[StreamApp, dict[str, Recorder]]) -> None:
    built, rec = stream
    scenario = next(s for s in SCENARIOS if s.rule == "pain_after_run")
    good = events(scenario.messages)
    asyncio.run(feed(built, [(b"x", b"not json"), (None, b'{"kind": "samples"}'), *good]))
    letters = [json.loads(v) for _, v in rec["deadletters"].sent]
    assert len(letters) == 2
    assert all("contract v1" in letter["reason"] for letter in letters)
    assert letters[0]["raw_b64"] and letters[0]["stage"] == "stream"
    assert [Alert.from_bytes(v).rule for _, v in rec["alerts"].sent] == ["pain_after_run"]


# ------------------------------------------------------------------------------ groups
def grouped(messages_by_runner: dict[str, list[tuple[str, bytes]]], per_record: int
            ) -> tuple[list[RunnerEvent], list[tuple[bytes | None, bytes]]]:
    """Every runner's events interleaved, as the bridge groups them (one partition)."""
    from ingest.records import group_by_partition

    plans = [[decode_message(InboundMessage(t, p, time.time())) for t, p in messages]
             for messages in messages_by_runner.values()]
    ordered = [plan[i] for i in range(max(map(len, plans))) for plan in plans if i < len(plan)]
    records = group_by_partition(Settings(kafka_partitions=1), ordered,
                                 max_events=per_record)
    return ordered, [(r.key, r.value) for r in records]


@pytest.mark.parametrize("memory", ["all-in-memory", "one-in-memory"])
def test_group_records_fold_each_runners_part_like_the_pure_core(
        stream: tuple[StreamApp, dict[str, Recorder]],
        stream_keeping_one: tuple[StreamApp, dict[str, Recorder]], memory: str) -> None:
    built, rec = stream if memory == "all-in-memory" else stream_keeping_one
    chosen = [s for s in SCENARIOS if s.rule in ("load_ratio", "gct_balance", "pain_after_run",
                                                 "")]
    ordered, records = grouped({s.runner: s.messages for s in chosen}, per_record=25)
    assert len(records) < len(ordered)
    asyncio.run(feed(built, records))
    roster = roster_for(SCENARIOS)
    expected_ids = []
    for scenario in chosen:
        state, alerts = run_core(scenario.runner, scenario.messages, roster)
        assert stored_state(built, scenario.runner) == state
        expected_ids += [a.alert_id for a in alerts]
    sent = [Alert.from_bytes(v) for _, v in rec["alerts"].sent]
    assert sorted(a.alert_id for a in sent) == sorted(expected_ids)
    assert all(k == a.runner.encode() for (k, _), a in zip(rec["alerts"].sent, sent,
                                                          strict=True))
    assert built.stats["records"] == len(records) and built.stats["events"] == len(ordered)
    # one metrics record per input record that produced points, holding all its points
    assert 0 < len(rec["metrics"].sent) <= len(records)
    from stream.metrics import decode_points

    windows = sum(1 for _, v in rec["metrics"].sent for p in decode_points(v)
                  if p.measurement == "run_window")
    assert windows == sum(1 for e in ordered if e.kind == "samples")


def test_a_bad_event_inside_a_group_is_dead_lettered_alone(
        stream: tuple[StreamApp, dict[str, Recorder]]) -> None:
    built, rec = stream
    scenario = next(s for s in SCENARIOS if s.rule == "pain_after_run")
    good = [decode_message(InboundMessage(t, p, time.time())) for t, p in scenario.messages]
    broken = {"kind": "pain", "runner": scenario.runner, "device": "app", "received_at": 1.0}
    value = (b'{"v":1,"events":[' + b",".join(
        [good[0].to_bytes(), json.dumps(broken).encode(), *(e.to_bytes() for e in good[1:])])
        + b"]}")
    asyncio.run(feed(built, [(scenario.runner.encode(), value),
                             (b"x", b'{"v": 9, "events": []}')]))
    letters = [json.loads(v) for _, v in rec["deadletters"].sent]
    assert len(letters) == 2
    assert letters[0]["runner"] == scenario.runner and "contract v1" in letters[0]["reason"]
    assert json.loads(base64.b64decode(letters[0]["raw_b64"])) == broken
    assert "unknown version 9" in letters[1]["reason"]
    assert [Alert.from_bytes(v).rule for _, v in rec["alerts"].sent] == ["pain_after_run"]
    state, _ = run_core(scenario.runner, scenario.messages, roster_for(SCENARIOS))
    assert stored_state(built, scenario.runner) == state


def _pain(runner: str, seq: int, t: float) -> tuple[str, bytes]:
    body = {"seq": seq, "t": t, "score": 3, "where": "achilles", "when": "after"}
    return f"runners/{runner}/pain", json.dumps(body).encode()


def test_a_runner_not_in_the_roster_is_processed_warned_about_once_and_counted(
        stream: tuple[StreamApp, dict[str, Recorder]], caplog: pytest.LogCaptureFixture
) -> None:
    built, rec = stream
    known = SCENARIOS[0].runner
    t0 = 1_780_000_000.0  # a fixed day: the verdict does not depend on today's date
    records = events([_pain("zoe", 1, t0), _pain("zoe", 2, t0 + 86_400),
                      _pain(known, 1, t0), _pain(known, 2, t0 + 86_400)])
    with caplog.at_level(logging.WARNING, logger="stridewatch.stream"):
        asyncio.run(feed(built, list(records)))
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "stridewatch.stream" and "not in the roster" in r.getMessage()]
    assert len(warnings) == 1, warnings
    (warning,) = warnings
    roster_file = built.app.conf.datadir.parent / "roster.yaml"
    assert warning.startswith(f"runner 'zoe' is not in the roster ({roster_file})")
    assert "team \"unassigned\"" in warning and "no coach sees their alerts" in warning
    assert "`stridewatch runners add zoe --team TEAM`" in warning
    assert known not in warning
    # processed all the same: both of zoe's events are counted and none is dead-lettered
    assert built.stats["events"] == 4 and rec["deadletters"].sent == []
    assert built.stats["unknown_runners"] == 1 and built.stats["unassigned_events"] == 2


def test_a_runner_added_to_the_roster_is_picked_up_without_a_restart(
        stream: tuple[StreamApp, dict[str, Recorder]], caplog: pytest.LogCaptureFixture
) -> None:
    built, rec = stream
    roster_file = built.app.conf.datadir.parent / "roster.yaml"
    t0 = 1_780_000_000.0

    def pain_alert_team(seq: int) -> str:
        body = {"seq": seq, "t": t0 + seq * 86_400, "score": 6, "where": "achilles",
                "when": "after"}
        before = len(rec["alerts"].sent)
        asyncio.run(feed(built, list(events([("runners/zoe/pain",
                                               json.dumps(body).encode())]))))
        (alert,) = [Alert.from_bytes(v) for _, v in rec["alerts"].sent[before:]]
        return alert.team

    assert pain_alert_team(1) == "unassigned"
    roster = roster_for(SCENARIOS).model_dump(mode="json")
    roster["runners"].append({"id": "zoe", "name": "Zoe", "team": "scenario"})
    roster_file.write_text(yaml.safe_dump(roster))
    time.sleep(2.1)  # the worker looks at the file at most once per 2 s
    assert pain_alert_team(2) == "scenario"
    # a broken edit is reported and the roster in use stays
    roster_file.write_text("teams: [\n")
    time.sleep(2.1)
    with caplog.at_level(logging.ERROR, logger="stridewatch.stream"):
        assert pain_alert_team(3) == "scenario"
    assert any("roster not read again" in r.getMessage() for r in caplog.records)
    assert rec["deadletters"].sent == []
