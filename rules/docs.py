"""The rules page (docs/rules.md), generated from the catalogue so it cannot drift."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rules.alerts import DISCLAIMER
from rules.catalogue import CAUSES, Rule
from rules.pain_sites import SITE_ADVICE, SITE_NAMES
from rules.return_to_run import (
    MAX_FLAT_CLIMB_M_PER_KM,
    MIN_DAYS_PER_STAGE,
    PAIN_LIMIT,
    STAGES,
    UNEVEN_SURFACES,
)

STRENGTH_WORDS = {
    "guidance": "the physiotherapy guidance",
    "study": "a study in runners",
    "limited": "limited evidence",
    "contested": "contested",
    "descriptive": "describes how common a value is",
    "self_comparison": "a change from the runner's own normal",
    "common_practice": "a rule of thumb",
}

RULES_PAGE = Path(__file__).resolve().parent.parent / "docs" / "rules.md"


def _levels(rule: Rule) -> str:
    parts = []
    for level in rule.levels:
        op = ">" if rule.direction == "above" else "<"
        signal = rule.level_signal(level)
        sustain = f" for ≥ {level.sustain_s:g} s" if level.sustain_s else ""
        source = f" ({level.source})" if level.source else ""
        parts.append(f"{level.severity}: `{signal}` {op} {level.threshold:g}{sustain}{source}")
    return "<br>".join(parts)


def render_rules_page(catalogue: Mapping[str, Rule]) -> str:
    lines = [
        "# Injury-risk rules",
        "",
        "Generated from `rules/catalogue/*.yaml` by `stridewatch rules docs`; do not edit.",
        "Every threshold can be overridden per team and per runner in the roster",
        "(`rule_overrides: {rule_id: {thresholds: {warn: 1.6}, sustain_s: {…},",
        "cooldown_h: …, enabled: false}}`).",
        "",
        "To see what these rules, or a roster's overrides, would have fired on recorded",
        "events, run them offline: `stridewatch rules backtest EVENTS.jsonl [--roster FILE]",
        "[--rules DIR]` reads one `{\"topic\": …, \"payload\": {…}}` a line and prints each",
        "alert as a JSON line, with a count per rule and severity on stderr",
        "([backtest.md](backtest.md)).",
        "",
        f"Every alert ends with: *{DISCLAIMER}*",
        "",
        "| rule | fires when | cooldown | evidence | source |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rule in sorted(catalogue.values(), key=lambda r: r.id):
        lines.append(f"| `{rule.id}` — {rule.title} | {_levels(rule)} | "
                     f"{rule.cooldown_h:g} h | {STRENGTH_WORDS[rule.evidence_strength]} | "
                     f"{rule.source} |")
    lines += ["", "## How sure each rule is", "",
              "Every alert of these rules carries its caveat (\"How sure this is: …\").", ""]
    lines += [f"- `{rule.id}` ({STRENGTH_WORDS[rule.evidence_strength]}): {rule.caveat}"
              for rule in sorted(catalogue.values(), key=lambda r: r.id) if rule.caveat]
    lines += ["", "## One message per cause", "",
              "Rules about the same cause reach the runner as one message, led by the most",
              "severe alert and listing every alert's evidence; for the cause's quiet time",
              "after it, the same or a lower severity is recorded (InfluxDB, the coach's",
              "dashboard) but not sent again. A higher severity goes out at once.", "",
              "| cause | rules | quiet time |", "| --- | --- | --- |"]
    for cause_id, cause in CAUSES.items():
        members = ", ".join(f"`{r.id}`" for r in sorted(catalogue.values(), key=lambda r: r.id)
                            if r.cause == cause_id)
        lines.append(f"| {cause.title} (`{cause_id}`) | {members or '—'} | "
                     f"{cause.quiet_h:g} h |")
    lines += ["", "## What the runner is told", ""]
    for rule in sorted(catalogue.values(), key=lambda r: r.id):
        lines += [f"### `{rule.id}`: {rule.title}", "",
                  f"- **Message:** {rule.message}",
                  f"- **Next step:** {rule.next_step}"]
        for level in rule.levels:
            if level.message:
                lines.append(f"- **Message at {level.severity}:** {level.message}")
            if level.next_step:
                lines.append(f"- **Next step at {level.severity}:** {level.next_step}")
        if rule.caveat:
            lines.append(f"- **How sure this is:** {rule.caveat}")
        lines += [f"- **Evidence shown:** {', '.join(rule.evidence) or '—'}", ""]
    lines += ["## Where it hurts", "",
              "A pain report's `where` is one of these; the pain alerts' next step adds the",
              "advice for that place (`{site_advice}`).", "",
              "| `where` | named as | advice |", "| --- | --- | --- |"]
    own_words = "(the runner's own words)"
    lines += [f"| `{site}` | {SITE_NAMES[site] or own_words} | {SITE_ADVICE[site]} |"
              for site in SITE_NAMES]
    lines += ["", "## Return-to-run stages", "",
              "| stage | sessions | plan |", "| --- | --- | --- |"]
    lines += [f"| {s.number} | {2 * s.number - 1}-{2 * s.number} | {s.describe()} |"
              for s in STAGES]
    grades = ", ".join(f"grade {g}: {d} days" for g, d in MIN_DAYS_PER_STAGE.items())
    lines += ["", f"Each stage is run twice, with a rest day between sessions; from session "
              f"{2 * len(STAGES) + 1} the runner builds up gradually to normal volume. "
              f"Minimum days per stage ({grades}). A session counts when it stayed within "
              f"the stage (bouts, total running, walking breaks), came after a rest day, "
              f"was on flat, even ground (not {', '.join(sorted(UNEVEN_SURFACES))}; at most "
              f"{MAX_FLAT_CLIMB_M_PER_KM:g} m of climbing per km) and no pain above "
              f"{PAIN_LIMIT}/10 was reported during it, after it or the next morning. Such "
              "pain sends the runner back a stage at once.", ""]
    return "\n".join(lines)
