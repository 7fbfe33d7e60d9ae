"""Small builders for Grafana dashboard JSON (InfluxDB datasource, InfluxQL queries).

Each function returns a plain dict in Grafana's dashboard model (schema 39, Grafana 11).
Panels are built without position or id; :func:`dashboard` lays them out on the 24-column
grid in the order given and numbers them, so ids and positions only change when the
panel list does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Json = dict[str, Any]

DATASOURCE_UID = "stridewatch-influx"
DATASOURCE_TYPE = "influxdb"
DATASOURCE: Json = {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
GRID_COLUMNS = 24
SCHEMA_VERSION = 39

ResultFormat = Literal["time_series", "table"]
ThresholdsStyle = Literal["off", "line", "area", "line+area", "dashed", "dashed+area"]


def datasource() -> Json:
    # a fresh copy per use: callers may mutate the panel dicts they get back
    return dict(DATASOURCE)


# ------------------------------------------------------------------------------ queries
def influxql(query: str, ref_id: str = "A", *, alias: str | None = None,
             result_format: ResultFormat = "time_series") -> Json:
    """A raw InfluxQL target (the query editor's text mode)."""
    target: Json = {"refId": ref_id, "datasource": datasource(), "query": query,
                    "rawQuery": True, "resultFormat": result_format}
    if alias:
        target["alias"] = alias
    return target


def thresholds(base: str, *steps: tuple[float, str]) -> Json:
    """Absolute thresholds: ``base`` colour below the first step, then each step's colour."""
    values = [value for value, _ in steps]
    if values != sorted(values):
        raise ValueError(f"threshold steps must ascend, got {values}")
    return {"mode": "absolute",
            "steps": [{"color": base, "value": None},
                      *({"color": color, "value": value} for value, color in steps)]}


def override(field_name: str, **properties: Any) -> Json:
    """A field override by name; keyword ``custom__x`` stands for property ``custom.x``."""
    return {"matcher": {"id": "byName", "options": field_name},
            "properties": [{"id": key.replace("__", "."), "value": value}
                           for key, value in properties.items()]}


def value_colours(colours: dict[str, str]) -> Json:
    """A value mapping that colours known text values (e.g. severities)."""
    return {"type": "value",
            "options": {value: {"color": colour, "index": i, "text": value}
                        for i, (value, colour) in enumerate(colours.items())}}


# ------------------------------------------------------------------------------ panels
@dataclass(frozen=True)
class Panel:
    """A panel body plus its size; :func:`dashboard` adds ``id`` and ``gridPos``."""

    body: Json
    width: int = 12
    height: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.width <= GRID_COLUMNS:
            raise ValueError(f"panel width must be 1..{GRID_COLUMNS}, got {self.width}")


def _field_defaults(unit: str | None, decimals: int | None, min_: float | None,
                    max_: float | None, thresholds_: Json | None, color_mode: str,
                    no_value: str | None) -> Json:
    defaults: Json = {"color": {"mode": color_mode}}
    optional = {"unit": unit, "decimals": decimals, "min": min_, "max": max_,
                "thresholds": thresholds_, "noValue": no_value}
    defaults.update({key: value for key, value in optional.items() if value is not None})
    return defaults


def _panel(kind: str, title: str, targets: Sequence[Json], description: str) -> Json:
    if not targets:
        raise ValueError(f"panel {title!r} needs at least one query")
    ref_ids = [t["refId"] for t in targets]
    if len(set(ref_ids)) != len(ref_ids):
        raise ValueError(f"panel {title!r} repeats a query refId: {ref_ids}")
    return {"type": kind, "title": title, "description": description,
            "datasource": datasource(), "targets": list(targets)}


def timeseries(title: str, targets: Sequence[Json], *, description: str = "",
               unit: str | None = None, decimals: int | None = None,
               min_: float | None = None, max_: float | None = None,
               thresholds_: Json | None = None, thresholds_style: ThresholdsStyle = "off",
               draw_style: Literal["line", "bars", "points"] = "line",
               overrides: Iterable[Json] = (), width: int = 12, height: int = 8) -> Panel:
    defaults = _field_defaults(unit, decimals, min_, max_, thresholds_, "palette-classic", None)
    defaults["custom"] = {
        "drawStyle": draw_style, "lineWidth": 2, "fillOpacity": 0, "pointSize": 5,
        "showPoints": "auto", "spanNulls": True, "lineInterpolation": "linear",
        "axisPlacement": "auto", "thresholdsStyle": {"mode": thresholds_style},
    }
    body = _panel("timeseries", title, targets, description)
    body["fieldConfig"] = {"defaults": defaults, "overrides": list(overrides)}
    body["options"] = {"legend": {"displayMode": "list", "placement": "bottom",
                                  "showLegend": True, "calcs": []},
                       "tooltip": {"mode": "multi", "sort": "none"}}
    return Panel(body, width, height)


def stat(title: str, targets: Sequence[Json], *, description: str = "",
         unit: str | None = None, decimals: int | None = None,
         thresholds_: Json | None = None, no_value: str | None = None,
         width: int = 6, height: int = 4) -> Panel:
    """A single number, coloured by its thresholds (last non-null value)."""
    body = _panel("stat", title, targets, description)
    body["fieldConfig"] = {"defaults": _field_defaults(unit, decimals, None, None, thresholds_,
                                                       "thresholds", no_value),
                           "overrides": []}
    body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                         "values": False},
                       "colorMode": "background", "graphMode": "none", "textMode": "auto",
                       "justifyMode": "auto", "orientation": "auto"}
    return Panel(body, width, height)


