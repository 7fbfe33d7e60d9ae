"""The dead-letter record, one format for every stage (docs/ingest.md, "Dead letters").

A record says why it was refused, where it came from (the MQTT topic, or the Kafka topic
for the stream stage), the runner and device when they are known, when, which stage
refused it, and the raw bytes (base64, at most ``MAX_DEAD_LETTER_RAW``; a longer payload
says how long it was). ``stridewatch deadletters`` reads them back.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Literal

# a dead letter keeps at most this much of the raw payload (and says so)
MAX_DEAD_LETTER_RAW = 256 * 1024

Stage = Literal["ingest", "stream"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    topic: str
    raw: bytes
    at: float
    stage: Stage
    runner: str | None = None
    device: str | None = None

    def encode(self) -> bytes:
        kept = self.raw[:MAX_DEAD_LETTER_RAW]
        letter: dict[str, object] = {
            "reason": self.reason, "topic": self.topic, "runner": self.runner,
            "device": self.device, "at": self.at, "stage": self.stage,
            "raw_b64": base64.b64encode(kept).decode()}
        if len(kept) < len(self.raw):
            letter["raw_truncated_from"] = len(self.raw)
        return json.dumps(letter).encode()

    @property
    def key(self) -> bytes | None:
        """Keyed by runner when known, so a runner's letters stay in order."""
        return self.runner.encode() if self.runner else None
