"""Ingest without brokers: the JSON Schema files, the FIT importer's plan, dead letters.

The JSON Schema files in ``ingest/schema`` are generated from the contract's models. After
changing the contract, regenerate them and review the diff::

    STRIDEWATCH_REGEN_SCHEMA=1 .venv/bin/pytest tests/unit/test_ingest_misc.py -k schema
"""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from base.settings import Settings
from deploy.stack import ACL_HEADER
from ingest.bridge import MAX_DEAD_LETTER_RAW, dead_letter_record, to_record
from ingest.contract import RunnerEvent, json_schemas
from ingest.decoders import InboundMessage
from ingest.decoders.fit import MAX_BATCHES, read_fit
from ingest.importer import (
    FileResult,
    LegResult,
    expand_paths,
    import_command,
    import_fit,
    session_messages,
    summary_notes,
    summary_table,
)
from ingest.routing import SUBSCRIPTIONS, decode_message
from tests.conftest import FIT_DIR

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "ingest" / "schema"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
REGEN = os.environ.get("STRIDEWATCH_REGEN_SCHEMA") == "1"
RUN = FIT_DIR / "garmin-fenix-5-run.fit"
FENIX2 = FIT_DIR / "activity-small-fenix2-run.fit"
REFUSED = {
    "garmin-fenix-5-bike.fit": "sport is cycling",
    "activity-settings-corruptheader.fit": "corrupt or missing header",
    "activity-unexpected-eof.fit": "truncated",
}


# ------------------------------------------------------------------------------ schema
def render_schemas() -> dict[str, str]:
    """File name -> content: one file per contract schema, keys sorted, stable."""
    return {f"{name}.json": json.dumps({"$schema": SCHEMA_DIALECT, **schema}, indent=2,
                                       sort_keys=True, ensure_ascii=False) + "\n"
            for name, schema in sorted(json_schemas().items())}


def test_schema_files_are_the_generated_ones() -> None:
    wanted = render_schemas()
    if REGEN:
        SCHEMA_DIR.mkdir(exist_ok=True)
        for stale in set(p.name for p in SCHEMA_DIR.glob("*.json")) - set(wanted):
            (SCHEMA_DIR / stale).unlink()
        for name, text in wanted.items():
            (SCHEMA_DIR / name).write_text(text)
    on_disk = {p.name: p.read_text() for p in sorted(SCHEMA_DIR.glob("*.json"))}
    assert sorted(on_disk) == sorted(wanted), (
        "ingest/schema does not match ingest.contract.json_schemas(); regenerate (see the "
        "module docstring)")
    for name, text in wanted.items():
        assert on_disk[name] == text, f"ingest/schema/{name} is stale; regenerate it"


def test_schema_rendering_is_deterministic_and_describes_the_contract() -> None:
    assert render_schemas() == render_schemas()
    schemas = {name: json.loads(text) for name, text in render_schemas().items()}
    assert set(schemas) == {"pain-report.v1.json", "injury-report.v1.json",
                            "runner-event.v1.json", "sample-batch.v1.json",
                            "session-event.v1.json"}
    batch = schemas["sample-batch.v1.json"]
    assert batch["$schema"] == SCHEMA_DIALECT
    assert set(batch["required"]) == {"seq", "samples"}
    assert batch["additionalProperties"] is False
    sample = batch["$defs"]["Sample"]
    assert "cadence_spm" in sample["properties"] and sample["required"] == ["t"]
    pain = schemas["pain-report.v1.json"]["properties"]
    assert pain["score"]["minimum"] == 0 and pain["score"]["maximum"] == 10
    injury = schemas["injury-report.v1.json"]
    assert set(injury["required"]) == {"t", "phase"}
    assert injury["$defs"]["InjuryPhase"]["enum"] == ["injured", "recovery_check"]
    kinds = schemas["runner-event.v1.json"]["properties"]["kind"]["enum"]
    assert kinds == ["samples", "session", "pain", "injury"]


