"""Metric points (line protocol, JSON), the data contract and the settings object."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from base.settings import Settings
from ingest.contract import (
    Foot,
    InjuryPhase,
    InjuryReport,
    PainReport,
    PainSite,
    RunnerEvent,
    Sample,
    SampleBatch,
    SessionEvent,
    Side,
    is_valid_id,
)
from ingest.decoders.native import decode_injury
from ingest.records import decode_record
from stream.metrics import MetricPoint
from stream.outputs.influx import to_line_protocol

T = 1_700_000_000.0
GOLDEN = Path(__file__).resolve().parent / "testdata" / "native"

# --------------------------------------------------------------------------- line protocol


def test_line_protocol_escapes_tags_and_keys() -> None:
    point = MetricPoint.make("run window", {"team": "road runners", "runner": "a,b",
                                            "device": "k=v"}, {"hr bpm": 150}, 1.5)
    # tags sorted by key; space, comma and equals escaped with a backslash; ms timestamp
    assert to_line_protocol(point) == (
        r"run\ window,device=k\=v,runner=a\,b,team=road\ runners hr\ bpm=150i 1500")


def test_line_protocol_field_types() -> None:
    point = MetricPoint.make("session", {"runner": "ann"}, {
        "steps": 5200, "distance_km": 10.25, "ended": True, "paused": False,
        "shoe": 'Pegasus "40", blue', "where": "left ankle", "path": "c:\\x"}, T)
    # fields sorted by key; ints get an "i"; bools are true/false; strings are quoted with
    # double quotes and backslashes escaped (a comma or space inside quotes needs nothing)
    assert to_line_protocol(point) == (
        'session,runner=ann distance_km=10.25,ended=true,path="c:\\\\x",paused=false,'
        'shoe="Pegasus \\"40\\", blue",steps=5200i,where="left ankle" '
        f"{int(T * 1000)}")


def test_line_protocol_drops_none_fields_and_empty_tags() -> None:
    point = MetricPoint.make("pain", {"runner": "ann", "when": ""},
                             {"score": 3, "note": None}, T)
    assert to_line_protocol(point) == f"pain,runner=ann score=3i {int(T * 1000)}"


def test_time_is_rounded_to_milliseconds() -> None:
    assert MetricPoint.make("m", {}, {"v": 1}, 1.0004).time_ms == 1000
    assert MetricPoint.make("m", {}, {"v": 1}, 1.0006).time_ms == 1001


def test_metric_point_json_round_trip() -> None:
    point = MetricPoint.make("daily_load", {"team": "t", "runner": "ann"}, {
        "load": 5.5, "runs": 2, "ended": False, "load_unit": "km", "acwr": None}, T)
    raw = point.to_json()
    assert json.loads(raw) == {"m": "daily_load", "tags": {"runner": "ann", "team": "t"},
                               "fields": {"ended": False, "load": 5.5, "load_unit": "km",
                                          "runs": 2},
                               "time_ms": int(T * 1000)}
    back = MetricPoint.from_json(raw)
    assert back == point
    # types survive: the int stays an int, the bool a bool (so line protocol is the same)
    assert to_line_protocol(back) == to_line_protocol(point)


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("bad", [
    {"t": T * 1000},  # milliseconds sent as seconds
    {"t": 0.0},  # zeroed clock
    {"t": float("nan")},
    {"t": T, "cadence_spm": 301},
    {"t": T, "cadence_spm": -1},
    {"t": T, "gct_ms": 49},
    {"t": T, "gct_ms": 2001},
    {"t": T, "gct_balance_pct": 100.5},
    {"t": T, "heart_rate_bpm": 19},
    {"t": T, "speed_mps": float("inf")},
    {"t": T, "pronation_deg": -46},
    {"t": T, "foot": "X"},
    {"t": T, "cadance_spm": 170},  # misspelt: unknown keys are refused
])
def test_sample_range_checks(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Sample.model_validate(bad)


def test_sample_accepts_the_range_edges() -> None:
    sample = Sample(t=T, foot=Foot.LEFT, cadence_spm=300, gct_ms=50, gct_balance_pct=0,
                    heart_rate_bpm=250, pronation_deg=-45, speed_mps=0)
    assert sample.foot is Foot.LEFT and sample.cadence_spm == 300
    assert Sample.model_validate({"t": T, "foot": "R"}).foot is Foot.RIGHT


def test_sample_batch_time_order() -> None:
    ok = SampleBatch(seq=1, samples=[Sample(t=T), Sample(t=T), Sample(t=T + 1)])
    assert len(ok.samples) == 3  # equal times are in order
    with pytest.raises(ValidationError, match="time order"):
        SampleBatch(seq=1, samples=[Sample(t=T + 1), Sample(t=T)])
    with pytest.raises(ValidationError):
        SampleBatch(seq=1, samples=[])
    with pytest.raises(ValidationError):
        SampleBatch(seq=-1, samples=[Sample(t=T)])


def _batch() -> SampleBatch:
    return SampleBatch(seq=3, session_id="run-1",
                       samples=[Sample(t=T, foot=Foot.LEFT, gct_ms=250.0, cadence_spm=170.0),
                                Sample(t=T + 0.4, foot=Foot.RIGHT, gct_ms=246.0)])


def _pain() -> PainReport:
    return PainReport.model_validate({"t": T, "score": 6, "where": "ankle", "when": "after"})


def _session() -> SessionEvent:
    return SessionEvent(seq=1, session_id="run-1", phase="start", t=T, shoe="pegasus")


def _injury() -> InjuryReport:
    return InjuryReport.model_validate({"t": T, "phase": "injured", "rolled": "in",
                                        "could_take_four_steps": True})


@pytest.mark.parametrize(("kind", "bodies"), [
    ("samples", {}),
    ("samples", {"pain": "pain"}),
    ("samples", {"samples": "samples", "pain": "pain"}),
    ("pain", {"samples": "samples"}),
    ("session", {"session": "session", "samples": "samples"}),
    ("injury", {}),
    ("injury", {"pain": "pain"}),
    ("pain", {"pain": "pain", "injury": "injury"}),
])
def test_runner_event_carries_exactly_its_one_body(kind: str, bodies: dict[str, str]) -> None:
    made = {"samples": _batch(), "pain": _pain(), "session": _session(), "injury": _injury()}
    with pytest.raises(ValidationError, match="exactly one"):
        RunnerEvent.model_validate({"kind": kind, "runner": "ann", "device": "watch",
                                    "received_at": T, **{k: made[v] for k, v in bodies.items()}})


@pytest.mark.parametrize("body", [_batch(), _pain(), _session(), _injury()],
                         ids=["samples", "pain", "session", "injury"])
def test_runner_event_bytes_round_trip(
        body: SampleBatch | PainReport | SessionEvent | InjuryReport) -> None:
    event = RunnerEvent.wrap("ann", "watch", body, received_at=T + 2)
    assert event.body == body
    raw = event.to_bytes()
    assert b"null" not in raw  # None fields are left out on the wire
    back = RunnerEvent.from_bytes(raw)
    assert back == event and back.seq == event.seq


def test_runner_event_sequence_and_dedup_stream() -> None:
    event = RunnerEvent.wrap("ann", "watch", _batch(), received_at=T)
    assert (event.kind, event.seq, event.dedup_stream) == ("samples", 3, "watch/samples")
    # a pain report without seq is identified by its time in milliseconds
    pain = RunnerEvent.wrap("ann", "app", _pain(), received_at=T)
    assert pain.seq == int(T * 1000)
    # so is an injury report, in a stream of its own
    injury = RunnerEvent.wrap("ann", "app", _injury(), received_at=T)
    assert (injury.kind, injury.seq, injury.dedup_stream) == ("injury", int(T * 1000),
                                                              "app/injury")
    with_seq = InjuryReport.model_validate({**_injury().model_dump(), "seq": 9})
    assert RunnerEvent.wrap("ann", "app", with_seq, received_at=T).seq == 9


@pytest.mark.parametrize(("case", "red_flags", "criteria_met"), [
    ("injury_sprain_no_red_flags", [], False),
    ("injury_sprain_red_flags", ["could not take four steps", "tender on the bone"], False),
    ("injury_recovery_check_met", [], True),
    ("injury_recovery_check_not_met", [], False),
])
def test_injury_red_flags_and_entry_criteria(case: str, red_flags: list[str],
                                             criteria_met: bool) -> None:
    report = decode_injury((GOLDEN / case / "input").read_bytes())
    assert report.red_flags == red_flags
    assert report.entry_criteria_met is criteria_met


@pytest.mark.parametrize(("doc", "problem"), [
    ({"phase": "injured"}, "say whether you could take four steps after the injury"),
    ({"phase": "injured", "could_take_four_steps": None}, "could take four steps"),
    ({"phase": "recovery_check", "weight_bearing_pain_free": True, "walks_without_limp": True,
      "range_of_motion_near_full": False}, "missing: hop_pain_free"),
    ({"phase": "recovery_check", "weight_bearing_pain_free": True, "walks_without_limp": True,
      "range_of_motion_near_full": True, "hop_pain_free": True, "rolled": "in",
      "heard_pop": True, "bruising": True}, "must not carry rolled, heard_pop, bruising"),
    ({"phase": "recovery_check", "weight_bearing_pain_free": True, "walks_without_limp": True,
      "range_of_motion_near_full": True, "hop_pain_free": True, "swelling": "none"},
     "must not carry swelling"),
    ({"phase": "injured", "could_take_four_steps": "yes"}, "valid boolean"),
    ({"phase": "injured", "could_take_four_steps": True, "rolled": "sideways"},
     "'in', 'out' or 'unsure'"),
    ({"phase": "injured", "could_take_four_steps": True, "swelling": "huge"}, "'severe'"),
    ({"phase": "injured", "could_take_four_steps": True, "injury": "knee"}, "'ankle_sprain'"),
    ({"phase": "injured", "could_take_four_steps": True, "grade": 0}, "1, 2 or 3"),
    ({"phase": "injured", "could_take_four_steps": True, "grade": "2"}, "1, 2 or 3"),
    # the Literal on its own would take these as 1 and 2
    ({"phase": "injured", "could_take_four_steps": True, "grade": True}, "1, 2 or 3"),
    ({"phase": "injured", "could_take_four_steps": True, "grade": 2.0}, "1, 2 or 3"),
])
def test_injury_reports_fit_their_phase(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        InjuryReport.model_validate_json(json.dumps({"t": T, **doc}).encode(), strict=True)


def test_an_injured_report_may_say_nothing_but_the_four_steps() -> None:
    report = InjuryReport.model_validate_json(
        json.dumps({"t": T, "phase": "injured", "could_take_four_steps": True}).encode(),
        strict=True)
    assert report.phase is InjuryPhase.INJURED and report.injury == "ankle_sprain"
    assert report.red_flags == [] and not report.entry_criteria_met


# a pain record as the bridge wrote it before ``where`` became a vocabulary
OLD_PAIN_RECORD = (b'{"kind":"pain","runner":"ann","device":"app","received_at":1700000002.0,'
                   b'"pain":{"v":1,"seq":3,"t":1700000000.0,"score":6,'
                   b'"where":"left ankle, outside","when":"after","pinpoint_on_bone":false,'
                   b'"worse_as_run_goes_on":false}}')


def test_an_old_free_text_where_still_loads_as_other() -> None:
    for event in (RunnerEvent.from_bytes(OLD_PAIN_RECORD), *decode_record(OLD_PAIN_RECORD),
                  *decode_record(b'{"v":1,"events":[' + OLD_PAIN_RECORD + b']}')):
        assert isinstance(event, RunnerEvent) and event.pain is not None
        assert event.pain.where is PainSite.OTHER
        assert event.pain.where_text == "left ankle, outside"
        assert (event.pain.limping, event.pain.had_to_stop, event.pain.hop_hurts) == \
            (False, False, False)
        # and it goes back on the wire in today's form, which loads to the same report
        assert RunnerEvent.from_bytes(event.to_bytes()) == event


@pytest.mark.parametrize(("payload", "where", "where_text"), [
    ({"where": "achilles"}, PainSite.ACHILLES, None),
    ({"where": "achilles", "where_text": "2 cm above the heel"}, PainSite.ACHILLES,
     "2 cm above the heel"),
    ({"where": "Achilles"}, PainSite.OTHER, "Achilles"),  # the vocabulary is exact
    ({"where": "right shin"}, PainSite.OTHER, "right shin"),
    ({"where": "right shin", "where_text": "front of the shin"}, PainSite.OTHER,
     "front of the shin"),
])
def test_pain_where_vocabulary_on_the_strict_json_path(payload: dict[str, str],
                                                       where: PainSite,
                                                       where_text: str | None) -> None:
    raw = json.dumps({"t": T, "score": 2, "when": "morning", **payload}).encode()
    report = PainReport.model_validate_json(raw, strict=True)
    assert (report.where, report.where_text) == (where, where_text)


def test_pain_report_new_fields() -> None:
    raw = json.dumps({"t": T, "score": 7, "where": "bone_spot", "when": "during",
                      "side": "left", "limping": True, "had_to_stop": True,
                      "hop_hurts": True}).encode()
    report = PainReport.model_validate_json(raw, strict=True)
    assert report.side is Side.LEFT and report.limping and report.had_to_stop
    assert report.hop_hurts
    for bad in ({"where": ""}, {"where": 3}, {"where": "x" * 65},
                {"where": "x" * 65, "where_text": "outer ankle"},
                {"where": "other", "where_text": "x" * 65}, {"side": "middle"},
                {"limping": "yes"}, {"hop_hurts": 1}):
        doc = {"t": T, "score": 7, "where": "achilles", "when": "during", **bad}
        with pytest.raises(ValidationError):
            PainReport.model_validate_json(json.dumps(doc).encode(), strict=True)


@pytest.mark.parametrize(("value", "valid"), [("ann", True), ("it-spike_2", True),
                                              ("Ann", False), ("-ann", False),
                                              ("a b", False), ("", False), ("a" * 65, False)])
def test_ids(value: str, valid: bool) -> None:
    assert is_valid_id(value) is valid


def test_runner_event_rejects_a_bad_runner_id() -> None:
    with pytest.raises(ValidationError):
        RunnerEvent.wrap("Ann Smith", "watch", _batch(), received_at=T)


# --------------------------------------------------------------------------- settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STRIDEWATCH_* variables and no stridewatch.toml in the working directory."""
    for name in list(os.environ):
        if name.upper().startswith("STRIDEWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_exactly_once_on_the_memory_broker_fails_fast() -> None:
    with pytest.raises(ValidationError) as err:
        Settings(kafka_processing_guarantee="exactly_once", kafka_one_record_per_batch=True)
    text = str(err.value)
    assert "exactly_once" in text and "transactions" in text
    assert "KAFKA_ONE_RECORD_PER_BATCH" in text
    # the default (one record per batch, i.e. the local broker) fails the same way
    with pytest.raises(ValidationError, match="transactions"):
        Settings(kafka_processing_guarantee="exactly_once")


@pytest.mark.usefixtures("clean_env")
def test_exactly_once_with_a_real_kafka_is_allowed() -> None:
    settings = Settings(kafka_processing_guarantee="exactly_once",
                        kafka_one_record_per_batch=False)
    assert settings.kafka_processing_guarantee == "exactly_once"


@pytest.mark.usefixtures("clean_env")
def test_exactly_once_from_the_environment_fails_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIDEWATCH_KAFKA_PROCESSING_GUARANTEE", "exactly_once")
    with pytest.raises(ValidationError, match="transactions"):
        Settings()


@pytest.mark.usefixtures("clean_env")
def test_secrets_are_not_in_repr() -> None:
    settings = Settings(bridge_password="br1dge-s3cret", notifier_password="n0tifier-s3cret",
                        influx_password="infl-pw-s3cret", influx_token="t0ken-s3cret")
    text = repr(settings) + str(settings)
    for secret in ("br1dge-s3cret", "n0tifier-s3cret", "infl-pw-s3cret", "t0ken-s3cret"):
        assert secret not in text
    assert isinstance(settings.influx_token, SecretStr)
    assert settings.influx_token.get_secret_value() == "t0ken-s3cret"
    assert settings.bridge_password.get_secret_value() == "br1dge-s3cret"


@pytest.mark.usefixtures("clean_env")
def test_settings_are_frozen_and_refuse_unknown_keys() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.mqtt_port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(mqtt_prot=1883)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(topic_prefix="has space")
