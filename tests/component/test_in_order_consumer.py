"""The worker's Faust consumer: Faust's drop of re-read records is off for the events
topic only.

After a seek back, Faust keeps handing out the batch fetched before it and moves its
last-read offset on; with the drop on, the re-read records would be dropped as read
already and the hole would never be filled (a rolling restart under load lost 181 of 920
window points that way).
"""

from __future__ import annotations

from pathlib import Path

from faust.types import TP

from base.settings import Settings
from stream.app import build_app
from stream.in_order import InOrderConsumer


def test_faust_drops_no_re_read_events_record_and_keeps_its_check_elsewhere(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    built = build_app(settings)
    built.app.finalize()
    consumer = built.app.consumer
    assert isinstance(consumer, InOrderConsumer)
    assert consumer.in_order_topics == {settings.events_topic}
    events, other = TP(settings.events_topic, 0), TP("sw.other", 0)
    # the ways Faust records what it handed out: after each record, a seek, a recovery
    consumer._read_offset[events] = 230
    consumer._read_offset[other] = 230
    consumer._read_offset.update({TP(settings.events_topic, 1): 12})
    # what its drain loop reads before it hands a record out (None: nothing is dropped)
    read_offset = consumer._read_offset.__getitem__
    assert read_offset(events) is None
    assert read_offset(TP(settings.events_topic, 1)) is None
    assert read_offset(other) == 230
    assert read_offset(TP("sw.other", 3)) is None  # never read: Faust's default
