"""The roster: teams, runners, time zones and rule overrides, validated at load."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from rules.catalogue import load_catalogue
from team.roster import UNASSIGNED_TEAM, Roster, RosterError, load_roster


def roster_doc() -> dict[str, Any]:
    return {
        "teams": [
            {"id": "harriers", "name": "Harriers", "tz": "Europe/Oslo",
             "load_metric": "duration_min",
             "coaches": [{"id": "kim", "name": "Kim", "notify": ["ntfy://coach-topic"]}],
             "rule_overrides": {
                 "session_spike": {"thresholds": {"notice": 1.15, "warn": 2.2}},
                 "pain_after_run": {"enabled": False}}},
            {"id": "rivals", "name": "Rival Club"},
        ],
        "runners": [
            {"id": "ann", "name": "Ann", "team": "harriers",
             "rule_overrides": {"session_spike": {"thresholds": {"warn": 2.5}, "cooldown_h": 48}}},
            {"id": "bo", "name": "Bo", "team": "harriers", "tz": "America/New_York"},
            {"id": "cy", "name": "Cy", "team": "rivals"},
        ],
    }


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "roster.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_valid_roster_loads(tmp_path: Path) -> None:
    roster = load_roster(write(tmp_path, roster_doc()))
    assert [t.id for t in roster.teams] == ["harriers", "rivals"]
    assert [r.id for r in roster.runners] == ["ann", "bo", "cy"]
    team = roster.team("harriers")
    assert team is not None and team.coaches[0].notify == ["ntfy://coach-topic"]
    assert roster.runner("zed") is None and roster.team("nobody") is None


def test_no_roster_file_is_an_empty_roster() -> None:
    assert load_roster(None) == Roster()


def test_empty_file_is_an_empty_roster(tmp_path: Path) -> None:
    path = tmp_path / "roster.yaml"
    path.write_text("")
    assert load_roster(path) == Roster()


def _load_error(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = write(tmp_path, doc)
    with pytest.raises(RosterError) as err:
        load_roster(path)
    assert str(path) in str(err.value)
    return str(err.value)


def test_unknown_team(tmp_path: Path) -> None:
    doc = roster_doc()
    doc["runners"].append({"id": "dee", "name": "Dee", "team": "ghosts"})
    text = _load_error(tmp_path, doc)
    assert "'dee'" in text and "'ghosts'" in text


def test_duplicate_runner_ids(tmp_path: Path) -> None:
    doc = roster_doc()
    doc["runners"].append({"id": "ann", "name": "Another Ann", "team": "rivals"})
    assert "runner ids must be unique" in _load_error(tmp_path, doc)


def test_duplicate_team_ids(tmp_path: Path) -> None:
    doc = roster_doc()
    doc["teams"].append({"id": "rivals", "name": "Rivals again"})
    assert "team ids must be unique" in _load_error(tmp_path, doc)


@pytest.mark.parametrize("where", ["team", "runner"])
def test_bad_time_zone(tmp_path: Path, where: str) -> None:
    doc = roster_doc()
    target = doc["teams"][1] if where == "team" else doc["runners"][2]
    target["tz"] = "Mars/Olympus_Mons"
    text = _load_error(tmp_path, doc)
    assert "Mars/Olympus_Mons" in text and "time zone" in text


@pytest.mark.parametrize("bad_id", ["Ann", "ann smith", "-ann", ""])
def test_bad_runner_id(bad_id: str) -> None:
    doc = roster_doc()
    doc["runners"][0]["id"] = bad_id
    with pytest.raises(ValidationError):
        Roster.model_validate(doc)


def test_unreadable_yaml(tmp_path: Path) -> None:
    path = tmp_path / "roster.yaml"
    path.write_text("teams: [\n")
    with pytest.raises(RosterError, match="not valid YAML at line"):
        load_roster(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="cannot read roster"):
        load_roster(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- profiles


def _levels(profile_rules: Any, rule_id: str) -> dict[str, float]:
    return {lv.severity: lv.threshold for lv in profile_rules[rule_id].levels}


def test_profile_merges_team_then_runner_overrides() -> None:
    catalogue = load_catalogue()
    roster = Roster.model_validate(roster_doc())
    ann = roster.profile("ann", catalogue)
    assert ann.runner == "ann" and ann.team == "harriers"
    # team moved notice to 1.15 and warn to 2.2; the runner moved warn further to 2.5
    assert _levels(ann.rules, "session_spike") == {"notice": 1.15, "warn": 2.5}
    assert ann.rules["session_spike"].cooldown_h == 48
    # the team switched pain_after_run off for everyone in it
    assert ann.rules["pain_after_run"].enabled is False
    # rules nobody overrides are the catalogue's
    assert ann.rules["gct_balance"] == catalogue["gct_balance"]
    # team time zone and load metric
    assert ann.tz == ZoneInfo("Europe/Oslo") and ann.load_metric == "duration_min"

    bo = roster.profile("bo", catalogue)
    assert _levels(bo.rules, "session_spike") == {"notice": 1.15, "warn": 2.2}  # team only
    assert bo.rules["session_spike"].cooldown_h == catalogue["session_spike"].cooldown_h
    assert bo.tz == ZoneInfo("America/New_York")  # the runner's own time zone wins

    cy = roster.profile("cy", catalogue)
    assert cy.rules == catalogue and cy.tz == ZoneInfo("UTC") and cy.team == "rivals"
    assert cy.load_metric == "distance_km"
    # the catalogue itself is untouched
    assert _levels(catalogue, "session_spike") == {"notice": 1.1, "warn": 2.0}


def test_runner_not_in_roster_is_unassigned_in_utc() -> None:
    catalogue = load_catalogue()
    for roster in (Roster(), Roster.model_validate(roster_doc())):
        profile = roster.profile("stranger", catalogue)
        assert profile.runner == "stranger"
        assert profile.team == UNASSIGNED_TEAM == "unassigned"
        assert profile.tz == ZoneInfo("UTC")
        assert profile.load_metric == "distance_km"
        assert profile.rules == catalogue


def test_override_that_breaks_a_rule_raises_on_profile() -> None:
    doc = roster_doc()
    doc["runners"][0]["rule_overrides"] = {"session_spike": {"thresholds": {"warn": 1.05}}}
    roster = Roster.model_validate(doc)
    with pytest.raises(ValueError, match="thresholds"):
        roster.profile("ann", load_catalogue())
    # a level the rule does not have is refused, not ignored
    doc["runners"][0]["rule_overrides"] = {"load_ratio": {"thresholds": {"warn": 1.8}}}
    with pytest.raises(ValueError, match="no 'warn' level"):
        Roster.model_validate(doc).profile("ann", load_catalogue())
