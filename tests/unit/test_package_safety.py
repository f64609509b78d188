"""Hostile compute packages: every one is refused with a clear error and leaves the disk exactly as it was.

Each archive is tried twice: with safe_extract into an (empty) target folder, and the way a client meets
it, served by a real HTTP controller with a correct checksum and fetched into the client's package cache.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from scaleout.cli.main import cli
from scaleout.client.registration import RegistrationError, fetch_package
from scaleout.project.config import ProjectError
from scaleout.project.package import UnsafeArchive, parse_size, safe_extract
from tests.unit.test_client_fakes import FakeController, HttpReply, running_controller

YAML = b"entry_points:\n  startup: startup.py\n"
STARTUP = b"def startup(client):\n    pass\n"


def member(name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if data is not None else 0
    return info


def tgz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A gzip tar whose first members are a valid project, so only the hostile member makes it unsafe."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in [(member("scaleout.yaml", YAML), YAML), (member("startup.py", STARTUP), STARTUP),
                           *members]:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def zero_stream_tgz(size: int) -> bytes:
    """A small archive that inflates to `size` bytes of zeros (a compression bomb in miniature)."""

    class Zeros(io.RawIOBase):
        def __init__(self, left: int) -> None:
            self.left = left

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        tar.addfile(member("scaleout.yaml", YAML), io.BytesIO(YAML))
        zeros = tarfile.TarInfo("zeros.bin")
        zeros.size = size
        tar.addfile(zeros, io.BufferedReader(Zeros(size)))
    return out.getvalue()


def hostile_archives(outside: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (archive bytes, the words the error must contain); `outside` is what they try to reach."""
    return {
        "path traversal": (tgz([(member("lib/../../outside/evil.py", b"x"), b"x")]), "contains '..'"),
        "absolute path": (tgz([(member(str(outside / "abs.py"), b"x"), b"x")]), "absolute"),
        "escaping symlink": (tgz([(member("escape", kind=tarfile.SYMTYPE, link="../outside"), None)]),
                             "outside the destination"),
        "absolute symlink": (tgz([(member("etc", kind=tarfile.SYMTYPE, link=str(outside)), None)]),
                             "outside the destination"),
        "write through symlink": (tgz([(member("d", kind=tarfile.SYMTYPE, link="."), None),
                                       (member("d/x.py", b"x"), b"x")]), "below symlink"),
        "hardlink outside": (tgz([(member("hard", kind=tarfile.LNKTYPE, link="../outside/secret.txt"), None)]),
                             "contains '..'"),
        "absolute hardlink": (tgz([(member("hard", kind=tarfile.LNKTYPE, link=str(outside / "secret.txt")), None)]),
                              "absolute"),
        "device file": (tgz([(member("tty", kind=tarfile.CHRTYPE), None)]), "device or fifo"),
        "fifo": (tgz([(member("pipe", kind=tarfile.FIFOTYPE), None)]), "device or fifo"),
        "oversized": (tgz([(member("big.bin", b"\0" * 4096), b"\0" * 4096)]), "exceed 2048 bytes"),
    }


