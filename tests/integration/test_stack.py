"""The local stack command: clear errors, idempotent start, status, stop."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from base.settings import Settings
from deploy.stack import LocalStack, Service, StackError
from stridewatch.cli import main
from stridewatch.processes import settings_env
from tests.conftest import free_port, new_stack_settings

pytestmark = pytest.mark.integration


def test_a_taken_port_is_named_with_the_setting_to_change(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = new_stack_settings(tmp_path_factory, mqtt_port=port)
        stack = LocalStack(settings)
        try:
            with pytest.raises(StackError) as error:
                stack.up(echo=lambda line: None)
        finally:
            stack.down(echo=lambda line: None)
    message = str(error.value)
    assert f"port {port}" in message and "STRIDEWATCH_MQTT_PORT" in message


class Crashing(Service):
    """A daemon that exits at once, as a misconfigured one would."""

    name = "crashing"

    def __init__(self, settings: Settings, port: int) -> None:
        super().__init__(settings)
        self.port = port

    @property
    def host_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def command(self) -> list[str]:
        return ["sh", "-c", "echo 'config error: no such option' >&2; exit 3"]


def test_a_service_that_dies_at_start_names_its_log(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    service = Crashing(new_stack_settings(tmp_path_factory), free_port())
    with pytest.raises(StackError) as error:
        service.start(timeout=10)
    assert "exited with code 3" in str(error.value)
    assert str(service.log_file) in str(error.value)
    assert "config error" in service.log_file.read_text()


def test_an_address_not_on_this_machine_is_refused_clearly(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = LocalStack(new_stack_settings(tmp_path_factory, mqtt_host="192.0.2.1"))
    with pytest.raises(StackError, match=r"cannot listen on 192\.0\.2\.1"):
        stack.mosquitto.start(timeout=10)


def test_up_is_idempotent_and_status_and_down_work(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = new_stack_settings(tmp_path_factory)
    env = settings_env(settings)
    cli = CliRunner()
    first = cli.invoke(main, ["stack", "up"], env=env)
    assert first.exit_code == 0, first.output
    try:
        pids = [s.pid for s in LocalStack(settings).status()]
        again = cli.invoke(main, ["stack", "up"], env=env)
        assert again.exit_code == 0, again.output
        assert [s.pid for s in LocalStack(settings).status()] == pids  # nothing restarted
        status = cli.invoke(main, ["stack", "status"], env=env)
        assert status.exit_code == 0
        for name in ("mosquitto", "kafka", "influxdb"):
            assert name in status.output and "healthy" in status.output
    finally:
        down = cli.invoke(main, ["stack", "down"], env=env)
    assert down.exit_code == 0
    after = cli.invoke(main, ["stack", "status"], env=env)
    assert after.exit_code == 1 and "stopped" in after.output
    assert all(not s.running for s in LocalStack(settings).status())


def test_bad_settings_stop_the_command_with_a_clear_message() -> None:
    result = CliRunner().invoke(main, ["stack", "status"],
                                env={"STRIDEWATCH_MQTT_PORT": "not-a-port"})
    assert result.exit_code != 0
    assert "invalid configuration" in result.output and "mqtt_port" in result.output


def test_exactly_once_is_refused_on_the_local_broker() -> None:
    result = CliRunner().invoke(main, ["stack", "status"], env={
        "STRIDEWATCH_KAFKA_PROCESSING_GUARANTEE": "exactly_once",
        "STRIDEWATCH_MQTT_PORT": str(free_port())})
    assert result.exit_code != 0 and "transactions" in result.output
