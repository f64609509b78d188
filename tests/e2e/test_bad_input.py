"""Bad input gets a clear error, and the server keeps running with its state intact."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import grpc
import pytest
import requests

from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from tests.e2e.deployment import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def snapshot(dep: Deployment) -> dict[str, int]:
    return {res: dep.get(f"/api/v1/{res}/count") for res in ("models", "sessions", "packages", "rounds")}


def assert_healthy(dep: Deployment, before: dict[str, int]) -> None:
    assert requests.get(dep.api_url + "/health", timeout=5).status_code == 200
    assert snapshot(dep) == before


def test_session_without_any_model_is_refused_with_a_hint(deployment: Deployment) -> None:
    before = snapshot(deployment)
    r = deployment.post("/api/v1/sessions/", {"session_config": {"rounds": 1}})
    assert r.status_code == 400
    assert "model set-active" in r.json()["message"]
    result = deployment.cli("session", "start", "-r", "1", *deployment.api_args(), check=False)
    assert result.returncode != 0
    assert "model" in (result.stdout + result.stderr).lower()
    assert_healthy(deployment, before)


def test_seed_file_that_is_not_npz_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    before = snapshot(deployment)
    bad = tmp_path / "seed.npz"
    bad.write_bytes(b"this is not a zip file")
    result = deployment.cli("model", "set-active", "-f", str(bad), *deployment.api_args(), check=False)
    assert result.returncode != 0
    assert "npz" in (result.stdout + result.stderr).lower()
    assert_healthy(deployment, before)


@pytest.fixture(scope="module")
def seeded(deployment: Deployment) -> str:
    return deployment.upload_seed(deployment.project("weighted"))


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"aggregator": "fedmagic"}, "fedavg"),
        ({"rounds": -1}, "rounds"),
        ({"round_timeout": 0}, "round_timeout"),
        ({"clients_required": 0}, "clients_required"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_invalid_session_config_is_a_400_naming_the_problem(deployment: Deployment, seeded: str,
                                                            config: dict, needle: str) -> None:
    before = snapshot(deployment)
    r = deployment.post("/api/v1/sessions/", {"session_config": config})
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]
    assert_healthy(deployment, before)


def test_cli_rejects_unknown_aggregator_and_negative_rounds(deployment: Deployment, seeded: str) -> None:
    before = snapshot(deployment)
    for args in (["-a", "fedmagic"], ["-r", "-3"]):
        result = deployment.cli("session", "start", *args, *deployment.api_args(), check=False)
        assert result.returncode != 0, result.stdout
    assert_healthy(deployment, before)


def test_body_of_the_wrong_shape_is_a_400_with_field_names(deployment: Deployment, seeded: str) -> None:
    before = snapshot(deployment)
    r = deployment.post("/api/v1/sessions/", {"session_config": {"rounds": "many"}})
    assert r.status_code == 400 and "rounds" in r.json()["message"]
    r = deployment.post("/api/v1/sessions/start", {"rounds": 3})
    assert r.status_code == 400 and "session_id" in r.json()["message"]
    r = requests.post(deployment.api_url + "/api/v1/sessions/", data="not json", timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert_healthy(deployment, before)


def test_unknown_ids_are_404_with_a_message(deployment: Deployment, seeded: str) -> None:
    before = snapshot(deployment)
    for path in ("/api/v1/sessions/nope", "/api/v1/models/nope", "/api/v1/rounds/nope", "/api/v1/clients/nope"):
        r = requests.get(deployment.api_url + path, timeout=10)
        assert r.status_code == 404 and "nope" in r.json()["message"]
    r = deployment.post("/api/v1/sessions/start", {"session_id": "nope"})
    assert r.status_code == 404
    assert_healthy(deployment, before)


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_package_without_scaleout_yaml_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    before = snapshot(deployment)
    archive = tmp_path / "package.tgz"
    archive.write_bytes(_tgz({"startup.py": b"def startup(c): pass\n"}))
    result = deployment.cli("package", "set-active", "-f", str(archive), "-n", "broken", *deployment.api_args(),
                            check=False)
    assert result.returncode != 0
    assert "scaleout.yaml" in result.stdout + result.stderr
    assert_healthy(deployment, before)


def test_package_create_refuses_project_without_entry_points(deployment: Deployment, tmp_path: Path) -> None:
    project = tmp_path / "client"
    project.mkdir()
    (project / "scaleout.yaml").write_text("python_env: python_env.yaml\n")
    result = deployment.cli("package", "create", "--path", str(project), "-o", str(tmp_path), check=False)
    assert result.returncode != 0
    assert "entry_points" in result.stdout + result.stderr


def test_client_refuses_startup_py_without_startup_function(deployment: Deployment, tmp_path: Path,
                                                            seeded: str) -> None:
    project = tmp_path / "proj"
    (project / "client").mkdir(parents=True)
    (project / "client" / "scaleout.yaml").write_text("entry_points:\n  startup: startup.py\n")
    (project / "client" / "startup.py").write_text("def not_startup(client):\n    pass\n")
    proc = deployment.start_client("nostartup", project, wait=False)
    proc.popen.wait(timeout=60)
    assert proc.popen.returncode != 0
    assert "startup" in proc.output()


def test_model_upload_with_wrong_checksum_is_refused_over_grpc(deployment: Deployment, seeded: str) -> None:
    before = snapshot(deployment)
    channel = grpc.insecure_channel(f"127.0.0.1:{deployment.combiner_port}")
    stub = pb_grpc.ModelServiceStub(channel)
    metadata = (("client-id", "intruder"), ("name", "intruder"), ("model-id", "m-1"), ("checksum", "0" * 64))
    with pytest.raises(grpc.RpcError) as err:
        stub.Upload(iter([pb.FileChunk(data=b"payload")]), metadata=metadata, timeout=10)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "checksum" in (err.value.details() or "").lower()
    channel.close()
    assert_healthy(deployment, before)
