"""Every dashboard query, run against the real InfluxDB after a team went through the pipeline.

Three runners (not in the roster, so in team "unassigned") publish six weeks of history
over MQTT; one has a load spike, one a live run with a contact-time imbalance. Once the
pipeline has written everything, each panel, variable and annotation query of both
generated dashboards is expanded the way Grafana would (dashboards.macros) and executed.
Values are compared with what the pure core computes from the same messages, with
InfluxDB's own semantics: a point written again merges its fields into the old one.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashboards.generate import GENERATED_DIR
from dashboards.macros import expand, iter_queries
from dashboards.report import make_report
from ingest.decoders import InboundMessage
from ingest.publisher import RunnerPublisher
from ingest.routing import decode_message
from ingest.simulator import SimulatedRunner, plan_history, plan_live
from rules.alerts import DISCLAIMER, Alert
from rules.catalogue import load_catalogue
from stream.metrics import DAILY_LOAD, RUN_WINDOW, FieldValue, MetricPoint
from stream.runner import RunnerState, process_event
from team.roster import UNASSIGNED_TEAM, load_roster
from tests import browser
from tests.conftest import ROSTER, history_end, wait_for
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration

TEAM = UNASSIGNED_TEAM
SIMULATED = [
    SimulatedRunner("dash-steady", seed=31),
    SimulatedRunner("dash-spike", spike=2.2, seed=32),
    SimulatedRunner("dash-tilt", imbalance_pts=3.5, seed=33),
]
RUNNERS = sorted(r.runner for r in SIMULATED)
HOUR_MS = 3_600_000
WEEK_MS = 7 * 24 * HOUR_MS
Row = dict[str, Any]
Key = tuple[str, tuple[tuple[str, str], ...], int]


@dataclass
class Expected:
    """What InfluxDB must hold for one runner, computed by the pure core."""

    points: dict[Key, dict[str, FieldValue]]
    alerts: list[Alert]

    def series(self, measurement: str) -> list[tuple[int, dict[str, FieldValue]]]:
        return sorted((t, fields) for (m, _, t), fields in self.points.items()
                      if m == measurement)

    def values(self, measurement: str, field: str) -> list[tuple[int, FieldValue]]:
        return [(t, f[field]) for t, f in self.series(measurement) if field in f]

    def last(self, measurement: str, field: str) -> FieldValue | None:
        values = self.values(measurement, field)
        return values[-1][1] if values else None

    def hourly_mean(self, field: str) -> dict[int, float]:
        buckets: dict[int, list[float]] = defaultdict(list)
        for t, value in self.values(RUN_WINDOW, field):
            buckets[t - t % HOUR_MS].append(float(value))
        return {t: sum(v) / len(v) for t, v in buckets.items()}

    def alerts_since(self, since_ms: float) -> list[Alert]:
        return [a for a in self.alerts if a.fired_at * 1000 > since_ms]


def pure_core(runner: str, messages: list[tuple[str, bytes]]) -> Expected:
    profile = load_roster(ROSTER).profile(runner, load_catalogue())
    state = RunnerState(runner=runner)
    points: dict[Key, dict[str, FieldValue]] = {}
    alerts: list[Alert] = []
    for topic, payload in messages:
        event = decode_message(InboundMessage(topic, payload, time.time()))
        state, out = process_event(state, event, profile)
        alerts += out.alerts
        for point in out.points:
            point = MetricPoint.from_json(point.to_json())  # the sink's view of it
            key = (point.measurement, point.tags, point.time_ms)
            # InfluxDB merges the fields of a point written again at the same series and time
            points[key] = {**points.get(key, {}), **dict(point.fields)}
    return Expected(points, alerts)


@dataclass
class Team:
    expected: dict[str, Expected]


@pytest.fixture(scope="module")
def team(pipeline: Pipeline) -> Team:
    today = history_end()
    messages = {r.runner: list(plan_history(r, today, 6)) for r in SIMULATED}
    tilt = next(r for r in SIMULATED if r.runner == "dash-tilt")
    messages["dash-tilt"] += list(plan_live(tilt, time.time() - 1800, minutes=5))
    for runner in RUNNERS:
        pipeline.runner(runner)
    with RunnerPublisher(pipeline.settings) as publisher:
        for runner in RUNNERS:
            publisher.publish_all(messages[runner])
    expected = {runner: pure_core(runner, messages[runner]) for runner in RUNNERS}
    assert expected["dash-spike"].alerts and expected["dash-tilt"].alerts

    def landed() -> bool:
        for runner, exp in expected.items():
            windows = pipeline.influx(f"SELECT count(samples) FROM run_window "
                                      f"WHERE runner = '{runner}'")
            if not windows or windows[0]["count"] != len(exp.series(RUN_WINDOW)):
                return False
            alerts = pipeline.influx(f"SELECT count(alert_id) FROM alert "
                                     f"WHERE runner = '{runner}'")
            if (alerts[0]["count"] if alerts else 0) != len(exp.alerts):
                return False
            daily = pipeline.influx(f"SELECT acwr, week_load FROM daily_load "
                                    f"WHERE runner = '{runner}'")
            want = [(t, f.get("acwr"), f["week_load"]) for t, f in exp.series(DAILY_LOAD)]
            if [(r["time"], r["acwr"], r["week_load"]) for r in daily] != want:
                return False
        return True

    wait_for(landed, timeout=240, interval=1.0, what="every dash-* point in InfluxDB")
    return Team(expected)


def board(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GENERATED_DIR / name).read_text())
    return data


def run_all(pipeline: Pipeline, name: str, variables: dict[str, str]
            ) -> dict[tuple[str, str, str], list[Row]]:
    """Every query of a generated dashboard, expanded and executed (errors fail the test)."""
    results = {}
    for q in iter_queries(board(name)):
        text = expand(q.query, variables, time_from="now-60d", interval="1h")
        results[(q.kind, q.owner, q.ref_id)] = pipeline.influx(text)
    return results


def only(rows: list[Row], runner: str) -> list[Row]:
    return [r for r in rows if r.get("runner") == runner]


def column(rows: list[Row], name: str) -> list[tuple[int, Any]]:
    return [(r["time"], r[name]) for r in rows if r.get(name) is not None]


def approx_series(expected: list[tuple[int, Any]]) -> Any:
    return [(t, pytest.approx(v, rel=1e-9, abs=1e-9)) for t, v in expected]


# ------------------------------------------------------------------------------ runner board
@pytest.mark.parametrize("runner", RUNNERS)
def test_runner_dashboard_queries_return_what_the_pipeline_computed(
        pipeline: Pipeline, team: Team, runner: str) -> None:
    exp = team.expected[runner]
    before_ms = time.time() * 1000
    results = run_all(pipeline, "runner.json", {"team": TEAM, "runner": runner})
    after_ms = time.time() * 1000

    def rows(title: str, ref: str = "A") -> list[Row]:
        return results[("panel", title, ref)]

    teams = {r["value"] for r in results[("variable", "team", "team")]}
    assert TEAM in teams
    assert set(RUNNERS) <= {r["value"] for r in results[("variable", "runner", "runner")]}

    assert column(rows("Acute:chronic ratio"), "acute:chronic") == \
        approx_series(exp.values(DAILY_LOAD, "acwr"))
    assert exp.values(DAILY_LOAD, "acwr"), "six weeks of history give a ratio"
    ratio_now = rows("Ratio now")
    assert ratio_now[0]["ratio"] == pytest.approx(exp.last(DAILY_LOAD, "acwr"))
    load = rows("Daily load, acute and chronic")
    for influx_name, field in (("daily load", "load"), ("acute (7 d EWMA)", "acute"),
                               ("chronic (28 d EWMA)", "chronic")):
        assert column(load, influx_name) == approx_series(exp.values(DAILY_LOAD, field))
    weekly = "Weekly load vs the week before + 10 %"
    assert column(rows(weekly, "A"), "last 7 days") == \
        approx_series(exp.values(DAILY_LOAD, "week_load"))
    assert column(rows(weekly, "B"), "7 days before + 10 %") == approx_series(
        [(t, float(v) * 1.1) for t, v in exp.values(DAILY_LOAD, "last_week_load")])
    change = rows("This week vs the week before")
    assert [r["week change"] for r in change] == \
        [pytest.approx(exp.last(DAILY_LOAD, "week_change"))]

    # run_window: mean per $__interval (1 h), and the latest balance
    for title, influx_name, field in (
            ("Cadence", "cadence", "cadence_spm"),
            ("Contact-time balance (left share)", "left share", "gct_balance_pct"),
            ("Left/right symmetry index", "stance time", "gct_symmetry_pct"),
            ("Left/right symmetry index", "step length", "step_symmetry_pct")):
        assert dict(column(rows(title), influx_name)) == pytest.approx(exp.hourly_mean(field))
    assert rows("Balance now")[0]["balance"] == \
        pytest.approx(exp.last(RUN_WINDOW, "gct_balance_pct"))

    # alerts: the table, the 7-day count and the annotations all show the pipeline's alerts
    fired = sorted((round(a.fired_at * 1000), a.rule, a.severity, a.message) for a in exp.alerts)
    table = rows("Alerts")
    assert sorted((r["time"], r["rule"], r["severity"], r["message"]) for r in table) == fired
    annotations = results[("annotation", "Alerts", "Anno")]
    assert sorted((r["time"], r["rule"], r["severity"], r["message"]) for r in annotations) \
        == fired
    open_count = rows("Alerts, last 7 days")
    observed = open_count[0]["alerts"] if open_count else 0
    assert observed in {len(exp.alerts_since(before_ms - WEEK_MS)),
                        len(exp.alerts_since(after_ms - WEEK_MS))}


def test_the_tilted_run_shows_in_balance_and_alerts(pipeline: Pipeline, team: Team) -> None:
    results = run_all(pipeline, "runner.json", {"team": TEAM, "runner": "dash-tilt"})
    balance = results[("panel", "Balance now", "A")][0]["balance"]
    assert balance > 52.2  # in the red band the panel draws
    rules = {r["rule"] for r in results[("annotation", "Alerts", "Anno")]}
    assert "gct_balance" in rules
    spike = run_all(pipeline, "runner.json", {"team": TEAM, "runner": "dash-spike"})
    assert "load_ratio" in {r["rule"] for r in spike[("annotation", "Alerts", "Anno")]}
    assert max(v for _, v in column(spike[("panel", "Acute:chronic ratio", "A")],
                                    "acute:chronic")) > 1.5


# ------------------------------------------------------------------------------ team board
def test_team_dashboard_has_one_row_per_runner_with_the_computed_values(
        pipeline: Pipeline, team: Team) -> None:
    before_ms = time.time() * 1000
    results = run_all(pipeline, "team.json", {"team": TEAM})
    after_ms = time.time() * 1000
    assert TEAM in {r["value"] for r in results[("variable", "team", "team")]}

    def rows(title: str, ref: str = "A") -> list[Row]:
        return results[("panel", title, ref)]

    for runner in RUNNERS:
        exp = team.expected[runner]
        # the table's four queries, joined on runner in Grafana: one row each
        (ratio,) = only(rows("Runners", "A"), runner)
        assert ratio["ratio"] == pytest.approx(exp.last(DAILY_LOAD, "acwr"))
        (change,) = only(rows("Runners", "B"), runner)
        assert change["week change"] == pytest.approx(exp.last(DAILY_LOAD, "week_change"))
        (balance,) = only(rows("Runners", "C"), runner)
        assert balance["balance"] == pytest.approx(exp.last(RUN_WINDOW, "gct_balance_pct"))
        open_alerts = only(rows("Runners", "D"), runner)
        counts = {len(exp.alerts_since(before_ms - WEEK_MS)),
                  len(exp.alerts_since(after_ms - WEEK_MS))}
        assert (open_alerts[0]["open alerts"] if open_alerts else 0) in counts

        assert column(only(rows("Acute:chronic ratio, all runners"), runner), "acwr") == \
            approx_series(exp.values(DAILY_LOAD, "acwr"))
        assert column(only(rows("Acute load (7 d EWMA), all runners"), runner), "acute") == \
            approx_series(exp.values(DAILY_LOAD, "acute"))
        assert dict(column(only(rows("Contact-time balance, all runners"), runner), "mean")) \
            == pytest.approx(exp.hourly_mean("gct_balance_pct"))

        week = exp.alerts_since(after_ms - WEEK_MS)
        listed = {(r["time"], r["rule"], r["message"])
                  for r in only(rows("Open alerts (last 7 days)"), runner)}
        assert {(round(a.fired_at * 1000), a.rule, a.message) for a in week} <= listed
        annotated = {(r["time"], r["rule"], r["message"])
                     for r in only(results[("annotation", "Alerts", "Anno")], runner)}
        assert annotated == {(round(a.fired_at * 1000), a.rule, a.message) for a in exp.alerts}


# ------------------------------------------------------------------------------ report
def test_report_for_the_team_shows_every_runner(pipeline: Pipeline, team: Team,
                                                tmp_path: Path) -> None:
    report = make_report(pipeline.settings, TEAM, 42, tmp_path)
    assert report.has_data and set(RUNNERS) <= set(report.runners)
    html = report.html.read_text()
    assert DISCLAIMER in html
    for runner in RUNNERS:
        exp = team.expected[runner]
        row = re.search(rf"<td>{runner}</td>\s*<td class=\"num (\w+)\">([^<]+)</td>", html)
        assert row, f"no table row for {runner}"
        assert row.group(2) == f"{exp.last(DAILY_LOAD, 'acwr'):.2f}"
    assert set(report.charts) == {"load", "ratio", "balance"}
    for name, path in report.charts.items():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        assert f'src="{path.name}"' in html
        assert set(RUNNERS) <= set(report.legends[name]), name
    # the alerts table carries the rule's next step from the catalogue
    next_step = load_catalogue()["gct_balance"].next_step
    assert next_step.split(":")[0] in html


# ------------------------------------------------------------------------------ demo summary
def test_demo_summary_shows_each_runners_ratio_peak_and_alerts(pipeline: Pipeline,
                                                               team: Team) -> None:
    from stridewatch.demo import influx_summary

    since_ms = time.time() * 1000 - WEEK_MS
    summary = influx_summary(pipeline.settings)
    ratios, alerts, measurements = (rows for _, rows in summary.values())
    by_runner = {tags["runner"]: values for tags, values in ratios}
    for runner in RUNNERS:
        exp = team.expected[runner]
        week = [(t, f) for t, f in exp.series(DAILY_LOAD) if t > since_ms]
        got = by_runner[runner]
        assert got["ratio_today"] == pytest.approx(week[-1][1]["acwr"])
        assert got["peak_ratio_7d"] == pytest.approx(max(f["acwr"] for _, f in week))
        assert got["week_km"] == pytest.approx(week[-1][1]["week_load"])
        counts: dict[str, int] = defaultdict(int)
        for alert in exp.alerts:
            counts[alert.rule] += 1
        assert {tags["rule"]: values["count"] for tags, values in alerts
                if tags["runner"] == runner} == counts
    # the spike sits in the last week: its peak stands above the 1.3 band
    assert by_runner["dash-spike"]["peak_ratio_7d"] > 1.3
    assert {"alert", "daily_load", "run_window", "session"} <= {
        values["name"] for _, values in measurements}


# ------------------------------------------------------------------------------ in a browser
PAGE_FACTS = """(() => ({
  title: document.querySelector('h1').textContent.trim(),
  images: [...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                          width: i.naturalWidth, height: i.naturalHeight})),
  runners: [...document.querySelectorAll('#runners tbody tr')]
    .map(tr => [...tr.cells].map(c => c.textContent.trim())),
  alerts: [...document.querySelectorAll('#alerts tbody tr')]
    .map(tr => [...tr.cells].map(c => c.textContent.trim())),
  nav: getComputedStyle(document.querySelector('nav')).display,
}))()"""
PRINT_FACTS = """(() => ({
  nav: getComputedStyle(document.querySelector('nav')).display,
  breaks: [...document.querySelectorAll('section.part')]
    .map(s => [s.id, getComputedStyle(s).breakBefore]),
  rows: [...new Set([...document.querySelectorAll('tr')]
    .map(r => getComputedStyle(r).breakInside))],
  heads: [...new Set([...document.querySelectorAll('thead')]
    .map(t => getComputedStyle(t).display))],
  images: [...document.images].map(i => ({maxWidth: getComputedStyle(i).maxWidth,
    width: i.getBoundingClientRect().width, page: document.body.clientWidth})),
}))()"""


def expected_open(team: Team, runners: list[str], since_ms: float) -> set[tuple[str, str]]:
    """(runner, rule) of the open alerts: the newest per runner and rule in the window."""
    return {(runner, a.rule) for runner in runners
            for a in team.expected[runner].alerts_since(since_ms)}


def open_in_chromium(report_html: Path, artifact: str) -> browser.Page:
    out = browser.artifacts_dir()
    with browser.serve(report_html.parent) as base:
        page = browser.inspect(f"{base}/{report_html.name}", PAGE_FACTS, PRINT_FACTS,
                               out / f"{artifact}.png")
    print(f"\nscreenshot of {report_html.name}: {page.screenshot}")
    return page


def test_the_team_report_in_headless_chromium(pipeline: Pipeline, team: Team,
                                              tmp_path: Path) -> None:
    before_ms = time.time() * 1000
    report = make_report(pipeline.settings, TEAM, 42, tmp_path)
    after_ms = time.time() * 1000
    page = open_in_chromium(report.html, "report-team")
    facts = page.facts
    assert facts["title"] == f"Team {TEAM}"
    # every chart decoded in the browser, and they are the three charts written
    assert sorted(i["src"] for i in facts["images"]) == sorted(
        p.name for p in report.charts.values())
    for image in facts["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    # the runner table shows each runner with the ratio the pure core computed
    rows = {cells[0]: cells for cells in facts["runners"]}
    for runner in RUNNERS:
        assert runner in rows, f"{runner} missing from the runner table"
        assert rows[runner][1] == f"{team.expected[runner].last(DAILY_LOAD, 'acwr'):.2f}"
    # open alerts: one row per runner and rule of the last 7 days, with the next step
    catalogue = load_catalogue()
    shown = [(cells[1], cells[3]) for cells in facts["alerts"] if cells[1] in RUNNERS]
    assert len(shown) == len(set(shown)), "a superseded alert is still listed"
    assert set(shown) in (expected_open(team, RUNNERS, before_ms - WEEK_MS),
                          expected_open(team, RUNNERS, after_ms - WEEK_MS))
    assert ("dash-tilt", "gct_balance") in shown
    # each with the next step the alert itself gave (filled in with the runner's numbers)
    newest = {(a.runner, a.rule): a for runner in RUNNERS
              for a in sorted(team.expected[runner].alerts, key=lambda a: a.fired_at)}
    for cells in facts["alerts"]:
        if cells[1] in RUNNERS:
            assert cells[5] == " ".join(newest[(cells[1], cells[3])].next_step.split()), cells
            assert "{" not in cells[5] and cells[3] in catalogue
    for runner in RUNNERS:
        assert int(rows[runner][4]) == sum(1 for r, _ in shown if r == runner)
    assert facts["nav"] != "none"
    assert page.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # on paper: no nav, every part from a new page, whole rows, charts within the page
    printed = page.print_facts
    assert printed["nav"] == "none"
    assert printed["breaks"] == [["part-runners", "auto"], ["part-load", "page"],
                                 ["part-asymmetry", "page"], ["part-alerts", "page"]]
    assert printed["rows"] == ["avoid"] and printed["heads"] == ["table-header-group"]
    for image in printed["images"]:
        assert image["maxWidth"] == "100%" and image["width"] <= image["page"], image
    pdf = browser.artifacts_dir() / "report-team.pdf"
    with browser.serve(report.html.parent) as base:
        pages = browser.print_to_pdf(f"{base}/{report.html.name}", pdf)
    print(f"PDF of {report.html.name}: {pdf}, {pages} pages")
    assert pages >= 4  # a page break before each of the three later parts


def test_a_one_runner_report_in_headless_chromium(pipeline: Pipeline, team: Team,
                                                  tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dashboards.cli import report as report_command
    from stridewatch.processes import settings_env

    runner = "dash-tilt"
    result = CliRunner(env=settings_env(pipeline.settings)).invoke(
        report_command, ["--runner", runner, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    # not in the roster: the runner's team is "unassigned"
    html = tmp_path / f"{TEAM}-{runner}-report.html"
    assert f"wrote {html}" in result.output
    facts = open_in_chromium(html, "report-runner").facts
    assert facts["title"] == f"Runner {runner} (team {TEAM})"
    assert [cells[0] for cells in facts["runners"]] == [runner]
    assert len(facts["images"]) == 3
    for image in facts["images"]:
        assert image["complete"] and image["width"] > 0, image
    assert facts["alerts"] and {cells[1] for cells in facts["alerts"]} == {runner}
