"""FIT activity files (a watch syncs the whole run afterwards) -> contract sample batches.

Pure: reads bytes or a path, returns a :class:`FitRun` or raises :class:`FitRejected`.
The whole file is parsed before anything is built, so a corrupt or truncated file yields
nothing at all, never a partial run.

Mapping of ``record`` messages to :class:`~ingest.contract.Sample`:

==========================  ==================================================================
``cadence_spm``             2 x (``cadence`` + ``fractional_cadence``); see :func:`_cadence_spm`
``gct_ms``                  ``stance_time`` (ms)
``gct_balance_pct``         ``stance_time_balance`` (%, left foot's share, Garmin convention)
``step_length_m``           ``step_length`` mm / 1000
``vertical_oscillation_cm`` ``vertical_oscillation`` mm / 10
``speed_mps``               ``enhanced_speed``, else ``speed``
``distance_m``              ``distance``
``heart_rate_bpm``          ``heart_rate``
``power_w``                 ``power``, else a developer field named ``Power`` (Stryd's app)
==========================  ==================================================================

Other developer fields are ignored: Stryd's ``Form Power`` and ``Leg Spring Stiffness`` have
no contract field, and its developer ``Speed``/``Distance`` duplicate the native fields the
watch chose to record. Running-dynamics sensors write 0 for stance time, step length and
vertical oscillation while they have no reading; those zeros become "absent". A value outside
the contract's range is dropped from its sample (counted in ``FitRun.dropped_values``) instead
of refusing the run; a record without a usable timestamp is skipped (``skipped_records``).
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import fitdecode
from pydantic import TypeAdapter, ValidationError

from ingest.contract import Sample, SampleBatch, Sport, is_valid_id
from ingest.decoders import Rejected
from ingest.decoders.native import describe_validation_error

MAX_FIT_BYTES = 64 * 1024 * 1024
MAX_BATCHES = 10_000  # seq = int(start_t) * 10_000 + batch index must not spill over
PROGRESS_EVERY = 1_000

_SPORTS = {"running": Sport.RUNNING, "walking": Sport.WALKING}
_RUNNING_SUB_SPORTS = {"trail": Sport.TRAIL_RUNNING, "treadmill": Sport.TREADMILL,
                       "indoor_running": Sport.TREADMILL}


class FitRejected(Rejected):
    """A FIT file StrideWatch will not import; ``reason`` says why."""


@dataclass(frozen=True, slots=True)
class FitRun:
    """One imported run: its identity, sample batches and the file's own summary."""

    device: str
    sport: Sport
    session_id: str
    start_t: float
    end_t: float
    batches: list[SampleBatch]
    samples_count: int
    total_distance_m: float | None  # session summary, to cross-check the samples
    total_timer_s: float | None
    dropped_values: int = 0
    skipped_records: int = 0
    shoe: str | None = None


@dataclass(slots=True)
class _Parsed:
    file_type: object = None
    manufacturer: object = None
    product: object = None
    serial: object = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    sport_msgs: list[dict[str, Any]] = field(default_factory=list)
    records: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)


def _field_check(name: str) -> TypeAdapter[Any]:
    info = Sample.model_fields[name]
    # `t` keeps its range in the field's metadata, the optional fields inside their type
    annotation: Any = (Annotated[(info.annotation, *info.metadata)] if info.metadata
                       else info.annotation)
    return TypeAdapter(annotation)


# ranges come from the contract itself, so a range change there needs no change here
_FIELD_CHECKS: dict[str, TypeAdapter[Any]] = {name: _field_check(name)
                                              for name in Sample.model_fields}


