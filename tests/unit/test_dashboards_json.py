"""Dashboards as code: generated JSON, thresholds, variables, macros, provisioning, report.

Nothing here needs the local stack: provisioning talks to a small fake Grafana (an HTTP
server in a thread) and the report draws from canned InfluxDB answers. The queries
themselves run against a real InfluxDB in tests/integration/test_dashboards.py.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from dashboards import generate, queries, runner_dashboard, team_dashboard
from dashboards.builder import DATASOURCE_UID, GRID_COLUMNS, Json
from dashboards.cli import dashboards as dashboards_cli
from dashboards.cli import report as report_cli
from dashboards.macros import MacroError, expand, iter_queries, time_filter
from dashboards.provision import (
    FOLDER_UID,
    ProvisionError,
    connect,
    datasource_payload,
    provision,
)
from dashboards.report import (
    AlertRow,
    TeamData,
    fetch_team,
    for_runner,
    legend_labels,
    open_alerts,
    render,
)
from rules.alerts import DISCLAIMER
from rules.catalogue import load_catalogue

PROVISIONING = Path(generate.__file__).parent / "provisioning"
TOKEN = "glsa_test-token-7f3c9a1e5d"  # fake; the logs must never show it


@pytest.fixture(scope="module")
def boards() -> dict[str, Json]:
    return generate.build_all()


def panel(board: Json, title: str) -> Json:
    found: list[Json] = [p for p in board["panels"] if p["title"] == title]
    assert len(found) == 1, f"expected one panel titled {title!r}"
    return found[0]


def steps(thresholds: Json) -> list[tuple[float | None, str]]:
    return [(s["value"], s["color"]) for s in thresholds["steps"]]


def override_props(panel_json: Json, field_name: str) -> dict[str, Any]:
    for item in panel_json["fieldConfig"]["overrides"]:
        if item["matcher"]["options"] == field_name:
            return {p["id"]: p["value"] for p in item["properties"]}
    raise AssertionError(f"no override for {field_name!r} in {panel_json['title']!r}")


# ------------------------------------------------------------------------------ generation
def test_generation_is_deterministic_and_matches_the_checked_in_files() -> None:
    first, second = generate.rendered(), generate.rendered()
    assert first == second
    assert set(first) == {"runner.json", "team.json"}
    for name, text in first.items():
        checked_in = (generate.GENERATED_DIR / name).read_bytes()
        assert checked_in == text.encode("utf-8"), (
            f"dashboards/generated/{name} is stale: run `stridewatch dashboards generate`")
        assert text.endswith("}\n")
        assert json.loads(text) == generate.build_all()[name]


def test_generate_check_reports_drift_and_regenerating_changes_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    fresh = runner.invoke(dashboards_cli, ["generate", "--out", str(tmp_path)])
    assert fresh.exit_code == 0, fresh.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runner.json", "team.json"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    again = runner.invoke(dashboards_cli, ["generate", "--out", str(tmp_path)])
    assert "up to date" in again.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert runner.invoke(dashboards_cli, ["generate", "--check", "--out", str(tmp_path)]
                         ).exit_code == 0

    (tmp_path / "team.json").write_text("{}\n")
    stale = runner.invoke(dashboards_cli, ["generate", "--check", "--out", str(tmp_path)])
    assert stale.exit_code == 1
    assert "team.json" in stale.output
    (tmp_path / "runner.json").unlink()
    assert {d.path.name for d in generate.check(tmp_path)} == {"team.json", "runner.json"}


def test_the_checked_in_files_pass_the_check() -> None:
    assert generate.check() == []


# ------------------------------------------------------------------------------ structure
def test_every_panel_has_the_datasource_and_an_influxql_query(boards: dict[str, Json]) -> None:
    for board in boards.values():
        assert board["panels"]
        for p in board["panels"]:
            assert p["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}, p["title"]
            assert p["targets"], p["title"]
            for target in p["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID
                assert target["rawQuery"] is True
                assert target["query"].startswith(("SELECT ", "SHOW ")), target["query"]
            ref_ids = [t["refId"] for t in p["targets"]]
            assert len(set(ref_ids)) == len(ref_ids)


def test_panel_ids_are_unique_and_panels_tile_the_grid(boards: dict[str, Json]) -> None:
    for board in boards.values():
        ids = [p["id"] for p in board["panels"]]
        assert ids == list(range(1, len(ids) + 1))
        titles = [p["title"] for p in board["panels"]]
        assert len(set(titles)) == len(titles)
        cells: set[tuple[int, int]] = set()
        for p in board["panels"]:
            pos = p["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= GRID_COLUMNS
            area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                    for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not area & cells, f"{p['title']} overlaps another panel"
            cells |= area
    assert {b["uid"] for b in boards.values()} == {runner_dashboard.UID, team_dashboard.UID}
    assert all(b["id"] is None for b in boards.values())


def test_ratio_threshold_is_the_rule_s_one_band(boards: dict[str, Json]) -> None:
    expected = [(None, "green"), (1.5, "orange")]
    runner, team = boards["runner.json"], boards["team.json"]
    for p in (panel(runner, "Acute:chronic ratio"),
              panel(team, "Acute:chronic ratio, all runners")):
        assert steps(p["fieldConfig"]["defaults"]["thresholds"]) == expected
        assert p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == {"mode": "area"}
    assert steps(panel(runner, "Ratio now")["fieldConfig"]["defaults"]["thresholds"]) == expected
    table = override_props(panel(team, "Runners"), "ratio")
    assert steps(table["thresholds"]) == expected
    assert table["custom.cellOptions"]["type"] == "color-background"


def test_balance_thresholds_are_50_7_and_52_2_mirrored(boards: dict[str, Json]) -> None:
    expected = [(None, "red"), (47.8, "orange"), (49.3, "green"), (50.7, "orange"),
                (52.2, "red")]
    runner, team = boards["runner.json"], boards["team.json"]
    for p in (panel(runner, "Contact-time balance (left share)"),
              panel(team, "Contact-time balance, all runners")):
        defaults = p["fieldConfig"]["defaults"]
        assert steps(defaults["thresholds"]) == expected
        assert defaults["custom"]["thresholdsStyle"] == {"mode": "area"}
        assert (defaults["min"], defaults["max"]) == (45, 55)
    assert steps(panel(runner, "Balance now")["fieldConfig"]["defaults"]["thresholds"]) == \
        expected
    assert steps(override_props(panel(team, "Runners"), "balance")["thresholds"]) == expected


def test_team_table_colours_every_column_and_joins_on_runner(boards: dict[str, Json]) -> None:
    table = panel(boards["team.json"], "Runners")
    assert table["type"] == "table"
    for column in ("ratio", "week change", "balance", "open alerts"):
        props = override_props(table, column)
        assert props["thresholds"]["steps"][0]["value"] is None
        assert props["custom.cellOptions"]["type"] == "color-background"
    assert steps(override_props(table, "week change")["thresholds"]) == [
        (None, "green"), (1.1, "orange"), (1.3, "red")]
    join = table["transformations"][0]
    assert join == {"id": "joinByField", "options": {"byField": "runner", "mode": "outer"}}
    assert all(t["resultFormat"] == "table" and 'GROUP BY "runner"' in t["query"]
               for t in table["targets"])
    assert "now() - 7d" in next(t["query"] for t in table["targets"] if t["refId"] == "D")


def test_weekly_panel_draws_last_week_plus_10_percent(boards: dict[str, Json]) -> None:
    p = panel(boards["runner.json"], "Weekly load vs the week before + 10 %")
    queries_ = {t["refId"]: t["query"] for t in p["targets"]}
    assert '"week_load"' in queries_["A"]
    assert '"last_week_load" * 1.1' in queries_["B"]


def test_bands_are_the_rule_catalogue_defaults() -> None:
    catalogue = load_catalogue()
    ratio = [lv.threshold for lv in catalogue["load_ratio"].levels]
    balance = [lv.threshold for lv in catalogue["gct_balance"].levels]
    assert ratio == [queries.RATIO_NOTICE] == [1.5]
    assert balance == [queries.BALANCE_NOTICE_PTS, queries.BALANCE_WARN_PTS]
    assert queries.BALANCE_BANDS == (47.8, 49.3, 50.7, 52.2)


def test_template_variables(boards: dict[str, Json]) -> None:
    runner_vars = {v["name"]: v for v in boards["runner.json"]["templating"]["list"]}
    assert list(runner_vars) == ["team", "runner"]
    assert runner_vars["team"]["query"].startswith('SHOW TAG VALUES WITH KEY = "team"')
    assert runner_vars["runner"]["query"] == \
        'SHOW TAG VALUES WITH KEY = "runner" WHERE "team" = \'$team\''
    team_vars = [v["name"] for v in boards["team.json"]["templating"]["list"]]
    assert team_vars == ["team"]
    for variables in (runner_vars.values(), boards["team.json"]["templating"]["list"]):
        for v in variables:
            assert v["type"] == "query" and v["datasource"]["uid"] == DATASOURCE_UID
    # panels use the variables the dashboard defines, and nothing else
    for name, board in boards.items():
        defined = {v["name"] for v in board["templating"]["list"]}
        for q in iter_queries(board):
            expand(q.query, dict.fromkeys(defined, "x"))  # raises on an unknown variable
        assert all("$runner" not in q.query for q in iter_queries(board)) or \
            "runner" in defined, name


def test_alerts_are_annotations_from_the_alert_measurement(boards: dict[str, Json]) -> None:
    for name, board in boards.items():
        annotations = [a for a in board["annotations"]["list"] if not a.get("builtIn")]
        assert len(annotations) == 1, name
        alert = annotations[0]
        assert alert["datasource"]["uid"] == DATASOURCE_UID
        for where in (alert, alert["target"]):
            assert 'FROM "alert"' in where["query"] and "$timeFilter" in where["query"]
            assert where["textColumn"] == "message"
            assert {"rule", "severity"} <= set(where["tagsColumn"].split(","))


# ------------------------------------------------------------------------------ macros
def test_expand_fills_macros_and_every_variable_syntax() -> None:
    query = ("SELECT mean(x) FROM m WHERE \"r\" = '$runner' AND \"t\" = '${team}' "
             "AND \"d\" = '[[team]]' AND $timeFilter GROUP BY time($__interval)")
    assert expand(query, {"runner": "ana", "team": "harriers"}, time_from="now-42d",
                  interval="1d") == (
        "SELECT mean(x) FROM m WHERE \"r\" = 'ana' AND \"t\" = 'harriers' "
        "AND \"d\" = 'harriers' AND time > now() - 42d GROUP BY time(1d)")
    assert time_filter("now-7d") == "time > now() - 7d"
    assert expand("WHERE x =~ /^a$/ AND $timeFilter") == \
        "WHERE x =~ /^a$/ AND time > now() - 60d"


@pytest.mark.parametrize(("query", "variables", "kwargs"), [
    ("WHERE r = '$runer'", {"runner": "ana"}, {}),
    ("WHERE r = '$runner'", {"runner": "ana' OR 1=1 --"}, {}),
    ("WHERE $timeFilter", {}, {"time_from": "2024-01-01"}),
    ("GROUP BY time($__interval)", {}, {"interval": "1 hour"}),
])
def test_expand_refuses_unknown_variables_and_unsafe_values(
        query: str, variables: dict[str, str], kwargs: dict[str, str]) -> None:
    with pytest.raises(MacroError):
        expand(query, variables, **kwargs)


def test_every_dashboard_query_expands_completely(boards: dict[str, Json]) -> None:
    kinds: dict[str, int] = {}
    for board in boards.values():
        for q in iter_queries(board):
            text = expand(q.query, {"team": "harriers", "runner": "ana"})
            assert "$" not in text.replace("$/", "") and "[[" not in text, text
            kinds[q.kind] = kinds.get(q.kind, 0) + 1
    assert kinds["panel"] >= 15 and kinds["variable"] == 3 and kinds["annotation"] == 2


# ------------------------------------------------------------------------------ provisioning files
def test_provisioning_files_point_at_the_datasource_and_generated_folder() -> None:
    source = yaml.safe_load((PROVISIONING / "datasources" / "stridewatch.yaml").read_text())
    assert source["apiVersion"] == 1
    (ds,) = source["datasources"]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == "influxdb"
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["url"] == "${STRIDEWATCH_INFLUX_URL}"
    assert ds["jsonData"]["dbName"] == "${STRIDEWATCH_INFLUX_DB}"
    assert ds["secureJsonData"]["password"] == "${STRIDEWATCH_INFLUX_PASSWORD}"
    boards = yaml.safe_load((PROVISIONING / "dashboards" / "stridewatch.yaml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file" and provider["folder"] == "StrideWatch"
    assert provider["options"]["path"] == "${STRIDEWATCH_DASHBOARDS_DIR}"
    # the API payload describes the same datasource as the file
    payload = datasource_payload("http://influx:8086", "stridewatch")
    assert (payload["uid"], payload["type"], payload["jsonData"]["version"]) == (
        ds["uid"], ds["type"], ds["jsonData"]["version"])


# ------------------------------------------------------------------------------ provisioning API
class FakeGrafana:
    """Just enough of Grafana's HTTP API; records every request."""

    def __init__(self, token: str, existing: bool = False) -> None:
        self.token = token
        self.requests: list[dict[str, Any]] = []
        self.datasources: dict[str, Json] = {}
        self.folders: dict[str, Json] = {}
        self.dashboards: dict[str, Json] = {}
        if existing:
            self.datasources[DATASOURCE_UID] = {"uid": DATASOURCE_UID, "id": 7}
            self.folders[FOLDER_UID] = {"uid": FOLDER_UID, "title": "StrideWatch"}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fake.requests.append({"method": self.command, "path": self.path,
                                      "auth": self.headers.get("Authorization"),
                                      "body": body})
                status, answer = fake.answer(self.command, self.path,
                                             self.headers.get("Authorization"), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, method: str, path: str, auth: str | None, body: Any
               ) -> tuple[int, Json]:
        if auth != f"Bearer {self.token}":
            return 401, {"message": "Unauthorized"}
        ds_path = f"/api/datasources/uid/{DATASOURCE_UID}"
        if (method, path) == ("GET", ds_path):
            found = self.datasources.get(DATASOURCE_UID)
            return (200, found) if found else (404, {"message": "Data source not found"})
        if (method, path) == ("POST", "/api/datasources"):
            self.datasources[body["uid"]] = body
            return 200, {"id": 1, "message": "Datasource added", "datasource": body}
        if (method, path) == ("PUT", ds_path):
            self.datasources[DATASOURCE_UID] = body
            return 200, {"id": 7, "message": "Datasource updated"}
        if (method, path) == ("GET", f"/api/folders/{FOLDER_UID}"):
            found = self.folders.get(FOLDER_UID)
            return (200, found) if found else (404, {"message": "folder not found"})
        if (method, path) == ("POST", "/api/folders"):
            self.folders[body["uid"]] = body
            return 200, body
        if (method, path) == ("POST", "/api/dashboards/db"):
            uid = body["dashboard"]["uid"]
            self.dashboards[uid] = body
            return 200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x", "version": 1}
        return 404, {"message": f"no route {method} {path}"}

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana(TOKEN)
    yield fake
    fake.close()


