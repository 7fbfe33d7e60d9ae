"""The stream stage's peers, each run as its own process so its CPU is its own.

``python -m stridewatch.bench.peers raw --topic T --batches N``: a plain aiokafka consume
loop with ``json.loads`` (the ceiling); prints one JSON line with its counts and times.

``python -m stridewatch.bench.peers quix --input T --output T2 --group G --state-dir D``:
the worker's computation written with Quix Streams: the same pure step per record
(:func:`~stridewatch.bench.core.step_as_worker`), the runner's state in Quix's state
store, one metrics record out per input. Settings come from ``STRIDEWATCH_*``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from base.settings import Settings, load_settings


def count_batches(value: bytes) -> tuple[int, int]:
    """(device batches, strides) in one events-topic record (a group or a single event),
    read with ``json.loads`` as a plain consumer would."""
    data = json.loads(value)
    events = data["events"] if isinstance(data, dict) and "events" in data else [data]
    batches = [e for e in events if e.get("kind") == "samples"]
    return len(batches), sum(len(e["samples"]["samples"]) for e in batches)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def raw_loop(settings: Settings, topic: str, batches: int, timeout_s: float
                   ) -> dict[str, float]:
    from base.kafka import make_consumer

    consumer = make_consumer(settings, topic, group_id=f"{topic}-raw")
    await consumer.start()
    seen = strides = records = 0
    first = first_cpu = None
    deadline = time.monotonic() + timeout_s
    try:
        while seen < batches and time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=200, max_records=5000)
            for part in got.values():
                for record in part:
                    if first is None:
                        first, first_cpu = time.perf_counter(), _cpu_s()
                    n, s = count_batches(record.value or b"")
                    records += 1
                    seen += n
                    strides += s
        last, last_cpu = time.perf_counter(), _cpu_s()
    finally:
        await consumer.stop()
    return {"records": records, "batches": seen, "strides": strides,
            "seconds": last - first if first is not None else float("nan"),
            "cpu_s": last_cpu - first_cpu if first_cpu is not None else float("nan")}


def quix_app(settings: Settings, input_topic: str, output_topic: str, group: str,
             state_dir: Path) -> None:
    from quixstreams import Application
    from quixstreams.models import TopicConfig

    from rules.catalogue import load_catalogue
    from stream.metrics import encode_points
    from stridewatch.bench.core import step_as_worker
    from team.roster import RunnerProfile, load_roster

    catalogue = load_catalogue(settings.rules_dir)
    roster = load_roster(settings.roster_file)
    profiles: dict[str, RunnerProfile] = {}
    app = Application(broker_address=settings.kafka_bootstrap, consumer_group=group,
                      auto_offset_reset="earliest", state_dir=str(state_dir),
                      loglevel="WARNING")
    # The local broker's topic-config reply has no retention keys, and Quix derives the
    # changelog's config from them (KeyError: 'retention.ms'): supply them ourselves.
    retention = {"retention.ms": "-1", "retention.bytes": "-1"}
    config = TopicConfig(num_partitions=settings.kafka_partitions,
                         replication_factor=settings.kafka_replication,
                         extra_config=dict(retention))
    source = app.topic(input_topic, key_deserializer="bytes", value_deserializer="bytes",
                       config=config)
    sink = app.topic(output_topic, key_serializer="bytes", value_serializer="bytes",
                     config=config)
    for topic in (source, sink):
        if topic.broker_config is not None:
            for key, value in retention.items():
                topic.broker_config.extra_config.setdefault(key, value)

    from quixstreams.state.base.state import TransactionState

    from ingest.records import BadEvent, decode_record
    from stream.runner import RunnerState
    from stream.state_codec import decode
    from stridewatch.bench.core import HeldState, stored_parts

    # Like the StrideWatch worker: states stay decoded in memory, and each record's
    # changed parts go to the state store (Quix's changelog), one key per part.
    held_states: dict[str, HeldState] = {}
    parts = ("live", "seen", "history")

    def runner_state(runner: str, store: TransactionState) -> HeldState:
        held = held_states.get(runner)
        if held is None:
            raw = [store.get(name) for name in parts]
            live, seen, history = (base64.b64decode(v) if v else None for v in raw)
            state = decode(live, seen, history, runner) if live else RunnerState(runner=runner)
            held = held_states[runner] = HeldState(state, history)
        return held

    def step(value: bytes, state: Any) -> bytes | None:
        points = []
        for event in decode_record(value):
            if isinstance(event, BadEvent):
                continue
            if event.runner not in profiles:
                profiles[event.runner] = roster.profile(event.runner, catalogue)
            # a group holds several runners: each gets its own prefix in the partition's
            # store, as a record keyed by that runner would
            store = TransactionState(event.runner.encode(), state._transaction)
            held, written, out = step_as_worker(runner_state(event.runner, store), event,
                                                profiles[event.runner])
            held_states[event.runner] = held
            if written is not None:
                for name, part in zip(parts, stored_parts(written), strict=True):
                    if part is not None:
                        store.set(name, base64.b64encode(part).decode())
            points += out.points
        return encode_points(points) if points else None

    sdf = app.dataframe(source)
    sdf = sdf.apply(step, stateful=True).filter(lambda v: v is not None)
    sdf.to_topic(sink)
    app.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stridewatch.bench.peers")
    sub = parser.add_subparsers(dest="peer", required=True)
    raw = sub.add_parser("raw")
    raw.add_argument("--topic", required=True)
    raw.add_argument("--batches", type=int, required=True)
    raw.add_argument("--timeout", type=float, default=300.0)
    quix = sub.add_parser("quix")
    quix.add_argument("--input", required=True)
    quix.add_argument("--output", required=True)
    quix.add_argument("--group", required=True)
    quix.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.peer == "raw":
        result = asyncio.run(raw_loop(settings, args.topic, args.batches, args.timeout))
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        quix_app(settings, args.input, args.output, args.group, args.state_dir)


if __name__ == "__main__":
    main()
