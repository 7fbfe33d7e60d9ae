"""The production deployments (deploy/production, deploy/k8s) agree with the code.

No Docker engine or Kubernetes cluster runs here, so this is what can be validated: the
files parse (PyYAML, ``kubectl kustomize``), what they mount exists and is the file the
local stack and the tests use, every setting they pass exists and validates, images are
pinned, the partition count is one number. Each check is also run on a copy of the
repository with one file drifted, and must then fail.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy import consistency
from deploy.production_files import derived_files, mosquitto_conf

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "deploy" / "production"


def copy_repo(into: Path) -> Path:
    """What the checks read: deploy/, dashboards' provisioning and JSON, pyproject.toml."""
    ignore = shutil.ignore_patterns("__pycache__", "secrets", ".env")
    shutil.copytree(ROOT / "deploy", into / "deploy", ignore=ignore)
    for folder in ("provisioning", "generated"):
        shutil.copytree(ROOT / "dashboards" / folder, into / "dashboards" / folder)
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")
    return into


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_deployments_agree_with_the_code(tmp_path: Path) -> None:
    assert consistency.all_problems(ROOT, tmp_path) == []


def test_the_compose_file_runs_the_production_settings(tmp_path: Path) -> None:
    import yaml

    compose = yaml.safe_load((PRODUCTION / "compose.yaml").read_text())
    env = consistency.read_env_file(PRODUCTION / "example.env")
    worker = consistency._environment(compose["services"]["worker"])
    assert worker["STRIDEWATCH_WORKER_STORE"] == "rocksdb://"
    assert worker["STRIDEWATCH_KAFKA_ONE_RECORD_PER_BATCH"] == "false"
    assert worker["STRIDEWATCH_KAFKA_PROCESSING_GUARANTEE"] == "exactly_once"
    brokers = [s for name, s in compose["services"].items() if name.startswith("kafka-")
               and name != "kafka-topics"]
    assert len(brokers) == 3
    for broker in brokers:
        assert broker["environment"]["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert broker["environment"]["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
    created = consistency.topics_created(ROOT, {
        "STRIDEWATCH_KAFKA_PARTITIONS": env["STRIDEWATCH_KAFKA_PARTITIONS"]}, tmp_path)
    calls = (tmp_path / "kafka-topics.calls").read_text().splitlines()
    changelog = next(c for c in calls if "runner_state-changelog" in c)
    assert "cleanup.policy=compact" in changelog
    assert all("--replication-factor 3" in c and "min.insync.replicas=2" in c for c in calls)
    assert created["stridewatch.events"] == int(env["STRIDEWATCH_KAFKA_PARTITIONS"])


def test_the_kubernetes_overlay_builds_with_probes_and_scaled_workers(tmp_path: Path) -> None:
    docs = consistency.kustomize_build(ROOT, tmp_path)
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    worker = by_name[("StatefulSet", "worker")]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    config = next(d for d in docs if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"].startswith("stridewatch-config"))
    assert 1 < worker["spec"]["replicas"] <= int(config["data"]["STRIDEWATCH_KAFKA_PARTITIONS"])
    assert by_name[("StatefulSet", "kafka")]["spec"]["replicas"] == 3
    assert all(d["metadata"].get("namespace") == "stridewatch" for d in docs
               if d["kind"] != "Namespace")


def test_the_production_mosquitto_config_is_the_local_template(tmp_path: Path) -> None:
    from deploy.mosquitto import MOSQUITTO_CONF

    # every directive of the local template but the paths, listener and user is in it
    local = [line for line in MOSQUITTO_CONF.splitlines()
             if line and not line.startswith("#") and "{" not in line]
    rendered = mosquitto_conf().splitlines()
    assert local and all(line in rendered for line in local)
    assert "listener 8883 0.0.0.0" in rendered and "allow_anonymous false" in rendered


def test_the_entrypoint_turns_secret_files_into_settings(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "stridewatch_influx_token").write_text("token-from-a-file")
    (secrets / "roster.yaml").write_text("teams: []\n")
    env = {"PATH": os.environ["PATH"], "SECRETS_DIR": str(secrets)}
    out = subprocess.run(["sh", str(PRODUCTION / "entrypoint.sh"), "env"], env=env,
                         capture_output=True, text=True, check=True).stdout
    seen = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert seen["STRIDEWATCH_INFLUX_TOKEN"] == "token-from-a-file"
    # only files named after a setting: the roster stays a file
    assert not any(key.startswith("STRIDEWATCH_ROSTER") for key in seen)
    assert [k for k in seen if k.startswith("STRIDEWATCH_")] == ["STRIDEWATCH_INFLUX_TOKEN"]


def test_make_secrets_writes_private_files_once(tmp_path: Path) -> None:
    written = consistency.secrets_written(ROOT, tmp_path / "s")
    assert {"mosquitto_passwd", "mqtt_ca.crt", "mqtt_server.crt", "mqtt_server.key",
            "stridewatch_influx_token", "kafka_cluster_id"} <= written
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "s").iterdir()}
    assert modes["stridewatch_influx_token"] == 0o600
    assert modes["mqtt_server.key"] == 0o640 and modes["mqtt_ca.crt"] == 0o644
    passwd = (tmp_path / "s" / "mosquitto_passwd").read_text()
    assert passwd.startswith("svc-bridge:") and "svc-notifier:" in passwd
    assert len((tmp_path / "s" / "kafka_cluster_id").read_text()) == 22
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    consistency.secrets_written(ROOT, tmp_path / "s")
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before


