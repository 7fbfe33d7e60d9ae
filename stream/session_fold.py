"""Folding a batch of samples into the session it belongs to.

A session's figures are running sums (distance, steps, cadence, contact time, heart rate,
climb, TRIMP, time spent running and fast, the longest continuous bout, the shortest
walking break between bouts), so a batch only
touches the session it belongs to, whatever the length of the runner's history.
"""

from __future__ import annotations

import math

from ingest.contract import Sample, SampleBatch
from stream.state import SESSION_GAP_S, RunnerState, SessionSummary
from team.roster import RunnerProfile

# walking is slower than this; without speed, a cadence this high means running
RUNNING_SPEED_MPS = 1.8
RUNNING_CADENCE_SPM = 140.0
# readings further apart than this are a pause, not time spent running
MAX_STEP_GAP_S = 10.0


def is_running(sample: Sample) -> bool:
    if sample.speed_mps is not None:
        return sample.speed_mps >= RUNNING_SPEED_MPS
    return sample.cadence_spm is not None and sample.cadence_spm >= RUNNING_CADENCE_SPM


def trimp_per_minute(hr: float, resting: float, maximum: float) -> float:
    """Banister's TRIMP rate: HRr · 0.64 · e^(1.92 · HRr), HRr = heart-rate reserve share."""
    reserve = min(1.0, max(0.0, (hr - resting) / (maximum - resting)))
    return reserve * 0.64 * math.exp(1.92 * reserve)


_BUCKETS: dict[int, str] = {}


def speed_bucket(speed_mps: float) -> str:
    """The 0.25 m/s wide speed band a speed falls in, as its label (e.g. "3.25")."""
    quarter = round(speed_mps * 4)
    label = _BUCKETS.get(quarter)
    if label is None:
        label = _BUCKETS[quarter] = f"{quarter / 4:.2f}"
    return label


def fold_batch(s: SessionSummary, batch: SampleBatch, profile: RunnerProfile) -> None:
    """Add a batch's samples to the session's running sums (in place)."""
    prev_speed: float | None = None
    fast_mps = profile.fast_speed_mps
    trimp_hr = (profile.resting_hr_bpm, profile.max_hr_bpm) \
        if profile.resting_hr_bpm and profile.max_hr_bpm else None
    for sample in batch.samples:
        t = sample.t
        last_t = s.last_sample_t
        dt = t - last_t if last_t is not None and t >= last_t else None
        if dt is not None and dt > MAX_STEP_GAP_S:
            dt = None  # a pause
        if t < s.start_t:
            s.start_t = t
        if t > s.end_t:
            s.end_t = t
        if sample.distance_m is not None:
            point = (t, sample.distance_m)
            if s.first_distance is None or t < s.first_distance[0]:
                s.first_distance = point
            if s.last_distance is None or t >= s.last_distance[0]:
                s.last_distance = point
        speed = sample.speed_mps
        cadence = sample.cadence_spm
        if speed is not None:
            if dt is not None and prev_speed is not None:
                s.speed_distance_m += prev_speed * dt
            prev_speed = speed
            if dt is not None and speed >= fast_mps:
                s.fast_s += dt
            if cadence:
                key = speed_bucket(speed)
                total, n = s.cadence_by_speed.get(key, (0.0, 0))
                s.cadence_by_speed[key] = (total + cadence, n + 1)
        running = is_running(sample)
        if running:
            if dt is not None and s.last_running:
                s.running_s += dt
            else:
                s.bout_start_t = t
            bout = t - (s.bout_start_t or t)
            if bout > s.longest_bout_s:
                s.longest_bout_s = bout
            walk_start = s.walk_start_t
            if walk_start is not None and not s.last_running:
                # a walking break between two running bouts ends
                walk = t - walk_start
                if walk > 0 and (s.shortest_walk_s == 0 or walk < s.shortest_walk_s):
                    s.shortest_walk_s = walk
                s.walk_start_t = None
        elif s.last_running:
            s.walk_start_t = t
        s.last_running = running
        if sample.foot is not None:
            s.foot_steps += 1
        if cadence is not None and cadence > 0:
            s.cadence_sum += cadence
            s.cadence_n += 1
        if sample.gct_balance_pct is not None:
            s.balance_sum += sample.gct_balance_pct
            s.balance_n += 1
        if sample.gct_ms is not None:
            s.gct_sum += sample.gct_ms
            s.gct_n += 1
        hr = sample.heart_rate_bpm
        if hr is not None:
            s.hr_sum += hr
            s.hr_n += 1
            if dt is not None and trimp_hr is not None:
                s.trimp += dt / 60.0 * trimp_per_minute(hr, *trimp_hr)
        if sample.pronation_deg is not None:
            s.pronation_sum += sample.pronation_deg
            s.pronation_n += 1
        if sample.elevation_gain_m is not None:
            s.climb_m += sample.elevation_gain_m
        if last_t is None or t >= last_t:
            s.last_sample_t = t


def fits_session(s: SessionSummary, device: str, first_t: float) -> bool:
    return (s.device == device and s.start_t - SESSION_GAP_S <= first_t <= s.end_t + SESSION_GAP_S
            and (not s.ended or first_t <= s.end_t))


def session_for_batch(state: RunnerState, device: str, batch: SampleBatch) -> str:
    """The id of the session a batch belongs to; updates the device's open session.

    A batch without session id joins the device's session whose time span (give or take
    the gap) holds it; a late batch of an earlier run finds that run, not the one open now.
    """
    if batch.session_id:
        state.open_session[device] = batch.session_id
        return batch.session_id
    first_t = batch.samples[0].t
    current = state.open_session.get(device)
    open_now = state.sessions.get(current) if current is not None else None
    if open_now is not None and fits_session(open_now, device, first_t):
        return open_now.session_id  # the usual case: the run under way
    candidates = [s for s in state.sessions.values() if fits_session(s, device, first_t)]
    if candidates:
        return min(candidates, key=lambda s: (abs(first_t - s.end_t), s.session_id)
                   ).session_id
    new_id = f"{device}-{int(first_t)}"
    if open_now is None or first_t > open_now.end_t:
        state.open_session[device] = new_id
    return new_id
