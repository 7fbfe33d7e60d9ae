"""Grafana dashboards as code, their provisioning, and a coach report that needs no Grafana.

- ``builder``: small panel/variable/annotation builders producing Grafana JSON;
- ``queries``: the InfluxQL both the dashboards and the report run, and their bands;
- ``runner_dashboard`` / ``team_dashboard``: the two dashboards;
- ``generate``: writes ``generated/*.json`` (checked in, read by Grafana provisioning);
- ``macros``: Grafana's macro and variable expansion, for running the queries elsewhere;
- ``provision``: pushes datasource and dashboards to a running Grafana;
- ``report``: the HTML coach report; ``cli``: the commands.
"""
