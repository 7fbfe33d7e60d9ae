"""FIT activity files (a watch syncs the whole run afterwards) -> contract sample batches.

Pure: reads bytes or a path, returns a :class:`FitActivity` (one :class:`FitLeg` per FIT
``session`` message, each a run to import or a leg skipped with its reason) or raises
:class:`FitRejected`. The whole file is parsed before anything is built, so a corrupt or
truncated file yields nothing at all, never a partial run.

Multisport files (a triathlon: swim, transition, bike, run) hold one ``session`` message per
leg, each with its ``sport``, ``start_time`` and ``total_elapsed_time``, and their records in
time order. A record belongs to the last leg that started at or before it (a record before
the first leg's start belongs to the first leg), so every record lands in exactly one leg.
Run and walk legs become runs of their own, each with its own session id and sequence base;
other legs are skipped with their sport and duration.

Each run keeps the device's own session totals where the file has them:
``total_timer_time`` (``FitRun.total_timer_s``), ``total_distance`` and, for runs and walks,
``total_strides`` x 2 as the step count (``FitRun.device_steps``; Garmin counts strides,
one per two steps: garmin-fenix-5-run.fit's 78 strides in 56.9 s are its 167 spm).

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

import bisect
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
    """One imported run (a whole file, or one leg of a multisport file): its identity,
    sample batches and the device's own totals for it."""

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
    device_steps: int | None = None  # 2 x the session's total_strides

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.batches for s in b.samples]


@dataclass(frozen=True, slots=True)
class FitLeg:
    """One FIT ``session`` of an activity: a run to import, or a leg skipped and why."""

    index: int  # 0-based, in the file's order
    sport: str  # the FIT sport name: running, walking, cycling, swimming, transition, ...
    start_t: float
    timer_s: float | None  # the device's total_timer_time
    distance_m: float | None  # the device's total_distance
    records: int
    run: FitRun | None = None
    skip_reason: str | None = None
    cadence_spm: float | None = None  # means of the leg's records (runs and walks)
    stance_ms: float | None = None
    balance_left_pct: float | None = None


@dataclass(frozen=True, slots=True)
class FitActivity:
    """A whole FIT activity file: its device and its legs (one for an ordinary run)."""

    device: str
    legs: tuple[FitLeg, ...]

    @property
    def runs(self) -> tuple[FitRun, ...]:
        return tuple(leg.run for leg in self.legs if leg.run is not None)

    @property
    def skipped(self) -> tuple[FitLeg, ...]:
        return tuple(leg for leg in self.legs if leg.run is None)


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


_IMPORTS = "StrideWatch imports runs and walks"


def _file_sport(parsed: _Parsed) -> Sport | str | None:
    """The sport of the ``sport`` messages, for sessions that do not name their own."""
    return next((s for s in map(_sport_of, parsed.sport_msgs) if s is not None), None)


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


def _number(values: dict[str, Any], name: str) -> float | None:
    value = values.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(float(value), 3)
    return None


def _strides(session: dict[str, Any]) -> int | None:
    # total_cycles is total_strides for running and walking sessions (a subfield of it)
    value = session.get("total_strides", session.get("total_cycles"))
    return int(value) if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True, slots=True)
class _LegPlan:
    sport: Sport | str | None
    start_t: float | None
    session: dict[str, Any]
    records: list[tuple[dict[str, Any], dict[str, Any]]]


def _split(parsed: _Parsed) -> list[_LegPlan]:
    """One plan per session, each with its records; one plan for a single-session file."""
    sessions = [(s, _epoch(s.get("start_time"))) for s in parsed.sessions]
    fallback = _file_sport(parsed)
    if len(sessions) <= 1 or any(start is None for _, start in sessions):
        # one run, or sessions without times to split by: the whole file is one leg
        session = sessions[0][0] if sessions else {}
        found = [s for s in (_sport_of(x) for x, _ in sessions) if s is not None]
        refused = sorted({str(s) for s in found if not isinstance(s, Sport)})
        sport: Sport | str | None = (", ".join(refused) if refused
                                     else found[0] if found else fallback)
        start = sessions[0][1] if sessions else None
        return [_LegPlan(sport, start, session, parsed.records)]
    ordered = sorted(sessions, key=lambda pair: pair[1] or 0.0)
    starts = [start or 0.0 for _, start in ordered]
    buckets: list[list[tuple[dict[str, Any], dict[str, Any]]]] = [[] for _ in ordered]
    for record in parsed.records:
        t = _epoch(record[0].get("timestamp"))
        # the last leg started at or before the record; one before the first start (or
        # without a time) goes with the first leg, where _samples counts it if unusable
        i = 0 if t is None else max(0, bisect.bisect_right(starts, t) - 1)
        buckets[i].append(record)
    return [_LegPlan(_sport_of(session) or fallback, start, session, bucket)
            for (session, start), bucket in zip(ordered, buckets, strict=True)]


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(sum(kept) / len(kept), 2) if kept else None


