#!/bin/sh
# Write every secret the production stack mounts (compose.yaml's `secrets:`) into
# ./secrets, or the folder given: random passwords and tokens, Mosquitto's password file
# with the two service accounts, and a CA with the MQTT server's certificate for
# MQTT_PUBLIC_HOST (from the environment or .env). Files are mode 0600; those read by an
# image's own user are 0640 with its group (Mosquitto's 1883, Grafana's 472): Docker
# mounts secret files as they are. Existing files are kept: running it again changes
# nothing; delete a file to make it anew.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir="${1:-$here/secrets}"
host="${MQTT_PUBLIC_HOST:-$(sed -n 's/^MQTT_PUBLIC_HOST=//p' "$here/.env" 2>/dev/null || true)}"
host="${host:-localhost}"
umask 077
mkdir -p "$dir"

made() { echo "wrote $1"; }
random_secret() {
  file="$dir/$1"
  [ -s "$file" ] && return 0
  # no newline: every reader takes the file's bytes as the secret
  openssl rand -base64 48 | tr -d '/+=\n' | cut -c1-40 | tr -d '\n' >"$file"
  made "$file"
}
for name in stridewatch_bridge_password stridewatch_notifier_password \
    stridewatch_influx_token influx_admin_password grafana_influx_password \
    grafana_admin_password; do
  random_secret "$name"
done

# Kafka's KRaft cluster id (Kubernetes; compose takes KAFKA_CLUSTER_ID from .env): 16
# random bytes, base64url without padding, as kafka-storage.sh random-uuid makes them
if [ ! -s "$dir/kafka_cluster_id" ]; then
  openssl rand -base64 16 | tr '+/' '-_' | tr -d '=\n' >"$dir/kafka_cluster_id"
  made "$dir/kafka_cluster_id"
fi

passwd_file="$dir/mosquitto_passwd"
if [ ! -s "$passwd_file" ]; then
  if ! command -v mosquitto_passwd >/dev/null; then
    echo "mosquitto_passwd is missing (apt-get install mosquitto)" >&2
    exit 1
  fi
  : >"$passwd_file"
  mosquitto_passwd -b "$passwd_file" svc-bridge "$(cat "$dir/stridewatch_bridge_password")"
  mosquitto_passwd -b "$passwd_file" svc-notifier \
    "$(cat "$dir/stridewatch_notifier_password")"
  made "$passwd_file (svc-bridge, svc-notifier; add runners with mosquitto_passwd)"
fi

if [ ! -s "$dir/mqtt_server.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=StrideWatch MQTT CA" \
    -keyout "$dir/mqtt_ca.key" -out "$dir/mqtt_ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$host" \
    -keyout "$dir/mqtt_server.key" -out "$dir/mqtt_server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:mosquitto\nextendedKeyUsage=serverAuth\n' "$host" \
    >"$dir/mqtt_server.ext"
  openssl x509 -req -in "$dir/mqtt_server.csr" -CA "$dir/mqtt_ca.crt" \
    -CAkey "$dir/mqtt_ca.key" -CAcreateserial -days 825 -extfile "$dir/mqtt_server.ext" \
    -out "$dir/mqtt_server.crt" 2>/dev/null
  rm -f "$dir/mqtt_server.csr" "$dir/mqtt_server.ext"
  made "$dir/mqtt_ca.crt and $dir/mqtt_server.crt (for $host; devices trust the CA)"
fi
chmod 0644 "$dir/mqtt_ca.crt" "$dir/mqtt_server.crt"
chmod 0640 "$passwd_file" "$dir/mqtt_server.key" "$dir/grafana_admin_password" \
  "$dir/grafana_influx_password"
if [ "$(id -u)" = 0 ]; then
  chgrp 1883 "$passwd_file" "$dir/mqtt_server.key"
  chgrp 472 "$dir/grafana_admin_password" "$dir/grafana_influx_password"
fi

if [ ! -s "$dir/roster.yaml" ]; then
  echo "no roster yet: put yours at $dir/roster.yaml (or name it in ROSTER_FILE, .env)"
fi
