"""Kafka records of the bridge (pure): the partitioner, grouping, and reading them back."""

from __future__ import annotations

import json
import time

import pytest
from aiokafka.partitioner import DefaultPartitioner

from base.settings import Settings
from ingest.contract import RunnerEvent
from ingest.decoders import InboundMessage
from ingest.records import (
    BadEvent,
    decode_record,
    group_by_partition,
    group_in_windows,
    partition_for,
    to_record,
)
from ingest.routing import decode_message
from ingest.simulator import SimulatedRunner, plan_live

SETTINGS = Settings(topic_prefix="t", kafka_partitions=4)


def live_events(runners: list[str], minutes: float = 0.2) -> list[RunnerEvent]:
    """Live batches of several runners, interleaved as they would arrive."""
    plans = [[decode_message(InboundMessage(topic, payload, time.time()))
              for topic, payload in plan_live(SimulatedRunner(r, seed=i), 1_763_794_800.0,
                                              minutes)]
             for i, r in enumerate(runners)]
    out = []
    for i in range(max(len(p) for p in plans)):
        out += [p[i] for p in plans if i < len(p)]
    return out


@pytest.mark.parametrize("partitions", [1, 4, 12, 64])
def test_partition_for_is_aiokafkas_default_partitioner(partitions: int) -> None:
    ids = [f"runner-{i}" for i in range(300)] + ["ana", "ben", "a", "z_9-x"]
    everything = list(range(partitions))
    for runner in ids:
        assert partition_for(runner, partitions) == DefaultPartitioner()(
            runner.encode(), everything, everything)


def test_known_murmur2_values_of_the_java_client() -> None:
    # Kafka's Java client (Utils.murmur2) puts these keys on these of 4 / 1000 partitions
    assert partition_for("21", 4) == (-973932308 & 0x7FFFFFFF) % 4
    assert partition_for("foobar", 1000) == (-790332482 & 0x7FFFFFFF) % 1000


def test_one_group_record_per_partition_in_arrival_order() -> None:
    runners = [f"r{i}" for i in range(10)]
    events = live_events(runners)
    records = group_by_partition(SETTINGS, events)
    partitions = {partition_for(r, 4) for r in runners}
    assert sorted(r.partition for r in records if r.partition is not None) == sorted(partitions)
    for record in records:
        assert record.topic == "t.events"
        assert record.key is not None
        assert partition_for(record.key.decode(), 4) == record.partition
        inside = decode_record(record.value)
        assert all(isinstance(e, RunnerEvent) for e in inside)
        assert record.events == len(inside)
        expected = [e for e in events if partition_for(e.runner, 4) == record.partition]
        assert inside == expected  # every runner of the partition, in arrival order
    assert sum(r.events for r in records) == len(events)


def test_groups_split_at_the_event_and_byte_limits() -> None:
    events = live_events(["ana"], minutes=0.5)
    assert len(events) > 10
    by_count = group_by_partition(SETTINGS, events, max_events=4)
    assert [r.events for r in by_count] == [4] * (len(events) // 4) + (
        [len(events) % 4] if len(events) % 4 else [])
    one = len(events[0].to_bytes())
    by_bytes = group_by_partition(SETTINGS, events, max_bytes=one * 3)
    assert all(len(r.value) <= one * 3 + 200 for r in by_bytes)
    assert [e for r in by_bytes for e in decode_record(r.value)] == events


def test_windows_close_a_fixed_time_after_their_first_event() -> None:
    events = live_events(["ana"], minutes=0.2)  # one partition
    arrivals = [(i * 0.1, e) for i, e in enumerate(events)]  # ten a second
    records = group_in_windows(SETTINGS, arrivals, window_s=0.25)
    # a window opened at 0.0 takes 0.0, 0.1, 0.2; the next opens at 0.3, ...
    assert [r.events for r in records][:-1] == [3] * (len(records) - 1)
    assert [e for r in records for e in decode_record(r.value)] == events
    assert group_in_windows(SETTINGS, arrivals, window_s=0.25, max_events=2)[0].events == 2
    # the defaults are the bridge's settings
    assert len(group_in_windows(SETTINGS, arrivals)) == len(records)


def test_the_group_format_is_versioned_json() -> None:
    events = live_events(["ana", "ben"])
    record = group_by_partition(Settings(kafka_partitions=1), events)[0]
    data = json.loads(record.value)
    assert data["v"] == 1 and len(data["events"]) == len(events)
    assert data["events"][0] == json.loads(events[0].to_bytes())


def test_single_event_records_still_read() -> None:
    for topic, payload in list(plan_live(SimulatedRunner("ana"), 1_763_794_800.0, 0.1)):
        msg = InboundMessage(topic, payload, time.time())
        record, reason = to_record(SETTINGS, msg)
        assert reason is None and record.partition is None and record.key == b"ana"
        assert decode_record(record.value) == [decode_message(msg)]


def test_a_bad_event_in_a_group_is_singled_out() -> None:
    good = live_events(["ana", "ben"])[:3]
    broken = {"kind": "samples", "runner": "ana", "device": "pod", "received_at": 1.0}
    value = (b'{"v":1,"events":[' + good[0].to_bytes() + b"," + json.dumps(broken).encode()
             + b"," + good[1].to_bytes() + b"]}")
    decoded = decode_record(value)
    assert decoded[0] == good[0] and decoded[2] == good[1]
    bad = decoded[1]
    assert isinstance(bad, BadEvent) and bad.runner == "ana" and bad.device == "pod"
    assert "contract v1" in bad.reason and json.loads(bad.raw) == broken


def test_unknown_group_versions_and_non_json_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown version"):
        decode_record(b'{"v": 2, "events": []}')
    with pytest.raises(ValueError, match="not JSON"):
        decode_record(b"\xff not json")
