"""Roster edits keep the coach's file: other entries, layout, comments and permissions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from team.cli import roster_group
from team.roster import load_roster
from team.roster_file import added, append_entry, remove_entry

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "local" / "demo-roster.yaml"
BLOCK = ROOT / "tests" / "integration" / "roster.yaml"  # block style, items at column 0


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    path = tmp_path / "roster.yaml"
    shutil.copy(DEMO, path)
    return path


def test_roster_add_runner_keeps_comments_and_every_other_line(demo: Path) -> None:
    before = demo.read_text().splitlines()
    result = CliRunner().invoke(roster_group, ["add-runner", "--file", str(demo), "zoe",
                                               "--name", "Zoe", "--team", "harriers"])
    assert result.exit_code == 0, result.output
    after = demo.read_text().splitlines()
    assert [line for line in after if line not in before] == [
        "  - {id: zoe, name: Zoe, team: harriers}"]
    assert [line for line in before if line not in after] == []
    runner = load_roster(demo).runner("zoe")
    assert runner is not None and runner.team == "harriers"


def test_a_new_team_goes_into_the_teams_list(demo: Path) -> None:
    result = CliRunner().invoke(roster_group, ["add-team", "--file", str(demo), "gulls",
                                               "--name", "Gulls", "--tz", "Europe/Oslo"])
    assert result.exit_code == 0, result.output
    text = demo.read_text()
    assert text.startswith("# The demo team")
    assert text.index("{id: gulls") < text.index("runners:")
    team = load_roster(demo).team("gulls")
    assert team is not None and team.tz == "Europe/Oslo"


def test_an_edit_keeps_the_file_private(demo: Path) -> None:
    demo.chmod(0o600)
    result = CliRunner().invoke(roster_group, ["add-runner", "--file", str(demo), "zoe",
                                               "--name", "Zoe", "--team", "harriers"])
    assert result.exit_code == 0, result.output
    assert demo.stat().st_mode & 0o777 == 0o600
    assert not list(demo.parent.glob(".roster.yaml.*"))  # no temporary file left


def test_a_runner_for_a_missing_team_is_refused_and_the_file_untouched(demo: Path) -> None:
    before = demo.read_text()
    result = CliRunner().invoke(roster_group, ["add-runner", "--file", str(demo), "zoe",
                                               "--name", "Zoe", "--team", "gulls"])
    assert result.exit_code == 1
    assert "'gulls'" in result.output and "not changed" in result.output
    assert demo.read_text() == before


def test_appending_to_block_style_items_at_column_zero() -> None:
    text = BLOCK.read_text()
    new = append_entry(text, "runners", {"id": "zoe", "name": "Zoe", "team": "rivals"})
    assert new is not None and new.startswith(text)
    assert new.endswith("\n- {id: zoe, name: Zoe, team: rivals}\n")


def test_removing_an_entry_leaves_the_others_nested_lists_alone() -> None:
    text = BLOCK.read_text()
    new = remove_entry(text, "runners", "sc-pronation")  # follows the runner with shoes
    assert new is not None
    assert "sc-pronation" not in new and "trainer-1" in new
    assert [line for line in text.splitlines() if line not in new.splitlines()] == [
        "- id: sc-pronation", "  name: sc-pronation"]


def test_an_inline_list_is_rewritten_and_the_caller_told(tmp_path: Path) -> None:
    path = tmp_path / "roster.yaml"
    path.write_text("# our club\nteams:\n  - {id: club, name: Club}\nrunners: []\n")
    _, roster, kept = added(path, "runners", {"id": "zoe", "name": "Zoe", "team": "club"})
    assert not kept and roster.runner("zoe") is not None
    result = CliRunner().invoke(roster_group, ["add-runner", "--file", str(path), "zoe",
                                               "--name", "Zoe", "--team", "club"])
    assert result.exit_code == 0, result.output
    assert "comments could not be kept" in result.output
    assert load_roster(path).runner("zoe") is not None


def test_the_first_entry_of_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "roster.yaml"
    for args in (["add-team", "club", "--name", "Club"],
                 ["add-runner", "zoe", "--name", "Zoe", "--team", "club"]):
        result = CliRunner().invoke(roster_group, [args[0], "--file", str(path), *args[1:]])
        assert result.exit_code == 0, result.output
    assert path.stat().st_mode & 0o777 == 0o600
    roster = load_roster(path)
    assert [r.id for r in roster.runners] == ["zoe"] and [t.id for t in roster.teams] == ["club"]


def test_roster_add_coach(demo: Path) -> None:
    result = CliRunner().invoke(roster_group, ["add-coach", "--file", str(demo), "harriers",
                                               "jo", "--name", "Jo"])
    assert result.exit_code == 0, result.output
    team = load_roster(demo).team("harriers")
    assert team is not None and [c.id for c in team.coaches] == ["maya", "jo"]
    again = CliRunner().invoke(roster_group, ["add-coach", "--file", str(demo), "harriers",
                                              "jo", "--name", "Jo"])
    assert again.exit_code == 1 and "exists" in again.output
    missing = CliRunner().invoke(roster_group, ["add-coach", "--file", str(demo), "gulls",
                                                "jo", "--name", "Jo"])
    assert missing.exit_code == 1 and "no team 'gulls'" in missing.output
