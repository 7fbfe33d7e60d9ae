"""Left/right asymmetry from stride samples: contact-time balance and symmetry indices.

Per-step readings are noisy, so each foot's stance time and step length is smoothed with
an exponential moving average in event time (time constant ``TAU_S``); a few odd strides
move it little, a sustained change moves it fully within a minute. Whether a change lasts
long enough to matter is the rule evaluator's job (sustain windows).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

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


def _blend(previous: float | None, value: float, dt: float) -> float:
    if previous is None:
        return value
    alpha = 1.0 - math.exp(-max(dt, 0.0) / TAU_S)
    return previous + alpha * (value - previous)


class AsymmetryState(BaseModel):
    model_config = ConfigDict(frozen=True)

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


@dataclass(frozen=True, slots=True)
class AsymmetryReading:
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


def _reading(state: AsymmetryState, t: float) -> AsymmetryReading:
    balance = state.balance_pct
    gct_si = step_si = None
    if state.left_gct_ms and state.right_gct_ms:
        gct_si = symmetry_index(state.left_gct_ms, state.right_gct_ms)
        if balance is None:
            balance = balance_from_contact(state.left_gct_ms, state.right_gct_ms)
    if state.left_step_m and state.right_step_m:
        step_si = symmetry_index(state.left_step_m, state.right_step_m)
    return AsymmetryReading(t, balance, gct_si, step_si, state.cadence_spm, state.speed_mps,
                            state.pronation_deg)


def update_asymmetry(state: AsymmetryState, samples: Iterable[Sample]
                     ) -> tuple[AsymmetryState, list[AsymmetryReading]]:
    """Fold samples into the smoothed state; return readings every ``OBSERVE_EVERY_S``."""
    s = state.model_dump()
    readings: list[AsymmetryReading] = []
    for sample in samples:
        last_t = s["last_t"]
        if last_t is not None and sample.t < last_t:
            continue  # older than what we have folded in: a late straggler
        if last_t is None or sample.t - last_t > RESET_GAP_S:
            s = AsymmetryState().model_dump()
            last_t = sample.t
        dt = sample.t - last_t
        if sample.gct_balance_pct is not None:
            s["balance_pct"] = _blend(s["balance_pct"], sample.gct_balance_pct, dt)
        for name in ("cadence_spm", "speed_mps", "pronation_deg"):
            value = getattr(sample, name)
            if value is not None and (name != "cadence_spm" or value > 0):
                s[name] = _blend(s[name], value, dt)
        if sample.foot is not None:
            side = "left" if sample.foot is Foot.LEFT else "right"
            foot_last = s[f"{side}_last_t"]
            foot_dt = sample.t - foot_last if foot_last is not None else 0.0
            if sample.gct_ms is not None:
                s[f"{side}_gct_ms"] = _blend(s[f"{side}_gct_ms"], sample.gct_ms, foot_dt)
            if sample.step_length_m is not None:
                s[f"{side}_step_m"] = _blend(s[f"{side}_step_m"], sample.step_length_m,
                                             foot_dt)
            s[f"{side}_last_t"] = sample.t
        s["last_t"] = sample.t
        observed = s["last_observed_t"]
        if observed is None or sample.t - observed >= OBSERVE_EVERY_S:
            s["last_observed_t"] = sample.t
            reading = _reading(AsymmetryState(**s), sample.t)
            if any(v is not None for v in (reading.gct_balance_pct, reading.step_symmetry_pct,
                                           reading.cadence_spm, reading.pronation_deg)):
                readings.append(reading)
    return AsymmetryState(**s), readings
