"""Checks that the production deployments agree with the code: what can be validated
without a Docker engine or a Kubernetes cluster.

Each check takes the repository's root (a copy in the tests, to prove it fails on a
drifted file) and returns the problems it found, one line each; none means it agrees:

- the compose file and every kustomization parse, and what they name exists;
- every config file they mount exists and is the very file the tests and the local stack
  use (derived files hold what ``deploy.production_files`` renders);
- every ``STRIDEWATCH_*`` variable the StrideWatch services get is a setting, no secret
  is passed as a plain value, and each service's settings validate;
- every image is pinned to an exact version;
- the partition count is one number everywhere, and the workers are no more than it.

``python -m deploy.consistency`` prints the problems (exit 1 if any).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from base.settings import ENV_PREFIX, Settings, secret_fields
from deploy.production_files import ROOT, derived_files

COMPOSE = Path("deploy/production/compose.yaml")
ENV_FILE = Path("deploy/production/example.env")
MAKE_SECRETS = Path("deploy/production/make-secrets.sh")
TOPICS_SCRIPT = Path("deploy/production/kafka/create-topics.sh")
INFLUX_INIT = Path("deploy/production/influxdb/init-dbrp.sh")
PROVISIONING = Path("dashboards/provisioning")
DOCKERFILE = Path("deploy/production/Dockerfile")
K8S_BASE = Path("deploy/k8s/base")
K8S_OVERLAY = Path("deploy/k8s/overlays/production")
K8S_CONFIG_ENV = K8S_BASE / "stridewatch.env"
IMAGE = "stridewatch"
# the settings' secrets arrive as files named after them (deploy/production/entrypoint.sh)
SECRET_FILE_PREFIX = "stridewatch_"
# a tag is pinned when it is an exact version (2.0.20, 3.11.11-slim-bookworm), with or
# without a digest; "latest", "3.11-slim" or no tag at all are not
PINNED = re.compile(r"^[^:@\s]+:v?\d+\.\d+\.\d+([-.][A-Za-z0-9.-]+)?(@sha256:[0-9a-f]{64})?$")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


# ------------------------------------------------------------------------------ helpers
def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; blank lines and ``#`` comments skipped."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if eq:
            values[key.strip()] = value.strip()
    return values


def interpolate(value: str, env: Mapping[str, str], problems: list[str], where: str) -> str:
    """Compose's ``${VAR}`` / ``${VAR:-default}``; an unset variable without a default is a
    problem (compose would pass an empty string)."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(f"{where}: ${{{name}}} is not set in the environment file")
        return ""

    return VARIABLE.sub(one, value.replace("$$", "\0")).replace("\0", "$")


def is_pinned(image: str) -> bool:
    return bool(PINNED.match(image)) and ":latest" not in image


