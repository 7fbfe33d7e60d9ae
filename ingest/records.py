"""The Kafka records the bridge produces: pure code, no broker client.

What goes on ``<prefix>.events`` (docs/ingest.md, "Kafka records"):

- a **group record** (the bridge's normal output): the events of every runner whose id
  hashes to one partition, received within one short window, in arrival order::

      {"v": 1, "events": [<RunnerEvent>, <RunnerEvent>, ...]}

  sent to that partition explicitly, keyed by the first event's runner (whose key
  hashes to the same partition, so tools that look at keys see a consistent picture);
- a **single-event record** (today's format, still read by the worker): one
  ``RunnerEvent`` JSON object, keyed by its runner.

Every ``RunnerEvent`` is the contract's JSON (``ingest.contract.RunnerEvent.to_bytes``).
The worker tells the two apart by the top-level ``"events"`` key.

Dead letters stay one record each on ``<prefix>.deadletters``.

API (what the bridge and the benchmark use to fill topics the same way):

- ``partition_for(runner_id, partitions) -> int``: the partition aiokafka's
  DefaultPartitioner picks for the key ``runner_id`` (Java murmur2 of the key's bytes);
- ``group_in_windows(settings, arrivals, window_s=..., max_events=..., max_bytes=...)
  -> list[KafkaRecord]``: the records the bridge makes of ``(arrival time, RunnerEvent)``
  pairs (a partition's group closes ``window_s`` after its first event, or when full);
- ``group_by_partition(settings, events, ...) -> list[KafkaRecord]``: all ``events`` as one
  window: one group record per partition (split only to stay under the limits);
- ``to_record(settings, msg)`` / ``to_event(msg)``: an MQTT message as a single-event
  record or a dead letter / as a decoded event or a rejection reason;
- ``dead_letter_record(settings, msg, reason)``, ``group_value(encoded_events)``;
- ``decode_record(value) -> list[RunnerEvent | BadEvent]``: what the worker reads.

``KafkaRecord(topic, key, value, partition, events)``: send it with
``producer.send(r.topic, r.value, key=r.key, partition=r.partition)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from aiokafka.partitioner import murmur2
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from base.settings import Settings
from ingest import topics
from ingest.contract import RunnerEvent, is_valid_id
from ingest.dead_letters import DeadLetter
from ingest.decoders import InboundMessage, Rejected
from ingest.routing import decode_message

GROUP_VERSION = 1
GROUP_OVERHEAD_BYTES = len(b'{"v":1,"events":[]}')


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    key: bytes | None
    value: bytes
    # None: the producer's partitioner picks it from the key
    partition: int | None = None
    # how many events the record holds (0 for a dead letter)
    events: int = 1


def partition_for(runner_id: str, partitions: int) -> int:
    """The partition of a record keyed by ``runner_id``, exactly as aiokafka's
    DefaultPartitioner (and Kafka's Java client) picks it."""
    hashed: int = murmur2(runner_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def dead_letter_record(settings: Settings, msg: InboundMessage, reason: str) -> KafkaRecord:
    """A rejection as a Kafka record: why, the MQTT topic, runner, device, when, raw bytes."""
    runner, device = topics.owner(msg.topic)
    runner = runner if runner is not None and is_valid_id(runner) else None
    device = device if device is not None and is_valid_id(device) else None
    letter = DeadLetter(reason, msg.topic, msg.payload, msg.received_at, "ingest", runner,
                        device)
    return KafkaRecord(settings.deadletter_topic, letter.key, letter.encode(), events=0)


def to_event(msg: InboundMessage) -> RunnerEvent | str:
    """The decoded event of an MQTT message, or the reason it is rejected."""
    try:
        return decode_message(msg)
    except Rejected as exc:
        return exc.reason
    except Exception as exc:  # a decoder bug must not stop ingest either
        return f"decoder failed: {type(exc).__name__}: {exc}"


def to_record(settings: Settings, msg: InboundMessage) -> tuple[KafkaRecord, str | None]:
    """The single-event record for an MQTT message, and the rejection reason if it is a
    dead letter."""
    event = to_event(msg)
    if isinstance(event, str):
        return dead_letter_record(settings, msg, event), event
    return single_record(settings, event), None


def single_record(settings: Settings, event: RunnerEvent) -> KafkaRecord:
    return KafkaRecord(settings.events_topic, event.runner.encode(), event.to_bytes())


def group_value(encoded_events: Sequence[bytes]) -> bytes:
    """The group record's value from already-encoded events (RunnerEvent JSON)."""
    return b'{"v":1,"events":[' + b",".join(encoded_events) + b"]}"


def group_by_partition(settings: Settings, events: Iterable[RunnerEvent], *,
                       max_events: int | None = None, max_bytes: int | None = None
                       ) -> list[KafkaRecord]:
    """One group record per partition holding the events of all its runners, in arrival
    order (all ``events`` count as one window); a partition gets more than one record only
    to stay under ``max_events`` and ``max_bytes`` (defaults: the bridge's settings)."""
    return group_in_windows(settings, ((0.0, e) for e in events), window_s=math.inf,
                            max_events=max_events, max_bytes=max_bytes)


def group_in_windows(settings: Settings, arrivals: Iterable[tuple[float, RunnerEvent]], *,
                     window_s: float | None = None, max_events: int | None = None,
                     max_bytes: int | None = None) -> list[KafkaRecord]:
    """The records the bridge makes of events arriving at the given times (seconds, in
    order): a partition's group opens with its first event and closes ``window_s`` later,
    or once full. Defaults are the bridge's settings. Records come in the order they
    close; per partition that is the order of their events."""
    window = settings.bridge_group_window_s if window_s is None else window_s
    most = settings.bridge_group_max_events if max_events is None else max_events
    limit = settings.bridge_group_max_bytes if max_bytes is None else max_bytes
    partitions = settings.kafka_partitions
    groups: dict[int, _OpenGroup] = {}
    records: list[KafkaRecord] = []

    def close(partition: int) -> None:
        group = groups.pop(partition)
        records.append(KafkaRecord(settings.events_topic, group.first_runner.encode(),
                                   group_value(group.events), partition, len(group.events)))

    for t, event in arrivals:
        for partition in [p for p, g in groups.items() if t >= g.opened + window]:
            close(partition)
        partition = partition_for(event.runner, partitions)
        raw = event.to_bytes()
        group = groups.get(partition)
        if group is not None and group.size + len(raw) + 1 > limit:
            close(partition)
            group = None
        if group is None:
            group = groups[partition] = _OpenGroup(event.runner, t)
        group.events.append(raw)
        group.size += len(raw) + 1
        if len(group.events) >= most:
            close(partition)
    for partition in sorted(groups, key=lambda p: groups[p].opened):
        close(partition)
    return records


@dataclass(slots=True)
class _OpenGroup:
    first_runner: str
    opened: float
    events: list[bytes] = field(default_factory=list)
    size: int = GROUP_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class BadEvent:
    """An event of a record the worker cannot use: its bytes and why."""

    raw: bytes
    reason: str
    runner: str | None = None
    device: str | None = None


class _GroupRecord(BaseModel):
    model_config = ConfigDict(frozen=True)
    v: Literal[1]
    events: list[RunnerEvent]


_GROUP: TypeAdapter[_GroupRecord] = TypeAdapter(_GroupRecord)


def decode_record(value: bytes) -> list[RunnerEvent | BadEvent]:
    """The events of a record (group or single), each decoded or with its reason.

    A good group record is parsed and validated in one pass (pydantic reads the JSON
    itself: about three times faster than ``json.loads`` and a validation per event); a
    group with a bad event is read again event by event, so the bad one does not spoil
    the others. Raises ``ValueError`` for a record that is neither format.
    """
    if value[:1] == b"{" and b'"events"' in value[:64]:
        try:
            return list(_GROUP.validate_json(value).events)
        except ValidationError:
            pass  # find which event is bad, below
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"record is not JSON: {exc}") from None
    grouped = isinstance(data, dict) and "events" in data
    if grouped:
        if data.get("v") != GROUP_VERSION or not isinstance(data["events"], list):
            raise ValueError(f"group record of unknown version {data.get('v')!r} "
                             f"(this worker reads v{GROUP_VERSION})")
        items = data["events"]
    else:
        items = [data]
    out: list[RunnerEvent | BadEvent] = []
    for item in items:
        try:
            out.append(RunnerEvent.model_validate(item))
        except ValidationError as exc:
            fields = item if isinstance(item, dict) else {}
            runner, device = fields.get("runner"), fields.get("device")
            out.append(BadEvent(json.dumps(item).encode() if grouped else value,
                                f"record does not match contract v1: "
                                f"{exc.errors()[0]['msg']}",
                                runner if isinstance(runner, str) else None,
                                device if isinstance(device, str) else None))
    return out
