"""The scale-out part: one StrideWatch worker against two in one consumer group, on the
stream part's records (each run with its own app id and topics, same records)."""

from __future__ import annotations

from stridewatch.bench.common import Variant
from stridewatch.bench.stream import StreamBench, StreamResult


def run_scaleout(bench: StreamBench, variant: Variant, counts: tuple[int, ...] = (1, 2)
                 ) -> dict[str, StreamResult]:
    """``workers_<n>``: the stream stage with ``n`` workers sharing the partitions."""
    return {f"workers_{n}": bench.stridewatch(variant, workers=n,
                                              label=f"scale-{variant.name.lower()}-{n}w")
            for n in counts}