def _message_values(frame: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(native fields, developer fields) by name; the first non-None value of a name wins."""
    native: dict[str, Any] = {}
    dev: dict[str, Any] = {}
    for fd in frame.fields:
        if fd.value is None:
            continue
        is_dev = fd.field_def is not None and fd.field_def.is_dev
        target = dev if is_dev else native
        target.setdefault(fd.name, fd.value)
    return native, dev


def _parse(source: io.BufferedIOBase | io.BytesIO,
           progress: Callable[[int], None] | None) -> _Parsed:
    parsed = _Parsed()
    frames = 0
    with fitdecode.FitReader(source, check_crc=fitdecode.CrcCheck.RAISE,
                             error_handling=fitdecode.ErrorHandling.RAISE) as reader:
        for frame in reader:
            frames += 1
            if not isinstance(frame, fitdecode.FitDataMessage):
                continue
            name = frame.name
            if name == "record":
                parsed.records.append(_message_values(frame))
                if progress is not None and len(parsed.records) % PROGRESS_EVERY == 0:
                    progress(len(parsed.records))
            elif name == "file_id" and parsed.file_type is None:
                values, _ = _message_values(frame)
                parsed.file_type = values.get("type")
                parsed.manufacturer = values.get("manufacturer")
                parsed.product = values.get("garmin_product", values.get("product"))
                parsed.serial = values.get("serial_number")
            elif name == "session":
                parsed.sessions.append(_message_values(frame)[0])
            elif name == "sport":
                parsed.sport_msgs.append(_message_values(frame)[0])
    if frames == 0:
        raise FitRejected("file is empty")
    if progress is not None:
        progress(len(parsed.records))
    return parsed


def _read(path_or_bytes: str | os.PathLike[str] | bytes,
          progress: Callable[[int], None] | None) -> _Parsed:
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        data = bytes(path_or_bytes)
    else:
        path = Path(path_or_bytes)
        size = path.stat().st_size
        if size > MAX_FIT_BYTES:
            raise FitRejected(f"file is {size} bytes; the limit is {MAX_FIT_BYTES}")
        data = path.read_bytes()
    if len(data) > MAX_FIT_BYTES:
        raise FitRejected(f"file is {len(data)} bytes; the limit is {MAX_FIT_BYTES}")
    try:
        return _parse(io.BytesIO(data), progress)
    except FitRejected:
        raise
    except fitdecode.FitHeaderError as exc:
        raise FitRejected(f"not a readable FIT file (corrupt or missing header: {exc})") from None
    except fitdecode.FitEOFError as exc:
        raise FitRejected(f"FIT file is truncated ({exc}); sync it again from the watch") from None
    except fitdecode.FitCRCError as exc:
        raise FitRejected(f"FIT file is corrupt (CRC mismatch: {exc})") from None
    except fitdecode.FitError as exc:
        raise FitRejected(f"FIT file is corrupt ({exc})") from None
    except Exception as exc:
        # fitdecode is a parser of untrusted bytes; any internal error means the file is bad
        raise FitRejected(f"FIT file could not be decoded ({type(exc).__name__}: {exc})"
                          ) from None


def _slug(value: object) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", str(value).lower()).strip("-_")


def _device_id(manufacturer: object, product: object, serial: object) -> str:
    maker = _slug(manufacturer) if manufacturer is not None else "unknown"
    # the serial is unique per maker; the product name only stands in when it is missing
    tail = str(serial) if isinstance(serial, int) and serial > 0 else _slug(product or "")
    device = f"fit-{maker}-{tail}" if tail else f"fit-{maker}"
    device = device[:64].rstrip("-_")
    if not is_valid_id(device):  # pragma: no cover - _slug keeps the pattern
        raise FitRejected(f"cannot derive a device id from {manufacturer!r}/{serial!r}")
    return device


def _sport_of(values: dict[str, Any]) -> Sport | str | None:
    """Contract sport, or the FIT sport name when StrideWatch does not import it."""
    sport = values.get("sport")
    if sport is None:
        return None
    if sport not in _SPORTS:
        return str(sport)
    if sport == "running":
        return _RUNNING_SUB_SPORTS.get(str(values.get("sub_sport")), Sport.RUNNING)
    return _SPORTS[str(sport)]


def _pick_sport(parsed: _Parsed) -> Sport:
    found = [s for s in map(_sport_of, parsed.sessions) if s is not None]
    if not found:
        found = [s for s in map(_sport_of, parsed.sport_msgs) if s is not None]
    if not found:
        raise FitRejected("file does not say its sport; StrideWatch imports runs and walks")
    refused = sorted({s for s in found if not isinstance(s, Sport)})
    if refused:
        raise FitRejected(f"sport is {', '.join(refused)}; StrideWatch imports runs and walks")
    first = found[0]
    assert isinstance(first, Sport)
    return first


def _epoch(value: object) -> float | None:
    """Epoch seconds of a FIT timestamp, None when absent or outside the contract's years."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        t = value.timestamp()
        if _valid("t", t):
            return t
    return None


def _cadence_spm(native: dict[str, Any]) -> float | None:
    # FIT `cadence` is strides/min ("rpm") and `fractional_cadence` is the fractional part of
    # that same value (profile: "fractional part of the cadence", rpm, scale 128). So
    # spm = 2 x (cadence + fractional_cadence), not 2 x cadence + fractional_cadence.
    # Checked on garmin-fenix-5-run.fit: fractional_cadence is only ever 0 or 0.5 although the
    # field resolves 1/128, i.e. the watch counts whole steps and stores half a stride for an
    # odd one; 89 + 0.5 -> 179 spm (178.5 would be a half step). The session agrees: 78
    # total_strides in 56.9 s = 82.3 strides/min vs avg_running_cadence 83 +
    # avg_fractional_cadence 0.67 = 83.67 strides/min, i.e. 167 spm.
    cadence = native.get("cadence")
    if cadence is None:
        return None
    fraction = native.get("fractional_cadence") or 0.0
    return round(2 * (float(cadence) + float(fraction)), 3)


def _record_fields(native: dict[str, Any], dev: dict[str, Any]) -> dict[str, object]:
    def num(name: str, scale: float = 1.0, zero_is_absent: bool = False) -> float | None:
        value = native.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        if zero_is_absent and value == 0:
            return None
        return round(float(value) * scale, 6)

    power = num("power")
    if power is None:
        dev_power = next((v for k, v in dev.items() if k.strip().lower() == "power"), None)
        if isinstance(dev_power, int | float) and not isinstance(dev_power, bool):
            power = float(dev_power)
    speed = num("enhanced_speed")
    return {
        "cadence_spm": _cadence_spm(native),
        "gct_ms": num("stance_time", zero_is_absent=True),
        "gct_balance_pct": num("stance_time_balance"),
        "step_length_m": num("step_length", 0.001, zero_is_absent=True),
        "vertical_oscillation_cm": num("vertical_oscillation", 0.1, zero_is_absent=True),
        "speed_mps": speed if speed is not None else num("speed"),
        "distance_m": num("distance"),
        "heart_rate_bpm": num("heart_rate"),
        "power_w": power,
    }


def _valid(name: str, value: float) -> bool:
    try:
        _FIELD_CHECKS[name].validate_python(value)
    except ValidationError:
        return False
    return True


def _samples(records: Iterable[tuple[dict[str, Any], dict[str, Any]]]
             ) -> tuple[list[Sample], int, int]:
    """(samples, dropped values, skipped records)."""
    samples: list[Sample] = []
    dropped = skipped = 0
    last_t = -math.inf
    for native, dev in records:
        t = _epoch(native.get("timestamp"))
        # a record before the previous one cannot join a time-ordered batch
        if t is None or t < last_t:
            skipped += 1
            continue
        kept: dict[str, object] = {"t": t}
        for name, value in _record_fields(native, dev).items():
            if value is None:
                continue
            assert isinstance(value, float)
            if _valid(name, value):
                kept[name] = value
            else:
                dropped += 1
        try:
            samples.append(Sample.model_validate(kept))
        except ValidationError as exc:  # pragma: no cover - ranges were checked above
            raise FitRejected(f"record at {t}: {describe_validation_error(exc)}") from None
        last_t = t
    return samples, dropped, skipped


def _chunks(items: list[Sample], size: int) -> Iterator[list[Sample]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _sum_of(sessions: list[dict[str, Any]], name: str) -> float | None:
    values = [float(s[name]) for s in sessions if isinstance(s.get(name), int | float)]
    return round(sum(values), 3) if values else None


def read_fit(path_or_bytes: str | os.PathLike[str] | bytes, *, batch_size: int = 300,
             progress: Callable[[int], None] | None = None) -> FitRun:
    """Import one FIT activity file.

    ``progress`` is called with the number of records read so far (every 1,000 and once at
    the end). Raises :class:`FitRejected` for files StrideWatch will not import; an
    unreadable path raises :class:`OSError` as usual.
    """
    if not 1 <= batch_size <= 20_000:
        raise ValueError(f"batch_size must be 1..20000, got {batch_size}")
    parsed = _read(path_or_bytes, progress)
    if parsed.file_type is None:
        raise FitRejected("no file_id message; not a FIT activity file")
    if parsed.file_type != "activity":
        raise FitRejected(f"FIT file type is {parsed.file_type}, not an activity")
    sport = _pick_sport(parsed)
    sessions = parsed.sessions
    samples, dropped, skipped = _samples(parsed.records)
    if not samples:
        raise FitRejected("activity has no records with a timestamp; nothing to import")

    # the watch's own start and end when it wrote them, else the first and last sample
    session_start = _epoch(sessions[0].get("start_time")) if sessions else None
    session_end = _epoch(sessions[-1].get("timestamp")) if sessions else None
    start_t = session_start if session_start is not None else samples[0].t
    end_t = max(samples[-1].t, session_end if session_end is not None else samples[-1].t)
    device = _device_id(parsed.manufacturer, parsed.product, parsed.serial)
    # content-derived, so importing the same file twice names the same session
    session_id = f"{device}-{int(start_t)}"

    batch_count = math.ceil(len(samples) / batch_size)
    if batch_count > MAX_BATCHES:
        raise FitRejected(f"{len(samples)} samples make {batch_count} batches of {batch_size}; "
                          f"at most {MAX_BATCHES} fit the sequence scheme, use larger batches")
    base_seq = int(start_t) * MAX_BATCHES
    batches = [SampleBatch(seq=base_seq + i, session_id=session_id, sport=sport, samples=chunk)
               for i, chunk in enumerate(_chunks(samples, batch_size))]
    return FitRun(device=device, sport=sport, session_id=session_id, start_t=start_t,
                  end_t=end_t, batches=batches, samples_count=len(samples),
                  total_distance_m=_sum_of(sessions, "total_distance"),
                  total_timer_s=_sum_of(sessions, "total_timer_time"),
                  dropped_values=dropped, skipped_records=skipped)


def iter_fit_files(path: str | os.PathLike[str]) -> list[Path]:
    """``*.fit`` files (any case) directly in a folder, sorted; a file path is returned as is."""
    root = Path(path)
    if root.is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".fit")
