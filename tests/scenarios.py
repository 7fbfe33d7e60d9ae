"""One scenario per rule, plus a clean control runner, as MQTT messages.

Deterministic (no randomness): five weeks of steady running, then the day that should
fire the rule. The same scenarios run through the pure core, the Faust agent and the
real stack, so all three are held to the same expected alerts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

# a Monday, noon UTC; the scenarios' "today"
TODAY = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)
BASE_WEEKS = 5
RUN_WEEKDAYS = (0, 2, 4, 6)
Message = tuple[str, bytes]


@dataclass(frozen=True)
class Gait:
    """What a steady run looks like; scenarios change one thing."""

    km: float = 6.0
    speed_mps: float = 3.0
    cadence_spm: float = 170.0
    gct_ms: float = 250.0
    balance_pct: float | None = 50.0
    left_step_m: float | None = None  # per-foot samples when set
    right_step_m: float | None = None
    pronation_deg: float | None = None
    climb_per_sample_m: float = 0.1
    fast_minutes: float = 0.0  # run the first minutes at 4.2 m/s
    shoe: str | None = None
    every_s: float = 10.0
    one_batch: bool = False  # a whole-run sync rather than live batches
    # a walk-run: (run minutes, walk minutes, repeats)
    intervals: tuple[float, float, int] | None = None


def _payload(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def run(runner: str, start: datetime, gait: Gait, device: str = "watch",
        end_message: bool = True) -> list[Message]:
    t0 = start.timestamp()
    session = f"{device}-{int(t0)}"
    base = f"runners/{runner}/{device}"
    out: list[Message] = [(f"{base}/session", _payload({
        "seq": int(t0 * 1000), "session_id": session, "phase": "start", "t": t0,
        "shoe": gait.shoe}))]
    samples: list[dict[str, Any]] = []
    t = 0.0
    distance = 0.0
    foot = "L"

    def speed_at(elapsed: float) -> float:
        if gait.intervals:
            run_min, walk_min, repeats = gait.intervals
            cycle = (run_min + walk_min) * 60
            if elapsed // cycle >= repeats or elapsed % cycle >= run_min * 60:
                return 1.3  # walking
            return gait.speed_mps
        return 4.2 if elapsed < gait.fast_minutes * 60 else gait.speed_mps

    while distance < gait.km * 1000:
        speed = speed_at(t)
        walking = speed < 1.8
        sample: dict[str, Any] = {
            "t": round(t0 + t, 3), "speed_mps": speed, "distance_m": round(distance, 2),
            "cadence_spm": 115.0 if walking else gait.cadence_spm,
            "heart_rate_bpm": 145,
            # climb is per 10 s of running, whatever the sampling rate
            "elevation_gain_m": round(gait.climb_per_sample_m * gait.every_s / 10, 4)}
        if gait.left_step_m is not None and gait.right_step_m is not None:
            sample.update(foot=foot, gct_ms=gait.gct_ms,
                          step_length_m=gait.left_step_m if foot == "L" else gait.right_step_m)
            foot = "R" if foot == "L" else "L"
        else:
            sample["gct_ms"] = gait.gct_ms
            if gait.balance_pct is not None:
                sample["gct_balance_pct"] = gait.balance_pct
        if gait.pronation_deg is not None:
            sample["pronation_deg"] = gait.pronation_deg
        samples.append(sample)
        t += gait.every_s
        distance += speed * gait.every_s
    size = len(samples) if gait.one_batch else 60
    for i in range(0, len(samples), size):
        chunk = samples[i:i + size]
        out.append((f"{base}/samples", _payload({
            "seq": int(chunk[0]["t"] * 1000), "session_id": session, "samples": chunk})))
    if end_message:
        end_t = t0 + t
        out.append((f"{base}/session", _payload({
            "seq": int(end_t * 1000), "session_id": session, "phase": "end", "t": end_t})))
    return out


def history(runner: str, gait: Gait = Gait(), weeks: int = BASE_WEEKS,
            until: datetime = TODAY, alternate: Callable[[int], Gait] | None = None
            ) -> list[Message]:
    """Steady runs at 07:00 UTC on Mon/Wed/Fri/Sun for ``weeks`` before ``until``."""
    out: list[Message] = []
    first = (until - timedelta(days=weeks * 7)).replace(hour=7, minute=0)
    for i in range(weeks * 7):
        day = first + timedelta(days=i)
        if day.weekday() in RUN_WEEKDAYS and day < until.replace(hour=0):
            out += run(runner, day, alternate(i) if alternate else gait)
    return out


def pain(runner: str, when: datetime, score: int, kind: str = "after", seq: int = 1,
         **signs: bool) -> Message:
    return f"runners/{runner}/pain", _payload({
        "seq": seq, "t": when.timestamp(), "score": score, "where": "ankle", "when": kind,
        **signs})


@dataclass(frozen=True)
class Scenario:
    rule: str  # the rule this scenario is about ("" for the control runner)
    runner: str
    messages: list[Message]
    roster: dict[str, Any] = field(default_factory=dict)  # extra roster fields


def _today(hour: int) -> datetime:
    return TODAY.replace(hour=hour)


def scenarios(prefix: str = "sc") -> list[Scenario]:
    def rid(name: str) -> str:
        return f"{prefix}-{name}".replace("_", "-")

    out: list[Scenario] = []

    def add(rule: str, messages: Callable[[str], list[Message]],
            roster: dict[str, Any] | None = None, name: str | None = None) -> None:
        runner = rid(name or rule or "control")
        out.append(Scenario(rule, runner, messages(runner), roster or {}))

    add("", lambda r: history(r) + run(r, _today(13), Gait()))
    add("load_ratio", lambda r: history(r) + run(r, _today(13), Gait(km=22, one_batch=True)))
    add("session_spike", lambda r: history(r) + run(r, _today(13), Gait(km=7.5,
                                                                       one_batch=True)))
    # this week every run 1 km longer: the rolling week passes +10 % on Friday
    add("weekly_increase", lambda r: history(r, until=TODAY - timedelta(days=7))
        + history(r, Gait(km=6.0), weeks=1, until=TODAY)
        + [m for d in (0, 2, 4, 6) for m in run(
            r, (TODAY + timedelta(days=d)).replace(hour=7), Gait(km=7.0))])
    add("gct_balance", lambda r: history(r) + run(r, _today(13), Gait(
        km=1.2, balance_pct=51.2, every_s=1.0)))
    add("lr_symmetry", lambda r: history(r) + run(r, _today(13), Gait(
        km=1.0, left_step_m=1.00, right_step_m=1.07, every_s=0.35)))
    # a runner whose normal is 50.5 % left (within the even band) now runs at 49.5 %:
    # even by the colour bands, but over 3 SD (SD floor 0.3) from their own normal
    add("compensation", lambda r: history(r, alternate=lambda i: Gait(
        balance_pct=50.5 + (0.15 if i % 2 else -0.15)))
        + run(r, _today(13), Gait(km=1.2, balance_pct=49.5, every_s=1.0)))
    add("cadence_drop", lambda r: history(r) + run(r, _today(13), Gait(
        km=1.4, cadence_spm=160.0, every_s=1.0)))
    add("pain_after_run", lambda r: [*history(r, weeks=1), pain(r, _today(14), 6)])
    add("bone_stress", lambda r: [
        *history(r, weeks=1), pain(r, _today(14), 4, kind="during", pinpoint_on_bone=True)])
    # two signs (pinpoint on bone, at night) make it critical
    add("bone_stress", lambda r: [
        *history(r, weeks=1), pain(r, _today(22), 3, kind="night", pinpoint_on_bone=True)],
        name="bone-night")
    add("return_to_run", lambda r: run(r, _today(8), Gait(km=1.8)),
        {"injury": {"kind": "ankle_sprain", "grade": 1,
                    "since": (TODAY - timedelta(days=2)).date().isoformat(), "stage": 1}})
    add("shoe_mileage", lambda r: history(r, Gait(shoe="trainer-1"), weeks=1),
        {"shoes": [{"id": "trainer-1", "name": "Daily trainer", "start_km": 640.0}]})
    add("pronation", lambda r: history(r, Gait(pronation_deg=8.0)) + run(
        r, _today(13), Gait(km=1.4, pronation_deg=10.5, every_s=1.0)))
    add("hill_load", lambda r: history(r) + run(r, _today(13), Gait(
        climb_per_sample_m=1.0, one_batch=True)))
    add("fast_running_load", lambda r: history(r, Gait(fast_minutes=5)) + run(
        r, _today(13), Gait(km=6.0, speed_mps=4.2, one_batch=True)))
    return out


def return_to_run_plan(runner: str) -> tuple[list[Message], date]:
    """Stage 1 followed (two walk-runs), stage 2 reached, then broken by a 12-minute run.

    Days (TODAY = 0): -9 and -7 stage-1 walk-runs; -5 the next run moves the runner to
    stage 2 (two clean runs, 3 days in stage 1 for a grade I sprain) and follows it;
    0 a 12-minute continuous run, six times stage 2's 2-minute bouts.
    """
    since = (TODAY - timedelta(days=10)).date()
    stage1 = Gait(km=10, intervals=(1, 4, 6), every_s=5.0)
    stage2 = Gait(km=10, intervals=(2, 3, 5), every_s=5.0)
    messages = (run(runner, TODAY - timedelta(days=9), stage1)
                + run(runner, TODAY - timedelta(days=7), stage1)
                + run(runner, TODAY - timedelta(days=5), stage2)
                # stage 2 has had one clean run: a 12-minute continuous run breaks it
                + run(runner, TODAY, Gait(km=2.2, every_s=5.0)))
    return messages, since


def all_messages(items: list[Scenario]) -> Iterator[Message]:
    for scenario in items:
        yield from scenario.messages