# ------------------------------------------------------------------------------ importer
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _offline_settings(tmp_path: Path) -> Settings:
    """Settings whose MQTT broker does not exist: any connection attempt fails loudly."""
    return Settings(data_dir=tmp_path, mqtt_port=_closed_port())


def test_session_messages_sync_a_run_like_a_watch() -> None:
    run = read_fit(FENIX2)
    messages = session_messages(run, "ana")
    topics = [t for t, _ in messages]
    base = f"runners/ana/{run.device}"
    assert topics == [f"{base}/session", *[f"{base}/samples"] * len(run.batches),
                      f"{base}/session"]
    events = [decode_message(InboundMessage(t, p, 1.0)) for t, p in messages]
    assert all(e.runner == "ana" and e.device == run.device for e in events)
    start, *batches, end = events
    assert start.session is not None and end.session is not None
    assert (start.session.phase, end.session.phase) == ("start", "end")
    assert start.session.session_id == end.session.session_id == run.session_id
    assert (start.session.t, end.session.t) == (run.start_t, run.end_t)
    # the sequences come from the file: start time x 10,000 (+ batch index)
    base_seq = int(run.start_t) * MAX_BATCHES
    assert (start.seq, end.seq) == (base_seq, base_seq + 1)
    assert [e.seq for e in batches] == [base_seq + i for i in range(len(run.batches))]
    assert [e.samples for e in batches] == run.batches
    assert sum(len(b.samples) for b in run.batches) == run.samples_count == 2809


def test_the_same_file_twice_gives_the_same_messages() -> None:
    assert session_messages(read_fit(RUN), "ana") == session_messages(read_fit(RUN), "ana")
    # another runner importing it gets the same sequences under their own topics
    mine = session_messages(read_fit(RUN), "ana")
    theirs = session_messages(read_fit(RUN), "ben")
    assert [p for _, p in mine] == [p for _, p in theirs]
    assert all(t.startswith("runners/ben/") for t, _ in theirs)


def test_session_messages_refuse_a_bad_runner_id() -> None:
    with pytest.raises(ValueError, match="runner id"):
        import_fit(Settings(), [], "Ana")


def test_expand_paths(tmp_path: Path) -> None:
    found = expand_paths([FIT_DIR, tmp_path, tmp_path / "nope.fit", RUN])
    names = [(p.name, reason) for p, reason in found]
    fit_files = sorted(p.name for p in FIT_DIR.iterdir() if p.suffix.lower() == ".fit")
    assert names == [*[(n, None) for n in fit_files],
                     (tmp_path.name, "folder has no .fit files"),
                     ("nope.fit", "no such file or folder"), (RUN.name, None)]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def file_started(self, path: Path, index: int, total: int) -> None:
        self.events.append(("start", path.name))

    def records_read(self, path: Path, records: int) -> None:
        self.events.append(("read", path.name))

    def messages_published(self, path: Path, done: int, total: int) -> None:
        self.events.append(("published", path.name))

    def file_finished(self, result: FileResult) -> None:
        self.events.append(("finished", result.path.name))


def test_refused_files_publish_nothing_and_say_why(tmp_path: Path) -> None:
    # no broker at all: a refused file must not even try to connect
    files = [FIT_DIR / name for name in REFUSED] + [tmp_path / "missing.fit"]
    recorder = Recorder()
    results = import_fit(_offline_settings(tmp_path), files, "ana", recorder)
    assert [r.imported for r in results] == [False] * 4
    for result in results[:3]:
        assert result.reason is not None and REFUSED[result.path.name] in result.reason
        assert result.messages == 0 and result.result.startswith("refused: ")
    assert results[3].reason == "no such file or folder"
    assert [e for e in recorder.events if e[0] != "read"] == [
        (kind, f.name) for f in files for kind in ("start", "finished")]


