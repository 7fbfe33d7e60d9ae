"""Left/right asymmetry: symmetry index, contact balance and the event-time smoothing.

The smoothing is specified (module docstring of ``stream.gait``) as an exponential
moving average of each foot's stance time in *event time* with time constant ``TAU_S``:
an old value's weight decays as exp(−age / TAU_S). Expected values below follow from that.
"""

from __future__ import annotations

import itertools
import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.contract import Foot, Sample
from stream.gait import (
    OBSERVE_EVERY_S,
    RESET_GAP_S,
    TAU_S,
    GaitState,
    balance_from_contact,
    symmetry_index,
    update_gait,
)

T0 = 1_700_000_000.0
STEP_S = 0.25  # one step every 0.25 s (240 steps/min), exact in binary floating point


def strides(start: float, seconds: float, left_ms: float, right_ms: float,
            step_s: float = STEP_S) -> list[Sample]:
    """Alternating per-step samples L, R, L, R … from ``start`` for ``seconds``."""
    n = round(seconds / step_s)
    return [Sample(t=start + i * step_s, foot=Foot.LEFT if i % 2 == 0 else Foot.RIGHT,
                   gct_ms=left_ms if i % 2 == 0 else right_ms) for i in range(n)]


# --------------------------------------------------------------------------- pure formulas


def test_symmetry_index_hand_values() -> None:
    # (260 − 240) / (0.5 · 500) · 100 = 20 / 250 · 100 = 8.0
    assert symmetry_index(240, 260) == pytest.approx(8.0)
    assert symmetry_index(260, 240) == pytest.approx(-8.0)
    # (1.10 − 1.00) / 1.05 · 100 = 9.5238…
    assert symmetry_index(1.00, 1.10) == pytest.approx(100 * 0.10 / 1.05)
    assert symmetry_index(250, 250) == 0.0


def test_symmetry_index_needs_positive_values() -> None:
    with pytest.raises(ValueError):
        symmetry_index(0, 0)


positive = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(left=positive, right=positive)
def test_symmetry_index_antisymmetric_and_bounded(left: float, right: float) -> None:
    si = symmetry_index(left, right)
    assert symmetry_index(right, left) == pytest.approx(-si, abs=1e-9)
    # |R − L| < R + L for positive values, so |SI| < 200
    assert abs(si) < 200.0
    if right > left:
        assert si > 0
    elif right < left:
        assert si < 0


def test_balance_from_contact() -> None:
    assert balance_from_contact(250, 250) == 50.0
    # 265 / (265 + 235) = 265 / 500 = 53 %
    assert balance_from_contact(265, 235) == pytest.approx(53.0)
    assert balance_from_contact(235, 265) == pytest.approx(47.0)


# --------------------------------------------------------------------------- smoothing


def test_first_samples_are_taken_as_they_are() -> None:
    state, readings = update_gait(GaitState(), strides(T0, 10, 265, 235))
    assert state.left_gct_ms == 265 and state.right_gct_ms == 235
    assert readings
    assert readings[-1].gct_balance_pct == pytest.approx(53.0)
    # SI = (235 − 265) / 250 · 100 = −12
    assert readings[-1].gct_symmetry_pct == pytest.approx(-12.0)


def test_53_47_split_converges_within_a_minute() -> None:
    # a minute of even running, then a minute of 265/235 ms (53 % left)
    even = strides(T0, 60, 250, 250)
    state, _ = update_gait(GaitState(), even)
    assert state.left_gct_ms == pytest.approx(250) and state.right_gct_ms == pytest.approx(250)
    shifted = strides(T0 + 60, 60, 265, 235)
    state, readings = update_gait(state, shifted)
    # each foot's EMA in event time: after 60 s its step has moved by 1 − e^(−60/15) = 98.2 %
    #   left  = 265 − 15·e^(−4) = 264.725, right = 235 + 15·e^(−4) = 235.275
    #   balance = 264.725 / 500 = 52.945 %   (≈ 53 %)
    # the last reading is at least 55 s after the change: residual ≤ 3·e^(−55/15) = 0.08 points
    assert readings[-1].gct_balance_pct == pytest.approx(53.0, abs=0.1)
    residual = 15 * math.exp(-60 / TAU_S)
    assert state.left_gct_ms == pytest.approx(265 - residual, abs=0.3)
    assert state.right_gct_ms == pytest.approx(235 + residual, abs=0.3)