def _build_run(plan: _LegPlan, device: str, sport: Sport, samples: list[Sample],
               dropped: int, skipped: int, batch_size: int) -> FitRun:
    session = plan.session
    # the watch's own start and end when it wrote them, else the first and last sample
    session_end = _epoch(session.get("timestamp"))
    start_t = plan.start_t if plan.start_t is not None else samples[0].t
    end_t = max(samples[-1].t, session_end if session_end is not None else samples[-1].t)
    # content-derived, so importing the same file twice names the same session
    session_id = f"{device}-{int(start_t)}"
    batch_count = math.ceil(len(samples) / batch_size)
    if batch_count > MAX_BATCHES:
        raise FitRejected(f"{len(samples)} samples make {batch_count} batches of {batch_size}; "
                          f"at most {MAX_BATCHES} fit the sequence scheme, use larger batches")
    base_seq = int(start_t) * MAX_BATCHES
    batches = [SampleBatch(seq=base_seq + i, session_id=session_id, sport=sport, samples=chunk)
               for i, chunk in enumerate(_chunks(samples, batch_size))]
    strides = _strides(session)
    return FitRun(device=device, sport=sport, session_id=session_id, start_t=start_t,
                  end_t=end_t, batches=batches, samples_count=len(samples),
                  total_distance_m=_number(session, "total_distance"),
                  total_timer_s=_number(session, "total_timer_time"),
                  dropped_values=dropped, skipped_records=skipped,
                  device_steps=2 * strides if strides is not None else None)


def _leg(index: int, plan: _LegPlan, device: str, batch_size: int) -> FitLeg:
    session = plan.session
    timer_s = _number(session, "total_timer_time")
    distance_m = _number(session, "total_distance")
    sport = plan.sport
    name = sport.value if isinstance(sport, Sport) else (sport or "unknown")
    start = plan.start_t
    if start is None:
        start = next((t for t in (_epoch(r[0].get("timestamp")) for r in plan.records)
                      if t is not None), 0.0)

    def skipped(reason: str) -> FitLeg:
        return FitLeg(index, name, start, timer_s, distance_m, len(plan.records),
                      skip_reason=reason)

    if sport is None:
        return skipped(f"file does not say its sport; {_IMPORTS}")
    if not isinstance(sport, Sport):
        return skipped(f"sport is {sport}; {_IMPORTS}")
    samples, dropped, bad = _samples(plan.records)
    if not samples:
        return skipped("activity has no records with a timestamp; nothing to import")
    run = _build_run(plan, device, sport, samples, dropped, bad, batch_size)
    return FitLeg(index, name, run.start_t, timer_s, distance_m, len(plan.records), run=run,
                  cadence_spm=_mean(s.cadence_spm for s in samples if s.cadence_spm),
                  stance_ms=_mean(s.gct_ms for s in samples),
                  balance_left_pct=_mean(s.gct_balance_pct for s in samples))


def read_activity(path_or_bytes: str | os.PathLike[str] | bytes, *, batch_size: int = 300,
                  progress: Callable[[int], None] | None = None) -> FitActivity:
    """Read one FIT activity file: every leg, each a run to import or skipped with a reason.

    ``progress`` is called with the number of records read so far (every 1,000 and once at
    the end). Raises :class:`FitRejected` for a file that is not a readable activity
    (corrupt, truncated, another FIT file type); an unreadable path raises :class:`OSError`
    as usual. A file whose legs are all skipped is returned with the reasons, not raised.
    """
    if not 1 <= batch_size <= 20_000:
        raise ValueError(f"batch_size must be 1..20000, got {batch_size}")
    parsed = _read(path_or_bytes, progress)
    if parsed.file_type is None:
        raise FitRejected("no file_id message; not a FIT activity file")
    if parsed.file_type != "activity":
        raise FitRejected(f"FIT file type is {parsed.file_type}, not an activity")
    device = _device_id(parsed.manufacturer, parsed.product, parsed.serial)
    legs = tuple(_leg(i, plan, device, batch_size) for i, plan in enumerate(_split(parsed)))
    return FitActivity(device=device, legs=legs)


def refusal(activity: FitActivity) -> str:
    """Why nothing of ``activity`` is imported (it has no run or walk leg)."""
    reasons = list(dict.fromkeys(leg.skip_reason for leg in activity.legs if leg.skip_reason))
    if len(activity.legs) > 1 and all(r.startswith("sport is ") for r in reasons):
        sports = ", ".join(sorted({leg.sport for leg in activity.legs}))
        return f"sport is {sports}; {_IMPORTS}"
    return "; ".join(reasons) if reasons else "nothing to import"


def read_fit(path_or_bytes: str | os.PathLike[str] | bytes, *, batch_size: int = 300,
             progress: Callable[[int], None] | None = None) -> FitRun:
    """The one run of a FIT activity file (:func:`read_activity` for multisport files).

    Raises :class:`FitRejected` when the file has no run or walk, or more than one.
    """
    activity = read_activity(path_or_bytes, batch_size=batch_size, progress=progress)
    runs = activity.runs
    if not runs:
        raise FitRejected(refusal(activity))
    if len(runs) > 1:
        raise FitRejected(f"a multisport file with {len(runs)} runs; read it with "
                          "read_activity")
    return runs[0]


def iter_fit_files(path: str | os.PathLike[str]) -> list[Path]:
    """``*.fit`` files (any case) directly in a folder, sorted; a file path is returned as is."""
    root = Path(path)
    if root.is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".fit")
