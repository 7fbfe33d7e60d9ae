"""Import FIT activity files for a runner (``stridewatch import FILE_OR_DIR... --runner R``).

Each file is read whole with :func:`ingest.decoders.fit.read_activity` (pure) before
anything is published, so a refused file (a bike ride, a corrupt or truncated file)
publishes nothing; the other files go on. A multisport file (a triathlon) is split into its
legs: each run or walk leg is published as a session of its own, the other legs are skipped
and listed. A run is published the way the watch would sync it, as the runner (their own
MQTT credentials, so the broker's ACL applies), QoS 1, acknowledged:

- ``runners/<runner>/<device>/session``  start, sequence ``base``
- ``runners/<runner>/<device>/samples``  the batches, sequences ``base``, ``base + 1``, …
- ``runners/<runner>/<device>/session``  end, sequence ``base + 1``

``base`` is ``int(start time) × 10,000`` and the session id is ``<device>-<start time>``,
both taken from the file's content (a leg's own start for a multisport file): importing the
same file again publishes the same sequences, and the stream (which counts each device
sequence once) ends up with one session per run. ``device`` is ``fit-<maker>-<serial>``.
The session events carry the device's timer time and step count when the file has them.

Before publishing, the runs are checked against InfluxDB's retention
(:mod:`ingest.retention`): a run whose points InfluxDB would drop is refused with the
retention named, unless ``past_retention`` is set. ``dry_run`` reads and checks everything
and publishes nothing (no broker, no credentials).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from base.mqtt import MqttError
from base.settings import Settings, command_settings
from ingest import topics
from ingest.contract import SampleBatch, SessionEvent, is_valid_id
from ingest.decoders.fit import (
    FitActivity,
    FitLeg,
    FitRejected,
    FitRun,
    iter_fit_files,
    read_activity,
    refusal,
)
from ingest.publisher import RunnerPublisher
from ingest.retention import Retention, RetentionUnknown, read_retention

Message = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class LegResult:
    """One leg of a file (a whole ordinary run is one leg): what it is and what happened."""

    index: int
    sport: str
    start_t: float
    timer_s: float | None
    distance_m: float | None
    records: int
    cadence_spm: float | None = None
    stance_ms: float | None = None
    balance_left_pct: float | None = None
    session_id: str | None = None  # a run or walk
    samples: int = 0
    refused_reason: str | None = None  # a skipped sport, or a run InfluxDB would drop
    imported: bool = False
    messages: int = 0  # published and acknowledged by the broker
    # imported with past_retention although InfluxDB drops its points
    beyond_retention: bool = False

    @property
    def is_run(self) -> bool:
        return self.session_id is not None

    @classmethod
    def of(cls, leg: FitLeg) -> LegResult:
        run = leg.run
        distance = leg.distance_m if leg.distance_m is not None else (
            _distance(run) if run is not None else None)
        return cls(leg.index, leg.sport, leg.start_t, leg.timer_s, distance, leg.records,
                   leg.cadence_spm, leg.stance_ms, leg.balance_left_pct,
                   run.session_id if run is not None else None,
                   run.samples_count if run is not None else 0, leg.skip_reason)


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened (or, on a dry run, would happen) to one file and each of its legs."""

    path: Path
    reason: str | None = None  # why the whole file was refused
    legs: tuple[LegResult, ...] = ()
    device: str | None = None
    dry_run: bool = False

    @property
    def imported(self) -> bool:
        """Some run of the file was imported (on a dry run: would be)."""
        return any(leg.imported for leg in self.legs)

    @property
    def runs(self) -> tuple[LegResult, ...]:
        return tuple(leg for leg in self.legs if leg.is_run)

    @property
    def skipped(self) -> tuple[LegResult, ...]:
        return tuple(leg for leg in self.legs if not leg.is_run)

    @property
    def messages(self) -> int:
        return sum(leg.messages for leg in self.legs)

    @property
    def samples(self) -> int:
        return sum(leg.samples for leg in self.legs if leg.imported)

    @property
    def sport(self) -> str | None:
        return self.legs[0].sport if len(self.legs) == 1 else (
            "multisport" if self.legs else None)

    @property
    def distance_m(self) -> float | None:
        known = [leg.distance_m for leg in self.legs if leg.imported and leg.distance_m]
        return sum(known) if known else None

    @property
    def session_id(self) -> str | None:
        return next((leg.session_id for leg in self.legs if leg.imported), None)

    @property
    def result(self) -> str:
        if self.imported:
            verb = "would import" if self.dry_run else "imported"
            return f"{verb} ({self.messages} messages)"
        return f"refused: {self.why_refused}"

    @property
    def why_refused(self) -> str | None:
        if self.imported:
            return None
        if self.reason is not None:
            return self.reason
        return next((leg.refused_reason for leg in self.runs if leg.refused_reason), None)


