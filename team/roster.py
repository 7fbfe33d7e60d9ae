"""Who is who: teams, their coaches and runners, time zones and notification targets.

A YAML file validated at load. The pipeline reads it to put a runner in a team, to find
their day boundaries (time zone), their rule overrides and where to send their alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingest.contract import ID_PATTERN
from rules.catalogue import Rule, RuleOverride, apply_override

UNASSIGNED_TEAM = "unassigned"
LoadMetric = Literal["distance_km", "duration_min", "trimp"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{value}' (use an IANA name like Europe/Oslo)"
                         ) from None
    return value


class Coach(_Frozen):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    notify: list[str] = Field(default_factory=list)  # Apprise URLs: may hold secrets


class Team(_Frozen):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    tz: str = "UTC"
    load_metric: LoadMetric = "distance_km"
    coaches: list[Coach] = Field(default_factory=list)
    rule_overrides: dict[str, RuleOverride] = Field(default_factory=dict)

    _tz = field_validator("tz")(_check_tz)


class Shoe(_Frozen):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    start_km: float = Field(default=0.0, ge=0, le=5000)  # mileage before StrideWatch


class Injury(_Frozen):
    """A coach's return-to-run plan after an ankle sprain (the staged walk-run plan).

    It takes precedence over a plan the runner's own sprain report started.
    """

    kind: Literal["ankle_sprain"] = "ankle_sprain"
    grade: Literal[1, 2, 3] = 1
    since: date  # the day the return-to-run plan started
    stage: int = Field(default=1, ge=1, le=5)  # stage the runner starts the plan at


class Clearance(_Frozen):
    """A clinician's sign-off to start running again, as the coach recorded it.

    A grade III sprain, or a sprain reported with red flags, starts the plan only once
    the runner is cleared on or after the day of the injury.
    """

    # (not "on": YAML reads a bare ``on`` key as true)
    signed_on: date
    by: str = Field(min_length=2, max_length=80)  # e.g. "physiotherapist J. Berg"


class Runner(_Frozen):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    team: str = Field(pattern=ID_PATTERN)
    tz: str | None = None
    notify: list[str] = Field(default_factory=list)
    rule_overrides: dict[str, RuleOverride] = Field(default_factory=dict)
    resting_hr_bpm: int | None = Field(default=None, ge=25, le=120)
    max_hr_bpm: int | None = Field(default=None, ge=100, le=240)
    # running at or above this speed counts as fast running (hills and speed rule)
    fast_speed_mps: float = Field(default=4.0, gt=1.5, le=10)
    shoes: list[Shoe] = Field(default_factory=list)
    injury: Injury | None = None
    cleared_to_run: Clearance | None = None

    @model_validator(mode="after")
    def _heart_rates(self) -> Runner:
        if self.resting_hr_bpm and self.max_hr_bpm and self.resting_hr_bpm >= self.max_hr_bpm:
            raise ValueError("resting heart rate must be below max heart rate")
        return self

    @model_validator(mode="after")
    def _grade_three_signed_off(self) -> Runner:
        injury = self.injury
        if injury is not None and injury.grade == 3 and (
                self.cleared_to_run is None or self.cleared_to_run.signed_on > injury.since):
            raise ValueError(
                "a grade III sprain's return to running starts only after a clinician's "
                "sign-off on or before the plan's first day: record it with "
                "`stridewatch roster clear-to-run RUNNER --by WHO --on DATE`")
        return self

    @field_validator("tz")
    @classmethod
    def _tz_known(cls, value: str | None) -> str | None:
        return None if value is None else _check_tz(value)


class Roster(_Frozen):
    teams: list[Team] = Field(default_factory=list)
    runners: list[Runner] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Roster:
        team_ids = [t.id for t in self.teams]
        if len(set(team_ids)) != len(team_ids):
            raise ValueError("team ids must be unique")
        runner_ids = [r.id for r in self.runners]
        if len(set(runner_ids)) != len(runner_ids):
            raise ValueError("runner ids must be unique")
        for runner in self.runners:
            if runner.team not in team_ids:
                raise ValueError(f"runner '{runner.id}' is in team '{runner.team}', "
                                 "which the roster does not define")
        return self

    def check_against(self, catalogue: Mapping[str, Rule]) -> None:
        """Fail at start, not on a runner's first event, for overrides that cannot apply."""
        problems = []
        owners = [(f"team '{t.id}'", t.rule_overrides) for t in self.teams]
        owners += [(f"runner '{r.id}'", r.rule_overrides) for r in self.runners]
        for owner, overrides in owners:
            for rule_id, override in overrides.items():
                if rule_id not in catalogue:
                    problems.append(f"{owner} overrides unknown rule '{rule_id}'")
                    continue
                try:
                    apply_override(catalogue[rule_id], override)
                except ValueError as exc:
                    problems.append(f"{owner}, rule '{rule_id}': {exc}")
        for runner in self.runners:
            try:
                self.profile(runner.id, catalogue)
            except ValueError as exc:
                problems.append(f"runner '{runner.id}': {exc}")
        if problems:
            raise RosterError("; ".join(problems))

    def team(self, team_id: str) -> Team | None:
        return next((t for t in self.teams if t.id == team_id), None)

    def runner(self, runner_id: str) -> Runner | None:
        return next((r for r in self.runners if r.id == runner_id), None)

    def profile(self, runner_id: str, catalogue: Mapping[str, Rule]) -> RunnerProfile:
        runner = self.runner(runner_id)
        team = self.team(runner.team) if runner else None
        rules = {}
        for rule_id, rule in catalogue.items():
            effective = apply_override(rule, team.rule_overrides.get(rule_id) if team else None)
            if runner:
                effective = apply_override(effective, runner.rule_overrides.get(rule_id))
            rules[rule_id] = effective
        tz = (runner.tz if runner and runner.tz else None) or (team.tz if team else "UTC")
        return RunnerProfile(
            runner=runner_id, team=team.id if team else UNASSIGNED_TEAM, tz=ZoneInfo(tz),
            load_metric=team.load_metric if team else "distance_km", rules=rules,
            resting_hr_bpm=runner.resting_hr_bpm if runner else None,
            max_hr_bpm=runner.max_hr_bpm if runner else None,
            fast_speed_mps=runner.fast_speed_mps if runner else 4.0,
            shoe_start_km={s.id: s.start_km for s in runner.shoes} if runner else {},
            injury=runner.injury if runner else None,
            cleared_to_run=runner.cleared_to_run.signed_on if runner and runner.cleared_to_run
            else None)


