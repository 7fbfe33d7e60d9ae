"""The core part: the pure step's cost per live batch, with a short and a long history.

:func:`step_as_worker` is the one place that knows how the worker holds a runner's state
and what it writes to the changelog per record: swap it when the worker's state changes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from base.settings import Settings
from ingest.contract import RunnerEvent
from stream.runner import RunnerState, StepOutput
from stream.state_codec import StoredState
from stridewatch.bench.common import bench_team, percentiles, progress, scaled
from team.roster import RunnerProfile


@dataclass
class HeldState:
    """What the worker holds per runner between records: the state, decoded (and parked
    once its history is stored), and the stored history part it was parked with."""

    state: RunnerState
    history: bytes | None = None

    @property
    def stored_bytes(self) -> int:
        """The runner's bytes in the table: every stored part."""
        from stream.state_codec import encode_live, encode_seen

        return (len(encode_live(self.state)) + len(encode_seen(self.state))
                + len(self.history or b""))


def stored_parts(stored: StoredState) -> tuple[bytes, bytes | None, bytes | None]:
    return stored.live, stored.seen, stored.history


def step_as_worker(held: HeldState | None, event: RunnerEvent, profile: RunnerProfile
                   ) -> tuple[HeldState, StoredState | None, StepOutput]:
    """One record through the pure step as the worker runs it.

    Returns what the worker holds afterwards, what it writes to the changelog (None: no
    write, a duplicate) and the step's outputs: the state stays in memory, the step
    updates it, the changed parts are encoded and the history is parked
    (``stream.app.RunnerStates``).
    """
    from stream.runner import process_event
    from stream.state_codec import encode, park

    held = held or HeldState(RunnerState(runner=event.runner))
    state, out = process_event(held.state, event, profile)
    if out.duplicate:
        return held, None, out
    stored = encode(state)
    history = stored.history or held.history
    park(state, history)
    return HeldState(state, history), stored, out


@dataclass
class HistoryResult:
    weeks: int
    runners: int
    batches: int
    samples: int
    live_batch_us: dict[str, float] = field(default_factory=dict)
    state_bytes_mean: float = math.nan  # held state per runner after the live run
    state_bytes_max: int = 0
    changelog_bytes_per_batch: float = math.nan  # mean bytes written per live batch
    history_events: int = 0
    alerts: int = 0


@dataclass
class CoreResult:
    runners: int
    live_minutes: float
    history: dict[str, HistoryResult]  # keyed by weeks of history

    def flat(self) -> dict[str, object]:
        """The JSON layout: every number keyed by history weeks."""
        by = self.history
        return {
            "runners": self.runners, "live_minutes": self.live_minutes,
            "live_batch_us_p50": {w: h.live_batch_us["p50"] for w, h in by.items()},
            "live_batch_us_p95": {w: h.live_batch_us["p95"] for w, h in by.items()},
            "live_batch_us_p99": {w: h.live_batch_us["p99"] for w, h in by.items()},
            "live_batch_us_max": {w: h.live_batch_us["max"] for w, h in by.items()},
            "state_bytes_mean": {w: h.state_bytes_mean for w, h in by.items()},
            "state_bytes_max": {w: h.state_bytes_max for w, h in by.items()},
            "changelog_bytes_per_batch": {w: h.changelog_bytes_per_batch
                                          for w, h in by.items()},
            "batches": {w: h.batches for w, h in by.items()},
            "samples": {w: h.samples for w, h in by.items()},
            "history_events": {w: h.history_events for w, h in by.items()},
            "alerts": {w: h.alerts for w, h in by.items()},
        }


def _decode(messages: Sequence[tuple[str, bytes]], received_at: float) -> list[RunnerEvent]:
    from ingest.decoders import InboundMessage
    from ingest.routing import decode_message

    return [decode_message(InboundMessage(topic, payload, received_at))
            for topic, payload in messages]


def run_history(settings: Settings, runners: int, weeks: int, minutes: float, end: datetime
                ) -> HistoryResult:
    """Fold ``weeks`` of history per runner (untimed), then time every live batch."""
    from ingest.simulator import plan_history, plan_live
    from rules.catalogue import load_catalogue
    from team.roster import load_roster

    catalogue = load_catalogue(settings.rules_dir)
    roster = load_roster(settings.roster_file)
    team = bench_team(runners)
    result = HistoryResult(weeks, runners, 0, 0)
    costs: list[float] = []
    written_sizes: list[int] = []
    held_sizes: list[int] = []
    clock = time.perf_counter
    with progress() as bar:
        task = bar.add_task(f"core: {weeks} weeks of history", total=runners)
        for r in team:
            profile = roster.profile(r.runner, catalogue)
            held: HeldState | None = None
            for event in _decode(list(plan_history(r, end, weeks)), end.timestamp()):
                held, _, out = step_as_worker(held, event, profile)
                result.history_events += 1
            for event in _decode(list(plan_live(r, end.timestamp(), minutes)),
                                 end.timestamp()):
                t0 = clock()
                held, written, out = step_as_worker(held, event, profile)
                spent = clock() - t0
                result.alerts += len(out.alerts)
                if event.samples is None:
                    continue
                costs.append(spent)
                result.batches += 1
                result.samples += len(event.samples.samples)
                written_sizes.append(written.size if written is not None else 0)
            if held is not None:
                held_sizes.append(held.stored_bytes)
            bar.advance(task)
    result.live_batch_us = scaled(percentiles(costs), 1e6)
    result.state_bytes_mean = sum(held_sizes) / len(held_sizes) if held_sizes else math.nan
    result.state_bytes_max = max(held_sizes, default=0)
    result.changelog_bytes_per_batch = (sum(written_sizes) / len(written_sizes)
                                        if written_sizes else math.nan)
    return result


def run_core(settings: Settings, runners: int, weeks: Sequence[int], minutes: float,
             end: datetime) -> CoreResult:
    history = {str(w): run_history(settings, runners, w, minutes, end) for w in weeks}
    return CoreResult(runners, minutes, history)
