"""The main job on the local stack (``stridewatch run``) and the small readers it uses."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from base.kafka import group_lag, make_consumer
from base.settings import Settings, command_settings
from rules.alerts import Alert
from team.roster import load_roster

DEMO_ROSTER = Path(__file__).resolve().parent.parent / "deploy" / "local" / "demo-roster.yaml"
EXPECTED_DEMO_RULES = {"ben": "load_ratio", "cleo": "gct_balance", "dev": "cadence_drop",
                       "eli": "pain_after_run"}
console = Console(highlight=False)


# ------------------------------------------------------------------------------ simulate
def simulate_team(settings: Settings, *, history_weeks: int, live_minutes: float,
                  only: set[str] | None = None,
                  overrides: dict[str, dict[str, float]] | None = None,
                  end: datetime | None = None) -> int:
    """Publish the demo team's history and today's run; return how many messages."""
    from ingest.publisher import RunnerPublisher
    from ingest.simulator import demo_team, plan_history, plan_live, with_overrides

    team = with_overrides(demo_team(), **(overrides or {}))
    if only:
        team = [r for r in team if r.runner in only]
    end = end or datetime.now(UTC)
    plans = []
    for r in team:
        messages = list(plan_history(r, end, history_weeks))
        if live_minutes > 0:
            messages += list(plan_live(r, end.timestamp(), live_minutes))
        plans.append((r.runner, messages))
    total = sum(len(m) for _, m in plans)
    sent = 0
    with RunnerPublisher(settings) as publisher, Progress(
            TextColumn("[bold]publishing[/] {task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("team", total=total)
        for runner, messages in plans:
            progress.update(task, description=runner)
            for topic, payload in messages:
                publisher.publish(topic, payload)
                sent += 1
                progress.advance(task)
    console.print(f"published {sent} messages for {len(plans)} runners over MQTT (QoS 1)")
    return sent


# ------------------------------------------------------------------------------ readers
async def read_topic(settings: Settings, topic: str, *, follow: bool = False,
                     idle_s: float = 2.0) -> Any:
    """Yield every record of ``topic`` from the start (no consumer group).

    Without ``follow`` it stops once it has read up to the high watermark each fetch
    reports (the local broker's end offsets are wrong for batched topics), or after
    ``idle_s`` without a record.
    """
    from aiokafka.structs import TopicPartition

    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        idle_since = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            got = False
            for records in batches.values():
                for record in records:
                    got = True
                    yield record
            if got:
                idle_since = time.monotonic()
            if follow:
                continue
            behind = 0
            for tp in parts:
                mark = consumer.highwater(tp)
                if mark is None or await consumer.position(tp) < mark:
                    behind += 1
            if not behind:
                return
            if time.monotonic() - idle_since > idle_s:
                return
    finally:
        await consumer.stop()


def alert_line(alert: Alert) -> str:
    colour = {"notice": "yellow", "warn": "dark_orange", "critical": "red"}.get(
        alert.severity, "white")
    when = datetime.fromtimestamp(alert.fired_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"[bold {colour}]{alert.severity.upper()}[/] [bold]{alert.runner}[/] "
            f"{alert.rule} ({when}): {alert.title}")
    if not alert.to_runner:
        # one message per cause: the runner's phone already has this one's evidence
        return f"{head}\n  [dim]recorded for the coach; part of the {alert.cause} message[/]"
    caveat = f"\n  [italic]How sure this is:[/] {alert.caveat}" if alert.caveat else ""
    return (f"{head}\n  {alert.message}\n"
            f"  [italic]Next step:[/] {alert.next_step}{caveat}\n  [dim]{alert.disclaimer}[/]")


async def print_alerts(settings: Settings, *, follow: bool, runner: str | None) -> None:
    async for record in read_topic(settings, settings.alerts_topic, follow=follow):
        alert = Alert.from_bytes(record.value)
        if runner is None or alert.runner == runner:
            console.print(alert_line(alert))


async def print_deadletters(settings: Settings, limit: int) -> None:
    letters = [json.loads(r.value) async for r in read_topic(settings,
                                                            settings.deadletter_topic)]
    if not letters:
        console.print("no dead letters")
        return
    table = Table("when (UTC)", "stage", "topic", "runner", "device", "reason", "raw (first 60 B)")
    for letter in letters[-limit:]:
        raw = base64.b64decode(letter.get("raw_b64", ""))
        table.add_row(datetime.fromtimestamp(letter["at"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
                      letter.get("stage", ""), letter.get("topic", ""),
                      letter.get("runner") or "-", letter.get("device") or "-",
                      letter["reason"], repr(raw[:60])[2:-1])
    console.print(table)
    console.print(f"{len(letters)} dead letters in {settings.deadletter_topic}; "
                  f"showing the last {min(limit, len(letters))}")


# ------------------------------------------------------------------------------ the demo
SummaryRow = tuple[dict[str, str], dict[str, Any]]


def influx_summary(settings: Settings) -> dict[str, tuple[str, list[SummaryRow]]]:
    """What the demo ends with: each titled query and its rows as (tags, values)."""
    from base.influx_query import InfluxReader

    queries = {
        # today is a partial day, so the peak of the last week shows a spike that has passed
        "load ratio per runner, today and its peak over the last 7 days":
            'SELECT last("acwr") AS ratio_today, max("acwr") AS peak_ratio_7d, '
            'last("week_load") AS week_km FROM "daily_load" WHERE time > now() - 7d '
            'GROUP BY "runner"',
        "alerts per runner and rule":
            'SELECT count("message") FROM "alert" GROUP BY "runner", "rule"',
        "points per measurement": "SHOW MEASUREMENTS",
    }
    influx = InfluxReader(settings)
    summary: dict[str, tuple[str, list[SummaryRow]]] = {}
    try:
        for title, q in queries.items():
            rows: list[SummaryRow] = []
            for series in influx.query(q)["results"][0].get("series", []):
                tags = series.get("tags") or {}
                for row in series["values"]:
                    rows.append((tags, dict(zip(series["columns"], row, strict=True))))
            summary[title] = (q, rows)
    finally:
        influx.close()
    return summary


def _print_influx_summary(settings: Settings) -> None:
    for title, (q, rows) in influx_summary(settings).items():
        console.print(f"\n[bold]{title}[/]  [dim]{q}[/]")
        for tags, values in rows:
            label = " ".join(f"{k}={v}" for k, v in tags.items())
            shown = {k: v for k, v in values.items() if k != "time"}
            console.print(f"  {label:<32} {shown}" if tags else f"  {list(shown.values())}")


def run_demo(*, roster: Path | None, live_minutes: float, timeout: float) -> int:
    from deploy.stack import LocalStack, StackError
    from stridewatch.processes import Component

    roster_file = roster or Path(os.environ.get("STRIDEWATCH_ROSTER_FILE", DEMO_ROSTER))
    settings = command_settings(roster_file=roster_file)
    team = load_roster(roster_file)
    console.rule("[bold]StrideWatch[/] local demo")
    try:
        stack = LocalStack(settings)
        stack.up(echo=console.print)
    except StackError as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    for runner in team.runners:
        if stack.mosquitto.runner_password(runner.id) is None:
            stack.mosquitto.add_runner(runner.id)
    components = [Component(settings, name) for name in ("bridge", "worker", "sink", "notify")]
    for component in components:
        component.start()
        console.print(f"started {component.name:<7} log: {component.log_file}")
    try:
        components[0].wait_for_log("subscribed to", timeout=60)
        simulate_team(settings, history_weeks=6, live_minutes=live_minutes,
                      only={r.id for r in team.runners})
        console.rule("alerts as they arrive")
        seen = asyncio.run(_watch_alerts(settings, timeout, {r.id for r in team.runners}))
        console.rule("metrics in InfluxDB")
        asyncio.run(wait_until_drained(settings, within_s=120))
        _print_influx_summary(settings)
    except (TimeoutError, RuntimeError) as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    finally:
        for component in components:
            component.stop()
    _closing_words(settings, seen)
    missing = {r: rule for r, rule in EXPECTED_DEMO_RULES.items()
               if r in {x.id for x in team.runners} and (r, rule) not in seen}
    if missing and roster is None:
        console.print(f"[red]expected alerts did not arrive: {missing}[/]")
        return 1
    return 0


async def _watch_alerts(settings: Settings, within_s: float, runners: Iterable[str]
                        ) -> set[tuple[str, str]]:
    wanted = {(r, rule) for r, rule in EXPECTED_DEMO_RULES.items() if r in set(runners)}
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + within_s

    async def watch() -> None:
        async for record in read_topic(settings, settings.alerts_topic, follow=True):
            alert = Alert.from_bytes(record.value)
            console.print(alert_line(alert))
            seen.add((alert.runner, alert.rule))
            if wanted <= seen:
                # a few more seconds for the alerts right behind these
                await asyncio.sleep(3)
                return

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(watch(), timeout=max(1.0, deadline - time.monotonic()))
    return seen


async def wait_until_drained(settings: Settings, within_s: float) -> None:
    """Wait until the worker has consumed every event and the sink every metric point."""
    stages = [(settings.worker_group, settings.events_topic, "stream worker"),
              (settings.sink_group, settings.metrics_topic, "InfluxDB writer")]
    deadline = time.monotonic() + within_s
    quiet = 0
    while time.monotonic() < deadline:
        lags = [await group_lag(settings, group, topic) for group, topic, _ in stages]
        quiet = quiet + 1 if not any(lags) else 0
        if quiet >= 2:  # twice in a row: nothing was still on its way between stages
            return
        if any(lags):
            console.print("waiting: " + ", ".join(
                f"{name} {lag} records behind" for (_, _, name), lag in zip(stages, lags,
                                                                            strict=True)))
        await asyncio.sleep(1.5)
    raise TimeoutError(f"the pipeline did not catch up within {within_s:.0f} s")


def _closing_words(settings: Settings, seen: set[tuple[str, str]]) -> None:
    console.rule("where things are")
    console.print(f"{len(seen)} (runner, rule) alert pairs shown above.")
    console.print(f"Metrics: InfluxDB at {settings.influx_url}, database "
                  f"'{settings.influx_db}' (schema: docs/influxdb.md). Try:\n"
                  f"  curl -G {settings.influx_url}/query --data-urlencode "
                  f"'db={settings.influx_db}' --data-urlencode "
                  "'q=SELECT last(acwr) FROM daily_load GROUP BY runner'\n"
                  "Alerts again: stridewatch alerts    Dead letters: stridewatch deadletters\n"
                  "Stop the stack: stridewatch stack down")
