"""The local Mosquitto: password file, ACL (from ``ingest/topics.py``), persistence.

Runners write only under their own subtree and read only their own alerts; the
pipeline's service accounts (bridge, notifier) and coaches get exactly what they need.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from base.mqtt import read_secrets, save_secrets
from deploy.services import SERVICE_ACCOUNTS, Service, StackError, _port_free, _port_open, _which
from deploy.tls import ensure_server_certificate
from ingest import topics

MOSQUITTO_CONF = """\
# Rendered by `stridewatch stack up`; edit the template in deploy/mosquitto.py instead.
per_listener_settings false
{listeners}
allow_anonymous false
password_file {passwd}
acl_file {acl}
{user_line}
# Keep sessions and queued QoS 1 messages across a broker restart.
persistence true
persistence_location {data}/
autosave_interval 10
# The default queue limit (1000) silently drops QoS 1 messages for a slow subscriber:
# never drop, bound memory by bytes instead.
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 100
max_packet_size 8388608
log_dest file {log}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
"""

PLAIN_LISTENER = "listener {port} {host}"
# TLS 1.2 or newer; the key and the CA's key stay readable by their owner only
TLS_LISTENER = """\
listener {port} {host}
cafile {ca}
certfile {cert}
keyfile {key}
tls_version tlsv1.2"""

ACL_HEADER = """\
# Rendered by StrideWatch. Runners write only under their own subtree and read only
# their own alerts; the pipeline's service accounts have exactly what they need.
{runner_patterns}

user svc-bridge
{bridge_reads}

