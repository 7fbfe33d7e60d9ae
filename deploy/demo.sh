#!/usr/bin/env bash
# One command: set up everything, then run the main job on the local stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
exec .venv/bin/stridewatch run "$@"