class ImportProgress(Protocol):
    """What :func:`import_fit` reports while it works (a progress bar, a log, a test)."""

    def file_started(self, path: Path, index: int, total: int) -> None: ...

    def records_read(self, path: Path, records: int) -> None: ...

    def messages_published(self, path: Path, done: int, total: int) -> None: ...

    def file_finished(self, result: FileResult) -> None: ...


def session_messages(run: FitRun, runner: str) -> list[Message]:
    """The MQTT messages that sync ``run`` as ``runner``: start, batches, end. Pure."""
    if not is_valid_id(runner):
        raise ValueError(f"runner id '{runner}' is not lowercase letters, digits, '-' or '_'")
    base_topic = topics.device_topic(runner, run.device, "").rstrip("/")
    base_seq = run.batches[0].seq
    # the device's totals go with both events, so the stream has them from the first batch
    totals = {"timer_s": run.total_timer_s, "steps": run.device_steps}
    start = SessionEvent(seq=base_seq, session_id=run.session_id, phase="start",
                         t=run.start_t, sport=run.sport, shoe=run.shoe, **totals)
    end = SessionEvent(seq=base_seq + 1, session_id=run.session_id, phase="end", t=run.end_t,
                       sport=run.sport, shoe=run.shoe, **totals)
    messages: list[Message] = [(f"{base_topic}/session", _json(start))]
    messages += [(f"{base_topic}/samples", _json(batch)) for batch in run.batches]
    messages.append((f"{base_topic}/session", _json(end)))
    return messages


def _json(model: SampleBatch | SessionEvent) -> bytes:
    return model.model_dump_json(exclude_none=True).encode()


def expand_paths(paths: Iterable[Path]) -> list[tuple[Path, str | None]]:
    """Files to import, in order; a folder gives its ``*.fit`` files. Each comes with the
    reason it cannot be imported, if one is known before reading it."""
    found: list[tuple[Path, str | None]] = []
    for path in paths:
        if path.is_dir():
            files = iter_fit_files(path)
            if not files:
                found.append((path, "folder has no .fit files"))
            found += [(f, None) for f in files]
        elif path.is_file():
            found.append((path, None))
        else:
            found.append((path, "no such file or folder"))
    return found


def _distance(run: FitRun) -> float | None:
    if run.total_distance_m is not None:
        return run.total_distance_m
    distances = [s.distance_m for b in run.batches for s in b.samples if s.distance_m is not None]
    return max(distances) - min(distances) if distances else None


class RetentionGate:
    """Reads InfluxDB's retention once (at the first run to check) and judges each run.

    ``past_retention``: runs InfluxDB would drop are imported anyway, and an InfluxDB that
    cannot be asked does not stop the import.
    """

    def __init__(self, settings: Settings, past_retention: bool = False,
                 now: float | None = None) -> None:
        self.settings = settings
        self.past_retention = past_retention
        self.now = now
        self._retention: Retention | None = None
        self._unknown: str | None = None

    @property
    def retention(self) -> Retention | None:
        """The retention read (None when it could not be, or no run was checked)."""
        return self._retention

    def refusal(self, run: FitRun) -> str | None:
        if self._retention is None and self._unknown is None:
            try:
                self._retention = read_retention(self.settings)
            except RetentionUnknown as exc:
                self._unknown = str(exc)
        if self._retention is None:
            if self.past_retention:
                return None
            return (f"cannot check InfluxDB's retention: {self._unknown}. Start InfluxDB "
                    "(`stridewatch stack up`) or import with --past-retention to go on "
                    "without the check")
        now = self.now if self.now is not None else time.time()
        reason = self._retention.refusal(run.start_t, now, self.settings)
        return None if self.past_retention else reason

    def dropped_anyway(self, run: FitRun) -> bool:
        """Whether an imported run's points are beyond the retention (``past_retention``)."""
        if self._retention is None:
            return False
        now = self.now if self.now is not None else time.time()
        return self._retention.refusal(run.start_t, now, self.settings) is not None


