"""Ingest on real services: FIT import, broker security, dead letters, scale-out, outage.

Everything here runs on a stack of its own (``pipeline`` below overrides the shared
session fixture for this module): the scale-out test starts a second bridge and the
outage test stops and restarts the Kafka-compatible broker, which forgets every topic,
consumer group and changelog (it is memory-only), so that test comes last but one; the
last one greps every log for the stack's passwords.

Figures (messages published during the outage vs arrived, the per-bridge split) are
printed; run with ``-s`` to see them.

Found on the way (not ingest's code, reported to its owners): the rule evaluator does not
alert on an observation older than one it already saw for the rule (``rules/evaluator.py``
``_advance``: the sustain start is later than the observation), so a pain report that
reaches the stream after a newer one is silently not alerted. The tests keep each runner's
messages in order; with two bridges a runner's order is not guaranteed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aiokafka.structs import ConsumerRecord
from paho.mqtt.enums import CallbackAPIVersion

from base.mqtt import MqttError, connect_blocking, make_client, service_password
from base.settings import Settings
from deploy.stack import Tansu
from ingest.contract import RunnerEvent
from ingest.decoders import InboundMessage, Rejected
from ingest.kafka_sender import BRIDGE_HEADER
from ingest.publisher import RunnerPublisher
from ingest.records import decode_record, partition_for
from ingest.routing import decode_message
from stridewatch.demo import read_topic
from stridewatch.processes import Component, settings_env
from team.roster import load_roster
from tests.conftest import FIT_DIR, ROSTER, AlertInbox, new_stack_settings, wait_for
from tests.integration.conftest import Pipeline, own_pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "unit" / "testdata"
MAX_IN_FLIGHT = 20  # small, so the outage test shows the bound holding
OUTAGE_S = 50.0  # Kafka stays away longer than 1.5 x the MQTT keepalive (30 s)
Message = tuple[str, bytes]

# passwords handed out in this module that live in no secrets file (coaches)
EXTRA_SECRETS: list[str] = []
# output of the command-line tools run here, for the secrets check
TOOL_OUTPUT: list[str] = []


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


CAPTURED = _Captured()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """The whole pipeline on a stack of its own (overrides the shared session fixture).

    Infinite InfluxDB retention: the FIT files are from 2015-2017.
    """
    settings = new_stack_settings(tmp_path_factory, topic_prefix="sw-ingest",
                                  app_id="sw-ingest", bridge_max_in_flight=MAX_IN_FLIGHT,
                                  log_level="DEBUG", influx_retention="INF")
    root = logging.getLogger()
    root.addHandler(CAPTURED)
    ours = [logging.getLogger(name) for name in ("stridewatch", "ingest", "deploy", "paho")]
    levels = [logger.level for logger in ours]
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    try:
        with own_pipeline(settings) as pipe:
            yield pipe
    finally:
        root.removeHandler(CAPTURED)
        for logger, level in zip(ours, levels, strict=True):
            logger.setLevel(level)


# ------------------------------------------------------------------------------ helpers
def records(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    async def collect() -> list[ConsumerRecord[bytes, bytes]]:
        return [r async for r in read_topic(settings, topic, idle_s=1.0)]

    return asyncio.run(collect())


def events_of(settings: Settings, runners: set[str]
              ) -> list[tuple[RunnerEvent, ConsumerRecord[bytes, bytes]]]:
    """The events of ``runners`` on the events topic, each with the record holding it."""
    found = []
    for record in records(settings, settings.events_topic):
        for event in decode_record(record.value):
            assert isinstance(event, RunnerEvent), event
            # a group record sits on the partition of every runner in it
            assert record.partition == partition_for(event.runner, settings.kafka_partitions)
            if event.runner in runners:
                found.append((event, record))
    return found


def dead_letters_of(settings: Settings, runners: set[str]) -> list[dict[str, Any]]:
    letters = [json.loads(r.value) for r in records(settings, settings.deadletter_topic)]
    return [d for d in letters if d.get("runner") in runners]


def count(pipeline: Pipeline, query: str) -> int:
    rows = pipeline.influx(query)
    return int(rows[0]["count"]) if rows else 0


def windows(pipeline: Pipeline, runner: str) -> int:
    return count(pipeline, f"SELECT count(samples) FROM run_window WHERE runner = '{runner}'")


def big_batch(runner: str, device: str, n: int, start_t: float) -> Message:
    samples = [{"t": round(start_t + 0.35 * i, 2), "cadence_spm": 172.0, "gct_ms": 248.0,
                "speed_mps": 3.05, "distance_m": round(1.07 * i, 2), "heart_rate_bpm": 150.0}
               for i in range(n)]
    body = {"seq": 1, "session_id": f"{device}-{int(start_t)}", "samples": samples}
    return f"runners/{runner}/{device}/samples", json.dumps(body).encode()


def wait_windows(pipeline: Pipeline, runner: str, n: int, timeout: float = 60) -> None:
    wait_for(lambda: windows(pipeline, runner) == n, timeout=timeout,
             what=f"{n} run_window points for {runner}")


def publish(settings: Settings, messages: list[Message]) -> None:
    with RunnerPublisher(settings) as publisher:
        publisher.publish_all(messages)


def sample_batches(runner: str, device: str, n: int, start_t: float) -> list[Message]:
    """``n`` small sample batches, each ending at its own time (one run_window point each)."""
    out = []
    for i in range(n):
        t0 = start_t + 2.0 * i
        samples = [{"t": round(t0 + 0.5 * k, 3), "cadence_spm": 170.0 + k, "gct_ms": 250.0,
                    "speed_mps": 3.0, "distance_m": round(3.0 * (2.0 * i + 0.5 * k), 2)}
                   for k in range(3)]
        body = {"seq": i, "session_id": f"{device}-{int(start_t)}", "samples": samples}
        out.append((f"runners/{runner}/{device}/samples", json.dumps(body).encode()))
    return out


def interleave(streams: list[list[Message]], rng: random.Random) -> list[Message]:
    """Merge the streams in random order, keeping each stream's own order."""
    queues = [list(reversed(s)) for s in streams if s]
    out = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop())
        if not queue:
            queues.remove(queue)
    return out


