"""The walk-run return to running after an ankle sprain, as the guidance's table gives it.

| stage | sessions | running | walking |
| --- | --- | --- | --- |
| 1 | 1-2 | 6 × 1 min | 6 × 4 min |
| 2 | 3-4 | 6 × 2 min | 6 × 3 min |
| 3 | 5-6 | 6 × 3 min | 6 × 2 min |
| 4 | 7-8 | 6 × 4 min | 6 × 1 min |
| 5 | 9-10 | 20 min continuous, easy | – |

Each level is run twice, with a rest day between sessions, before moving up; from
session 11 the runner builds up gradually to normal volume. The table's time frame is
grade I's; grade II adds 1–2 weeks at each stage (the lower bound is used). For grade III
the guidance gives no per-stage figure and asks for a clinician's assessment first: the
plan starts only with a sign-off, and adds two weeks per stage unless the coach sets the
plan the clinician gave (``stridewatch roster set-injury``). Sessions run on flat, even
ground until the progression is complete.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stage:
    number: int
    run_min: float  # each running bout
    walk_min: float  # each walking break
    repeats: int

    @property
    def total_run_min(self) -> float:
        return self.run_min * self.repeats

    def describe(self) -> str:
        if self.walk_min == 0:
            return f"{self.total_run_min:g} min continuous easy running"
        return f"{self.repeats} × ({self.run_min:g} min run / {self.walk_min:g} min walk)"


STAGES: tuple[Stage, ...] = (
    Stage(1, 1, 4, 6),
    Stage(2, 2, 3, 6),
    Stage(3, 3, 2, 6),
    Stage(4, 4, 1, 6),
    Stage(5, 20, 0, 1),
)
FINAL_STAGE = len(STAGES)

# sessions within the stage, without pain, before moving up ("each level run twice")
CLEAN_RUNS_TO_ADVANCE = 2
# sessions are at least this many days apart (one rest day between)
MIN_DAYS_BETWEEN_SESSIONS = 2
# minimum days from a stage's start to the first session of the next: two sessions with
# a rest day between and after (grade I); grade II adds a week, grade III two
MIN_DAYS_PER_STAGE = {1: 4, 2: 11, 3: 18}
# pain above this during or after a session, or the next morning, sends the runner back
PAIN_LIMIT = 2
# a margin so a watch's rounding of a bout (or of a walking break) does not count
TOLERANCE = 1.1
# climbing above this per km is not flat ground
MAX_FLAT_CLIMB_M_PER_KM = 10.0
UNEVEN_SURFACES = frozenset({"trail", "grass", "sand"})


def stage(number: int) -> Stage:
    return STAGES[max(1, min(FINAL_STAGE, number)) - 1]


@dataclass(frozen=True, slots=True)
class SessionShape:
    """What a session did, in the plan's terms."""

    longest_bout_s: float
    running_s: float
    shortest_walk_s: float  # 0 when there was no walking break between running bouts
    surface: str | None
    climb_m: float
    distance_km: float


def beyond_stage(stage_number: int, shape: SessionShape) -> tuple[float, list[str]]:
    """How far a session went beyond the stage (>1: beyond) and what went beyond, in words."""
    current = stage(stage_number)
    bout = shape.longest_bout_s / (current.run_min * 60.0)
    total = shape.running_s / (current.total_run_min * 60.0)
    walk = 0.0
    if current.walk_min and shape.shortest_walk_s > 0:
        walk = current.walk_min * 60.0 / shape.shortest_walk_s
    what = []
    if bout > TOLERANCE:
        what.append(f"a running stretch of {shape.longest_bout_s / 60:.1f} min "
                    f"(the stage's are {current.run_min:g} min)")
    if total > TOLERANCE:
        what.append(f"{shape.running_s / 60:.1f} min of running in all "
                    f"(the stage has {current.total_run_min:g})")
    if walk > TOLERANCE:
        what.append(f"a walking break of only {shape.shortest_walk_s / 60:.1f} min "
                    f"(the stage's are {current.walk_min:g} min)")
    return max(bout, total, walk), what


def uneven_ground(shape: SessionShape) -> str | None:
    """Why a session was not on flat, even ground, or None."""
    if shape.surface in UNEVEN_SURFACES:
        return f"on {shape.surface}"
    if shape.distance_km > 0.5 and shape.climb_m / shape.distance_km > MAX_FLAT_CLIMB_M_PER_KM:
        return f"hilly ({shape.climb_m:.0f} m of climbing in {shape.distance_km:.1f} km)"
    return None


def min_days(grade: int) -> int:
    return MIN_DAYS_PER_STAGE.get(grade, MIN_DAYS_PER_STAGE[3])


def may_advance(stage_number: int, clean_runs: int, days_in_stage: int, grade: int) -> bool:
    return (stage_number < FINAL_STAGE and clean_runs >= CLEAN_RUNS_TO_ADVANCE
            and days_in_stage >= min_days(grade))


def completes_plan(stage_number: int, clean_runs: int) -> bool:
    return stage_number >= FINAL_STAGE and clean_runs >= CLEAN_RUNS_TO_ADVANCE
