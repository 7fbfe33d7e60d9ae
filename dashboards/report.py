"""The coach report: one HTML page with PNG charts for a team, no Grafana needed.

Data comes from InfluxDB through the same InfluxQL the dashboards use
(:mod:`dashboards.queries`, filled in by :func:`dashboards.macros.expand`), so the page
and the dashboards cannot disagree. Fetching (:func:`fetch_team`), drawing
(:func:`build_charts`) and writing (:func:`render`) are separate: the last two need no
database and are tested on their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from base.settings import Settings
from dashboards import queries
from dashboards.macros import expand
from rules.alerts import DISCLAIMER

log = logging.getLogger("stridewatch.dashboards")

TEMPLATES = Path(__file__).parent / "templates"
QueryFn = Callable[[str], Mapping[str, Any]]
Point = tuple[datetime, float]
SEVERITY_ORDER = {"critical": 0, "warn": 1, "notice": 2, "info": 3}
CHARTS = ("load", "ratio", "balance")


class ReportError(RuntimeError):
    """InfluxDB could not be read, or answered with an error; the message says which."""


# ------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class RunnerRow:
    runner: str
    ratio: float | None = None
    week_change: float | None = None
    balance: float | None = None
    open_alerts: int = 0


@dataclass(frozen=True)
class AlertRow:
    time: datetime
    runner: str
    severity: str
    rule: str
    title: str
    message: str
    next_step: str
    earlier: int = 0  # alerts of the same rule and runner this one supersedes


@dataclass(frozen=True)
class TeamData:
    team: str
    days: int
    generated_at: datetime
    tz: tzinfo
    runners: list[str]
    load_unit: str = "km"
    daily_load: dict[str, list[Point]] = field(default_factory=dict)
    acute: dict[str, list[Point]] = field(default_factory=dict)
    ratio: dict[str, list[Point]] = field(default_factory=dict)
    balance: dict[str, list[Point]] = field(default_factory=dict)
    rows: list[RunnerRow] = field(default_factory=list)
    alerts: list[AlertRow] = field(default_factory=list)  # open ones: see open_alerts
    runner: str | None = None  # a one-runner report

    @property
    def has_data(self) -> bool:
        return any((self.daily_load, self.ratio, self.balance, self.alerts))

    @property
    def stem(self) -> str:
        """File names: ``<team>`` for a team, ``<team>-<runner>`` for one runner."""
        return f"{self.team}-{self.runner}" if self.runner else self.team

    @property
    def subject(self) -> str:
        return f"Runner {self.runner} (team {self.team})" if self.runner else f"Team {self.team}"


Row = dict[str, Any]


def result_rows(answer: Mapping[str, Any], query: str) -> list[Row]:
    """Rows of an InfluxDB /query answer, one dict per value row with the series' tags."""
    rows: list[Row] = []
    for result in answer.get("results", []):
        if "error" in result:
            raise ReportError(f"InfluxDB rejected a query: {result['error']}\n  {query}")
        for series in result.get("series", []):
            tags = series.get("tags") or {}
            for values in series.get("values", []):
                rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
    return rows


def _by_runner(rows: list[Row], column: str, tz: tzinfo) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for row in rows:
        value = row.get(column)
        if value is None or "runner" not in row:
            continue
        when = datetime.fromtimestamp(row["time"] / 1000, tz)
        out.setdefault(str(row["runner"]), []).append((when, float(value)))
    for points in out.values():
        points.sort()
    return out


def _last_by_runner(rows: list[Row], column: str) -> dict[str, float]:
    return {str(r["runner"]): float(r[column]) for r in rows
            if r.get(column) is not None and "runner" in r}


def _next_step(row: Row, catalogue_steps: Mapping[str, str]) -> str:
    """The alert's own next step; for alerts stored without one, the rule's, unless that is
    a template still waiting for the alert's numbers."""
    if row.get("next_step"):
        return str(row["next_step"])
    step = catalogue_steps.get(str(row["rule"]), "")
    return "" if "{" in step else step