def project_version(root: Path) -> str:
    with (root / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def setting_name(variable: str) -> str | None:
    """``STRIDEWATCH_KAFKA_PARTITIONS`` → ``kafka_partitions``; None if not prefixed."""
    if not variable.startswith(ENV_PREFIX):
        return None
    return variable[len(ENV_PREFIX):].lower()


def settings_problems(where: str, env: Mapping[str, str], secret_files: Iterable[str]
                      ) -> list[str]:
    """The variables a StrideWatch process gets: settings, no plain secrets, valid."""
    problems: list[str] = []
    secrets = secret_fields()
    values: dict[str, Any] = {}
    for variable, value in env.items():
        name = setting_name(variable)
        if name is None:
            continue
        if name not in Settings.model_fields:
            problems.append(f"{where}: {variable} is not a setting (base/settings.py)")
        elif name in secrets:
            problems.append(f"{where}: {variable} is a secret and must come from a file")
        else:
            values[name] = value
    for file_name in secret_files:
        if not file_name.startswith(SECRET_FILE_PREFIX):
            continue
        name = file_name[len(SECRET_FILE_PREFIX):]
        if name not in secrets:
            problems.append(f"{where}: secret file {file_name} names no secret setting")
        else:
            values[name] = SecretStr("from-a-file")
    if not problems:
        try:
            Settings(**values)
        except (ValidationError, ValueError) as exc:
            problems.append(f"{where}: its settings do not validate: {exc}")
    return problems


def ops_problems(where: str, env: Mapping[str, str]) -> list[str]:
    """Health checks, probes and Prometheus reach /healthz, /readyz and /metrics only if
    the process serves them (a port) on the container's network (not loopback)."""
    port = env.get(f"{ENV_PREFIX}OPS_PORT", "0")
    host = env.get(f"{ENV_PREFIX}OPS_HOST", str(Settings.model_fields["ops_host"].default))
    problems = []
    if port in {"", "0"}:
        problems.append(f"{where}: {ENV_PREFIX}OPS_PORT is not set: no /healthz or /readyz")
    if host not in {"0.0.0.0", "::"}:
        problems.append(f"{where}: {ENV_PREFIX}OPS_HOST is {host}: probes and Prometheus "
                        "from outside the container cannot reach it")
    return problems


def secrets_written(root: Path, into: Path) -> set[str]:
    """The files ``make-secrets.sh`` writes (it is run into ``into``)."""
    subprocess.run(["sh", str(root / MAKE_SECRETS), str(into)], check=True,
                   capture_output=True, env={**os.environ, "MQTT_PUBLIC_HOST": "mqtt.test"})
    return {p.name for p in into.iterdir() if p.is_file()}


def topics_created(root: Path, env: Mapping[str, str], scratch: Path) -> dict[str, int]:
    """Topic → partitions, as ``create-topics.sh`` asks Kafka for them (a stand-in
    ``kafka-topics.sh`` records the calls)."""
    bin_dir = scratch / "kafka-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls = scratch / "kafka-topics.calls"
    calls.write_text("")
    fake = bin_dir / "kafka-topics.sh"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    fake.chmod(0o755)
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env,
               "KAFKA_BIN": str(bin_dir), "KAFKA_BOOTSTRAP": "kafka:9092"}
    subprocess.run(["sh", str(root / TOPICS_SCRIPT)], check=True, capture_output=True,
                   env=run_env)
    created: dict[str, int] = {}
    for line in calls.read_text().splitlines():
        args = line.split()
        created[args[args.index("--topic") + 1]] = int(args[args.index("--partitions") + 1])
    return created


# ------------------------------------------------------------------------------ derived files
def derived_problems(root: Path) -> list[str]:
    return [f"{path.relative_to(root)} differs from what `python -m deploy.production_files` "
            "renders: run it" for path, text in derived_files(root).items()
            if not path.is_file() or path.read_text() != text]


