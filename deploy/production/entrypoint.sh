#!/bin/sh
# The StrideWatch image's entrypoint: every secret file named after a setting
# (/run/secrets/stridewatch_influx_token, ...) becomes that setting's environment
# variable (STRIDEWATCH_INFLUX_TOKEN), so no secret is ever written in a compose file,
# a manifest or an environment file. Then the command runs.
set -eu
secrets_dir="${SECRETS_DIR:-/run/secrets}"
for file in "$secrets_dir"/stridewatch_*; do
  [ -f "$file" ] || continue
  name=$(basename "$file" | tr '[:lower:]' '[:upper:]')
  value=$(cat "$file")
  export "$name=$value"
done
# started as root (Docker mounts secret files as they are on the host, often 0600 root):
# the secrets are read, now run as the image's own user
if [ "$(id -u)" = 0 ] && [ -n "${RUN_AS_USER:-}" ]; then
  chown "$RUN_AS_USER" "${STRIDEWATCH_DATA_DIR:-/var/lib/stridewatch}"
  exec setpriv --reuid="$RUN_AS_USER" --regid="$RUN_AS_USER" --init-groups -- "$@"
fi
exec "$@"