def open_alerts(alerts: list[AlertRow]) -> list[AlertRow]:
    """The open alerts among ``alerts`` (those of the last 7 days), most severe first.

    An alert is open until a later alert of the same rule fires for the same runner: the
    later one supersedes it, as the newer picture of the same thing. Each open alert
    counts the ones it superseded in ``earlier``.
    """
    newest: dict[tuple[str, str], AlertRow] = {}
    earlier: dict[tuple[str, str], int] = {}
    for alert in sorted(alerts, key=lambda a: a.time):
        key = (alert.runner, alert.rule)
        if key in newest:
            earlier[key] = earlier.get(key, 0) + 1
        newest[key] = alert
    out = [replace(alert, earlier=earlier.get(key, 0)) for key, alert in newest.items()]
    out.sort(key=lambda a: (SEVERITY_ORDER.get(a.severity, 9), -a.time.timestamp(), a.runner))
    return out


def for_runner(data: TeamData, runner: str) -> TeamData:
    """The team's data cut down to one runner: a one-runner report."""

    def one(series: dict[str, list[Point]]) -> dict[str, list[Point]]:
        return {runner: series[runner]} if runner in series else {}

    return replace(data, runner=runner, runners=[r for r in data.runners if r == runner],
                   daily_load=one(data.daily_load), acute=one(data.acute),
                   ratio=one(data.ratio), balance=one(data.balance),
                   rows=[r for r in data.rows if r.runner == runner],
                   alerts=[a for a in data.alerts if a.runner == runner])


def fetch_team(query: QueryFn, team: str, days: int, *, tz: tzinfo = UTC,
               next_steps: Mapping[str, str] | None = None,
               now: datetime | None = None) -> TeamData:
    """Everything the page shows for ``team`` over the last ``days`` days."""
    if days < 1:
        raise ValueError("days must be at least 1")
    variables = {"team": team}
    time_from = f"now-{days}d"

    def rows(template: str, interval: str = "1h", suffix: str = "") -> list[Row]:
        text = expand(template, variables, time_from=time_from, interval=interval) + suffix
        return result_rows(query(text), text)

    tz_name = getattr(tz, "key", None)
    # daily buckets on the team's calendar days, not UTC ones
    tz_clause = f" tz('{tz_name}')" if tz_name and tz_name != "UTC" else ""
    load_rows = rows(queries.TEAM_LOAD)
    units = {str(r["load_unit"]) for r in load_rows if r.get("load_unit")}
    ratio_now = _last_by_runner(rows(queries.TEAM_RATIO_NOW), "ratio")
    change_now = _last_by_runner(rows(queries.TEAM_WEEK_CHANGE_NOW), "week change")
    balance_now = _last_by_runner(rows(queries.TEAM_BALANCE_NOW), "balance")
    steps = next_steps or {}
    alerts = open_alerts([
        AlertRow(datetime.fromtimestamp(r["time"] / 1000, tz), str(r["runner"]),
                 str(r["severity"]), str(r["rule"]), str(r.get("title") or ""),
                 str(r.get("message") or ""), _next_step(r, steps))
        for r in rows(queries.TEAM_ALERTS_REPORT)])
    open_count: dict[str, int] = {}
    for alert in alerts:
        open_count[alert.runner] = open_count.get(alert.runner, 0) + 1

    daily_load = _by_runner(load_rows, "load", tz)
    ratio = _by_runner(rows(queries.TEAM_RATIO), "acwr", tz)
    balance = _by_runner(rows(queries.TEAM_BALANCE, interval="1d", suffix=tz_clause), "mean", tz)
    # runners with data at any time, plus anyone showing up in this period's data
    known = {str(r["value"]) for r in rows(queries.RUNNERS_OF_TEAM) if r.get("value")}
    runners = sorted(known | set(daily_load) | set(ratio) | set(balance)
                     | {a.runner for a in alerts})
    return TeamData(
        team=team, days=days, generated_at=now or datetime.now(tz), tz=tz, runners=runners,
        load_unit=" or ".join(sorted(units)) or "km", daily_load=daily_load,
        acute=_by_runner(load_rows, "acute", tz), ratio=ratio, balance=balance,
        rows=[RunnerRow(r, ratio_now.get(r), change_now.get(r), balance_now.get(r),
                        open_count.get(r, 0)) for r in runners],
        alerts=alerts)