user svc-notifier
topic write {alerts_write}
""".format(runner_patterns="\n".join(topics.runner_acl()),
           bridge_reads="\n".join(f"topic read {f}" for f in topics.subscriptions()),
           alerts_write=topics.alerts_topic("+"))


class Mosquitto(Service):
    name = "mosquitto"
    env_port = "STRIDEWATCH_MQTT_PORT"
    binaries = ("mosquitto", "mosquitto_passwd", "openssl")

    @property
    def host_port(self) -> tuple[str, int]:
        """The plain listener, or the TLS one when the plain listener is off."""
        port = self.settings.mqtt_port if self.settings.mqtt_plain_listener \
            else self.settings.mqtt_tls_port
        return self.settings.mqtt_host, port

    @property
    def listeners(self) -> list[tuple[str, int, bool]]:
        """(host, port, tls) of every listener the config opens."""
        s = self.settings
        found = [(s.mqtt_host, s.mqtt_port, False)] if s.mqtt_plain_listener else []
        return found + ([(s.mqtt_host, s.mqtt_tls_port, True)] if s.mqtt_tls else [])

    @property
    def address(self) -> str:
        return ", ".join(f"{host}:{port}{' (TLS)' if tls else ''}"
                         for host, port, tls in self.listeners)

    def healthy(self) -> bool:
        return all(_port_open(host, port) for host, port, _ in self.listeners)

    @property
    def passwd_file(self) -> Path:
        return self.dir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.dir / "acl"

    @property
    def conf_file(self) -> Path:
        return self.dir / "mosquitto.conf"

    def command(self) -> list[str]:
        binary = _which("mosquitto")
        if binary is None:
            raise StackError("mosquitto is not installed (apt-get install mosquitto)")
        return [binary, "-c", str(self.conf_file)]

    def prepare(self) -> None:
        (self.dir / "data").mkdir(exist_ok=True)
        if not self.passwd_file.exists():
            self.passwd_file.touch(mode=0o600)
        for account in SERVICE_ACCOUNTS:
            self._ensure_service_account(account)
        self.write_acl(coach_rules={})
        user_line = f"user {getpass.getuser()}" if os.geteuid() == 0 else ""
        self.conf_file.write_text(MOSQUITTO_CONF.format(
            listeners=self._listener_lines(), passwd=self.passwd_file, acl=self.acl_file,
            data=self.dir / "data", log=self.log_file, user_line=user_line))

    def _listener_lines(self) -> str:
        lines = []
        for host, port, tls in self.listeners:
            if not tls:
                lines.append(PLAIN_LISTENER.format(host=host, port=port))
                continue
            if (host, port) != self.host_port and not _port_free(host, port):
                raise StackError(f"mosquitto: TLS port {port} on {host} is already in use; "
                                 "choose another with STRIDEWATCH_MQTT_TLS_PORT=<port>")
            files = ensure_server_certificate(self.settings.mqtt_tls_dir,
                                              (self.settings.mqtt_host,))
            lines.append(TLS_LISTENER.format(host=host, port=port, ca=files.ca_cert,
                                             cert=files.cert, key=files.key))
        return "\n".join(lines)

    def _secrets(self, path: Path) -> dict[str, str]:
        return read_secrets(path)

    def _save_secrets(self, path: Path, data: dict[str, str]) -> None:
        save_secrets(path, data)

    def _ensure_service_account(self, account: str) -> None:
        secrets_file = self.settings.service_secrets_file
        known = self._secrets(secrets_file)
        if account not in known:
            known[account] = secrets.token_urlsafe(24)
            self._save_secrets(secrets_file, known)
        self._set_password(f"svc-{account}", known[account])

    def _set_password(self, username: str, password: str) -> None:
        binary = _which("mosquitto_passwd")
        if binary is None:
            raise StackError("mosquitto_passwd is not installed (apt-get install mosquitto)")
        result = subprocess.run([binary, "-b", str(self.passwd_file), username, password],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(f"mosquitto_passwd failed for {username}: {result.stderr.strip()}")

    def add_runner(self, runner: str, password: str | None = None) -> str:
        """Create or reset a runner's MQTT credentials; returns the password."""
        from ingest.contract import is_valid_id

        if not is_valid_id(runner) or runner.startswith(("svc-", "coach-")):
            raise StackError(f"'{runner}' is not a valid runner id (lowercase letters, digits, "
                             "'-', '_'; not starting with svc- or coach-)")
        password = password or secrets.token_urlsafe(18)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.passwd_file.exists():
            self.passwd_file.touch(mode=0o600)
        self._set_password(runner, password)
        known = self._secrets(self.settings.runner_secrets_file)
        known[runner] = password
        self._save_secrets(self.settings.runner_secrets_file, known)
        self.reload()
        return password

    def remove_runner(self, runner: str) -> bool:
        """Revoke a runner's MQTT credentials: the broker refuses them from the reload on.

        Returns whether the runner had credentials. Their stored data is untouched.
        """
        known = self._secrets(self.settings.runner_secrets_file)
        had = known.pop(runner, None) is not None
        binary = _which("mosquitto_passwd")
        if binary is None:
            raise StackError("mosquitto_passwd is not installed (apt-get install mosquitto)")
        listed = self.passwd_file.exists() and any(
            line.startswith(f"{runner}:") for line in self.passwd_file.read_text().splitlines())
        if listed:
            result = subprocess.run([binary, "-D", str(self.passwd_file), runner],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise StackError(f"mosquitto_passwd could not remove {runner}: "
                                 f"{result.stderr.strip()}")
        self._save_secrets(self.settings.runner_secrets_file, known)
        self.reload()
        return had

    def add_runners(self, runners: Iterable[str]) -> None:
        """Create credentials for many runners with one reload (a benchmark's fleet)."""
        from ingest.contract import is_valid_id

        known = self._secrets(self.settings.runner_secrets_file)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.passwd_file.exists():
            self.passwd_file.touch(mode=0o600)
        for runner in runners:
            if not is_valid_id(runner) or runner.startswith(("svc-", "coach-")):
                raise StackError(f"'{runner}' is not a valid runner id")
            known[runner] = secrets.token_urlsafe(18)
            self._set_password(runner, known[runner])
        self._save_secrets(self.settings.runner_secrets_file, known)
        self.reload()

    def add_coach(self, coach: str, runners: Iterable[str], password: str | None = None) -> str:
        """A coach reads the alerts of their team's runners and nothing else."""
        password = password or secrets.token_urlsafe(18)
        self._set_password(f"coach-{coach}", password)
        rules = self._coach_rules()
        rules[coach] = sorted(set(runners))
        self.write_acl(rules)
        self.reload()
        return password

    def coach_reads(self, coach: str, runners: Iterable[str]) -> bool:
        """Let an existing coach account read these runners' alerts too (a runner new to
        their team); False when the coach has no account on this broker."""
        rules = self._coach_rules()
        if coach not in rules:
            return False
        wanted = sorted({*rules[coach], *runners})
        if wanted != rules[coach]:
            rules[coach] = wanted
            self.write_acl(rules)
            self.reload()
        return True

    def _coach_rules(self) -> dict[str, list[str]]:
        path = self.dir / "coaches.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): [str(r) for r in v] for k, v in data.items()}

    def write_acl(self, coach_rules: dict[str, list[str]]) -> None:
        rules = {**self._coach_rules(), **coach_rules}
        (self.dir / "coaches.json").write_text(json.dumps(rules, indent=2, sort_keys=True))
        lines = [ACL_HEADER]
        for coach, runners in sorted(rules.items()):
            lines.append(f"\nuser coach-{coach}")
            lines.extend(f"topic read {topics.alerts_topic(r)}" for r in runners)
        self.acl_file.write_text("\n".join(lines) + "\n")

    def reload(self, timeout: float = 10.0) -> None:
        """Make Mosquitto reread its password and ACL files, and wait until it has.

        The signal is handled asynchronously; a client that connects before the reload
        is done can be caught by it, so wait for the broker to log it.
        """
        pid = self.pid()
        if pid is None:
            return
        before = self._reloads()
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._reloads() <= before:
            time.sleep(0.05)
        time.sleep(0.1)  # the log line comes first, the reread right after it

    def _reloads(self) -> int:
        try:
            return self.log_file.read_text(errors="replace").count("Reloading config")
        except OSError:
            return 0

    def service_password(self, account: str) -> str:
        return self._secrets(self.settings.service_secrets_file)[account]

    def runner_password(self, runner: str) -> str | None:
        return self._secrets(self.settings.runner_secrets_file).get(runner)


# ---------------------------------------------------------------------------- Tansu
