"""The worker's runner states: kept in memory between records, written to the table.

The table holds each runner's stored parts (``stream.state_codec``); a state is read once
per runner after a start or a rebalance, kept (least recently active evicted past
``worker_states_in_memory``) and written after each record that changed it, once Kafka
holds that record's outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from faust.types import TableT

from ingest.contract import RunnerEvent
from stream.runner import RunnerState, StepOutput, process_event
from stream.state_codec import decode, encode, history_key, park, seen_key
from team.roster import RunnerProfile


@dataclass
class RunnerStep:
    """One runner's part of a record, folded: the outputs per event and the state write."""

    runner: str
    outputs: list[tuple[RunnerEvent, StepOutput]]
    failed: list[tuple[RunnerEvent, Exception]]
    save: Callable[[], None] | None


class RunnerStates:
    """Runner states kept in memory between records; the table holds their stored parts
    (``stream.state_codec``), read once per runner after a start or a rebalance."""

    def __init__(self, table: TableT[bytes, bytes | None], keep: int = 50_000) -> None:
        self.table = table
        self.keep = keep
        # least recently active first (dicts keep insertion order)
        self._states: dict[str, RunnerState] = {}

    def load(self, runner: str) -> RunnerState:
        state = self._states.pop(runner, None)
        if state is not None:
            self._states[runner] = state  # now the most recently active
        else:
            if len(self._states) >= self.keep:
                del self._states[next(iter(self._states))]
            key = runner.encode()
            state = decode(self.table.get(key), self.table.get(seen_key(key)),
                           self.table.get(history_key(key)), runner)
            self._states[runner] = state
        return state

    def save(self, state: RunnerState) -> None:
        """Write what changed: the live part always, the seen and history parts if due."""
        key = state.runner.encode()
        stored = encode(state)
        self.table[key] = stored.live
        if stored.seen is not None:
            self.table[seen_key(key)] = stored.seen
        if stored.history is not None:
            self.table[history_key(key)] = stored.history
        # the live batches to come need none of the history: keep it encoded (memory)
        park(state, stored.history or self.table.get(history_key(key)))

    def forget(self, runner: str) -> None:
        self._states.pop(runner, None)

    def clear(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)


def step_runner(states: RunnerStates, runner: str, events: list[RunnerEvent],
                 profile: RunnerProfile) -> RunnerStep:
    """Fold one runner's events (in order) into their state.

    All state handling is here: read, fold, and the write (``save``), which the caller
    makes only once Kafka holds the alerts. ``save`` is None when nothing changed (every
    event a duplicate). An event that fails leaves the state as it was before it: the
    step updates states in place, so the stored state is read again and the events before
    it folded in again.
    """
    state = states.load(runner)
    outputs: list[tuple[RunnerEvent, StepOutput]] = []
    failed: list[tuple[RunnerEvent, Exception]] = []
    changed = False
    for event in events:
        try:
            state, out = process_event(state, event, profile)
        except Exception as exc:  # one bad event must not stop its runner or the group
            failed.append((event, exc))
            states.forget(runner)
            state = states.load(runner)
            for done, _ in outputs:
                state, _ = process_event(state, done, profile)
            continue
        outputs.append((event, out))
        changed = changed or not out.duplicate
    final = state

    def save() -> None:
        states.save(final)

    return RunnerStep(runner, outputs, failed, save if changed else None)
