"""Property tests: every bad payload is Rejected with a reason, never another exception.

Bad payloads are built to be bad for certain: a valid document with exactly one breaking
change (a value outside the contract, a missing required key, an unknown key, broken time
order, a malformed RSC measurement), a strict prefix of valid JSON, an invalid UTF-8 byte,
the wrong top-level type, or arbitrary bytes: 11,500 in total (see MAX_EXAMPLES).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ingest.contract import (
    InjuryReport,
    PainReport,
    PainSite,
    Sample,
    SampleBatch,
    SessionEvent,
)
from ingest.decoders import InboundMessage, Rejected
from ingest.decoders.ble_rsc import (
    FLAG_DISTANCE,
    FLAG_RUNNING,
    FLAG_STRIDE,
    decode_rsc,
    encode_rsc,
    encode_rsc_payload,
)
from ingest.routing import decode_message

Doc = dict[str, Any]
Strategy = st.SearchStrategy[Any]

MAX_EXAMPLES = {"samples": 2500, "session": 1500, "pain": 1500, "injury": 1500, "rsc": 4500}
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])
T0, T1 = 946_684_800.0, 4_102_444_800.0
TOPICS = {"samples": "runners/ana/watch-1/samples", "session": "runners/ana/watch-1/session",
          "pain": "runners/ana/pain", "injury": "runners/ana/injury"}


def _bounds(model: type[BaseModel], name: str) -> tuple[float, float]:
    """The field's (minimum, maximum) as the contract's JSON Schema states them."""
    prop = model.model_json_schema()["properties"][name]
    for option in [prop, *prop.get("anyOf", [])]:
        if "minimum" in option:
            return float(option["minimum"]), float(option["maximum"])
    raise AssertionError(f"{model.__name__}.{name} has no range")


def _valid_num(lo: float, hi: float) -> Strategy:
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


# lax pydantic turns "12", true and 3.0 into numbers, so none of those count as bad here
_LETTERS = st.text(alphabet="abcxyz!? ", min_size=1, max_size=8)
_CONTAINERS = st.one_of(st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _bad_num(lo: float, hi: float) -> Strategy:
    return st.one_of(
        st.floats(max_value=lo, exclude_max=True, allow_nan=False, allow_infinity=False),
        st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False),
        st.sampled_from([math.nan, math.inf, -math.inf]),
        _LETTERS, _CONTAINERS)


def _bad_int(lo: int, hi: int) -> Strategy:
    # x.5 stays non-integral only while floats can hold it exactly, so keep it small
    return st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1),
                     st.integers(lo, min(hi, 10**6)).map(lambda i: i + 0.5), _LETTERS,
                     _CONTAINERS)


def _bad_str(min_len: int, max_len: int) -> Strategy:
    options = [st.text(min_size=max_len + 1, max_size=max_len + 20), st.integers(), _CONTAINERS]
    if min_len > 0:
        options.append(st.just(""))
    return st.one_of(*options)


def _bad_choice(allowed: set[str]) -> Strategy:
    return st.one_of(st.text(max_size=12).filter(lambda s: s not in allowed), st.integers(),
                     _CONTAINERS)


class Field:
    """How to make a valid and a bad value of one field, and whether it is required."""

    def __init__(self, valid: Strategy, bad: Strategy, required: bool = False) -> None:
        self.valid, self.bad, self.required = valid, bad, required


def _num_field(model: type[BaseModel], name: str) -> Field:
    lo, hi = _bounds(model, name)
    return Field(_valid_num(lo, hi), _bad_num(lo, hi))


SAMPLE_FIELDS: dict[str, Field] = {
    name: _num_field(Sample, name) for name in Sample.model_fields if name not in ("t", "foot")
}
SAMPLE_FIELDS["foot"] = Field(st.sampled_from(["L", "R", None]), _bad_choice({"L", "R"}))
SEQ = Field(st.integers(0, 2**53), _bad_int(0, 2**53), required=True)
SPORT = Field(st.sampled_from(["running", "walking", "trail_running", "treadmill"]),
              _bad_choice({"running", "walking", "trail_running", "treadmill"}))
SESSION_ID = Field(st.text(min_size=1, max_size=128), _bad_str(1, 128), required=True)
TIME = Field(_valid_num(T0, T1), _bad_num(T0, T1), required=True)

SESSION_FIELDS = {
    "seq": SEQ, "session_id": SESSION_ID, "t": TIME, "sport": SPORT,
    "phase": Field(st.sampled_from(["start", "end"]), _bad_choice({"start", "end"}), True),
    "shoe": Field(st.one_of(st.none(), st.text(max_size=64)), _bad_str(0, 64)),
    "surface": Field(st.sampled_from(["road", "trail", "track", "grass", None]),
                     _bad_choice({"road", "track", "trail", "treadmill", "grass", "sand"})),
}
PAIN_FIELDS = {
    "t": TIME,
    "seq": Field(st.one_of(st.none(), st.integers(0, 2**53)), _bad_int(0, 2**53)),
    "score": Field(st.integers(0, 10), _bad_int(0, 10), True),
    # a vocabulary value, or an older app's free text (kept, filed under "other")
    "where": Field(st.one_of(st.sampled_from([s.value for s in PainSite]),
                             st.text(min_size=1, max_size=64)), _bad_str(1, 64), True),
    "where_text": Field(st.one_of(st.none(), st.text(max_size=64)), _bad_str(0, 64)),
    "side": Field(st.sampled_from(["left", "right", "both", None]),
                  _bad_choice({"left", "right", "both"})),
    "when": Field(st.sampled_from(["during", "after", "morning", "night"]),
                  _bad_choice({"during", "after", "morning", "night"}), True),
    "pinpoint_on_bone": Field(st.booleans(), st.sampled_from(["maybe", 2, 0.5, [], {}])),
    "worse_as_run_goes_on": Field(st.booleans(), st.sampled_from(["perhaps", -1, [1]])),
    "limping": Field(st.booleans(), st.sampled_from(["yes", 1, 0, [], {}])),
    "had_to_stop": Field(st.booleans(), st.sampled_from(["no", 0, [True]])),
    "hop_hurts": Field(st.booleans(), st.sampled_from(["sharp", 1.0, {}])),
}

_NOT_A_BOOL: Strategy = st.sampled_from(["yes", "true", 1, 0, 0.5, None, [], {}, [True]])
_OPTIONAL_BOOL_BAD: Strategy = st.sampled_from(["no", "false", 1, 0, 1.5, [], {}, [False]])


def _flag(required: bool = False) -> Field:
    # a required flag (a criterion, the four steps) may not be null either
    return Field(st.booleans(), _NOT_A_BOOL if required else _OPTIONAL_BOOL_BAD, required)


def _choice(*values: str) -> Field:
    return Field(st.sampled_from([*values, None]), _bad_choice(set(values)))


INJURY_COMMON = {
    "t": TIME,
    "seq": Field(st.one_of(st.none(), st.integers(0, 2**53)), _bad_int(0, 2**53)),
    "injury": Field(st.just("ankle_sprain"), _bad_choice({"ankle_sprain"})),
    "side": _choice("left", "right", "both"),
    "bone_tenderness": _flag(),
}
_PHASES = {"injured", "recovery_check"}
INJURED_FIELDS = {
    **INJURY_COMMON,
    "phase": Field(st.just("injured"), _bad_choice(_PHASES), True),
    "rolled": _choice("in", "out", "unsure"),
    "heard_pop": _flag(),
    "swelling": _choice("none", "mild", "moderate", "severe"),
    "bruising": _flag(),
    "could_take_four_steps": _flag(required=True),
    # true and 2.0 are not grades, though a bare Literal[1, 2, 3] would take them
    "grade": Field(st.sampled_from([1, 2, 3, None]),
                   st.one_of(st.integers().filter(lambda g: g not in (1, 2, 3)),
                             st.sampled_from([True, False, 2.0, 1.5, "2"]), _CONTAINERS)),
}
RECOVERY_CHECK_FIELDS = {
    **INJURY_COMMON,
    "phase": Field(st.just("recovery_check"), _bad_choice(_PHASES), True),
    "weight_bearing_pain_free": _flag(required=True),
    "walks_without_limp": _flag(required=True),
    "range_of_motion_near_full": _flag(required=True),
    "hop_pain_free": _flag(required=True),
    "could_take_four_steps": Field(st.one_of(st.none(), st.booleans()), _OPTIONAL_BOOL_BAD),
}
# what only an injured report may carry, each with a value that counts as carrying it
INJURED_ONLY = {"rolled": st.sampled_from(["in", "out", "unsure"]),
                "swelling": st.sampled_from(["none", "mild", "moderate", "severe"]),
                "heard_pop": st.just(True), "bruising": st.just(True),
                "grade": st.sampled_from([1, 2, 3])}


@st.composite
def _flat_doc(draw: st.DrawFn, fields: dict[str, Field]) -> Doc:
    doc: Doc = {}
    for name, spec in fields.items():
        if spec.required or draw(st.booleans()):
            doc[name] = draw(spec.valid)
    return doc


@st.composite
def _break_flat(draw: st.DrawFn, doc: Doc, fields: dict[str, Field], known: set[str]) -> Doc:
    """Exactly one breaking change to a flat document."""
    doc = dict(doc)
    required = [n for n, f in fields.items() if f.required]
    how = draw(st.sampled_from(["bad_value", "missing", "unknown_key", "version"]
                               if required else ["bad_value", "unknown_key", "version"]))
    if how == "bad_value":
        name = draw(st.sampled_from(sorted(fields)))
        doc[name] = draw(fields[name].bad)
    elif how == "missing":
        del doc[draw(st.sampled_from(required))]
    elif how == "unknown_key":
        doc[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in known))] = 1
    else:
        doc["v"] = draw(st.one_of(st.integers().filter(lambda v: v != 1), _LETTERS))
    return doc


@st.composite
def valid_batch(draw: st.DrawFn) -> Doc:
    samples = draw(st.lists(_flat_doc(SAMPLE_FIELDS), min_size=1, max_size=3))
    times = sorted(draw(st.lists(TIME.valid, min_size=len(samples), max_size=len(samples))))
    for sample, t in zip(samples, times, strict=True):
        sample["t"] = t
    doc: Doc = {"seq": draw(SEQ.valid), "samples": samples}
    if draw(st.booleans()):
        doc["sport"] = draw(SPORT.valid)
    if draw(st.booleans()):
        doc["session_id"] = draw(SESSION_ID.valid)
    return doc


@st.composite
def broken_batch(draw: st.DrawFn) -> Doc:
    doc = draw(valid_batch())
    samples: list[Doc] = [dict(s) for s in doc["samples"]]
    top = {"seq": SEQ, "sport": SPORT,
           "session_id": Field(SESSION_ID.valid, _bad_str(1, 128))}
    how = draw(st.sampled_from(["top", "sample", "order", "samples_shape"]))
    if how == "top":
        return draw(_break_flat(doc, top, set(SampleBatch.model_fields)))
    if how == "sample":
        i = draw(st.integers(0, len(samples) - 1))
        fields = {**SAMPLE_FIELDS, "t": TIME}
        # a sample has no "v": the "version" break is an unknown key there, still a break
        samples[i] = draw(_break_flat(samples[i], fields, set(Sample.model_fields)))
    elif how == "order":
        samples[-1]["t"] = last = max(samples[-1]["t"], T0 + 1)
        samples.append({"t": draw(st.floats(min_value=T0, max_value=last, exclude_max=True))})
    else:
        return {**doc, "samples": draw(st.one_of(st.just([]), _LETTERS, st.integers(),
                                                 st.just({"t": T0})))}
    return {**doc, "samples": samples}


def _known(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


@st.composite
def _check_with_injured_only(draw: st.DrawFn) -> Doc:
    """A recovery check carrying what belongs to the injured report."""
    doc = draw(_flat_doc(RECOVERY_CHECK_FIELDS))
    name = draw(st.sampled_from(sorted(INJURED_ONLY)))
    return {**doc, name: draw(INJURED_ONLY[name])}


def _broken_flat(fields: dict[str, Field], model: type[BaseModel]) -> Strategy:
    return _flat_doc(fields).flatmap(lambda d: _break_flat(d, fields, _known(model)))


def valid_doc(kind: str) -> Strategy:
    if kind == "samples":
        return valid_batch()
    if kind == "injury":
        return st.one_of(_flat_doc(INJURED_FIELDS), _flat_doc(RECOVERY_CHECK_FIELDS))
    return _flat_doc(SESSION_FIELDS if kind == "session" else PAIN_FIELDS)


def broken_doc(kind: str) -> Strategy:
    if kind == "samples":
        return broken_batch()
    if kind == "injury":
        return st.one_of(_broken_flat(INJURED_FIELDS, InjuryReport),
                         _broken_flat(RECOVERY_CHECK_FIELDS, InjuryReport),
                         _check_with_injured_only())
    fields, model = ((SESSION_FIELDS, SessionEvent) if kind == "session"
                     else (PAIN_FIELDS, PainReport))
    return _broken_flat(fields, model)


def _dumps(doc: object) -> bytes:
    return json.dumps(doc).encode()


@st.composite
def _truncated(draw: st.DrawFn, docs: Strategy) -> bytes:
    raw = _dumps(draw(docs))
    return raw[:draw(st.integers(0, len(raw) - 1))]  # a strict prefix of an object is not JSON


@st.composite
def _bad_utf8(draw: st.DrawFn, docs: Strategy) -> bytes:
    raw = _dumps(draw(docs))
    at = draw(st.integers(1, len(raw)))
    return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + raw[at:]


def bad_payload(broken: Strategy, valid: Strategy) -> Strategy:
    structural = broken.map(_dumps)
    malformed = [
        _truncated(valid),
        _bad_utf8(valid),
        valid.map(lambda d: _dumps([d])),
        st.one_of(st.integers(), st.floats(), _LETTERS, st.none(), st.booleans()).map(_dumps),
        st.binary(max_size=64),
        st.integers(500, 100_000).map(lambda n: b"[" * n + b"]" * n),
    ]
    # about half structural breaks: they reach the validators, the rest stop at parsing
    # (one_of would flatten and weigh each of the seven branches the same)
    return st.sampled_from([structural] * 6 + malformed).flatmap(lambda strategy: strategy)


def _assert_rejected(decode: Callable[[bytes], object], payload: bytes) -> None:
    try:
        result = decode(payload)
    except Rejected as exc:
        assert isinstance(exc.reason, str) and exc.reason.strip()
        return
    raise AssertionError(f"accepted a bad payload {payload[:200]!r}: {result!r}")


def _native(kind: str) -> Callable[[bytes], object]:
    topic = TOPICS[kind]
    return lambda payload: decode_message(InboundMessage(topic, payload, received_at=T0))


@settings(FUZZ, max_examples=MAX_EXAMPLES["samples"])
@given(bad_payload(broken_batch(), valid_batch()))
def test_native_samples_rejects_bad_payloads(payload: bytes) -> None:
    _assert_rejected(_native("samples"), payload)


@settings(FUZZ, max_examples=MAX_EXAMPLES["session"])
@given(bad_payload(broken_doc("session"), valid_doc("session")))
def test_native_session_rejects_bad_payloads(payload: bytes) -> None:
    _assert_rejected(_native("session"), payload)


@settings(FUZZ, max_examples=MAX_EXAMPLES["pain"])
@given(bad_payload(broken_doc("pain"), valid_doc("pain")))
def test_native_pain_rejects_bad_payloads(payload: bytes) -> None:
    _assert_rejected(_native("pain"), payload)


@settings(FUZZ, max_examples=MAX_EXAMPLES["injury"])
@given(bad_payload(broken_doc("injury"), valid_doc("injury")))
def test_native_injury_rejects_bad_payloads(payload: bytes) -> None:
    _assert_rejected(_native("injury"), payload)


@given(valid_batch())
@settings(max_examples=200, deadline=None)
def test_valid_native_batches_decode(doc: Doc) -> None:
    # the generators' "valid" side really is valid, so each break above is the only fault
    event = decode_message(InboundMessage(TOPICS["samples"], _dumps(doc), received_at=T0))
    assert event.samples is not None and len(event.samples.samples) == len(doc["samples"])


@given(st.one_of(valid_doc("session").map(lambda d: ("session", d)),
                 valid_doc("pain").map(lambda d: ("pain", d)),
                 valid_doc("injury").map(lambda d: ("injury", d))))
@settings(max_examples=300, deadline=None)
def test_valid_native_session_pain_and_injury_decode(case: tuple[str, Doc]) -> None:
    kind, doc = case
    event = decode_message(InboundMessage(TOPICS[kind], _dumps(doc), received_at=T0))
    assert event.kind == kind


# --- BLE RSC ------------------------------------------------------------------------------

SPEED_MAX = 15 * 256  # raw units; the contract caps speed at 15 m/s
STRIDE_MAX = 400  # 4 m
DISTANCE_MAX = 10_000_000  # 1,000 km


@st.composite
def rsc_raw(draw: st.DrawFn) -> tuple[int, int, int, int | None, int | None]:
    """(flags, speed, cadence, stride, distance) in raw units, inside the contract."""
    flags = draw(st.integers(0, 7))
    stride = draw(st.integers(0, STRIDE_MAX)) if flags & FLAG_STRIDE else None
    distance = draw(st.integers(0, DISTANCE_MAX)) if flags & FLAG_DISTANCE else None
    return flags, draw(st.integers(0, SPEED_MAX)), draw(st.integers(0, 255)), stride, distance


def _pack(flags: int, speed: int, cadence: int, stride: int | None, distance: int | None,
          ) -> bytes:
    out = bytes([flags]) + speed.to_bytes(2, "little") + bytes([cadence])
    if stride is not None:
        out += stride.to_bytes(2, "little")
    if distance is not None:
        out += distance.to_bytes(4, "little")
    return out


@st.composite
def valid_rsc(draw: st.DrawFn) -> Doc:
    raws = draw(st.lists(rsc_raw(), min_size=1, max_size=4))
    times = sorted(draw(st.lists(TIME.valid, min_size=len(raws), max_size=len(raws))))
    doc: Doc = {"readings": [{"t": t, "hex": _pack(*r).hex()}
                             for t, r in zip(times, raws, strict=True)]}
    if draw(st.booleans()):
        doc["seq"] = draw(SEQ.valid)
    if draw(st.booleans()):
        doc["session_id"] = draw(SESSION_ID.valid)
    return doc


@st.composite
def _bad_measurement(draw: st.DrawFn) -> str:
    flags, speed, cadence, stride, distance = draw(rsc_raw())
    good = _pack(flags, speed, cadence, stride, distance)
    how = draw(st.sampled_from(["odd", "not_hex", "reserved", "short", "trailing", "speed",
                                "stride", "distance", "empty"]))
    if how == "odd":
        return good.hex()[:-1]
    if how == "not_hex":
        text = good.hex()
        at = draw(st.integers(0, len(text) - 1))
        return text[:at] + draw(st.sampled_from(list("gxz -:_"))) + text[at + 1:]
    if how == "reserved":
        return _pack(flags | draw(st.sampled_from([8, 16, 32, 64, 128])), speed, cadence,
                     stride, distance).hex()
    if how == "short":
        return good[:draw(st.integers(1, len(good) - 1))].hex()
    if how == "trailing":
        return (good + draw(st.binary(min_size=1, max_size=12))).hex()
    if how == "speed":
        return _pack(flags, draw(st.integers(SPEED_MAX + 1, 0xFFFF)), cadence, stride,
                     distance).hex()
    if how == "stride":
        return _pack(flags | FLAG_STRIDE, speed, cadence,
                     draw(st.integers(STRIDE_MAX + 1, 0xFFFF)), distance).hex()
    if how == "distance":
        return _pack(flags | FLAG_DISTANCE, speed, cadence, stride,
                     draw(st.integers(DISTANCE_MAX + 1, 0xFFFFFFFF))).hex()
    return ""


@st.composite
def broken_rsc(draw: st.DrawFn) -> Doc:
    doc = draw(valid_rsc())
    readings: list[Doc] = [dict(r) for r in doc["readings"]]
    i = draw(st.integers(0, len(readings) - 1))
    how = draw(st.sampled_from(["measurement", "measurement", "t", "hex_type", "order",
                                "reading_key", "envelope"]))
    if how == "measurement":
        readings[i]["hex"] = draw(_bad_measurement())
    elif how == "t":
        readings[i]["t"] = draw(st.one_of(_bad_num(T0, T1), st.none(),
                                          st.integers(int(T0), int(T1)).map(str)))
    elif how == "hex_type":
        readings[i]["hex"] = draw(st.one_of(st.integers(), st.none(), _CONTAINERS))
    elif how == "order":
        readings[-1]["t"] = last = max(readings[-1]["t"], T0 + 1)
        readings.append({"t": draw(st.floats(T0, last, exclude_max=True)), "hex": "040003aa"})
    elif how == "reading_key":
        key = draw(st.sampled_from(["t", "hex", "extra"]))
        if key == "extra":
            readings[i]["rssi"] = -60
        else:
            del readings[i][key]
    else:
        envelope = {
            "seq": Field(SEQ.valid, SEQ.bad),
            "session_id": Field(SESSION_ID.valid, _bad_str(1, 128)),
            "readings": Field(st.just([]), st.one_of(st.just([]), st.integers(), _LETTERS), True),
        }
        # the envelope has no "v" either, so the "version" break is an unknown key
        return draw(_break_flat({**doc, "readings": readings}, envelope,
                                {"seq", "session_id", "readings"}))
    return {**doc, "readings": readings}


@settings(FUZZ, max_examples=MAX_EXAMPLES["rsc"])
@given(bad_payload(broken_rsc(), valid_rsc()))
def test_rsc_rejects_bad_payloads(payload: bytes) -> None:
    _assert_rejected(decode_rsc, payload)


@given(valid_rsc())
@settings(max_examples=200, deadline=None)
def test_valid_rsc_payloads_decode(doc: Doc) -> None:
    batch = decode_rsc(_dumps(doc))
    assert len(batch.samples) == len(doc["readings"])


@given(st.lists(rsc_raw(), min_size=1, max_size=8), _valid_num(T0, T1 - 100))
@settings(max_examples=1000, deadline=None)
def test_rsc_round_trip_exact(raws: list[tuple[int, int, int, int | None, int | None]],
                              t0: float) -> None:
    measurements = []
    for flags, speed, cadence, stride, distance in raws:
        m = encode_rsc(speed / 256, cadence,
                       None if stride is None else stride / 100,
                       None if distance is None else distance / 10,
                       running=bool(flags & FLAG_RUNNING))
        assert m == _pack(flags, speed, cadence, stride, distance)
        measurements.append(m)
    batch = decode_rsc(encode_rsc_payload([(t0 + i, m) for i, m in enumerate(measurements)],
                                          seq=7, session_id="s-1"))
    assert batch.seq == 7 and batch.session_id == "s-1"
    running = any(flags & FLAG_RUNNING for flags, *_ in raws)
    assert batch.sport.value == ("running" if running else "walking")
    for sample, (_, speed, cadence, stride, distance) in zip(batch.samples, raws, strict=True):
        assert sample.speed_mps == speed / 256
        assert sample.cadence_spm == cadence
        assert sample.step_length_m == (None if stride is None else stride / 100)
        assert sample.distance_m == (None if distance is None else distance / 10)
        # and back to the very same bytes
        assert encode_rsc(sample.speed_mps, sample.cadence_spm, sample.step_length_m,
                          sample.distance_m, running=True)[1:] == \
            _pack(0, speed, cadence, stride, distance)[1:]


@given(st.floats(0, 15), st.floats(0, 255), st.floats(0, 4), st.floats(0, 1_000_000),
       st.booleans())
@settings(max_examples=500, deadline=None)
def test_rsc_round_trip_within_resolution(speed: float, cadence: float, step: float,
                                          distance: float, running: bool) -> None:
    m = encode_rsc(speed, cadence, step, distance, running=running)
    s = decode_rsc(encode_rsc_payload([(T0, m)])).samples[0]
    assert s.speed_mps is not None and abs(s.speed_mps - speed) <= 0.5 / 256
    assert s.cadence_spm is not None and abs(s.cadence_spm - cadence) <= 0.5
    assert s.step_length_m is not None and abs(s.step_length_m - step) <= 0.005 + 1e-12
    assert s.distance_m is not None and abs(s.distance_m - distance) <= 0.05 + 1e-9


def test_encode_rsc_refuses_what_does_not_fit() -> None:
    for kwargs in ({"speed_mps": 256.0, "cadence_spm": 1}, {"speed_mps": 1, "cadence_spm": 256},
                   {"speed_mps": -1, "cadence_spm": 1},
                   {"speed_mps": 1, "cadence_spm": 1, "step_length_m": 655.36}):
        try:
            encode_rsc(**kwargs)
        except ValueError as exc:
            assert "does not fit" in str(exc)
        else:
            raise AssertionError(f"encoded {kwargs}")


def test_rsc_reading_count_limits() -> None:
    m = encode_rsc(3.0, 170, 1.0, 1234.5)
    full = [(T0 + i * 0.5, m) for i in range(20_000)]
    assert len(decode_rsc(encode_rsc_payload(full)).samples) == 20_000
    _assert_rejected(decode_rsc, encode_rsc_payload([*full, (T0 + 10_000, m)]))
