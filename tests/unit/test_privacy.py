"""The pure parts of forget, export and retention per measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from base.forgotten import (
    CONTROL_HEADER,
    FORGET_REQUEST,
    ForgottenList,
    forget_request_runner,
    forget_request_value,
    forgotten_runner,
    forgotten_value,
    is_forget_request,
)
from base.settings import Settings
from stream.metrics import MetricPoint
from stream.outputs.retention import prune_statement, retention_plan
from stream.outputs.sent_log import SentLog
from stream.outputs.sink import without_forgotten
from stridewatch.privacy import ForgetReport, PrivacyError, _write_table, check_runner_id
from stridewatch.processes import settings_env

T0 = 1_780_000_000.0  # a fixed time: the same verdict on any date


def test_forgotten_records_name_their_key_s_runner_only() -> None:
    assert forgotten_runner(b"ana", forgotten_value("ana", T0)) == "ana"
    assert forgotten_runner(b"ana", None) is None  # a tombstone
    assert forgotten_runner(b"bob", forgotten_value("ana", T0)) is None
    assert forgotten_runner(b"ana", b"not json") is None
    assert json.loads(forgotten_value("ana", T0))["forgotten_at"] == T0


def test_forget_requests_are_told_by_their_header() -> None:
    assert is_forget_request({CONTROL_HEADER: FORGET_REQUEST})
    assert is_forget_request([(CONTROL_HEADER, FORGET_REQUEST)])
    assert not is_forget_request({})
    assert not is_forget_request(None)
    assert not is_forget_request({CONTROL_HEADER: b"other"})
    assert forget_request_runner(forget_request_value("ana")) == "ana"
    with pytest.raises(ValueError, match="names no runner"):
        forget_request_runner(b'{"runner": ""}')


def test_the_sink_leaves_out_forgotten_runners_points_and_counts_them() -> None:
    forgotten = ForgottenList(Settings())
    point = [MetricPoint.make("pain", {"runner": r, "team": "t"}, {"score": 1}, T0)
             for r in ("ana", "bob", "ana")]
    assert without_forgotten(point, forgotten) == (point, 0)
    forgotten.add("ana")
    kept, dropped = without_forgotten(point, forgotten)
    assert [dict(p.tags)["runner"] for p in kept] == ["bob"] and dropped == 2


def test_retention_by_measurement_is_checked() -> None:
    settings = Settings(influx_retention_by_measurement={"run_window": "90d"})
    assert retention_plan(settings) == {"run_window": "90d"}
    assert prune_statement("run_window", "90d") == \
        'DELETE FROM "run_window" WHERE time < now() - 90d'
    with pytest.raises(ValidationError, match="not an InfluxDB duration"):
        Settings(influx_retention_by_measurement={"run_window": "three months"})
    with pytest.raises(ValueError, match="never writes"):
        retention_plan(Settings(influx_retention_by_measurement={"run_windows": "90d"}))
    with pytest.raises(ValueError, match="kept forever"):
        retention_plan(Settings(influx_retention_by_measurement={"run_window": "0s"}))


def test_a_child_process_reads_the_mapping_back(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path,
                        influx_retention_by_measurement={"run_window": "30d"})
    env = settings_env(settings)
    monkeypatch.setenv("STRIDEWATCH_INFLUX_RETENTION_BY_MEASUREMENT",
                       env["STRIDEWATCH_INFLUX_RETENTION_BY_MEASUREMENT"])
    assert Settings(data_dir=tmp_path).influx_retention_by_measurement == {"run_window": "30d"}


def test_the_sent_log_forgets_a_runner_s_alerts_and_inbox(tmp_path: Path) -> None:
    log = SentLog(tmp_path / "sent.sqlite")
    try:
        log.mark_sent("a1", "mqtt:runners/ana/alerts")
        log.mark_sent("a1", "apprise:f00")
        log.mark_sent("a2", "mqtt:runners/ana/alerts")
        log.mark_sent("b1", "mqtt:runners/bob/alerts")
        assert log.forget({"a1"}, {"mqtt:runners/ana/alerts"}) == 3
        assert not log.was_sent("a1", "apprise:f00")
        assert log.was_sent("b1", "mqtt:runners/bob/alerts")
    finally:
        log.close()


def test_export_tables_hold_every_row_in_json_and_csv(tmp_path: Path) -> None:
    rows = [{"time": 1000, "runner": "ana", "score": 3},
            {"time": 2000, "runner": "ana", "where": "achilles"}]
    entry = _write_table(tmp_path, "pain", rows)
    assert entry == {"rows": 2, "json": "pain.json", "csv": "pain.csv"}
    written = json.loads((tmp_path / "pain.json").read_text())
    assert [r["time_utc"] for r in written] == ["1970-01-01T00:00:01+00:00",
                                                "1970-01-01T00:00:02+00:00"]
    lines = (tmp_path / "pain.csv").read_text().splitlines()
    assert lines[0] == "time,time_utc,runner,score,where"
    assert lines[2] == "2000,1970-01-01T00:00:02+00:00,ana,,achilles"
    assert (tmp_path / "pain.csv").stat().st_mode & 0o077 == 0


def test_forget_says_what_it_removed() -> None:
    report = ForgetReport("ana", series={"session": 1, "alert": 2}, state_keys=3,
                          state_note="by the worker", sink_note="caught up",
                          sent_log_rows=4, credentials="credentials revoked",
                          roster="removed runner ana from r.yaml")
    text = "\n".join(report.lines())
    assert "3 series dropped (alert 2, session 1)" in text
    assert "3 keys tombstoned" in text and "4 rows deleted" in text
    with pytest.raises(PrivacyError):
        check_runner_id("Ana; DROP")
