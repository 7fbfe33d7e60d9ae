"""The ``stridewatch`` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import click

from base import ops
from base.settings import Settings, command_settings
from base.status import StatusReporter
from ingest import topics

log = logging.getLogger("stridewatch")




def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    if settings.log_format == "json":
        from base.json_logs import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)  # a library's warning is one JSON line too
    # client libraries log request URLs at debug level, and URLs can carry tokens
    for noisy in ("aiokafka", "kafka", "faust", "mode", "httpx", "httpcore", "apprise",
                  "urllib3", "requests"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


@contextlib.contextmanager
def _ops(settings: Settings, process: ops.Process, consumed: tuple[str, str] | None = None,
         ping: str | None = None) -> Iterator[None]:
    """/healthz, /readyz and /metrics on ``ops_port`` while the process runs (base/ops.py)."""
    watch = None if consumed is None else ops.Consumed(
        consumed[0], consumed[1], f"stridewatch_{process}_consumer_lag")
    server = ops.serve(settings, process, watch, ping)
    if server is not None:
        from base import status

        status.current().ops_port = server.port
    try:
        yield
    finally:
        if server is not None:
            server.stop()


@contextlib.contextmanager
def _status_file(settings: Settings, name: str) -> Iterator[StatusReporter | None]:
    """A process started by ``stridewatch start`` keeps a status file (base/status.py)."""
    if not os.environ.get("STRIDEWATCH_STATUS_FILE"):
        yield None
        return
    from base.status import install
    from stridewatch.services import READY_MARKERS

    reporter = install(settings, name, READY_MARKERS[name])
    try:
        yield reporter
    finally:
        reporter.stop()


def _run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        ops.health().watch_loop(loop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner())


@click.group()
def main() -> None:
    """StrideWatch: stride and cadence data in, injury-risk information out."""


# ------------------------------------------------------------------------------ stack
@main.group()
def stack() -> None:
    """Start, check and stop the local stack (Mosquitto, Kafka, InfluxDB)."""


@stack.command("up")
def stack_up() -> None:
    """Install what is missing, start every service and wait until each answers."""
    from deploy.stack import LocalStack, StackError

    try:
        LocalStack(command_settings()).up(echo=click.echo)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("down")
def stack_down() -> None:
    """Stop every service of the local stack."""
    from deploy.stack import LocalStack

    LocalStack(command_settings()).down(echo=click.echo)


@stack.command("status")
def stack_status() -> None:
    """Show each service, its address and whether it answers."""
    from deploy.stack import LocalStack

    settings = command_settings()
    statuses = LocalStack(settings).status()
    for s in statuses:
        state = "healthy" if s.healthy else ("running, not answering" if s.running else "stopped")
        click.echo(f"{s.name:<10} {s.address:<22} {state:<24} log: {s.log}")
    from stridewatch.services import refused_line, sink_counters

    refused = refused_line(sink_counters(settings))
    if refused:
        click.echo(f"sink: {refused}")
    if not all(s.healthy for s in statuses):
        sys.exit(1)


@stack.command("client-cert")
@click.argument("account")
def stack_client_cert(account: str) -> None:
    """Issue a certificate for ACCOUNT (a runner id, svc-bridge, coach-<id>) signed by the
    local CA, for a TLS listener that requires client certificates (docs/operations.md)."""
    from deploy.stack import StackError
    from deploy.tls import issue_client_certificate

    settings = command_settings()
    try:
        files = issue_client_certificate(settings.mqtt_tls_dir, account)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"certificate: {files.cert}\nkey (mode 0600): {files.key}\nCA: {files.ca_cert}")


# ------------------------------------------------------------------------------ accounts
@main.group()
def runners() -> None:
    """Manage runners' MQTT credentials on the local broker."""