# ------------------------------------------------------------------------------ bands
def ratio_band(value: float | None) -> str:
    if value is None:
        return "none"
    return "ok" if value <= queries.RATIO_NOTICE else "notice"


def week_band(value: float | None) -> str:
    if value is None:
        return "none"
    if value <= queries.WEEK_CHANGE_NOTICE:
        return "ok"
    return "notice" if value <= queries.WEEK_CHANGE_WARN else "warn"


def balance_band(value: float | None) -> str:
    if value is None:
        return "none"
    offset = abs(value - 50.0)
    if offset <= queries.BALANCE_NOTICE_PTS:
        return "ok"
    return "notice" if offset <= queries.BALANCE_WARN_PTS else "warn"


# ------------------------------------------------------------------------------ charts
def build_charts(data: TeamData) -> dict[str, Any]:
    """One matplotlib Figure per chart (Agg canvas, no pyplot state); legend = runner ids."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colours = _colours(data.runners)
    figures: dict[str, Any] = {}
    for name in CHARTS:
        fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if name == "load":
            _draw_load(ax, data, colours)
        elif name == "ratio":
            _draw_ratio(ax, data, colours)
        else:
            _draw_balance(ax, data, colours)
        _format_time_axis(ax, data)
        figures[name] = fig
    return figures


def _colours(runners: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = [colormaps["tab10"](i) for i in range(10)] + \
        [colormaps["Dark2"](i) for i in range(8)]
    return {runner: palette[i % len(palette)] for i, runner in enumerate(runners)}


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"No {what} in this period", transform=ax.transAxes, ha="center",
            va="center", fontsize=12, color="0.4")
    ax.set_yticks([])


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[1]:
        ax.legend(loc="best", fontsize=8, ncols=2, title="runner", title_fontsize=8)


def _plot_each_runner(ax: Any, data: TeamData, series: Mapping[str, list[Point]],
                      colours: Mapping[str, Any], style: str, *, legend: bool = True,
                      **line: Any) -> None:
    """One line per runner in roster order, so colours and legend match across charts."""
    for runner in data.runners:
        points = series.get(runner, [])
        if points:
            ax.plot([t for t, _ in points], [v for _, v in points], style,
                    color=colours[runner], label=runner if legend else "_nolegend_", **line)


def _draw_load(ax: Any, data: TeamData, colours: Mapping[str, Any]) -> None:
    ax.set_title(f"Daily load (dots) and 7-day EWMA (line), {data.load_unit}", loc="left")
    if not data.acute:
        _no_data(ax, "load data")
        return
    _plot_each_runner(ax, data, data.daily_load, colours, "o", legend=False, ms=3, alpha=0.45)
    _plot_each_runner(ax, data, data.acute, colours, "-", lw=2)
    ax.set_ylim(bottom=0)
    _legend(ax)


def _draw_ratio(ax: Any, data: TeamData, colours: Mapping[str, Any]) -> None:
    ax.set_title("Acute:chronic load ratio (7 d : 28 d EWMA; contested in runners)",
                 loc="left")
    if not data.ratio:
        _no_data(ax, "ratio (it needs 28 days of history)")
        return
    top = max([2.0, *(v + 0.2 for points in data.ratio.values() for _, v in points)])
    ax.axhspan(0, queries.RATIO_NOTICE, color="tab:green", alpha=0.10, lw=0)
    ax.axhspan(queries.RATIO_NOTICE, top, color="tab:orange", alpha=0.15, lw=0)
    ax.axhline(queries.RATIO_NOTICE, color="0.35", lw=0.8, ls="--")
    _plot_each_runner(ax, data, data.ratio, colours, "-o", ms=3, lw=1.8)
    ax.set_ylim(0, top)
    _legend(ax)


def _draw_balance(ax: Any, data: TeamData, colours: Mapping[str, Any]) -> None:
    ax.set_title("Contact-time balance, left share % (daily mean)", loc="left")
    if not data.balance:
        _no_data(ax, "contact-time balance data")
        return
    values = [v for points in data.balance.values() for _, v in points]
    low, high = min(45.0, min(values) - 0.5), max(55.0, max(values) + 0.5)
    b = queries.BALANCE_BANDS
    ax.axhspan(b[1], b[2], color="tab:green", alpha=0.12, lw=0)
    for lo, hi in ((b[0], b[1]), (b[2], b[3])):
        ax.axhspan(lo, hi, color="tab:orange", alpha=0.15, lw=0)
    for lo, hi in ((low, b[0]), (b[3], high)):
        ax.axhspan(lo, hi, color="tab:red", alpha=0.12, lw=0)
    ax.axhline(50, color="0.35", lw=0.8, ls="--")
    _plot_each_runner(ax, data, data.balance, colours, "-o", ms=3, lw=1.5)
    ax.set_ylim(low, high)
    _legend(ax)


def _format_time_axis(ax: Any, data: TeamData) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(tz=data.tz)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(
        ConciseDateFormatter(locator, tz=data.tz))  # type: ignore[no-untyped-call]
    ax.grid(True, axis="y", alpha=0.3)


def legend_labels(figure: Any) -> list[str]:
    labels: list[str] = []
    for ax in figure.axes:
        legend = ax.get_legend()
        if legend is not None:
            labels += [text.get_text() for text in legend.get_texts()]
    return labels


# ------------------------------------------------------------------------------ page
@dataclass(frozen=True)
class Report:
    html: Path
    charts: dict[str, Path]
    legends: dict[str, list[str]]
    runners: list[str]
    has_data: bool


def render(data: TeamData, out_dir: Path) -> Report:
    """Write ``<stem>-report.html`` and its PNG charts into ``out_dir`` (``TeamData.stem``)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    out_dir.mkdir(parents=True, exist_ok=True)
    charts: dict[str, Path] = {}
    legends: dict[str, list[str]] = {}
    if data.has_data:
        for name, figure in build_charts(data).items():
            path = out_dir / f"{data.stem}-{name}.png"
            figure.savefig(path, format="png")
            charts[name] = path
            legends[name] = legend_labels(figure)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ratio_band=ratio_band, week_band=week_band, balance_band=balance_band)
    page = env.get_template("report.html.j2").render(
        data=data, charts={name: path.name for name, path in charts.items()},
        disclaimer=DISCLAIMER)
    html = out_dir / f"{data.stem}-report.html"
    html.write_text(page, encoding="utf-8")
    return Report(html, charts, legends, data.runners, data.has_data)


