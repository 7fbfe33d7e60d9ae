"""The MQTT topic layout, built in one place (contract v1, docs/ingest.md).

One subtree per runner, so the broker ACL can say ``runners/%u/…``:

- ``runners/<runner>/<device>/<leaf>``: a device's messages (``DEVICE_LEAVES``);
- ``runners/<runner>/<leaf>``: what the runner's phone app reports (``APP_LEAVES``);
- ``runners/<runner>/alerts``: alerts back to the runner, published by the pipeline.

``ingest.routing.parse_topic`` reads topics back; the bridge subscribes to
``subscriptions()``; the local stack's ACL is written from the same names.
"""

from __future__ import annotations

ROOT = "runners"
DEVICE_LEAVES = ("samples", "session", "rsc")
APP_LEAVES = ("pain", "injury")
ALERTS = "alerts"


def device_topic(runner: str, device: str, leaf: str) -> str:
    return f"{ROOT}/{runner}/{device}/{leaf}"


def app_topic(runner: str, leaf: str) -> str:
    return f"{ROOT}/{runner}/{leaf}"


def alerts_topic(runner: str) -> str:
    return app_topic(runner, ALERTS)


def subscriptions() -> tuple[str, ...]:
    """The filters the bridge subscribes to (alerts are the pipeline's own, never read)."""
    return (tuple(device_topic("+", "+", leaf) for leaf in DEVICE_LEAVES)
            + tuple(app_topic("+", leaf) for leaf in APP_LEAVES))


def runner_acl() -> list[str]:
    """Mosquitto ACL ``pattern`` lines: a runner writes their own subtree, reads their alerts."""
    return ([f"pattern write {device_topic('%u', '+', leaf)}" for leaf in DEVICE_LEAVES]
            + [f"pattern write {app_topic('%u', leaf)}" for leaf in APP_LEAVES]
            + [f"pattern read {alerts_topic('%u')}"])


def split(topic: str) -> tuple[str, str | None, str] | None:
    """``(runner, device, leaf)`` of a topic of the layout (device None for the app's
    topics), or None; ids are not checked here (``ingest.routing.parse_topic`` does)."""
    parts = topic.split("/")
    if parts[0] != ROOT:
        return None
    if len(parts) == 3:
        return parts[1], None, parts[2]
    if len(parts) == 4:
        return parts[1], parts[2], parts[3]
    return None


def owner(topic: str) -> tuple[str | None, str | None]:
    """Best effort, for a message that may not fit the layout (a dead letter): the
    runner of any topic under ``runners/``, and the device of a device topic."""
    parts = topic.split("/")
    runner = parts[1] if len(parts) > 1 and parts[0] == ROOT else None
    device = parts[2] if len(parts) == 4 and runner is not None else None
    return runner, device
