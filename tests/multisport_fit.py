"""A small triathlon-style FIT file built with ``fit-tool``: swim, transition, bike, run, run.

The legs follow the FIT SDK's multisport activity layout: one ``session`` message per leg
(its ``start_time``, ``total_elapsed_time``, ``total_timer_time``, ``sport``), written after
the leg's records, each leg's records in time order, and one ``activity`` message at the
end. The figures are fixed, so every test computes its expectations from :data:`LEGS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fit_tool.fit_file_builder import FitFileBuilder
from fit_tool.profile.messages.activity_message import ActivityMessage
from fit_tool.profile.messages.event_message import EventMessage
from fit_tool.profile.messages.file_id_message import FileIdMessage
from fit_tool.profile.messages.lap_message import LapMessage
from fit_tool.profile.messages.record_message import RecordMessage
from fit_tool.profile.messages.session_message import SessionMessage
from fit_tool.profile.profile_type import Event, EventType, FileType, Manufacturer, Sport

SERIAL = 3_000_111_222
DEVICE = f"fit-garmin-{SERIAL}"
START = datetime(2019, 5, 26, 7, 0, 0, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Leg:
    sport: Sport
    offset_s: int  # from START
    records: int  # one a second
    speed_mps: float
    cadence_rpm: int | None = None  # strides (running) per minute
    stance_ms: float | None = None
    balance_pct: float | None = None
    strides: int | None = None  # the device's session total

    @property
    def start_t(self) -> float:
        return START + self.offset_s

    def start_at(self, start: float) -> float:
        """This leg's start in a file built with ``multisport_bytes(start)``."""
        return start + self.offset_s

    @property
    def elapsed_s(self) -> float:
        return float(self.records - 1)

    @property
    def distance_m(self) -> float:
        return self.speed_mps * self.elapsed_s


LEGS = (
    Leg(Sport.SWIMMING, 0, 40, 1.0),
    Leg(Sport.TRANSITION, 60, 20, 0.8),
    Leg(Sport.CYCLING, 100, 60, 8.0, cadence_rpm=85),
    Leg(Sport.RUNNING, 200, 90, 3.2, cadence_rpm=86, stance_ms=250.0, balance_pct=51.5,
        strides=127),
    Leg(Sport.RUNNING, 320, 70, 3.0, cadence_rpm=84, stance_ms=262.0, balance_pct=49.0,
        strides=97),
)
RUN_LEGS = tuple(leg for leg in LEGS if leg.sport == Sport.RUNNING)


def _ms(t: float) -> int:
    return round(t * 1000)


def multisport_bytes(start: float = START) -> bytes:
    """The file; ``start``: when the swim starts (epoch seconds, whole)."""
    builder = FitFileBuilder(auto_define=True, min_string_size=50)
    file_id = FileIdMessage()
    file_id.type = FileType.ACTIVITY
    file_id.manufacturer = Manufacturer.GARMIN.value
    file_id.product = 2697
    file_id.serial_number = SERIAL
    file_id.time_created = _ms(start)
    builder.add(file_id)
    event = EventMessage()
    event.event = Event.TIMER
    event.event_type = EventType.START
    event.timestamp = _ms(start)
    builder.add(event)
    for index, leg in enumerate(LEGS):
        leg_start = leg.start_at(start)
        for i in range(leg.records):
            record = RecordMessage()
            record.timestamp = _ms(leg_start + i)
            record.distance = leg.speed_mps * i
            record.speed = leg.speed_mps
            if leg.cadence_rpm is not None:
                record.cadence = leg.cadence_rpm
            if leg.stance_ms is not None:
                record.stance_time = leg.stance_ms
            if leg.balance_pct is not None:
                record.stance_time_balance = leg.balance_pct
            builder.add(record)
        end_ms = _ms(leg_start + leg.elapsed_s)
        lap = LapMessage()
        lap.timestamp = end_ms
        lap.start_time = _ms(leg_start)
        lap.total_elapsed_time = leg.elapsed_s
        lap.total_timer_time = leg.elapsed_s
        lap.sport = leg.sport
        builder.add(lap)
        session = SessionMessage()
        session.message_index = index
        session.timestamp = end_ms
        session.start_time = _ms(leg_start)
        session.total_elapsed_time = leg.elapsed_s
        session.total_timer_time = leg.elapsed_s
        session.total_distance = leg.distance_m
        session.sport = leg.sport
        session.first_lap_index = index
        session.num_laps = 1
        if leg.strides is not None:
            session.total_cycles = leg.strides
        builder.add(session)
    last = LEGS[-1]
    activity = ActivityMessage()
    activity.timestamp = _ms(last.start_at(start) + last.elapsed_s)
    activity.num_sessions = len(LEGS)
    activity.total_timer_time = sum(leg.elapsed_s for leg in LEGS)
    builder.add(activity)
    return bytes(builder.build().to_bytes())
