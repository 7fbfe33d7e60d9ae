"""A simulated team of runners (``stridewatch simulate``).

Generation is pure (``plan_*`` return the MQTT topic and JSON payload of every message);
publishing is a thin loop over paho with each runner's own credentials, so the broker's
ACL applies exactly as it does to real devices.

Sequence numbers are the batch's first event time in milliseconds: a re-run over the same
simulated days publishes the same sequences, and the pipeline counts them once.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from ingest import topics
from ingest.contract import PainWhen

Message = tuple[str, bytes]


@dataclass(frozen=True)
class SimulatedRunner:
    runner: str
    easy_km: float = 6.0  # a typical run
    speed_mps: float = 3.0
    cadence_spm: float = 172.0
    gct_ms: float = 245.0
    step_length_m: float = 1.05
    # left share of contact time minus 50, in percentage points (3.0 -> 53 % left)
    imbalance_pts: float = 0.0
    # relative cadence drop over the last two thirds of the live run (0.08 -> 8 % lower)
    cadence_drop: float = 0.0
    # the last week of history runs this many times the usual distance
    spike: float = 1.0
    pain_after: int | None = None
    runs_per_week: int = 4
    seed: int = 0


def _seq(t: float) -> int:
    return round(t * 1000)


def _payload(data: dict[str, object]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _run_days(runs_per_week: int) -> set[int]:
    # weekdays (Mon=0) spread over the week
    patterns = {1: {6}, 2: {2, 6}, 3: {1, 3, 6}, 4: {0, 2, 4, 6}, 5: {0, 1, 3, 4, 6},
                6: {0, 1, 2, 3, 4, 6}, 7: set(range(7))}
    return patterns[max(1, min(7, runs_per_week))]


def plan_history(r: SimulatedRunner, today: datetime, weeks: int, device: str = "watch",
                 every_s: float = 10.0, batch: int = 120) -> Iterator[Message]:
    """Past runs as coarse watch samples (one every ``every_s``), oldest first."""
    rng = random.Random(f"{r.runner}-{r.seed}-history")
    days = _run_days(r.runs_per_week)
    usual = replace(r, cadence_drop=0.0)  # what goes wrong happens today, not in the history
    start_day = (today - timedelta(days=weeks * 7)).replace(hour=7, minute=0, second=0,
                                                           microsecond=0)
    for offset in range(weeks * 7):
        day = start_day + timedelta(days=offset)
        if day.weekday() not in days or day.date() >= today.date():
            continue
        in_last_week = (today.date() - day.date()).days <= 7
        km = r.easy_km * rng.uniform(0.97, 1.03) * (r.spike if in_last_week else 1.0)
        if day.weekday() == 6:
            km *= 1.5  # the long run
        yield from plan_run(usual, day.timestamp(), km * 1000, device, every_s, batch,
                            imbalance=False, rng=rng)


def plan_run(r: SimulatedRunner, start_t: float, distance_m: float, device: str,
             every_s: float, batch: int, *, imbalance: bool, rng: random.Random,
             per_foot: bool = False) -> Iterator[Message]:
    """One run: session start, sample batches, session end."""
    session_id = f"{device}-{int(start_t)}"
    duration = distance_m / r.speed_mps
    base = topics.device_topic(r.runner, device, "").rstrip("/")
    yield f"{base}/session", _payload({"seq": _seq(start_t), "session_id": session_id,
                                       "phase": "start", "t": start_t, "sport": "running",
                                       "shoe": "trainer-1", "surface": "road"})
    samples: list[dict[str, object]] = []
    t = 0.0
    foot = "L"
    while t <= duration:
        progress = t / duration if duration else 0.0
        cadence = r.cadence_spm * (1 - r.cadence_drop if progress > 1 / 3 else 1.0)
        cadence += rng.gauss(0, 1.5)
        gct = r.gct_ms + rng.gauss(0, 6)
        imbalance_pts = r.imbalance_pts if imbalance else 0.0
        sample: dict[str, object] = {
            "t": round(start_t + t, 3), "cadence_spm": round(cadence, 1),
            "speed_mps": round(r.speed_mps + rng.gauss(0, 0.05), 3),
            "distance_m": round(min(t * r.speed_mps, distance_m), 1),
            "heart_rate_bpm": round(140 + 15 * progress + rng.gauss(0, 2)),
        }
        if per_foot:
            # contact time per foot: a 53 % left share means L/(L+R) = 0.53
            share = 0.5 + imbalance_pts / 100.0
            side_gct = 2 * gct * (share if foot == "L" else 1 - share)
            sample.update(foot=foot, gct_ms=round(side_gct, 1),
                          step_length_m=round(r.step_length_m + rng.gauss(0, 0.02), 3))
            foot = "R" if foot == "L" else "L"
            step = 60.0 / cadence
        else:
            balance = 50.0 + imbalance_pts + rng.gauss(0, 0.3)
            sample.update(gct_ms=round(gct, 1), gct_balance_pct=round(balance, 2),
                          step_length_m=round(r.step_length_m, 3),
                          vertical_oscillation_cm=round(8.5 + rng.gauss(0, 0.3), 2))
            step = every_s
        samples.append(sample)
        if len(samples) >= batch:
            yield f"{base}/samples", _batch(samples, session_id)
            samples = []
        t += step
    if samples:
        yield f"{base}/samples", _batch(samples, session_id)
    end_t = start_t + duration
    yield f"{base}/session", _payload({"seq": _seq(end_t), "session_id": session_id,
                                       "phase": "end", "t": end_t, "sport": "running"})


def _batch(samples: list[dict[str, object]], session_id: str) -> bytes:
    first_t = samples[0]["t"]
    assert isinstance(first_t, float)
    return _payload({"seq": _seq(first_t), "session_id": session_id, "samples": samples})


def plan_live(r: SimulatedRunner, end_t: float, minutes: float, device: str = "pod"
              ) -> Iterator[Message]:
    """Today's run ending at ``end_t``: per-foot samples, one batch per second of running."""
    rng = random.Random(f"{r.runner}-{r.seed}-{int(end_t)}")
    start_t = end_t - minutes * 60
    distance = r.speed_mps * minutes * 60
    batch = max(1, math.ceil(r.cadence_spm / 60))
    yield from plan_run(r, start_t, distance, device, 1.0, batch, imbalance=True, rng=rng,
                        per_foot=True)
    if r.pain_after is not None:
        t = end_t + 600
        yield topics.app_topic(r.runner, "pain"), _payload({
            "seq": _seq(t), "t": t, "score": r.pain_after, "where": "achilles",
            "when": PainWhen.AFTER.value})


def demo_team() -> list[SimulatedRunner]:
    """The demo's team: two steady runners, a load spike, an imbalance and a sore Achilles."""
    return [
        SimulatedRunner("ana", easy_km=7.0, speed_mps=3.2, seed=1),
        SimulatedRunner("ben", easy_km=6.0, speed_mps=3.0, spike=2.2, seed=2),
        SimulatedRunner("cleo", easy_km=8.0, speed_mps=3.4, imbalance_pts=3.5, seed=3),
        SimulatedRunner("dev", easy_km=5.0, speed_mps=2.8, cadence_drop=0.08, seed=4),
        SimulatedRunner("eli", easy_km=6.5, speed_mps=3.1, pain_after=7, seed=5),
    ]


def now_utc() -> datetime:
    return datetime.now(UTC)


def with_overrides(team: list[SimulatedRunner], **changes: dict[str, float]) -> list[
        SimulatedRunner]:
    """Apply per-runner overrides such as ``imbalance_pts={"ana": 3.0}``."""
    out = []
    for r in team:
        update = {name: values[r.runner] for name, values in changes.items()
                  if r.runner in values}
        out.append(replace(r, **update))  # type: ignore[arg-type]
    return out


Publish = Callable[[str, str, bytes], None]
