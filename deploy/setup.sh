#!/usr/bin/env bash
# Set up everything StrideWatch needs on a Debian/Ubuntu machine: the OS services
# (Mosquitto, InfluxDB 1.x, VictoriaMetrics for the v2 write check) and a virtualenv
# with the project installed. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || need_apt+=(mosquitto)
command -v influxd >/dev/null 2>&1 || need_apt+=(influxdb)
command -v victoria-metrics >/dev/null 2>&1 || need_apt+=(victoria-metrics)
# openssl: the local CA and certificates for the MQTT TLS listener
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# mosquitto_sub / mosquitto_pub: reading a phone topic by hand, as the README shows
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# headless Chromium: the coach report's browser and print test
[ -x /usr/bin/chromium ] || need_apt+=(chromium chromium-driver)
python_ok=0
for py in python3.13 python3.12 python3.11 python3; do
  if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PYTHON="$py"; python_ok=1; break
  fi
done
if [ "$python_ok" -eq 0 ]; then need_apt+=(python3 python3-venv python3-dev); fi

if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "==> installing OS packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  # the packaged daemons are not used: StrideWatch starts its own with its own configs
  $SUDO systemctl disable --now mosquitto influxdb victoria-metrics >/dev/null 2>&1 || true
fi
if [ "$python_ok" -eq 0 ]; then
  PYTHON=python3
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "StrideWatch needs Python 3.11 or newer; this system's python3 is $("$PYTHON" -V 2>&1)." >&2
    echo "Install python3.11 (or newer) with its venv module and run this again." >&2
    exit 1
  fi
fi

# the Kubernetes overlay's build check needs kubectl 1.21+ (its built-in kustomize);
# Debian's kubernetes-client (1.20) is too old for the overlay, so say so instead
if ! command -v kubectl >/dev/null 2>&1; then
  echo "note: kubectl 1.21 or newer is not installed; the deployment-consistency test" \
       "that builds deploy/k8s will fail until it is (https://kubernetes.io/docs/tasks/tools/)" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating virtualenv .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
echo "==> installing StrideWatch and its test tools into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,rocksdb]'
