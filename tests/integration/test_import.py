"""``stridewatch import`` on the real stack: InfluxDB's retention, multisport files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from base.settings import Settings
from ingest.decoders.fit import read_fit
from ingest.retention import duration_s, read_retention
from stridewatch.processes import settings_env
from tests.conftest import FIT_DIR, read_events, wait_for
from tests.integration.conftest import Pipeline
from tests.multisport_fit import DEVICE, LEGS, RUN_LEGS, multisport_bytes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN = FIT_DIR / "garmin-fenix-5-run.fit"  # 2017-06-11, 78 strides


def stridewatch(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "stridewatch.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def runner_events(settings: Settings, runner: str) -> list[Any]:
    return [e for _, e in read_events(settings) if e.runner == runner]


def test_a_run_older_than_the_retention_is_refused_until_the_retention_is_changed(
        pipeline: Pipeline) -> None:
    settings, runner = pipeline.settings, "imp-old"
    pipeline.runner(runner)
    before = read_retention(settings)
    run = read_fit(RUN)
    age_days = (time.time() - run.start_t) / 86_400
    # the stack's database keeps 400 days (STRIDEWATCH_INFLUX_RETENTION's default): the
    # 2017 run is older than that on any date this test runs
    assert before.seconds == duration_s(settings.influx_retention) == 400 * 86_400
    assert age_days > 400 + 1
    try:
        refused = stridewatch(settings, "import", str(RUN), "--runner", runner)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        out = " ".join(refused.stdout.split())  # the notes wrap at 80 columns
        assert "0 imported, 1 refused" in out
        assert "keeps 400 days (retention policy 'stridewatch' of database" in out
        assert "stridewatch influx retention" in out and "--past-retention" in out
        assert runner_events(settings, runner) == []  # nothing was published

        # the documented change: lengthen the existing database's retention
        wanted = f"{int(age_days) + 60}d"
        changed = stridewatch(settings, "influx", "retention", wanted)
        assert changed.returncode == 0, changed.stdout + changed.stderr
        assert f"keeps {int(age_days) + 60} days" in changed.stdout
        assert read_retention(settings).seconds == duration_s(wanted)

        accepted = stridewatch(settings, "import", str(RUN), "--runner", runner)
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        assert "1 imported, 0 refused" in accepted.stdout

        def session() -> list[dict[str, Any]]:
            return pipeline.influx("SELECT session_id, steps, duration_min, ended FROM "
                                   f"session WHERE runner = '{runner}'")

        rows = wait_for(lambda: [r for r in session() if r["ended"]], timeout=90,
                        what="the old run's session point in InfluxDB")
        assert [(r["session_id"], r["steps"], r["duration_min"]) for r in rows] == [
            (run.session_id, 156, round(56.887 / 60, 3))]  # the device's strides x 2, timer
        windows = pipeline.influx("SELECT count(samples) FROM run_window WHERE runner = "
                                  f"'{runner}'")
        assert windows and windows[0]["count"] == len(run.batches)
    finally:
        stridewatch(settings, "influx", "retention", settings.influx_retention)
    assert read_retention(settings).seconds == before.seconds


def test_a_multisport_file_imports_its_two_runs(pipeline: Pipeline, tmp_path: Path) -> None:
    settings, runner = pipeline.settings, "imp-tri"
    pipeline.runner(runner)
    # three days ago at noon UTC, inside the database's retention whatever the date
    start = (time.time() // 86_400 - 3) * 86_400 + 12 * 3600
    path = tmp_path / "triathlon.fit"
    path.write_bytes(multisport_bytes(start))

    dry = stridewatch(settings, "import", str(path), "--runner", runner, "--dry-run",
                      "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    legs = [json.loads(line) for line in dry.stdout.splitlines()]
    assert [(x["leg"], x["sport"]) for x in legs] == [
        (i + 1, leg.sport.name.lower()) for i, leg in enumerate(LEGS)]
    assert [x["refused_reason"] for x in legs] == [
        f"sport is {x['sport']}; StrideWatch imports runs and walks" for x in legs[:3]
    ] + [None, None]
    assert runner_events(settings, runner) == []  # a dry run publishes nothing

    done = stridewatch(settings, "import", str(path), "--runner", runner)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 imported, 0 refused" in done.stdout
    assert "(2 runs, 3 legs skipped)" in done.stdout
    assert all(len(line) <= 80 for line in done.stdout.splitlines())

    def sessions() -> list[dict[str, Any]]:
        return pipeline.influx("SELECT session_id, steps, duration_min, distance_km, ended "
                               f"FROM session WHERE runner = '{runner}'")

    rows = wait_for(lambda: (lambda r: r if len(r) == 2 and all(x["ended"] for x in r)
                             else None)(sessions()),
                    timeout=90, what="two ended sessions")
    assert sorted((r["session_id"], r["steps"], r["duration_min"], r["distance_km"])
                  for r in rows) == [
        (f"{DEVICE}-{int(leg.start_at(start))}", 2 * (leg.strides or 0),
         round(leg.elapsed_s / 60, 3), round(leg.distance_m / 1000, 4)) for leg in RUN_LEGS]
    # the day's load is the two runs' distance, nothing of the swim, transition or bike
    expected_km = sum(leg.distance_m for leg in RUN_LEGS) / 1000

    def day() -> list[dict[str, Any]]:
        return pipeline.influx("SELECT load, runs, duration_min FROM daily_load WHERE "
                               f"runner = '{runner}' AND runs > 0")

    days = wait_for(lambda: [d for d in day() if d["runs"] == 2], timeout=60,
                    what="the day's load with both runs")
    assert days[-1]["load"] == pytest.approx(expected_km, abs=1e-4)
    assert days[-1]["duration_min"] == pytest.approx(
        sum(leg.elapsed_s for leg in RUN_LEGS) / 60, abs=1e-3)
    # only the run legs were published: 2 x (start, batches, end)
    kinds = sorted(e.kind for e in runner_events(settings, runner))
    assert kinds == ["samples"] * 2 + ["session"] * 4