def table(title: str, targets: Sequence[Json], *, description: str = "",
          transformations: Sequence[Json] = (), overrides: Iterable[Json] = (),
          sort_by: str | None = None, sort_desc: bool = True,
          width: int = 24, height: int = 8) -> Panel:
    body = _panel("table", title, targets, description)
    body["fieldConfig"] = {"defaults": {"custom": {"align": "auto",
                                                   "cellOptions": {"type": "auto"}},
                                        "color": {"mode": "thresholds"}},
                           "overrides": list(overrides)}
    options: Json = {"showHeader": True, "cellHeight": "sm",
                     "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": sort_desc}]
    body["options"] = options
    body["transformations"] = list(transformations)
    return Panel(body, width, height)


# ------------------------------------------------------------------------------ variables
def query_variable(name: str, label: str, query: str, *, description: str = "") -> Json:
    """A single-valued variable filled by an InfluxQL ``SHOW TAG VALUES`` query."""
    return {"name": name, "label": label, "description": description, "type": "query",
            "datasource": datasource(), "query": query, "definition": query,
            "refresh": 1,  # on dashboard load: new runners show up without editing
            "sort": 1, "multi": False, "includeAll": False, "hide": 0,
            "current": {}, "options": [], "regex": ""}


# ------------------------------------------------------------------------------ annotations
def influx_annotation(name: str, query: str, *, text_column: str, tags_column: str,
                      title_column: str = "", color: str = "red") -> Json:
    """Events from an InfluxQL query, shown on every time-series panel.

    Grafana 11 reads ``target``; the same fields at the top level serve older versions,
    which migrate them into ``target`` on load.
    """
    target: Json = {"refId": "Anno", "query": query, "rawQuery": True,
                    "fromAnnotations": True, "textEditor": True,
                    "textColumn": text_column, "tagsColumn": tags_column,
                    "titleColumn": title_column}
    return {"name": name, "datasource": datasource(), "enable": True, "hide": False,
            "iconColor": color, "query": query, "textColumn": text_column,
            "tagsColumn": tags_column, "titleColumn": title_column, "target": target}


def _builtin_annotation() -> Json:
    return {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}


# ------------------------------------------------------------------------------ dashboard
def _layout(panels: Sequence[Panel]) -> list[Json]:
    """Left to right, wrapping onto a new row when a panel does not fit."""
    placed: list[Json] = []
    x = y = row_height = 0
    for number, panel in enumerate(panels, start=1):
        if x + panel.width > GRID_COLUMNS:
            x, y, row_height = 0, y + row_height, 0
        body = dict(panel.body)
        body["id"] = number
        body["gridPos"] = {"h": panel.height, "w": panel.width, "x": x, "y": y}
        placed.append(body)
        x += panel.width
        row_height = max(row_height, panel.height)
    return placed


def dashboard(uid: str, title: str, *, description: str, panels: Sequence[Panel],
              variables: Sequence[Json] = (), annotations: Sequence[Json] = (),
              time_from: str = "now-42d", tags: Sequence[str] = ("stridewatch",),
              refresh: str = "1m") -> Json:
    return {
        "id": None,  # Grafana assigns its own; the uid is what identifies the dashboard
        "uid": uid, "title": title, "description": description, "tags": list(tags),
        "timezone": "browser", "editable": True, "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "monday",
        "templating": {"list": list(variables)},
        "annotations": {"list": [_builtin_annotation(), *annotations]},
        "links": [], "panels": _layout(panels),
    }
