"""FIT import against the real files in ../shared/data/fit (MIT, from python-fitparse)."""

from __future__ import annotations

import csv
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fitdecode
import pytest
from fitdecode.utils import compute_crc

from ingest.contract import Sample, Sport, is_valid_id
from ingest.decoders import Rejected
from ingest.decoders.fit import FitRejected, FitRun, _samples, iter_fit_files, read_fit
from tests.conftest import FIT_DIR

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
    data = bytearray(path.read_bytes())
    with fitdecode.FitReader(path, keep_raw_chunks=True) as reader:
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
