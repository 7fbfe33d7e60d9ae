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
device sequence once.

A hole that stays after a few seeks back is real (the records are past the topic's
retention): it is logged as an error and the records after it are processed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Literal

from faust.transport.drivers.aiokafka import Consumer as FaustKafkaConsumer
from faust.types import TP

from base import ops

log = logging.getLogger("stridewatch.stream")
SEEKS_BEFORE_GIVING_UP = 3  # seeks back to one hole before it is taken as real
SEEK_AGAIN_AFTER_S = 5.0  # a hole still there this long after a seek back: seek again

Verdict = Literal["process", "seek_back", "skip", "past_lost_records"]


@dataclass(frozen=True)
class PartitionOrder:
    """Where one partition's processing stands: ``next_offset`` is the record to process
    next (None: nothing committed, the first record read starts); ``hole`` the offset
    last sought back to, how many times, and when last (monotonic seconds)."""

    next_offset: int | None = None
    hole: int | None = None
    seeks: int = 0
    sought_at: float = 0.0


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


class InOrderConsumer(FaustKafkaConsumer):
    """Faust's Kafka consumer that commits the topics in ``in_order_topics`` only up to
    the records the worker processed in order (see :meth:`in_order`)."""

    def __init__(self, *args: Any, in_order_topics: frozenset[str] = frozenset(),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_order_topics = in_order_topics
        # only partitions sought to since their assignment: records before that come again
        self._order: dict[TP, PartitionOrder] = {}
        self._done: dict[TP, int] = {}  # the offset after the last record processed
        self._awaiting_seek: set[TP] = set()  # assigned, not sought to yet

    async def seek_to_committed(self) -> Mapping[TP, int]:
        offsets: Mapping[TP, int] = await super().seek_to_committed()
        for tp, offset in offsets.items():
            if tp.topic in self.in_order_topics:
                self._awaiting_seek.discard(tp)
                was = self._order.get(tp, PartitionOrder())
                start = offset if offset is not None and offset >= 0 else None
                self._order[tp] = PartitionOrder(start, was.hole, was.seeks, was.sought_at)
        return offsets

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        for tp in revoked:
            self._order.pop(tp, None)
            self._done.pop(tp, None)
            self._awaiting_seek.discard(tp)
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
        if tp in self._awaiting_seek:
            return False  # before the seek of this assignment: the seek brings it again
        before = self._order.get(tp)
        if before is None:
            return True  # never assigned here (a record handed in directly, as in tests)
        self._order[tp], verdict = check_offset(before, offset, now)
        if verdict == "seek_back" and before.next_offset is not None:
            ops.inc("stridewatch_worker_consumer_rewinds_total")
            log.warning("partition %d of %s: record %d came before %d-%d were processed; "
                        "reading from %d again", tp.partition, tp.topic, offset,
                        before.next_offset, offset - 1, before.next_offset)
            await self.seek(tp, before.next_offset)
        elif verdict == "past_lost_records":
            log.error("partition %d of %s: records %d-%d are not in Kafka any more (past "
                      "the topic's retention?); going on from %d", tp.partition, tp.topic,
                      before.next_offset, offset - 1, offset)
        return verdict in ("process", "past_lost_records")

    def processed(self, tp: TP, offset: int) -> None:
        """The worker is done with the record at ``offset`` (its outputs in Kafka, its
        state in the table): a commit may go past it."""
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
