"""``stridewatch rules backtest``: what the rules would have fired on recorded events.

Alerts go to stdout as JSON lines (one per alert, so the output pipes into jq); refused
lines, warnings, the per-rule table and the totals go to stderr. ``stridewatch.cli``
attaches the command to the ``rules`` group, so ``rules`` does not import ``stream``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import click

from rules.catalogue import Rule, RuleFileError, load_catalogue
from stream.backtest import (
    SEVERITIES,
    AlertRow,
    BacktestSummary,
    DuplicateLine,
    RefusedLine,
    UnknownRunner,
    backtest,
)
from team.roster import Roster, RosterError, load_roster


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def summary_lines(summary: BacktestSummary) -> list[str]:
    """The per-rule count table (rules sorted, one column per severity) and the totals."""
    width = max([len("rule"), *(len(rule) for rule in summary.counts)])
    columns = [*SEVERITIES, "total"]
    lines = [f"{'rule':<{width}}  " + "  ".join(columns)]
    for rule, by_severity in summary.counts.items():
        cells = [by_severity.get(s, 0) for s in SEVERITIES]
        cells.append(sum(by_severity.values()))
        lines.append(f"{rule:<{width}}  "
                     + "  ".join(f"{n:>{len(c)}}" for n, c in zip(cells, columns, strict=True)))
    totals = (f"{_plural(summary.lines, 'line')}, {_plural(summary.events, 'event')}, "
              f"{_plural(summary.alerts, 'alert')}, {_plural(len(summary.runners), 'runner')}")
    if summary.refused:
        totals += f"; {_plural(len(summary.refused), 'line')} refused"
    if summary.duplicates:
        totals += f"; {_plural(len(summary.duplicates), 'duplicate')} ignored"
    lines.append(totals)
    return lines


def _catalogue(folder: Path | None) -> dict[str, Rule]:
    try:
        return load_catalogue(folder)
    except RuleFileError as exc:
        raise click.BadParameter(str(exc), param_hint="'--rules'") from None


def _roster(path: Path | None, catalogue: Mapping[str, Rule]) -> Roster:
    """The roster, checked the way the worker checks it at start.

    Overrides may name rules of the project's catalogue that ``--rules`` left out.
    """
    try:
        roster = load_roster(path)
        if path is not None:
            roster.check_against({**load_catalogue(), **catalogue})
    except (RosterError, RuleFileError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--roster'") from None
    return roster


@click.command("backtest")
@click.argument("events", metavar="EVENTS.jsonl", type=click.File("rb"))
@click.option("--roster", "roster_file", type=click.Path(path_type=Path, dir_okay=False,
                                                          exists=True),
              help="Roster YAML (teams, time zones, overrides). Without it every runner is "
                   "evaluated with the defaults.")
@click.option("--rules", "rules_dir", type=click.Path(path_type=Path, file_okay=False,
                                                       exists=True),
              help="Folder of rule files (default: the project's catalogue).")
def backtest_command(events: BinaryIO, roster_file: Path | None, rules_dir: Path | None
                     ) -> None:
    """What the rules would have fired on recorded events.

    EVENTS.jsonl: one {"topic": ..., "payload": {...}} a line, in order ('-' reads stdin;
    blank lines and lines starting with # are skipped). Each alert is printed as one JSON
    line (runner, rule, severity, t, evidence, message); refused lines, warnings and a
    per-rule count table go to stderr. Exits with 1 if any line was refused, 2 for a
    missing file, a bad roster or a bad rule folder.
    """
    catalogue = _catalogue(rules_dir)
    roster = _roster(roster_file, catalogue)
    summary: BacktestSummary | None = None
    for item in backtest(events, roster, catalogue):
        if isinstance(item, AlertRow):
            click.echo(item.to_json())
        elif isinstance(item, RefusedLine | DuplicateLine | UnknownRunner):
            click.echo(str(item), err=True)
        else:
            summary = item
    assert summary is not None  # backtest() always ends with its summary
    for line in summary_lines(summary):
        click.echo(line, err=True)
    if summary.refused:
        sys.exit(1)
