"""The gait of the run under way: left/right contact-time balance and symmetry indices,
and smoothed cadence, speed and pronation for the personal baselines.

Per-step readings are noisy, so each foot's stance time and step length is smoothed with
an exponential moving average in event time (time constant ``TAU_S``); a few odd strides
move it little, a sustained change moves it fully within a minute. Whether a change lasts
long enough to matter is the rule evaluator's job (sustain windows).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from ingest.contract import Foot, Sample

TAU_S = 15.0
# a pause longer than this starts the smoothing afresh (new run, or watch paused)
RESET_GAP_S = 60.0
# how often (event time) a smoothed reading is handed to the rules
OBSERVE_EVERY_S = 5.0


def symmetry_index(left: float, right: float) -> float:
    """SI = (R − L) / (0.5 (R + L)) · 100; positive when the right value is larger."""
    mean = 0.5 * (left + right)
    if mean <= 0:
        raise ValueError("symmetry index needs positive values")
    return (right - left) / mean * 100.0


def balance_from_contact(left_ms: float, right_ms: float) -> float:
    """Left share of ground contact time, in % (50 = even)."""
    return 100.0 * left_ms / (left_ms + right_ms)


def _weight(dt: float) -> float:
    """How much a new reading moves the average after ``dt`` seconds of event time."""
    return 1.0 - math.exp(-max(dt, 0.0) / TAU_S)


def _blend(previous: float | None, value: float, weight: float) -> float:
    return value if previous is None else previous + weight * (value - previous)


class GaitState(msgspec.Struct, kw_only=True, array_like=True):
    """The smoothed readings of the run under way (changed in place by ``update_gait``)."""

    last_t: float | None = None
    last_observed_t: float | None = None
    # each foot's readings are smoothed over that foot's own time steps
    left_last_t: float | None = None
    right_last_t: float | None = None
    balance_pct: float | None = None  # device-reported balance, smoothed
    left_gct_ms: float | None = None
    right_gct_ms: float | None = None
    left_step_m: float | None = None
    right_step_m: float | None = None
    # smoothed the same way, for the cadence-at-speed and pronation baselines
    cadence_spm: float | None = None
    speed_mps: float | None = None
    pronation_deg: float | None = None

    def restart(self) -> None:
        for name in self.__struct_fields__:
            setattr(self, name, None)


@dataclass(frozen=True, slots=True)
class GaitReading:
    t: float
    gct_balance_pct: float | None
    gct_symmetry_pct: float | None
    step_symmetry_pct: float | None
    cadence_spm: float | None = None
    speed_mps: float | None = None
    pronation_deg: float | None = None

    @property
    def symmetry_pct(self) -> float | None:
        """The larger of the stance-time and step-length symmetry indices, unsigned."""
        values = [abs(v) for v in (self.gct_symmetry_pct, self.step_symmetry_pct)
                  if v is not None]
        return max(values) if values else None


def _reading(state: GaitState, t: float) -> GaitReading:
    balance = state.balance_pct
    gct_si = step_si = None
    if state.left_gct_ms and state.right_gct_ms:
        gct_si = symmetry_index(state.left_gct_ms, state.right_gct_ms)
        if balance is None:
            balance = balance_from_contact(state.left_gct_ms, state.right_gct_ms)
    if state.left_step_m and state.right_step_m:
        step_si = symmetry_index(state.left_step_m, state.right_step_m)
    return GaitReading(t, balance, gct_si, step_si, state.cadence_spm, state.speed_mps,
                            state.pronation_deg)


def update_gait(state: GaitState, samples: Iterable[Sample]
                ) -> tuple[GaitState, list[GaitReading]]:
    """Fold samples into the smoothed state (in place); return readings every
    ``OBSERVE_EVERY_S`` of event time."""
    s = state
    readings: list[GaitReading] = []
    for sample in samples:
        t = sample.t
        last_t = s.last_t
        if last_t is not None and t < last_t:
            continue  # older than what we have folded in: a late straggler
        if last_t is None or t - last_t > RESET_GAP_S:
            s.restart()
            last_t = t
        # one weight per time step, shared by every reading of the sample
        weight = _weight(t - last_t)
        if sample.gct_balance_pct is not None:
            s.balance_pct = _blend(s.balance_pct, sample.gct_balance_pct, weight)
        if sample.cadence_spm is not None and sample.cadence_spm > 0:
            s.cadence_spm = _blend(s.cadence_spm, sample.cadence_spm, weight)
        if sample.speed_mps is not None:
            s.speed_mps = _blend(s.speed_mps, sample.speed_mps, weight)
        if sample.pronation_deg is not None:
            s.pronation_deg = _blend(s.pronation_deg, sample.pronation_deg, weight)
        foot = sample.foot
        if foot is Foot.LEFT:
            foot_weight = _weight(t - s.left_last_t if s.left_last_t is not None else 0.0)
            if sample.gct_ms is not None:
                s.left_gct_ms = _blend(s.left_gct_ms, sample.gct_ms, foot_weight)
            if sample.step_length_m is not None:
                s.left_step_m = _blend(s.left_step_m, sample.step_length_m, foot_weight)
            s.left_last_t = t
        elif foot is Foot.RIGHT:
            foot_weight = _weight(t - s.right_last_t if s.right_last_t is not None else 0.0)
            if sample.gct_ms is not None:
                s.right_gct_ms = _blend(s.right_gct_ms, sample.gct_ms, foot_weight)
            if sample.step_length_m is not None:
                s.right_step_m = _blend(s.right_step_m, sample.step_length_m, foot_weight)
            s.right_last_t = t
        s.last_t = t
        observed = s.last_observed_t
        if observed is None or t - observed >= OBSERVE_EVERY_S:
            s.last_observed_t = t
            reading = _reading(s, t)
            if (reading.gct_balance_pct is not None or reading.step_symmetry_pct is not None
                    or reading.cadence_spm is not None or reading.pronation_deg is not None):
                readings.append(reading)
    return s, readings