def import_fit(settings: Settings, paths: Sequence[Path | str], runner: str,
               progress: ImportProgress | None = None, *, password: str | None = None,
               batch_size: int = 300, publisher: RunnerPublisher | None = None,
               dry_run: bool = False, past_retention: bool = False, now: float | None = None
               ) -> list[FileResult]:
    """Import FIT files (or folders of them) for ``runner``; one result per file.

    A refused file publishes nothing and the others go on. A broker problem (unreachable,
    credentials refused, a publish refused) raises :class:`MqttError`: it would refuse the
    other files too. The publisher's connection is opened at the first accepted run.
    ``dry_run``: read and check everything (InfluxDB's retention too), publish nothing.
    ``now``: the time the retention is judged at (default: the clock).
    """
    if not is_valid_id(runner):
        raise ValueError(f"runner id '{runner}' is not lowercase letters, digits, '-' or '_'")
    files = expand_paths(Path(p) for p in paths)
    gate = RetentionGate(settings, past_retention, now)
    own = publisher is None and not dry_run
    pub = publisher if publisher is not None else (
        None if dry_run else RunnerPublisher(settings, client_prefix="import"))
    results: list[FileResult] = []
    try:
        for index, (path, known_reason) in enumerate(files):
            if progress is not None:
                progress.file_started(path, index, len(files))
            result = _import_one(pub, gate, path, known_reason, runner, progress, password,
                                 batch_size)
            results.append(result)
            if progress is not None:
                progress.file_finished(result)
    finally:
        if own and pub is not None:
            pub.close()
    return results


def _read(path: Path, progress: ImportProgress | None, batch_size: int
          ) -> FitActivity | str:
    def on_records(records: int) -> None:
        if progress is not None:
            progress.records_read(path, records)

    try:
        return read_activity(path, batch_size=batch_size, progress=on_records)
    except FitRejected as exc:
        return exc.reason
    except OSError as exc:
        return f"cannot read the file: {exc.strerror}"


def _import_one(pub: RunnerPublisher | None, gate: RetentionGate, path: Path,
                known_reason: str | None, runner: str, progress: ImportProgress | None,
                password: str | None, batch_size: int) -> FileResult:
    dry_run = pub is None
    if known_reason is not None:
        return FileResult(path, reason=known_reason, dry_run=dry_run)
    activity = _read(path, progress, batch_size)
    if isinstance(activity, str):
        return FileResult(path, reason=activity, dry_run=dry_run)
    runs = {run.session_id: run for run in activity.runs}
    legs = [LegResult.of(leg) for leg in activity.legs]
    for i, leg in enumerate(legs):
        if leg.session_id is None:
            continue
        run = runs[leg.session_id]
        too_old = gate.refusal(run)
        if too_old is not None:
            legs[i] = replace(leg, refused_reason=too_old)
            continue
        messages = session_messages(run, runner)
        if pub is not None:
            _publish(pub, path, messages, progress, password)
        legs[i] = replace(leg, imported=True, messages=len(messages),
                          beyond_retention=gate.dropped_anyway(run))
    reason = refusal(activity) if not activity.runs else None
    return FileResult(path, reason=reason, legs=tuple(legs), device=activity.device,
                      dry_run=dry_run)


def _publish(pub: RunnerPublisher, path: Path, messages: list[Message],
             progress: ImportProgress | None, password: str | None) -> None:
    unrouted_before = pub.unrouted
    for done, (topic, payload) in enumerate(messages, start=1):
        pub.publish(topic, payload, password)
        if progress is not None:
            progress.messages_published(path, done, len(messages))
    pub.flush()  # every message acknowledged by the broker before the run counts
    if pub.unrouted > unrouted_before:
        raise MqttError(f"the broker had no subscriber for {pub.unrouted - unrouted_before} "
                        f"messages of {path.name}: is the ingest bridge set up "
                        "(`stridewatch bridge`)? Import the file again once it is.")


