"""BLE Running Speed and Cadence Measurement (characteristic 0x2A53) relayed by a gateway.

Topic ``runners/<runner>/<device>/rsc``; payload is JSON::

    {"seq": 0, "session_id": "optional", "readings": [{"t": 1718000000.25, "hex": "040003aa"}]}

Each ``hex`` holds one measurement, little-endian:

==========  ======  ====================================================================
flags       u8      bit0 stride length present, bit1 total distance present,
                    bit2 running (1) / walking (0); bits 3-7 reserved (must be 0)
speed       u16     1/256 m/s
cadence     u8      1/min
stride      u16     1/100 m, only if bit0
distance    u32     1/10 m, only if bit1
==========  ======  ====================================================================

Units as the contract reads them:

- cadence: the spec says "1/minute"; foot pods count every foot strike (a runner reads
  ~170-180), so it is steps per minute, ``cadence_spm``.
- stride length: despite the name, foot pods report the distance of one step (the spec
  ties speed = cadence x stride length, and cadence counts steps), so ``step_length_m``.
- a batch is ``running`` if any reading has bit2 set, else ``walking``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ingest.contract import SampleBatch
from ingest.decoders import Rejected
from ingest.decoders.native import describe_validation_error, parse_json

LEAF = "rsc"

FLAG_STRIDE = 0x01
FLAG_DISTANCE = 0x02
FLAG_RUNNING = 0x04
_RESERVED = 0xF8

# flags + speed + cadence; stride and distance follow when flagged
_BASE_LEN = 4
_MAX_LEN = _BASE_LEN + 2 + 4
_HEX_RE = re.compile(r"[0-9a-fA-F]*")


class _Reading(BaseModel):
    # strict: a gateway that sends "t": "17..." or true has a bug worth surfacing
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    t: float
    # a few spare characters so over-long input gets the clearer "trailing bytes" reason
    hex: str = Field(max_length=2 * _MAX_LEN + 16)


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    seq: int = Field(default=0, ge=0, le=2**53)
    session_id: str | None = Field(default=None, min_length=1, max_length=128)
    readings: list[_Reading] = Field(min_length=1, max_length=20_000)


def _measurement_bytes(text: str, i: int) -> bytes:
    # bytes.fromhex would accept spaces; a gateway that adds them is not speaking the format
    if not _HEX_RE.fullmatch(text):
        raise Rejected(f"readings.{i}.hex: '{text[:24]}' is not a hex string")
    if len(text) % 2:
        raise Rejected(f"readings.{i}.hex: odd number of hex digits ({len(text)})")
    return bytes.fromhex(text)


def _decode_measurement(raw: bytes, i: int) -> tuple[dict[str, float], bool]:
    """One measurement -> (sample fields without ``t``, running flag)."""
    if not raw:
        raise Rejected(f"readings.{i}.hex: empty measurement, too short for the flags byte")
    flags = raw[0]
    if flags & _RESERVED:
        raise Rejected(f"readings.{i}.hex: reserved flag bits set (flags 0x{flags:02x})")
    need = _BASE_LEN + (2 if flags & FLAG_STRIDE else 0) + (4 if flags & FLAG_DISTANCE else 0)
    if len(raw) < need:
        raise Rejected(f"readings.{i}.hex: measurement is {len(raw)} bytes; flags 0x{flags:02x} "
                       f"need {need}")
    if len(raw) > need:
        raise Rejected(f"readings.{i}.hex: {len(raw) - need} trailing bytes after the "
                       f"{need} bytes flags 0x{flags:02x} describe")
    speed_raw, cadence = struct.unpack_from("<HB", raw, 1)
    fields: dict[str, float] = {"speed_mps": speed_raw / 256, "cadence_spm": float(cadence)}
    offset = _BASE_LEN
    if flags & FLAG_STRIDE:
        (stride_raw,) = struct.unpack_from("<H", raw, offset)
        fields["step_length_m"] = stride_raw / 100
        offset += 2
    if flags & FLAG_DISTANCE:
        (distance_raw,) = struct.unpack_from("<I", raw, offset)
        fields["distance_m"] = distance_raw / 10
    return fields, bool(flags & FLAG_RUNNING)


def decode_rsc(payload: bytes) -> SampleBatch:
    """Gateway JSON with RSC measurements -> one :class:`SampleBatch`, or :class:`Rejected`."""
    data = parse_json(payload)
    if not isinstance(data, dict):
        raise Rejected(f"payload must be a JSON object, got {type(data).__name__}")
    try:
        env = _Envelope.model_validate(data)
    except ValidationError as exc:
        raise Rejected(f"invalid RSC gateway payload: {describe_validation_error(exc)}") from None

    samples: list[dict[str, float]] = []
    running = False
    for i, reading in enumerate(env.readings):
        fields, is_running = _decode_measurement(_measurement_bytes(reading.hex, i), i)
        running = running or is_running
        samples.append({"t": reading.t, **fields})
    try:
        return SampleBatch.model_validate({
            "seq": env.seq,
            "session_id": env.session_id,
            "sport": "running" if running else "walking",
            "samples": samples,
        })
    except ValidationError as exc:
        # locations read samples.<i>.<field>; <i> is the index in readings
        raise Rejected(f"RSC readings outside the contract: "
                       f"{describe_validation_error(exc)}") from None


def encode_rsc(speed_mps: float, cadence_spm: float, step_length_m: float | None = None,
               distance_m: float | None = None, running: bool = True) -> bytes:
    """Build the measurement bytes a foot pod would send (simulator and tests).

    Values are rounded to the field resolution; :class:`ValueError` if one does not fit.
    """
    def scaled(name: str, value: float, scale: int, bits: int) -> int:
        raw = round(value * scale)
        if not 0 <= raw < 2**bits:
            raise ValueError(f"{name}={value} does not fit in u{bits} at 1/{scale}")
        return raw

    flags = FLAG_RUNNING if running else 0
    body = struct.pack("<HB", scaled("speed_mps", speed_mps, 256, 16),
                       scaled("cadence_spm", cadence_spm, 1, 8))
    if step_length_m is not None:
        flags |= FLAG_STRIDE
        body += struct.pack("<H", scaled("step_length_m", step_length_m, 100, 16))
    if distance_m is not None:
        flags |= FLAG_DISTANCE
        body += struct.pack("<I", scaled("distance_m", distance_m, 10, 32))
    return bytes([flags]) + body


def encode_rsc_payload(readings: Sequence[tuple[float, bytes]], *, seq: int = 0,
                       session_id: str | None = None) -> bytes:
    """Wrap (t, measurement) pairs the way the gateway publishes them."""
    doc: dict[str, object] = {"seq": seq,
                              "readings": [{"t": t, "hex": m.hex()} for t, m in readings]}
    if session_id is not None:
        doc["session_id"] = session_id
    return json.dumps(doc, separators=(",", ":")).encode()
