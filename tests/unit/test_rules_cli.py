"""The rules page stays in step with the catalogue; the roster commands edit safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from rules.catalogue import load_catalogue
from rules.docs import RULES_PAGE, render_rules_page
from stridewatch.cli import main
from team.roster import load_roster


def test_rules_page_is_generated_from_the_catalogue() -> None:
    page = RULES_PAGE.read_text()
    assert page == render_rules_page(load_catalogue()), "run `stridewatch rules docs`"
    for rule in load_catalogue().values():
        assert f"`{rule.id}`" in page and rule.source.split(";")[0][:30] in page


def test_rules_docs_check_passes_for_the_checked_in_page() -> None:
    result = CliRunner().invoke(main, ["rules", "docs", "--check"])
    assert result.exit_code == 0, result.output


def test_roster_commands_change_the_file_and_refuse_bad_edits(tmp_path: Path) -> None:
    roster = tmp_path / "roster.yaml"
    cli = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = cli.invoke(main, ["roster", *args, "--file", str(roster)])
        return result.exit_code, result.output

    assert run("add-team", "hill", "--name", "Hill Runners", "--tz", "Europe/Oslo")[0] == 0
    assert run("add-runner", "ola", "--name", "Ola", "--team", "hill")[0] == 0
    assert run("set-injury", "ola", "--grade", "2", "--since", "2026-11-01",
               "--stage", "2")[0] == 0
    assert run("add-shoe", "ola", "trainer", "--start-km", "420")[0] == 0
    loaded = load_roster(roster)
    ola = loaded.runner("ola")
    assert ola is not None and ola.injury is not None
    assert (ola.injury.grade, ola.injury.stage, ola.injury.since.isoformat()) == (
        2, 2, "2026-11-01")
    assert [(s.id, s.start_km) for s in ola.shoes] == [("trainer", 420.0)]
    before = roster.read_text()
    code, output = run("add-runner", "kari", "--name", "Kari", "--team", "nowhere")
    assert code != 0 and "nowhere" in output
    assert roster.read_text() == before  # a refused edit leaves the file as it was
    code, output = run("show")
    assert code == 0 and "ola" in output and "grade 2" in output and "trainer" in output
    assert run("clear-injury", "ola")[0] == 0
    cleared = load_roster(roster).runner("ola")
    assert cleared is not None and cleared.injury is None


def test_roster_validate_names_a_bad_override(tmp_path: Path) -> None:
    roster = tmp_path / "roster.yaml"
    roster.write_text(yaml.safe_dump({
        "teams": [{"id": "t", "name": "T",
                   "rule_overrides": {"session_spike": {"thresholds": {"notice": 2.5}}}}]}))
    result = CliRunner().invoke(main, ["roster", "validate", "--file", str(roster)])
    assert result.exit_code != 0
    assert "team 't'" in result.output and "session_spike" in result.output


def test_grade_three_plan_needs_the_sign_off_first(tmp_path: Path) -> None:
    roster = tmp_path / "roster.yaml"

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, ["roster", *args, "--file", str(roster)])

    assert run("add-team", "t", "--name", "T").exit_code == 0
    assert run("add-runner", "ola", "--name", "Ola", "--team", "t").exit_code == 0
    refused = run("set-injury", "ola", "--grade", "3", "--since", "2026-11-10")
    assert refused.exit_code != 0 and "sign-off" in refused.output
    assert "clear-to-run" in refused.output
    signed = run("clear-to-run", "ola", "--by", "physio J. Berg", "--on", "2026-11-09")
    assert signed.exit_code == 0, signed.output
    assert run("set-injury", "ola", "--grade", "3", "--since", "2026-11-10").exit_code == 0
    shown = run("show")
    assert "cleared to run by physio J. Berg on 2026-11-09" in shown.output
    ola = load_roster(roster).runner("ola")
    assert ola is not None and ola.cleared_to_run is not None
    assert ola.cleared_to_run.signed_on.isoformat() == "2026-11-09"
