"""What the stream keeps per runner, as small mutable structs.

A runner's state has two parts that change at different rates (``stream.state_codec``
stores them under two table keys):

- the **live** part changes with every batch: the session being folded right now, the
  sequence numbers seen, the smoothed gait and the rules' sustain tracks;
- the **history** part changes once a session or a day: the other sessions of the last
  six weeks, older days' totals, shoe mileage and the return-to-run plan;
- the sequences seen per device are stored on their own every few dozen batches; the
  ones added in between ride in the live part.

Structs are ``msgspec`` structs: no validation on construction (the contract was
validated at ingest), cheap attribute access, and a binary codec for the changelog.
The step updates them in place and returns the state it was given.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from ingest.contract import Sport
from rules.evaluator import RuleState
from stream.gait import GaitState

if TYPE_CHECKING:
    from stream.days import HistoryView

RUNNING_SPORTS = frozenset({Sport.RUNNING, Sport.TRAIL_RUNNING, Sport.TREADMILL})
# a batch without session id joins the device's open session unless this much time passed
SESSION_GAP_S = 30 * 60
KEEP_SESSIONS_DAYS = 42
KEEP_DAYS = 120
# gaps in a device's sequence numbers remembered before old ones are folded away
MAX_RANGES = 128


class SeenSequences:
    """Sequences seen on one device stream, as merged closed ranges.

    Devices may start anywhere (FIT imports number from the file's start time), and QoS 1
    or several bridges may deliver out of order, so this is a set, not a high-water mark.
    ``bounds`` is a flat, sorted array of 64-bit ints (lo0, hi0, lo1, hi1, …), so a lookup
    is one bisect and a thousand runners' sets take little memory. Past ``MAX_RANGES``
    gaps, the oldest ranges fold into ``floor``: everything at or below it counts as seen
    (an ancient straggler is dropped, and logged, rather than counted twice). Devices
    that number batches by time never fill a range, so the window, not the history,
    bounds the size.
    """

    __slots__ = ("bounds", "floor")

    def __init__(self, floor: int = -1, bounds: Iterable[int] = ()) -> None:
        self.floor = floor
        self.bounds = array("q", bounds)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeenSequences):
            return NotImplemented
        return self.floor == other.floor and self.bounds == other.bounds

    def __repr__(self) -> str:
        return f"SeenSequences(floor={self.floor}, ranges={self.ranges()})"

    def _in_ranges(self, seq: int) -> bool:
        # index of the first bound above seq: odd means inside [lo, hi]
        i = bisect.bisect_left(self.bounds, seq)
        return i % 2 == 1 or (i < len(self.bounds) and self.bounds[i] == seq)

    def contains(self, seq: int) -> bool:
        return seq <= self.floor or self._in_ranges(seq)

    def below_window(self, seq: int) -> bool:
        """Older than the gaps still remembered: maybe new, but cannot be told apart."""
        return seq <= self.floor and not self._in_ranges(seq)

    def add(self, seq: int) -> None:
        b = self.bounds
        if b and seq == b[-1] + 1:  # the common case: the next number of a counter
            b[-1] = seq
            return
        if not b or seq > b[-1]:
            b.extend((seq, seq))
        else:
            i = bisect.bisect_left(b, seq)
            if i % 2 == 1 or b[i] == seq:
                return  # already inside a range
            # i is even: seq lies between range i/2 - 1 and range i/2
            joins_left = i > 0 and b[i - 1] == seq - 1
            joins_right = b[i] == seq + 1
            if joins_left and joins_right:
                del b[i - 1:i + 1]
            elif joins_left:
                b[i - 1] = seq
            elif joins_right:
                b[i] = seq
            else:
                b[i:i] = array("q", (seq, seq))
        if len(b) > 2 * MAX_RANGES:
            self.floor = max(self.floor, b[1])
            del b[:2]

    def ranges(self) -> list[tuple[int, int]]:
        b = self.bounds
        return [(b[i], b[i + 1]) for i in range(0, len(b), 2)]


class SessionSummary(msgspec.Struct, kw_only=True, array_like=True):
    """One run's running totals, folded batch by batch (see ``stream.session_fold``)."""

    session_id: str
    device: str
    sport: Sport = Sport.RUNNING
    shoe: str | None = None
    surface: str | None = None
    start_t: float
    end_t: float
    ended: bool = False
    # the time the session was first seen at: its InfluxDB point keeps this timestamp even
    # when a late batch moves start_t earlier, so the point is rewritten, not duplicated
    anchor_t: float | None = None
    first_distance: tuple[float, float] | None = None  # (t, cumulative m) earliest
    last_distance: tuple[float, float] | None = None  # (t, cumulative m) latest
    speed_distance_m: float = 0.0
    foot_steps: int = 0
    cadence_sum: float = 0.0
    cadence_n: int = 0
    balance_sum: float = 0.0
    balance_n: int = 0
    gct_sum: float = 0.0
    gct_n: int = 0
    hr_sum: float = 0.0
    hr_n: int = 0
    climb_m: float = 0.0
    trimp: float = 0.0
    pronation_sum: float = 0.0
    pronation_n: int = 0
    # smoothed left share of contact time, averaged over the run (compensation baseline)
    balance_read_sum: float = 0.0
    balance_read_n: int = 0
    # speed bucket (m/s, 0.25 wide) -> [cadence sum, samples]: cadence at similar speed
    cadence_by_speed: dict[str, tuple[float, int]] = msgspec.field(default_factory=dict)
    fast_s: float = 0.0
    running_s: float = 0.0
    longest_bout_s: float = 0.0
    bout_start_t: float | None = None
    last_sample_t: float | None = None
    last_running: bool = False
    # (fields added later go last, with defaults: older stored states still read)
    # sum of the smoothed balance readings' squared distances from 50 %: their spread
    # (compensation); -1 for a session from before it was kept
    balance_read_sq: float = -1.0
    # the shortest walking break between two running bouts (0: none yet), and when the
    # walking break under way began (the return-to-run stages' walk intervals)
    shortest_walk_s: float = 0.0
    walk_start_t: float | None = None
    # the device's own totals for the run (a watch file's timer time and step count),
    # when its session events carry them
    device_timer_s: float | None = None
    device_steps: int | None = None

    @property
    def duration_s(self) -> float:
        """The run's duration, one definition for the session and its day: the device's
        timer time when it sent one, else the span from start to end (last sample or end
        event)."""
        if self.device_timer_s is not None:
            return self.device_timer_s
        return max(0.0, self.end_t - self.start_t)

    @property
    def distance_m(self) -> float:
        if self.first_distance and self.last_distance:
            return max(0.0, self.last_distance[1] - self.first_distance[1])
        return self.speed_distance_m

    @property
    def mean_cadence_spm(self) -> float | None:
        return self.cadence_sum / self.cadence_n if self.cadence_n else None

    @property
    def steps(self) -> float:
        """The device's own count when it sent one, else one per foot-tagged sample, else
        mean cadence x duration."""
        if self.device_steps is not None:
            return float(self.device_steps)
        if self.foot_steps:
            return float(self.foot_steps)
        cadence = self.mean_cadence_spm
        return cadence * self.duration_s / 60.0 if cadence else 0.0

    @property
    def gct_balance_pct(self) -> float | None:
        return self.balance_sum / self.balance_n if self.balance_n else None

    @property
    def counts_as_running(self) -> bool:
        return self.sport in RUNNING_SPORTS

    @property
    def mean_pronation_deg(self) -> float | None:
        return self.pronation_sum / self.pronation_n if self.pronation_n else None

    @property
    def mean_balance_reading(self) -> float | None:
        return self.balance_read_sum / self.balance_read_n if self.balance_read_n else None

    @property
    def has_reading_spread(self) -> bool:
        """Whether the balance readings' spread was kept (older states: not)."""
        return self.balance_read_n > 0 and self.balance_read_sq >= 0


class DayTotals(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    distance_km: float = 0.0
    duration_min: float = 0.0
    runs: int = 0
    trimp: float = 0.0
    climb_m: float = 0.0
    fast_min: float = 0.0

    def plus(self, s: SessionSummary) -> DayTotals:
        return DayTotals(distance_km=self.distance_km + s.distance_m / 1000.0,
                         duration_min=self.duration_min + s.duration_s / 60.0,
                         runs=self.runs + 1, trimp=self.trimp + s.trimp,
                         climb_m=self.climb_m + s.climb_m,
                         fast_min=self.fast_min + s.fast_s / 60.0)


NO_DAY = DayTotals()


class ReturnToRun(msgspec.Struct, frozen=True, kw_only=True):
    """Where a runner is in the walk-run plan (``stream.return_to_run``).

    Started from the roster's injury entry or from the runner's own sprain report.
    """

    plan_key: str
    stage: int
    stage_started: str  # iso date
    clean_runs: int = 0
    judged: tuple[str, ...] = ()  # session ids already counted for or against the stage
    done: bool = False
    # the local day of the last session judged (a rest day must follow it)
    last_session_day: str | None = None
    # the session a pain report already sent the runner back a stage for
    stepped_back_for: str | None = None


class PainNote(msgspec.Struct, frozen=True, array_like=True):
    """One pain report, kept for the trends: the 24-hour response, mornings, weeks."""

    t: float
    score: int
    when: str  # contract PainWhen value
    site: str  # contract PainSite value


class SprainCase(msgspec.Struct, frozen=True, kw_only=True):
    """The runner's own report of an ankle sprain, and their recovery checks since."""

    reported_t: float
    day: str  # iso local day of the injury
    side: str | None
    grade: int
    grade_from: str  # "a clinician's grade" or what the estimate rests on
    red_flags: tuple[str, ...] = ()
    # the local day a recovery check met every entry criterion
    criteria_met_day: str | None = None
    unmet: tuple[str, ...] = ()  # criteria the last recovery check did not meet


@dataclass(slots=True, eq=False)
class RunnerState:
    """One runner's state: live fields first, then history (see the module docstring)."""

    runner: str
    # --- live: changes with every batch
    seen: dict[str, SeenSequences] = field(default_factory=dict)
    # the session the last event changed; ``sessions`` holds it too, but it is stored
    # with the live part
    current: str | None = None
    open_session: dict[str, str] = field(default_factory=dict)  # device -> session id
    gait: GaitState = field(default_factory=GaitState)
    rules: RuleState = field(default_factory=RuleState)
    latest_t: float | None = None
    # the last local day that has a daily_load point (rest days after it get theirs later)
    load_days_through: str | None = None
    # --- history: changes once a session or a day
    sessions: dict[str, SessionSummary] = field(default_factory=dict)
    archived_days: dict[str, DayTotals] = field(default_factory=dict)  # iso date -> totals
    first_day: str | None = None
    shoe_km_archived: dict[str, float] = field(default_factory=dict)
    return_to_run: ReturnToRun | None = None
    # the local day old sessions were last folded into day totals
    pruned_day: str | None = None
    pain_notes: list[PainNote] = field(default_factory=list)  # oldest first
    sprain: SprainCase | None = None
    # --- persistence bookkeeping: sequences added since the seen sets were last stored
    # (they ride in the live part until then, see ``stream.state_codec``)
    unsaved_seen: dict[str, list[int]] = field(default_factory=dict)
    # --- derived, never stored: the history seen from the current session, and whether
    # the history part changed since it was last written
    view: HistoryView | None = None
    history_changed: bool = True
    # a worker may keep the history part encoded while the usual live batches of the
    # current session need none of it (``stream.state_codec.park``)
    parked_history: bytes | None = None

    def stored_fields(self) -> tuple[object, ...]:
        return (self.runner, self.seen, self.current, self.open_session, self.gait,
                self.rules, self.latest_t, self.load_days_through, self.sessions,
                self.archived_days, self.first_day, self.shoe_km_archived,
                self.return_to_run, self.pruned_day, self.pain_notes, self.sprain)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunnerState):
            return NotImplemented
        return self.stored_fields() == other.stored_fields()

    def mark_seen(self, stream: str, seen: SeenSequences, seq: int) -> None:
        seen.add(seq)
        unsaved = self.unsaved_seen.get(stream)
        if unsaved is None:
            self.unsaved_seen[stream] = [seq]
        else:
            unsaved.append(seq)

    def history_will_change(self) -> None:
        """The history part is about to change: it must be decoded, and stored after."""
        if self.parked_history is not None:
            raise AssertionError("a parked state's history changed: unpark it first")
        self.history_changed = True

    def touch_history(self) -> None:
        """Something only the history part holds changed: rebuild the view, store it."""
        self.history_will_change()
        self.view = None