def _push(fake: FakeGrafana, token: str = TOKEN) -> Any:
    datasource = datasource_payload("http://influx:8086", "stridewatch", "reader",
                                    "influx-secret-pw")
    return provision(connect(fake.url, token), generate.build_all(), datasource,
                     where=fake.url, secrets=[token])


def test_provision_posts_datasource_folder_and_both_dashboards(
        grafana: FakeGrafana, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    done = _push(grafana)
    assert grafana.calls() == [
        ("GET", f"/api/datasources/uid/{DATASOURCE_UID}"), ("POST", "/api/datasources"),
        ("GET", f"/api/folders/{FOLDER_UID}"), ("POST", "/api/folders"),
        ("POST", "/api/dashboards/db"), ("POST", "/api/dashboards/db")]
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in grafana.requests)
    ds = grafana.datasources[DATASOURCE_UID]
    assert ds["type"] == "influxdb" and ds["url"] == "http://influx:8086"
    assert ds["jsonData"] == {"version": "InfluxQL", "dbName": "stridewatch",
                              "httpMode": "POST"}
    assert ds["secureJsonData"] == {"password": "influx-secret-pw"}
    assert grafana.folders[FOLDER_UID]["title"] == "StrideWatch"
    built = generate.build_all()
    for board in built.values():
        sent = grafana.dashboards[board["uid"]]
        assert sent["overwrite"] is True and sent["folderUid"] == FOLDER_UID
        assert sent["dashboard"] == board
    assert done.datasource == "created" and done.folder == "created"
    assert done.dashboards == {b["uid"]: f"/d/{b['uid']}/x" for b in built.values()}
    assert caplog.records, "provisioning should say what it did"
    assert TOKEN not in caplog.text and "influx-secret-pw" not in caplog.text


