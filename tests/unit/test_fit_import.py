"""FIT import against the real files in ../shared/data/fit (MIT, from python-fitparse)."""

from __future__ import annotations

import csv
import io
import json
import socket
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fitdecode
import pytest
from click.testing import CliRunner
from fitdecode.utils import compute_crc
from rich.console import Console

from base.settings import Settings
from ingest.contract import RunnerEvent, Sample, SampleBatch, Sport, is_valid_id
from ingest.decoders import InboundMessage, Rejected
from ingest.decoders.fit import (
    FitRejected,
    FitRun,
    _samples,
    iter_fit_files,
    read_activity,
    read_fit,
)
from ingest.importer import (
    FileResult,
    LegResult,
    dry_run_table,
    import_command,
    import_fit,
    session_messages,
    summary_notes,
    summary_table,
)
from ingest.retention import Retention, duration_s
from ingest.routing import decode_message
from rules.catalogue import load_catalogue
from stream.runner import RunnerState, process_event
from team.roster import Roster
from tests.conftest import FIT_DIR
from tests.multisport_fit import DEVICE, LEGS, RUN_LEGS, multisport_bytes

RUN = FIT_DIR / "garmin-fenix-5-run.fit"
WALK = FIT_DIR / "garmin-fenix-5-walk.fit"
BIKE = FIT_DIR / "garmin-fenix-5-bike.fit"
FENIX2 = FIT_DIR / "activity-small-fenix2-run.fit"
STRYD = FIT_DIR / "developer-types-sample.fit"
CORRUPT_HEADER = FIT_DIR / "activity-settings-corruptheader.fit"
TRUNCATED = FIT_DIR / "activity-unexpected-eof.fit"


def _samples_of(run: FitRun) -> list[Sample]:
    return [s for b in run.batches for s in b.samples]


def _at(run: FitRun, t: float) -> Sample:
    return next(s for s in _samples_of(run) if s.t == t)


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def run() -> FitRun:
    return read_fit(RUN)


def test_fenix5_run_identity(run: FitRun) -> None:
    assert run.sport is Sport.RUNNING
    assert run.device == "fit-garmin-3945849289"
    assert is_valid_id(run.device)
    assert run.start_t == _utc(2017, 6, 11, 14, 34, 9)
    assert run.end_t == _utc(2017, 6, 11, 14, 35, 24)  # session message time
    assert run.session_id == f"fit-garmin-3945849289-{int(run.start_t)}"
    assert run.shoe is None
    assert run.samples_count == 21
    assert run.dropped_values == 0 and run.skipped_records == 0


def test_fenix5_run_first_record_with_running_dynamics(run: FitRun) -> None:
    # hand check against the raw record at 14:34:13 UTC: cadence 78 strides/min +
    # fractional_cadence 0.5, stance_time 308 ms, stance_time_balance 53.21 %, step_length
    # 578 mm, vertical_oscillation 46.7 mm, enhanced_speed 1.166, distance 7.93, hr 56
    s = next(s for s in _samples_of(run) if s.gct_ms is not None)
    assert s.t == _utc(2017, 6, 11, 14, 34, 13)
    assert s.cadence_spm == 157.0  # 2 x (78 + 0.5)
    assert s.gct_ms == 308.0
    assert s.gct_balance_pct == 53.21
    assert s.step_length_m == 0.578
    assert s.vertical_oscillation_cm == pytest.approx(4.67)
    assert s.speed_mps == 1.166
    assert s.distance_m == 7.93
    assert s.heart_rate_bpm == 56
    assert s.foot is None and s.power_w is None


