"""``stridewatch rules backtest``: recorded events through the pure core, alerts out."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from rules.catalogue import load_catalogue
from rules.roster import Roster
from stream.backtest import (
    SEVERITIES,
    AlertRow,
    BacktestSummary,
    DuplicateLine,
    Finding,
    RefusedLine,
    UnknownRunner,
    backtest,
    iso_utc,
)
from stridewatch.cli import main

ROW_KEYS = {"runner", "rule", "severity", "t", "evidence", "message"}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
T0 = 1_791_788_400.0  # Monday 2026-10-12 07:00 UTC


def pain_line(runner: str, score: int, t: float = T0, when: str = "after",
              seq: int | None = None) -> str:
    payload = {"seq": seq if seq is not None else int(t * 1000), "t": t, "score": score,
               "where": "achilles", "when": when}
    return json.dumps({"topic": f"runners/{runner}/pain", "payload": payload})


def run_core(lines: Iterable[str | bytes], roster: Roster | None = None
             ) -> tuple[list[Finding], BacktestSummary]:
    items = list(backtest(lines, roster or Roster(), load_catalogue()))
    summary = items.pop()
    assert isinstance(summary, BacktestSummary)
    assert not any(isinstance(i, BacktestSummary) for i in items)
    return [i for i in items if not isinstance(i, BacktestSummary)], summary


def rows(findings: list[Finding]) -> list[AlertRow]:
    return [f for f in findings if isinstance(f, AlertRow)]


def test_iso_utc_is_whole_seconds_with_z() -> None:
    assert iso_utc(T0) == "2026-10-12T07:00:00Z"
    assert iso_utc(T0 + 26.667) == "2026-10-12T07:00:26Z"


def test_a_pain_report_fires_its_rule_with_the_reported_numbers() -> None:
    findings, summary = run_core([pain_line("ana", 6)])
    [row] = rows(findings)
    assert (row.line, row.runner, row.rule, row.t) == (
        1, "ana", "pain_after_run", "2026-10-12T07:00:00Z")
    assert row.severity in SEVERITIES
    assert row.evidence["where"] == "achilles" and row.evidence["score"] == 6.0
    assert row.message
    out = json.loads(row.to_json())
    assert set(out) == ROW_KEYS and out["evidence"] == row.evidence
    assert row.to_json() == json.dumps(out, sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=False)
    assert (summary.lines, summary.events, summary.alerts, summary.runners) == (
        1, 1, 1, ("ana",))
    assert summary.counts == {"pain_after_run": {row.severity: 1}}
    assert summary.refused == () and summary.duplicates == ()


def test_blank_and_comment_lines_are_skipped_but_numbered() -> None:
    findings, summary = run_core(["# a comment", "", "   ", pain_line("ana", 6),
                                  "  # indented comment\n", pain_line("ana", 1, T0 + 60)])
    assert [r.line for r in rows(findings)] == [4]
    assert (summary.lines, summary.events) == (2, 2)


def test_refused_lines_are_reported_with_their_number_and_the_rest_still_runs() -> None:
    lines: list[str | bytes] = [
        pain_line("ana", 6),
        "{not json",
        json.dumps({"topic": "runners/ana/watch/telemetry", "payload": {"t": T0}}),
        pain_line("ana", 11, T0 + 60),  # a score the contract refuses
        json.dumps({"payload": {"t": T0}}),
        json.dumps({"topic": "runners/ana/pain", "payload": [1, 2]}),
        json.dumps([1]),
        b"\xff\xfe not utf-8",
        pain_line("bo", 7, T0 + 120),
    ]
    findings, summary = run_core(lines)
    refused = [f for f in findings if isinstance(f, RefusedLine)]
    assert [r.line for r in refused] == [2, 3, 4, 5, 6, 7, 8]
    reasons = {r.line: r.reason for r in refused}
    assert reasons[2].startswith("not JSON")
    assert "unknown message type 'telemetry'" in reasons[3]
    assert "score" in reasons[4] and "PainReport" in reasons[4]  # the contract's reason
    assert reasons[5] == 'no "topic"'
    assert '"payload" must be a JSON object' in reasons[6]
    assert "not a JSON object" in reasons[7]
    assert "UTF-8" in reasons[8]
    assert str(refused[0]) == f"line 2: {reasons[2]}"
    assert [(r.line, r.runner) for r in rows(findings)] == [(1, "ana"), (9, "bo")]
    assert summary.refused == tuple(refused)
    assert (summary.lines, summary.events, summary.alerts) == (9, 2, 2)


def test_a_duplicate_is_counted_and_changes_nothing() -> None:
    once, once_summary = run_core([pain_line("ana", 6), pain_line("ana", 7, T0 + 3600)])
    twice, summary = run_core([pain_line("ana", 6), pain_line("ana", 6),
                               pain_line("ana", 7, T0 + 3600)])
    assert [r.to_json() for r in rows(twice)] == [r.to_json() for r in rows(once)]
    [duplicate] = [f for f in twice if isinstance(f, DuplicateLine)]
    assert duplicate.line == 2 and "duplicate" in duplicate.reason
    assert summary.duplicates == (duplicate,) and summary.refused == ()
    assert (summary.lines, summary.events) == (3, once_summary.events)


def test_runners_missing_from_the_roster_are_named_once() -> None:
    roster = Roster.model_validate({
        "teams": [{"id": "club", "name": "Club"}],
        "runners": [{"id": "ana", "name": "Ana", "team": "club"}]})
    findings, summary = run_core([pain_line("ana", 6), pain_line("bo", 6),
                                  pain_line("bo", 6, T0 + 86400)], roster)
    unknown = [f for f in findings if isinstance(f, UnknownRunner)]
    assert [(u.line, u.runner) for u in unknown] == [(2, "bo")]
    assert "bo" in str(unknown[0]) and "unassigned" in str(unknown[0])
    assert summary.unknown_runners == ("bo",) and summary.runners == ("ana", "bo")


def test_the_runners_roster_profile_is_used() -> None:
    roster = Roster.model_validate({
        "teams": [{"id": "club", "name": "Club", "rule_overrides": {
            "pain_after_run": {"enabled": False}}}],
        "runners": [{"id": "ana", "name": "Ana", "team": "club"}]})
    findings, _ = run_core([pain_line("ana", 6), pain_line("bo", 6)], roster)
    assert [r.runner for r in rows(findings)] == ["bo"]


# ------------------------------------------------------------------------------ the command
def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["rules", "backtest", *args], input=input)


def stdout_rows(result: Result) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in result.stdout.splitlines()]
    for row in out:
        assert set(row) == ROW_KEYS, row
        assert ISO_Z.match(row["t"]), row["t"]
    return out


def test_the_command_reads_stdin_and_prints_json_lines_and_a_table(tmp_path: Path) -> None:
    result = invoke("-", input="\n".join([pain_line("ana", 6), pain_line("bo", 2)]) + "\n")
    assert result.exit_code == 0, result.output
    [row] = stdout_rows(result)
    assert (row["runner"], row["rule"]) == ("ana", "pain_after_run")
    err = result.stderr.splitlines()
    assert err[-3].split() == ["rule", *SEVERITIES, "total"]
    assert err[-2].split() == ["pain_after_run",
                               *("1" if s == row["severity"] else "0" for s in SEVERITIES), "1"]
    assert err[-1] == "2 lines, 2 events, 1 alert, 2 runners"
    assert sum("not in the roster" in line for line in err) == 2


def test_the_command_exits_1_after_the_whole_file_when_a_line_is_refused(
        tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(["{oops", pain_line("ana", 6), "[]"]) + "\n")
    result = invoke(str(events))
    assert result.exit_code == 1, result.output
    assert [r["runner"] for r in stdout_rows(result)] == ["ana"]
    err = result.stderr.splitlines()
    assert err[0].startswith("line 1: not JSON")
    assert any(line.startswith("line 3: not a JSON object") for line in err)
    assert err[-1] == "3 lines, 1 event, 1 alert, 1 runner; 2 lines refused"


def test_usage_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(pain_line("ana", 6) + "\n")
    missing = invoke(str(tmp_path / "nowhere.jsonl"))
    assert missing.exit_code == 2 and "nowhere.jsonl" in missing.stderr
    assert "No such file" in missing.stderr
    roster = tmp_path / "roster.yaml"
    roster.write_text(yaml.safe_dump({"runners": [{"id": "ana", "name": "A", "team": "x"}]}))
    bad_roster = invoke(str(events), "--roster", str(roster))
    assert bad_roster.exit_code == 2 and "team 'x'" in bad_roster.stderr
    empty = tmp_path / "no-rules"
    empty.mkdir()
    no_rules = invoke(str(events), "--rules", str(empty))
    assert no_rules.exit_code == 2 and "no rule files" in no_rules.stderr
    (empty / "broken.yaml").write_text("id: broken\n")
    broken = invoke(str(events), "--rules", str(empty))
    assert broken.exit_code == 2 and "broken" in broken.stderr
    for result in (missing, bad_roster, no_rules, broken):
        assert result.stdout == "" and "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)