@runners.command("add")
@click.argument("runner")
@click.option("--team", help="Put RUNNER in this roster team (their coach sees their alerts).")
@click.option("--name", help="The runner's name in the roster (default: RUNNER).")
@click.option("--create-team", is_flag=True, help="Create --team if the roster lacks it.")
@click.option("--roster", "roster_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Roster file (default: STRIDEWATCH_ROSTER_FILE).")
@click.option("--password", help="Set this password instead of generating one.")
def runners_add(runner: str, team: str | None, name: str | None, create_team: bool,
                roster_file: Path | None, password: str | None) -> None:
    """Create or reset RUNNER's credentials (the password is printed once) and, with
    --team, add RUNNER to that team in the roster in the same step."""
    from deploy.stack import Mosquitto, StackError
    from team.cli import add_runner_to_roster, roster_coaches, roster_runner
    from team.roster import unknown_runner_warning

    settings = command_settings()
    path = roster_file or settings.roster_file
    if team is not None:
        if path is None:
            raise click.ClickException("no roster file: give --roster FILE or set "
                                       "STRIDEWATCH_ROSTER_FILE")
        # checked before the broker is touched, written once the credentials exist
        add_runner_to_roster(path, runner, team, name=name, create_team=create_team,
                             dry_run=True)
    try:
        secret = Mosquitto(settings).add_runner(runner, password)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"runner {runner} may publish under {topics.app_topic(runner, '')} and read "
               f"{topics.alerts_topic(runner)}")
    if team is not None and path is not None:
        click.echo(add_runner_to_roster(path, runner, team, name=name,
                                        create_team=create_team))
    listed = roster_runner(path, runner) if path is not None else None
    if listed is None:
        click.echo(f"warning: {unknown_runner_warning(runner, path)}", err=True)
    elif path is not None:
        # the team's coaches who have a broker account read the new runner's alerts too
        for coach in roster_coaches(path, listed.team):
            if Mosquitto(settings).coach_reads(coach, [runner]):
                click.echo(f"coach-{coach} may read {topics.alerts_topic(runner)}")
    click.echo(f"password: {secret}")


@runners.command("remove")
@click.argument("runner")
@click.option("--from-roster", is_flag=True,
              help="Also take RUNNER out of the roster (their stored data is kept).")
@click.option("--roster", "roster_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Roster file (default: STRIDEWATCH_ROSTER_FILE).")
def runners_remove(runner: str, from_roster: bool, roster_file: Path | None) -> None:
    """Revoke RUNNER's credentials: the broker refuses them from now on."""
    from deploy.stack import Mosquitto, StackError
    from team.cli import remove_runner_from_roster

    settings = command_settings()
    path = roster_file or settings.roster_file
    if from_roster and path is None:
        raise click.ClickException("no roster file: give --roster FILE or set "
                                   "STRIDEWATCH_ROSTER_FILE")
    try:
        had = Mosquitto(settings).remove_runner(runner)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    if not had:
        click.echo(f"runner {runner} had no credentials on this broker; nothing to revoke")
    else:
        click.echo(f"runner {runner}'s credentials are revoked; their data is kept")
    if from_roster and path is not None:
        click.echo(remove_runner_from_roster(path, runner))


@main.group()
def coaches() -> None:
    """Manage coaches' MQTT credentials (read access to their team's alerts)."""


@coaches.command("add")
@click.argument("coach")
@click.option("--runners", "runner_ids", help="Comma-separated runner ids.")
@click.option("--team", help="Every runner of this roster team (instead of --runners).")
@click.option("--roster", "roster_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Roster file for --team (default: STRIDEWATCH_ROSTER_FILE).")
def coaches_add(coach: str, runner_ids: str | None, team: str | None,
                roster_file: Path | None) -> None:
    """Create or reset COACH's credentials to read the alerts of a team's runners."""
    from deploy.stack import Mosquitto
    from team.cli import roster_team_runners

    settings = command_settings()
    if (runner_ids is None) == (team is None):
        raise click.UsageError("give --runners A,B or --team TEAM")
    if team is not None:
        path = roster_file or settings.roster_file
        if path is None:
            raise click.ClickException("no roster file: give --roster FILE or set "
                                       "STRIDEWATCH_ROSTER_FILE")
        chosen = roster_team_runners(path, team)
    else:
        chosen = [r for r in (runner_ids or "").split(",") if r]
    secret = Mosquitto(settings).add_coach(coach, chosen)
    click.echo(f"coach-{coach} may read the alerts of {','.join(chosen) or 'no runner yet'}"
               f"\npassword: {secret}")


# ------------------------------------------------------------------------------ influxdb
@main.group()
def influx() -> None:
    """InfluxDB settings of the running database."""


