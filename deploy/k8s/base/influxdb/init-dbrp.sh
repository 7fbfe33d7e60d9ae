#!/bin/sh
# Runs once, after InfluxDB's setup (docker-entrypoint-initdb.d): map the InfluxQL
# database the dashboards query onto the bucket, and give Grafana a read-only v1 user.
set -eu
db="${STRIDEWATCH_INFLUX_DB:?set STRIDEWATCH_INFLUX_DB}"
user="${GRAFANA_INFLUX_USER:?set GRAFANA_INFLUX_USER}"
password_file=/run/secrets/grafana_influx_password
influx v1 dbrp create --bucket-id "$DOCKER_INFLUXDB_INIT_BUCKET_ID" --db "$db" \
  --rp autogen --default --org "$DOCKER_INFLUXDB_INIT_ORG"
influx v1 auth create --username "$user" --password "$(cat "$password_file")" \
  --read-bucket "$DOCKER_INFLUXDB_INIT_BUCKET_ID" --org "$DOCKER_INFLUXDB_INIT_ORG" >/dev/null
echo "InfluxQL database $db mapped onto bucket $DOCKER_INFLUXDB_INIT_BUCKET; user $user reads it"
