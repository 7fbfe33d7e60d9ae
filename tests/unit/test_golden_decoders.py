"""Golden cases for the device decoders, telegraf-style.

``testdata/<family>/<case>/`` holds ``input`` (the raw MQTT payload) and either ``expected``
(canonical JSON of the decoded object) or ``error`` (a substring of the rejection reason).
Native cases also hold ``topic`` and go through :func:`ingest.routing.decode_message`; RSC
cases go through :func:`ingest.decoders.ble_rsc.decode_rsc`.

To add a case, write ``input`` (and ``topic``), run with ``STRIDEWATCH_REGEN_GOLDEN=1`` to
write ``expected``, then read the new file before committing it: regeneration records what
the code does, only review says it is right. ``error`` files are always written by hand.

RSC expected values checked by hand (bytes little-endian: flags | speed u16 | cadence u8 |
stride u16 | distance u32):

- running_basic ``04 0003 aa``: flags 0x04 = running; speed 0x0300 = 768 -> 768/256 =
  3.0 m/s; cadence 0xaa = 170 spm.
- stride_and_distance ``07 8003 b4 6100 39300000``: flags 0x07 = stride + distance +
  running; speed 0x0380 = 896 -> 3.5 m/s; cadence 0xb4 = 180; stride 0x0061 = 97 ->
  0.97 m; distance 0x00003039 = 12345 -> 1234.5 m. Second reading distance 0x305d = 12381
  -> 1238.1 m (3.6 m in 1 s at 3.5 m/s, plausible).
- walking_all_readings ``00 6601 70``: flags 0 = walking; speed 0x0166 = 358 -> 358/256 =
  1.3984375 m/s; cadence 0x70 = 112 (then 0x72 = 114); sport walking.
- mixed_walk_then_run: second reading ``04 8002 a8`` has bit2 set, so the batch is running;
  speed 0x0280 = 640 -> 2.5 m/s; cadence 0xa8 = 168.
- distance_only ``06 a002 a0 a0860100``: speed 0x02a0 = 672 -> 2.625 m/s; cadence 0xa0 =
  160; distance 0x000186a0 = 100000 -> 10000.0 m; no step length.
- stride_only_with_session ``05 0004 be 6900``: speed 0x0400 = 1024 -> 4.0 m/s; cadence
  0xbe = 190; stride 0x0069 = 105 -> 1.05 m; seq 42 and session id carried over.
- uppercase_hex_at_limits ``04 000F FF``: speed 0x0f00 = 3840 -> 15.0 m/s (the contract's
  maximum, accepted); cadence 0xff = 255.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from ingest.contract import EventKind
from ingest.decoders import InboundMessage, Rejected
from ingest.decoders.ble_rsc import decode_rsc
from ingest.routing import decode_message

TESTDATA = Path(__file__).resolve().parent / "testdata"
FAMILIES = ("native", "rsc")
RECEIVED_AT = 1_718_000_100.0
REGEN = os.environ.get("STRIDEWATCH_REGEN_GOLDEN") == "1"


def _cases() -> list[Path]:
    return sorted(d for family in FAMILIES for d in (TESTDATA / family).iterdir() if d.is_dir())


def _decode(case: Path) -> BaseModel:
    payload = (case / "input").read_bytes()
    if case.parent.name == "native":
        topic = (case / "topic").read_text().strip()
        return decode_message(InboundMessage(topic, payload, received_at=RECEIVED_AT))
    return decode_rsc(payload)


def canonical(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json", exclude_none=True), indent=2,
                      sort_keys=True) + "\n"


@pytest.mark.parametrize("case", _cases(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden(case: Path) -> None:
    error_file, expected_file = case / "error", case / "expected"
    if error_file.exists():
        assert not expected_file.exists(), "a case either decodes or fails, not both"
        want = error_file.read_text().strip()
        with pytest.raises(Rejected) as caught:
            _decode(case)
        assert want and want in caught.value.reason
        return
    got = canonical(_decode(case))
    if REGEN:
        expected_file.write_text(got)
    assert expected_file.exists(), f"{case} has no expected file; regenerate and review it"
    assert got == expected_file.read_text()


@pytest.mark.parametrize("family", FAMILIES)
def test_enough_cases(family: str) -> None:
    cases = [d for d in (TESTDATA / family).iterdir() if d.is_dir()]
    failing = [d for d in cases if (d / "error").exists()]
    assert len(cases) - len(failing) >= 6
    assert len(failing) >= 8


def test_native_cases_cover_every_message_kind() -> None:
    kinds = {json.loads((d / "expected").read_text())["kind"]
             for d in (TESTDATA / "native").iterdir() if (d / "expected").exists()}
    assert kinds == set(get_args(EventKind)) == {"samples", "session", "pain", "injury"}
