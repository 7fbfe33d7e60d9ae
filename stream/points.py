"""The InfluxDB point layout of the stream's outputs (schema in docs/influxdb.md).

One function per measurement, from the step's own values to a :class:`MetricPoint`:
tags are the runner's team and id plus a few low-cardinality labels; everything that
varies per reading is a field. Times are chosen so a rewritten point overwrites itself.
"""

from __future__ import annotations

from ingest.contract import PainReport, SampleBatch
from rules.alerts import Alert
from stream import metrics
from stream.days import LOAD_UNITS, DayFigures, day_start_s
from stream.gait import GaitReading
from stream.metrics import MetricPoint
from stream.state import ReturnToRun, SessionSummary
from team.roster import RunnerProfile


def tags(profile: RunnerProfile, **extra: str) -> dict[str, str]:
    return {"team": profile.team, "runner": profile.runner, **extra}


def session_point(session: SessionSummary, profile: RunnerProfile) -> MetricPoint:
    return MetricPoint.make(metrics.SESSION, tags(profile, sport=session.sport.value), {
        "session_id": session.session_id, "device": session.device,
        "distance_km": round(session.distance_m / 1000.0, 4),
        "duration_min": round(session.duration_s / 60, 3),
        "steps": round(session.steps), "cadence_spm": session.mean_cadence_spm,
        # a device's own balance, else the balance read from left/right contact times
        # (a foot pod per foot), as the run's run_window points show it
        "gct_balance_pct": session.gct_balance_pct if session.gct_balance_pct is not None
        else session.mean_balance_reading,
        "gct_ms": session.gct_sum / session.gct_n if session.gct_n else None,
        "heart_rate_bpm": session.hr_sum / session.hr_n if session.hr_n else None,
        "ended": session.ended, "shoe": session.shoe, "surface": session.surface,
    }, session.anchor_t if session.anchor_t is not None else session.start_t)


def daily_load_point(figures: DayFigures, profile: RunnerProfile) -> MetricPoint:
    """A day's load, stamped at local midnight; rewritten as the day's runs come in."""
    total, ratio = figures.totals, figures.ratio
    change = figures.week_change
    return MetricPoint.make(metrics.DAILY_LOAD, tags(profile), {
        "load": round(figures.load, 4), "load_unit": LOAD_UNITS[profile.load_metric],
        "distance_km": round(total.distance_km, 4),
        "duration_min": round(total.duration_min, 3), "runs": total.runs,
        "trimp": round(total.trimp, 2), "climb_m": round(total.climb_m, 1),
        "fast_min": round(total.fast_min, 2),
        "acute": round(ratio.acute, 4), "chronic": round(ratio.chronic, 4),
        "acwr": round(ratio.ratio, 4) if ratio.ratio is not None else None,
        "week_load": round(figures.weeks.loads[0], 4),
        "last_week_load": round(figures.weeks.loads[1], 4),
        "week_change": round(change, 4) if change is not None else None,
        "longest_run_km_30d": round(figures.longest_run_km_30d, 4)
        if figures.longest_run_km_30d is not None else None,
    }, day_start_s(figures.day, profile))


# the per-batch means of a run_window point: field name -> sample attribute
WINDOW_MEANS = (("cadence_spm", "cadence_spm"), ("gct_ms", "gct_ms"),
                ("speed_mps", "speed_mps"), ("step_length_m", "step_length_m"),
                ("heart_rate_bpm", "heart_rate_bpm"), ("pronation_deg", "pronation_deg"))


def window_point(batch: SampleBatch, device: str, profile: RunnerProfile,
                 reading: GaitReading | None) -> MetricPoint:
    """One point per device batch: the batch's means and the latest smoothed gait."""
    samples = batch.samples
    fields: dict[str, metrics.FieldValue | None] = {"samples": len(samples)}
    for name, attr in WINDOW_MEANS:
        total, n = 0.0, 0
        for sample in samples:
            value = getattr(sample, attr)
            # a cadence of 0 is a device that has not locked on yet, not a reading
            if value is not None and (value or attr != "cadence_spm"):
                total += value
                n += 1
        fields[name] = total / n if n else None
    if reading is not None:
        fields["gct_balance_pct"] = reading.gct_balance_pct
        fields["gct_symmetry_pct"] = reading.gct_symmetry_pct
        fields["step_symmetry_pct"] = reading.step_symmetry_pct
    return MetricPoint.make(metrics.RUN_WINDOW, tags(profile, device=device), fields, samples[-1].t)


def pain_point(report: PainReport, profile: RunnerProfile) -> MetricPoint:
    return MetricPoint.make(metrics.PAIN, tags(profile, when=report.when.value), {
        "score": report.score, "where": report.where.value,
        "where_text": report.where_text or "",
        "pinpoint_on_bone": report.pinpoint_on_bone,
        "worse_as_run_goes_on": report.worse_as_run_goes_on, "limping": report.limping,
        "had_to_stop": report.had_to_stop, "hop_hurts": report.hop_hurts}, report.t)


def return_to_run_point(plan: ReturnToRun, profile: RunnerProfile, t: float) -> MetricPoint:
    return MetricPoint.make(metrics.RETURN_TO_RUN, tags(profile), {
        "stage": plan.stage, "clean_runs": plan.clean_runs, "done": plan.done}, t)


def alert_point(alert: Alert, profile: RunnerProfile) -> MetricPoint:
    labels = tags(profile, rule=alert.rule, severity=alert.severity)
    return MetricPoint.make(metrics.ALERT, labels, {
        "alert_id": alert.alert_id, "title": alert.title, "message": alert.message,
        "next_step": alert.next_step,  # filled in for this alert, as the runner read it
        "value": float(alert.evidence.get("value", 0.0)), "to_runner": alert.to_runner},
        alert.fired_at)