def test_provision_again_updates_in_place() -> None:
    fake = FakeGrafana(TOKEN, existing=True)
    try:
        done = _push(fake)
        done_again = _push(fake)
    finally:
        fake.close()
    assert ("PUT", f"/api/datasources/uid/{DATASOURCE_UID}") in fake.calls()
    assert ("POST", "/api/datasources") not in fake.calls()
    assert ("POST", "/api/folders") not in fake.calls()
    assert done == done_again
    assert (done.datasource, done.folder) == ("updated", "exists")
    assert len(fake.dashboards) == 2


def test_provision_with_a_wrong_token_says_so_without_the_token(
        grafana: FakeGrafana, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "glsa_wrong-token-0000"
    with pytest.raises(ProvisionError, match="401") as failure:
        _push(grafana, token=wrong)
    assert wrong not in str(failure.value) and wrong not in caplog.text
    assert grafana.dashboards == {}


def test_provision_against_nothing_listening_is_a_clear_error(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeGrafana(TOKEN)
    url = fake.url
    fake.close()  # the port is now closed
    datasource = datasource_payload("http://influx:8086", "stridewatch")
    with pytest.raises(ProvisionError, match="unreachable") as failure:
        provision(connect(url, TOKEN, timeout=2), {}, datasource, where=url, secrets=[TOKEN])
    assert url in str(failure.value)
    assert TOKEN not in str(failure.value) and TOKEN not in caplog.text


def test_provision_cli_uses_the_token_from_the_named_variable(
        grafana: FakeGrafana, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    runner = CliRunner()
    result = runner.invoke(dashboards_cli, ["provision", "--url", grafana.url,
                                            "--token-env", "SW_TEST_GRAFANA_TOKEN"],
                           env={"SW_TEST_GRAFANA_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert f"{grafana.url}/d/{runner_dashboard.UID}/x" in result.output
    assert TOKEN not in result.output and TOKEN not in caplog.text
    missing = runner.invoke(dashboards_cli, ["provision", "--url", grafana.url,
                                             "--token-env", "SW_TEST_UNSET_TOKEN"], env={})
    assert missing.exit_code != 0 and "SW_TEST_UNSET_TOKEN" in missing.output


# ------------------------------------------------------------------------------ report
def _answer(*series: Json) -> Json:
    return {"results": [{"statement_id": 0, "series": list(series)}]}


class CannedInflux:
    """Answers the report's queries from a few fixed series, keyed by what they select."""

    def __init__(self, runners: list[str], now: datetime) -> None:
        self.asked: list[str] = []
        day_ms = [int((now - timedelta(days=d)).timestamp() * 1000) for d in range(30, 0, -1)]

        def per_runner(columns: list[str], rows: Any) -> list[Json]:
            return [{"name": "m", "tags": {"runner": r}, "columns": ["time", *columns],
                     "values": rows(i)} for i, r in enumerate(runners)]

        self.table: list[tuple[str, Json]] = [
            ("SHOW TAG VALUES", _answer({"name": "daily_load", "columns": ["key", "value"],
                                         "values": [["runner", r] for r in runners]})),
            ('last("acwr")', _answer(*per_runner(["ratio"], lambda i: [[day_ms[-1],
                                                                          1.0 + 0.3 * i]]))),
            ('last("week_change")', _answer(*per_runner(["week change"],
                                                        lambda i: [[day_ms[-1], 1.2]]))),
            ('last("gct_balance_pct")', _answer(*per_runner(["balance"],
                                                            lambda i: [[day_ms[-1], 51.0]]))),
            ('count("message")', _answer(*per_runner(["open alerts"],
                                                     lambda i: [[day_ms[0], i]]))),
            ('"severity", "rule"', _answer({"name": "alert", "tags": {"runner": runners[-1]},
                                            "columns": ["time", "severity", "rule", "title",
                                                        "message"],
                                            "values": [[day_ms[-1], "warn", "load_ratio",
                                                        "Load rising", "Ratio 1.6 <b>"]]})),
            ('SELECT "load"', _answer(*per_runner(
                ["load", "acute", "load_unit"],
                lambda i: [[t, 5.0 + i, 4.0 + i, "km"] for t in day_ms]))),
            ('SELECT "acwr"', _answer(*per_runner(
                ["acwr"], lambda i: [[t, 0.9 + 0.01 * n + 0.2 * i]
                                     for n, t in enumerate(day_ms)]))),
            ('mean("gct_balance_pct")', _answer(*per_runner(
                ["mean"], lambda i: [[t, 50.0 + i] for t in day_ms]))),
        ]

    def __call__(self, query: str) -> Mapping[str, Any]:
        self.asked.append(query)
        for key, answer in self.table:
            if key in query:
                return answer
        raise AssertionError(f"unexpected query {query}")


def test_report_draws_every_runner_and_lists_alerts_with_next_steps(tmp_path: Path) -> None:
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    influx = CannedInflux(["ana", "ben"], now)
    data = fetch_team(influx, "harriers", 42, next_steps={"load_ratio": "Keep it easy."},
                      now=now)
    assert all("time > now() - 42d" in q or "SHOW" in q or "7d" in q for q in influx.asked)
    assert data.runners == ["ana", "ben"] and data.has_data
    assert [(r.runner, r.ratio, r.open_alerts) for r in data.rows] == [
        ("ana", 1.0, 0), ("ben", 1.3, 1)]
    report = render(data, tmp_path)
    html = report.html.read_text()
    assert set(report.charts) == {"load", "ratio", "balance"}
    for path in report.charts.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
        assert f'src="{path.name}"' in html
    assert report.legends == {name: ["ana", "ben"] for name in ("load", "ratio", "balance")}
    assert DISCLAIMER in html and "Keep it easy." in html
    assert "Ratio 1.6 &lt;b&gt;" in html  # messages are escaped
    assert '<td class="num ok">1.30</td>' in html  # under the one band, 1.5


def test_report_for_an_empty_team_says_so(tmp_path: Path) -> None:
    def nothing(query: str) -> Mapping[str, Any]:
        return {"results": [{"statement_id": 0}]}

    data = fetch_team(nothing, "ghosts", 42)
    assert not data.has_data and data.runners == []
    report = render(data, tmp_path)
    html = report.html.read_text()
    assert report.charts == {} and 'id="no-data"' in html
    assert "No data for team <strong>ghosts</strong>" in html and DISCLAIMER in html


def test_charts_without_balance_data_still_render(tmp_path: Path) -> None:
    data = TeamData(team="t", days=42, generated_at=datetime(2025, 6, 1, tzinfo=UTC), tz=UTC,
                    runners=["ana"],
                    ratio={"ana": [(datetime(2025, 5, d, tzinfo=UTC), 1.1) for d in (1, 2)]})
    report = render(data, tmp_path)
    assert report.legends["ratio"] == ["ana"] and report.legends["balance"] == []
    assert report.charts["balance"].stat().st_size > 5000


def test_report_cli_rejects_a_bad_team_id() -> None:
    result = CliRunner().invoke(report_cli, ["--team", "../etc"])
    assert result.exit_code == 2 and "--team" in result.output


def test_legend_labels_reads_the_figure() -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], label="ana")
    ax.legend()
    assert legend_labels(fig) == ["ana"]


def _alert(runner: str, rule: str, severity: str, day: int) -> AlertRow:
    return AlertRow(datetime(2025, 6, day, 9, tzinfo=UTC), runner, severity, rule,
                    f"{rule} on {day}", "", "")


def test_a_later_alert_of_the_same_rule_supersedes_the_earlier_ones() -> None:
    alerts = [_alert("ana", "load_ratio", "warn", 1), _alert("ana", "load_ratio", "notice", 3),
              _alert("ana", "load_ratio", "notice", 2), _alert("ben", "load_ratio", "notice", 1),
              _alert("ana", "pain_after_run", "critical", 1)]
    got = open_alerts(alerts)
    # most severe first; ana's load ratio is the one from the 3rd, replacing two
    assert [(a.runner, a.rule, a.time.day, a.earlier) for a in got] == [
        ("ana", "pain_after_run", 1, 0), ("ana", "load_ratio", 3, 2),
        ("ben", "load_ratio", 1, 0)]


def test_open_alerts_from_influx_are_counted_per_runner(tmp_path: Path) -> None:
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    influx = CannedInflux(["ana", "ben"], now)
    day_ms = int((now - timedelta(days=1)).timestamp() * 1000)
    influx.table.insert(0, ('"severity", "rule"', _answer(
        {"name": "alert", "tags": {"runner": "ben"},
         "columns": ["time", "severity", "rule", "title", "message"],
         "values": [[day_ms, "notice", "load_ratio", "Load rising", "newer"],
                    [day_ms - 86_400_000, "warn", "load_ratio", "Load rising", "older"],
                    [day_ms - 86_400_000, "notice", "gct_balance", "Balance", "tilt"]]})))
    data = fetch_team(influx, "harriers", 42, now=now,
                      next_steps={"load_ratio": "Ease off to {target_km} km.",
                                  "gct_balance": "Notice a sore side."})
    # stored without their own next step: the rule's, unless it is an unfilled template
    assert [a.next_step for a in data.alerts] == ["", "Notice a sore side."]
    assert [(a.rule, a.message, a.earlier) for a in data.alerts] == [
        ("load_ratio", "newer", 1), ("gct_balance", "tilt", 0)]
    assert [(r.runner, r.open_alerts) for r in data.rows] == [("ana", 0), ("ben", 2)]
    html = render(data, tmp_path).html.read_text()
    assert "older" not in html and "replaces 1 earlier alert of this rule" in html


def test_an_alert_s_own_next_step_comes_first(tmp_path: Path) -> None:
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    influx = CannedInflux(["ana"], now)
    influx.table.insert(0, ('"next_step"', _answer(
        {"name": "alert", "tags": {"runner": "ana"},
         "columns": ["time", "severity", "rule", "title", "message", "next_step"],
         "values": [[int(now.timestamp() * 1000) - 3_600_000, "notice", "session_spike",
                     "Long run", "18 km", "Keep the next one under 14.6 km."]]})))
    data = fetch_team(influx, "harriers", 42, now=now,
                      next_steps={"session_spike": "Keep it under {longest_km} km."})
    assert [a.next_step for a in data.alerts] == ["Keep the next one under 14.6 km."]


def test_a_one_runner_report_has_only_that_runner(tmp_path: Path) -> None:
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    team = fetch_team(CannedInflux(["ana", "ben"], now), "harriers", 42, now=now)
    data = for_runner(team, "ana")
    assert data.runners == ["ana"] and [r.runner for r in data.rows] == ["ana"]
    assert set(data.ratio) == {"ana"} and data.alerts == []  # the canned alert is ben's
    report = render(data, tmp_path)
    assert report.html.name == "harriers-ana-report.html"
    assert {p.name for p in report.charts.values()} == {
        f"harriers-ana-{name}.png" for name in ("load", "ratio", "balance")}
    assert report.legends["ratio"] == ["ana"]
    html = report.html.read_text()
    assert "<h1>Runner ana (team harriers)</h1>" in html and "<td>ben</td>" not in html
    assert 'id="no-alerts"' in html


def test_the_page_says_the_ratio_s_one_band_and_prints_cleanly(tmp_path: Path) -> None:
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    html = render(fetch_team(CannedInflux(["ana"], now), "harriers", 42, now=now),
                  tmp_path).html.read_text()
    assert "1.3" not in html  # the ratio has one band, 1.5
    assert 'alt="Acute:chronic load ratio per runner with the 1.5 band"' in html
    print_css = html[html.index("@media print"):html.index("</style>")]
    for rule in ("nav { display: none; }", "break-before: page", "break-inside: avoid",
                 "max-width: 100%", "table-header-group"):
        assert rule in print_css, rule


def test_report_cli_needs_a_team_or_a_runner() -> None:
    result = CliRunner().invoke(report_cli, [])
    assert result.exit_code == 2 and "--team TEAM, or --runner RUNNER" in result.output
    bad = CliRunner().invoke(report_cli, ["--runner", "Ana!"])
    assert bad.exit_code == 2 and "--runner" in bad.output


def test_a_runner_s_report_refuses_a_team_the_roster_does_not_put_them_in(
        tmp_path: Path) -> None:
    from base.settings import Settings
    from dashboards.report import ReportError, make_report

    roster = tmp_path / "roster.yaml"
    roster.write_text("teams: [{id: club, name: Club}, {id: rivals, name: Rivals}]\n"
                      "runners: [{id: ana, name: Ana, team: club}]\n")
    settings = Settings(roster_file=roster, data_dir=tmp_path)
    with pytest.raises(ReportError, match="runner 'ana' is in team 'club'"):
        make_report(settings, "rivals", 42, tmp_path / "out", runner="ana")
    assert not (tmp_path / "out").exists()
