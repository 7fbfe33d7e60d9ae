"""Import FIT activity files for a runner (``stridewatch import FILE_OR_DIR... --runner R``).

Each file is read whole with :func:`ingest.decoders.fit.read_fit` (pure) before anything is
published, so a refused file (a bike ride, a corrupt or truncated file) publishes nothing;
the other files go on. A run is published the way the watch would sync it, as the runner
(their own MQTT credentials, so the broker's ACL applies), QoS 1, acknowledged:

- ``runners/<runner>/<device>/session``  start, sequence ``base``
- ``runners/<runner>/<device>/samples``  the batches, sequences ``base``, ``base + 1``, …
- ``runners/<runner>/<device>/session``  end, sequence ``base + 1``

``base`` is ``int(start time) × 10,000`` and the session id is ``<device>-<start time>``,
both taken from the file's content: importing the same file again publishes the same
sequences, and the stream (which counts each device sequence once) ends up with one
session. ``device`` is ``fit-<maker>-<serial>`` from the file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
from ingest.decoders.fit import FitRejected, FitRun, iter_fit_files, read_fit
from ingest.publisher import RunnerPublisher

Message = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one file."""

    path: Path
    imported: bool
    reason: str | None = None  # why it was refused
    sport: str | None = None
    samples: int = 0
    distance_m: float | None = None
    device: str | None = None
    session_id: str | None = None
    messages: int = 0  # published and acknowledged by the broker

    @property
    def result(self) -> str:
        if self.imported:
            return f"imported ({self.messages} messages)"
        return f"refused: {self.reason}"


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
    start = SessionEvent(seq=base_seq, session_id=run.session_id, phase="start",
                         t=run.start_t, sport=run.sport, shoe=run.shoe)
    end = SessionEvent(seq=base_seq + 1, session_id=run.session_id, phase="end", t=run.end_t,
                       sport=run.sport, shoe=run.shoe)
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


def import_fit(settings: Settings, paths: Sequence[Path | str], runner: str,
               progress: ImportProgress | None = None, *, password: str | None = None,
               batch_size: int = 300, publisher: RunnerPublisher | None = None
               ) -> list[FileResult]:
    """Import FIT files (or folders of them) for ``runner``; one result per file.

    A refused file publishes nothing and the others go on. A broker problem (unreachable,
    credentials refused, a publish refused) raises :class:`MqttError`: it would refuse the
    other files too. The publisher's connection is opened at the first accepted file.
    """
    if not is_valid_id(runner):
        raise ValueError(f"runner id '{runner}' is not lowercase letters, digits, '-' or '_'")
    files = expand_paths(Path(p) for p in paths)
    own = publisher is None
    pub = publisher or RunnerPublisher(settings, client_prefix="import")
    results: list[FileResult] = []
    try:
        for index, (path, known_reason) in enumerate(files):
            if progress is not None:
                progress.file_started(path, index, len(files))
            result = _import_one(pub, path, known_reason, runner, progress, password,
                                 batch_size)
            results.append(result)
            if progress is not None:
                progress.file_finished(result)
    finally:
        if own:
            pub.close()
    return results


def _import_one(pub: RunnerPublisher, path: Path, known_reason: str | None, runner: str,
                progress: ImportProgress | None, password: str | None, batch_size: int
                ) -> FileResult:
    if known_reason is not None:
        return FileResult(path, imported=False, reason=known_reason)

    def on_records(records: int) -> None:
        if progress is not None:
            progress.records_read(path, records)

    try:
        run = read_fit(path, batch_size=batch_size, progress=on_records)
    except FitRejected as exc:
        return FileResult(path, imported=False, reason=exc.reason)
    except OSError as exc:
        return FileResult(path, imported=False, reason=f"cannot read the file: {exc.strerror}")
    messages = session_messages(run, runner)
    unrouted_before = pub.unrouted
    for done, (topic, payload) in enumerate(messages, start=1):
        pub.publish(topic, payload, password)
        if progress is not None:
            progress.messages_published(path, done, len(messages))
    pub.flush()  # every message acknowledged by the broker before the file counts
    if pub.unrouted > unrouted_before:
        raise MqttError(f"the broker had no subscriber for {pub.unrouted - unrouted_before} "
                        f"messages of {path.name}: is the ingest bridge set up "
                        "(`stridewatch bridge`)? Import the file again once it is.")
    return FileResult(path, imported=True, sport=run.sport.value, samples=run.samples_count,
                      distance_m=_distance(run), device=run.device, session_id=run.session_id,
                      messages=len(messages))


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


def summary_table(results: Sequence[FileResult]) -> Table:
    table = Table("file", "sport", "samples", "distance", "result")
    for r in results:
        distance = f"{r.distance_m / 1000:.2f} km" if r.distance_m is not None else "-"
        style = None if r.imported else "red"
        table.add_row(r.path.name, r.sport or "-", str(r.samples) if r.imported else "-",
                      distance if r.imported else "-", r.result, style=style)
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
def import_command(paths: tuple[Path, ...], runner: str, password: str | None,
                   batch_size: int) -> None:
    """Import FIT activity files (a watch's runs) as RUNNER.

    FILE_OR_DIR: .fit files, or folders whose *.fit files are all imported. Files that are
    not runs or walks, or are corrupt, are refused with the reason and import nothing; the
    others go on. Importing a file again is harmless: the pipeline counts it once. Exits
    with 1 if any file was refused.
    """
    if not is_valid_id(runner):
        raise click.BadParameter("lowercase letters, digits, '-' and '_' only",
                                 param_hint="--runner")
    settings = command_settings()
    console = Console(highlight=False)
    results: list[FileResult] = []

    class Collecting(RichImportProgress):
        def file_finished(self, result: FileResult) -> None:
            results.append(result)
            super().file_finished(result)

    failure: MqttError | None = None
    with Collecting(console) as progress:
        try:
            import_fit(settings, list(paths), runner, progress, password=password,
                       batch_size=batch_size)
        except MqttError as exc:
            failure = exc
    console.print(summary_table(results))
    imported = sum(r.imported for r in results)
    refused = len(results) - imported
    console.print(f"{imported} imported, {refused} refused, as runner {runner}")
    if failure is not None:
        raise click.ClickException(f"import stopped: {failure}")
    if refused:
        sys.exit(1)


if __name__ == "__main__":
    import_command()