# ------------------------------------------------------------------------------ the command
class RichImportProgress:
    """A rich progress bar: files done, and the current file's records and messages."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                 transient=False)
        self._files: TaskID | None = None
        self._current: TaskID | None = None

    def __enter__(self) -> RichImportProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def file_started(self, path: Path, index: int, total: int) -> None:
        if self._files is None:
            self._files = self.progress.add_task("files", total=total)
        if self._current is not None:
            self.progress.remove_task(self._current)
        self._current = self.progress.add_task(f"reading {path.name}", total=None)

    def records_read(self, path: Path, records: int) -> None:
        if self._current is not None:
            self.progress.update(self._current, completed=records,
                                 description=f"reading {path.name} ({records} records)")

    def messages_published(self, path: Path, done: int, total: int) -> None:
        if self._current is not None:
            self.progress.update(self._current, completed=done, total=total,
                                 description=f"publishing {path.name}")

    def file_finished(self, result: FileResult) -> None:
        if self._files is not None:
            self.progress.advance(self._files)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _table(*headers: str) -> Table:
    # one line per row: cells are clipped to fit, never wrapped
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    return table


def summary_table(results: Sequence[FileResult]) -> Table:
    """One row per run (or refused file), one per skipped leg; fits 80 columns.

    Long reasons do not go in the table: :func:`summary_notes` lists them below it.
    """
    table = _table("file", "leg", "date (UTC)", "km", "time", "result")
    for r in results:
        name = _clip(r.path.name, 20)
        if not r.legs:
            table.add_row(name, "-", "-", "-", "-", "refused ¹", style="red")
            continue
        for leg in r.legs:
            label = _clip(f"{leg.index + 1} {leg.sport}" if len(r.legs) > 1 else leg.sport, 14)
            km = f"{leg.distance_m / 1000:.2f}" if leg.distance_m is not None else "-"
            if leg.imported:
                verb = "would import" if r.dry_run else "imported"
                result = f"{verb} {leg.samples} samples" + (
                    " ²" if leg.beyond_retention else "")
                style = None
            elif leg.is_run or len(r.legs) == 1:
                result, style = "refused ¹", "red"
            else:
                result, style = "skipped", "dim"
            table.add_row(name, label, _when(leg.start_t)[:10], km, _minutes(leg.timer_s),
                          result, style=style)
            name = ""
    return table


def summary_notes(results: Sequence[FileResult]) -> list[str]:
    """¹ why each file or run was refused; ² runs imported past InfluxDB's retention."""
    notes: list[str] = []
    told: dict[str, str] = {}  # reason -> where it was first said

    def why(reason: str, where: str) -> str:
        if reason in told:
            return f"as for {told[reason]}"
        told[reason] = where
        return reason

    for r in results:
        if r.reason is not None:
            notes.append(f"¹ {r.path.name}: {why(r.reason, r.path.name)}")
            continue
        for leg in r.legs:
            if leg.refused_reason is not None and (leg.is_run or len(r.legs) == 1):
                where = f"{r.path.name} leg {leg.index + 1}"
                notes.append(f"¹ {where}: {why(leg.refused_reason, where)}")
            if leg.beyond_retention:
                notes.append(f"² {r.path.name} leg {leg.index + 1}: imported past InfluxDB's "
                             "retention; its load counts in the stream, InfluxDB drops its "
                             "points")
    return notes


def dry_run_lines(results: Sequence[FileResult]) -> list[str]:
    """One JSON object per leg (per refused file), one a line: what an import would do."""
    lines: list[str] = []
    for r in results:
        if not r.legs:
            lines.append(json.dumps({"file": str(r.path), "leg": None, "sport": None,
                                     "start": None, "distance_m": None, "timer_s": None,
                                     "records": 0, "cadence_spm": None, "stance_ms": None,
                                     "balance_left_pct": None, "refused_reason": r.reason}))
            continue
        for leg in r.legs:
            lines.append(json.dumps({
                "file": str(r.path), "leg": leg.index + 1, "sport": leg.sport,
                "start": datetime.fromtimestamp(leg.start_t, UTC).isoformat().replace(
                    "+00:00", "Z"),
                "distance_m": leg.distance_m, "timer_s": leg.timer_s, "records": leg.records,
                "cadence_spm": leg.cadence_spm, "stance_ms": leg.stance_ms,
                "balance_left_pct": leg.balance_left_pct,
                "refused_reason": None if leg.imported else leg.refused_reason}))
    return lines