# ------------------------------------------------------------------------------ compose
def _services(compose: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in (compose.get("services") or {}).items():
        yield str(name), dict(service or {})


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _secret_names(service: Mapping[str, Any]) -> list[str]:
    return [s if isinstance(s, str) else str(s["source"]) for s in service.get("secrets") or []]


def _secret_targets(service: Mapping[str, Any]) -> list[str]:
    """The file names the secrets have in the container (/run/secrets/<name> or target)."""
    out = []
    for s in service.get("secrets") or []:
        if isinstance(s, str):
            out.append(s)
        else:
            out.append(Path(str(s.get("target") or s["source"])).name)
    return out


def compose_problems(root: Path, scratch: Path) -> list[str]:
    """The compose stack against the settings, its files, the images and the partitions.

    ``scratch`` is an empty folder the check may write to (secrets, the topics' calls).
    """
    problems: list[str] = []
    compose_path = root / COMPOSE
    try:
        compose = yaml.safe_load(compose_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f"{COMPOSE}: does not parse: {exc}"]
    env = read_env_file(root / ENV_FILE)
    here = compose_path.parent
    derived = {p.resolve() for p in derived_files(root)}
    used_by_tests = {(root / "dashboards" / "provisioning").resolve(),
                     (root / "dashboards" / "generated").resolve()}
    scripts = {(root / TOPICS_SCRIPT).resolve(), (root / INFLUX_INIT).resolve()}
    stridewatch_services: list[str] = []
    version = project_version(root)
    for name, service in _services(compose):
        where = f"{COMPOSE} service {name}"
        image = str(service.get("image") or "")
        if not is_pinned(image):
            problems.append(f"{where}: image {image or '(none)'} is not pinned to a version")
        env_here = {k: interpolate(v, env, problems, where)
                    for k, v in _environment(service).items()}
        if image.split(":")[0] == IMAGE:
            stridewatch_services.append(name)
            if image != f"{IMAGE}:{version}":
                problems.append(f"{where}: image {image}, but the project is at {version}")
            problems += settings_problems(where, env_here, _secret_targets(service))
            problems += ops_problems(where, env_here)
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0] if isinstance(volume, str) \
                else str(volume.get("source", ""))
            if not source.startswith((".", "/")) or ":" not in str(volume):
                continue  # a named or anonymous volume
            path = (here / interpolate(source, env, problems, where)).resolve()
            if not path.exists():
                problems.append(f"{where}: mounts {source}, which does not exist")
            elif not (path in derived or path in scripts
                      or any(path == d or d in path.parents for d in used_by_tests)):
                problems.append(f"{where}: mounts {source}, which is neither a rendered file "
                                "(deploy.production_files), an init script nor one of "
                                "dashboards/")
        for secret in _secret_names(service):
            if secret not in (compose.get("secrets") or {}):
                problems.append(f"{where}: secret {secret} is not declared")
        if name == "grafana":
            problems += _grafana_problems(root, where, service, env_here)
    for needed in ("bridge", "worker", "sink", "notifier"):
        if needed not in stridewatch_services:
            problems.append(f"{COMPOSE}: no {needed} service running the {IMAGE} image")
    # every secret file is one make-secrets.sh writes (or the roster, the operator's)
    written = secrets_written(root, scratch / "secrets")
    for secret, spec in (compose.get("secrets") or {}).items():
        file = interpolate(str((spec or {}).get("file", "")), env, problems,
                           f"{COMPOSE} secret {secret}")
        if not file:
            problems.append(f"{COMPOSE}: secret {secret} is not a file")
        elif secret != "roster.yaml" and Path(file).name not in written:
            problems.append(f"{COMPOSE}: secret {secret} ({file}) is not written by "
                            f"{MAKE_SECRETS.name}")
    problems += _partition_problems(root, compose, env, scratch)
    return problems


def _grafana_problems(root: Path, where: str, service: Mapping[str, Any],
                      env: Mapping[str, str]) -> list[str]:
    """Grafana gets every variable the provisioning files use (dashboards/provisioning)."""
    entrypoint = " ".join(str(part) for part in service.get("entrypoint") or [])
    used = {m.group(1) for f in sorted((root / PROVISIONING).rglob("*.yaml"))
            for m in VARIABLE.finditer(f.read_text())}
    return [f"{where}: the provisioning uses ${{{name}}}, which Grafana does not get"
            for name in sorted(used) if name not in env and f"{name}=" not in entrypoint]


