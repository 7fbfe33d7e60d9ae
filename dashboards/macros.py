"""Fill in Grafana's InfluxQL macros and template variables outside Grafana.

The report and the tests run the dashboards' own queries against InfluxDB; this does for
them what Grafana's InfluxDB datasource does before it sends a query:

- ``$timeFilter`` (and ``$__timeFilter``) becomes ``time > now() - 42d`` for a relative
  range ``now-42d`` .. ``now``, as Grafana renders it;
- ``$__interval`` / ``$interval`` becomes the group-by interval (Grafana derives it from
  the range and the panel width; here it is given);
- ``$name``, ``${name}``, ``${name:raw}`` and ``[[name]]`` become the variable's value.

A variable the caller did not give is an error, so a typo in a dashboard fails a test
instead of sending ``$runer`` to InfluxDB.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_RELATIVE = re.compile(r"^now-(\d+)([smhdw])$")
_DURATION = re.compile(r"^\d+(ns|u|µ|ms|s|m|h|d|w)$")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")
# ids in the data contract; anything else could break out of a quoted InfluxQL string
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:\-]*$")


class MacroError(ValueError):
    """A query uses a variable that was not given, or a value that is unsafe to insert."""


def time_filter(time_from: str = "now-60d", time_to: str = "now") -> str:
    """Grafana's ``$timeFilter`` for a relative range ending now."""
    match = _RELATIVE.match(time_from)
    if not match or time_to != "now":
        raise MacroError(f"only relative ranges 'now-<n><unit>' .. 'now' are supported, "
                         f"got {time_from!r} .. {time_to!r}")
    return f"time > now() - {match.group(1)}{match.group(2)}"


def expand(query: str, variables: Mapping[str, str] | None = None, *,
           time_from: str = "now-60d", time_to: str = "now", interval: str = "1h") -> str:
    """``query`` with every macro and variable filled in."""
    if not _DURATION.match(interval):
        raise MacroError(f"interval must be an InfluxQL duration such as 1h, got {interval!r}")
    values = {"timeFilter": time_filter(time_from, time_to),
              "__timeFilter": time_filter(time_from, time_to),
              "__interval": interval, "interval": interval}
    for name, value in (variables or {}).items():
        if not _SAFE_VALUE.match(value):
            raise MacroError(f"value {value!r} of ${name} is not a plain id")
        values[name] = value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(4)
        if name not in values:
            raise MacroError(f"query uses ${name}, which was not given: {query}")
        return values[name]

    return _VARIABLE.sub(replace, query)


@dataclass(frozen=True)
class DashboardQuery:
    """One query of a dashboard and where it sits."""

    kind: str  # "panel", "variable" or "annotation"
    owner: str  # panel title, variable name or annotation name
    ref_id: str
    query: str


def iter_queries(dashboard: Mapping[str, Any]) -> Iterator[DashboardQuery]:
    """Every InfluxQL query in a dashboard: panel targets, variables and annotations."""
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            yield DashboardQuery("panel", panel["title"], target["refId"], target["query"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            yield DashboardQuery("variable", variable["name"], variable["name"],
                                 variable["query"])
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("builtIn"):
            continue
        yield DashboardQuery("annotation", annotation["name"], "Anno",
                             annotation["target"]["query"])
