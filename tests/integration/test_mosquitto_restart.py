"""Mosquitto restarted, with persistence, while devices publish and the bridge is down:
the QoS 1 messages queued for the bridge's session arrive, each stored once.

The bridge's anchor instance keeps a persistent session (clean start off, a session
expiry) when it stops, so the broker queues what devices publish for it; persistence
writes the session and its queue to ``mosquitto.db`` when Mosquitto stops and reads them
back at start.

Mosquitto 2.0 (2.0.11 here) restores the queued messages of a session with a shared
subscription but not the shared subscription itself: until the bridge connects again
(and subscribes again, as it does on every connect), what devices publish has no
subscriber and is answered "No matching subscribers" (PUBACK reason 16), so it is gone.
The first test proves both halves with counts; the second proves that one bridge with
plain subscriptions (``STRIDEWATCH_BRIDGE_SHARE_GROUP=""``) keeps everything.

The stacks run over TLS with the plain listener closed, so the bridge, the notifier and
the devices' publisher all connect through the TLS listener.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from base.settings import Settings
from ingest.publisher import RunnerPublisher
from ingest.simulator import Message
from tests.conftest import free_port, new_stack_settings, wait_for
from tests.integration.conftest import Pipeline, own_pipeline
from tests.integration.test_ingest import events_of, sample_batches, wait_windows, windows

pytestmark = pytest.mark.integration

RUNNER = "it-mq-restart"
# a fixed morning (the verdict must not depend on the day it runs; retention is INF so
# InfluxDB keeps points of any age)
START_T = datetime(2026, 3, 2, 7, 0, tzinfo=UTC).timestamp()
# sample batches published before and after the broker restart, and once the bridge is back
BEFORE, AFTER, LATER = 60, 40, 20


def tls_settings(tmp_path_factory: pytest.TempPathFactory, **overrides: object) -> Settings:
    return new_stack_settings(tmp_path_factory, mqtt_tls=True, mqtt_tls_port=free_port(),
                              mqtt_plain_listener=False, influx_retention="INF", **overrides)


def publish_routed(settings: Settings, messages: list[Message]) -> int:
    """Publish as the runner; returns how many the broker had no subscriber for."""
    with RunnerPublisher(settings) as publisher:
        publisher.publish_all(messages)
        publisher.flush()
        return publisher.unrouted


def bridge_down_broker_restarted(pipe: Pipeline, before: list[Message],
                                 after: list[Message]) -> tuple[int, int]:
    """Stop the bridge, publish ``before``, restart Mosquitto on the same data dir,
    publish ``after``, start the bridge; returns the unrouted counts of both."""
    mosquitto, bridge = pipe.stack.mosquitto, pipe.components["bridge"]
    database = mosquitto.dir / "data" / "mosquitto.db"
    bridge.stop()  # SIGTERM: the anchor leaves its session and subscription behind
    assert not bridge.alive()
    unrouted_before = publish_routed(pipe.settings, before)
    old_pid = mosquitto.pid()
    mosquitto.stop()  # SIGTERM: Mosquitto writes its database before it exits
    assert database.is_file() and database.stat().st_size > 0
    mosquitto.start()
    assert mosquitto.pid() not in (None, old_pid)
    unrouted_after = publish_routed(pipe.settings, after)
    assert windows(pipe, RUNNER) == 0  # nothing has gone past the broker yet
    subscribed = bridge.log_file.read_text(errors="replace").count("subscribed to")
    bridge.start()
    wait_for(lambda: bridge.log_file.read_text(errors="replace").count("subscribed to")
             > subscribed, timeout=60, what="the bridge subscribed again")
    time.sleep(1)  # the SUBACK follows the log line
    return unrouted_before, unrouted_after


def stored_seqs(pipe: Pipeline) -> list[int]:
    """The sequence numbers of the runner's events in Kafka; each must be there once."""
    copies = Counter((e.dedup_stream, e.seq) for e, _ in events_of(pipe.settings, {RUNNER}))
    assert max(copies.values()) == 1, "no message reached Kafka twice"
    return sorted(seq for _, seq in copies)


def test_shared_subscription_queue_survives_a_restart_but_not_the_subscription(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    batches = sample_batches(RUNNER, "watch", BEFORE + AFTER + LATER, START_T)
    before, after, later = (batches[:BEFORE], batches[BEFORE:BEFORE + AFTER],
                            batches[BEFORE + AFTER:])
    with own_pipeline(tls_settings(tmp_path_factory)) as pipe:
        pipe.runner(RUNNER)
        unrouted = bridge_down_broker_restarted(pipe, before, after)
        # queued before the restart: routed; after it, until the bridge subscribes again:
        # no subscriber, every one of them counted by the publisher
        assert unrouted == (0, AFTER)
        assert publish_routed(pipe.settings, later) == 0
        wait_windows(pipe, RUNNER, BEFORE + LATER, timeout=120)
        seqs = stored_seqs(pipe)
        assert seqs == [m for m in range(len(batches)) if not BEFORE <= m < BEFORE + AFTER]
        time.sleep(2)
        assert windows(pipe, RUNNER) == BEFORE + LATER  # and no point twice
    print(f"\nshared subscription: {BEFORE} queued before the restart arrived, {AFTER} "
          f"published after it unrouted (PUBACK 16), {LATER} after the bridge returned "
          f"arrived; {len(seqs)} events in Kafka, none twice")


def test_one_bridge_with_plain_subscriptions_keeps_everything_across_a_restart(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    batches = sample_batches(RUNNER, "watch", BEFORE + AFTER, START_T)
    with own_pipeline(tls_settings(tmp_path_factory, bridge_share_group="")) as pipe:
        pipe.runner(RUNNER)
        # only the TLS listener is open: the services that connected did so over TLS
        log = pipe.stack.mosquitto.log_file
        wait_for(lambda: all(f"u'{user}'" in log.read_text(errors="replace")
                             for user in ("svc-bridge", "svc-notifier")),
                 timeout=30, what="the bridge and the notifier connected over TLS")
        unrouted = bridge_down_broker_restarted(pipe, batches[:BEFORE], batches[BEFORE:])
        assert unrouted == (0, 0)  # the restored session still holds the subscription
        wait_windows(pipe, RUNNER, BEFORE + AFTER, timeout=120)
        assert stored_seqs(pipe) == list(range(BEFORE + AFTER))  # sent = stored
        time.sleep(2)
        assert windows(pipe, RUNNER) == BEFORE + AFTER  # and no point twice
    print(f"\nplain subscription: {BEFORE} before and {AFTER} after the restart, all "
          f"{BEFORE + AFTER} stored once")