def _partition_problems(root: Path, compose: Mapping[str, Any], env: Mapping[str, str],
                        scratch: Path) -> list[str]:
    problems: list[str] = []
    key = f"{ENV_PREFIX}KAFKA_PARTITIONS"
    default = Settings.model_fields["kafka_partitions"].default
    wanted = env.get(key, str(default))
    counts: dict[str, str] = {}
    for name, service in _services(compose):
        value = _environment(service).get(key)
        if value is not None:
            counts[f"{COMPOSE} service {name}"] = interpolate(value, env, [], name)
    counts[str(K8S_CONFIG_ENV)] = read_env_file(root / K8S_CONFIG_ENV).get(key, str(default))
    for where, value in counts.items():
        if value != wanted:
            problems.append(f"{where}: {key}={value}, but {ENV_FILE} says {wanted}")
    prefix = env.get(f"{ENV_PREFIX}TOPIC_PREFIX", "stridewatch")
    expected = Settings(kafka_partitions=int(wanted), topic_prefix=prefix).all_topics()
    created = topics_created(root, {key: wanted, f"{ENV_PREFIX}TOPIC_PREFIX": prefix},
                             scratch)
    for topic in expected:
        if created.get(topic) != int(wanted):
            problems.append(f"{TOPICS_SCRIPT}: creates {topic} with "
                            f"{created.get(topic, 'no')} partitions, the settings expect "
                            f"{wanted}")
    return problems


def dockerfile_problems(root: Path) -> list[str]:
    problems = []
    for line in (root / DOCKERFILE).read_text().splitlines():
        if line.strip().upper().startswith("FROM "):
            image = line.split()[1]
            if not is_pinned(image):
                problems.append(f"{DOCKERFILE}: base image {image} is not pinned to a version")
    return problems


