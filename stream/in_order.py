"""The worker processes every record of a partition in offset order, with none left out,
and commits only what it processed.

Faust's consumer can leave records out after a seek (a rebalance, a recovered table, a
restart): a batch fetched before the seek is still handed out after it, records of a
partition it counts as not active yet are dropped while they move the fetch position on,
and its commit takes missing offsets for a compacted topic's holes and commits past
them. Those events would never be processed and never read again. The events topic is
never compacted, so a hole there is always such a skip.

So the worker keeps, per partition, the next offset it must process (from the committed
offset after each seek, then the last processed record plus one). A record after a hole
sends the consumer back to the hole; the records after it are skipped until the re-read
brings the hole's record (they come again behind it). Commits go up to the last record
processed in order, never past it. Records read twice are harmless: the state counts each
device sequence once. Faust's own drop of records below the last offset it handed out is
off for these topics: a batch fetched before a seek back moves that offset on, and the
re-read records would be dropped.

A hole at a partition's end has no record after it to show it: the records handed out
before a seek may simply not come again. So while the worker has had no record for a
few seconds, a partition whose end is past the next record to process is sought back to
it. Records skipped before the first seek of an assignment, with nothing committed to
seek to, are read again from the first of them.

A hole that stays after a few seeks back is checked against the topic's start: if the
records are gone (past the topic's retention), that is logged as an error and the records
after it are processed; if Kafka still holds them, the worker keeps reading them again.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Set
from dataclasses import dataclass, replace
from typing import Any, Literal

from faust.transport.drivers.aiokafka import Consumer as FaustKafkaConsumer
from faust.types import TP

from base import ops

log = logging.getLogger("stridewatch.stream")
SEEKS_BEFORE_GIVING_UP = 3  # seeks back to one hole before it is taken as real
SEEK_AGAIN_AFTER_S = 5.0  # a hole still there this long after a seek back: seek again
IDLE_BEFORE_REWIND_S = 5.0  # no record this long while a partition has unprocessed ones
CHECK_IDLE_EVERY_S = 1.0

Verdict = Literal["process", "seek_back", "skip", "past_lost_records"]


@dataclass(frozen=True)
class PartitionOrder:
    """Where one partition's processing stands: ``next_offset`` is the record to process
    next (None: nothing committed, the first record read starts); ``hole`` the offset
    last sought back to, how many times, and when last (monotonic seconds);
    ``behind_since`` when the worker, idle, first saw the partition end past it."""

    next_offset: int | None = None
    hole: int | None = None
    seeks: int = 0
    sought_at: float = 0.0
    behind_since: float | None = None


def check_offset(order: PartitionOrder, offset: int, now: float
                 ) -> tuple[PartitionOrder, Verdict]:
    """The record at ``offset`` reached the worker at ``now``: process it; skip it (read
    already, or waiting behind a hole for the re-read); seek back to the hole; or, once
    the same hole stayed through every allowed seek, process it past the lost records."""
    expected = order.next_offset
    if expected is None or offset == expected:
        return PartitionOrder(offset + 1), "process"
    if offset < expected:
        return order, "skip"  # processed before this seek: it comes again behind a rewind
    if order.hole != expected:
        return PartitionOrder(expected, expected, 1, now), "seek_back"
    if now - order.sought_at < SEEK_AGAIN_AFTER_S:
        return order, "skip"  # fetched before the seek back: it comes again
    if order.seeks < SEEKS_BEFORE_GIVING_UP:
        return PartitionOrder(expected, expected, order.seeks + 1, now), "seek_back"
    return PartitionOrder(offset + 1), "past_lost_records"


def check_idle(order: PartitionOrder, end_offset: int, idle_s: float, now: float
               ) -> tuple[PartitionOrder, bool]:
    """The worker has had no record for ``idle_s`` at ``now`` and the partition ends at
    ``end_offset`` (the offset its next record will get): whether to seek back to the next
    record to process, left out at the partition's end. Only once it stayed behind for
    ``IDLE_BEFORE_REWIND_S`` (a record just written is on its way), then once a
    ``SEEK_AGAIN_AFTER_S``."""
    expected = order.next_offset
    if expected is None or end_offset <= expected or idle_s < IDLE_BEFORE_REWIND_S:
        return replace(order, behind_since=None), False
    if order.behind_since is None:
        return replace(order, behind_since=now), False
    if (now - order.behind_since < IDLE_BEFORE_REWIND_S
            or now - order.sought_at < SEEK_AGAIN_AFTER_S):
        return order, False
    return replace(order, sought_at=now), True


class _NoReadOffsetFor(defaultdict[TP, int | None]):
    """Faust's record of the last offset it handed out per partition, with none for the
    in-order topics. Faust drops a record below that offset as read already; after a seek
    back, the batch fetched before it is still handed out and moves that offset on, so the
    re-read records would be dropped, and the hole never filled. The worker skips what it
    processed itself."""

    def __init__(self, topics: frozenset[str]) -> None:
        super().__init__(lambda: None)
        self.topics = topics

    def __getitem__(self, tp: TP) -> int | None:
        return None if tp.topic in self.topics else super().__getitem__(tp)


def _records(first: int, last: int) -> str:
    return f"record {first} was" if first == last else f"records {first}-{last} were"


class InOrderConsumer(FaustKafkaConsumer):
    """Faust's Kafka consumer that commits the topics in ``in_order_topics`` only up to
    the records the worker processed in order (see :meth:`in_order`)."""

    def __init__(self, *args: Any, in_order_topics: frozenset[str] = frozenset(),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_order_topics = in_order_topics
        self._read_offset = _NoReadOffsetFor(in_order_topics)
        # only partitions sought to since their assignment: records before that come again
        self._order: dict[TP, PartitionOrder] = {}
        self._done: dict[TP, int] = {}  # the offset after the last record processed
        self._awaiting_seek: set[TP] = set()  # assigned, not sought to yet
        self._skipped_before_seek: dict[TP, int] = {}  # the first offset skipped so
        self._last_record_at = 0.0  # monotonic seconds: when any record last came
        self._in_hand: set[tuple[TP, int]] = set()  # let through, not processed yet

    async def seek_to_committed(self) -> Mapping[TP, int]:
        offsets: Mapping[TP, int] = await super().seek_to_committed()
        for tp, offset in offsets.items():
            if tp.topic in self.in_order_topics:
                self._awaiting_seek.discard(tp)
                was = self._order.get(tp, PartitionOrder())
                start = offset if offset is not None and offset >= 0 else None
                self._last_record_at = time.monotonic()  # a fresh start: time to read
                skipped = self._skipped_before_seek.pop(tp, None)
                if start is None and skipped is not None:
                    # nothing committed, so no seek: read the skipped records again
                    start = skipped
                    await self.seek(tp, skipped)
                self._order[tp] = PartitionOrder(start, was.hole, was.seeks, was.sought_at)
        return offsets

    @FaustKafkaConsumer.timer(CHECK_IDLE_EVERY_S)
    async def _rewind_when_idle(self) -> None:
        if not self.flow_active or self.app.rebalancing:
            return
        now = time.monotonic()
        # a record in hand is work going on, not idleness
        idle_s = 0.0 if self._in_hand else now - self._last_record_at
        for tp in [tp for tp in self._order if tp not in self._awaiting_seek]:
            before, end = self._order.get(tp), self._known_end(tp)
            if before is None or end is None:
                continue  # revoked meanwhile, or nothing fetched yet
            self._order[tp], rewind = check_idle(before, end, idle_s, now)
            start = before.next_offset
            if rewind and start is not None:
                ops.inc("stridewatch_worker_consumer_rewinds_total")
                log.warning("partition %d of %s: %s read and not processed; reading from %d "
                            "again", tp.partition, tp.topic, _records(start, end - 1), start)
                await self.seek(tp, start)

    def _known_end(self, tp: TP) -> int | None:
        """The partition's end as the last fetch saw it (no request to the broker): a
        record left out was fetched, so it counts there."""
        try:
            end = self.highwater(tp)
        except Exception:  # not assigned any more; the next check looks again
            return None
        return int(end) if end is not None else None

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        for tp in revoked:
            self._order.pop(tp, None)
            self._done.pop(tp, None)
            self._awaiting_seek.discard(tp)
            self._skipped_before_seek.pop(tp, None)
        self._in_hand = {(tp, offset) for tp, offset in self._in_hand if tp not in revoked}
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Set[TP], generation_id: int = 0
                                     ) -> None:
        self._awaiting_seek.update(tp for tp in assigned if tp.topic in self.in_order_topics
                                   and tp not in self._order)
        await super().on_partitions_assigned(assigned, generation_id)

    async def in_order(self, tp: TP, offset: int, now: float) -> bool:
        """Whether the worker processes the record at ``offset`` of ``tp`` now (else it
        skips it: it comes again); seeks back over a hole."""
        if tp.topic not in self.in_order_topics:
            return True
        self._last_record_at = now
        if tp in self._awaiting_seek:
            # before the seek of this assignment: the seek brings it again
            self._skipped_before_seek[tp] = min(offset, self._skipped_before_seek.get(tp,
                                                                                     offset))
            return False
        before = self._order.get(tp)
        if before is None:
            return True  # never assigned here (a record handed in directly, as in tests)
        self._order[tp], verdict = check_offset(before, offset, now)
        earliest = 0
        if verdict == "past_lost_records" and before.next_offset is not None:
            earliest = (await self.earliest_offsets(tp)).get(tp, 0)
            if earliest <= before.next_offset:  # still in Kafka: not lost, read it again
                self._order[tp] = PartitionOrder(before.next_offset, before.next_offset, 1,
                                                 now)
                verdict = "seek_back"
        if verdict in ("process", "past_lost_records"):
            self._in_hand.add((tp, offset))
        if verdict == "seek_back" and before.next_offset is not None:
            ops.inc("stridewatch_worker_consumer_rewinds_total")
            log.warning("partition %d of %s: record %d came before %s processed; reading "
                        "from %d again", tp.partition, tp.topic, offset,
                        _records(before.next_offset, offset - 1), before.next_offset)
            await self.seek(tp, before.next_offset)
        elif verdict == "past_lost_records":
            log.error("partition %d of %s: %s not in Kafka any more (the partition starts "
                      "at %d: past the topic's retention); going on from %d", tp.partition,
                      tp.topic, _records(before.next_offset or 0, offset - 1), earliest,
                      offset)
        return verdict in ("process", "past_lost_records")

    def processed(self, tp: TP, offset: int) -> None:
        """The worker is done with the record at ``offset`` (its outputs in Kafka, its
        state in the table): a commit may go past it."""
        self._in_hand.discard((tp, offset))
        if tp.topic in self.in_order_topics and tp in self._order:
            self._done[tp] = max(offset + 1, self._done.get(tp, 0))

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic not in self.in_order_topics:
            new: int | None = super()._new_offset(tp)
            return new
        # the acks Faust keeps are not used here: drop those below the processed ones
        done = self._done.get(tp)
        acked = self._acked[tp]
        if acked:
            keep = [o for o in acked if done is not None and o >= done]
            self._acked_index[tp].difference_update(o for o in acked if o not in keep)
            acked[:] = keep
        return done