def test_a_few_noisy_strides_barely_move_the_smoothed_value() -> None:
    state, _ = update_gait(GaitState(), strides(T0, 60, 250, 250))
    before = balance_from_contact(state.left_gct_ms or 0, state.right_gct_ms or 0)
    # three odd left strides of 320 ms among even ones: raw balance of one would be
    # 320 / 570 = 56.1 %. Each can move the left EMA by at most (1 − e^(−dt/τ))·70 ms with
    # dt ≤ 2 steps = 0.5 s: (1 − e^(−0.5/15))·70 ≈ 2.3 ms, so three ≤ 6.9 ms →
    # balance ≤ 256.9 / 506.9 = 50.68 %.
    noisy = strides(T0 + 60, 6, 250, 250)
    noisy = [s.model_copy(update={"gct_ms": 320.0}) if s.foot is Foot.LEFT and i in (0, 4, 8)
             else s for i, s in enumerate(noisy)]
    state, _ = update_gait(state, noisy)
    after = balance_from_contact(state.left_gct_ms or 0, state.right_gct_ms or 0)
    assert before == pytest.approx(50.0)
    assert 50.0 < after <= 50.7
    # and a minute and a half of even running later it is back to even
    state, readings = update_gait(state, strides(T0 + 66, 90, 250, 250))
    assert readings[-1].gct_balance_pct == pytest.approx(50.0, abs=0.05)


def test_device_reported_balance_is_smoothed_in_event_time() -> None:
    # a watch reporting balance once a second: 50 % for a minute, then 53 %
    samples = [Sample(t=T0 + i, gct_balance_pct=50.0) for i in range(60)]
    samples += [Sample(t=T0 + 60 + i, gct_balance_pct=53.0) for i in range(15)]
    state, _ = update_gait(GaitState(), samples)
    # last 50 % at T0+59, last 53 % at T0+74: 15 s = one time constant of 1 s steps, each
    # keeping e^(−1/15) of the gap: 50 + 3·(1 − e^(−15/15)) = 51.896
    assert state.balance_pct == pytest.approx(50 + 3 * (1 - math.exp(-1)), abs=1e-6)


def test_reset_after_a_long_gap() -> None:
    state, _ = update_gait(GaitState(), strides(T0, 60, 250, 250))
    assert state.last_t is not None
    # a new run after more than RESET_GAP_S: the old run's values are forgotten at once
    later = state.last_t + RESET_GAP_S + 1
    state, readings = update_gait(state, strides(later, 2 * OBSERVE_EVERY_S, 280, 220))
    assert state.left_gct_ms == 280 and state.right_gct_ms == 220
    assert readings and readings[0].gct_balance_pct == pytest.approx(56.0)  # 280 / 500


def test_no_reset_for_a_short_pause() -> None:
    state, _ = update_gait(GaitState(), strides(T0, 60, 250, 250))
    assert state.last_t is not None
    resumed = state.last_t + RESET_GAP_S - 1
    state, _ = update_gait(state, strides(resumed, 2, 280, 220))
    # after a 59 s pause, dt = 59 s for the first stride: 250 + 30·(1 − e^(−59/15)) ≈ 279.4
    assert state.left_gct_ms is not None and 250 < state.left_gct_ms < 280


def test_late_stragglers_are_ignored() -> None:
    state, _ = update_gait(GaitState(), strides(T0 + 10, 10, 250, 250))
    before = msgspec.structs.replace(state)
    same, readings = update_gait(state, strides(T0, 5, 400, 100))
    assert same == before
    assert readings == []


def test_readings_every_observe_interval() -> None:
    _state, readings = update_gait(GaitState(), strides(T0, 60, 260, 240))
    times = [r.t for r in readings]
    assert len(times) >= 60 / OBSERVE_EVERY_S - 1
    for a, b in itertools.pairwise(times):
        assert OBSERVE_EVERY_S <= b - a < OBSERVE_EVERY_S + 2 * STEP_S
    assert all(r.gct_balance_pct is not None for r in readings)


def test_split_batches_give_the_same_state_and_readings() -> None:
    samples = strides(T0, 40, 255, 245)
    whole_state, whole_readings = update_gait(GaitState(), samples)
    state, readings = GaitState(), []
    for i in range(0, len(samples), 7):
        state, out = update_gait(state, samples[i:i + 7])
        readings += out
    assert state == whole_state
    assert readings == whole_readings


def test_step_length_symmetry() -> None:
    samples = [Sample(t=T0 + i * STEP_S, foot=Foot.LEFT if i % 2 == 0 else Foot.RIGHT,
                      step_length_m=1.0 if i % 2 == 0 else 1.1) for i in range(40)]
    _, readings = update_gait(GaitState(), samples)
    assert readings
    # (1.1 − 1.0) / 1.05 · 100 = 9.52 %; no stance times, so no balance
    assert readings[-1].step_symmetry_pct == pytest.approx(100 * 0.1 / 1.05)
    assert readings[-1].gct_balance_pct is None