def test_import_command_exits_non_zero_when_a_file_is_refused(tmp_path: Path) -> None:
    env = {"STRIDEWATCH_DATA_DIR": str(tmp_path),
           "STRIDEWATCH_MQTT_PORT": str(_closed_port()), "COLUMNS": "200"}
    result = CliRunner().invoke(import_command, [str(FIT_DIR / "garmin-fenix-5-bike.fit"),
                                                 str(FIT_DIR / "activity-unexpected-eof.fit"),
                                                 "--runner", "ana"], env=env)
    assert result.exit_code == 1, result.output
    assert "garmin-fenix-5-bike.fit" in result.output
    assert "¹ garmin-fenix-5-bike.fit: sport is cycling" in result.output
    assert "0 imported, 2 refused" in result.output


def test_import_command_checks_its_arguments(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(import_command, ["x.fit"]).exit_code == 2  # --runner missing
    assert runner.invoke(import_command, ["--runner", "ana"]).exit_code == 2  # no file
    bad = runner.invoke(import_command, ["x.fit", "--runner", "Ana B"])
    assert bad.exit_code == 2 and "lowercase" in bad.output


def test_import_command_reports_an_unreachable_broker(tmp_path: Path) -> None:
    env = {"STRIDEWATCH_DATA_DIR": str(tmp_path), "STRIDEWATCH_MQTT_PORT": str(_closed_port()),
           "STRIDEWATCH_RUNNER_PASSWORD": "not-used-for-real", "COLUMNS": "200",
           "STRIDEWATCH_INFLUX_URL": f"http://127.0.0.1:{_closed_port()}"}
    result = CliRunner().invoke(import_command, [str(RUN), "--runner", "ana",
                                                 "--past-retention"], env=env)
    assert result.exit_code == 1
    assert "import stopped: cannot reach MQTT broker" in result.output
    assert "not-used-for-real" not in result.output


def test_summary_table_lists_every_file() -> None:
    run = LegResult(0, "running", 1497191649.0, 56.887, 157.56, 21, session_id="s",
                    samples=21, imported=True, messages=3)
    table = summary_table([
        FileResult(Path("a.fit"), legs=(run,)),
        FileResult(Path("b.fit"), reason="sport is cycling")])
    assert [c.header for c in table.columns] == ["file", "leg", "date (UTC)", "km", "time",
                                                 "result"]
    cells = [list(c.cells) for c in table.columns]
    assert cells[0] == ["a.fit", "b.fit"]
    assert cells[2] == ["2017-06-11", "-"]
    assert cells[3] == ["0.16", "-"]
    assert cells[4] == ["0:56", "-"]
    assert cells[5] == ["imported 21 samples", "refused ¹"]
    assert summary_notes([FileResult(Path("b.fit"), reason="sport is cycling")]) == [
        "¹ b.fit: sport is cycling"]


# ------------------------------------------------------------------------------ broker ACL
def test_the_acl_lets_runners_publish_and_the_bridge_read_every_ingested_topic() -> None:
    lines = ACL_HEADER.splitlines()
    bridge = lines[lines.index(f"user {Settings().bridge_username}") + 1:]
    bridge = bridge[:bridge.index("")]
    assert sorted(bridge) == sorted(f"topic read {f}" for f in SUBSCRIPTIONS)
    for topic_filter in SUBSCRIPTIONS:
        # each runner only under their own subtree
        own = topic_filter.replace("runners/+/", "runners/%u/", 1)
        assert f"pattern write {own}" in lines
    assert "pattern write runners/%u/injury" in lines


# ------------------------------------------------------------------------------ dead letters
def test_dead_letter_keeps_reason_topic_device_time_and_raw_bytes() -> None:
    settings = Settings(topic_prefix="t")
    msg = InboundMessage("runners/ana/pod-1/rsc", b"\x00\xffnot json", 1_718_000_000.5)
    record, reason = to_record(settings, msg)
    assert reason == "payload is not UTF-8 text"
    assert record.topic == "t.deadletters" and record.key == b"ana"
    letter = json.loads(record.value)
    assert letter == {"reason": reason, "topic": "runners/ana/pod-1/rsc", "runner": "ana",
                      "device": "pod-1", "at": 1_718_000_000.5, "stage": "ingest",
                      "raw_b64": base64.b64encode(b"\x00\xffnot json").decode()}


def test_dead_letter_from_a_topic_outside_the_contract() -> None:
    record = dead_letter_record(Settings(), InboundMessage("runners/Ana/x", b"", 2e9), "why")
    letter = json.loads(record.value)
    assert record.key is None and letter["runner"] is None and letter["device"] is None
    assert letter["raw_b64"] == "" and letter["reason"] == "why"


def test_a_bad_injury_report_is_a_dead_letter_with_its_reason() -> None:
    payload = json.dumps({"t": 1_718_000_000.0, "phase": "injured", "rolled": "in"}).encode()
    record, reason = to_record(Settings(topic_prefix="t"),
                               InboundMessage("runners/ana/injury", payload, 1_718_000_001.0))
    assert reason is not None and reason.startswith("invalid InjuryReport: ")
    assert "say whether you could take four steps" in reason
    letter = json.loads(record.value)
    assert record.topic == "t.deadletters" and record.key == b"ana"
    assert (letter["topic"], letter["runner"], letter["device"]) == \
        ("runners/ana/injury", "ana", None)
    assert base64.b64decode(letter["raw_b64"]) == payload


def test_dead_letter_of_a_huge_payload_keeps_its_head() -> None:
    payload = b"x" * (MAX_DEAD_LETTER_RAW + 10)
    record = dead_letter_record(Settings(), InboundMessage("runners/ana/w/samples", payload,
                                                           2e9), "too big")
    letter = json.loads(record.value)
    assert base64.b64decode(letter["raw_b64"]) == payload[:MAX_DEAD_LETTER_RAW]
    assert letter["raw_truncated_from"] == len(payload)


def test_good_message_becomes_an_event_keyed_by_runner() -> None:
    body = {"seq": 7, "t": 1_718_000_000.0, "score": 6, "where": "achilles", "when": "after"}
    record, reason = to_record(Settings(topic_prefix="t"),
                               InboundMessage("runners/ana/pain", json.dumps(body).encode(),
                                              1_718_000_001.0))
    assert reason is None and record.topic == "t.events" and record.key == b"ana"
    event = RunnerEvent.from_bytes(record.value)
    assert event.kind == "pain" and event.seq == 7 and event.received_at == 1_718_000_001.0


def test_an_injury_report_becomes_an_event_of_the_app() -> None:
    body = {"seq": 2, "t": 1_718_000_000.0, "phase": "injured", "side": "left",
            "rolled": "in", "could_take_four_steps": True}
    record, reason = to_record(Settings(topic_prefix="t"),
                               InboundMessage("runners/ana/injury", json.dumps(body).encode(),
                                              1_718_000_001.0))
    assert reason is None and record.topic == "t.events" and record.key == b"ana"
    event = RunnerEvent.from_bytes(record.value)
    assert (event.kind, event.device, event.seq, event.dedup_stream) == \
        ("injury", "app", 2, "app/injury")
    assert event.injury is not None and event.body is event.injury
    # a device of that name is not the app: four-part topics stay device topics
    _, reason = to_record(Settings(), InboundMessage("runners/ana/app/injury",
                                                     json.dumps(body).encode(), 1.0))
    assert reason == "unknown message type 'injury' in topic runners/ana/app/injury"


def test_the_decoders_serve_exactly_the_topic_layout_s_leaves() -> None:
    from ingest import topics
    from ingest.routing import APP_DECODERS, DEVICE_DECODERS, SUBSCRIPTIONS, parse_topic

    assert set(DEVICE_DECODERS) == set(topics.DEVICE_LEAVES)
    assert set(APP_DECODERS) == set(topics.APP_LEAVES)
    for leaf in topics.DEVICE_LEAVES:
        assert parse_topic(topics.device_topic("ana", "pod-1", leaf)) == ("ana", "pod-1", leaf)
    assert topics.device_topic("+", "+", "samples") in SUBSCRIPTIONS
    assert topics.alerts_topic("ana") == "runners/ana/alerts"
