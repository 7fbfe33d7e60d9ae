"""The InfluxQL behind the dashboards and the coach report, and the bands they draw.

Queries are Grafana templates: ``$timeFilter``, ``$__interval``, ``$team`` and ``$runner``
are filled in by Grafana, or by :func:`dashboards.macros.expand` for the report and the
tests. Runner and team ids are lowercase letters, digits, ``-`` and ``_`` (the data
contract), so they go into quoted tag comparisons as they are.

Schema: docs/influxdb.md.
"""

from __future__ import annotations

# Bands: the rule catalogue's defaults (rules/catalogue/*.yaml); a unit test keeps them equal.
# the load ratio has one band, Gabbett's team-sport "danger zone" (contested: docs/rules.md)
RATIO_NOTICE = 1.5
BALANCE_NOTICE_PTS = 0.7  # contact-time balance: points from an even 50 %
BALANCE_WARN_PTS = 2.2
# rounded so the JSON says 47.8, not whatever 50 - 2.2 comes to in binary floating point
BALANCE_BANDS = tuple(round(50 + sign * pts, 2) for sign, pts in (
    (-1, BALANCE_WARN_PTS), (-1, BALANCE_NOTICE_PTS), (1, BALANCE_NOTICE_PTS),
    (1, BALANCE_WARN_PTS)))  # 47.8, 49.3, 50.7, 52.2
SYMMETRY_NOTICE_PCT = 5.0
SYMMETRY_WARN_PCT = 10.0
WEEK_CHANGE_NOTICE = 1.1  # the "10 % rule"
WEEK_CHANGE_WARN = 1.3
OPEN_ALERT_WINDOW = "7d"
SEVERITY_COLOURS = {"info": "blue", "notice": "orange", "warn": "red", "critical": "dark-red"}

RUNNER = "\"runner\" = '$runner'"
TEAM = "\"team\" = '$team'"

# ------------------------------------------------------------------------------ variables
TEAMS = 'SHOW TAG VALUES WITH KEY = "team"'
RUNNERS_OF_TEAM = f'SHOW TAG VALUES WITH KEY = "runner" WHERE {TEAM}'

# ------------------------------------------------------------------------------ one runner
RUNNER_RATIO_NOW = (f'SELECT last("acwr") AS "ratio" FROM "daily_load" '
                    f"WHERE {RUNNER} AND $timeFilter")
RUNNER_WEEK_CHANGE_NOW = (f'SELECT last("week_change") AS "week change" FROM "daily_load" '
                          f"WHERE {RUNNER} AND $timeFilter")
RUNNER_BALANCE_NOW = (f'SELECT last("gct_balance_pct") AS "balance" FROM "run_window" '
                      f"WHERE {RUNNER} AND $timeFilter")
RUNNER_OPEN_ALERTS = (f'SELECT count("message") AS "alerts" FROM "alert" '
                      f"WHERE {RUNNER} AND time > now() - {OPEN_ALERT_WINDOW}")
# daily_load points sit at the runner's local midnight, one per day: no regrouping needed
RUNNER_LOAD = (f'SELECT "load" AS "daily load", "acute" AS "acute (7 d EWMA)", '
               f'"chronic" AS "chronic (28 d EWMA)" FROM "daily_load" '
               f"WHERE {RUNNER} AND $timeFilter")
RUNNER_RATIO = (f'SELECT "acwr" AS "acute:chronic" FROM "daily_load" '
                f"WHERE {RUNNER} AND $timeFilter")
RUNNER_WEEK = (f'SELECT "week_load" AS "last 7 days" FROM "daily_load" '
               f"WHERE {RUNNER} AND $timeFilter")
RUNNER_WEEK_LIMIT = (f'SELECT "last_week_load" * {WEEK_CHANGE_NOTICE} AS "7 days before + 10 %" '
                     f'FROM "daily_load" WHERE {RUNNER} AND $timeFilter')
RUNNER_CADENCE = (f'SELECT mean("cadence_spm") AS "cadence" FROM "run_window" '
                  f"WHERE {RUNNER} AND $timeFilter GROUP BY time($__interval) fill(none)")
RUNNER_BALANCE = (f'SELECT mean("gct_balance_pct") AS "left share" FROM "run_window" '
                  f"WHERE {RUNNER} AND $timeFilter GROUP BY time($__interval) fill(none)")
RUNNER_SYMMETRY = (f'SELECT mean("gct_symmetry_pct") AS "stance time", '
                   f'mean("step_symmetry_pct") AS "step length" FROM "run_window" '
                   f"WHERE {RUNNER} AND $timeFilter GROUP BY time($__interval) fill(none)")
RUNNER_ALERTS = (f'SELECT "severity", "rule", "title", "message" FROM "alert" '
                 f"WHERE {RUNNER} AND $timeFilter ORDER BY time DESC LIMIT 200")
RUNNER_ALERT_EVENTS = (f'SELECT "message", "title", "rule", "severity" FROM "alert" '
                       f"WHERE {RUNNER} AND $timeFilter")

# ------------------------------------------------------------------------------ a team
TEAM_RATIO_NOW = (f'SELECT last("acwr") AS "ratio" FROM "daily_load" '
                  f'WHERE {TEAM} AND $timeFilter GROUP BY "runner"')
TEAM_WEEK_CHANGE_NOW = (f'SELECT last("week_change") AS "week change" FROM "daily_load" '
                        f'WHERE {TEAM} AND $timeFilter GROUP BY "runner"')
TEAM_BALANCE_NOW = (f'SELECT last("gct_balance_pct") AS "balance" FROM "run_window" '
                    f'WHERE {TEAM} AND $timeFilter GROUP BY "runner"')
TEAM_OPEN_ALERTS = (f'SELECT count("message") AS "open alerts" FROM "alert" '
                    f'WHERE {TEAM} AND time > now() - {OPEN_ALERT_WINDOW} GROUP BY "runner"')
TEAM_RATIO = (f'SELECT "acwr" FROM "daily_load" '
              f'WHERE {TEAM} AND $timeFilter GROUP BY "runner"')
TEAM_LOAD = (f'SELECT "load", "acute", "load_unit" FROM "daily_load" '
             f'WHERE {TEAM} AND $timeFilter GROUP BY "runner"')
TEAM_ACUTE = (f'SELECT "acute" FROM "daily_load" '
              f'WHERE {TEAM} AND $timeFilter GROUP BY "runner"')
TEAM_BALANCE = (f'SELECT mean("gct_balance_pct") FROM "run_window" '
                f'WHERE {TEAM} AND $timeFilter GROUP BY time($__interval), "runner" fill(none)')
TEAM_ALERTS_OPEN = (f'SELECT "severity", "rule", "title", "message" FROM "alert" '
                    f"WHERE {TEAM} AND time > now() - {OPEN_ALERT_WINDOW} "
                    f'GROUP BY "runner" ORDER BY time DESC')
# the coach report's: with each alert's own next step (filled in when it fired)
TEAM_ALERTS_REPORT = (f'SELECT "severity", "rule", "title", "message", "next_step" FROM "alert" '
                      f"WHERE {TEAM} AND time > now() - {OPEN_ALERT_WINDOW} "
                      f'GROUP BY "runner" ORDER BY time DESC')
TEAM_ALERT_EVENTS = (f'SELECT "message", "title", "rule", "severity", "runner" FROM "alert" '
                     f"WHERE {TEAM} AND $timeFilter")
