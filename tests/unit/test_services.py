"""The pipeline as a service, without the stack: recorded settings and their precedence,
status files, pid files (stale and reused), the refused-points line and the sink's counts.
The real processes are started and stopped in tests/integration/test_services.py."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from base import status
from base.settings import (
    load_settings,
    read_started_settings,
    record_started_settings,
    started_settings_path,
)
from stream.outputs.influx import WriteError
from stream.outputs.sink import BatchResult, SinkStats, refusal_reason
from stridewatch import services

ENV_KEYS = ("STRIDEWATCH_DATA_DIR", "STRIDEWATCH_ROSTER_FILE", "STRIDEWATCH_CONFIG",
            "STRIDEWATCH_MQTT_PORT", "STRIDEWATCH_BRIDGE_PASSWORD", "STRIDEWATCH_TOPIC_PREFIX",
            "STRIDEWATCH_INFLUX_PASSWORD")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # no stridewatch.toml or .stack of the developer's
    return tmp_path


# ------------------------------------------------------------------------ recorded settings
def test_start_records_what_it_was_given_and_later_commands_read_it(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = clean_env / "data"
    monkeypatch.setenv("STRIDEWATCH_DATA_DIR", str(data))
    monkeypatch.setenv("STRIDEWATCH_MQTT_PORT", "21883")
    monkeypatch.setenv("STRIDEWATCH_BRIDGE_PASSWORD", "not-for-the-file")
    monkeypatch.setenv("STRIDEWATCH_INFLUX_PASSWORD", "nor-this")
    given = {"roster_file": Path("team.yaml")}  # relative: recorded absolute
    record_started_settings(load_settings(**given), given)

    recorded = read_started_settings(data)
    assert recorded == {"mqtt_port": 21883, "roster_file": str(clean_env / "team.yaml")}
    text = started_settings_path(data).read_text()
    assert "not-for-the-file" not in text and "nor-this" not in text
    assert stat.S_IMODE(started_settings_path(data).stat().st_mode) == 0o600

    # a later command, with only the data dir exported, gets the same settings
    for key in ("STRIDEWATCH_MQTT_PORT", "STRIDEWATCH_BRIDGE_PASSWORD",
                "STRIDEWATCH_INFLUX_PASSWORD"):
        monkeypatch.delenv(key)
    later = load_settings()
    assert (later.mqtt_port, later.roster_file) == (21883, clean_env / "team.yaml")
    assert later.bridge_password.get_secret_value() == ""


def test_the_environment_wins_over_the_recorded_file_which_wins_over_toml(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = clean_env / "data"
    (clean_env / "stridewatch.toml").write_text(
        f'data_dir = "{data}"\nmqtt_port = 1111\nkafka_partitions = 8\n')
    data.mkdir()
    started_settings_path(data).write_text(json.dumps({"mqtt_port": 2222,
                                                       "topic_prefix": "team-a"}))
    s = load_settings()
    # the data dir came from the TOML file, and with it the recorded file was found
    assert (s.mqtt_port, s.kafka_partitions, s.topic_prefix, s.app_id) == (
        2222, 8, "team-a", "team-a")
    monkeypatch.setenv("STRIDEWATCH_MQTT_PORT", "3333")
    assert load_settings().mqtt_port == 3333
    assert load_settings(mqtt_port=4444).mqtt_port == 4444


def test_a_later_start_replaces_what_it_is_given_and_keeps_the_rest(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = clean_env / "data"
    monkeypatch.setenv("STRIDEWATCH_DATA_DIR", str(data))
    first = {"roster_file": clean_env / "a.yaml"}
    monkeypatch.setenv("STRIDEWATCH_TOPIC_PREFIX", "club")
    record_started_settings(load_settings(**first), first)
    monkeypatch.delenv("STRIDEWATCH_TOPIC_PREFIX")
    second = {"roster_file": clean_env / "b.yaml"}
    record_started_settings(load_settings(**second), second)
    assert read_started_settings(data) == {"roster_file": str(clean_env / "b.yaml"),
                                           "topic_prefix": "club"}


# ------------------------------------------------------------------------ status files
def test_the_status_file_carries_counters_readiness_and_the_last_warning(tmp_path: Path
                                                                         ) -> None:
    path = tmp_path / "run" / "sink.status.json"
    reporter = status.StatusReporter(path, "sink", ready_marker="writing ")
    handler = status._LastErrorHandler(reporter)
    logger = logging.getLogger("test.services.status")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        reporter.start()
        first = status.read_status(path)
        assert first is not None and first["ready"] is False and first["pid"] == os.getpid()
        logger.info("writing sw.metrics to InfluxDB at x")
        logger.warning("InfluxDB at x unreachable: %s", "ConnectError")
        reporter.update(written=5, refused=2)
        seen = {"received": 0}
        reporter.watch(lambda: dict(seen))
        seen["received"] = 9  # read at the next heartbeat, not when watched
        reporter.write()
    finally:
        reporter.stop()
        logger.removeHandler(handler)
    data = status.read_status(path)
    assert data is not None and data["ready"] is True
    assert data["counters"] == {"written": 5, "refused": 2, "received": 9}
    assert data["last_error"]["level"] == "WARNING"
    assert data["last_error"]["message"] == \
        "test.services.status: InfluxDB at x unreachable: ConnectError"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["sink.status.json"]  # no temp left


# ------------------------------------------------------------------------ pid files
def test_a_pid_file_of_a_gone_process_or_of_another_program_is_stale(
        clean_env: Path) -> None:
    settings = load_settings(data_dir=clean_env / "data")
    path = services.pid_path(settings, "sink")
    path.parent.mkdir(parents=True)
    assert services.live_pid(settings, "sink") is None  # no pid file

    # a pid the system gave to another program
    other = subprocess.Popen(["sleep", "30"])
    try:
        path.write_text(f"{other.pid}\n")
        assert services.recorded_pid(settings, "sink") == other.pid
        assert services.live_pid(settings, "sink") is None
    finally:
        other.kill()
        other.wait()
    # the process is gone
    assert services.live_pid(settings, "sink") is None

    # our own command line is recognised, for its own name only
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                             "stridewatch.cli", "sink"])
    try:
        path.write_text(f"{ours.pid}\n")
        deadline = time.monotonic() + 10
        while services.live_pid(settings, "sink") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert services.live_pid(settings, "sink") == ours.pid
        assert not services.is_ours(ours.pid, "worker")
        services.pid_path(settings, "worker").write_text(f"{ours.pid}\n")
        assert services.live_pid(settings, "worker") is None
    finally:
        ours.kill()
        ours.wait()


def test_stop_removes_a_stale_pid_file_and_says_so(clean_env: Path) -> None:
    settings = load_settings(data_dir=clean_env / "data")
    gone = subprocess.Popen(["true"])
    gone.wait()
    path = services.pid_path(settings, "worker")
    path.parent.mkdir(parents=True)
    path.write_text(f"{gone.pid}\n")
    said: list[str] = []
    services.stop_all(settings, timeout_s=1, echo=said.append)
    assert not path.exists()
    assert "worker  was not running (stale pid file removed)" in said
    status_of = services.process_status(settings, "worker")
    assert status_of.state == "stopped" and not status_of.healthy and status_of.pid is None


# ------------------------------------------------------------------------ refused points
def test_the_sink_counts_refused_points_with_since_and_the_last_reason() -> None:
    stats = SinkStats()
    stats.add(BatchResult(done=True, written=10))
    assert stats.report() == "wrote 10 points in 1 batches so far (0 refused)"
    assert services.refused_line(stats.counters()) is None
    stats.add(BatchResult(done=True, written=3, refused=2,
                          refused_reason="points beyond retention policy"))
    stats.add(BatchResult(done=True, written=1, refused=1, refused_reason="field type conflict"))
    counters = stats.counters()
    assert (counters["written"], counters["refused"], counters["batches"]) == (14, 3, 3)
    assert stats.refused_since is not None
    since = datetime.fromtimestamp(stats.refused_since, UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert services.refused_line(counters) == (
        f"3 points refused by InfluxDB since {since} UTC (last: field type conflict)")
    assert stats.report().endswith(f"3 points refused by InfluxDB since {since} UTC "
                                   "(last: field type conflict)")


@pytest.mark.parametrize(("message", "reason"), [
    ('InfluxDB at h:1 refused the points (400): {"error":"partial write: points beyond '
     'retention policy dropped=2"}', "points beyond retention policy"),
    ('InfluxDB at h:1 refused the points (400): {"error":"partial write: field type '
     'conflict: input field \\"v\\" on measurement \\"m\\" is type string, already exists '
     'as type float dropped=1"}',
     'field type conflict: input field "v" on measurement "m" is type string, already '
     'exists as type float'),
    ('InfluxDB at h:1 refused the points (400): {"error":"unable to parse \'x\': bad"}',
     "unable to parse 'x': bad"),
])
def test_the_refusal_reason_is_influxdbs_own_words(message: str, reason: str) -> None:
    assert refusal_reason(WriteError(message, retryable=False, status=400)) == reason


# ------------------------------------------------------------------------ small parts
def test_since_takes_dates_times_and_durations_before_now() -> None:
    now = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    assert services.parse_since("3d", now) == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert services.parse_since("90m", now) == datetime(2026, 3, 4, 10, 30, tzinfo=UTC)
    assert services.parse_since("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert services.parse_since("2026-03-01T06:00+01:00", now).astimezone(UTC) == \
        datetime(2026, 3, 1, 5, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="expected a date"):
        services.parse_since("yesterday", now)


def test_status_lines_show_state_pid_uptime_lag_error_and_log(tmp_path: Path) -> None:
    s = services.ProcessStatus("sink", "running", 4321, 3725.0, tmp_path / "sink.log",
                               {"written": 7, "refused": 0, "batches": 2},
                               "2026-03-04 12:00:00 UTC WARNING stridewatch.sink: InfluxDB "
                               "unreachable", 12,
                               "sw.metrics")
    assert services.status_lines(s) == [
        "sink    running, healthy   pid 4321     up 1h02m    lag 12 (sw.metrics)",
        "        written 7, batches 2",
        "        last error: 2026-03-04 12:00:00 UTC WARNING stridewatch.sink: InfluxDB "
        "unreachable",
        f"        log: {tmp_path / 'sink.log'}",
    ]
    assert s.healthy
    assert not services.ProcessStatus("sink", "running", 1, 1.0, tmp_path, lag_error="x").healthy


def test_stop_kills_a_process_group_that_ignores_sigterm(clean_env: Path) -> None:
    settings = load_settings(data_dir=clean_env / "data")
    # a "sink" that ignores SIGTERM and has a child of its own, in a session of its own
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, "
            "signal.SIG_IGN); child = subprocess.Popen(['sleep', '60']); "
            "print(child.pid, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, "stridewatch.cli", "sink"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        status.run_dir(settings).mkdir(parents=True)
        services.pid_path(settings, "sink").write_text(f"{proc.pid}\n")
        group = sorted([proc.pid, child])
        assert services.group_pids(settings) == {"sink": group}
        said: list[str] = []
        services.stop_all(settings, timeout_s=1.0, names=["sink"], echo=said.append)
        assert proc.wait(5) == -9
        assert said == [f"sink    did not stop within 1 s: killing {group}"]
        assert services._group_pids(proc.pid) == []
        assert not services.pid_path(settings, "sink").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_process_is_ours_from_the_moment_it_is_started() -> None:
    # right after the start its command line reads empty for a moment: `start` once took
    # such a process for one that exited, and left it running
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "stridewatch.cli", "notify", "--help"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            assert services.is_ours(proc.pid, "notify")
            assert not services.is_ours(proc.pid, "worker")
        finally:
            proc.wait(timeout=30)
    assert not services.is_ours(proc.pid, "notify")  # gone: not ours any more
