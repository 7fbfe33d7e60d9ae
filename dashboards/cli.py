"""``stridewatch dashboards generate|provision`` and ``stridewatch report``.

Registered into the main command with ``main.add_command(dashboards)`` and
``main.add_command(report)``. Heavy imports (matplotlib, grafana-client) happen inside
the commands so the rest of the CLI starts fast.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import click

from base.settings import command_settings
from dashboards.generate import GENERATED_DIR

log = logging.getLogger("stridewatch.dashboards")




@click.group("dashboards")
def dashboards() -> None:
    """Grafana dashboards as code: generate the JSON, push it to a Grafana."""


@dashboards.command("generate")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 if the checked-in JSON differs from the code.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=GENERATED_DIR, show_default=True, help="Folder of the generated JSON.")
def generate_cmd(check: bool, out_dir: Path) -> None:
    """Build the runner and team dashboards into OUT as sorted, stable JSON."""
    from dashboards.generate import check as check_files
    from dashboards.generate import write

    if check:
        drift = check_files(out_dir)
        for item in drift:
            click.echo(f"{item.path}: {item.reason}", err=True)
        if drift:
            click.echo("run `stridewatch dashboards generate` and commit the result", err=True)
            sys.exit(1)
        click.echo(f"{out_dir}: up to date")
        return
    changed = write(out_dir)
    for path in changed:
        click.echo(f"wrote {path}")
    if not changed:
        click.echo(f"{out_dir}: up to date")


@dashboards.command("provision")
@click.option("--url", required=True, envvar="GRAFANA_URL", show_envvar=True,
              help="Grafana's base URL, e.g. https://grafana.example.org")
@click.option("--token-env", default="GRAFANA_TOKEN", show_default=True,
              help="Environment variable holding a Grafana service-account token "
                   "(Admin role). Without it, user:password@ in --url is used.")
@click.option("--influx-url", default=None,
              help="InfluxDB URL as Grafana reaches it (default: STRIDEWATCH_INFLUX_URL).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per API call.")
def provision_cmd(url: str, token_env: str, influx_url: str | None, timeout: float) -> None:
    """Create or update the datasource, the StrideWatch folder and both dashboards."""
    from urllib.parse import urlsplit

    from dashboards.provision import ProvisionError, display_url, provision_grafana

    token = os.environ.get(token_env, "").strip()
    if not token and not urlsplit(url).password:
        raise click.ClickException(
            f"no Grafana credentials: set {token_env} to a service-account token, or "
            "give user:password@ in --url")
    settings = command_settings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)-7s %(name)s: %(message)s")
    try:
        done = provision_grafana(url, token or None, settings, influx_url, timeout)
    except ProvisionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"datasource stridewatch-influx {done.datasource}; folder StrideWatch "
               f"{done.folder}")
    base = display_url(url).rstrip("/")
    for uid, path in done.dashboards.items():
        click.echo(f"dashboard {uid}: {base}{path}" if path else f"dashboard {uid} saved")


@click.command("report")
@click.option("--team", help="Team id (as in the roster).")
@click.option("--runner", help="Only this runner (their team comes from the roster, or "
                               "--team; a runner not in the roster is in team unassigned).")
@click.option("--days", default=42, show_default=True, type=click.IntRange(7, 400),
              help="How far back the charts go.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("reports"), show_default=True, help="Folder for the page and charts.")
def report(team: str | None, runner: str | None, days: int, out_dir: Path) -> None:
    """Write a coach report for a team (--team) or one runner (--runner): an HTML page
    with charts and the open alerts with their next steps, no Grafana needed."""
    from dashboards.report import ReportError, make_report
    from ingest.contract import ID_PATTERN

    if team is None and runner is None:
        raise click.UsageError("give --team TEAM, or --runner RUNNER")
    for value, hint in ((team, "--team"), (runner, "--runner")):
        if value is not None and not re.match(ID_PATTERN, value):
            raise click.BadParameter("lowercase letters, digits, '-' and '_'", param_hint=hint)
    settings = command_settings()
    try:
        done = make_report(settings, team, days, out_dir, runner=runner)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    if not done.has_data:
        who = f"runner {runner}" if runner else f"team {team}"
        click.echo(f"no data for {who} in the last {days} days "
                   "(check the id and that `stridewatch sink` is running)", err=True)
    click.echo(f"wrote {done.html}")
    for path in done.charts.values():
        click.echo(f"wrote {path}")
