"""`stridewatch runners add R --team T` against the real Mosquitto: one step gives the
runner credentials the broker accepts and a place in their team in the roster file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from base.settings import Settings
from deploy.stack import LocalStack
from stridewatch.processes import settings_env
from team.roster import load_roster
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO_ROSTER = ROOT / "deploy" / "local" / "demo-roster.yaml"
ACCEPTED = (0, 16)  # success, no matching subscribers (nothing reads it here)


def stridewatch(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stridewatch.cli", *args],
                          env=settings_env(settings), capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT)


def puback(settings: Settings, username: str, password: str, topic: str) -> int:
    """The broker's PUBACK reason code for one QoS 1 message (below 128 = accepted, e.g.
    16 "no matching subscribers"; 135 = not authorized); -1 if the connection was refused."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.time_ns()}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    connected: list[int] = []
    acked: list[int] = []
    client.on_connect = lambda c, u, f, reason, p: connected.append(reason.value)
    client.on_publish = lambda c, u, mid, reason, p: acked.append(reason.value)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        wait_for(lambda: connected, timeout=10, what="CONNACK")
        if connected[0] != 0:
            return -1
        # a low pain score on a fixed day: a valid report that fires nothing
        body = {"seq": 1, "t": 1_780_000_000.0, "score": 1, "where": "achilles",
                "when": "after"}
        client.publish(topic, json.dumps(body).encode(), qos=1)
        wait_for(lambda: acked, timeout=10, what="PUBACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return acked[0]


@pytest.fixture
def roster(tmp_path: Path) -> Path:
    path = tmp_path / "roster.yaml"
    shutil.copy(DEMO_ROSTER, path)
    path.chmod(0o600)
    return path


def test_runners_add_with_a_team_gives_credentials_and_a_roster_entry(
        local_stack: LocalStack, stack_settings: Settings, roster: Path) -> None:
    runner = "ra-newbie"
    result = stridewatch(stack_settings, "runners", "add", runner, "--team", "harriers",
                         "--name", "New Bie", "--roster", str(roster))
    assert result.returncode == 0, result.stderr
    assert f"added runner {runner} to team harriers in {roster}" in result.stdout
    password = result.stdout.split("password: ", 1)[1].strip()
    assert password == local_stack.mosquitto.runner_password(runner)
    assert puback(stack_settings, runner, password, f"runners/{runner}/pain") in ACCEPTED
    # and only under their own topics
    assert puback(stack_settings, runner, password, "runners/ana/pain") == 135
    entry = load_roster(roster).runner(runner)
    assert entry is not None and (entry.team, entry.name) == ("harriers", "New Bie")
    text = roster.read_text()
    assert text.startswith("# The demo team used by `stridewatch run`.")  # comment kept
    assert [r.id for r in load_roster(roster).runners] == [
        "ana", "ben", "cleo", "dev", "eli", runner]
    assert roster.stat().st_mode & 0o777 == 0o600
    assert password not in text and "password" not in result.stderr


def test_a_team_the_roster_lacks_is_refused_before_any_credentials(
        local_stack: LocalStack, stack_settings: Settings, roster: Path) -> None:
    runner = "ra-lost"
    before = roster.read_text()
    result = stridewatch(stack_settings, "runners", "add", runner, "--team", "gulls",
                         "--roster", str(roster))
    assert result.returncode == 1
    assert "team 'gulls' is not in" in result.stderr and "--create-team" in result.stderr
    assert local_stack.mosquitto.runner_password(runner) is None
    assert roster.read_text() == before

    created = stridewatch(stack_settings, "runners", "add", runner, "--team", "gulls",
                          "--create-team", "--roster", str(roster))
    assert created.returncode == 0, created.stderr
    assert "created team gulls" in created.stdout
    loaded = load_roster(roster)
    assert loaded.team("gulls") is not None and loaded.runner(runner) is not None
    password = local_stack.mosquitto.runner_password(runner)
    assert password is not None
    assert puback(stack_settings, runner, password, f"runners/{runner}/pain") in ACCEPTED


def test_runners_remove_from_roster_revokes_and_takes_the_entry_out(
        local_stack: LocalStack, stack_settings: Settings, roster: Path) -> None:
    runner = "ra-leaver"
    added = stridewatch(stack_settings, "runners", "add", runner, "--team", "harriers",
                        "--roster", str(roster))
    assert added.returncode == 0, added.stderr
    password = local_stack.mosquitto.runner_password(runner)
    assert password is not None
    result = stridewatch(stack_settings, "runners", "remove", runner, "--from-roster",
                         "--roster", str(roster))
    assert result.returncode == 0, result.stderr
    assert "revoked" in result.stdout and f"removed runner {runner}" in result.stdout
    assert puback(stack_settings, runner, password, f"runners/{runner}/pain") == -1
    assert load_roster(roster).runner(runner) is None
    assert roster.read_text() == DEMO_ROSTER.read_text()  # as it was before the add


def test_runners_add_without_a_team_warns_about_a_runner_the_roster_lacks(
        local_stack: LocalStack, stack_settings: Settings, roster: Path) -> None:
    result = stridewatch(stack_settings, "runners", "add", "ra-solo", "--roster", str(roster))
    assert result.returncode == 0, result.stderr
    assert "runner 'ra-solo' is not in the roster" in result.stderr
    assert "`stridewatch runners add ra-solo --team TEAM`" in result.stderr
    known = stridewatch(stack_settings, "runners", "add", "ana", "--roster", str(roster))
    assert known.returncode == 0 and "not in the roster" not in known.stderr


def test_the_team_s_coach_reads_a_runner_added_to_the_team(
        local_stack: LocalStack, stack_settings: Settings, roster: Path) -> None:
    from tests.conftest import AlertInbox

    coach = stridewatch(stack_settings, "coaches", "add", "maya", "--team", "harriers",
                        "--roster", str(roster))
    assert coach.returncode == 0, coach.stderr
    assert "coach-maya may read the alerts of ana,ben,cleo,dev,eli" in coach.stdout
    coach_password = coach.stdout.split("password: ", 1)[1].strip()
    runner = "ra-coached"
    added = stridewatch(stack_settings, "runners", "add", runner, "--team", "harriers",
                        "--roster", str(roster))
    assert added.returncode == 0, added.stderr
    assert f"coach-maya may read runners/{runner}/alerts" in added.stdout
    inbox = AlertInbox(stack_settings, "coach-maya", coach_password, f"runners/{runner}/alerts")
    try:
        notifier = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"n-{time.time_ns()}",
                               protocol=mqtt.MQTTv5)
        notifier.username_pw_set("svc-notifier",
                                 local_stack.mosquitto.service_password("notifier"))
        notifier.connect(stack_settings.mqtt_host, stack_settings.mqtt_port)
        notifier.loop_start()
        try:
            notifier.publish(f"runners/{runner}/alerts",
                             json.dumps({"runner": runner, "rule": "probe"}), qos=1
                             ).wait_for_publish(10)
        finally:
            notifier.disconnect()
            notifier.loop_stop()
        got = wait_for(inbox.received, timeout=20, what="the alert in the coach's inbox")
    finally:
        inbox.close()
    assert [m["runner"] for m in got] == [runner]
