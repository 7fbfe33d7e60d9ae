"""What every bench part shares: the simulated team, variants, the stack, percentiles."""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from base.settings import Settings, load_settings
from ingest.simulator import SimulatedRunner, demo_team

DEFAULT_VARIANTS = ("one-record:kafka_one_record_per_batch=true",
                    "batched:kafka_one_record_per_batch=false")
# settings that place the stack or name a variant's topics: the bench sets them itself
STACK_KEYS = frozenset({"data_dir", "mqtt_host", "mqtt_port", "kafka_bootstrap", "influx_url",
                        "influx_rpc_port", "topic_prefix", "app_id", "bridge_client_id",
                        "bridge_share_group"})
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
RUNNER_PREFIX = "bench"
PERCENTILES = (50.0, 95.0, 99.0)


def runs_end(now: datetime | None = None) -> datetime:
    """Where every simulated run ends: a Monday at 00:00 UTC, one to two weeks ago.

    Always the same weekday, so the rules see the same week in every bench run; recent,
    so the points stay inside InfluxDB's retention whatever the year.
    """
    today = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=7 + today.weekday())


RUNS_END = runs_end()

err = Console(stderr=True, highlight=False)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 (nearest rank) and max of ``values``; NaN for an empty sequence."""
    ordered = sorted(values)
    out: dict[str, float] = {}
    for p in PERCENTILES:
        key = f"p{p:g}"
        out[key] = ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered \
            else math.nan
    out["max"] = ordered[-1] if ordered else math.nan
    return out


def scaled(values: dict[str, float], factor: float) -> dict[str, float]:
    return {k: v * factor for k, v in values.items()}


def bench_team(runners: int) -> list[SimulatedRunner]:
    """``runners`` simulated runners cycling through the demo team's profiles (steady,
    load spike, imbalance, cadence drop, pain), so the rules have something to fire on."""
    base = demo_team()
    return [replace(base[i % len(base)], runner=f"{RUNNER_PREFIX}-{i:04d}", seed=i)
            for i in range(runners)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=True)


# ------------------------------------------------------------------------------ variants
@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, str]

    @property
    def describe(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.overrides.items()) or "(defaults)"


def parse_variant(text: str) -> Variant:
    """``NAME:KEY=VALUE[,KEY=VALUE...]`` → :class:`Variant` (keys are settings fields)."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not VARIANT_NAME.match(name):
        raise ValueError(f"variant name {name!r}: use letters, digits, '-', '_', '.' "
                         "(at most 40)")
    overrides: dict[str, str] = {}
    for pair in (p.strip() for p in rest.split(",")):
        if not pair:
            continue
        key, eq, value = pair.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise ValueError(f"variant {name}: expected KEY=VALUE, got {pair!r}")
        if key in STACK_KEYS:
            raise ValueError(f"variant {name}: {key} is set by the bench (one stack, own "
                             "topics per variant)")
        if key not in Settings.model_fields:
            raise ValueError(f"variant {name}: {key!r} is not a setting "
                             "(see stridewatch/settings.py)")
        overrides[key] = value.strip()
    return Variant(name, overrides)


def variant_settings(base: Settings, variant: Variant, tag: str, workdir: Path) -> Settings:
    """``base`` with the variant's overrides, its own topics, app id and bridge session.

    ``workdir`` holds the variant's logs; the service passwords are carried over explicitly
    because the secrets file lives in the stack's data folder, not in ``workdir``.
    """
    from base.mqtt import service_password

    values: dict[str, Any] = base.model_dump()
    values.update(variant.overrides)
    for account in ("bridge", "notifier"):
        secret = getattr(base, f"{account}_password").get_secret_value() \
            or service_password(base, account)
        values[f"{account}_password"] = SecretStr(secret)
    values.update(topic_prefix=tag, app_id=tag, bridge_client_id=f"{tag}-bridge",
                  bridge_share_group=tag, data_dir=workdir)
    for name in ("roster_file", "rules_dir"):  # children start in another folder
        if values.get(name) is not None:
            values[name] = Path(values[name]).resolve()
    return Settings(**values)


# ------------------------------------------------------------------------------ the stack
@dataclass
class BenchStack:
    settings: Settings
    workdir: Path  # the variants' logs
    keep: bool = False  # keep the temporary folder (a variant failed)


@contextlib.contextmanager
def bench_stack(use_running: bool) -> Iterator[BenchStack]:
    """The stack's settings and a folder for the variants' logs.

    Without ``use_running``: a stack of its own on free ports in a temporary folder,
    stopped at the end; the folder is removed unless something failed.
    """
    from deploy.stack import LocalStack

    if use_running:
        settings = load_settings()
        folder = settings.data_dir.resolve() / "bench"
        folder.mkdir(parents=True, exist_ok=True)
        yield BenchStack(settings, folder)
        return
    root = Path(tempfile.mkdtemp(prefix="stridewatch-bench-"))
    settings = load_settings(
        data_dir=root / "stack", mqtt_port=free_port(),
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        influx_url=f"http://127.0.0.1:{free_port()}", influx_rpc_port=free_port())
    stack = LocalStack(settings)
    bench = BenchStack(settings, root, keep=True)
    try:
        stack.up(echo=lambda line: err.log(line))
        yield bench
    finally:
        stack.down(echo=lambda line: None)
        if bench.keep:
            err.log(f"kept {root} (logs of the stack and the variants)")
        else:
            shutil.rmtree(root, ignore_errors=True)


def ensure_runner_accounts(settings: Settings, runners: Sequence[str]) -> None:
    from deploy.stack import Mosquitto

    mosquitto = Mosquitto(settings)
    missing = [r for r in runners if mosquitto.runner_password(r) is None]
    if missing:
        err.log(f"creating MQTT accounts for {len(missing)} simulated runners")
        mosquitto.add_runners(missing)


def gist(error: str) -> str:
    """First line of an error, and its last (e.g. a log tail's exception) if different."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"
