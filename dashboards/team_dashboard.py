"""A coach's view: one row per runner, the team's ratios and balance, open alerts."""

from __future__ import annotations

from dashboards import queries, runner_dashboard
from dashboards.builder import (
    Json,
    Panel,
    dashboard,
    influx_annotation,
    influxql,
    override,
    query_variable,
    table,
    timeseries,
)

UID = "stridewatch-team"
TITLE = "StrideWatch · Team"

# the table's columns, in order; each comes from its own query, joined on the runner tag
COLUMNS = ("runner", "ratio", "week change", "balance", "open alerts")


def variables() -> list[Json]:
    return [query_variable("team", "Team", queries.TEAMS)]


def _coloured(name: str, thresholds_: Json, **properties: object) -> Json:
    return override(name, thresholds=thresholds_,
                    custom__cellOptions={"type": "color-background", "mode": "basic"},
                    **properties)


def runners_table() -> Panel:
    return table(
        "Runners",
        [influxql(queries.TEAM_RATIO_NOW, "A", result_format="table"),
         influxql(queries.TEAM_WEEK_CHANGE_NOW, "B", result_format="table"),
         influxql(queries.TEAM_BALANCE_NOW, "C", result_format="table"),
         influxql(queries.TEAM_OPEN_ALERTS, "D", result_format="table")],
        description="One row per runner: latest acute:chronic ratio, last 7 days against the "
                    "7 days before, latest contact-time balance (left share) and alerts of the "
                    f"last 7 days. {runner_dashboard.DISCLAIMER}",
        transformations=[
            {"id": "joinByField", "options": {"byField": "runner", "mode": "outer"}},
            # each query brings its own Time column; keep only the named columns
            {"id": "filterFieldsByName",
             "options": {"include": {"pattern": "^(" + "|".join(COLUMNS) + ")$"}}},
            {"id": "organize",
             "options": {"indexByName": {name: i for i, name in enumerate(COLUMNS)},
                         "excludeByName": {}, "renameByName": {}}},
        ],
        overrides=[
            override("runner", links=[{
                "title": "Open the runner's dashboard",
                "url": f"/d/{runner_dashboard.UID}"
                       "?var-team=${team}&var-runner=${__value.raw}"}]),
            _coloured("ratio", runner_dashboard.RATIO_THRESHOLDS, decimals=2),
            _coloured("week change", runner_dashboard.WEEK_CHANGE_THRESHOLDS, unit="percentunit",
                      decimals=0),
            _coloured("balance", runner_dashboard.BALANCE_THRESHOLDS, unit="percent", decimals=1),
            _coloured("open alerts", runner_dashboard.ALERT_COUNT_THRESHOLDS, decimals=0,
                      noValue="0"),
        ],
        sort_by="ratio", height=9)


def build() -> Json:
    panels = [
        runners_table(),
        timeseries("Acute:chronic ratio, all runners",
                   [influxql(queries.TEAM_RATIO, alias="$tag_runner")], decimals=2, min_=0,
                   thresholds_=runner_dashboard.RATIO_THRESHOLDS, thresholds_style="area",
                   description="Green up to 1.5, orange above it: the ratio's one band, "
                               "contested in runners (docs/rules.md)."),
        timeseries("Acute load (7 d EWMA), all runners",
                   [influxql(queries.TEAM_ACUTE, alias="$tag_runner")], decimals=1, min_=0,
                   description="Each runner's 7-day EWMA of daily load (km or minutes)."),
        timeseries("Contact-time balance, all runners",
                   [influxql(queries.TEAM_BALANCE, alias="$tag_runner")], unit="percent",
                   decimals=1, min_=45, max_=55,
                   thresholds_=runner_dashboard.BALANCE_THRESHOLDS, thresholds_style="area",
                   description="Left share of contact time, mean per interval; green within "
                               "49.3-50.7 %, red beyond 47.8 / 52.2 %."),
        runner_dashboard.alerts_table("Open alerts (last 7 days)", queries.TEAM_ALERTS_OPEN,
                                      "Every alert of the last 7 days.", width=12),
    ]
    return dashboard(
        UID, TITLE, panels=panels, variables=variables(),
        description="A coach's view of the team's load, balance and alerts. "
                    + runner_dashboard.DISCLAIMER,
        annotations=[influx_annotation("Alerts", queries.TEAM_ALERT_EVENTS, text_column="message",
                                       title_column="title",
                                       tags_column="runner,rule,severity")],
        tags=("stridewatch", "team"))
