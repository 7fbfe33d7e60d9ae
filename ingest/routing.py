"""From an MQTT topic and payload to one contract event, or a reason to reject it."""

from __future__ import annotations

from collections.abc import Callable

from ingest import topics
from ingest.contract import PAIN_DEVICE, Body, RunnerEvent, is_valid_id
from ingest.decoders import InboundMessage, Rejected, ble_rsc
from ingest.decoders.native import decode_injury, decode_pain, decode_samples, decode_session

# runners/<runner>/<device>/<leaf>: leaf -> decoder of the payload
DEVICE_DECODERS: dict[str, Callable[[bytes], Body]] = {
    "samples": decode_samples,
    "session": decode_session,
    ble_rsc.LEAF: ble_rsc.decode_rsc,  # BLE foot pod relayed by a gateway
}

# runners/<runner>/<leaf>: what the runner's app reports, filed under device PAIN_DEVICE
APP_DECODERS: dict[str, Callable[[bytes], Body]] = {
    "pain": decode_pain,
    "injury": decode_injury,
}

# topic filters the bridge subscribes to (alerts are ours, never ingested)
SUBSCRIPTIONS = topics.subscriptions()


def parse_topic(topic: str) -> tuple[str, str, str]:
    """Return (runner, device, leaf); raise Rejected for a topic outside the contract."""
    where = topics.split(topic)
    if where is not None and where[1] is None and where[2] in APP_DECODERS:
        runner, device, leaf = where[0], PAIN_DEVICE, where[2]
    elif where is not None and where[1] is not None:
        runner, device, leaf = where[0], where[1], where[2]
        if leaf not in DEVICE_DECODERS:
            raise Rejected(f"unknown message type '{leaf}' in topic {topic}")
    else:
        raise Rejected(f"topic {topic} is not runners/<runner>/<device>/<type> "
                       "or runners/<runner>/pain or runners/<runner>/injury")
    if not is_valid_id(runner):
        raise Rejected(f"runner id '{runner}' is not lowercase letters, digits, '-' or '_'")
    if not is_valid_id(device):
        raise Rejected(f"device id '{device}' is not lowercase letters, digits, '-' or '_'")
    return runner, device, leaf


def decode_message(msg: InboundMessage) -> RunnerEvent:
    runner, device, leaf = parse_topic(msg.topic)
    # three parts: the runner's app (pain, injury); four: a device
    decoders = APP_DECODERS if msg.topic.count("/") == 2 else DEVICE_DECODERS
    body = decoders[leaf](msg.payload)
    return RunnerEvent.wrap(runner, device, body, msg.received_at)
