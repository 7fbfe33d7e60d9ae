"""``stridewatch bench`` end to end: a tiny quick run on a stack of its own, two variants.

Checks that the bench measures and reports, never how fast anything is: speed depends on
the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stridewatch.bench import parse_variant, percentiles

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("one-record:kafka_one_record_per_batch=true",
            "batched:kafka_one_record_per_batch=false")
CORE_NUMBERS = ("events", "samples", "alerts", "points", "step_events_per_s",
                "step_samples_per_s", "worker_loop_events_per_s", "peak_rss_growth_mb",
                "state_bytes_mean", "state_bytes_max")
VARIANT_NUMBERS = ("records", "batches", "samples", "publish_msgs_per_s", "e2e_records_per_s",
                   "e2e_samples_per_s", "e2e_s", "worker_cpu_ms_per_record",
                   "bridge_cpu_ms_per_record", "kafka_cpu_ms_per_record",
                   "mqtt_cpu_ms_per_record", "dead_letters", "points_matched")
PERCENTILE_KEYS = {"p50", "p95", "p99", "max"}


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def test_quick_bench_compares_two_variants_and_every_batch_gives_one_point(
        tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # no STRIDEWATCH_* from the caller's environment, no stridewatch.toml from the repo
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDEWATCH_")}
    args = [sys.executable, "-m", "stridewatch.bench", "--quick", "--runners", "2",
            "--minutes", "0.5", "--history-weeks", "1", "--json", str(out)]
    for variant in VARIANTS:
        args += ["--variant", variant]
    run = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=240, check=False)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-4000:]}"

    # the printed tables: core, then one row per variant, no failed check
    assert "core: process_event" in run.stdout
    assert "one-record" in run.stdout and "batched" in run.stdout
    assert "FAIL" not in run.stdout

    report = json.loads(out.read_text())
    core = report["core"]
    for name in CORE_NUMBERS:
        assert is_number(core[name]), (name, core[name])
    for name in ("step_latency_ms", "live_batch_latency_ms", "state_json_ms"):
        assert set(core[name]) == PERCENTILE_KEYS
        assert all(is_number(v) for v in core[name].values()), (name, core[name])
    assert core["events"] > 0 and core["samples"] > 0

    pipeline = report["pipeline"]
    variants = {v["variant"]: v for v in pipeline["variants"]}
    assert list(variants) == ["one-record", "batched"]
    assert variants["one-record"]["overrides"] == {"kafka_one_record_per_batch": "true"}
    assert variants["batched"]["overrides"] == {"kafka_one_record_per_batch": "false"}
    assert len({v["topic_prefix"] for v in variants.values()}) == 2  # own topics each
    for name, v in variants.items():
        assert v["error"] is None, (name, v["error"])
        for metric in VARIANT_NUMBERS:
            assert is_number(v[metric]), (name, metric, v[metric])
        assert set(v["latency_ms"]) == PERCENTILE_KEYS
        assert all(is_number(x) for x in v["latency_ms"].values()), (name, v["latency_ms"])
        for process in ("worker", "bridge"):
            assert is_number(v["processes"][process]["peak_rss_mb"]), (name, process)
        # the correctness line: every published batch produced exactly one run_window point
        assert v["batches"] == pipeline["batches"] > 0
        assert v["points_matched"] == v["batches"], (name, v)
        assert v["points_missing"] == v["points_duplicate"] == v["points_unexpected"] == 0
        assert v["dead_letters"] == 0 and v["unrouted"] == 0
        assert v["ok"] is True


def test_variant_specs_are_checked_before_anything_runs() -> None:
    variant = parse_variant("big:kafka_partitions=8, kafka_one_record_per_batch=false")
    assert variant.name == "big"
    assert variant.overrides == {"kafka_partitions": "8", "kafka_one_record_per_batch": "false"}
    assert parse_variant("plain").overrides == {}
    for bad in ("bad name:kafka_partitions=2", "x:no_such_setting=1", "x:kafka_partitions",
                "x:topic_prefix=mine", "x:mqtt_port=1883"):
        with pytest.raises(ValueError):
            parse_variant(bad)


def test_percentiles_use_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([3.0]) == {"p50": 3.0, "p95": 3.0, "p99": 3.0, "max": 3.0}
    assert all(math.isnan(v) for v in percentiles([]).values())


def test_module_entry_point_shows_help() -> None:
    run = subprocess.run([sys.executable, "-m", "stridewatch.bench", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    assert "--variant" in run.stdout and "--quick" in run.stdout
