"""The whole start sequence and `scaleout client start`, against the in-test controller and combiner."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from scaleout.cli.main import cli
from scaleout.client.registration import EXIT_PACKAGE_REJECTED, RegistrationError
from scaleout.client.runtime import ClientConfig, ClientRuntime, decide_tls
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.conftest import free_port
from tests.unit.test_client_fakes import (
    FakeCombiner,
    FakeController,
    HttpReply,
    assignment,
    package_bytes,
    running_combiner,
    running_controller,
    wait_until,
    write_project,
)

ADD = "POST /api/v1/clients/add"
LONG_STARTUP = '''
import time

def startup(client):
    def long_job(params):
        while True:
            client.check_task_abort()
            time.sleep(0.01)
    client.set_custom_callback("long", long_job)
'''


def echo_task(correlation_id: str) -> pb.TaskRequest:
    return pb.TaskRequest(correlation_id=correlation_id, type="Custom_echo", data=json.dumps({"parameters": {"a": 1}}))


def test_client_registers_runs_startup_serves_tasks_and_disconnects(tmp_path: Path) -> None:
    write_project(tmp_path / "client")
    with running_combiner() as (combiner, port), running_controller(FakeController({ADD: [assignment(port)]})) as url:
        config = ClientConfig(api_url=url, name="site-a", client_id="cid-1", local_package=True, workdir=tmp_path,
                              heartbeat_interval=0.1)
        runtime = ClientRuntime(config, echo=lambda text: None)
        result: list[int] = []
        runner = threading.Thread(target=lambda: result.append(runtime.run()))
        runner.start()
        try:
            assert runtime.started.wait(10)
            combiner.enqueue(echo_task("t-1"))
            report = wait_until(lambda: combiner.done_report("t-1"))
            assert json.loads(report.response) == {"echo": {"a": 1}, "client": "site-a"}
            wait_until(lambda: combiner.heartbeats)  # until a poll is answered; then the held poll is the heartbeat
        finally:
            runtime.stop()
            runner.join(10)
    assert result == [0]
    assert [a.type for a in combiner.announces] == ["VersionCheck", "Connect", "Disconnect"]
    assert json.loads(combiner.announces[0].parameters) == {"client-version": "1.1.0"}
    assert {p.metadata["client-id"] for p in combiner.polls} == {"assigned-id"}  # the server's id wins
    assert combiner.heartbeats[0].heartbeat_interval_ms == 100


def test_incompatible_combiner_stops_start_with_its_reason(tmp_path: Path) -> None:
    write_project(tmp_path / "client")
    with running_combiner(FakeCombiner(version_ok=False)) as (_, port), \
            running_controller(FakeController({ADD: [assignment(port)]})) as url:
        runtime = ClientRuntime(ClientConfig(api_url=url, local_package=True, workdir=tmp_path), echo=print)
        with pytest.raises(RegistrationError, match="does not accept this client.*client too old"):
            runtime.run()


def test_failing_startup_is_reported_with_the_users_error(tmp_path: Path) -> None:
    write_project(tmp_path / "client", "def startup(client):\n    raise RuntimeError('no data folder')\n")
    with running_combiner() as (_, port), running_controller(FakeController({ADD: [assignment(port)]})) as url:
        runtime = ClientRuntime(ClientConfig(api_url=url, local_package=True, workdir=tmp_path), echo=print)
        with pytest.raises(RegistrationError, match="no data folder"):
            runtime.run()


def test_missing_local_project_says_where_it_looked(tmp_path: Path) -> None:
    with running_controller(FakeController({ADD: [assignment(1)]})) as url:
        runtime = ClientRuntime(ClientConfig(api_url=url, local_package=True, workdir=tmp_path), echo=print)
        with pytest.raises(RegistrationError, match="client"):
            runtime.run()


def test_unreadable_grpc_root_certificate_names_the_setting_to_fix(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path / "client")
    monkeypatch.setenv("SCALEOUT_GRPC_SECURE", "true")
    monkeypatch.setenv("SCALEOUT_GRPC_ROOT_CERT_PATH", str(tmp_path / "missing.pem"))
    with running_controller(FakeController({ADD: [assignment(1)]})) as url:
        runtime = ClientRuntime(ClientConfig(api_url=url, local_package=True, workdir=tmp_path), echo=print)
        with pytest.raises(RegistrationError, match="missing.pem.*SCALEOUT_GRPC_ROOT_CERT_PATH"):
            runtime.run()


def test_grpc_tls_follows_the_server_unless_forced() -> None:
    assert decide_tls(False, {}) is False
    assert decide_tls(None, {}) is True
    assert decide_tls(False, {"SCALEOUT_GRPC_SECURE": "true"}) is True
    assert decide_tls(True, {"SCALEOUT_GRPC_SECURE": "false"}) is True
    assert decide_tls(None, {"SCALEOUT_GRPC_SECURE": "false"}) is False


def test_sigint_aborts_the_running_task_reports_it_and_exits_zero(tmp_path: Path) -> None:
    write_project(tmp_path / "client", LONG_STARTUP)
    with running_combiner() as (combiner, port), running_controller(FakeController({ADD: [assignment(port)]})) as url:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        process = subprocess.Popen(
            [sys.executable, "-m", "scaleout", "client", "start", "--api-url", url, "--local-package",
             "-n", "site-a"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: combiner.polls or process.poll() is not None, timeout=20)
            combiner.enqueue(pb.TaskRequest(correlation_id="t-long", type="Custom_long"))
            wait_until(lambda: any(r.status == "RUNNING" for r in combiner.reports_for("t-long"))
                       or process.poll() is not None, timeout=10)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, err
    assert "site-a" in out and "Waiting for tasks" in out
    report = combiner.done_report("t-long")
    assert report is not None and report.status == "INTERRUPTED"
    assert json.loads(report.response) == {"msg": "Aborted by client"}
    assert combiner.announces[-1].type == "Disconnect"


def test_cli_requires_an_api_url() -> None:
    result = CliRunner().invoke(cli, ["client", "start", "--local-package"])
    assert result.exit_code == 2
    assert "--api-url" in result.output


def test_cli_reads_the_init_file_and_exits_nonzero_with_the_servers_message(tmp_path: Path) -> None:
    fake = FakeController({ADD: [HttpReply(400, {"message": "name already in use"})]})
    with running_controller(fake) as url:
        init = tmp_path / "client.yaml"
        init.write_text(f"discover_host: {url}\nname: from-yaml\nclient_id: yaml-id\n")
        result = CliRunner().invoke(cli, ["client", "start", "-in", str(init), "--log-level", "ERROR"])
    assert result.exit_code == 4  # EXIT_REGISTRATION_REFUSED
    assert "name already in use" in result.output
    body = json.loads(fake.calls(ADD)[0][3])
    assert (body["name"], body["client_id"], body["package"]) == ("from-yaml", "yaml-id", "remote")


def test_cli_refuses_local_and_remote_package_together() -> None:
    result = CliRunner().invoke(cli, ["client", "start", "-u", "http://x", "--local-package", "--remote-package"])
    assert result.exit_code == 2 and "not both" in result.output


def start_in_thread(runtime: ClientRuntime) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(runtime.run()), daemon=True)
    runner.start()
    return runner, result


def test_start_waits_for_a_combiner_that_is_down_and_serves_once_it_is_up(tmp_path: Path) -> None:
    write_project(tmp_path / "client")
    port = free_port()
    with running_controller(FakeController({ADD: [assignment(port)]})) as url:
        config = ClientConfig(api_url=url, name="site-a", local_package=True, workdir=tmp_path, failover_after=0)
        runtime = ClientRuntime(config, echo=lambda text: None)
        runner, result = start_in_thread(runtime)
        try:
            assert not runtime.started.wait(6)  # VersionCheck refused for longer than the old 8 attempts' first 6 s
            with running_combiner(port=port) as (combiner, _):
                assert runtime.started.wait(40)
                combiner.enqueue(echo_task("t-late"))
                assert wait_until(lambda: combiner.done_report("t-late"), timeout=10)
        finally:
            runtime.stop()
            runner.join(10)
    assert result == [0]


def test_a_package_download_that_fails_for_now_is_tried_again(tmp_path: Path) -> None:
    project = write_project(tmp_path / "source" / "client")
    archive = package_bytes(project)
    checksum = hashlib.sha256(archive).hexdigest()
    busy = HttpReply(503, {"message": "restarting"})
    fake = FakeController({ADD: [assignment(1)], "GET /api/v1/packages/checksum": [busy, HttpReply(200, {
        "checksum": checksum})], "GET /api/v1/packages/download": [busy, HttpReply(200, archive, {
            "Content-Disposition": "attachment; filename=package.tgz"})]})
    work = tmp_path / "work"
    with running_controller(fake) as url:
        runtime = ClientRuntime(ClientConfig(api_url=url, workdir=work), echo=lambda text: None)
        runtime.api_url = url
        project_config = runtime._load_project()
    assert project_config.path.is_relative_to(work / ".scaleout" / "packages" / checksum)
    assert len(fake.calls("GET /api/v1/packages/download")) == 2  # 503, then the package


def test_a_package_that_fails_its_checksum_stops_start_with_exit_code_5(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the client's folder: packages are kept under ./.scaleout
    archive = package_bytes(write_project(tmp_path / "source" / "client"))
    fake = FakeController({ADD: [assignment(1)], "GET /api/v1/packages/checksum": [HttpReply(200, {
        "checksum": "0" * 64})], "GET /api/v1/packages/download": [HttpReply(200, archive, {
            "Content-Disposition": "attachment; filename=package.tgz"})]})
    with running_controller(fake) as url:
        result = CliRunner().invoke(cli, ["client", "start", "-u", url, "--log-level", "ERROR"],
                                    catch_exceptions=False)
    assert result.exit_code == EXIT_PACKAGE_REJECTED == 5
    assert "corrupt or was tampered with" in result.output