CASES = list(hostile_archives(Path("/placeholder")))


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path below root with its content (files), link target (symlinks) or 'dir'."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "-> " + str(path.readlink())
        elif path.is_dir():
            found[key] = "dir"
        else:
            found[key] = path.read_bytes()
    return found


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """tmp_path/outside holds a secret the archives aim at; tmp_path/work is where things get unpacked."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("do not touch")
    (tmp_path / "work").mkdir()
    return tmp_path


@pytest.mark.parametrize("case", CASES)
def test_safe_extract_refuses_hostile_archive_and_changes_nothing(world: Path, case: str) -> None:
    data, words = hostile_archives(world / "outside")[case]
    archive = world / "hostile.tgz"
    archive.write_bytes(data)
    target = world / "work" / "package"
    target.mkdir()
    before = snapshot(world)
    with pytest.raises(UnsafeArchive) as caught:
        safe_extract(archive, target, max_bytes=2048)
    assert words in str(caught.value)
    assert str(archive) in str(caught.value)  # the message names the archive
    assert snapshot(world) == before  # no partial folder beside the target, target still empty, outside intact


@pytest.mark.parametrize("case", CASES)
def test_client_refuses_hostile_package_with_nothing_unpacked(world: Path, case: str) -> None:
    data, words = hostile_archives(world / "outside")[case]
    checksum = hashlib.sha256(data).hexdigest()  # correct: the archive is authentic, just hostile
    fake = FakeController({
        "GET /api/v1/packages/checksum": [HttpReply(200, {"checksum": checksum})],
        "GET /api/v1/packages/download": [HttpReply(200, data, {
            "Content-Type": "application/octet-stream", "Content-Disposition": "attachment; filename=package.tgz"})],
    })
    before = snapshot(world)
    with running_controller(fake) as url, pytest.raises(RegistrationError) as caught:
        fetch_package(url, world / "work", max_bytes=2048)
    assert "refusing compute package package.tgz" in str(caught.value)
    assert words in str(caught.value)
    after = snapshot(world)
    # the only trace: the (empty) cache folders; no archive, no unpacked package, nothing outside
    assert {k: v for k, v in after.items() if k not in before} == {
        "work/.scaleout": "dir", "work/.scaleout/package_archive": "dir"}
    assert {k: after[k] for k in before} == before


def test_compression_bomb_is_refused_from_its_header_without_inflating(world: Path) -> None:
    archive = world / "bomb.tgz"
    archive.write_bytes(zero_stream_tgz(64 * 1024**2))
    assert archive.stat().st_size < 1024**2  # small on the wire
    before = snapshot(world)
    started = time.perf_counter()
    with pytest.raises(UnsafeArchive, match=r"exceed 1048576 bytes \(reached at member 'zeros.bin'\).*"
                                            r"--max-package-size"):
        safe_extract(archive, world / "work" / "package", max_bytes=1024**2)
    assert time.perf_counter() - started < 0.5  # the 64 MiB member's content is never inflated
    assert snapshot(world) == before


def test_download_over_the_limit_is_stopped_and_removed(world: Path) -> None:
    data = tgz([(member("blob.bin", bytes(range(256)) * 64), bytes(range(256)) * 64)])
    fake = FakeController({
        "GET /api/v1/packages/checksum": [HttpReply(200, {"checksum": hashlib.sha256(data).hexdigest()})],
        "GET /api/v1/packages/download": [HttpReply(200, data, {
            "Content-Type": "application/octet-stream", "Content-Disposition": "attachment; filename=package.tgz"})],
    })
    limit = len(data) - 1
    with running_controller(fake) as url, pytest.raises(RegistrationError, match="larger than this client's limit"):
        fetch_package(url, world / "work", max_bytes=limit)
    assert list((world / "work" / ".scaleout" / "package_archive").iterdir()) == []
    assert not (world / "work" / ".scaleout" / "packages").exists()
    with running_controller(fake) as url:  # the same package within the limit is fine
        fetched = fetch_package(url, world / "work", max_bytes=100_000)
    assert (fetched.folder / "blob.bin").stat().st_size == 256 * 64


def test_safe_extract_into_a_non_empty_target_is_refused_and_leaves_it_alone(world: Path) -> None:
    archive = world / "good.tgz"
    archive.write_bytes(tgz([]))
    target = world / "work" / "package"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    before = snapshot(world)
    with pytest.raises(ProjectError, match="not an empty folder"):
        safe_extract(archive, target)
    assert snapshot(world) == before


def test_safe_extract_moves_a_complete_package_into_place(world: Path) -> None:
    archive = world / "good.tgz"
    archive.write_bytes(tgz([(member("lib/m.py", b"M = 1\n"), b"M = 1\n")]))
    root = safe_extract(archive, world / "work" / "package")
    assert root == world / "work" / "package"
    assert (root / "lib" / "m.py").read_text() == "M = 1\n"
    assert sorted(p.name for p in (world / "work").iterdir()) == ["package"]  # no staging folder left


@pytest.mark.parametrize(("text", "expected"), [("1048576", 1024**2), ("500MB", 500 * 1000**2), ("2GiB", 2 * 1024**3),
                                                ("1.5 kib", 1536), ("10k", 10_000)])
def test_parse_size_understands_bytes_and_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "5 parsecs", "0", "-3MB"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_client_start_refuses_a_bad_package_size_limit() -> None:
    result = CliRunner().invoke(cli, ["client", "start", "-u", "http://127.0.0.1:1", "--max-package-size", "huge"])
    assert result.exit_code == 2
    assert "--max-package-size" in result.output and "'huge' is not a size" in result.output


def test_client_keeps_only_its_three_most_recently_used_packages(world: Path) -> None:
    work = world / "work"
    fetched = []
    for version in range(5):
        data = tgz([(member("v.txt", f"{version}".encode()), f"{version}".encode())])
        fake = FakeController({
            "GET /api/v1/packages/checksum": [HttpReply(200, {"checksum": hashlib.sha256(data).hexdigest()})],
            "GET /api/v1/packages/download": [HttpReply(200, data, {
                "Content-Type": "application/octet-stream", "Content-Disposition": "attachment; filename=p.tgz"})],
        })
        with running_controller(fake) as url:
            fetched.append(fetch_package(url, work))
        time.sleep(0.02)  # distinct modification times
    kept = sorted(p.name for p in (work / ".scaleout" / "packages").iterdir())
    assert kept == sorted(f.checksum for f in fetched[2:])
    assert (fetched[-1].folder / "v.txt").read_text() == "4"
    assert list((work / ".scaleout" / "package_archive").iterdir()) == []  # the unpacked folder is the cache
