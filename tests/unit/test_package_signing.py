"""Signed compute packages through the real pieces: `scaleout keys create`, `package create --sign-key`,
`package set-active` (uploads the .sig), the real controller app on a socket, and the client's download
(`fetch_package`) with a public key: signed runs; unsigned, altered and wrongly-keyed packages are refused
before anything is unpacked."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from scaleout.cli.main import cli
from scaleout.client.registration import RegistrationError, fetch_package
from scaleout_server.controller.app_factory import build_controller_app
from scaleout_server.controller.core import Controller
from scaleout_server.settings import ServerSettings
from scaleoututil.checksum import sha256_file
from scaleoututil.signing import load_private_key, load_public_key, sign_checksum, verify_checksum
from tests.conftest import free_port
from tests.unit.test_project_package import make_client
from tests.unit.uvicorn_thread import serving

pytestmark = pytest.mark.timeout(60)


@dataclass
class Api:
    url: str
    port: int
    controller: Controller

    def args(self) -> list[str]:
        return ["-H", "127.0.0.1", "-P", str(self.port)]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("controller")
    settings = ServerSettings(host="127.0.0.1", api_port=free_port(), data_dir=root)
    app, controller = build_controller_app(settings)
    try:
        with serving(app, settings.api_port):
            yield Api(f"http://127.0.0.1:{settings.api_port}", settings.api_port, controller)
    finally:
        controller.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private, public) from `scaleout keys create`."""
    out = tmp_path_factory.mktemp("keys")
    result = CliRunner().invoke(cli, ["keys", "create", "--out", str(out), "--name", "project"])
    assert result.exit_code == 0, result.output
    return out / "project.key", out / "project.pub"


@pytest.fixture(scope="module")
def other_public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("other-keys")
    assert CliRunner().invoke(cli, ["keys", "create", "--out", str(out)]).exit_code == 0
    return out / "package-signing.pub"


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def build_package(root: Path, marker: str, sign_key: Path | None = None) -> Path:
    project = make_client(root / "client")
    (project / "marker.txt").write_text(marker)
    args = ["package", "create", "--path", str(project), "--output", str(root)]
    run(*args, *(["--sign-key", str(sign_key)] if sign_key else []))
    return root / "package.tgz"


def activate(api: Api, archive: Path, name: str) -> str:
    return run("package", "set-active", "--file", str(archive), "-n", name, *api.args())


def fetch(api: Api, workdir: Path, public_key: Path | None) -> Path:
    return fetch_package(api.url, workdir, public_key=str(public_key) if public_key else None).folder


def test_keys_create_writes_a_private_key_only_the_owner_can_read(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    signature = sign_checksum("ab" * 32, load_private_key(private))
    verify_checksum("ab" * 32, signature, load_public_key(public))
    again = CliRunner().invoke(cli, ["keys", "create", "--out", str(private.parent), "--name", "project"])
    assert again.exit_code != 0 and "already exists" in again.output


def test_signed_package_is_verified_and_unpacked(api: Api, keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, public = keys
    archive = build_package(tmp_path, "signed", private)
    assert Path(f"{archive}.sig").is_file()
    assert "signed (package.tgz.sig)" in activate(api, archive, "signed")

    info = requests.get(f"{api.url}/api/v1/packages/checksum", timeout=10).json()
    assert info["checksum"] == sha256_file(archive)
    assert info["signature"] == Path(f"{archive}.sig").read_text().strip()
    with requests.get(f"{api.url}/api/v1/packages/download", timeout=10, stream=True) as download:
        assert download.headers["X-Scaleout-Package-Signature"] == info["signature"]

    folder = fetch(api, tmp_path / "client-work", public)
    assert (folder / "marker.txt").read_text() == "signed"


def test_unsigned_package_is_refused_with_nothing_unpacked(api: Api, keys: tuple[Path, Path], tmp_path: Path) -> None:
    archive = build_package(tmp_path, "unsigned")
    assert "unsigned" in activate(api, archive, "unsigned")
    workdir = tmp_path / "client-work"
    with pytest.raises(RegistrationError) as err:
        fetch(api, workdir, keys[1])
    assert "is not signed" in str(err.value) and "scaleout package sign" in str(err.value)
    assert not (workdir / ".scaleout" / "packages").exists() or not any((workdir / ".scaleout" / "packages").iterdir())
    assert not any((workdir / ".scaleout" / "package_archive").glob("*.tgz"))  # the download was deleted
    assert (fetch(api, tmp_path / "no-key", None) / "marker.txt").read_text() == "unsigned"  # without a key: runs


def test_package_altered_after_signing_is_refused(api: Api, keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, public = keys
    archive = build_package(tmp_path, "original", private)
    stale_signature = Path(f"{archive}.sig").read_text()
    archive = build_package(tmp_path, "altered")  # same file name, new contents; the old .sig is still there
    assert Path(f"{archive}.sig").read_text() == stale_signature
    activate(api, archive, "altered")
    workdir = tmp_path / "client-work"
    with pytest.raises(RegistrationError, match="fails signature verification") as err:
        fetch(api, workdir, public)
    assert "altered after it was signed" in str(err.value)
    assert not (workdir / ".scaleout" / "packages").exists() or not any((workdir / ".scaleout" / "packages").iterdir())


def test_package_signed_with_another_key_is_refused(api: Api, keys: tuple[Path, Path], other_public_key: Path,
                                                    tmp_path: Path) -> None:
    archive = build_package(tmp_path, "other key", keys[0])
    activate(api, archive, "other-key")
    with pytest.raises(RegistrationError, match="fails signature verification"):
        fetch(api, tmp_path / "client-work", other_public_key)


def test_cached_unsigned_package_is_still_refused_when_a_key_is_required(api: Api, keys: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    archive = build_package(tmp_path, "cached")
    activate(api, archive, "cached")
    workdir = tmp_path / "client-work"
    fetch(api, workdir, None)  # unpacked into the cache by a client without a key
    with pytest.raises(RegistrationError, match="is not signed"):
        fetch(api, workdir, keys[1])


def test_upload_with_a_malformed_signature_is_a_400(api: Api, tmp_path: Path) -> None:
    archive = build_package(tmp_path, "bad signature")
    with archive.open("rb") as fh:
        reply = requests.post(f"{api.url}/api/v1/packages/", files={"file": ("package.tgz", fh)},
                              data={"name": "bad-sig", "signature": "not base64!"}, timeout=10)
    assert reply.status_code == 400
    assert "signature" in reply.json()["message"]


def test_client_start_refuses_a_public_key_with_a_local_package(keys: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(cli, ["client", "start", "--api-url", "http://127.0.0.1:9", "--local-package",
                                      "--package-public-key", str(keys[1])])
    assert result.exit_code != 0
    assert "--local-package" in result.output
