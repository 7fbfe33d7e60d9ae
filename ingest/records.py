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
- ``group_by_partition(settings, events, ...) -> list[KafkaRecord]``: one group record per
  partition (split further only to stay under ``max_events`` / ``max_bytes``);
- ``to_record(settings, msg)`` / ``to_event(msg)``: an MQTT message as a single-event
  record or a dead letter / as a decoded event or a rejection reason;
- ``dead_letter_record(settings, msg, reason)``, ``group_value(events)``,
  ``decode_record(value)``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka.partitioner import murmur2
from pydantic import ValidationError

from ingest.contract import RunnerEvent, is_valid_id
from ingest.decoders import InboundMessage, Rejected
from ingest.routing import decode_message
from stridewatch.settings import Settings

GROUP_VERSION = 1
# a dead letter keeps at most this much of the raw payload (and says so)
MAX_DEAD_LETTER_RAW = 256 * 1024
# Kafka's default max.message.bytes is 1 MiB; a group stays well under it
DEFAULT_MAX_GROUP_BYTES = 900 * 1024
_GROUP_OVERHEAD = len(b'{"v":1,"events":[]}')


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
    parts = msg.topic.split("/")
    runner = parts[1] if len(parts) > 1 and parts[0] == "runners" and is_valid_id(parts[1]) \
        else None
    device = parts[2] if len(parts) == 4 and is_valid_id(parts[2]) else None
    raw = msg.payload[:MAX_DEAD_LETTER_RAW]
    letter: dict[str, object] = {
        "reason": reason, "topic": msg.topic, "runner": runner, "device": device,
        "at": msg.received_at, "stage": "ingest", "raw_b64": base64.b64encode(raw).decode()}
    if len(raw) < len(msg.payload):
        letter["raw_truncated_from"] = len(msg.payload)
    return KafkaRecord(settings.deadletter_topic, runner.encode() if runner else None,
                       json.dumps(letter).encode(), events=0)


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
                       max_events: int = 500, max_bytes: int = DEFAULT_MAX_GROUP_BYTES
                       ) -> list[KafkaRecord]:
    """One group record per partition holding the events of all its runners, in arrival
    order; a partition gets more than one record only to stay under ``max_events`` and
    ``max_bytes`` (an event larger than ``max_bytes`` gets a record of its own)."""
    partitions = settings.kafka_partitions
    open_groups: dict[int, tuple[str, list[bytes], int]] = {}
    records: list[KafkaRecord] = []

    def close(partition: int) -> None:
        first, encoded, _ = open_groups.pop(partition)
        records.append(KafkaRecord(settings.events_topic, first.encode(),
                                   group_value(encoded), partition, len(encoded)))

    for event in events:
        partition = partition_for(event.runner, partitions)
        raw = event.to_bytes()
        group = open_groups.get(partition)
        if group is not None and (len(group[1]) >= max_events
                                  or group[2] + len(raw) + 1 > max_bytes):
            close(partition)
            group = None
        if group is None:
            group = (event.runner, [], _GROUP_OVERHEAD)
            open_groups[partition] = group
        group[1].append(raw)
        open_groups[partition] = (group[0], group[1], group[2] + len(raw) + 1)
    for partition in list(open_groups):
        close(partition)
    return records


@dataclass(frozen=True, slots=True)
class BadEvent:
    """An event of a record the worker cannot use: its bytes and why."""

    raw: bytes
    reason: str
    runner: str | None = None
    device: str | None = None


def decode_record(value: bytes) -> list[RunnerEvent | BadEvent]:
    """The events of a record (group or single), each decoded or with its reason.

    The JSON is parsed once; a bad event inside a group does not spoil the others.
    Raises ``ValueError`` for a record that is neither format.
    """
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
