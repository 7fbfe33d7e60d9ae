"""The simulated live workload, and how the bridge turns it into Kafka records.

:func:`bridge_records` is the one place that knows the events topic's record layout (the
bridge's own grouping code makes it), so the stream and scale-out parts follow the bridge.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from base.settings import Settings
from ingest.simulator import plan_live
from stridewatch.bench.common import bench_team

# (partition or None for the producer's key partitioner, key, value)
Record = tuple[int | None, bytes | None, bytes]


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message of the workload, with what the bench checks it against."""

    runner: str
    topic: str
    payload: bytes
    round: int  # its runner's n-th message: live devices send one a second
    first_t: float  # event times it carries (sample times, session or pain time)
    last_t: float
    samples: int  # strides in a sample batch, 0 otherwise

    @property
    def batch_key(self) -> tuple[str, int] | None:
        """(runner, time in ms of the last sample): the key of its ``run_window`` point."""
        return (self.runner, round(self.last_t * 1000)) if self.samples else None


@dataclass(frozen=True)
class Workload:
    """Every runner's live run, interleaved round-robin the way live devices send."""

    messages: list[Message]
    runners: list[str]
    seconds: float
    end_t: float  # when every live run ends (event time)

    @property
    def batches(self) -> int:
        return sum(1 for m in self.messages if m.samples)

    @property
    def samples(self) -> int:
        return sum(m.samples for m in self.messages)

    def batch_keys(self) -> set[tuple[str, int]]:
        return {k for m in self.messages if (k := m.batch_key) is not None}


def _times(payload: bytes) -> tuple[float, float, int]:
    body = json.loads(payload)
    if "samples" in body:
        ts = [float(s["t"]) for s in body["samples"]]
        return ts[0], ts[-1], len(ts)
    return float(body["t"]), float(body["t"]), 0


def plan_workload(runners: int, seconds: float, end_t: float) -> Workload:
    team = bench_team(runners)
    plans = [list(plan_live(r, end_t, seconds / 60)) for r in team]
    messages: list[Message] = []
    for i in range(max(len(p) for p in plans)):
        for r, plan in zip(team, plans, strict=True):
            if i < len(plan):
                topic, payload = plan[i]
                first, last, samples = _times(payload)
                messages.append(Message(r.runner, topic, payload, i, first, last, samples))
    keys = [m.batch_key for m in messages if m.samples]
    assert len(set(keys)) == len(keys), "batch keys must be unique"
    return Workload(messages, [r.runner for r in team], seconds, end_t)


def bridge_records(settings: Settings, messages: Sequence[Message], received_at: float
                   ) -> list[Record]:
    """The events-topic records the bridge makes of ``messages``, in the order it sends
    them: one group record per partition per window (``ingest.records.group_in_windows``),
    each message arriving at ``received_at`` plus its round (live devices send one message a
    second, so a round's messages share a window)."""
    from ingest.decoders import InboundMessage
    from ingest.records import group_in_windows, to_event

    arrivals = []
    for m in messages:
        event = to_event(InboundMessage(m.topic, m.payload, received_at + m.round))
        if isinstance(event, str):
            raise ValueError(f"the bridge would dead-letter {m.topic}: {event}")
        arrivals.append((received_at + m.round, event))
    return [(r.partition, r.key, r.value) for r in group_in_windows(settings, arrivals)]
