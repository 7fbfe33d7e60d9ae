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