def pain_report(runner: str, seq: int, t: float, score: int = 7) -> Message:
    body = {"seq": seq, "t": t, "score": score, "where": "achilles", "when": "after"}
    return f"runners/{runner}/pain", json.dumps(body).encode()


def injury_report(runner: str, seq: int, t: float) -> Message:
    body = {"seq": seq, "t": t, "phase": "injured", "rolled": "in", "swelling": "mild",
            "could_take_four_steps": True}
    return f"runners/{runner}/injury", json.dumps(body).encode()


def connack(settings: Settings, username: str | None, password: str | None) -> int:
    """The broker's CONNACK reason code for these credentials (0 = accepted)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.time_ns()}",
                         protocol=mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    answer: list[int] = []
    client.on_connect = lambda c, u, f, reason, p: answer.append(reason.value)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        wait_for(lambda: answer, timeout=10, what="CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return answer[0]


# ------------------------------------------------------------------------------ FIT import
def run_import(settings: Settings, runner: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), "COLUMNS": "250"}
    result = subprocess.run([sys.executable, "-m", "ingest.importer", *map(str, paths),
                             "--runner", runner], env=env, capture_output=True, text=True,
                            timeout=120, check=False, cwd=ROOT)
    TOOL_OUTPUT.append(result.stdout + result.stderr)
    return result


def test_fit_folder_imported_twice_counts_each_run_once(pipeline: Pipeline) -> None:
    settings, runner = pipeline.settings, "fit-ana"
    pipeline.runner(runner)
    first = run_import(settings, runner, FIT_DIR)
    # the bike ride and the two corrupt files are refused; the rest is imported
    assert first.returncode == 1, first.stdout + first.stderr
    out = first.stdout
    assert "4 imported, 3 refused" in out
    # each refused file's reason is a note below the table
    for refused, why in [("garmin-fenix-5-bike.fit", "sport is cycling"),
                         ("activity-unexpected-eof.fit", "FIT file is truncated"),
                         ("activity-settings-corruptheader.fit", "not a readable")]:
        line = next(x for x in out.splitlines() if x.startswith(f"¹ {refused}: "))
        assert why in line
    fenix2 = next(x for x in out.splitlines() if x.startswith("activity-small-feni"))
    assert "running" in fenix2 and "imported 2809 samples" in fenix2 and " 9.01 " in fenix2
    batches = 10 + 12 + 1 + 1  # fenix2, Stryd, fenix 5 run, fenix 5 walk (300 per batch)

    def sessions() -> list[dict[str, Any]]:
        return pipeline.influx("SELECT distance_km, steps, ended, session_id FROM session "
                               f"WHERE runner = '{runner}'")

    wait_for(lambda: windows(pipeline, runner) == batches and len(sessions()) == 4
             and all(s["ended"] for s in sessions()), timeout=90,
             what=f"{batches} windows and 4 ended sessions")
    before = sorted((s["session_id"], s["distance_km"], s["steps"]) for s in sessions())

    second = run_import(settings, runner, FIT_DIR)
    assert second.returncode == 1 and "4 imported, 3 refused" in second.stdout
    # a pain report behind the re-import: same runner, same partition, so once it is in
    # InfluxDB the worker has been through every re-imported record
    publish(settings, [pain_report(runner, seq=1, t=time.time() - 60)])
    wait_for(lambda: count(pipeline, f"SELECT count(score) FROM pain WHERE runner = "
                                     f"'{runner}'") == 1, timeout=60, what="the pain report")
    copies = Counter((e.dedup_stream, e.seq) for e, _ in events_of(settings, {runner}))
    # Kafka holds both imports (and the one pain report); the stream counted each once
    assert sorted(Counter(copies.values()).items()) == [(1, 1), (2, batches + 2 * 4)]
    assert sorted((s["session_id"], s["distance_km"], s["steps"]) for s in sessions()) == before
    assert windows(pipeline, runner) == batches
    fenix2_km = next(d for sid, d, _ in before if sid.startswith("fit-garmin-3882015183"))
    assert fenix2_km == pytest.approx(9.008, abs=0.02)
    print(f"\n{first.stdout}")
    print(f"FIT import: {batches} batches + 8 session events published twice; Kafka holds "
          f"{sum(copies.values())} records, InfluxDB {windows(pipeline, runner)} windows and "
          f"{len(before)} sessions")


# ------------------------------------------------------------------------------ security
TEAM = load_roster(ROSTER)
TESTERS = sorted(r.id for r in TEAM.runners if r.team == "testers")
RIVALS = sorted(r.id for r in TEAM.runners if r.team == "rivals")


def test_runner_cannot_publish_under_another_runner(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    me, victim = "it-tilt", "it-steady"
    assert {me, victim} <= set(TESTERS)
    password = pipeline.runner(me)
    pipeline.runner(victim)
    client, props = make_client(settings, f"rogue-{me}", me, password)
    answers: dict[int, int] = {}
    client.on_publish = lambda c, u, mid, reason, p: answers.__setitem__(mid, reason.value)
    connect_blocking(settings, client, props)
    forged = [
        *sample_batches(victim, "watch", 1, time.time() - 600),
        pain_report(victim, seq=5, t=time.time() - 60, score=9),
        injury_report(victim, seq=6, t=time.time() - 60),
        (f"runners/{victim}/watch/session", json.dumps({
            "seq": 1, "session_id": "s", "phase": "start", "t": time.time()}).encode()),
        # nor may a runner write alerts, their own or anyone's
        (f"runners/{me}/alerts", b'{"rule": "fake"}'),
        (f"runners/{victim}/alerts", b'{"rule": "fake"}'),
    ]
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in forged]
        for info in infos:
            info.wait_for_publish(10)
        wait_for(lambda: len(answers) == len(infos), timeout=10, what="every PUBACK")
    finally:
        client.disconnect()
        client.loop_stop()
    assert [answers[i.mid] for i in infos] == [135] * len(forged)  # Not authorized

    # the project's own publisher surfaces the refusal instead of losing it quietly
    with pytest.raises(MqttError, match="Not authorized"), RunnerPublisher(settings) as pub:
        pub.publish(f"runners/{victim}/pain", forged[1][1], password=password)
        pub.flush()

    # allowed messages from the same runner go through right behind the forged ones
    # (score 3: no alert, so no alert of this runner is in flight for the next test)
    publish(settings, [pain_report(me, seq=77, t=time.time() - 30, score=3),
                       injury_report(me, seq=78, t=time.time() - 30)])
    wait_for(lambda: {(e.kind, e.seq) for e, _ in events_of(settings, {me})
                      if e.runner == me} >= {("pain", 77), ("injury", 78)},
             timeout=30, what="the allowed reports in Kafka")
    assert events_of(settings, {victim}) == []
    assert dead_letters_of(settings, {victim}) == []
    for measurement in ("run_window", "pain", "session", "alert"):
        assert pipeline.influx(f"SELECT * FROM {measurement} WHERE runner = '{victim}'") == []


def test_alerts_reach_only_their_runner_and_the_runners_coach(pipeline: Pipeline) -> None:
    settings, mosquitto = pipeline.settings, pipeline.stack.mosquitto
    me, other, rival = "it-tilt", "it-pain", "it-rival"
    passwords = {r: pipeline.runner(r) for r in (me, other, rival)}
    coach_pw = mosquitto.add_coach("kim", TESTERS)
    rival_coach_pw = mosquitto.add_coach("rex", RIVALS)
    EXTRA_SECRETS.extend([coach_pw, rival_coach_pw])
    inboxes = {
        "own": AlertInbox(settings, other, passwords[other], f"runners/{other}/alerts"),
        "snoop": AlertInbox(settings, me, passwords[me], f"runners/{other}/alerts"),
        "snoop-wild": AlertInbox(settings, me, passwords[me], "runners/+/alerts"),
        "coach": AlertInbox(settings, "coach-kim", coach_pw, f"runners/{other}/alerts"),
        "coach-wild": AlertInbox(settings, "coach-kim", coach_pw, "runners/+/alerts"),
        "rival-coach": AlertInbox(settings, "coach-rex", rival_coach_pw,
                                  f"runners/{other}/alerts"),
        "rival-coach-wild": AlertInbox(settings, "coach-rex", rival_coach_pw,
                                       "runners/+/alerts"),
    }
    try:
        publish(settings, [pain_report(other, seq=11, t=time.time() - 120, score=8),
                           pain_report(rival, seq=12, t=time.time() - 120, score=8)])
        for name in ("own", "coach", "coach-wild", "rival-coach-wild"):
            wait_for(inboxes[name].received, timeout=90, what=f"an alert in {name}")
        time.sleep(3)  # anything wrongly routed would have arrived by now
        got = {name: sorted(a["runner"] for a in inbox.received())
               for name, inbox in inboxes.items()}
        granted = {name: inbox.granted for name, inbox in inboxes.items()}
    finally:
        for inbox in inboxes.values():
            inbox.close()
    assert got == {"own": [other], "snoop": [], "snoop-wild": [], "coach": [other],
                   "coach-wild": [other], "rival-coach": [], "rival-coach-wild": [rival]}
    # Mosquitto grants the subscription and then checks read access per message
    print(f"\nSUBACK reason codes: {granted}")


def test_a_removed_runner_is_refused(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    password = pipeline.runner("it-leaver")
    assert connack(settings, "it-leaver", password) == 0
    result = subprocess.run([sys.executable, "-m", "stridewatch.cli", "runners", "remove",
                             "it-leaver"], env=settings_env(settings), capture_output=True,
                            text=True, timeout=60, check=False, cwd=ROOT)
    TOOL_OUTPUT.append(result.stdout + result.stderr)
    assert result.returncode == 0 and "revoked" in result.stdout, result.stderr
    assert connack(settings, "it-leaver", password) in (134, 135)
    assert "it-leaver" not in json.loads(settings.runner_secrets_file.read_text())
    again = subprocess.run([sys.executable, "-m", "stridewatch.cli", "runners", "remove",
                            "it-leaver"], env=settings_env(settings), capture_output=True,
                           text=True, timeout=60, check=False, cwd=ROOT)
    assert again.returncode == 0 and "nothing to revoke" in again.stdout


def test_anonymous_and_wrong_password_are_refused(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    password = pipeline.runner("it-spike")
    assert connack(settings, "it-spike", password) == 0
    assert connack(settings, None, None) == 135  # Not authorized
    assert connack(settings, "it-spike", password + "x") in (134, 135)
    assert connack(settings, "svc-bridge", "guess") in (134, 135)
    assert connack(settings, "nobody", "guess") in (134, 135)
    with pytest.raises(MqttError, match="refused"):
        client, props = make_client(settings, "wrong", "it-spike", "not-the-password")
        connect_blocking(settings, client, props)


# ------------------------------------------------------------------------------ dead letters
def _golden_failures(runner: str) -> list[Message]:
    """Must-fail golden payloads, published where a runner may publish: their own topics."""
    out = []
    for case in sorted((GOLDEN / "native").iterdir()):
        if not (case / "error").exists():
            continue
        leaf = (case / "topic").read_text().strip().split("/")[-1]
        topic = (f"runners/{runner}/{leaf}" if leaf in ("pain", "injury")
                 else f"runners/{runner}/gold/{leaf}")
        out.append((topic, (case / "input").read_bytes()))
    for case in sorted((GOLDEN / "rsc").iterdir()):
        if (case / "error").exists():
            out.append((f"runners/{runner}/gold/rsc", (case / "input").read_bytes()))
    # topic-level rejections a runner can still reach: a device id outside the contract
    out.append((f"runners/{runner}/Bad Device/samples", sample_batches(runner, "x", 1, 2e9)[0][1]))
    out.append((f"runners/{runner}/{'d' * 70}/rsc", b'{"readings": []}'))
    return out


def _rejected(message: Message) -> bool:
    try:
        decode_message(InboundMessage(message[0], message[1], time.time()))
    except Rejected:
        return True
    return False


def test_bad_payloads_are_dead_lettered_while_good_traffic_flows(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    runners = ["fz-a", "fz-b"]
    for runner in runners:
        pipeline.runner(runner)
    rng = random.Random(3)
    # cases whose topic the ACL refuses anyway (unknown leaf, alerts) or that only fail for
    # their original topic (an uppercase runner id) stay out
    golden = [m for r in runners for m in _golden_failures(r)
              if m[0].split("/")[-1] in ("samples", "session", "rsc", "pain", "injury")
              and _rejected(m)]
    bad = list(golden)
    leaves = ["watch/samples", "watch/session", "pod/rsc", "pain", "injury"]
    while len(bad) < 300:
        runner = rng.choice(runners)
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        bad.append((f"runners/{runner}/{rng.choice(leaves)}", noise))
    assert all(_rejected(m) for m in bad)
    good = [m for r in runners for m in sample_batches(r, "watch", 60, time.time() - 7200)]
    good += [pain_report(r, seq=21, t=time.time() - 90) for r in runners]
    # a whole run synced as one batch: over the Kafka client's default 1 MiB request limit
    whole_run = big_batch("fz-a", "sync", 15_000, time.time() - 5 * 3600)
    assert len(whole_run[1]) > 1024 * 1024
    good.append(whole_run)
    mixed = [*bad, *good]
    rng.shuffle(mixed)
    started = time.monotonic()
    publish(settings, mixed)

    def letters() -> list[dict[str, Any]]:
        return dead_letters_of(settings, set(runners))

    found = wait_for(lambda: len(letters()) >= len(bad) and letters(), timeout=90,
                     what=f"{len(bad)} dead letters")
    assert len(found) == len(bad)
    assert Counter((d["topic"], base64.b64decode(d["raw_b64"])) for d in found) == Counter(bad)
    for letter in found:
        assert letter["reason"] and letter["stage"] == "ingest"
        assert letter["runner"] in runners and isinstance(letter["at"], float)
        device = letter["topic"].split("/")[2] if letter["topic"].count("/") == 3 else None
        assert letter["device"] == (device if device and re.fullmatch(
            r"[a-z0-9][a-z0-9_-]{0,63}", device) else None)
    for runner in runners:
        wait_windows(pipeline, runner, 61 if runner == "fz-a" else 60)
        query = f"SELECT count(score) FROM pain WHERE runner = '{runner}'"
        wait_for(lambda: count(pipeline, query) == 1, timeout=30,  # noqa: B023 - used at once
                 what=f"the pain report of {runner}")
    took = time.monotonic() - started
    assert all(c.alive() for c in pipeline.components.values()), pipeline.logs()
    reasons = Counter(d["reason"].split(":")[0] for d in found)
    print(f"\nfuzz: {len(bad)} bad ({len(golden)} golden) + {len(good)} good (one of "
          f"{len(whole_run[1]) / 2**20:.1f} MiB) in {took:.1f} s; top reasons "
          f"{reasons.most_common(4)}")

    # `stridewatch deadletters` shows them readably
    env = {**settings_env(settings), "COLUMNS": "1000"}
    shown = subprocess.run([sys.executable, "-m", "stridewatch.cli", "deadletters",
                            "--limit", "500"], env=env, capture_output=True, text=True,
                           timeout=60, check=True, cwd=ROOT)
    TOOL_OUTPUT.append(shown.stdout + shown.stderr)
    total = re.search(r"(\d+) dead letters in (\S+);", shown.stdout)
    assert total is not None, shown.stdout[-2000:]
    assert int(total.group(1)) >= len(bad) and total.group(2) == settings.deadletter_topic
    plain = [d for d in found if "[" not in d["reason"]]  # rich reads [..] as markup
    rows = shown.stdout.splitlines()
    for letter in rng.sample(plain, 10):
        assert any(letter["reason"][:40] in row and letter["topic"] in row for row in rows), (
            letter, shown.stdout[-3000:])


# ------------------------------------------------------------------------------ scale-out
def test_two_bridges_share_the_load_and_count_every_message_once(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    runners = ["so-a", "so-b", "so-c", "so-d"]
    for runner in runners:
        pipeline.runner(runner)
    second = Component(settings, "bridge", "--client-id", "bridge-2").start()
    try:
        second.wait_for_log("subscribed to", timeout=60)
        start_t = time.time() - 3 * 3600
        messages = [m for r in runners for m in sample_batches(r, "pod", 100, start_t)]
        random.Random(5).shuffle(messages)
        publish(settings, messages)
        for runner in runners:
            wait_windows(pipeline, runner, 100, timeout=90)
    finally:
        second.stop()
    found = events_of(settings, set(runners))
    by_bridge = Counter(dict(r.headers).get(BRIDGE_HEADER, b"?").decode() for _, r in found)
    distinct = {(e.runner, e.seq) for e, _ in found}
    assert len(distinct) == len(messages) == 400
    assert set(by_bridge) == {settings.bridge_client_id, "bridge-2"}, by_bridge
    assert min(by_bridge.values()) >= 40, by_bridge  # round robin: near 200 each
    log = second.log_file.read_text()
    stopped = re.search(r"bridge bridge-2 stopped: (\d+) received, (\d+) delivered.*"
                        r"max (\d+) waiting for Kafka, max (\d+) in flight", log)
    assert stopped is not None, second.log_tail()
    assert int(stopped.group(2)) == by_bridge["bridge-2"]
    # the bridge's own bound holds even where the broker overshoots the receive maximum
    assert int(stopped.group(3)) <= MAX_IN_FLIGHT
    print(f"\nscale-out: 400 published, Kafka records per bridge {dict(by_bridge)}, "
          f"{len(found) - len(distinct)} duplicates, bridge-2 log: {stopped.group(0)}")

    # bridge-2 left (unsubscribed and drained): new messages all go to the one that runs
    later = [m for r in runners for m in sample_batches(r, "pod2", 10, start_t)]
    publish(settings, later)
    for runner in runners:
        wait_windows(pipeline, runner, 110)


# ------------------------------------------------------------------------------ outage
class BareTansu(Tansu):
    """The local broker without the stack's topic creation at start (same pid file, so the
    stack stops it as usual)."""

    def after_start(self) -> None:
        pass


def test_nothing_is_lost_while_kafka_is_away(pipeline: Pipeline) -> None:
    """Kafka stops, runners keep publishing; after it returns every message counts once.

    The local broker is memory-only: its restart forgets topics, consumer groups and the
    worker's changelog, so the worker is restarted once it is back (documented in
    docs/ingest.md). The bridge, the sink and the notifier keep running.
    """
    settings, stack = pipeline.settings, pipeline.stack
    runners = ["out-a", "out-b", "out-c"]
    passwords = {r: pipeline.runner(r) for r in runners}
    inboxes = {r: AlertInbox(settings, r, passwords[r], f"runners/{r}/alerts")
               for r in runners}
    now = time.time()
    batches = {r: sample_batches(r, "watch", n, now - 4 * 3600)
               for r, n in zip(runners, (67, 67, 66), strict=True)}
    pains = {r: [pain_report(r, seq=1, t=now - 30 * 3600), pain_report(r, seq=2, t=now - 600)]
             for r in runners}
    # runners interleaved at random, each runner's messages in their own order (a pain
    # report older than one already processed would not alert: see the module docstring)
    messages = interleave([batches[r] + pains[r] for r in runners], random.Random(9))
    bridge, worker = pipeline.components["bridge"], pipeline.components["worker"]
    log_start = len(bridge.log_file.read_text())
    try:
        stack.kafka.stop()
        down_at = time.monotonic()
        publish(settings, messages)  # the broker acknowledged every one of them
        bridge.wait_for_log("Kafka unavailable for", timeout=40)
        # longer than 1.5 x the MQTT keepalive (30 s): the bridge's session must survive
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        # a restarted broker in production has nobody to pre-create the topics (the local
        # stack's start would): the bridge creates what is missing before it produces
        BareTansu(settings).start()
        outage_s = time.monotonic() - down_at
        bridge.wait_for_log("Kafka is back after", timeout=60)
        worker.stop(hard=True)
        worker.start()
        for runner in runners:
            wait_windows(pipeline, runner, len(batches[runner]), timeout=120)
        for runner in runners:
            inbox = inboxes[runner]
            wait_for(lambda: len(inbox.received()) >= 2,  # noqa: B023 - used at once
                     timeout=60, what=f"two pain alerts for {runner}")
        time.sleep(3)  # a duplicate alert would have come right behind
        alerts = {r: [a["rule"] for a in inboxes[r].received()] for r in runners}
    finally:
        for inbox in inboxes.values():
            inbox.close()
    assert alerts == {r: ["pain_after_run", "pain_after_run"] for r in runners}
    for runner in runners:
        assert count(pipeline, f"SELECT count(score) FROM pain WHERE runner = '{runner}'") == 2
        assert count(pipeline, f"SELECT count(message) FROM alert WHERE runner = "
                               f"'{runner}'") == 2
    found = events_of(settings, set(runners))
    copies = Counter((e.runner, e.dedup_stream, e.seq) for e, _ in found)
    assert len(copies) == len(messages)

    log = bridge.log_file.read_text()[log_start:]
    assert re.search(rf"created topics \[[^]]*'{settings.deadletter_topic}'", log), log[-3000:]
    held = [int(n) for n in re.findall(
        r"Kafka unavailable for \d+ s \(.*\): (\d+) messages in flight", log)]
    assert held and max(held) == MAX_IN_FLIGHT, held  # bounded, and the bound was reached
    back = re.search(r"Kafka is back after ([\d.]+) s", log)
    assert back is not None
    assert "MQTT disconnected" not in log
    mosquitto_log = stack.mosquitto.log_file.read_text()
    assert f"Client {settings.bridge_client_id} has exceeded timeout" not in mosquitto_log
    assert mosquitto_log.count(f"as {settings.bridge_client_id} ") == 1  # connected once
    assert bridge.alive()
    arrived = sum(windows(pipeline, r) for r in runners) + 2 * len(runners)
    print(f"\noutage {outage_s:.0f} s: {len(messages)} published while Kafka was away, "
          f"{arrived} arrived downstream ({sum(copies.values())} Kafka records, "
          f"{sum(copies.values()) - len(copies)} duplicates), bridge held at most "
          f"{max(held)} in flight (bound {MAX_IN_FLIGHT}), back after {back.group(1)} s of "
          f"retrying, windows {[windows(pipeline, r) for r in runners]}, alerts {alerts}")


# ------------------------------------------------------------------------------ secrets
def test_no_password_in_any_log(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    secrets = [*json.loads(settings.service_secrets_file.read_text()).values(),
               *json.loads(settings.runner_secrets_file.read_text()).values(), *EXTRA_SECRETS]
    assert service_password(settings, "bridge") in secrets and len(secrets) > 10
    logs = sorted(settings.data_dir.resolve().rglob("*.log"))
    names = {p.name for p in logs}
    assert {"bridge.log", "worker.log", "sink.log", "notify.log", "mosquitto.log",
            "kafka.log", "bridge-client-id-bridge-2.log"} <= names, names
    texts = {str(p): p.read_text(errors="replace") for p in logs}
    texts["captured (this process)"] = "\n".join(CAPTURED.lines)
    texts["command output"] = "\n".join(TOOL_OUTPUT)
    assert all(texts[str(p)] for p in logs if p.parent.name == "logs")
    assert texts["captured (this process)"] and texts["command output"]
    leaks = [(where, secret[:4] + "…") for where, text in texts.items()
             for secret in secrets if secret in text]
    assert leaks == []
