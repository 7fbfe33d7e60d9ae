"""What every ``stridewatch`` command shares: settings loaded once, errors said plainly."""

from __future__ import annotations

import click
from pydantic import ValidationError

from stridewatch.settings import Settings, load_settings


def command_settings() -> Settings:
    try:
        return load_settings()
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from None
