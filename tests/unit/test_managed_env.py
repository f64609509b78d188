"""Managed environments with a real virtual environment and real client processes.

The venv is created in the test's client folder (as the seed tells users to) without pip and borrows this
installation's packages through a .pth file, so it is made in a fraction of a second. The project's
dependencies are tiny wheels written by the test into the project folder, so pip never needs the network;
deleting a wheel after the first install proves a later start does not run pip at all (it would fail).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scaleout.project.config import load_project
from scaleout.project.environment import ENV_MARKER, sync_environment
from scaleout.project.package import create_package
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.unit.test_client_fakes import (
    FakeCombiner,
    FakeController,
    HttpReply,
    assignment,
    running_combiner,
    running_controller,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
ADD = "POST /api/v1/clients/add"
STARTUP = '''
import {module}


def startup(client):
    client.set_custom_callback("which", lambda params: {{"module": "{module}", "value": {module}.VALUE}})
'''


def write_wheel(folder: Path, name: str, value: int) -> Path:
    """A minimal pure-Python wheel holding module `name` with VALUE = value."""
    files = {
        f"{name}/__init__.py": f"VALUE = {value}\n".encode(),
        f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode(),
        f"{name}-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                       b"Tag: py3-none-any\n",
    }
    record_name = f"{name}-0.1.dist-info/RECORD"
    lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(data)}")
    files[record_name] = ("\n".join([*lines, f"{record_name},,"]) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def write_project(folder: Path, module: str, wheels: dict[str, int]) -> Path:
    """A project whose startup imports `module` and whose python_env lists the given wheels (relative paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in wheels.items():
        write_wheel(folder / "wheels", name, value)
    (folder / "scaleout.yaml").write_text("python_env: python_env.yaml\nentry_points:\n  startup: startup.py\n")
    deps = "".join(f"  - ./wheels/{name}-0.1-py3-none-any.whl\n" for name in wheels)
    (folder / "python_env.yaml").write_text(f"name: test\nbuild_dependencies: [scaleout]\ndependencies:\n{deps}")
    (folder / "startup.py").write_text(STARTUP.format(module=module))
    return folder


def make_venv(where: Path) -> Path:
    """A venv at `where` that sees this installation's packages (scaleout, pip, grpc...) but installs into itself."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site_packages = Path(subprocess.run(
        [str(where / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    ours = sysconfig.get_paths()["purelib"]
    (site_packages / "zz_borrow_scaleout.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return where / "bin" / "python"


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONHOME"))}
    return {**env, "PIP_NO_INDEX": "1", "PYTHONUNBUFFERED": "1"}


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "scaleout", *args], cwd=cwd, env=offline_env(), capture_output=True,
                          text=True, timeout=60)


def can_import(python: Path, module: str) -> bool:
    result = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, env=offline_env())
    return result.returncode == 0


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    return make_venv(tmp_path / ".venv")


def test_run_install_installs_once_then_does_nothing_while_unchanged(tmp_path: Path, venv: Path) -> None:
    project = write_project(tmp_path / "client", "tinydep", {"tinydep": 1})
    assert not can_import(venv, "tinydep")

    first = run(venv, "run", "install", "-p", "client", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Installed into" in first.stdout and "tinydep" in first.stdout
    assert "Skipped (provided by this installation): scaleout" in first.stdout
    assert can_import(venv, "tinydep")
    marker = json.loads((tmp_path / ".venv" / ENV_MARKER).read_text())
    assert marker["requirements"] == ["./wheels/tinydep-0.1-py3-none-any.whl"]

    (project / "wheels" / "tinydep-0.1-py3-none-any.whl").unlink()  # pip would fail now, if it were run
    second = run(venv, "run", "install", "-p", "client", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Already installed" in second.stdout and "pip not run" in second.stdout


@contextmanager
def client_process(python: Path, cwd: Path, url: str, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`scaleout client start --managed-env` run by `python`; its output goes to cwd/client-<n>.log."""
    log = cwd / f"client-{len(list(cwd.glob('client-*.log')))}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(python), "-m", "scaleout", "client", "start", "--api-url", url, "-n", "site-a",
                                    "--managed-env", *extra], cwd=cwd, env=offline_env(), stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def ask_which(combiner: FakeCombiner, process: subprocess.Popen[bytes], correlation_id: str,
              session_id: str = "") -> dict[str, object]:
    combiner.enqueue(pb.TaskRequest(correlation_id=correlation_id, type="Custom_which", session_id=session_id))
    report = wait_until(lambda: combiner.done_report(correlation_id) or process.poll() is not None, timeout=30)
    assert report is not True and report.status == "COMPLETED", report
    return json.loads(report.response)


