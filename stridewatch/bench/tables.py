"""The bench's printed tables (docs/benchmarks.md explains every column)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from stridewatch.bench.common import gist
from stridewatch.bench.core import CoreResult
from stridewatch.bench.live import LiveResult
from stridewatch.bench.recovery import RecoveryResult
from stridewatch.bench.stream import StreamResult
from stridewatch.bench.workload import Workload


def num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _table(title: str, columns: Sequence[str], left: int = 1) -> Table:
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i < left or i == len(columns) - 1
                         else "right")
    return table


def core_table(core: CoreResult) -> Table:
    table = _table(f"core: the pure step as the worker runs it, per live batch (~1 s, ~3 "
                   f"strides); {core.runners} runners × {core.live_minutes:g} min live",
                   ["history\nweeks", "live\nbatches", "µs p50", "p95", "p99", "max",
                    "state bytes\nmean / max", "changelog bytes\nper batch",
                    "history records folded"])
    for weeks, h in core.history.items():
        us = h.live_batch_us
        table.add_row(weeks, num(h.batches), *(num(us.get(k)) for k in ("p50", "p95", "p99",
                                                                         "max")),
                      f"{num(h.state_bytes_mean)} / {num(h.state_bytes_max)}",
                      num(h.changelog_bytes_per_batch), num(h.history_events))
    return table


def _verdict(ok: bool, done: int, total: int, error: str | None, extra: str = "") -> str:
    if ok:
        return f"[green]ok[/] {done:,}/{total:,}"
    return (f"[bold red]FAIL[/] {done:,}/{total:,}{extra}"
            + (f"; {escape(gist(error))}" if error else ""))


def stream_table(results: Sequence[StreamResult], workload: Workload, title: str) -> Table:
    table = _table(f"{title}: {len(workload.runners):,} runners × {workload.seconds:g} s live "
                   f"= {workload.batches:,} device batches, {workload.samples:,} strides, "
                   f"{results[0].records if results else 0:,} Kafka records",
                   ["consumer", "workers", "batches/s", "strides/s", "CPU ms\nper batch",
                    "broker CPU ms\nper batch", "seconds", "every batch → one output"])
    for r in results:
        if r.consumer == "quix" and r.error and "not installed" in r.error:
            table.add_row("Quix Streams", "", "–", "–", "–", "–", "–", escape(r.error))
            continue
        label = {"stridewatch": f"StrideWatch worker\n[dim]{escape(r.variant)}: "
                                f"{escape(r.describe)}[/]",
                 "quix": "Quix Streams (same step)", "raw": "aiokafka + json.loads"
                 }[r.consumer]
        extra = f", {r.duplicates} repeated, {r.unexpected} stray, {r.dead_letters} dead"
        table.add_row(label, str(r.workers), num(r.batches_per_s), num(r.strides_per_s),
                      num(r.cpu_ms_per_batch, 3), num(r.broker_cpu_ms_per_batch, 3),
                      num(r.seconds, 1),
                      _verdict(r.ok, r.batches_done, r.batches, r.error, extra))
    return table


def live_table(results: Sequence[LiveResult]) -> Table:
    first = results[0]
    table = _table(f"live: {first.runners:,} runners × {first.minutes:g} min, one batch a "
                   f"second each ({first.offered_batches_per_s:,.0f} batches/s offered), "
                   "whole stack", ["variant", "achieved\nbatches/s", "sustained",
                                   "behind\ns", "drain\ns", "strides\nlost",
                                   "batch → point ms\np50 / p99", "alerts",
                                   "alert → phone ms\np50 / p95 / p99",
                                   "changelog\nbytes/rec", "check"])
    for r in results:
        lat, al = r.batch_latency_ms, r.alert_latency_ms
        table.add_row(
            f"[bold]{escape(r.variant)}[/]\n[dim]{escape(r.describe)}[/]",
            num(r.batches_per_s), "[green]yes[/]" if r.sustained else "[red]no[/]",
            num(r.behind_s, 2), num(r.drain_s, 2), str(r.lost),
            f"{num(lat.get('p50'))} / {num(lat.get('p99'))}",
            f"{r.alerts}/{r.alerts_on_kafka}",
            " / ".join(num(al.get(k)) for k in ("p50", "p95", "p99")),
            num(r.changelog_bytes_per_record),
            _verdict(r.ok, r.points_matched, r.batches, r.error,
                     f", {r.lost} strides lost, {r.duplicates} repeated, "
                     f"{r.dead_letters} dead letters, {r.unrouted} unrouted"))
    return table


def process_table(results: Sequence[LiveResult]) -> Table:
    names = ["mosquitto", "bridge", "kafka", "worker", "sink", "notify"]
    table = _table("live: CPU seconds during the run / peak RSS MB per process",
                   ["variant", *names, ""])
    for r in results:
        cells = []
        for name in names:
            s = r.processes.get(name)
            cells.append(f"{num(s.cpu_s, 1)} / {num(s.peak_rss_mb)}" if s else "–")
        table.add_row(escape(r.variant), *cells, "")
    return table


def scaleout_table(results: dict[str, StreamResult], workload: Workload) -> Table:
    table = _table(f"scaleout: StrideWatch workers in one group, {workload.batches:,} device "
                   "batches", ["workers", "batches/s", "strides/s", "CPU ms per batch\n"
                               "(all workers)", "broker CPU ms\nper batch", "check"])
    for r in results.values():
        table.add_row(f"{r.workers} ({escape(r.variant)})", num(r.batches_per_s),
                      num(r.strides_per_s), num(r.cpu_ms_per_batch, 3),
                      num(r.broker_cpu_ms_per_batch, 3),
                      _verdict(r.ok, r.batches_done, r.batches, r.error))
    return table


def recovery_table(results: Sequence[RecoveryResult], weeks: int) -> Table:
    first = results[0]
    table = _table(f"recovery: one worker, {first.runners:,} runners' state ({weeks} weeks of "
                   f"history each) = {first.changelog_records:,} changelog records, "
                   f"{first.changelog_mb:,.1f} MB; seconds from the process start",
                   ["table store", "first start\npartitions", "first output",
                    "restart\npartitions", "first output", "restart: reading\nthe changelog",
                    "check"])
    for r in results:
        f, s = r.starts.get("first"), r.starts.get("restart")
        table.add_row(escape(r.store),
                      num(f.assigned_s, 1) if f else "–", num(f.first_output_s, 1) if f else "–",
                      num(s.assigned_s, 1) if s else "–", num(s.first_output_s, 1) if s else "–",
                      num(s.recovery_s, 1) if s else "–",
                      "[green]ok[/]" if r.ok
                      else f"[bold red]FAIL[/] {escape(gist(r.error or ''))}")
    return table