def make_report(settings: Settings, team: str | None, days: int, out_dir: Path,
                runner: str | None = None) -> Report:
    """Read a team, or one runner (their team from the roster unless given), from
    InfluxDB (``settings``) and write the page."""
    import httpx

    from base.influx_query import InfluxReader
    from rules.catalogue import RuleFileError, load_catalogue
    from team.roster import UNASSIGNED_TEAM, RosterError, load_roster

    try:
        roster = load_roster(settings.roster_file)
        catalogue = load_catalogue(settings.rules_dir)
    except (RosterError, RuleFileError) as exc:
        raise ReportError(str(exc)) from None
    if runner is not None:
        listed = roster.runner(runner)
        if listed is not None and team is not None and listed.team != team:
            raise ReportError(f"runner '{runner}' is in team '{listed.team}' in the roster, "
                              f"not '{team}'")
        team = team or (listed.team if listed else UNASSIGNED_TEAM)
    if team is None:
        raise ReportError("give a team (--team) or a runner (--runner)")
    roster_team = roster.team(team)
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(roster_team.tz) if roster_team else UTC
    client = InfluxReader(settings)
    try:
        data = fetch_team(client.query, team, days, tz=tz,
                          next_steps={rule_id: rule.next_step
                                      for rule_id, rule in catalogue.items()})
    except httpx.HTTPStatusError as exc:
        raise ReportError(f"InfluxDB at {settings.influx_url} answered "
                          f"{exc.response.status_code}: {exc.response.text[:200]}") from None
    except httpx.HTTPError as exc:
        raise ReportError(f"InfluxDB at {settings.influx_url} is unreachable "
                          f"({type(exc).__name__})") from None
    finally:
        client.close()
    return render(for_runner(data, runner) if runner else data, out_dir)
