"""The staged walk-run return to running after an ankle sprain.

Six stages, from 6 × (1 min run / 4 min walk) to 20 minutes of continuous running. A stage
is completed by runs that stay within it with no pain afterwards; a runner moves up once
they have done enough such runs and spent the stage's minimum days in it. A grade II
sprain adds about a week per stage, grade III two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class Stage:
    number: int
    run_min: float  # longest continuous running bout allowed
    walk_min: float
    repeats: int

    @property
    def total_run_min(self) -> float:
        return self.run_min * self.repeats

    def describe(self) -> str:
        if self.walk_min == 0:
            return f"{self.total_run_min:g} min continuous running"
        return f"{self.repeats} × ({self.run_min:g} min run / {self.walk_min:g} min walk)"


STAGES: tuple[Stage, ...] = (
    Stage(1, 1, 4, 6),
    Stage(2, 2, 3, 5),
    Stage(3, 3, 2, 5),
    Stage(4, 5, 1, 4),
    Stage(5, 10, 1, 2),
    Stage(6, 20, 0, 1),
)
FINAL_STAGE = len(STAGES)

# runs within the stage, without pain, before moving up
CLEAN_RUNS_TO_ADVANCE = 2
# minimum days per stage by sprain grade: grade II adds about a week, grade III two
MIN_DAYS_PER_STAGE = {1: 3, 2: 10, 3: 17}
# pain above this after (or during) a run means the stage was not tolerated
PAIN_LIMIT = 2
# a margin so a watch's rounding of a bout does not count as running too long
TOLERANCE = 1.1


def stage(number: int) -> Stage:
    return STAGES[max(1, min(FINAL_STAGE, number)) - 1]


def excess(stage_number: int, longest_bout_s: float, running_s: float) -> float:
    """How far a run went beyond the stage: >1 means beyond (1.5 = 50 % over)."""
    current = stage(stage_number)
    return max(longest_bout_s / (current.run_min * 60.0),
               running_s / (current.total_run_min * 60.0))


def within_stage(stage_number: int, longest_bout_s: float, running_s: float) -> bool:
    return excess(stage_number, longest_bout_s, running_s) <= TOLERANCE


def may_advance(stage_number: int, clean_runs: int, stage_started: date, today: date,
                grade: int) -> bool:
    return (stage_number < FINAL_STAGE and clean_runs >= CLEAN_RUNS_TO_ADVANCE
            and (today - stage_started).days >= MIN_DAYS_PER_STAGE[grade])
