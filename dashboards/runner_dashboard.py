"""One runner: load and its ratio, weekly increase, cadence, balance, symmetry, alerts."""

from __future__ import annotations

from dashboards import queries
from dashboards.builder import (
    Json,
    Panel,
    dashboard,
    influx_annotation,
    influxql,
    override,
    query_variable,
    stat,
    table,
    thresholds,
    timeseries,
    value_colours,
)

UID = "stridewatch-runner"
TITLE = "StrideWatch · Runner"

RATIO_THRESHOLDS = thresholds("green", (queries.RATIO_NOTICE, "orange"))
WEEK_CHANGE_THRESHOLDS = thresholds("green", (queries.WEEK_CHANGE_NOTICE, "orange"),
                                    (queries.WEEK_CHANGE_WARN, "red"))
# red far left, orange, green around an even 50 %, orange, red far right
BANDS = queries.BALANCE_BANDS
BALANCE_THRESHOLDS = thresholds("red", (BANDS[0], "orange"), (BANDS[1], "green"),
                                (BANDS[2], "orange"), (BANDS[3], "red"))
SYMMETRY_THRESHOLDS = thresholds("red", (-queries.SYMMETRY_WARN_PCT, "orange"),
                                 (-queries.SYMMETRY_NOTICE_PCT, "green"),
                                 (queries.SYMMETRY_NOTICE_PCT, "orange"),
                                 (queries.SYMMETRY_WARN_PCT, "red"))
ALERT_COUNT_THRESHOLDS = thresholds("green", (1, "orange"))

DISCLAIMER = "Information, not a diagnosis."


def alerts_table(title: str, query: str, description: str, *, width: int = 24,
                 height: int = 8) -> Panel:
    """Alerts with their severity coloured and the 'not a diagnosis' line."""
    return table(title, [influxql(query, result_format="table")],
                 description=f"{description} {DISCLAIMER}",
                 overrides=[override("severity", custom__cellOptions={"type": "color-text"},
                                     mappings=[value_colours(queries.SEVERITY_COLOURS)])],
                 sort_by="Time", width=width, height=height)


def variables() -> list[Json]:
    return [
        query_variable("team", "Team", queries.TEAMS),
        query_variable("runner", "Runner", queries.RUNNERS_OF_TEAM,
                       description="Runners with any data in the selected team."),
    ]


def build() -> Json:
    panels = [
        stat("Ratio now", [influxql(queries.RUNNER_RATIO_NOW)], decimals=2,
             thresholds_=RATIO_THRESHOLDS,
             description="Latest EWMA acute (7 d) : chronic (28 d) load ratio. Above 1.5 "
                         "notice (contested in runners: docs/rules.md). Empty until 28 days "
                         "of history."),
        stat("This week vs the week before", [influxql(queries.RUNNER_WEEK_CHANGE_NOW)],
             unit="percentunit", decimals=0, thresholds_=WEEK_CHANGE_THRESHOLDS,
             description="Load of the last 7 days as a share of the 7 days before "
                         "(110 % = the 10 % rule's limit)."),
        stat("Balance now", [influxql(queries.RUNNER_BALANCE_NOW)], unit="percent",
             decimals=1, thresholds_=BALANCE_THRESHOLDS,
             description="Latest left share of ground contact time (50 % = even)."),
        stat("Alerts, last 7 days", [influxql(queries.RUNNER_OPEN_ALERTS)], decimals=0,
             no_value="0", thresholds_=ALERT_COUNT_THRESHOLDS,
             description=f"Alerts fired in the last 7 days. {DISCLAIMER}"),
        timeseries("Daily load, acute and chronic", [influxql(queries.RUNNER_LOAD, alias="$col")],
                   min_=0, decimals=1,
                   description="Daily load (km or minutes, per the team's setting) with its "
                               "7-day and 28-day EWMA.",
                   overrides=[override("daily load", custom__drawStyle="bars",
                                       custom__fillOpacity=40)]),
        timeseries("Acute:chronic ratio", [influxql(queries.RUNNER_RATIO, alias="$col")],
                   decimals=2, min_=0, thresholds_=RATIO_THRESHOLDS, thresholds_style="area",
                   description="Green up to 1.5, orange above (Gabbett 2016's band from "
                               "team sports; EWMA form: Williams et al. 2017). Contested: in "
                               "5,205 runners a higher ratio was not linked to more injuries "
                               "(Frandsen et al. 2025)."),
        timeseries("Weekly load vs the week before + 10 %",
                   [influxql(queries.RUNNER_WEEK, "A", alias="$col"),
                    influxql(queries.RUNNER_WEEK_LIMIT, "B", alias="$col")],
                   min_=0, decimals=1,
                   description="Rolling 7-day load against the previous 7 days plus 10 %: "
                               "above the dashed line the week grew faster than the 10 % rule.",
                   overrides=[override("7 days before + 10 %",
                                       custom__lineStyle={"fill": "dash", "dash": [10, 10]},
                                       color={"mode": "fixed", "fixedColor": "orange"})]),
        timeseries("Cadence", [influxql(queries.RUNNER_CADENCE, alias="$col")], unit="none",
                   decimals=0,
                   description="Steps per minute, mean per interval."),
        timeseries("Contact-time balance (left share)",
                   [influxql(queries.RUNNER_BALANCE, alias="$col")], unit="percent", decimals=1,
                   min_=45, max_=55, thresholds_=BALANCE_THRESHOLDS, thresholds_style="area",
                   description="Green within 49.3-50.7 %, orange to 47.8 / 52.2 %, red beyond "
                               "(Garmin running-dynamics colour bands)."),
        timeseries("Left/right symmetry index", [influxql(queries.RUNNER_SYMMETRY, alias="$col")],
                   unit="percent", decimals=1, thresholds_=SYMMETRY_THRESHOLDS,
                   thresholds_style="area",
                   description="SI = (R - L) / mean · 100 of stance time and step length; "
                               "5-10 % notice, above 10 % warn."),
        alerts_table("Alerts", queries.RUNNER_ALERTS, "Alerts in the selected time range.",
                     height=7),
    ]
    return dashboard(
        UID, TITLE, panels=panels, variables=variables(),
        description="One runner's load, balance and alerts. " + DISCLAIMER,
        annotations=[influx_annotation("Alerts", queries.RUNNER_ALERT_EVENTS, text_column="message",
                                       title_column="title", tags_column="rule,severity")],
        tags=("stridewatch", "runner"))
