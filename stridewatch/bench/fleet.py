"""A shard of the live part's runners, as its own process.

paho's network loop uses ``select()``, which cannot watch file descriptors above 1023, and
every client holds three: one process tops out near 330 runners. So the live part starts
one shard per :data:`RUNNERS_PER_SHARD` runners. A shard plans the same workload as the
parent (it is deterministic), connects its runners with their own credentials, publishes
one warm-up message each, subscribes each to its own alerts topic, and says ``ready``.
On ``go <T0>`` (stdin) it publishes its messages on the shared schedule (runner i of N at
T0 + round + i/N, wall clock); on ``stop`` it prints what it saw as one JSON line.

``python -m stridewatch.bench.fleet --runners N --seconds S --end-t E --shard I --shards K
--client-prefix P`` (settings from ``STRIDEWATCH_*``: the stack's, for the passwords).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from base.settings import load_settings
from ingest import topics
from stridewatch.bench.collector import WARMUP_SESSION
from stridewatch.bench.workload import plan_workload

RUNNERS_PER_SHARD = 250


def warmup_body(t: float) -> bytes:
    return json.dumps({"seq": round(t * 1000), "session_id": WARMUP_SESSION,
                       "phase": "start", "t": t, "sport": "walking"}).encode()


def main(argv: list[str] | None = None) -> None:
    from ingest.publisher import RunnerPublisher
    from stridewatch.bench.live import AlertInbox

    parser = argparse.ArgumentParser(prog="python -m stridewatch.bench.fleet")
    parser.add_argument("--runners", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--end-t", type=float, required=True)
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--client-prefix", required=True)
    args = parser.parse_args(argv)
    settings = load_settings()
    workload = plan_workload(args.runners, args.seconds, args.end_t)
    order = {r: i for i, r in enumerate(workload.runners)}
    mine = {r for r, i in order.items() if i % args.shards == args.shard}
    n = len(workload.runners)
    inbox = AlertInbox(clock=time.time)
    sent: dict[int, float] = {}
    behind = 0.0
    with RunnerPublisher(settings, client_prefix=args.client_prefix) as publisher:
        # an hour before the run: inside InfluxDB's retention, apart from the workload
        body = warmup_body(workload.end_t - workload.seconds - 3600)
        publisher.publish_all((topics.device_topic(r, "warmup", "session"), body)
                              for r in sorted(mine))
        publisher.flush()
        for runner, client in publisher.clients.items():
            client.on_message = inbox.on_message
            client.subscribe(topics.alerts_topic(runner), qos=1)
        print("ready", flush=True)
        command = sys.stdin.readline().split()
        if command[:1] != ["go"]:
            return
        start = float(command[1])
        unrouted_before = publisher.unrouted
        for i, m in enumerate(workload.messages):
            if m.runner not in mine:
                continue
            ahead = start + m.round + order[m.runner] / n - time.time()
            if ahead > 0:
                time.sleep(ahead)
            else:
                behind = max(behind, -ahead)
            sent[i] = time.time()
            publisher.publish(m.topic, m.payload)
        publisher.flush()
        print(json.dumps({"flushed": time.time()}), flush=True)
        # "report" until the parent has every alert it waits for, then "stop"
        while sys.stdin.readline().strip() == "report":
            print(json.dumps({"alert_ids": sorted(inbox.ids())}), flush=True)
        print(json.dumps({"sent": sent, "behind_s": behind,
                          "unrouted": publisher.unrouted - unrouted_before,
                          "alerts": list(inbox.arrivals.values())}), flush=True)


if __name__ == "__main__":
    main()
