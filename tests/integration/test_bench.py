"""``stridewatch bench`` end to end: a tiny run of every part on a stack of its own.

Checks that the bench measures, reports and counts right, never how fast anything is:
speed depends on the machine and on what else runs on it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from base.settings import Settings
from ingest.contract import RunnerEvent
from ingest.records import decode_record, partition_for
from stridewatch.bench.common import parse_variant, percentiles
from stridewatch.bench.core import step_as_worker
from stridewatch.bench.peers import count_batches
from stridewatch.bench.workload import bridge_records, plan_workload

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("one-record:kafka_one_record_per_batch=true",
            "batched:kafka_one_record_per_batch=false")
PERCENTILE_KEYS = {"p50", "p95", "p99", "max"}
REQUIRED = ("core.live_batch_us_p50.1", "core.live_batch_us_p50.26",
            "stream.stridewatch.batches_per_s", "stream.quix.batches_per_s",
            "stream.raw.batches_per_s", "live.runners", "live.sustained", "live.lost",
            "live.alert_latency_ms_p99", "scaleout.workers_1.batches_per_s",
            "scaleout.workers_2.batches_per_s")
STREAM_NUMBERS = ("batches_per_s", "strides_per_s", "cpu_ms_per_batch", "seconds")
LIVE_NUMBERS = ("batches_per_s", "behind_s", "drain_s", "changelog_bytes_per_record",
                "offered_batches_per_s")
LIVE_PROCESSES = ("mosquitto", "bridge", "kafka", "worker", "sink", "notify")
HAS_QUIX = importlib.util.find_spec("quixstreams") is not None


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def lookup(report: dict[str, Any], dotted: str) -> object:
    value: Any = report
    for part in dotted.split("."):
        assert isinstance(value, dict) and part in value, f"{dotted}: no {part!r}"
        value = value[part]
    return value


def check_stream(row: dict[str, Any], batches: int, name: str) -> None:
    assert row["error"] is None, (name, row["error"])
    for key in STREAM_NUMBERS:
        assert is_number(row[key]), (name, key, row[key])
    # every device batch put in produced its output (raw: was consumed), none twice
    assert row["batches"] == batches > 0, (name, row)
    assert row["batches_done"] == row["batches"], (name, row)
    assert row["duplicates"] == row["unexpected"] == row["dead_letters"] == 0, (name, row)
    assert row["ok"] is True, (name, row)


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_small_bench_reports_every_number_and_every_count_matches(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # no STRIDEWATCH_* from the caller's environment, no stridewatch.toml from the repo
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDEWATCH_")}
    args = [sys.executable, "-m", "stridewatch.bench", "--quick", "--runners", "5",
            "--minutes", "0.4", "--stream-runners", "12", "--stream-seconds", "5",
            "--core-runners", "1", "--history-weeks", "1,26", "--json", str(out)]
    for variant in VARIANTS:
        args += ["--variant", variant]
    run = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=840, check=False)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-4000:]}"
    for title in ("core:", "stream:", "live:", "scaleout:", "recovery:"):
        assert title in run.stdout
    assert "FAIL" not in run.stdout

    report = json.loads(out.read_text())
    for key in REQUIRED:
        lookup(report, key)

    core = report["core"]
    for name in ("live_batch_us_p50", "live_batch_us_p99", "state_bytes_mean",
                 "changelog_bytes_per_batch"):
        assert set(core[name]) == {"1", "26"}, name
        assert all(is_number(v) and v > 0 for v in core[name].values()), (name, core[name])
    assert core["batches"]["1"] == core["batches"]["26"] > 0  # the same live run
    assert core["history_events"]["26"] > core["history_events"]["1"]

    stream = report["stream"]
    batches = stream["batches"]
    for name, row in stream["stridewatch_variants"].items():
        check_stream(row, batches, name)
    assert list(stream["stridewatch_variants"]) == ["one-record", "batched"]
    check_stream(stream["raw"], batches, "raw")
    if HAS_QUIX:
        check_stream(stream["quix"], batches, "quix")
    else:
        assert "pip install -e '.[bench]'" in stream["quix"]["error"]
        assert stream["quix"]["batches_per_s"] is None

    recovery = report["recovery"]
    assert [s["store"] for s in recovery["stores"]] == ["memory://", "rocksdb://"]
    for store in recovery["stores"]:
        assert store["ok"] is True and store["error"] is None, store
        # a live, a seen and a history part per runner, all on the changelog
        assert store["changelog_records"] == 3 * recovery["runners"] > 0, store
        for start in ("first", "restart"):
            timing = store["starts"][start]
            assert is_number(timing["assigned_s"]) and is_number(timing["first_output_s"])
            # a worker processes only once its partitions are assigned and recovered
            assert timing["first_output_s"] >= timing["assigned_s"], store

    for n in ("workers_1", "workers_2"):
        check_stream(report["scaleout"][n], batches, n)
    assert report["scaleout"]["workers_2"]["workers"] == 2

    live = report["live"]
    assert live["runners"] == 5
    assert list(live["variants"]) == ["one-record", "batched"]
    for name, row in live["variants"].items():
        assert row["error"] is None, (name, row["error"])
        for key in LIVE_NUMBERS:
            assert is_number(row[key]), (name, key, row[key])
        assert isinstance(row["sustained"], bool)
        assert row["lost"] == 0 and row["strides"] > 0, (name, row)
        assert row["points_matched"] == row["batches"] > 0, (name, row)
        assert row["duplicates"] == row["unexpected"] == row["dead_letters"] == 0
        assert row["unrouted"] == 0
        # the imbalanced and the sore runner fire; every alert on Kafka reached the phone
        assert row["alerts"] == row["alerts_on_kafka"] > 0, (name, row)
        assert row["alerts_unmatched"] == 0, (name, row)
        assert set(row["alert_latency_ms"]) == PERCENTILE_KEYS
        assert all(is_number(v) for v in row["alert_latency_ms"].values()), row
        assert set(row["batch_latency_ms"]) == PERCENTILE_KEYS
        for process in LIVE_PROCESSES:
            stats = row["processes"][process]
            assert is_number(stats["cpu_s"]) and is_number(stats["peak_rss_mb"]), process
        assert row["changelog_records"] > 0
        assert row["ok"] is True
    assert is_number(live["alert_latency_ms_p99"])


def test_bridge_records_and_the_raw_count_see_every_batch() -> None:
    workload = plan_workload(3, 5, 1_790_000_000.0)
    settings = Settings()
    records = bridge_records(settings, workload.messages, 0.0)
    # fewer, fuller records: the bridge groups each second's messages per partition
    assert len(records) < len(workload.messages)
    counted = [count_batches(value) for _, _, value in records]
    assert sum(b for b, _ in counted) == workload.batches > 0
    assert sum(s for _, s in counted) == workload.samples
    events = [(partition, e) for partition, _, value in records for e in decode_record(value)]
    assert len(events) == len(workload.messages)
    for partition, event in events:
        assert isinstance(event, RunnerEvent)
        assert partition == partition_for(event.runner, settings.kafka_partitions)


def test_alert_latency_runs_from_the_publish_of_the_message_carrying_fired_at() -> None:
    from stridewatch.bench.live import alert_latencies

    messages = plan_workload(2, 5, 1_790_000_000.0).messages
    sent = {i: 100.0 + i for i in range(len(messages))}
    i, batch = next((i, m) for i, m in enumerate(messages) if m.samples and i > 2)
    pain_or_end = len(messages) - 1
    alerts = [(batch.runner, "gct_balance", batch.last_t, sent[i] + 0.25),
              (batch.runner, "gct_balance", (batch.first_t + batch.last_t) / 2, sent[i] + 1.0),
              (messages[pain_or_end].runner, "pain_after_run", messages[pain_or_end].last_t,
               sent[pain_or_end] + 0.5),
              (batch.runner, "gct_balance", messages[0].first_t - 3600, 0.0),  # before any
              ("nobody", "gct_balance", batch.last_t, 0.0)]
    latencies, unmatched, rules = alert_latencies(messages, alerts, sent)
    assert latencies == pytest.approx([0.25, 1.0, 0.5])
    assert unmatched == 2
    assert rules == {"gct_balance": 4, "pain_after_run": 1}


def test_step_as_worker_writes_state_and_skips_duplicates() -> None:
    from rules.catalogue import load_catalogue
    from team.roster import load_roster

    workload = plan_workload(1, 5, 1_790_000_000.0)
    profile = load_roster(None).profile(workload.runners[0], load_catalogue(None))
    events = [e for _, _, value in bridge_records(Settings(), workload.messages, 0.0)
              for e in decode_record(value) if isinstance(e, RunnerEvent)]
    held = None
    for event in events:
        held, written, _ = step_as_worker(held, event, profile)
        assert written is not None and written.live
    assert held is not None
    before = held.stored_bytes
    again, written, out = step_as_worker(held, events[1], profile)
    assert out.duplicate and written is None and again == held
    assert again.stored_bytes == before


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
    for option in ("--parts", "--runners", "--minutes", "--variant", "--json"):
        assert option in run.stdout
