"""Device payload decoders: pure functions from MQTT bytes to contract events.

Each device family has a module here and golden data in ``tests/unit/testdata/<family>``.
A decoder either returns events or raises :class:`Rejected` with a reason a person can act
on; it never lets another exception escape for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass


class Rejected(ValueError):
    """Input that cannot become a contract event; ``reason`` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """An MQTT message as the rest of the code sees it, free of the client library's types."""

    topic: str
    payload: bytes
    received_at: float
    qos: int = 1
    retained: bool = False
