"""``stridewatch rules`` and ``stridewatch roster``: view the rules, view and change the roster."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from rules.catalogue import RuleFileError, load_catalogue
from rules.docs import RULES_PAGE, render_rules_page


def _catalogue(folder: Path | None) -> Any:
    try:
        return load_catalogue(folder)
    except RuleFileError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("rules")
def rules_group() -> None:
    """The injury-risk rule catalogue."""


@rules_group.command("list")
@click.option("--rules-dir", type=click.Path(path_type=Path, file_okay=False))
def rules_list(rules_dir: Path | None) -> None:
    """Each rule, its levels and its source."""
    for rule in sorted(_catalogue(rules_dir).values(), key=lambda r: r.id):
        levels = ", ".join(f"{lv.severity} {'>' if rule.direction == 'above' else '<'} "
                           f"{lv.threshold:g}" for lv in rule.levels)
        click.echo(f"{rule.id:<24} {levels:<32} {rule.title}")


@rules_group.command("docs")
@click.option("--check", is_flag=True, help="Exit 1 if docs/rules.md is out of date.")
def rules_docs(check: bool) -> None:
    """Write docs/rules.md from the catalogue."""
    page = render_rules_page(_catalogue(None))
    if check:
        if not RULES_PAGE.exists() or RULES_PAGE.read_text() != page:
            click.echo(f"{RULES_PAGE} is out of date: run `stridewatch rules docs`", err=True)
            sys.exit(1)
        click.echo(f"{RULES_PAGE} is up to date")
        return
    RULES_PAGE.write_text(page)
    click.echo(f"wrote {RULES_PAGE}")
