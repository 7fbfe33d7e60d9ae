"""The worker's processing order: a record after a hole sends the consumer back to the
hole, and what comes before the re-read is skipped; records left out at a partition's end
are read again once the worker stays idle."""

from __future__ import annotations

import pytest

from stream.in_order import (
    IDLE_BEFORE_REWIND_S,
    SEEK_AGAIN_AFTER_S,
    SEEKS_BEFORE_GIVING_UP,
    PartitionOrder,
    Verdict,
    check_idle,
    check_offset,
)

NOW = 1000.0
FRESH = PartitionOrder()  # nothing committed
AT_10 = PartitionOrder(10)  # committed offset 10: record 10 is the next one
SOUGHT = PartitionOrder(10, 10, 1, NOW)  # sought back to 10 at NOW


@pytest.mark.parametrize(("order", "offset", "now", "want_order", "verdict"), [
    # nothing committed: whatever comes first starts the partition
    (FRESH, 0, NOW, PartitionOrder(1), "process"),
    (FRESH, 57, NOW, PartitionOrder(58), "process"),
    # the expected record, then the next one
    (AT_10, 10, NOW, PartitionOrder(11), "process"),
    # a record past a hole (a batch fetched before the seek): back to the hole
    (AT_10, 11, NOW, SOUGHT, "seek_back"),
    (AT_10, 15, NOW, SOUGHT, "seek_back"),
    # a record processed before (it comes again behind a rewind): skipped
    (AT_10, 7, NOW, AT_10, "skip"),
    # after the seek back, what was fetched before it is skipped
    (SOUGHT, 16, NOW + 1, SOUGHT, "skip"),
    # the re-read brings the hole's record: processing goes on, the count starts again
    (SOUGHT, 10, NOW + 1, PartitionOrder(11), "process"),
    # still the hole well after the seek: seek again, counted
    (SOUGHT, 15, NOW + SEEK_AGAIN_AFTER_S, PartitionOrder(10, 10, 2,
                                                         NOW + SEEK_AGAIN_AFTER_S),
     "seek_back"),
    # another hole than the last: its own count
    (PartitionOrder(20, 10, 3, NOW), 25, NOW, PartitionOrder(20, 20, 1, NOW), "seek_back"),
    # the same hole through every allowed seek: the records are gone, go on past them
    (PartitionOrder(10, 10, SEEKS_BEFORE_GIVING_UP, NOW), 15, NOW + SEEK_AGAIN_AFTER_S,
     PartitionOrder(16), "past_lost_records"),
])
def test_check_offset(order: PartitionOrder, offset: int, now: float,
                      want_order: PartitionOrder, verdict: Verdict) -> None:
    assert check_offset(order, offset, now) == (want_order, verdict)


def test_a_stale_batch_after_a_seek_is_processed_once_in_order() -> None:
    # committed 10; the queue holds 13, 14 fetched before the seek; the seek back brings
    # 10-14: each record is processed once, in offset order
    order = AT_10
    processed: list[int] = []
    for offset in (13, 14, 10, 11, 12, 13, 14):
        order, verdict = check_offset(order, offset, NOW)
        if verdict == "process":
            processed.append(offset)
    assert processed == [10, 11, 12, 13, 14]
    assert order == PartitionOrder(15)


def test_a_hole_that_stays_is_passed_after_the_allowed_seeks() -> None:
    # records 10-14 are past retention: each read after a seek starts at 15
    verdicts: list[Verdict] = []
    order, now = AT_10, NOW
    for _ in range(SEEKS_BEFORE_GIVING_UP + 1):
        order, verdict = check_offset(order, 15, now)
        verdicts.append(verdict)
        now += SEEK_AGAIN_AFTER_S
    assert verdicts == ["seek_back"] * SEEKS_BEFORE_GIVING_UP + ["past_lost_records"]
    assert order == PartitionOrder(16)


IDLE = IDLE_BEFORE_REWIND_S
BEHIND = PartitionOrder(10, behind_since=NOW)  # next is 10; seen behind since NOW


@pytest.mark.parametrize(("order", "end_offset", "idle_s", "now", "want_order", "rewind"), [
    # nothing past the next record: nothing to read again
    (AT_10, 10, IDLE, NOW, AT_10, False),
    (BEHIND, 10, IDLE, NOW + IDLE, AT_10, False),
    # records flow: the partition may be behind, it is not stuck
    (AT_10, 12, IDLE - 0.5, NOW, AT_10, False),
    (BEHIND, 12, IDLE - 0.5, NOW + IDLE, AT_10, False),
    # idle and behind: first seen now (a record just written is on its way)
    (AT_10, 12, IDLE, NOW, BEHIND, False),
    # still behind, not long enough
    (BEHIND, 12, IDLE, NOW + IDLE - 0.5, BEHIND, False),
    # behind for the whole wait: read from the next record again
    (BEHIND, 12, IDLE, NOW + IDLE, PartitionOrder(10, sought_at=NOW + IDLE,
                                                  behind_since=NOW), True),
    # sought back a moment ago: the re-read is on its way
    (PartitionOrder(10, sought_at=NOW + IDLE - 1, behind_since=NOW), 12, IDLE, NOW + IDLE,
     PartitionOrder(10, sought_at=NOW + IDLE - 1, behind_since=NOW), False),
    # nothing committed and no record yet: the first record read starts
    (FRESH, 12, IDLE, NOW, FRESH, False),
])
def test_check_idle(order: PartitionOrder, end_offset: int, idle_s: float, now: float,
                    want_order: PartitionOrder, rewind: bool) -> None:
    assert check_idle(order, end_offset, idle_s, now) == (want_order, rewind)


def test_a_record_left_out_at_the_end_is_read_again_once_processing_goes_on() -> None:
    # record 10 was handed out before the seek and skipped; nothing comes after it
    order, now = AT_10, NOW
    rewinds = []
    while now <= NOW + 3 * IDLE:
        order, rewind = check_idle(order, 11, IDLE, now)
        rewinds.append(rewind)
        now += 1.0
    # once behind for the wait, then again each SEEK_AGAIN_AFTER_S while it stays
    assert rewinds.index(True) == IDLE
    assert sum(rewinds) == 1 + int((2 * IDLE) // SEEK_AGAIN_AFTER_S)
    # the re-read brings it: processed, and the partition is not behind any more
    order, verdict = check_offset(order, 10, now)
    assert (order, verdict) == (PartitionOrder(11), "process")
    assert check_idle(order, 11, IDLE, now) == (order, False)
