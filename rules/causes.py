"""One message per cause: alerts that read the same thing reach the runner once.

A run 40 % longer than usual can pass the session-spike, weekly-increase and load-ratio
rules in one step, and the same kilometres keep passing them for days. Each rule still
fires and is recorded (InfluxDB, the coach's dashboard); what the runner is sent is:

- one message per cause and step, led by the most severe alert, listing every alert's
  evidence;
- nothing more about that cause for its quiet time (``Cause.quiet_h``), unless the
  severity rises: an escalation goes out at once.

Pure and in event time, like the evaluator: a replay sends the same messages.
"""

from __future__ import annotations

from collections.abc import Mapping

from rules.alerts import Alert
from rules.catalogue import CAUSES, Severity

# cause -> (severity, fired at) of the last message the runner was sent about it
CauseMemory = Mapping[str, tuple[str, float]]


def _combined(cause: str, group: list[Alert], lead: Alert) -> Alert:
    ordered = [lead] + [a for a in group if a is not lead]
    caveats = list(dict.fromkeys(a.caveat for a in ordered if a.caveat))
    return lead.model_copy(update={
        "title": CAUSES[cause].title,
        "message": " ".join(f"{a.title}: {a.message}" for a in ordered),
        "caveat": " ".join(caveats),
        "evidence": {**lead.evidence, "rules": ", ".join(a.rule for a in ordered)}})


def one_message_per_cause(memory: CauseMemory, alerts: list[Alert]
                          ) -> tuple[dict[str, tuple[str, float]], list[Alert]]:
    """Mark which alerts go to the runner; merge each cause's alerts into its lead."""
    groups: dict[str, list[int]] = {}
    for i, alert in enumerate(alerts):
        if alert.cause:
            groups.setdefault(alert.cause, []).append(i)
    if not groups:
        return dict(memory), alerts
    out = list(alerts)
    sent = dict(memory)
    for cause, indices in groups.items():
        group = [alerts[i] for i in indices]
        lead = max(group, key=lambda a: Severity.parse(a.severity))  # the first of the worst
        for i in indices:
            out[i] = alerts[i].model_copy(update={"to_runner": False})
        last = sent.get(cause)
        if last is not None:
            last_severity, last_t = last
            quiet = abs(lead.fired_at - last_t) < CAUSES[cause].quiet_h * 3600.0
            if quiet and Severity.parse(lead.severity) <= Severity.parse(last_severity):
                continue
        sent[cause] = (lead.severity, lead.fired_at)
        lead_at = indices[group.index(lead)]
        message = _combined(cause, group, lead) if len(group) > 1 else lead
        out[lead_at] = message.model_copy(update={"to_runner": True})
    return sent, out