@dataclass(frozen=True)
class RunnerProfile:
    """Everything the pure stream step needs to know about a runner besides their data."""

    runner: str
    team: str
    tz: ZoneInfo
    load_metric: LoadMetric
    rules: Mapping[str, Rule]
    resting_hr_bpm: int | None = None
    max_hr_bpm: int | None = None
    fast_speed_mps: float = 4.0
    shoe_start_km: Mapping[str, float] = field(default_factory=dict)
    injury: Injury | None = None
    # the day a clinician signed the runner off to run again (roster ``cleared_to_run``)
    cleared_to_run: date | None = None


class RosterError(ValueError):
    pass


def unknown_runner_note(runner: str) -> str:
    """What happens to a runner the roster does not name, and the fix.

    The worker's log and the backtest say the same, so a coach hears it once, one way.
    """
    return (f"evaluated with the defaults (team \"{UNASSIGNED_TEAM}\", UTC, the catalogue's "
            "thresholds) and no coach sees their alerts: add them with "
            f"`stridewatch runners add {runner} --team TEAM` or edit the roster")


def unknown_runner_warning(runner: str, roster_file: Path | None) -> str:
    """The worker's warning for a runner the roster does not name (once per process)."""
    where = str(roster_file) if roster_file is not None else "no roster file set"
    return f"runner '{runner}' is not in the roster ({where}): {unknown_runner_note(runner)}"


def load_roster(path: Path | None) -> Roster:
    if path is None:
        return Roster()
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return Roster.model_validate(data)
    except OSError as exc:
        raise RosterError(f"{path}: cannot read roster: {exc}") from None
    except yaml.YAMLError as exc:
        # PyYAML quotes the offending line, which may hold a notification URL's token
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise RosterError(f"{path}: not valid YAML{where}: {problem}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'roster'}: {e['msg']}"
                             for e in exc.errors())
        raise RosterError(f"{path}: {problems}") from None


class RosterFile:
    """The roster as a service sees it: read at start (a bad file stops the service), then
    read again when the file changes, so ``stridewatch runners add R --team T`` reaches a
    running worker. An edit that does not load keeps the previous roster."""

    def __init__(self, path: Path | None, catalogue: Mapping[str, Rule],
                 min_interval_s: float = 2.0) -> None:
        self.path = path
        self.catalogue = catalogue
        self.min_interval_s = min_interval_s
        self._mtime = self._stat()
        self._checked_at: float | None = None
        self.roster = self._load()

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime if self.path is not None else None
        except OSError:
            return None

    def _load(self) -> Roster:
        roster = load_roster(self.path)
        roster.check_against(self.catalogue)
        return roster

    def refresh(self, now_s: float) -> bool:
        """Read the file again if it changed (looked at once per ``min_interval_s`` of the
        monotonic clock ``now_s``); True when a new roster is in use. Raises
        :class:`RosterError` for an edit that does not load, once per edit."""
        if self.path is None or (self._checked_at is not None
                                 and now_s - self._checked_at < self.min_interval_s):
            return False
        self._checked_at = now_s
        mtime = self._stat()
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        self.roster = self._load()
        return True
