"""Alerts as they leave the rules: what fired, the numbers behind it, and what to do next."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

DISCLAIMER = ("This is information, not a diagnosis. If something hurts or worries you, "
              "talk to a physiotherapist or doctor.")

Evidence = dict[str, float | str]


class Alert(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: str
    runner: str
    team: str
    rule: str
    severity: str
    title: str
    message: str
    next_step: str
    evidence: Evidence = Field(default_factory=dict)
    source: str
    fired_at: float
    # how strong the evidence behind the rule is, in words (empty for the guidance's own)
    caveat: str = ""
    cause: str = ""
    # False when another alert of the same cause already carries this one's evidence
    # to the runner (rules.causes); InfluxDB and the coach's view still get every alert
    to_runner: bool = True
    disclaimer: str = DISCLAIMER

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Alert:
        return cls.model_validate_json(raw)

    def as_text(self) -> str:
        """The alert as a phone notification or a log line would show it."""
        caveat = f"How sure this is: {self.caveat}\n" if self.caveat else ""
        return (f"[{self.severity.upper()}] {self.title}\n{self.message}\n"
                f"Next step: {self.next_step}\n{caveat}{self.disclaimer}")


def alert_id(runner: str, rule: str, severity: str, fired_at: float) -> str:
    """Deterministic, so a replayed event produces the same id and downstream dedups it."""
    key = f"{runner}|{rule}|{severity}|{fired_at:.3f}".encode()
    return hashlib.sha256(key).hexdigest()[:20]


def format_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    size = abs(value)
    if value == int(value) and size < 1e6:
        return f"{int(value)}"  # a score, a stage, a count: 8/10, not 8.00/10
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
