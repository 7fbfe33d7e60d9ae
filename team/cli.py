"""``stridewatch roster``: view and change the team directory (teams, runners, plans)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import click
import yaml

from rules.catalogue import RuleFileError, load_catalogue
from team.roster import Roster, RosterError, Runner, load_roster
from team.roster_file import added, removed, write_atomically


# ------------------------------------------------------------------------------ roster
def _settings_roster() -> Path:
    """The roster of the settings (the one `stridewatch start` recorded, or the TOML's)."""
    from base.settings import load_settings

    try:
        found = load_settings().roster_file
    except ValueError:  # a bad setting: the command asks for --file
        found = None
    if found is None:
        raise click.UsageError("Missing option '--file': give the roster file, set "
                               "STRIDEWATCH_ROSTER_FILE, or start with "
                               "`stridewatch start --roster FILE`")
    return found


ROSTER_OPTION = click.option(
    "--file", "roster_file", type=click.Path(path_type=Path, dir_okay=False),
    envvar="STRIDEWATCH_ROSTER_FILE", default=_settings_roster, required=True,
    help="Roster YAML file (default: the roster of the settings, e.g. the one "
         "`stridewatch start --roster` recorded).")


def _load(path: Path) -> Roster:
    if not path.exists():
        return Roster()
    try:
        roster = load_roster(path)
        roster.check_against(load_catalogue())
    except (RosterError, RuleFileError) as exc:
        raise click.ClickException(str(exc)) from None
    return roster


def _save(path: Path, data: dict[str, Any]) -> None:
    try:
        roster = Roster.model_validate(data)
        roster.check_against(load_catalogue())
    except (ValueError, RosterError) as exc:
        raise click.ClickException(f"not saved: {exc}") from None
    write_atomically(path, yaml.safe_dump(roster.model_dump(mode="json", exclude_defaults=True),
                                          sort_keys=False))


def _append(path: Path, section: str, item: dict[str, Any]) -> None:
    """Add a team or runner to the file's text, keeping its other entries and comments."""
    if any(existing.id == item["id"] for existing in getattr(_load(path), section)):
        raise click.ClickException(f"{section[:-1]} '{item['id']}' exists in {path}")
    item = {key: value for key, value in item.items() if value is not None}
    try:
        text, roster, kept = added(path, section, item)
        roster.check_against(load_catalogue())
    except (RosterError, RuleFileError) as exc:
        raise click.ClickException(f"{path} not changed: {exc}") from None
    write_atomically(path, text)
    if not kept:
        click.echo(f"{path}: rewritten from its contents (its comments could not be kept)",
                   err=True)


def roster_runner(path: Path, runner_id: str) -> Runner | None:
    return _load(path).runner(runner_id)


def roster_coaches(path: Path, team_id: str) -> list[str]:
    team = _load(path).team(team_id)
    return [c.id for c in team.coaches] if team else []


def roster_team_runners(path: Path, team_id: str) -> list[str]:
    """The runners of TEAM; a team the roster lacks is refused with the teams it has."""
    roster = _load(path)
    if roster.team(team_id) is None:
        known = ", ".join(t.id for t in roster.teams) or "none yet"
        raise click.ClickException(f"team '{team_id}' is not in {path} (teams: {known})")
    return [r.id for r in roster.runners if r.team == team_id]


def add_runner_to_roster(path: Path, runner_id: str, team_id: str, *, name: str | None = None,
                         tz: str | None = None, create_team: bool = False,
                         team_name: str | None = None, dry_run: bool = False) -> str:
    """Put RUNNER in TEAM in the roster file; returns what was done, in words.

    A team the roster does not define is refused unless ``create_team``; a runner who is
    already in the roster is left as they are (in another team: refused). ``dry_run``
    checks everything and writes nothing.
    """
    roster = _load(path)
    current = roster.runner(runner_id)
    if current is not None:
        if current.team != team_id:
            raise click.ClickException(
                f"runner '{runner_id}' is in team '{current.team}' in {path}; to move them, "
                "edit their `team:` there")
        return f"runner {runner_id} is already in team {team_id} in {path}"
    new_team = {"id": team_id, "name": team_name or team_id}
    runner = {key: value for key, value in {"id": runner_id, "name": name or runner_id,
                                            "team": team_id, "tz": tz}.items()
              if value is not None}
    if roster.team(team_id) is None and not create_team:
        known = ", ".join(t.id for t in roster.teams) or "none yet"
        raise click.ClickException(
            f"team '{team_id}' is not in {path} (teams: {known}); add --create-team to "
            f"create it, or `stridewatch roster add-team {team_id} --name NAME` first")
    creates = roster.team(team_id) is None
    if dry_run:
        data = roster.model_dump(mode="json")
        data["teams"] += [new_team] if creates else []
        data["runners"].append(runner)
        try:
            Roster.model_validate(data).check_against(load_catalogue())
        except (ValueError, RuleFileError) as exc:
            raise click.ClickException(f"{path} not changed: {exc}") from None
        return "checked"
    done = []
    if creates:
        _append(path, "teams", new_team)
        done.append(f"created team {team_id}")
    _append(path, "runners", runner)
    done.append(f"added runner {runner_id} to team {team_id} in {path}")
    return "; ".join(done)


def remove_runner_from_roster(path: Path, runner_id: str) -> str:
    """Take RUNNER out of the roster file, keeping the rest of its text where it can."""
    roster = _load(path)
    if roster.runner(runner_id) is None:
        return f"runner {runner_id} is not in {path}; nothing to remove"
    try:
        text, _, kept = removed(path, "runners", runner_id)
    except RosterError as exc:
        raise click.ClickException(f"{path} not changed: {exc}") from None
    write_atomically(path, text)
    if not kept:
        click.echo(f"{path}: rewritten from its contents (its comments could not be kept)",
                   err=True)
    return f"removed runner {runner_id} from {path}"


@click.group("roster")
def roster_group() -> None:
    """Teams, runners, coaches, time zones, shoes, injury status."""


@roster_group.command("show")
@ROSTER_OPTION
def roster_show(roster_file: Path) -> None:
    """Teams with their coaches and runners (notification targets are not shown)."""
    roster = _load(roster_file)
    for team in roster.teams:
        coaches = ", ".join(c.name for c in team.coaches) or "no coach"
        click.echo(f"{team.id}: {team.name} ({team.tz}, load: {team.load_metric}; {coaches})")
        for r in (r for r in roster.runners if r.team == team.id):
            extra = []
            if r.injury:
                extra.append(f"return to run after grade {r.injury.grade} ankle sprain since "
                             f"{r.injury.since}, started at stage {r.injury.stage}")
            if r.cleared_to_run:
                extra.append(f"cleared to run by {r.cleared_to_run.by} on "
                             f"{r.cleared_to_run.signed_on}")
            if r.shoes:
                extra.append("shoes: " + ", ".join(f"{s.id} ({s.start_km:g} km)"
                                                   for s in r.shoes))
            if r.rule_overrides:
                extra.append("overrides: " + ", ".join(sorted(r.rule_overrides)))
            click.echo(f"  {r.id:<12} {r.name:<20} {r.tz or team.tz:<18} "
                       f"{len(r.notify)} targets  {'; '.join(extra)}")


@roster_group.command("validate")
@ROSTER_OPTION
def roster_validate(roster_file: Path) -> None:
    """Check the file and its overrides against the rule catalogue."""
    roster = _load(roster_file)
    click.echo(f"{roster_file}: {len(roster.teams)} teams, {len(roster.runners)} runners, ok")


@roster_group.command("add-team")
@ROSTER_OPTION
@click.argument("team_id")
@click.option("--name", required=True)
@click.option("--tz", default="UTC", show_default=True)
@click.option("--load-metric", type=click.Choice(["distance_km", "duration_min", "trimp"]),
              default="distance_km", show_default=True)
def roster_add_team(roster_file: Path, team_id: str, name: str, tz: str,
                    load_metric: str) -> None:
    _append(roster_file, "teams", {"id": team_id, "name": name, "tz": tz,
                                   "load_metric": load_metric})
    click.echo(f"added team {team_id}")


@roster_group.command("add-coach")
@ROSTER_OPTION
@click.argument("team_id")
@click.argument("coach_id")
@click.option("--name", required=True)
def roster_add_coach(roster_file: Path, team_id: str, coach_id: str, name: str) -> None:
    """Add COACH to TEAM (their notification URLs go in the file: they hold tokens).

    For the coach's broker login to read the team's alerts:
    `stridewatch coaches add COACH --team TEAM`.
    """
    data = _load(roster_file).model_dump(mode="json")
    team = next((t for t in data["teams"] if t["id"] == team_id), None)
    if team is None:
        raise click.ClickException(f"no team '{team_id}' in {roster_file}")
    if any(c["id"] == coach_id for c in team["coaches"]):
        raise click.ClickException(f"coach '{coach_id}' exists in team {team_id}")
    team["coaches"].append({"id": coach_id, "name": name})
    _save(roster_file, data)
    click.echo(f"added coach {coach_id} to team {team_id}")


@roster_group.command("add-runner")
@ROSTER_OPTION
@click.argument("runner_id")
@click.option("--name", required=True)
@click.option("--team", required=True)
@click.option("--tz", default=None, help="Defaults to the team's time zone.")
def roster_add_runner(roster_file: Path, runner_id: str, name: str, team: str,
                      tz: str | None) -> None:
    _append(roster_file, "runners", {"id": runner_id, "name": name, "team": team, "tz": tz})
    click.echo(f"added runner {runner_id} to {team}")


def _update_runner(roster_file: Path, runner_id: str, **changes: Any) -> None:
    data = _load(roster_file).model_dump(mode="json")
    runner = next((r for r in data["runners"] if r["id"] == runner_id), None)
    if runner is None:
        raise click.ClickException(f"no runner '{runner_id}' in {roster_file}")
    runner.update(changes)
    _save(roster_file, data)


@roster_group.command("set-injury")
@ROSTER_OPTION
@click.argument("runner_id")
@click.option("--grade", type=click.IntRange(1, 3), required=True)
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="First day of the return-to-run plan (default: today).")
@click.option("--stage", type=click.IntRange(1, 5), default=1, show_default=True)
def roster_set_injury(roster_file: Path, runner_id: str, grade: int, since: Any,
                      stage: int) -> None:
    """Start RUNNER's staged return to running after an ankle sprain."""
    start = since.date() if since else date.today()
    _update_runner(roster_file, runner_id, injury={
        "kind": "ankle_sprain", "grade": grade, "since": start.isoformat(), "stage": stage})
    click.echo(f"{runner_id}: return to run after a grade {grade} ankle sprain from {start}, "
               f"stage {stage}")