def dry_run_table(results: Sequence[FileResult]) -> Table:
    """The dry run's figures per leg, in 80 columns (reasons follow as notes): start date
    (UTC), distance, timer time, records, mean cadence, stance time, left balance."""
    table = _table("file", "leg", "start", "km", "time", "recs", "spm", "GCT", "L%", "")

    def num(value: float | None, fmt: str) -> str:
        return format(value, fmt) if value is not None else "-"

    for r in results:
        name = _clip(r.path.name, 14)
        if not r.legs:
            table.add_row(name, "-", "-", "-", "-", "-", "-", "-", "-", "refused¹",
                          style="red")
            continue
        for leg in r.legs:
            label = _clip(f"{leg.index + 1} {leg.sport}", 12)
            verdict = ("ok" if leg.imported else "refused¹" if leg.is_run or len(r.legs) == 1
                       else "skip")
            km = num(leg.distance_m / 1000 if leg.distance_m is not None else None, ".2f")
            table.add_row(name, label, _when(leg.start_t)[:10], km, _minutes(leg.timer_s),
                          str(leg.records), num(leg.cadence_spm, ".0f"),
                          num(leg.stance_ms, ".0f"), num(leg.balance_left_pct, ".1f"),
                          verdict, style=None if leg.imported else "dim")
            name = ""
    return table


@click.command("import")
@click.argument("paths", metavar="FILE_OR_DIR...", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option("--runner", required=True, help="The runner the runs belong to.")
@click.option("--password", envvar="STRIDEWATCH_RUNNER_PASSWORD", show_envvar=True,
              help="The runner's MQTT password (default: the local stack's secrets file). "
                   "Prefer the environment variable to the option.")
@click.option("--batch-size", default=300, show_default=True, type=click.IntRange(1, 20_000),
              help="Samples per MQTT message.")
@click.option("--dry-run", is_flag=True,
              help="Show what would be imported, per file and leg, and publish nothing "
                   "(no broker or credentials needed).")
@click.option("--json", "as_json", is_flag=True,
              help="With --dry-run: one JSON object per leg per line.")
@click.option("--past-retention", is_flag=True,
              help="Import runs older than InfluxDB's retention too (their load counts in "
                   "the stream; InfluxDB drops their points), and go on when the retention "
                   "cannot be read.")
def import_command(paths: tuple[Path, ...], runner: str, password: str | None,
                   batch_size: int, dry_run: bool, as_json: bool,
                   past_retention: bool) -> None:
    """Import FIT activity files (a watch's runs) as RUNNER.

    FILE_OR_DIR: .fit files, or folders whose *.fit files are all imported. Each run or
    walk leg of a multisport file is imported as its own session; other legs are skipped
    and listed. Files that are not runs or walks, are corrupt, or whose runs InfluxDB's
    retention would drop are refused with the reason and import nothing; the others go on.
    Importing a file again is harmless: the pipeline counts it once.

    Exit status: 0 when every file was imported; 1 when any file was refused. With
    --dry-run: 0 when something would be imported, 1 when nothing would.
    """
    if not is_valid_id(runner):
        raise click.BadParameter("lowercase letters, digits, '-' and '_' only",
                                 param_hint="--runner")
    if as_json and not dry_run:
        raise click.BadParameter("--json goes with --dry-run", param_hint="--json")
    settings = command_settings()
    if dry_run:
        results = import_fit(settings, list(paths), runner, batch_size=batch_size,
                             dry_run=True, past_retention=past_retention)
        if as_json:
            click.echo("\n".join(dry_run_lines(results)))
        else:
            console = Console(highlight=False)
            console.print(dry_run_table(results))
            for note in summary_notes(results):
                console.print(note)
            would = sum(len([leg for leg in r.legs if leg.imported]) for r in results)
            console.print(f"dry run: {would} runs would be imported as runner {runner}; "
                          "nothing was published")
        sys.exit(0 if any(r.imported for r in results) else 1)

    console = Console(highlight=False)
    collected: list[FileResult] = []

    class Collecting(RichImportProgress):
        def file_finished(self, result: FileResult) -> None:
            collected.append(result)
            super().file_finished(result)

    failure: MqttError | None = None
    with Collecting(console) as progress:
        try:
            import_fit(settings, list(paths), runner, progress, password=password,
                       batch_size=batch_size, past_retention=past_retention)
        except MqttError as exc:
            failure = exc
    console.print(summary_table(collected))
    for note in summary_notes(collected):
        console.print(note)
    imported = sum(r.imported for r in collected)
    refused = len(collected) - imported
    runs = sum(len([leg for leg in r.legs if leg.imported]) for r in collected)
    skipped = sum(len(r.skipped) for r in collected if len(r.legs) > 1)
    console.print(f"{imported} imported, {refused} refused, as runner {runner} ({runs} runs, "
                  f"{skipped} legs skipped)")
    if failure is not None:
        raise click.ClickException(f"import stopped: {failure}")
    if refused:
        sys.exit(1)


if __name__ == "__main__":
    import_command()