def test_fenix5_cadence_uses_whole_fraction(run: FitRun) -> None:
    # 14:34:16: cadence 89, fractional 0.5 -> 179 steps/min (2*89 + 0.5 would give 178.5)
    assert _at(run, _utc(2017, 6, 11, 14, 34, 16)).cadence_spm == 179.0
    # 14:34:14: cadence 90, fractional 0 -> 180
    assert _at(run, _utc(2017, 6, 11, 14, 34, 14)).cadence_spm == 180.0
    # whole steps only: the file never stores a fraction other than 0 or 1/2 stride
    assert all(s.cadence_spm is not None and s.cadence_spm == int(s.cadence_spm)
               for s in _samples_of(run))


def test_fenix5_run_matches_fitparse_csv(run: FitRun) -> None:
    pdt = timezone(timedelta(hours=-7))
    with (FIT_DIR / "garmin-fenix-5-run-records.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    samples = _samples_of(run)
    assert len(rows) == len(samples)
    for row, s in zip(rows, samples, strict=True):
        when = datetime.strptime(row["timestamp"].replace(" PDT", ""), "%a %b %d %H:%M:%S %Y")
        assert s.t == when.replace(tzinfo=pdt).timestamp()
        assert s.heart_rate_bpm == float(row["heart_rate"])
        assert s.speed_mps == pytest.approx(float(row["speed"]))
        assert s.distance_m == pytest.approx(float(row["distance"]))
        # the CSV has the whole strides/min; ours adds the half stride of an odd step
        assert s.cadence_spm is not None
        assert s.cadence_spm - 2 * int(row["cadence"]) in (0.0, 1.0)


def test_fenix5_balance_present_and_summary_agrees(run: FitRun) -> None:
    balances = [s.gct_balance_pct for s in _samples_of(run) if s.gct_balance_pct is not None]
    assert len(balances) == 19 and all(51 < b < 55 for b in balances)
    assert run.total_distance_m == 157.56
    assert run.total_timer_s == pytest.approx(56.887)
    assert _samples_of(run)[-1].distance_m == run.total_distance_m


def test_batches_carry_session_sport_and_stable_seqs(run: FitRun) -> None:
    again = read_fit(RUN.read_bytes())
    assert [b.model_dump() for b in again.batches] == [b.model_dump() for b in run.batches]
    assert again == run
    for i, b in enumerate(run.batches):
        assert b.seq == int(run.start_t) * 10_000 + i
        assert b.session_id == run.session_id and b.sport is run.sport


def test_fenix2_has_all_2809_records_in_batches() -> None:
    seen: list[int] = []
    fenix2 = read_fit(FENIX2, batch_size=300, progress=seen.append)
    # every one of the file's 2,809 record messages has a timestamp and becomes a sample
    assert fenix2.samples_count == 2809 == len(_samples_of(fenix2))
    assert [len(b.samples) for b in fenix2.batches] == [300] * 9 + [109]
    assert seen == [1000, 2000, 2809]
    assert fenix2.sport is Sport.RUNNING
    assert fenix2.device == "fit-garmin-3882015183"
    assert fenix2.total_distance_m == 9008.22
    seqs = [b.seq for b in fenix2.batches]
    assert seqs == list(range(seqs[0], seqs[0] + 10))
    ts = [s.t for s in _samples_of(fenix2)]
    assert ts == sorted(ts)


def test_stryd_developer_file_gives_power() -> None:
    stryd = read_fit(STRYD)
    assert stryd.device == "fit-stryd-2147483647"
    assert stryd.sport is Sport.RUNNING
    samples = _samples_of(stryd)
    assert samples[0].power_w == 165.0
    with_power = [s for s in samples if s.power_w is not None]
    assert len(with_power) > 0.9 * len(samples)
    # Stryd's developer Distance/Speed must not override the watch's native fields
    assert samples[1].distance_m == 2.0
    # zero stance time / oscillation at the start mean "no reading", not a value
    assert samples[0].gct_ms is None and samples[0].vertical_oscillation_cm is None


def test_walk_imports_as_walking() -> None:
    walk = read_fit(WALK)
    assert walk.sport is Sport.WALKING
    assert all(b.sport is Sport.WALKING for b in walk.batches)
    assert walk.samples_count == 17
    assert walk.session_id != read_fit(RUN).session_id


def test_bike_is_refused() -> None:
    with pytest.raises(FitRejected) as caught:
        read_fit(BIKE)
    assert caught.value.reason == "sport is cycling; StrideWatch imports runs and walks"
    assert isinstance(caught.value, Rejected)


@pytest.mark.parametrize(("path", "words"), [
    (CORRUPT_HEADER, "not a readable FIT file"),
    (TRUNCATED, "truncated"),
])
def test_corrupt_files_are_refused_whole(path: Path, words: str) -> None:
    # both files hold 14 good records before the damage; none of them may come out
    progress: list[int] = []
    result: FitRun | None = None
    with pytest.raises(FitRejected) as caught:
        result = read_fit(path, progress=progress.append)
    assert result is None and progress == []
    assert words in caught.value.reason


@pytest.mark.parametrize(("data", "words"), [
    (b"", "file is empty"),
    (b"definitely not a FIT file", "not a readable FIT file"),
    (RUN.read_bytes()[:2000], "truncated"),
])
def test_bad_bytes_are_refused(data: bytes, words: str) -> None:
    with pytest.raises(FitRejected, match=words):
        read_fit(data)


def test_flipped_byte_fails_crc() -> None:
    data = bytearray(RUN.read_bytes())
    data[3000] ^= 0xFF
    with pytest.raises(FitRejected, match="corrupt"):
        read_fit(bytes(data))


def _patch(path: Path, edit: Callable[[bytearray, Any], None]) -> bytes:
    """Edit frames of a real file via ``edit(data, frame)``, then fix the file CRC."""
    return _patch_bytes(path.read_bytes(), edit)


def _patch_bytes(original: bytes, edit: Callable[[bytearray, Any], None]) -> bytes:
    data = bytearray(original)
    with fitdecode.FitReader(io.BytesIO(original), keep_raw_chunks=True) as reader:
        for frame in reader:
            edit(data, frame)
    struct.pack_into("<H", data, len(data) - 2, compute_crc(data, end=len(data) - 2))
    return bytes(data)


def test_non_activity_file_is_refused() -> None:
    def to_settings(data: bytearray, frame: Any) -> None:
        if isinstance(frame, fitdecode.FitDataMessage) and frame.name == "file_id":
            pos = frame.chunk.offset + 1  # after the record header
            for fdef in frame.def_mesg.field_defs:
                if fdef.def_num == 0:  # file_id.type
                    data[pos] = 2  # 'settings'
                    return
                pos += fdef.size

    with pytest.raises(FitRejected, match="FIT file type is settings, not an activity"):
        read_fit(_patch(RUN, to_settings))


def test_file_without_records_is_refused() -> None:
    def hide_records(data: bytearray, frame: Any) -> None:
        if isinstance(frame, fitdecode.FitDefinitionMessage) and frame.global_mesg_num == 20:
            fmt = "<H" if frame.endian == "<" else ">H"
            struct.pack_into(fmt, data, frame.chunk.offset + 3, 0xFF20)  # a private message

    with pytest.raises(FitRejected, match="no records"):
        read_fit(_patch(RUN, hide_records))


def test_out_of_range_values_are_dropped_and_counted() -> None:
    t0 = datetime(2024, 6, 10, 8, 0, tzinfo=UTC)
    records: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"timestamp": t0, "heart_rate": 255, "cadence": 85, "speed": 3.0}, {}),
        ({"heart_rate": 150}, {}),  # no timestamp: skipped
        ({"timestamp": t0 + timedelta(seconds=1), "stance_time": 4000.0,
          "enhanced_speed": 20.0, "speed": 3.1}, {"Power": 250}),
        ({"timestamp": t0 - timedelta(seconds=5), "heart_rate": 150}, {}),  # backwards
    ]
    samples, dropped, skipped = _samples(records)
    assert (dropped, skipped) == (3, 2)  # hr 255, stance 4000 ms, enhanced_speed 20 m/s
    assert samples[0].heart_rate_bpm is None and samples[0].cadence_spm == 170.0
    assert samples[1].gct_ms is None and samples[1].speed_mps is None
    assert samples[1].power_w == 250.0  # developer field "Power" when no native power


