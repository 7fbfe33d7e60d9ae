"""The native JSON batch (contract v1): samples, session start/end, pain and injury
reports."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ingest.contract import InjuryReport, PainReport, SampleBatch, SessionEvent
from ingest.decoders import Rejected

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024

M = TypeVar("M", bound=BaseModel)


def parse_json(payload: bytes) -> object:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected(f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    try:
        # decode first: json.loads(bytes) would also accept UTF-16/32, which v1 does not
        return json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise Rejected("payload is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise Rejected(f"payload is not JSON: {exc.msg} at line {exc.lineno} column "
                       f"{exc.colno}") from None
    except RecursionError:
        raise Rejected("payload JSON is nested too deeply") from None


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """First few problems as 'where: what', short enough for a log line."""
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _validate(model: type[M], payload: bytes) -> M:
    data = parse_json(payload)
    if not isinstance(data, dict):
        raise Rejected(f"payload must be a JSON object, got {type(data).__name__}")
    try:
        # strict: a device sending true or "12" for a number has a bug worth seeing
        return model.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        raise Rejected(f"invalid {model.__name__}: {describe_validation_error(exc)}") from None


def decode_samples(payload: bytes) -> SampleBatch:
    return _validate(SampleBatch, payload)


def decode_session(payload: bytes) -> SessionEvent:
    return _validate(SessionEvent, payload)


def decode_pain(payload: bytes) -> PainReport:
    return _validate(PainReport, payload)


def decode_injury(payload: bytes) -> InjuryReport:
    return _validate(InjuryReport, payload)
