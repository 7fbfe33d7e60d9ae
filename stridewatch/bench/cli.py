"""``stridewatch bench``: the scaling questions in one run (docs/benchmarks.md)."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from base.settings import Settings, command_settings
from stridewatch.bench.common import (
    DEFAULT_VARIANTS,
    RUNS_END,
    Variant,
    bench_stack,
    ensure_runner_accounts,
    err,
    parse_variant,
)

PARTS = ("core", "stream", "live", "scaleout", "recovery")


def _parts(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    if "all" in chosen:
        return list(PARTS)
    bad = [p for p in chosen if p not in PARTS]
    if bad or not chosen:
        raise click.BadParameter(f"choose from {', '.join(PARTS)} (comma-separated) or all",
                                 param_hint="--parts")
    return [p for p in PARTS if p in chosen]


def _weeks(text: str) -> list[int]:
    try:
        weeks = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise click.BadParameter("comma-separated whole weeks, e.g. 1,26",
                                 param_hint="--history-weeks") from None
    if not weeks or any(w < 0 or w > 104 for w in weeks):
        raise click.BadParameter("weeks between 0 and 104", param_hint="--history-weeks")
    return weeks


def _variants(specs: tuple[str, ...], settings: Settings) -> list[Variant]:
    try:
        variants = [parse_variant(s) for s in (specs or DEFAULT_VARIANTS)]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--variant") from None
    if len({v.name.lower() for v in variants}) != len(variants):
        raise click.BadParameter("variant names must be unique", param_hint="--variant")
    for v in variants:  # a bad value stops here, not after the core part ran
        try:
            Settings(**{**settings.model_dump(), **v.overrides})
        except ValidationError as exc:
            raise click.BadParameter(f"variant {v.name}: {exc}", param_hint="--variant"
                                     ) from None
    return variants


@click.command("bench")
@click.option("--parts", "parts_text", default="all", show_default=True,
              help="Parts to run, comma-separated: core, stream, live, scaleout, recovery "
                   "(or all).")
@click.option("--runners", type=click.IntRange(1, 10_000), default=None,
              help="live: runners, each sending one batch a second.  [default: 200; 5 with "
                   "--quick]")
@click.option("--minutes", type=click.FloatRange(0.1, 180), default=None,
              help="live: minutes of running; core: minutes of live batches per runner.  "
                   "[default: 2; 0.5 with --quick]")
@click.option("--stream-runners", type=click.IntRange(1, 100_000), default=None,
              help="stream, scaleout: runners in the pre-filled topic.  [default: 2000; 20 "
                   "with --quick]")
@click.option("--stream-seconds", type=click.FloatRange(1, 3600), default=None,
              help="stream, scaleout: seconds of live batches per runner.  [default: 10; 5 "
                   "with --quick]")
@click.option("--core-runners", type=click.IntRange(1, 1000), default=None,
              help="core: runners (one per profile of the demo team).  [default: 5; 1 with "
                   "--quick]")
@click.option("--recovery-runners", type=click.IntRange(1, 100_000), default=None,
              help="recovery: runners whose state the worker recovers.  [default: 10000; "
                   "100 with --quick]")
@click.option("--history-weeks", "weeks_text", default="1,26", show_default=True,
              help="core: weeks of history already in the state, comma-separated.")
@click.option("--variant", "variant_specs", multiple=True,
              metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
              help="stream, live: a settings variant to compare (repeat); the first is the "
                   "headline and the one scaled out. [default: " + " and ".join(
                       DEFAULT_VARIANTS) + "]")
@click.option("--use-running-stack", is_flag=True,
              help="Use the stack the settings point at (`stridewatch stack up`) instead of "
                   "starting one on free ports.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every number to this file.")
@click.option("--quick", is_flag=True, help="A smoke run: tiny defaults.")
@click.option("--stall-timeout", type=click.FloatRange(min=1), default=90.0,
              show_default=True, help="Give a consumer up when no new output came for this "
                                      "long (s).")
def bench_command(parts_text: str, runners: int | None, minutes: float | None,
                  stream_runners: int | None, stream_seconds: float | None,
                  core_runners: int | None, recovery_runners: int | None, weeks_text: str,
                  variant_specs: tuple[str, ...],
                  use_running_stack: bool, json_file: Path | None, quick: bool,
                  stall_timeout: float) -> None:
    """Measure the pure step (core), the stream stage against Quix Streams and a plain
    consume loop (stream), the whole stack live at a fixed rate (live) and one worker
    against two (scaleout) and a worker's restart with each table store (recovery), in one
    run; print one table per part."""
    parts = _parts(parts_text)
    weeks = _weeks(weeks_text)
    live_runners = runners or (5 if quick else 200)
    live_minutes = minutes or (0.5 if quick else 2.0)
    s_runners = stream_runners or (20 if quick else 2000)
    s_seconds = stream_seconds or (5.0 if quick else 10.0)
    c_runners = core_runners or (1 if quick else 5)
    r_runners = recovery_runners or (100 if quick else 10_000)
    settings = command_settings()
    variants = _variants(variant_specs, settings)
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=200)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_start": os.getloadavg()},
        "params": {"parts": parts, "live_runners": live_runners,
                   "live_minutes": live_minutes, "stream_runners": s_runners,
                   "stream_seconds": s_seconds, "core_runners": c_runners,
                   "history_weeks": weeks, "recovery_runners": r_runners, "quick": quick,
                   "runs_end": RUNS_END.isoformat(),
                   "variants": [asdict(v) for v in variants]},
    }
    tables: list[Table] = []
    failed = False
    if "core" in parts:
        from stridewatch.bench.core import run_core
        from stridewatch.bench.tables import core_table

        err.log(f"core: {c_runners} runners, {weeks} weeks of history, {live_minutes:g} min "
                "of live batches")
        core = run_core(settings, c_runners, weeks, live_minutes, RUNS_END)
        report["core"] = core.flat()
        tables.append(core_table(core))
    if {"stream", "live", "scaleout", "recovery"} & set(parts):
        failed = _stack_parts(parts, variants, report, tables, use_running_stack,
                              live_runners, live_minutes, s_runners, s_seconds, stall_timeout,
                              r_runners, max(weeks))
    report["machine"]["load_avg_end"] = os.getloadavg()
    for table in tables:
        out.print(table)
    load = report["machine"]
    out.print(f"[dim]{load['cpus']} CPUs; load average {load['load_avg_start'][0]:.2f} at "
              f"start, {load['load_avg_end'][0]:.2f} at end: other work on the machine "
              "moves these numbers.[/]")
    if json_file is not None:
        json_file.write_text(json.dumps(_finite(report), indent=2, default=_json_default,
                                        allow_nan=False) + "\n")
        out.print(f"every number in {json_file}")
    if failed:
        raise SystemExit(1)


def _stack_parts(parts: list[str], variants: list[Variant], report: dict[str, Any],
                 tables: list[Table], use_running_stack: bool, live_runners: int,
                 live_minutes: float, s_runners: int, s_seconds: float, stall_timeout: float,
                 recovery_runners: int, recovery_weeks: int) -> bool:
    """The parts that need the stack; True if a correctness check failed."""
    from stridewatch.bench.live import LiveBench
    from stridewatch.bench.scaleout import run_scaleout
    from stridewatch.bench.stream import StreamBench
    from stridewatch.bench.tables import (
        live_table,
        process_table,
        scaleout_table,
        stream_table,
    )
    from stridewatch.bench.workload import plan_workload

    end_t = RUNS_END.timestamp()
    ok = True
    with bench_stack(use_running_stack) as stack:
        if {"stream", "scaleout"} & set(parts):
            workload = plan_workload(s_runners, s_seconds, end_t)
            bench = StreamBench(stack.settings, stack.workdir, workload, stall_timeout)
            if "stream" in parts:
                mine = [bench.stridewatch(v) for v in variants]
                quix = bench.quix(variants[0])
                raw = bench.raw(variants[0])
                report["stream"] = {
                    "runners": s_runners, "seconds": s_seconds, "records": len(bench.records),
                    "batches": workload.batches, "strides": workload.samples,
                    "stridewatch": asdict(mine[0]), "quix": asdict(quix), "raw": asdict(raw),
                    "stridewatch_variants": {r.variant: asdict(r) for r in mine}}
                tables.append(stream_table([*mine, quix, raw], workload, "stream"))
                quix_missing = quix.error is not None and "not installed" in quix.error
                ok &= all(r.ok for r in mine) and raw.ok and (quix.ok or quix_missing)
            if "scaleout" in parts:
                scale = run_scaleout(bench, variants[0])
                report["scaleout"] = {"variant": variants[0].name,
                                      **{k: asdict(v) for k, v in scale.items()}}
                tables.append(scaleout_table(scale, workload))
                ok &= all(r.ok for r in scale.values())
        if "live" in parts:
            live_load = plan_workload(live_runners, live_minutes * 60, end_t)
            ensure_runner_accounts(stack.settings, live_load.runners)
            live = LiveBench(stack.settings, stack.workdir, live_load, stall_timeout)
            results = [live.run(v) for v in variants]
            report["live"] = {**asdict(results[0]),
                              "alert_latency_ms_p50": results[0].alert_latency_ms.get("p50"),
                              "alert_latency_ms_p95": results[0].alert_latency_ms.get("p95"),
                              "alert_latency_ms_p99": results[0].alert_latency_ms.get("p99"),
                              "variants": {r.variant: asdict(r) for r in results}}
            tables += [live_table(results), process_table(results)]
            ok &= all(r.ok for r in results)
        if "recovery" in parts:
            from stridewatch.bench.recovery import run_recovery
            from stridewatch.bench.tables import recovery_table

            # 10,000 runners recover in 31 s (memory store): 20 times that, 2 min at least
            recovered = run_recovery(stack.settings, stack.workdir, recovery_runners,
                                     recovery_weeks, RUNS_END,
                                     timeout_s=max(120.0, recovery_runners * 0.06))
            report["recovery"] = {"runners": recovery_runners, "history_weeks": recovery_weeks,
                                  "stores": [{**asdict(r), "restart_recovery_s":
                                              r.starts["restart"].recovery_s
                                              if "restart" in r.starts else None}
                                             for r in recovered]}
            tables.append(recovery_table(recovered, recovery_weeks))
            ok &= all(r.ok for r in recovered)
        stack.keep = not ok
    return not ok


def _finite(value: object) -> object:
    """NaN (a number that could not be measured) becomes null: the file stays valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