def connected(combiner: FakeCombiner, process: subprocess.Popen[bytes], count: int = 1) -> bool:
    return sum(a.type == "Connect" for a in combiner.announces) >= count or process.poll() is not None


def test_client_start_installs_before_startup_and_a_restart_does_not_reinstall(tmp_path: Path, venv: Path) -> None:
    project = write_project(tmp_path / "client", "tinydep", {"tinydep": 7})
    with running_combiner() as (combiner, port), running_controller(FakeController({ADD: [assignment(port)]})) as url:
        with client_process(venv, tmp_path, url, "--local-package") as process:
            wait_until(lambda: connected(combiner, process), timeout=30)
            assert process.poll() is None
            assert ask_which(combiner, process, "t-1") == {"module": "tinydep", "value": 7}
        assert "pip installed ./wheels/tinydep-0.1-py3-none-any.whl" in (tmp_path / "client-0.log").read_text()

        (project / "wheels" / "tinydep-0.1-py3-none-any.whl").unlink()  # pip would fail now, if it were run
        with client_process(venv, tmp_path, url, "--local-package") as process:
            wait_until(lambda: connected(combiner, process, 2), timeout=30)
            assert process.poll() is None
            assert ask_which(combiner, process, "t-2") == {"module": "tinydep", "value": 7}
        assert "already installed" in (tmp_path / "client-1.log").read_text()


def test_a_new_package_with_new_dependencies_is_installed_before_the_next_session(tmp_path: Path, venv: Path) -> None:
    v1 = create_package(write_project(tmp_path / "v1", "tinydep", {"tinydep": 1}), name="v1.tgz", output=tmp_path)
    v2 = create_package(write_project(tmp_path / "v2", "otherdep", {"tinydep": 1, "otherdep": 2}), name="v2.tgz",
                        output=tmp_path)

    def serve(archive: Path) -> dict[str, list[HttpReply]]:
        data = archive.read_bytes()
        return {"GET /api/v1/packages/checksum": [HttpReply(200, {"checksum": hashlib.sha256(data).hexdigest()})],
                "GET /api/v1/packages/download": [HttpReply(200, data, {
                    "Content-Disposition": f"attachment; filename={archive.name}"})]}

    work = tmp_path / "work"
    work.mkdir()
    with running_combiner() as (combiner, port):
        fake = FakeController({ADD: [assignment(port)], **serve(v1)})
        with running_controller(fake) as url, client_process(venv, work, url, "--remote-package") as process:
            wait_until(lambda: connected(combiner, process), timeout=30)
            assert ask_which(combiner, process, "t-1", session_id="s1") == {"module": "tinydep", "value": 1}
            fake.routes.update(serve(v2))  # the user activates v2 while session s1 runs
            assert ask_which(combiner, process, "t-2", session_id="s1") == {"module": "tinydep", "value": 1}
            assert ask_which(combiner, process, "t-3", session_id="s2") == {"module": "otherdep", "value": 2}
    log = (work / "client-0.log").read_text()
    assert "compute package changed" in log
    assert can_import(venv, "otherdep")
    assert len(fake.calls("GET /api/v1/packages/download")) == 2


def test_managed_env_outside_a_virtualenv_refuses_and_says_how_to_make_one(tmp_path: Path) -> None:
    base_python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not base_python.exists() or sys.prefix == sys.base_prefix:
        pytest.skip("needs a base interpreter outside this test's virtualenv")
    write_project(tmp_path / "client", "tinydep", {"tinydep": 1})
    env = {**offline_env(), "PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])}
    result = subprocess.run([str(base_python), "-m", "scaleout", "client", "start", "--api-url", "http://127.0.0.1:9",
                             "--local-package", "--managed-env"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "is not running in one" in result.stderr
    assert "python -m venv .venv" in result.stderr and "scaleout run install -p client" in result.stderr
    assert "not reachable" not in result.stderr  # refused before contacting the server


def test_without_python_env_the_environment_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "client"
    folder.mkdir()
    (folder / "scaleout.yaml").write_text("entry_points:\n  startup: startup.py\n")
    (folder / "startup.py").write_text("def startup(client):\n    pass\n")
    result = sync_environment(load_project(folder))
    assert result.state == "unmanaged" and result.marker is None