# ------------------------------------------------------------------------------ kustomize
def _kustomization_problems(root: Path, folder: Path) -> list[str]:
    problems: list[str] = []
    where = folder / "kustomization.yaml"
    try:
        spec = yaml.safe_load((root / where).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        return [f"{where}: does not parse: {exc}"]
    for resource in spec.get("resources") or []:
        path = root / folder / str(resource)
        if path.is_dir():
            problems += _kustomization_problems(root, (folder / str(resource)))
        elif not path.is_file():
            problems.append(f"{where}: resource {resource} does not exist")
        else:
            try:
                list(yaml.safe_load_all(path.read_text()))
            except yaml.YAMLError as exc:
                problems.append(f"{folder / str(resource)}: does not parse: {exc}")
    derived = {p.resolve() for p in derived_files(root)}
    for generator in spec.get("configMapGenerator") or []:
        for entry in [*(generator.get("files") or []), *(generator.get("envs") or [])]:
            file = root / folder / str(entry).split("=", 1)[-1]
            if not file.is_file():
                problems.append(f"{where}: {generator['name']} reads {entry}, which does "
                                "not exist")
            elif file.resolve() not in derived and file.suffix != ".env":
                problems.append(f"{where}: {generator['name']} reads {entry}, which is not "
                                "rendered by deploy.production_files")
    return problems


def kustomize_build(root: Path, scratch: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of the overlay, in a copy with the secrets make-secrets.sh
    writes and a roster."""
    copy = scratch / "k8s-tree"
    shutil.copytree(root / "deploy", copy / "deploy")
    overlay = copy / K8S_OVERLAY
    secrets_written(root, overlay / "secrets")
    (overlay / "secrets" / "roster.yaml").write_text("teams: []\n")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        # a failure, not a skip: the overlay's build is what Kubernetes would apply
        raise subprocess.CalledProcessError(
            127, "kubectl", stderr="kubectl (1.21 or newer, for its built-in kustomize) is "
            "not installed: https://kubernetes.io/docs/tasks/tools/")
    built = subprocess.run([kubectl, "kustomize", str(overlay)], check=True,
                           capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(built) if d]


def _pod_spec(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    if doc.get("kind") in {"Deployment", "StatefulSet", "Job"}:
        return dict(doc["spec"]["template"]["spec"])
    return None


def kustomize_problems(root: Path, scratch: Path) -> list[str]:
    problems = _kustomization_problems(root, K8S_OVERLAY)
    if problems:
        return problems
    try:
        docs = kustomize_build(root, scratch)
    except subprocess.CalledProcessError as exc:
        return [f"kubectl kustomize {K8S_OVERLAY} failed: {exc.stderr.strip()}"]
    config = {str(k): str(v) for d in docs if d["kind"] == "ConfigMap"
              and d["metadata"]["name"].startswith("stridewatch-config")
              for k, v in (d.get("data") or {}).items()}
    secret_keys = {str(k) for d in docs if d["kind"] == "Secret"
                   for k in (d.get("data") or {})}
    written = secrets_written(root, scratch / "k8s-secrets") | {"roster.yaml"}
    for key in secret_keys - written:
        problems.append(f"{K8S_OVERLAY}: Secret key {key} is not written by "
                        f"{MAKE_SECRETS.name}")
    partitions = int(config.get(f"{ENV_PREFIX}KAFKA_PARTITIONS",
                                Settings.model_fields["kafka_partitions"].default))
    metrics_port = config.get(f"{ENV_PREFIX}OPS_PORT")
    version = project_version(root)
    found: set[str] = set()
    for doc in docs:
        spec = _pod_spec(doc)
        if spec is None:
            continue
        name = f"{doc['kind']} {doc['metadata']['name']}"
        secret_items = {str(item["key"]): str(item["path"]) for v in spec.get("volumes") or []
                        if "secret" in v for item in v["secret"].get("items") or []}
        referenced = {*secret_items, *(str(e["valueFrom"]["secretKeyRef"]["key"])
                                      for c in spec.get("containers") or []
                                      for e in c.get("env") or []
                                      if "secretKeyRef" in (e.get("valueFrom") or {}))}
        for key in sorted(referenced - secret_keys):
            problems.append(f"{name}: uses Secret key {key}, which the Secret lacks")
        for container in spec.get("containers") or []:
            image = str(container.get("image", ""))
            if not is_pinned(image):
                problems.append(f"{name}: image {image or '(none)'} is not pinned to a version")
            if image.rsplit("/", 1)[-1].split(":")[0] != IMAGE:
                continue
            found.add(str(doc["metadata"]["name"]))
            if not image.endswith(f":{version}"):
                problems.append(f"{name}: image {image}, but the project is at {version}")
            env = dict(config)
            env.update({str(e["name"]): str(e.get("value", "")) for e in
                        container.get("env") or []})
            problems += settings_problems(name, env, secret_items.values())
            problems += ops_problems(name, env)
            probes = {kind: container.get(f"{kind}Probe", {}).get("httpGet", {})
                      for kind in ("liveness", "readiness")}
            if probes["liveness"].get("path") != "/healthz" or \
                    probes["readiness"].get("path") != "/readyz":
                problems.append(f"{name}: probes must be /healthz (liveness) and /readyz "
                                "(readiness)")
            ports = {str(p.get("name")): str(p["containerPort"])
                     for p in container.get("ports") or []}
            if ports.get("metrics") != metrics_port:
                problems.append(f"{name}: metrics port {ports.get('metrics')}, but "
                                f"{ENV_PREFIX}OPS_PORT is {metrics_port}")
        if doc["metadata"]["name"] == "worker":
            replicas = int(doc["spec"].get("replicas", 1))
            if replicas > partitions:
                problems.append(f"{name}: {replicas} replicas, but only {partitions} "
                                "partitions: the extra workers would stand idle")
    for needed in ("bridge", "worker", "sink", "notifier"):
        if needed not in found:
            problems.append(f"{K8S_OVERLAY}: no {needed} running the {IMAGE} image")
    return problems


def all_problems(root: Path, scratch: Path) -> list[str]:
    (scratch / "compose").mkdir(parents=True, exist_ok=True)
    (scratch / "k8s").mkdir(parents=True, exist_ok=True)
    return [*derived_problems(root), *compose_problems(root, scratch / "compose"),
            *dockerfile_problems(root), *kustomize_problems(root, scratch / "k8s")]


def main() -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="stridewatch-deploy-check-") as scratch:
        problems = all_problems(ROOT, Path(scratch))
    for line in problems:
        print(line)
    if not problems:
        print("the production deployments agree with the settings and their files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
