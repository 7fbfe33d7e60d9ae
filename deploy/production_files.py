"""The config files of the production deployments, derived from the ones the local stack
and the tests use, so the two cannot drift apart.

- Mosquitto's config and ACL come from the templates in ``deploy/mosquitto.py`` (the
  local stack renders the same templates with its own paths), with the container's paths
  and a TLS listener for devices;
- the Kubernetes base holds copies of them, of the compose stack's topic and InfluxDB
  init scripts and of Grafana's provisioning and dashboards (kustomize reads files only
  from below its own folder).

``python -m deploy.production_files`` writes them; ``--check`` only compares (the
deployment-consistency tests do the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.mosquitto import ACL_HEADER, MOSQUITTO_CONF, PLAIN_LISTENER, TLS_LISTENER

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = Path("deploy/production")
K8S_BASE = Path("deploy/k8s/base")
DASHBOARDS = Path("dashboards")

# where the production Mosquitto image keeps things (eclipse-mosquitto's layout)
CONTAINER_PATHS = {
    "passwd": "/mosquitto/secrets/passwd",
    "acl": "/mosquitto/config/acl",
    "data": "/mosquitto/data",
    "log": "/mosquitto/log/mosquitto.log",
}
PLAIN_PORT = 1883  # inside the cluster only: the pipeline's services
TLS_PORT = 8883  # devices, from outside

# client certificates are optional: require_certificate true demands one signed by the
# CA, and use_identity_as_username true takes the runner id from it
CLIENT_CERTIFICATES = "require_certificate false"


def mosquitto_conf() -> str:
    """The production ``mosquitto.conf``: the local stack's templates, container paths.

    The plain listener stays inside the cluster network (the pipeline's services); devices
    connect over TLS. Both share the password file and ACL (per_listener_settings false).
    """
    listeners = "\n".join([
        PLAIN_LISTENER.format(port=PLAIN_PORT, host="0.0.0.0"),
        TLS_LISTENER.format(port=TLS_PORT, host="0.0.0.0", ca="/mosquitto/certs/ca.crt",
                            cert="/mosquitto/certs/server.crt",
                            key="/mosquitto/secrets/server.key"),
        CLIENT_CERTIFICATES])
    body = MOSQUITTO_CONF.format(listeners=listeners, passwd=CONTAINER_PATHS["passwd"],
                                 acl=CONTAINER_PATHS["acl"], data=CONTAINER_PATHS["data"],
                                 log=CONTAINER_PATHS["log"], user_line="")
    # the template's first line says how the local stack renders it: say how this one is
    _, rest = body.split("\n", 1)
    return ("# Rendered by `python -m deploy.production_files` from deploy/mosquitto.py: "
            "edit that.\n" + rest)


def acl() -> str:
    """The production ACL before any coach is added: the local stack's own header."""
    return ACL_HEADER + "\n"


def _copy(path: Path) -> str:
    return path.read_text()


def derived_files(root: Path = ROOT) -> dict[Path, str]:
    """Every derived file below ``root`` (the repository) and the text it must hold."""
    files: dict[Path, str] = {}
    for folder in (root / PRODUCTION / "mosquitto", root / K8S_BASE / "mosquitto"):
        files[folder / "mosquitto.conf"] = mosquitto_conf()
        files[folder / "acl"] = acl()
    for script in ("kafka/create-topics.sh", "influxdb/init-dbrp.sh"):
        files[root / K8S_BASE / script] = _copy(root / PRODUCTION / script)
    grafana = root / K8S_BASE / "grafana"
    for kind in ("datasources", "dashboards"):
        files[grafana / f"provisioning-{kind}.yaml"] = _copy(
            root / DASHBOARDS / "provisioning" / kind / "stridewatch.yaml")
    for dashboard in sorted((root / DASHBOARDS / "generated").glob("*.json")):
        files[grafana / dashboard.name] = _copy(dashboard)
    return files


def drifted(files: dict[Path, str]) -> list[Path]:
    """The files whose content on disk differs from ``files`` (or that are missing)."""
    return [path for path, text in files.items()
            if not path.is_file() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.production_files")
    parser.add_argument("--check", action="store_true",
                        help="Only say which files differ; exit 1 if any.")
    args = parser.parse_args(argv)
    files = derived_files()
    stale = drifted(files)
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)}")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
