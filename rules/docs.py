"""The rules page (docs/rules.md), generated from the catalogue so it cannot drift."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rules.alerts import DISCLAIMER
from rules.catalogue import Rule
from rules.return_to_run import MIN_DAYS_PER_STAGE, STAGES

RULES_PAGE = Path(__file__).resolve().parent.parent / "docs" / "rules.md"


def _levels(rule: Rule) -> str:
    parts = []
    for level in rule.levels:
        op = ">" if rule.direction == "above" else "<"
        signal = rule.level_signal(level)
        sustain = f" for ≥ {level.sustain_s:g} s" if level.sustain_s else ""
        parts.append(f"{level.severity}: `{signal}` {op} {level.threshold:g}{sustain}")
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
        "| rule | fires when | cooldown | source |",
        "| --- | --- | --- | --- |",
    ]
    for rule in sorted(catalogue.values(), key=lambda r: r.id):
        lines.append(f"| `{rule.id}` — {rule.title} | {_levels(rule)} | "
                     f"{rule.cooldown_h:g} h | {rule.source} |")
    lines += ["", "## What the runner is told", ""]
    for rule in sorted(catalogue.values(), key=lambda r: r.id):
        lines += [f"### `{rule.id}`: {rule.title}", "",
                  f"- **Message:** {rule.message}",
                  f"- **Next step:** {rule.next_step}",
                  f"- **Evidence shown:** {', '.join(rule.evidence) or '—'}", ""]
    lines += ["## Return-to-run stages", "",
              "| stage | plan |", "| --- | --- |"]
    lines += [f"| {s.number} | {s.describe()} |" for s in STAGES]
    grades = ", ".join(f"grade {g}: {d} days" for g, d in MIN_DAYS_PER_STAGE.items())
    lines += ["", f"Minimum days per stage ({grades}). A runner moves up after two runs "
              "within the stage with no pain above 2/10 afterwards.", ""]
    return "\n".join(lines)
