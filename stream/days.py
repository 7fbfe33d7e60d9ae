"""Day and week aggregates: daily totals, rolling weeks, the EWMA ratio, longest runs.

Two ways to the same figures:

- from scratch (``day_totals``, ``week_figures``, ``stream.load.load_ratio``): what the
  tests and the bone-stress check use;
- incrementally (:class:`HistoryView`): the step's way. The view holds everything *but*
  the session being folded — day totals, EWMA values up to each day, week sums, the
  longest runs, baselines, shoe mileage — built once when the current session changes
  (a new run, a late batch of another run, a day's pruning) and then reused for every
  batch of that session. A live batch adds its session's own figures to the view's
  numbers: constant work, whatever the history's length.

The view is derived from the stored state alone, so a worker that restarts builds the
same view and gives the same outputs.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from stream.load import ACUTE_DAYS, CHRONIC_DAYS, LoadRatio, ewma_lambda
from stream.state import NO_DAY, DayTotals, RunnerState, SessionSummary
from team.roster import RunnerProfile

LOAD_UNITS = {"distance_km": "km", "duration_min": "min", "trimp": "TRIMP"}
WEEK_ATTRS = ("climb_m", "fast_min")
# weeks back that the growth rules compare with (this week = 0)
WEEKS_BACK = 5
LONGEST_RUN_DAYS = 30
BASELINE_DAYS = 28
ACUTE_LAMBDA = ewma_lambda(ACUTE_DAYS)
CHRONIC_LAMBDA = ewma_lambda(CHRONIC_DAYS)


# the last local day looked up per time zone, as [start, end) in epoch seconds: most
# lookups fall on the same day as the one before
_LAST_DAY: dict[object, tuple[float, float, date]] = {}


def local_day(t: float, profile: RunnerProfile) -> date:
    cached = _LAST_DAY.get(profile.tz)
    if cached is not None and cached[0] <= t < cached[1]:
        return cached[2]
    day = datetime.fromtimestamp(t, profile.tz).date()
    start = day_start_s(day, profile)
    end = day_start_s(day + timedelta(days=1), profile)
    if start <= t < end:
        _LAST_DAY[profile.tz] = (start, end, day)
    return day


_DAY_STARTS: dict[tuple[object, date], float] = {}


def day_start_s(day: date, profile: RunnerProfile) -> float:
    """Local midnight of ``day`` in epoch seconds (cached: points and windows ask often)."""
    key = (profile.tz, day)
    start = _DAY_STARTS.get(key)
    if start is None:
        if len(_DAY_STARTS) > 100_000:
            _DAY_STARTS.clear()
        start = _DAY_STARTS[key] = datetime(day.year, day.month, day.day,
                                            tzinfo=profile.tz).timestamp()
    return start


def by_start(sessions: Iterable[SessionSummary]) -> list[SessionSummary]:
    """Sessions oldest first: sums always add them in this order, so a state read back
    from the table gives the same figures to the last bit."""
    return sorted(sessions, key=lambda s: (s.start_t, s.session_id))


def day_totals(state: RunnerState, profile: RunnerProfile) -> dict[date, DayTotals]:
    """Running totals per local day: archived days plus the sessions still kept."""
    totals = {date.fromisoformat(d): t for d, t in state.archived_days.items()}
    for s in by_start(state.sessions.values()):
        if not s.counts_as_running:
            continue
        day = local_day(s.start_t, profile)
        totals[day] = totals.get(day, NO_DAY).plus(s)
    return totals


def day_loads(totals: Mapping[date, DayTotals], profile: RunnerProfile) -> dict[date, float]:
    return {d: float(getattr(t, profile.load_metric)) for d, t in totals.items()}


@dataclass(frozen=True, slots=True)
class WeekFigures:
    """Sums of the 7-day weeks ending on a day: index 0 is the week ending that day."""

    loads: tuple[float, ...]  # WEEKS_BACK weeks of the load metric
    climb_m: tuple[float, ...]
    fast_min: tuple[float, ...]


def week_figures(totals: Mapping[date, DayTotals], loads: Mapping[date, float], day: date
                 ) -> WeekFigures:
    """From scratch: each week's sums of the load, climb and fast minutes."""
    def week(values: Mapping[date, float], back: int) -> float:
        end = day - timedelta(days=7 * back)
        return sum(values.get(end - timedelta(days=i), 0.0) for i in range(7))

    climb = {d: t.climb_m for d, t in totals.items()}
    fast = {d: t.fast_min for d, t in totals.items()}
    return WeekFigures(tuple(week(loads, k) for k in range(WEEKS_BACK)),
                       tuple(week(climb, k) for k in range(WEEKS_BACK)),
                       tuple(week(fast, k) for k in range(WEEKS_BACK)))


def _weeks_holding(day: date, other: date) -> int | None:
    """Which week back (ending on ``day``) holds ``other``, if any of the compared ones."""
    back = (day - other).days
    return back // 7 if 0 <= back < 7 * WEEKS_BACK else None