def test_batch_size_bounds() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        read_fit(RUN, batch_size=0)
    small = read_fit(RUN, batch_size=5)
    assert [len(b.samples) for b in small.batches] == [5, 5, 5, 5, 1]


def test_iter_fit_files(tmp_path: Path) -> None:
    listed = iter_fit_files(FIT_DIR)
    assert [p.name for p in listed] == sorted(p.name for p in FIT_DIR.glob("*.fit"))
    assert len(listed) == 7
    for name in ("b.FIT", "a.fit", "c.Fit", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.fit").mkdir()
    assert [p.name for p in iter_fit_files(tmp_path)] == ["a.fit", "b.FIT", "c.Fit"]


# ------------------------------------------------------------------------------ multisport
def test_multisport_file_is_split_into_its_legs() -> None:
    activity = read_activity(multisport_bytes())
    assert activity.device == DEVICE
    assert [leg.sport for leg in activity.legs] == ["swimming", "transition", "cycling",
                                                   "running", "running"]
    assert [leg.start_t for leg in activity.legs] == [leg.start_t for leg in LEGS]
    # every record lands in exactly one leg, by the sessions' start times
    assert [leg.records for leg in activity.legs] == [leg.records for leg in LEGS]
    assert [leg.timer_s for leg in activity.legs] == [leg.elapsed_s for leg in LEGS]
    assert [leg.distance_m for leg in activity.legs] == [
        pytest.approx(leg.distance_m) for leg in LEGS]
    for leg in activity.skipped:
        assert leg.skip_reason == f"sport is {leg.sport}; StrideWatch imports runs and walks"
        assert leg.cadence_spm is None


def test_each_run_leg_is_a_session_of_its_own() -> None:
    runs = read_activity(multisport_bytes()).runs
    assert len(runs) == len(RUN_LEGS) == 2
    for run, leg in zip(runs, RUN_LEGS, strict=True):
        assert run.sport is Sport.RUNNING
        assert run.session_id == f"{DEVICE}-{int(leg.start_t)}"
        assert run.batches[0].seq == int(leg.start_t) * 10_000
        assert run.samples_count == leg.records
        assert run.samples[0].t == leg.start_t
        assert run.samples[-1].t == leg.start_t + leg.elapsed_s
        assert run.device_steps == 2 * (leg.strides or 0)
        assert run.total_timer_s == leg.elapsed_s
        assert all(s.cadence_spm == 2 * (leg.cadence_rpm or 0) for s in run.samples)
        assert all(s.gct_balance_pct == leg.balance_pct for s in run.samples)
    legs = read_activity(multisport_bytes()).legs[3:]
    assert [(leg.cadence_spm, leg.stance_ms, leg.balance_left_pct) for leg in legs] == [
        (2.0 * (leg.cadence_rpm or 0), leg.stance_ms, leg.balance_pct) for leg in RUN_LEGS]
    # the sequence ranges of the two legs never meet
    first, second = runs
    assert first.batches[-1].seq + 1 < second.batches[0].seq
    assert read_activity(multisport_bytes()) == read_activity(multisport_bytes())


def test_read_fit_wants_a_single_run() -> None:
    with pytest.raises(FitRejected, match="multisport file with 2 runs"):
        read_fit(multisport_bytes())


# ------------------------------------------------------------------------------ device totals
@pytest.mark.parametrize(("path", "steps", "timer_s"), [
    (RUN, 2 * 78, 56.887),  # total_strides 78
    (WALK, 2 * 41, 45.379),
    (FENIX2, None, 2832.0),  # the Fenix 2 writes no stride total
    (STRYD, None, 3424.0),
])
def test_device_totals_come_from_the_session(path: Path, steps: int | None,
                                             timer_s: float) -> None:
    run = read_fit(path)
    assert run.device_steps == steps
    assert run.total_timer_s == pytest.approx(timer_s)


def _stream(run: FitRun, keep_totals: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """The points the stream writes for an imported run (measurement, fields)."""
    profile = Roster().profile("ana", load_catalogue())
    state = RunnerState(runner="ana")
    points: list[tuple[str, dict[str, Any]]] = []
    for topic, payload in session_messages(run, "ana"):
        if not keep_totals and topic.endswith("/session"):
            body = json.loads(payload)
            body.pop("timer_s", None)
            body.pop("steps", None)
            payload = json.dumps(body).encode()
        state, out = process_event(state, decode_message(InboundMessage(topic, payload, 0.0)),
                                   profile)
        points += [(p.measurement, dict(p.fields)) for p in out.points]
    return points


def _last(points: list[tuple[str, dict[str, Any]]], measurement: str) -> dict[str, Any]:
    return next(f for m, f in reversed(points) if m == measurement)


def test_steps_are_the_devices_own_count() -> None:
    # fenix 5 run: 78 strides in the session; mean cadence x elapsed time would say 217
    assert _last(_stream(read_fit(RUN)), "session")["steps"] == 156
    assert _last(_stream(read_fit(RUN), keep_totals=False), "session")["steps"] == 217


def test_session_and_day_agree_on_the_timer_time() -> None:
    # Fenix 2: timer 2,832 s; the session message comes 2,858 s after the start, the last
    # record 2,833 s after it. Session and day both say 47.2 min, the timer time.
    points = _stream(read_fit(FENIX2))
    session, day = _last(points, "session"), _last(points, "daily_load")
    assert session["duration_min"] == day["duration_min"] == 47.2
    assert session["steps"] == 7691  # mean cadence x timer time (no stride total)
    # without the device's figures: start to end of the session, still one figure
    bare = _stream(read_fit(FENIX2), keep_totals=False)
    assert _last(bare, "session")["duration_min"] == _last(bare, "daily_load")[
        "duration_min"] == round(2858 / 60, 3)


def test_a_foot_pods_session_point_has_its_balance() -> None:
    # a per-step foot pod, like tests/unit/testdata/native/samples_foot_pod_per_step:
    # no device balance, left and right contact times instead (left 260 ms, right 240 ms)
    t0 = _utc(2024, 6, 10, 8, 0, 0)
    samples = [Sample(t=t0 + 0.35 * i, foot="L" if i % 2 == 0 else "R",
                      gct_ms=260.0 if i % 2 == 0 else 240.0, cadence_spm=172.0,
                      speed_mps=3.2) for i in range(200)]
    profile = Roster().profile("ana", load_catalogue())
    state = RunnerState(runner="ana")
    windows: list[float] = []
    session: dict[str, Any] = {}
    for i in range(0, 200, 50):
        batch = SampleBatch(seq=i, session_id="pod-1", samples=samples[i:i + 50])
        event = RunnerEvent(kind="samples", runner="ana", device="pod-7", received_at=t0,
                            samples=batch)
        state, out = process_event(state, event, profile)
        found = [dict(p.fields)["gct_balance_pct"] for p in out.points
                 if p.measurement == "run_window"]
        assert all(isinstance(w, float) for w in found), found
        windows += [float(w) for w in found if isinstance(w, float)]
        session = next(dict(p.fields) for p in out.points if p.measurement == "session")
    assert len(windows) == 4
    assert min(windows) <= session["gct_balance_pct"] <= max(windows)
    assert session["gct_balance_pct"] == pytest.approx(52.0, abs=0.5)  # 260 / (260 + 240)


# ------------------------------------------------------------------------------ dry run
DRY_RUN_FIELDS = {"file", "leg", "sport", "start", "distance_m", "timer_s", "records",
                  "cadence_spm", "stance_ms", "balance_left_pct", "refused_reason"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """No broker and no InfluxDB: a dry run needs neither."""
    return {"STRIDEWATCH_DATA_DIR": str(tmp_path),
            "STRIDEWATCH_MQTT_PORT": str(_closed_port()),
            "STRIDEWATCH_INFLUX_URL": f"http://127.0.0.1:{_closed_port()}",
            "COLUMNS": "80"}


def _dry_run(tmp_path: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    multisport = tmp_path / "triathlon.fit"
    multisport.write_bytes(multisport_bytes())
    result = CliRunner().invoke(import_command, [str(multisport), *args, "--runner", "ana",
                                                 "--dry-run", "--json"],
                                env=_offline_env(tmp_path))
    return result.exit_code, [json.loads(line) for line in result.output.splitlines()]


def test_dry_run_json_lists_every_leg_and_refused_file(tmp_path: Path) -> None:
    code, lines = _dry_run(tmp_path, str(BIKE), str(TRUNCATED), "--past-retention")
    assert code == 0
    assert all(set(line) == DRY_RUN_FIELDS for line in lines)
    legs = lines[:5]
    assert [(x["leg"], x["sport"]) for x in legs] == [
        (i + 1, leg.sport.name.lower()) for i, leg in enumerate(LEGS)]
    assert [x["start"] for x in legs] == [
        datetime.fromtimestamp(leg.start_t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for leg in LEGS]
    assert [x["records"] for x in legs] == [leg.records for leg in LEGS]
    assert [x["timer_s"] for x in legs] == [leg.elapsed_s for leg in LEGS]
    for line in legs[:3]:
        assert line["refused_reason"] == (f"sport is {line['sport']}; StrideWatch imports "
                                          "runs and walks")
    for line, leg in zip(legs[3:], RUN_LEGS, strict=True):
        assert line["refused_reason"] is None
        assert line["distance_m"] == pytest.approx(leg.distance_m)
        assert (line["cadence_spm"], line["stance_ms"], line["balance_left_pct"]) == (
            2.0 * (leg.cadence_rpm or 0), leg.stance_ms, leg.balance_pct)
    bike, truncated = lines[5:]
    assert (bike["sport"], bike["refused_reason"]) == (
        "cycling", "sport is cycling; StrideWatch imports runs and walks")
    assert truncated["leg"] is None and "truncated" in truncated["refused_reason"]


def test_dry_run_exit_status_and_unreachable_influxdb(tmp_path: Path) -> None:
    # InfluxDB cannot be asked: the runs are refused, with the way to go on; nothing would
    # be imported, so the exit status is 1
    code, lines = _dry_run(tmp_path)
    assert code == 1
    for line in lines[3:]:
        assert line["refused_reason"].startswith("cannot check InfluxDB's retention")
        assert "--past-retention" in line["refused_reason"]
    only_bike = CliRunner().invoke(import_command, [str(BIKE), "--runner", "ana", "--dry-run",
                                                    "--past-retention"],
                                   env=_offline_env(tmp_path))
    assert only_bike.exit_code == 1
    assert "0 runs would be imported" in only_bike.output


def test_dry_run_table_and_summary_fit_80_columns(tmp_path: Path) -> None:
    multisport = tmp_path / "a-long-named-triathlon-file-2019.fit"
    multisport.write_bytes(multisport_bytes())
    offline = Settings(data_dir=tmp_path, mqtt_port=_closed_port(),
                       influx_url=f"http://127.0.0.1:{_closed_port()}")
    results = import_fit(offline,
                         [multisport, FIT_DIR], "ana", dry_run=True, past_retention=True)
    rows = sum(max(1, len(r.legs)) for r in results)
    for table in (dry_run_table(results), summary_table(results)):
        console = Console(width=80, record=True, file=io.StringIO())
        console.print(table)
        lines = console.export_text().splitlines()
        assert all(len(line) <= 80 for line in lines)
        assert len(lines) == 1 + rows  # a header, then one line per leg: nothing wraps
    text = Console(width=80, record=True, file=io.StringIO())
    text.print(summary_table(results))
    rendered = text.export_text()
    assert rendered.count("skipped") == 3  # swim, transition, bike
    assert "2 transition" in rendered


def test_a_run_imported_past_the_retention_is_marked() -> None:
    leg = LegResult(0, "running", read_fit(RUN).start_t, 56.887, 157.56, 21, session_id="s",
                    samples=21, imported=True, messages=3, beyond_retention=True)
    result = FileResult(RUN, legs=(leg,))
    assert list(summary_table([result]).columns[-1].cells) == ["imported 21 samples ²"]
    assert summary_notes([result]) == [
        f"² {RUN.name} leg 1: imported past InfluxDB's retention; its load counts in the "
        "stream, InfluxDB drops its points"]


# ------------------------------------------------------------------------------ retention
@pytest.mark.parametrize(("text", "seconds"), [
    ("400d", 400 * 86_400), ("9600h0m0s", 400 * 86_400), ("52w", 52 * 604_800),
    ("1h30m", 5400), ("INF", None), ("inf", None), ("0s", None),
])
def test_influx_durations(text: str, seconds: float | None) -> None:
    assert duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "400", "4 days", "d400", "400dx"])
def test_bad_influx_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not an InfluxDB duration"):
        duration_s(text)


def test_a_run_older_than_the_retention_is_refused_with_how_to_change_it() -> None:
    run = read_fit(RUN)
    settings = Settings()
    policy = Retention("stridewatch", "stridewatch", 400 * 86_400, "InfluxDB at h:1")
    # judged at fixed times: 300 and 500 days after the run
    assert policy.refusal(run.start_t, run.start_t + 300 * 86_400, settings) is None
    reason = policy.refusal(run.start_t, run.start_t + 500 * 86_400, settings)
    assert reason is not None
    assert "500 days old" in reason and "keeps 400 days" in reason
    assert "retention policy 'stridewatch'" in reason
    assert "stridewatch influx retention 530d" in reason and "--past-retention" in reason
    # a day's margin: the day's load point is stamped at the run's local midnight
    assert policy.refusal(run.start_t, run.start_t + 399.5 * 86_400, settings) is not None
    forever = Retention("stridewatch", "stridewatch", None, "InfluxDB at h:1")
    assert forever.refusal(run.start_t, run.start_t + 10_000 * 86_400, settings) is None
    v2 = policy.refusal(run.start_t, run.start_t + 500 * 86_400,
                        Settings(influx_api="v2"))
    assert v2 is not None and "influx bucket update" in v2


def test_a_multisport_file_without_runs_is_refused_with_its_sports() -> None:
    def runs_to_cycling(data: bytearray, frame: Any) -> None:
        # the two run sessions (and laps) become rides: sport field, FIT enum 1 -> 2
        if isinstance(frame, fitdecode.FitDataMessage) and frame.name in ("session", "lap"):
            pos = frame.chunk.offset + 1
            for fdef in frame.def_mesg.field_defs:
                if fdef.name == "sport" and data[pos] == 1:
                    data[pos] = 2
                pos += fdef.size

    path_bytes = _patch_bytes(multisport_bytes(), runs_to_cycling)
    activity = read_activity(path_bytes)
    assert activity.runs == () and len(activity.skipped) == 5
    with pytest.raises(FitRejected) as caught:
        read_fit(path_bytes)
    assert caught.value.reason == ("sport is cycling, swimming, transition; StrideWatch "
                                   "imports runs and walks")
