"""A coach's view: one row per runner, the team's ratios and balance, open alerts."""

from __future__ import annotations

from dashboards import queries as q
from dashboards import runner_dashboard as rd
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
    return [query_variable("team", "Team", q.TEAMS)]


def _coloured(name: str, thresholds_: Json, **properties: object) -> Json:
    return override(name, thresholds=thresholds_,
                    custom__cellOptions={"type": "color-background", "mode": "basic"},
                    **properties)


def runners_table() -> Panel:
    return table(
        "Runners",
        [influxql(q.TEAM_RATIO_NOW, "A", result_format="table"),
         influxql(q.TEAM_WEEK_CHANGE_NOW, "B", result_format="table"),
         influxql(q.TEAM_BALANCE_NOW, "C", result_format="table"),
         influxql(q.TEAM_OPEN_ALERTS, "D", result_format="table")],
        description="One row per runner: latest acute:chronic ratio, last 7 days against the "
                    "7 days before, latest contact-time balance (left share) and alerts of the "
                    f"last 7 days. {rd.DISCLAIMER}",
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
                "url": f"/d/{rd.UID}?var-team=${{team}}&var-runner=${{__value.raw}}"}]),
            _coloured("ratio", rd.RATIO_THRESHOLDS, decimals=2),
            _coloured("week change", rd.WEEK_CHANGE_THRESHOLDS, unit="percentunit",
                      decimals=0),
            _coloured("balance", rd.BALANCE_THRESHOLDS, unit="percent", decimals=1),
            _coloured("open alerts", rd.ALERT_COUNT_THRESHOLDS, decimals=0, noValue="0"),
        ],
        sort_by="ratio", height=9)


def build() -> Json:
    panels = [
        runners_table(),
        timeseries("Acute:chronic ratio, all runners",
                   [influxql(q.TEAM_RATIO, alias="$tag_runner")], decimals=2, min_=0,
                   thresholds_=rd.RATIO_THRESHOLDS, thresholds_style="area",
                   description="Green below 1.3, orange 1.3-1.5, red above 1.5."),
        timeseries("Acute load (7 d EWMA), all runners",
                   [influxql(q.TEAM_ACUTE, alias="$tag_runner")], decimals=1, min_=0,
                   description="Each runner's 7-day EWMA of daily load (km or minutes)."),
        timeseries("Contact-time balance, all runners",
                   [influxql(q.TEAM_BALANCE, alias="$tag_runner")], unit="percent", decimals=1,
                   min_=45, max_=55, thresholds_=rd.BALANCE_THRESHOLDS, thresholds_style="area",
                   description="Left share of contact time, mean per interval; green within "
                               "49.3-50.7 %, red beyond 47.8 / 52.2 %."),
        rd.alerts_table("Open alerts (last 7 days)", q.TEAM_ALERTS_OPEN,
                        "Every alert of the last 7 days.", width=12),
    ]
    return dashboard(
        UID, TITLE, panels=panels, variables=variables(),
        description="A coach's view of the team's load, balance and alerts. " + rd.DISCLAIMER,
        annotations=[influx_annotation("Alerts", q.TEAM_ALERT_EVENTS, text_column="message",
                                       title_column="title",
                                       tags_column="runner,rule,severity")],
        tags=("stridewatch", "team"))
