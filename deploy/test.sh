#!/usr/bin/env bash
# One command: set up everything, then lint, type-check and run the whole test suite.
# The suite starts its own Mosquitto, Kafka-compatible broker and InfluxDB on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
echo "==> ruff"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy
echo "==> generated files are up to date"
.venv/bin/stridewatch dashboards generate --check
.venv/bin/stridewatch rules docs --check
echo "==> pytest"
set +e
# two workers, one test file at a time each (a file's tests share its stack);
# each worker starts its own stack on free ports
.venv/bin/pytest -p no:cacheprovider -n "${STRIDEWATCH_TEST_WORKERS:-2}" --dist loadfile "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