@roster_group.command("clear-to-run")
@ROSTER_OPTION
@click.argument("runner_id")
@click.option("--by", "signed_by", required=True,
              help="Who signed the runner off, e.g. 'physiotherapist J. Berg'.")
@click.option("--on", "signed_on", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The day of the sign-off (default: today).")
def roster_clear_to_run(roster_file: Path, runner_id: str, signed_by: str,
                        signed_on: Any) -> None:
    """Record a clinician's sign-off for RUNNER to start the return to running.

    A grade III sprain, or a sprain reported with red flags, starts the walk-run plan only
    once the runner is signed off on or after the day of the injury.
    """
    day = signed_on.date() if signed_on else date.today()
    _update_runner(roster_file, runner_id,
                   cleared_to_run={"signed_on": day.isoformat(), "by": signed_by})
    click.echo(f"{runner_id}: cleared to run by {signed_by} on {day}")


@roster_group.command("clear-injury")
@ROSTER_OPTION
@click.argument("runner_id")
def roster_clear_injury(roster_file: Path, runner_id: str) -> None:
    _update_runner(roster_file, runner_id, injury=None)
    click.echo(f"{runner_id}: no injury on record")


@roster_group.command("add-shoe")
@ROSTER_OPTION
@click.argument("runner_id")
@click.argument("shoe_id")
@click.option("--name", default="")
@click.option("--start-km", type=float, default=0.0, show_default=True)
def roster_add_shoe(roster_file: Path, runner_id: str, shoe_id: str, name: str,
                    start_km: float) -> None:
    data = _load(roster_file).model_dump(mode="json")
    runner = next((r for r in data["runners"] if r["id"] == runner_id), None)
    if runner is None:
        raise click.ClickException(f"no runner '{runner_id}' in {roster_file}")
    runner["shoes"] = [s for s in runner.get("shoes", []) if s["id"] != shoe_id]
    runner["shoes"].append({"id": shoe_id, "name": name, "start_km": start_km})
    _save(roster_file, data)
    click.echo(f"{runner_id}: shoe {shoe_id} at {start_km:g} km")