# ------------------------------------------------------------------------------ drift
Drift = Callable[[Path], None]
COMPOSE = "deploy/production/compose.yaml"
K8S = "deploy/k8s/base"


def _append(rel: str, text: str) -> Drift:
    def drift(root: Path) -> None:
        (root / rel).write_text((root / rel).read_text() + text)

    return drift


def _edit(rel: str, old: str, new: str) -> Drift:
    return lambda root: edit(root / rel, old, new)


def _remove(rel: str) -> Drift:
    return lambda root: (root / rel).unlink()


def _mount_other_file(root: Path) -> None:
    (root / "deploy/production/mosquitto/other.conf").write_text("listener 1883\n")
    edit(root / COMPOSE, "./mosquitto/mosquitto.conf:", "./mosquitto/other.conf:")


DRIFTS: dict[str, tuple[Drift, str]] = {
    "production mosquitto.conf edited": (
        _append("deploy/production/mosquitto/mosquitto.conf", "allow_anonymous true\n"),
        "mosquitto.conf differs"),
    "kubernetes ACL copy edited": (
        _append(f"{K8S}/mosquitto/acl", "topic readwrite #\n"), "acl differs"),
    "dashboard copy stale": (
        _edit(f"{K8S}/grafana/team.json", "{", "{ "), "team.json differs"),
    "compose mounts a missing file": (
        _edit(COMPOSE, "./mosquitto/acl:", "./mosquitto/acl.old:"), "does not exist"),
    "compose mounts a file the tests do not use": (
        _mount_other_file, "neither a rendered file"),
    "compose passes an unknown setting": (
        _edit(COMPOSE, '  STRIDEWATCH_LOG_LEVEL: ${STRIDEWATCH_LOG_LEVEL}\n',
              '  STRIDEWATCH_LOG_LEVEL: ${STRIDEWATCH_LOG_LEVEL}\n'
              '  STRIDEWATCH_KAFKA_PARTITION: "4"\n'),
        "STRIDEWATCH_KAFKA_PARTITION is not a setting"),
    "compose passes a secret as a value": (
        _edit(COMPOSE, '  STRIDEWATCH_OPS_PORT: "9464"\n',
              '  STRIDEWATCH_OPS_PORT: "9464"\n  STRIDEWATCH_INFLUX_TOKEN: abc\n'),
        "STRIDEWATCH_INFLUX_TOKEN is a secret"),
    "compose passes an invalid value": (
        _edit(COMPOSE, "STRIDEWATCH_WORKER_STORE: rocksdb://", "STRIDEWATCH_WORKER_STORE: disk://"),
        "do not validate"),
    "compose asks exactly_once of the local-broker workaround": (
        _edit(COMPOSE, 'STRIDEWATCH_KAFKA_ONE_RECORD_PER_BATCH: "false"',
              'STRIDEWATCH_KAFKA_ONE_RECORD_PER_BATCH: "true"'), "do not validate"),
    "compose secret file names no setting": (
        _edit(COMPOSE, "      - stridewatch_bridge_password\n      - roster.yaml",
              "      - stridewatch_bridge_passwd\n      - roster.yaml"),
        "names no secret setting"),
    "compose secret not made by make-secrets.sh": (
        _append(COMPOSE, "  extra_token:\n    file: ./secrets/extra_token\n"),
        "not written by make-secrets.sh"),
    "compose image latest": (
        _edit(COMPOSE, "eclipse-mosquitto:2.0.20", "eclipse-mosquitto:latest"), "not pinned"),
    "compose image untagged": (
        _edit(COMPOSE, "image: influxdb:2.7.11", "image: influxdb"), "not pinned"),
    "compose image floating minor": (
        _edit(COMPOSE, "grafana/grafana:11.4.0", "grafana/grafana:11.4"), "not pinned"),
    "stridewatch image behind the project": (
        _edit(COMPOSE, "image: stridewatch:0.1.0", "image: stridewatch:0.0.9"),
        "the project is at"),
    "dockerfile base image floating": (
        _edit("deploy/production/Dockerfile", "python:3.11.11-slim-bookworm", "python:3.11-slim"),
        "not pinned"),
    "environment file partitions differ": (
        _edit("deploy/production/example.env", "STRIDEWATCH_KAFKA_PARTITIONS=12",
              "STRIDEWATCH_KAFKA_PARTITIONS=8"), "STRIDEWATCH_KAFKA_PARTITIONS=12, but"),
    "kubernetes partitions differ": (
        _edit(f"{K8S}/stridewatch.env", "STRIDEWATCH_KAFKA_PARTITIONS=12",
              "STRIDEWATCH_KAFKA_PARTITIONS=6"), "STRIDEWATCH_KAFKA_PARTITIONS=6, but"),
    "topic script forgets a topic": (
        _edit("deploy/production/kafka/create-topics.sh", "metrics deadletters", "metrics"),
        "creates stridewatch.deadletters with no partitions"),
    "grafana misses a provisioning variable": (
        _edit(COMPOSE,
              "      STRIDEWATCH_DASHBOARDS_DIR: /var/lib/grafana/dashboards/stridewatch\n", ""),
        "${STRIDEWATCH_DASHBOARDS_DIR}"),
    "kubernetes resource missing": (_remove(f"{K8S}/worker.yaml"), "worker.yaml does not exist"),
    "kubernetes config names an unknown setting": (
        _append(f"{K8S}/stridewatch.env", "STRIDEWATCH_NOT_A_SETTING=1\n"),
        "STRIDEWATCH_NOT_A_SETTING is not a setting"),
    "kubernetes workers beyond the partitions": (
        _edit("deploy/k8s/overlays/production/kustomization.yaml",
              "  - name: worker\n    count: 3", "  - name: worker\n    count: 13"),
        "13 replicas, but only 12 partitions"),
    "kubernetes image latest": (
        _edit(f"{K8S}/grafana.yaml", "grafana/grafana:11.4.0", "grafana/grafana:latest"),
        "not pinned"),
    "kubernetes readiness probe path": (
        _edit(f"{K8S}/worker.yaml", "path: /readyz", "path: /ready"), "probes must be"),
    "kubernetes secret key missing": (
        _edit("deploy/k8s/overlays/production/kustomization.yaml",
              "      - secrets/stridewatch_influx_token\n", ""),
        "stridewatch_influx_token, which the Secret lacks"),
    "kubernetes processes serve only loopback": (
        _edit(f"{K8S}/stridewatch.env", "STRIDEWATCH_OPS_HOST=0.0.0.0",
              "STRIDEWATCH_OPS_HOST=127.0.0.1"), "OPS_HOST is 127.0.0.1"),
    "compose processes serve no health endpoint": (
        _edit(COMPOSE, 'STRIDEWATCH_OPS_PORT: "9464"', 'STRIDEWATCH_OPS_PORT: "0"'),
        "OPS_PORT is not set"),
    "kubernetes configmap copy missing": (
        _remove(f"{K8S}/kafka/create-topics.sh"), "create-topics.sh, which does not exist"),
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_a_drifted_copy_fails_the_checks(drift: str, tmp_path: Path) -> None:
    root = copy_repo(tmp_path / "repo")
    assert consistency.derived_problems(root) == []  # the copy agrees before the drift
    change, expected = DRIFTS[drift]
    change(root)
    problems = consistency.all_problems(root, tmp_path / "scratch")
    assert any(expected in p for p in problems), problems


def test_every_derived_file_is_committed() -> None:
    for path in derived_files(ROOT):
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT,
                                 capture_output=True, check=False)
        assert tracked.returncode == 0, f"{path} is not committed"


def test_a_process_creating_the_topics_compacts_the_changelog_and_the_forgotten() -> None:
    # where the topic job has not run yet, the first process creates the topics itself
    from base.kafka import topic_configs
    from base.settings import Settings

    settings = Settings(topic_prefix="club")
    compacted = {settings.state_changelog_topic, settings.forgotten_topic}
    for topic in compacted:
        assert topic_configs(settings, topic) == {"cleanup.policy": "compact"}
    assert all(topic_configs(settings, t) == {} for t in settings.all_topics()
               if t not in compacted)
