"""`scaleout package ...` and `scaleout model ...`: creating, uploading, downloading, listing."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
from click.testing import CliRunner
from rich.console import Console

from scaleout.cli import package_cmd, resources_cmd, session_cmd  # noqa: F401  (attach the commands)
from scaleout.cli.groups import cli
from tests.unit.test_api_client_support import FakeController, upload_routes


def run(fake: FakeController | None, *args: str) -> click.testing.Result:
    target = ["-H", "127.0.0.1", "-P", str(urlsplit(fake.url).port)] if fake else []
    return CliRunner().invoke(cli, [*args, *target], catch_exceptions=False)


# -- model set-active ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["model.pt", "weights", "seed.NPY"])
def test_model_set_active_refuses_unknown_extensions_and_lists_the_accepted(fake: FakeController, tmp_path: Path,
                                                                            name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"x")
    result = run(fake, "model", "set-active", "-f", str(path))
    assert result.exit_code == 2
    assert ".npz (numpyhelper)" in result.output and ".bin (binaryhelper)" in result.output
    assert fake.requests == []


@pytest.mark.parametrize(("name", "helper"), [("seed.npz", "numpyhelper"), ("seed.bin", "binaryhelper")])
def test_model_set_active_sets_helper_uploads_and_prints_the_model_id(fake: FakeController, tmp_path: Path,
                                                                      name: str, helper: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"model-bytes" * 100)
    state = upload_routes(fake, token="tok-model")
    fake.on("PUT", "/api/v1/helpers/active", body={"helper": helper})
    fake.on("POST", "/api/v1/models/", body={"success": True, "model_id": "m-new"})

    result = run(fake, "model", "set-active", "-f", str(path))

    assert result.exit_code == 0, result.output
    assert "m-new" in result.stdout
    assert fake.requests[0].json() == {"helper": helper}
    assert state["chunks"][0] == path.read_bytes()
    assert fake.find("POST", "/api/v1/models/")[0].form() == {"helper": helper, "file_token": "tok-model"}


def test_model_set_active_reports_an_upload_refusal(fake: FakeController, tmp_path: Path) -> None:
    path = tmp_path / "seed.npz"
    path.write_bytes(b"x")
    fake.on("PUT", "/api/v1/helpers/active", body={"helper": "numpyhelper"})
    fake.on("POST", "/api/v1/file-upload/init", status=413, body={"message": "file_size 1 is over the limit"})
    result = run(fake, "model", "set-active", "-f", str(path))
    assert result.exit_code == 1
    assert "file_size 1 is over the limit" in result.output
    assert fake.find("POST", "/api/v1/models/") == []


# -- model list / download / trail --------------------------------------------------------------------------
def test_model_list_filters_by_session_newest_first(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/models/", body={"count": 1, "result": [{"model_id": "m1", "size": 10}]})
    assert run(fake, "model", "list", "-s", "s1", "--n_max", "5").exit_code == 0
    request = fake.requests[0]
    assert request.query == {"session_id": "s1"}
    assert (request.header("X-Limit"), request.header("X-Sort-Order")) == ("5", "desc")


def test_model_download_writes_the_container_or_the_raw_bytes(fake: FakeController, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fake.on("GET", "/api/v1/models/m1/download", body=b"ZIP-CONTAINER")
    fake.on("GET", "/api/v1/models/m1", body={"model_id": "m1", "helper_type": "numpyhelper"})

    assert run(fake, "model", "download", "-id", "m1").exit_code == 0
    assert (tmp_path / "m1.zip").read_bytes() == b"ZIP-CONTAINER"
    assert fake.find("GET", "/api/v1/models/m1/download")[0].query == {}

    assert run(fake, "model", "download", "-id", "m1", "--raw", "-f", "out/w.npz").exit_code == 0
    assert (tmp_path / "out" / "w.npz").exists()
    assert fake.find("GET", "/api/v1/models/m1/download")[1].query == {"format": "raw"}

    assert run(fake, "model", "download", "-id", "m1", "--raw").exit_code == 0
    assert (tmp_path / "m1.npz").exists()


def test_model_download_of_an_unknown_model_exits_1_without_a_file(fake: FakeController, tmp_path: Path) -> None:
    fake.on("GET", "/api/v1/models/nope/download", status=404, body={"message": "Model with id: nope not found"})
    result = run(fake, "model", "download", "-id", "nope", "-f", str(tmp_path / "x.zip"))
    assert result.exit_code == 1 and "not found" in result.output
    assert list(tmp_path.iterdir()) == []


def test_model_trail_of_the_newest_model_is_shown_seed_first(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/models/", body={"count": 3, "result": [{"model_id": "m3"}]})
    fake.on("GET", "/api/v1/models/m3/ancestors", body=[
        {"model_id": "m3", "parent_model": "m2"}, {"model_id": "seed", "parent_model": None},
        {"model_id": "m2", "parent_model": "seed"}])
    result = run(fake, "model", "trail", "-o", "json")
    assert result.exit_code == 0
    assert [m["model_id"] for m in json.loads(result.stdout)] == ["seed", "m2", "m3"]


# -- packages -----------------------------------------------------------------------------------------------
def test_package_create_prints_path_size_and_sha256(tmp_path: Path) -> None:
    project = tmp_path / "client"
    project.mkdir()
    (project / "scaleout.yaml").write_text("entry_points:\n  startup: startup.py\n")
    (project / "startup.py").write_text("def startup(client):\n    pass\n")
    out_dir = tmp_path / "dist"
    out_dir.mkdir()

    result = run(None, "package", "create", "-p", str(project), "-o", str(out_dir), "-n", "pkg.tgz")

    assert result.exit_code == 0, result.output
    archive = out_dir / "pkg.tgz"
    with tarfile.open(archive) as tar:
        assert "scaleout.yaml" in tar.getnames()
    assert str(archive) in result.stdout
    assert hashlib.sha256(archive.read_bytes()).hexdigest() in result.stdout


def test_package_create_without_scaleout_yaml_is_a_clear_error(tmp_path: Path) -> None:
    result = run(None, "package", "create", "-p", str(tmp_path))
    assert result.exit_code == 1
    assert "scaleout.yaml" in result.output


def test_package_set_active_uploads_and_posts_the_form(fake: FakeController, tmp_path: Path) -> None:
    archive = tmp_path / "package.tgz"
    archive.write_bytes(b"tgz-bytes")
    upload_routes(fake, token="tok-pkg")
    fake.on("POST", "/api/v1/packages/", body={"package_id": "p1", "package": {"checksum": "abc"}})

    result = run(fake, "package", "set-active", "-f", str(archive), "-n", "v1", "-d", "first")

    assert result.exit_code == 0, result.output
    assert "p1" in result.stdout
    assert fake.find("POST", "/api/v1/packages/")[0].form() == {
        "helper": "numpyhelper", "name": "v1", "description": "first", "file_token": "tok-pkg",
        "file_name": "package.tgz"}


def test_package_set_active_requires_a_name(fake: FakeController, tmp_path: Path) -> None:
    archive = tmp_path / "package.tgz"
    archive.write_bytes(b"x")
    result = run(fake, "package", "set-active", "-f", str(archive))
    assert result.exit_code == 2 and "--name" in result.output


def test_large_uploads_show_a_progress_bar_on_a_terminal(fake: FakeController, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(package_cmd, "console", lambda: Console(file=screen, force_terminal=True, width=100))
    monkeypatch.setattr(package_cmd, "PROGRESS_THRESHOLD", 10)
    path = tmp_path / "seed.bin"
    path.write_bytes(b"x" * 100)
    upload_routes(fake)
    fake.on("PUT", "/api/v1/helpers/active", body={"helper": "binaryhelper"})
    fake.on("POST", "/api/v1/models/", body={"model_id": "m-big"})

    result = run(fake, "model", "set-active", "-f", str(path))

    assert result.exit_code == 0, result.output
    assert "Uploading seed.bin" in screen.getvalue()