@dataclass(frozen=True, slots=True)
class DayFigures:
    """A day's load figures as the daily_load point and the load rules see them."""

    day: date
    totals: DayTotals
    load: float
    ratio: LoadRatio
    weeks: WeekFigures
    longest_run_km_30d: float | None

    @property
    def week_change(self) -> float | None:
        this_week, last_week = self.weeks.loads[0], self.weeks.loads[1]
        return this_week / last_week if last_week > 0 else None


@dataclass(slots=True)
class HistoryView:
    """The runner's history without the current session (see the module docstring)."""

    excluded: str | None
    first: date | None
    first_day: str | None  # as stored, to check cheaply that the view still fits
    metric: str
    totals: dict[date, DayTotals]
    runs: list[tuple[float, float]]  # (start_t, km) of the other running sessions
    sessions: list[SessionSummary]  # the other running sessions, oldest first
    shoe_km: dict[str, float]
    # EWMA values (not yet bias-corrected) after each day from ``first``
    acute_after: array[float] = field(default_factory=lambda: array("d"))
    chronic_after: array[float] = field(default_factory=lambda: array("d"))
    _ewma: dict[date, tuple[float, float, int]] = field(default_factory=dict)
    _weeks: dict[date, WeekFigures] = field(default_factory=dict)
    _longest: dict[tuple[float, float], float | None] = field(default_factory=dict)
    _windows: dict[date, tuple[float, float]] = field(default_factory=dict)
    memo: dict[tuple[str, float], object] = field(default_factory=dict)
    # a compact view keeps only what it has already answered (see ``compact``)
    is_compact: bool = False
    # (session id, its start, its day) of the last live batch that asked everything a
    # live batch asks: only then can a compact view answer the next one
    ready_for: tuple[str, float, str] | None = None

    @classmethod
    def build(cls, state: RunnerState, profile: RunnerProfile) -> HistoryView:
        excluded = state.current
        totals = {date.fromisoformat(d): t for d, t in state.archived_days.items()}
        shoe_km = dict(state.shoe_km_archived)
        runs: list[tuple[float, float]] = []
        sessions: list[SessionSummary] = []
        for s in by_start(state.sessions.values()):
            if s.session_id == excluded:
                continue
            if s.shoe:
                shoe_km[s.shoe] = shoe_km.get(s.shoe, 0.0) + s.distance_m / 1000
            if not s.counts_as_running:
                continue
            day = local_day(s.start_t, profile)
            totals[day] = totals.get(day, NO_DAY).plus(s)
            runs.append((s.start_t, s.distance_m / 1000))
            sessions.append(s)
        first = date.fromisoformat(state.first_day) if state.first_day else None
        return cls(excluded, first, state.first_day, profile.load_metric, totals, runs,
                   sessions, shoe_km)

    def fits(self, state: RunnerState, profile: RunnerProfile) -> bool:
        return (self.excluded == state.current and self.first_day == state.first_day
                and self.metric == profile.load_metric)

    # ---- loads -------------------------------------------------------------------------
    def load_on(self, day: date) -> float:
        totals = self.totals.get(day)
        return float(getattr(totals, self.metric)) if totals is not None else 0.0

    def compact(self) -> HistoryView:
        """The answers given so far, without the history they came from.

        A parked state keeps this: the next live batches of the same session and day ask
        the same questions, and a question it cannot answer means the state was not
        unparked first (a bug, so it fails loudly).
        """
        kept = {d: t for d, t in self.totals.items() if d in self._weeks}
        return HistoryView(self.excluded, self.first, self.first_day, self.metric, kept, [],
                           [], dict(self.shoe_km), _ewma=dict(self._ewma),
                           _weeks=dict(self._weeks), _longest=dict(self._longest),
                           _windows=dict(self._windows),
                           memo=dict(self.memo), is_compact=True, ready_for=self.ready_for)

    def _compact_miss(self, what: str) -> None:
        if self.is_compact:
            raise AssertionError(f"a compact history view was asked for {what}: the state "
                                 "should have been unparked")

    def _ewma_before(self, day: date) -> tuple[float, float, int]:
        """EWMA values after the day before ``day`` and the days counted, from ``first``."""
        if self.first is None or day <= self.first:
            return 0.0, 0.0, 0
        cached = self._ewma.get(day)
        if cached is not None:
            return cached
        self._compact_miss(f"the EWMA before {day}")
        n = (day - self.first).days
        acute, chronic = self.acute_after, self.chronic_after
        while len(acute) < n:
            load = max(0.0, self.load_on(self.first + timedelta(days=len(acute))))
            a = acute[-1] if acute else 0.0
            c = chronic[-1] if chronic else 0.0
            acute.append(ACUTE_LAMBDA * load + (1 - ACUTE_LAMBDA) * a)
            chronic.append(CHRONIC_LAMBDA * load + (1 - CHRONIC_LAMBDA) * c)
        answer = self._ewma[day] = (acute[n - 1], chronic[n - 1], n)
        return answer

    def _history_weeks(self, day: date) -> WeekFigures:
        cached = self._weeks.get(day)
        if cached is None:
            self._compact_miss(f"the weeks ending {day}")
            loads = {d: float(getattr(t, self.metric)) for d, t in self.totals.items()
                     if _weeks_holding(day, d) is not None}
            cached = week_figures(self.totals, loads, day)
            self._weeks[day] = cached
        return cached

    def longest_run_km(self, since_t: float, before_t: float) -> float | None:
        """The longest other run that started in [since_t, before_t)."""
        key = (since_t, before_t)
        if key not in self._longest:
            self._compact_miss("a longest run")
            self._longest[key] = max((km for t, km in self.runs if since_t <= t < before_t),
                                     default=None)
        return self._longest[key]

    # ---- a day's figures with the current session added ---------------------------------
    def figures(self, days: list[date], session: SessionSummary | None,
                profile: RunnerProfile) -> list[DayFigures]:
        """Figures for consecutive ``days``, the current ``session`` (if running) added."""
        if not days:
            return []
        session_day = local_day(session.start_t, profile) \
            if session is not None and session.counts_as_running else None
        metric = self.metric
        # the stored EWMA values leave the current session out: start no later than its day
        lead = (days[0] - session_day).days if session_day is not None else 0
        if lead > 0:
            assert session_day is not None
            days = [session_day + timedelta(days=i) for i in range(lead)] + days
        acute, chronic, n = self._ewma_before(days[0])
        own = NO_DAY.plus(session) if session is not None and session_day is not None else None
        out: list[DayFigures] = []
        for day in days:
            totals = self.totals.get(day, NO_DAY)
            if day == session_day:
                assert session is not None
                totals = totals.plus(session)
            load = float(getattr(totals, metric))
            if (session_day is None or day <= session_day) and self.first is not None \
                    and day > self.first:
                # the history's own EWMA before this day (the session is not in it yet):
                # a later batch may ask for it
                self._ewma.setdefault(day, (acute, chronic, n))
            if self.first is not None and day >= self.first:
                acute = ACUTE_LAMBDA * max(0.0, load) + (1 - ACUTE_LAMBDA) * acute
                chronic = CHRONIC_LAMBDA * max(0.0, load) + (1 - CHRONIC_LAMBDA) * chronic
                n += 1
            out.append(DayFigures(day, totals, load, _ratio(day, acute, chronic, n),
                                  self._weeks_with(day, session_day, own, metric),
                                  self._longest_with(day, session, profile)))
        return out[max(0, lead):]

    def _weeks_with(self, day: date, session_day: date | None, own: DayTotals | None,
                    metric: str) -> WeekFigures:
        """The history's weeks ending on ``day``, with the session's own totals added."""
        weeks = self._history_weeks(day)
        back = _weeks_holding(day, session_day) if session_day is not None else None
        if back is None or own is None:
            return weeks
        return WeekFigures(_add_at(weeks.loads, back, float(getattr(own, metric))),
                           _add_at(weeks.climb_m, back, own.climb_m),
                           _add_at(weeks.fast_min, back, own.fast_min))

    def _longest_with(self, day: date, session: SessionSummary | None,
                      profile: RunnerProfile) -> float | None:
        window = self._windows.get(day)
        if window is None:
            end = day_start_s(day + timedelta(days=1), profile)
            window = self._windows[day] = (end - LONGEST_RUN_DAYS * 86400, end)
        since, end_of_day = window
        longest = self.longest_run_km(since, end_of_day)
        if session is not None and session.counts_as_running \
                and since <= session.start_t < end_of_day:
            km = session.distance_m / 1000
            longest = km if longest is None else max(longest, km)
        return longest


def _add_at(values: tuple[float, ...], index: int, extra: float) -> tuple[float, ...]:
    return (*values[:index], values[index] + extra, *values[index + 1:])


def _ratio(day: date, acute_raw: float, chronic_raw: float, n: int) -> LoadRatio:
    """Bias-corrected EWMAs and their ratio, as ``stream.load.load_ratio`` defines them."""
    acute_w = 1 - (1 - ACUTE_LAMBDA) ** n
    chronic_w = 1 - (1 - CHRONIC_LAMBDA) ** n
    acute = acute_raw / acute_w if acute_w > 0 else 0.0
    chronic = chronic_raw / chronic_w if chronic_w > 0 else 0.0
    ratio = acute / chronic if chronic > 0 and n >= CHRONIC_DAYS else None
    return LoadRatio(day, acute, chronic, ratio, n)


def history_view(state: RunnerState, profile: RunnerProfile) -> HistoryView:
    """The state's view, built now if the current session or the history changed."""
    view = state.view
    if view is None or not view.fits(state, profile):
        view = HistoryView.build(state, profile)
        state.view = view
    return view
