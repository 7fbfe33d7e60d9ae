"""Data contract v1: what devices publish over MQTT and what the bridge hands to Kafka.

MQTT topics (one subtree per runner so the broker ACL can say ``runners/%u/#``):

- ``runners/<runner>/<device>/samples``  a :class:`SampleBatch`
- ``runners/<runner>/<device>/session``  a :class:`SessionEvent`
- ``runners/<runner>/pain``              a :class:`PainReport`
- ``runners/<runner>/injury``            an :class:`InjuryReport` (an ankle sprain)
- ``runners/<runner>/alerts``            alerts back to the runner (published by the pipeline)

Every message becomes one :class:`RunnerEvent` on Kafka, keyed by runner id. Units are
in the field names. Pure code: no broker client is imported here.
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic_core import PydanticCustomError

CONTRACT_VERSION = 1

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


RunnerId = Annotated[str, Field(pattern=ID_PATTERN)]
DeviceId = Annotated[str, Field(pattern=ID_PATTERN)]

# 2000-01-01 .. 2100-01-01: rejects milliseconds sent as seconds and zeroed clocks
_T_MIN = 946_684_800.0
_T_MAX = 4_102_444_800.0
EpochSeconds = Annotated[float, Field(ge=_T_MIN, le=_T_MAX, allow_inf_nan=False)]


def _range(lo: float, hi: float) -> object:
    return Field(ge=lo, le=hi, allow_inf_nan=False)


Cadence = Annotated[float, _range(0, 300)]
ContactMs = Annotated[float, _range(50, 2000)]
Percent = Annotated[float, _range(0, 100)]
StepLength = Annotated[float, _range(0, 4)]
Oscillation = Annotated[float, _range(0, 40)]
Speed = Annotated[float, _range(0, 15)]
Distance = Annotated[float, _range(0, 1_000_000)]
HeartRate = Annotated[float, _range(20, 250)]
Pronation = Annotated[float, _range(-45, 45)]
Impact = Annotated[float, _range(0, 30)]
Climb = Annotated[float, _range(0, 10_000)]
Power = Annotated[float, _range(0, 2000)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Foot(StrEnum):
    LEFT = "L"
    RIGHT = "R"


class Sport(StrEnum):
    RUNNING = "running"
    WALKING = "walking"
    TRAIL_RUNNING = "trail_running"
    TREADMILL = "treadmill"


class Surface(StrEnum):
    ROAD = "road"
    TRACK = "track"
    TRAIL = "trail"
    TREADMILL = "treadmill"
    GRASS = "grass"
    SAND = "sand"


class Sample(_Frozen):
    """One reading. Per-step devices set ``foot``; watches report averages without it."""

    t: EpochSeconds
    foot: Foot | None = None
    cadence_spm: Cadence | None = None
    gct_ms: ContactMs | None = None
    gct_balance_pct: Percent | None = None
    step_length_m: StepLength | None = None
    vertical_oscillation_cm: Oscillation | None = None
    speed_mps: Speed | None = None
    distance_m: Distance | None = None
    heart_rate_bpm: HeartRate | None = None
    pronation_deg: Pronation | None = None
    impact_g: Impact | None = None
    elevation_gain_m: Climb | None = None
    power_w: Power | None = None


class SampleBatch(_Frozen):
    """A batch from one device: ~1 s live, or a whole run on sync."""

    v: Literal[1] = 1
    seq: int = Field(ge=0, le=2**53)
    session_id: str | None = Field(default=None, min_length=1, max_length=128)
    sport: Sport = Sport.RUNNING
    samples: list[Sample] = Field(min_length=1, max_length=20_000)

    @model_validator(mode="after")
    def _time_ordered(self) -> SampleBatch:
        ts = [s.t for s in self.samples]
        if any(b < a for a, b in itertools.pairwise(ts)):
            raise ValueError("samples must be in time order")
        return self


class SessionEvent(_Frozen):
    """A run starts or ends; carries what the device knows about the context.

    ``timer_s`` and ``steps`` are the device's own totals for the whole run, when it has
    them (a watch's file carries them; an import sends them with both events). The stream
    then takes the run's duration and steps from them instead of computing them.
    """

    v: Literal[1] = 1
    seq: int = Field(ge=0, le=2**53)
    session_id: str = Field(min_length=1, max_length=128)
    phase: Literal["start", "end"]
    t: EpochSeconds
    sport: Sport = Sport.RUNNING
    shoe: str | None = Field(default=None, max_length=64)
    surface: Surface | None = None
    # the device's timer time (pauses excluded), up to a week
    timer_s: Annotated[float, _range(0, 7 * 86_400)] | None = None
    steps: int | None = Field(default=None, ge=0, le=5_000_000)


class PainWhen(StrEnum):
    DURING = "during"
    AFTER = "after"
    MORNING = "morning"
    NIGHT = "night"


class PainSite(StrEnum):
    """Where it hurts, in the guidance's terms: each site points at a different kind of
    ankle trouble, which free text could not."""

    ACHILLES = "achilles"  # back of the ankle / Achilles tendon
    OUTER_ANKLE_AFTER_ROLL = "outer_ankle_after_roll"
    OUTER_ANKLE_GRADUAL = "outer_ankle_gradual"  # came on gradually (peroneal area)
    INNER_ANKLE = "inner_ankle"  # round the inner ankle bone
    BONE_SPOT = "bone_spot"  # one pinpoint spot on a bone
    OTHER = "other"


_PAIN_SITES = frozenset(s.value for s in PainSite)
_WHERE_TEXT_MAX = 64


class Side(StrEnum):
    LEFT = "left"
    RIGHT = "right"
    BOTH = "both"


class PainReport(_Frozen):
    """A runner's own pain report from the phone app (0 = none, 10 = worst)."""

    v: Literal[1] = 1
    seq: int | None = Field(default=None, ge=0, le=2**53)
    t: EpochSeconds
    score: int = Field(ge=0, le=10)
    where: PainSite
    where_text: str | None = Field(default=None, max_length=_WHERE_TEXT_MAX)  # own words
    side: Side | None = None
    when: PainWhen
    pinpoint_on_bone: bool = False
    worse_as_run_goes_on: bool = False
    limping: bool = False  # the pain makes them limp
    had_to_stop: bool = False  # they could not run through it
    hop_hurts: bool = False  # sharp pain hopping on that leg (the hop test)

    @model_validator(mode="before")
    @classmethod
    def _free_text_where(cls, data: Any) -> Any:
        # apps older than the vocabulary send free text ("left ankle, outside"), and old
        # records on the topic hold it: keep their words and file them under "other".
        # Text the old contract refused ("", over 64 characters) still fails, at "where".
        if isinstance(data, dict):
            where = data.get("where")
            if (isinstance(where, str) and 0 < len(where) <= _WHERE_TEXT_MAX
                    and where not in _PAIN_SITES):
                data = {**data, "where": PainSite.OTHER.value}
                if data.get("where_text") is None:
                    data["where_text"] = where
        return data

    @property
    def dedup_seq(self) -> int:
        # a report without seq is identified by its time to the millisecond
        return self.seq if self.seq is not None else int(self.t * 1000)


class Rolled(StrEnum):
    IN = "in"  # the sole turned inward: the common outer-ankle (lateral) sprain
    OUT = "out"
    UNSURE = "unsure"


class Swelling(StrEnum):
    NONE = "none"
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


class InjuryPhase(StrEnum):
    INJURED = "injured"  # what happened, sent soon after the injury
    RECOVERY_CHECK = "recovery_check"  # the return-to-running entry criteria, when checked


_ENTRY_CRITERIA = ("weight_bearing_pain_free", "walks_without_limp",
                   "range_of_motion_near_full", "hop_pain_free")


class InjuryReport(_Frozen):
    """An ankle sprain reported from the phone app: what happened (phase "injured"), or the
    runner's check of the entry criteria for the return to running ("recovery_check")."""

    v: Literal[1] = 1
    seq: int | None = Field(default=None, ge=0, le=2**53)
    t: EpochSeconds
    injury: Literal["ankle_sprain"] = "ankle_sprain"
    phase: InjuryPhase
    side: Side | None = None
    # phase "injured": what happened
    rolled: Rolled | None = None
    heard_pop: bool = False
    swelling: Swelling | None = None
    bruising: bool = False
    could_take_four_steps: bool | None = None  # right after the injury (Ottawa ankle rules)
    # tender at the back edge or tip of either ankle bone (lowest 6 cm), over the navicular
    # or at the base of the fifth metatarsal (Ottawa ankle rules)
    bone_tenderness: bool = False
    grade: Literal[1, 2, 3] | None = None  # if a clinician graded it
    # phase "recovery_check": all four must hold before the return to running starts
    weight_bearing_pain_free: bool | None = None
    walks_without_limp: bool | None = None
    range_of_motion_near_full: bool | None = None
    hop_pain_free: bool | None = None

    @field_validator("grade", mode="before")
    @classmethod
    def _grade_is_a_whole_number(cls, value: Any) -> Any:
        # the Literal alone takes true for 1 and 2.0 for 2, even strict; numbers elsewhere
        # in the contract refuse both
        if isinstance(value, bool | float):
            raise PydanticCustomError("literal_error", "Input should be 1, 2 or 3")
        return value

    @model_validator(mode="after")
    def _fits_phase(self) -> InjuryReport:
        if self.phase is InjuryPhase.INJURED:
            if self.could_take_four_steps is None:
                # a red flag on its own, so it cannot be left out
                raise ValueError("an injured report needs could_take_four_steps: say whether "
                                 "you could take four steps after the injury")
            return self
        missing = [name for name in _ENTRY_CRITERIA if getattr(self, name) is None]
        if missing:
            raise ValueError("a recovery_check needs all four entry criteria (each true or "
                             f"false); missing: {', '.join(missing)}")
        # only what was set counts: apps may send every field with its default
        injured_only = [name for name, given in (
            ("rolled", self.rolled is not None), ("swelling", self.swelling is not None),
            ("heard_pop", self.heard_pop), ("bruising", self.bruising),
            ("grade", self.grade is not None)) if given]
        if injured_only:
            raise ValueError(f"a recovery_check must not carry {', '.join(injured_only)}: "
                             "those belong to the injured report")
        return self

    @property
    def entry_criteria_met(self) -> bool:
        """All four return-to-running entry criteria hold."""
        return all(getattr(self, name) is True for name in _ENTRY_CRITERIA)

    @property
    def red_flags(self) -> list[str]:
        """The Ottawa ankle rules signs of an injured report, in plain words (empty for a
        recovery check): reasons to get assessed, not a diagnosis."""
        if self.phase is not InjuryPhase.INJURED:
            return []
        flags = []
        if self.could_take_four_steps is False:
            flags.append("could not take four steps")
        if self.bone_tenderness:
            flags.append("tender on the bone")
        return flags

    @property
    def dedup_seq(self) -> int:
        # as for pain: a report without seq is identified by its time to the millisecond
        return self.seq if self.seq is not None else int(self.t * 1000)


Body = SampleBatch | SessionEvent | PainReport | InjuryReport
EventKind = Literal["samples", "session", "pain", "injury"]

# pain and injury reports come from the runner's app, not from a device of their own
PAIN_DEVICE = "app"


class RunnerEvent(_Frozen):
    """The Kafka record the bridge produces, keyed by ``runner``."""

    kind: EventKind
    runner: RunnerId
    device: DeviceId
    received_at: float
    samples: SampleBatch | None = None
    session: SessionEvent | None = None
    pain: PainReport | None = None
    injury: InjuryReport | None = None

    @model_validator(mode="after")
    def _one_body(self) -> RunnerEvent:
        bodies = {"samples": self.samples, "session": self.session, "pain": self.pain,
                  "injury": self.injury}
        if bodies[self.kind] is None or sum(b is not None for b in bodies.values()) != 1:
            raise ValueError(f"a {self.kind} event carries exactly one {self.kind} body")
        return self

    @property
    def body(self) -> Body:
        body = self.samples or self.session or self.pain or self.injury
        assert body is not None
        return body

    @property
    def seq(self) -> int:
        body = self.body
        return (body.dedup_seq if isinstance(body, PainReport | InjuryReport)
                else body.seq)

    @property
    def dedup_stream(self) -> str:
        """Sequences are per device and per message kind."""
        return f"{self.device}/{self.kind}"

    @classmethod
    def wrap(cls, runner: str, device: str, body: Body, received_at: float) -> RunnerEvent:
        if isinstance(body, SampleBatch):
            return cls(kind="samples", runner=runner, device=device, received_at=received_at,
                       samples=body)
        if isinstance(body, SessionEvent):
            return cls(kind="session", runner=runner, device=device, received_at=received_at,
                       session=body)
        if isinstance(body, InjuryReport):
            return cls(kind="injury", runner=runner, device=device, received_at=received_at,
                       injury=body)
        return cls(kind="pain", runner=runner, device=device, received_at=received_at, pain=body)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RunnerEvent:
        return _EVENT_ADAPTER.validate_json(raw)


_EVENT_ADAPTER: TypeAdapter[RunnerEvent] = TypeAdapter(RunnerEvent)


def json_schemas() -> dict[str, dict[str, object]]:
    """JSON Schemas of the MQTT payloads, generated from the models above."""
    return {
        "sample-batch.v1": SampleBatch.model_json_schema(),
        "session-event.v1": SessionEvent.model_json_schema(),
        "pain-report.v1": PainReport.model_json_schema(),
        "injury-report.v1": InjuryReport.model_json_schema(),
        "runner-event.v1": RunnerEvent.model_json_schema(),
    }
