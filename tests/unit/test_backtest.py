"""``stridewatch rules backtest``: recorded events through the pure core, alerts out."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from rules.catalogue import CATALOGUE_DIR, load_catalogue, load_rule_file
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
from team.roster import Roster, unknown_runner_note

ROW_KEYS = {"runner", "rule", "severity", "t", "evidence", "message", "to_runner"}
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
    assert row.evidence["where"] == "back-of-ankle (Achilles)" and row.evidence["score"] == 6.0
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
    # the worker's log says the same, fix included
    assert str(unknown[0]).endswith(unknown_runner_note("bo"))
    assert "`stridewatch runners add bo --team TEAM`" in unknown_runner_note("bo")
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


# ------------------------------------------------------------------------------ the docs example
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
EXAMPLE = EXAMPLES / "backtest.jsonl"
GENERATOR = EXAMPLES / "make_backtest_example.py"
PAIN_RULES = {"pain_after_run", "pain_next_morning"}
LOAD_RULES = {"load_ratio", "weekly_increase", "session_spike"}
SUMMARY = re.compile(r"^(\d+) lines?, (\d+) events?, (\d+) alerts?, (\d+) runners?(;.*)?$")


@pytest.fixture(scope="module")
def example_run() -> Result:
    result = invoke(str(EXAMPLE))
    assert result.exit_code == 0, result.output
    return result


def example_lines() -> list[str]:
    return EXAMPLE.read_text().splitlines()


def message_lines(lines: list[str]) -> list[int]:
    """Numbers (from 1) of the lines holding a message."""
    return [i for i, line in enumerate(lines, start=1)
            if line.strip() and not line.lstrip().startswith("#")]


def run_lines(tmp_path: Path, lines: list[str], *args: str) -> Result:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    return invoke(str(events), *args)


def test_the_example_file_is_what_its_generator_writes() -> None:
    # -I -S: no site-packages and no project modules, so it stays standard-library only
    made = subprocess.run([sys.executable, "-I", "-S", str(GENERATOR), "-"], check=True,
                          capture_output=True, text=True, cwd=EXAMPLES.parent)
    assert made.stdout == EXAMPLE.read_text(), \
        "run `python docs/examples/make_backtest_example.py`"


def test_the_example_fires_load_and_pain_rules_for_surge_and_nothing_for_steady(
        example_run: Result) -> None:
    out = stdout_rows(example_run)
    fired = {r["rule"] for r in out if r["runner"] == "surge"}
    assert not [r for r in out if r["runner"] == "steady"]
    assert fired >= PAIN_RULES, fired
    assert LOAD_RULES & fired, fired
    assert {r["runner"] for r in out} == {"surge"}
    # written down by hand from the example (docs/backtest.md explains each): Monday's
    # 8 km is 133 % of the longest run; the week passes +10 % on Wednesday and +30 % over
    # two weeks on Friday (an escalation: sent); the climb grows with the distance; the
    # pain after the long run (6/10) and the next morning (4/10); the ratio (1.46) stays
    # under 1.5. The overload alerts reach the phone as the first and the escalation.
    assert [(r["t"][:10], r["rule"], r["severity"], r["to_runner"]) for r in out] == [
        ("2026-11-16", "session_spike", "notice", True),
        ("2026-11-18", "weekly_increase", "notice", False),
        ("2026-11-18", "session_spike", "notice", False),
        ("2026-11-20", "weekly_increase", "warn", True),
        ("2026-11-20", "session_spike", "notice", False),
        ("2026-11-22", "hill_load", "notice", True),
        ("2026-11-22", "session_spike", "notice", False),
        ("2026-11-22", "pain_after_run", "warn", True),
        ("2026-11-23", "pain_next_morning", "warn", True)]
    pain = next(r for r in out if r["rule"] == "pain_after_run")
    assert pain["evidence"]["where"] == "back-of-ankle (Achilles)"
    assert pain["t"] == "2026-11-22T10:00:00Z"
    for line in example_run.stdout.splitlines():
        assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False)


def test_the_example_table_counts_what_was_printed(example_run: Result) -> None:
    out = stdout_rows(example_run)
    err = example_run.stderr.splitlines()
    header = next(i for i, line in enumerate(err) if line.split()[:1] == ["rule"])
    assert err[header].split() == ["rule", *SEVERITIES, "total"]
    table = [line.split() for line in err[header + 1:-1]]
    assert [row[0] for row in table] == sorted({r["rule"] for r in out})
    for rule, *cells in table:
        by_severity = Counter(r["severity"] for r in out if r["rule"] == rule)
        assert [int(c) for c in cells] == [*(by_severity[s] for s in SEVERITIES),
                                           sum(by_severity.values())]
    match = SUMMARY.match(err[-1])
    assert match, err[-1]
    messages = len(message_lines(example_lines()))
    assert [int(n) for n in match.groups()[:4]] == [messages, messages, len(out), 2]
    assert match.group(5) is None  # nothing refused, no duplicates
    warnings = [line for line in err if line.startswith("warning:")]
    assert len(warnings) == 2 and all("unassigned" in w for w in warnings)


def test_refused_lines_in_the_example_are_reported_and_the_rest_still_fires(
        tmp_path: Path, example_run: Result) -> None:
    lines = example_lines()
    samples_line = next(line for line in lines if "/surge/watch/samples" in line)
    batch = json.loads(samples_line)
    batch["payload"]["samples"][3]["cadence_spm"] = 400.0  # outside the contract's range
    bad = ["{this is not json",
           json.dumps({"topic": "runners/surge/watch/telemetry", "payload": {"t": T0}}),
           json.dumps(batch)]
    at = [10, 80, len(lines) - 1]  # where the bad lines go (0-based, in the new file)
    for index, line in zip(at, bad, strict=True):
        lines.insert(index, line)
    result = run_lines(tmp_path, lines)
    assert result.exit_code == 1, result.output
    assert result.stdout == example_run.stdout
    refused = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert [int(line.split(":")[0].split()[1]) for line in refused] == [i + 1 for i in at]
    assert "not JSON" in refused[0]
    assert "unknown message type 'telemetry'" in refused[1]
    assert "cadence_spm" in refused[2] and "SampleBatch" in refused[2]
    assert result.stderr.splitlines()[-1].endswith("; 3 lines refused")


def test_a_duplicated_line_in_the_example_is_counted_and_changes_nothing(
        tmp_path: Path, example_run: Result) -> None:
    lines = example_lines()
    long_run = max(range(len(lines)), key=lambda i: len(lines[i]))  # surge's 15 km batch
    lines.insert(long_run + 1, lines[long_run])
    result = run_lines(tmp_path, lines)
    assert result.exit_code == 0, result.output
    assert result.stdout == example_run.stdout
    err = result.stderr.splitlines()
    [duplicate] = [line for line in err if line.startswith("line ")]
    assert duplicate.startswith(f"line {long_run + 2}: duplicate")
    match = SUMMARY.match(err[-1])
    assert match and match.group(5) == "; 1 duplicate ignored", err[-1]
    assert int(match.group(1)) == int(match.group(2)) + 1


def test_the_example_warns_about_runners_missing_from_the_roster(tmp_path: Path) -> None:
    roster = tmp_path / "roster.yaml"
    roster.write_text(yaml.safe_dump({
        "teams": [{"id": "club", "name": "Club", "tz": "Europe/Oslo"}],
        "runners": [{"id": "steady", "name": "Steady", "team": "club"}]}))
    result = invoke(str(EXAMPLE), "--roster", str(roster))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "'surge'" in warnings[0] and '"unassigned"' in warnings[0]


def test_a_rules_folder_with_one_rule_fires_only_that_rule(
        tmp_path: Path, example_run: Result) -> None:
    fired = {r["rule"] for r in stdout_rows(example_run)}
    rule = sorted(LOAD_RULES & fired)[0]
    assert fired - {rule}, "the full catalogue should fire other rules too"
    folder = tmp_path / "rules"
    folder.mkdir()
    source = next(p for p in sorted(CATALOGUE_DIR.glob("*.yaml")) if load_rule_file(p).id == rule)
    shutil.copy(source, folder / source.name)
    result = invoke(str(EXAMPLE), "--rules", str(folder))
    assert result.exit_code == 0, result.output
    out = stdout_rows(result)
    assert out and {r["rule"] for r in out} == {rule}
    assert out == [r for r in stdout_rows(example_run) if r["rule"] == rule]