@influx.command("retention")
@click.argument("duration", required=False)
def influx_retention(duration: str | None) -> None:
    """Show, or set to DURATION (e.g. 1000d, 520w, INF), how long InfluxDB keeps points.

    Changes the default retention policy of the existing database (InfluxDB 1.x);
    STRIDEWATCH_INFLUX_RETENTION only applies when the database is created. A shorter
    DURATION deletes the points beyond it.
    """
    from ingest.retention import RetentionUnknown, describe, read_retention, set_retention

    settings = command_settings()
    try:
        now = set_retention(settings, duration) if duration else read_retention(settings)
    except (RetentionUnknown, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    state = "" if now.exists else " (the database is created with it at the sink's start)"
    click.echo(f"database '{now.database}' on {now.server}: retention policy '{now.policy}' "
               f"keeps {describe(now.seconds)}{state}")
    from ingest.retention import duration_s

    for measurement, kept in sorted(settings.influx_retention_by_measurement.items()):
        # deleted by the sink (docs/influxdb.md, "Retention per measurement")
        click.echo(f"  {measurement}: kept {describe(duration_s(kept))} "
                   "(older points deleted by the sink)")


# ------------------------------------------------------------------------------ services
@main.command()
@click.option("--client-id", help="MQTT client id; give each bridge instance its own.")
def bridge(client_id: str | None) -> None:
    """Run the MQTT → Kafka ingest bridge."""
    from ingest.bridge import Bridge

    settings = command_settings()
    _setup_logging(settings)
    with _status_file(settings, "bridge") as reporter, _ops(settings, "bridge"):
        async def run(stop: asyncio.Event) -> None:
            bridge = Bridge(settings, client_id)  # its clients want the running loop
            if reporter is not None:
                reporter.watch(lambda: {k: v for k, v in vars(bridge.stats).items()
                                        if isinstance(v, int)})
            await bridge.run(stop)

        _run_until_signal(run)


@main.command()
@click.option("--instance", help="A name for this worker when several share a data folder.")
def worker(instance: str | None) -> None:
    """Run the Faust stream worker (per-runner load, asymmetry, rules)."""
    from stream.worker import BrokerUnsuitable, run_worker

    settings = command_settings()
    _setup_logging(settings)
    try:
        with _status_file(settings, "worker"), _ops(
                settings, "worker", (settings.worker_group, settings.events_topic)):
            run_worker(settings, instance)
    except BrokerUnsuitable as exc:
        raise click.ClickException(str(exc)) from None


@main.group(invoke_without_command=True)
@click.pass_context
def sink(ctx: click.Context) -> None:
    """Write metric points from Kafka to InfluxDB (``sink replay``: write them again)."""
    if ctx.invoked_subcommand is not None:
        return
    from stream.outputs.sink import run_sink

    settings = command_settings()
    _setup_logging(settings)
    ping = f"{settings.influx_url.rstrip('/')}/ping"
    with _status_file(settings, "sink"), _ops(
            settings, "sink", (settings.sink_group, settings.metrics_topic), ping):
        _run_until_signal(lambda stop: run_sink(settings, stop))


@sink.command("replay")
@click.option("--from-start", is_flag=True, help="From the oldest point Kafka still holds.")
@click.option("--since", metavar="TIME",
              help="From points sent at or after TIME: 2026-11-30, 2026-11-30T06:00 (UTC), "
                   "or 3d / 12h / 90m ago.")
def sink_replay(from_start: bool, since: str | None) -> None:
    """Make the sink write metric points again (e.g. after a retention change).

    Sets the sink's committed offsets back; the next `stridewatch start` (or `sink`)
    writes those points again with their own times and tags, which overwrites what
    InfluxDB holds. The worker and its load state are not touched: nothing is counted
    twice. The sink must be stopped.
    """
    from base.kafka import group_lag, reset_group_offsets
    from stridewatch.services import live_pid, parse_since

    if from_start == (since is not None):
        raise click.UsageError("give exactly one of --from-start and --since TIME")
    settings = command_settings()
    pid = live_pid(settings, "sink")
    if pid is not None:
        raise click.ClickException(
            f"the sink is running (pid {pid}); its group's offsets can only be set back while "
            "no sink consumes. Run `stridewatch stop`, replay, then `stridewatch start`.")
    since_ms = None
    if since is not None:
        try:
            since_ms = int(parse_since(since).timestamp() * 1000)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None

    async def replay() -> tuple[dict[int, int], int]:
        offsets = await reset_group_offsets(settings, settings.sink_group,
                                            settings.metrics_topic, since_ms)
        return offsets, await group_lag(settings, settings.sink_group, settings.metrics_topic)

    try:
        offsets, pending = asyncio.run(replay())
    except Exception as exc:  # e.g. a sink elsewhere still in the group, or Kafka away
        raise click.ClickException(f"could not set the sink's offsets back: "
                                   f"{type(exc).__name__}: {exc}") from None
    shown = ", ".join(f"{p}@{o}" for p, o in sorted(offsets.items()))
    click.echo(f"group {settings.sink_group} on {settings.metrics_topic} now at {shown}: "
               f"{pending} records of metric points will be written again when the sink "
               "starts (`stridewatch start`)")


@main.command()
def notify() -> None:
    """Send alerts to runners' phones (MQTT, Apprise) and their coaches."""
    from stream.outputs.notifier import run_notifier

    settings = command_settings()
    _setup_logging(settings)
    with _status_file(settings, "notify"), _ops(
            settings, "notifier", (settings.notifier_group, settings.alerts_topic)):
        _run_until_signal(lambda stop: run_notifier(settings, stop))


# ------------------------------------------------------------------------------ as a service
@main.command()
@click.option("--roster", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="The team's roster file; recorded for later commands.")
@click.option("--timeout", default=120.0, show_default=True,
              help="Seconds to wait for each process to report healthy.")
def start(roster: Path | None, timeout: float) -> None:
    """Bring up the local stack if needed and run the pipeline in the background.

    The settings given now (environment, --roster) are recorded in the data dir, so
    later commands and restarted services use them without exporting anything.
    """
    from base.settings import record_started_settings
    from deploy.stack import LocalStack, StackError
    from stridewatch.services import StartError, start_all
    from team.roster import load_roster

    given: dict[str, object] = {"roster_file": roster.resolve()} if roster else {}
    settings = command_settings(**given)
    if settings.roster_file is None:
        click.echo("no roster (--roster FILE): runners are in no team and coaches get "
                   "nothing until one is given")
    try:
        load_roster(settings.roster_file)  # a bad roster fails here, not in four logs
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"roster {settings.roster_file}: {exc}") from None
    recorded = record_started_settings(settings, given)
    stack = LocalStack(settings)
    if not all(s.healthy for s in stack.status()):
        try:
            stack.up(echo=click.echo)
        except StackError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        started = start_all(settings, timeout, echo=click.echo)
    except StartError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(("pipeline started" if started else "pipeline was already running")
               + f"; healthy. Logs: {settings.data_dir.resolve() / 'logs'}; settings "
               f"recorded in {recorded}. `stridewatch status` shows it, `stridewatch stop` "
               "stops it.")


