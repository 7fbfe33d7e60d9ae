"""Pain reports as the guidance reads them: during, after, the next morning, over weeks.

The pain-monitoring model (Silbernagel et al., AJSM 2007) accepts pain up to 5/10 during
running if it settles by the next morning; the ankle pain guidance adds what to do above
that, the Achilles pattern of morning stiffness building up, pain that has not improved
after 3-4 weeks, and the warning signs of bone stress. Each report is kept for six weeks
(``PainNote``) so the step can see the trends; the rules decide what fires.
"""

from __future__ import annotations

import bisect
from datetime import date, timedelta

from ingest.contract import PainReport, PainWhen
from rules import pain_sites
from rules.evaluator import Observation
from stream.days import day_loads, day_totals, local_day
from stream.load import week_change
from stream.state import PainNote, RunnerState
from team.roster import RunnerProfile

KEEP_PAIN_DAYS = 42
# morning reports within this many days, at least this many, make a trend
MORNING_TREND_DAYS = 7
MIN_MORNING_REPORTS = 3
# reports of the same place no further apart than this belong to one spell of pain
SPELL_GAP_DAYS = 10
DAY_S = 86400.0


def remember(state: RunnerState, report: PainReport) -> PainNote:
    """Keep the report (in time order) and forget those older than ``KEEP_PAIN_DAYS``."""
    note = PainNote(t=report.t, score=report.score, when=report.when.value,
                    site=report.where.value)
    notes = state.pain_notes
    notes.insert(bisect.bisect_right([n.t for n in notes], note.t), note)
    newest = notes[-1].t
    state.pain_notes = [n for n in notes if n.t >= newest - KEEP_PAIN_DAYS * DAY_S]
    return note


def _what(report: PainReport) -> dict[str, float | str]:
    return {"score": float(report.score),
            "where": pain_sites.place(report.where.value, report.where_text),
            "site_advice": pain_sites.advice(report.where.value)}


def _limits(report: PainReport) -> list[Observation]:
    how = [text for text, present in (("makes you limp", report.limping),
                                      ("you could not run through", report.had_to_stop))
           if present]
    if not how or report.score == 0:
        return []
    return [Observation("pain_limits_running", report.t, 1.0,
                        {**_what(report), "how": " and ".join(how)})]


def _next_morning(state: RunnerState, report: PainReport, profile: RunnerProfile
                  ) -> list[Observation]:
    """A morning report the day after a run: has the run's pain settled?"""
    day = local_day(report.t, profile)
    yesterday = day - timedelta(days=1)
    ran = day_totals(state, profile).get(yesterday)
    sore_after = any(n.when == PainWhen.AFTER and local_day(n.t, profile) == yesterday
                     for n in state.pain_notes)
    if (ran is None or ran.runs == 0) and not sore_after:
        return []
    what = f"{ran.distance_km:.1f} km yesterday" if ran and ran.runs else "yesterday"
    return [Observation("pain_next_morning", report.t, float(report.score),
                        {**_what(report), "yesterday": what})]


def _morning_trend(state: RunnerState, report: PainReport) -> list[Observation]:
    """Morning pain or stiffness building up over a week (the Achilles pattern)."""
    since = report.t - MORNING_TREND_DAYS * DAY_S
    mornings = [n for n in state.pain_notes
                if n.when == PainWhen.MORNING and since < n.t <= report.t]
    if len(mornings) < MIN_MORNING_REPORTS or mornings[-1].t != report.t:
        return []
    lowest = min(n.score for n in mornings[:-1])
    days = (report.t - mornings[0].t) / DAY_S
    return [Observation("morning_stiffness_rise", report.t, float(report.score - lowest), {
        **_what(report), "first_score": float(lowest), "latest_score": float(report.score),
        "days": round(days), "reports": float(len(mornings))})]


def _not_improving(state: RunnerState, report: PainReport) -> list[Observation]:
    """The same place hurting for weeks: compare the spell's first and latest week."""
    site = report.where.value
    spell: list[PainNote] = []
    for note in reversed([n for n in state.pain_notes if n.site == site and n.score > 0
                          and n.t <= report.t]):
        if spell and spell[-1].t - note.t > SPELL_GAP_DAYS * DAY_S:
            break
        spell.append(note)
    if len(spell) < 2 or report.score == 0:
        return []
    spell.reverse()
    first_t, last_t = spell[0].t, spell[-1].t
    days = (last_t - first_t) / DAY_S
    first_week = max(n.score for n in spell if n.t < first_t + 7 * DAY_S)
    last_week = max(n.score for n in spell if n.t > last_t - 7 * DAY_S)
    value = days if last_week >= first_week else 0.0
    return [Observation("pain_not_improving", report.t, value, {
        **_what(report), "days": round(days), "reports": float(len(spell)),
        "first_score": float(first_week), "latest_score": float(last_week)})]


def _bone_stress(state: RunnerState, report: PainReport, profile: RunnerProfile
                 ) -> list[Observation]:
    signs = [name for name, present in (
        ("pain pinpoint on a bone",
         report.pinpoint_on_bone or report.where.value == "bone_spot"),
        ("pain that grows as the run goes on", report.worse_as_run_goes_on),
        ("sharp pain hopping on that leg", report.hop_hurts),
        ("pain at night", report.when is PainWhen.NIGHT)) if present and report.score > 0]
    if not signs:
        return []
    day = local_day(report.t, profile)
    loads = day_loads(day_totals(state, profile), profile)
    _, _, change = week_change(loads, day)
    # only a full previous week inside the runner's history says mileage is rising
    known_since = date.fromisoformat(state.first_day) if state.first_day else day
    rising = change is not None and change > 1.1 and day - timedelta(days=13) >= known_since
    return [Observation("bone_stress_signs", report.t, len(signs) + (0.5 if rising else 0.0), {
        "signs": ", ".join(signs), "where": _what(report)["where"],
        "score": float(report.score), "mileage": "rising" if rising else "not rising",
        "week_change_pct": 100 * change if change is not None else 0.0})]


def pain_observations(state: RunnerState, report: PainReport, profile: RunnerProfile
                      ) -> list[Observation]:
    """Remember the report and say what it shows; the pain rules decide what fires."""
    remember(state, report)
    out: list[Observation] = []
    if report.when is PainWhen.DURING:
        out.append(Observation("pain_during_run", report.t, float(report.score),
                               _what(report)))
    elif report.when is PainWhen.AFTER:
        out.append(Observation("pain_after_run", report.t, float(report.score),
                               _what(report)))
    elif report.when is PainWhen.MORNING:
        out += _next_morning(state, report, profile)
        out += _morning_trend(state, report)
    out += _limits(report)
    out += _not_improving(state, report)
    out += _bone_stress(state, report, profile)
    return out