@main.command()
@click.option("--stack/--no-stack", "with_stack", default=False, show_default=True,
              help="Stop the local stack too (the local Kafka keeps its data in memory: "
                   "stopping it loses the topics).")
@click.option("--timeout", default=30.0, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
def stop(with_stack: bool, timeout: float) -> None:
    """Stop the pipeline's processes (and with --stack the local stack)."""
    from stridewatch.services import stop_all

    settings = command_settings()
    stop_all(settings, timeout, echo=click.echo)
    if with_stack:
        from deploy.stack import LocalStack

        LocalStack(settings).down(echo=click.echo)


@main.command()
@click.option("--no-lag", is_flag=True, help="Do not ask Kafka for the consumer lag.")
def status(no_lag: bool) -> None:
    """Each process: running or not, pid, uptime, lag, counters, last error, log.

    Exits non-zero unless every process is running and healthy.
    """
    from stridewatch.services import status_all, status_lines

    statuses = status_all(command_settings(), with_lag=not no_lag)
    for s in statuses:
        for line in status_lines(s):
            click.echo(line)
    if not all(s.healthy for s in statuses):
        sys.exit(1)


# ------------------------------------------------------------------------------ data
@main.command()
@click.option("--history-weeks", default=6, show_default=True,
              help="Weeks of past runs to back-fill.")
@click.option("--live-minutes", default=6.0, show_default=True,
              help="Length of today's run per runner (0: none).")
@click.option("--runner", "only", multiple=True, help="Only these runners of the demo team.")
@click.option("--imbalance", multiple=True, metavar="RUNNER=PTS",
              help="Left share of contact time above 50 %, e.g. ana=3.")
@click.option("--cadence-drop", multiple=True, metavar="RUNNER=FRACTION",
              help="Cadence drop in the second half of the run, e.g. ana=0.08.")
@click.option("--spike", multiple=True, metavar="RUNNER=FACTOR",
              help="Last week's distance multiplier, e.g. ana=2.")
def simulate(history_weeks: int, live_minutes: float, only: tuple[str, ...],
             imbalance: tuple[str, ...], cadence_drop: tuple[str, ...],
             spike: tuple[str, ...]) -> None:
    """Publish a simulated team over MQTT, as their devices would."""
    from stridewatch.demo import simulate_team

    settings = command_settings()

    def parse(pairs: tuple[str, ...]) -> dict[str, float]:
        out = {}
        for pair in pairs:
            name, _, value = pair.partition("=")
            try:
                out[name] = float(value)
            except ValueError:
                raise click.BadParameter(f"expected RUNNER=NUMBER, got {pair!r}") from None
        return out

    simulate_team(settings, history_weeks=history_weeks, live_minutes=live_minutes,
                  only=set(only), overrides={"imbalance_pts": parse(imbalance),
                                             "cadence_drop": parse(cadence_drop),
                                             "spike": parse(spike)})


@main.command()
@click.option("--follow", is_flag=True, help="Keep printing alerts as they arrive.")
@click.option("--runner", help="Only this runner's alerts.")
def alerts(follow: bool, runner: str | None) -> None:
    """Print alerts from the alerts topic."""
    from stridewatch.demo import print_alerts

    asyncio.run(print_alerts(command_settings(), follow=follow, runner=runner))


@main.command()
@click.option("--limit", default=20, show_default=True)
def deadletters(limit: int) -> None:
    """Show the most recent dead letters: why, from where, when, and the raw bytes."""
    from stridewatch.demo import print_deadletters

    asyncio.run(print_deadletters(command_settings(), limit))


@main.command()
@click.option("--roster", type=click.Path(path_type=Path, exists=True),
              help="Roster file (default: the demo team's).")
@click.option("--live-minutes", default=6.0, show_default=True)
@click.option("--timeout", default=240.0, show_default=True,
              help="Seconds to wait for the expected alerts.")
def run(roster: Path | None, live_minutes: float, timeout: float) -> None:
    """The main job on the local stack: start everything, run a simulated team through it,
    show the alerts and where the metrics are."""
    from stridewatch.demo import run_demo
    from stridewatch.services import NAMES, live_pid

    settings = command_settings()
    running = [name for name in NAMES if live_pid(settings, name) is not None]
    if running:
        # a second bridge with the same client id would take the first one's session over
        raise click.ClickException(
            f"the pipeline runs in the background ({', '.join(running)}; `stridewatch "
            "status`): stop it first with `stridewatch stop`, or feed it with `stridewatch "
            "simulate`")
    sys.exit(run_demo(roster=roster, live_minutes=live_minutes, timeout=timeout))


def _register() -> None:
    from dashboards.cli import dashboards as dashboards_group
    from dashboards.cli import report as report_command
    from ingest.importer import import_command
    from rules.cli import rules_group
    from stream.backtest_cli import backtest_command
    from stridewatch.bench.cli import bench_command
    from stridewatch.privacy import export_command, forget_command
    from team.cli import roster_group

    rules_group.add_command(backtest_command)
    main.add_command(rules_group)
    main.add_command(roster_group)
    main.add_command(dashboards_group)
    main.add_command(report_command)
    main.add_command(import_command)
    main.add_command(bench_command)
    main.add_command(forget_command)
    main.add_command(export_command)


_register()

if __name__ == "__main__":
    main()
