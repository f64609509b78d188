""".scaleoutignore rules, reproducible package creation and hostile-archive-proof extraction."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from scaleout.project.config import ProjectError
from scaleout.project.ignore import IgnoreRules, iter_package_files
from scaleout.project.package import UnsafeArchive, create_package, safe_extract

YAML = "entry_points:\n  startup: startup.py\n  build: build.py\n"


def make_client(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scaleout.yaml").write_text(YAML)
    (folder / "startup.py").write_text("def startup(client):\n    pass\n")
    (folder / "build.py").write_text("def build():\n    pass\n")
    return folder


def write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def members_of(archive: Path) -> list[str]:
    with tarfile.open(archive, "r:gz") as tar:
        return tar.getnames()


# ---------------------------------------------------------------- ignore rules


def test_ignore_bare_name_matches_at_any_depth() -> None:
    rules = IgnoreRules(["data"])
    assert rules.is_ignored("data", is_dir=True)
    assert rules.is_ignored("sub/deeper/data", is_dir=True)
    assert rules.is_ignored("sub/data", is_dir=False)
    assert not rules.is_ignored("database.py")


def test_ignore_glob_trailing_slash_negation_and_comments() -> None:
    rules = IgnoreRules(["# comment", "", "   ", "*.tgz", "logs/", "*.txt", "!keep.txt", "/top.py"])
    assert rules.is_ignored("package.tgz") and rules.is_ignored("a/b/old.tgz")
    assert rules.is_ignored("logs", is_dir=True) and rules.is_ignored("x/logs", is_dir=True)
    assert not rules.is_ignored("logs", is_dir=False)  # 'dir/' matches directories only
    assert rules.is_ignored("notes.txt") and not rules.is_ignored("keep.txt")
    assert not rules.is_ignored("sub/keep.txt")
    assert rules.is_ignored("top.py") and not rules.is_ignored("sub/top.py")
    assert not rules.is_ignored("# comment") and rules.patterns == ["*.tgz", "logs/", "*.txt", "!keep.txt", "/top.py"]


def test_iter_package_files_prunes_ignored_dirs_and_sorts(tmp_path: Path) -> None:
    client = make_client(tmp_path / "client")
    (client / ".scaleoutignore").write_text("# big things\ndata/\n*.tgz\n*.log\n!keep.log\n")
    for name in ["data/train.csv", "sub/data/x.csv", "sub/model.py", "old.tgz", "sub/old.tgz", "a.log",
                 "keep.log", "sub/__pycache__/m.pyc"]:
        write(client / name)
    found = [p.as_posix() for p in iter_package_files(client)]
    assert found == [".scaleoutignore", "build.py", "keep.log", "scaleout.yaml", "startup.py",
                     "sub/__pycache__/m.pyc", "sub/model.py"]
    assert all(not p.is_absolute() for p in iter_package_files(client))


def test_iter_package_files_without_ignore_file_keeps_everything(tmp_path: Path) -> None:
    client = make_client(tmp_path / "c")
    write(client / "data" / "a.bin")
    assert "data/a.bin" in [p.as_posix() for p in iter_package_files(client)]


# ---------------------------------------------------------------- create_package


def test_create_package_stores_files_relative_to_the_project(tmp_path: Path) -> None:
    client = make_client(tmp_path / "client")
    write(client / "lib" / "model.py", "W = 1\n")
    (client / ".scaleoutignore").write_text("secret.txt\n")
    write(client / "secret.txt")
    out = tmp_path / "out"
    out.mkdir()
    archive = create_package(client, output=out)
    assert archive == (out / "package.tgz").resolve()
    assert members_of(archive) == [".scaleoutignore", "build.py", "lib/model.py", "scaleout.yaml", "startup.py"]
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar.getmembers():
            assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
        assert tar.extractfile("lib/model.py").read() == b"W = 1\n"  # type: ignore[union-attr]


def test_create_package_is_deterministic(tmp_path: Path) -> None:
    client = make_client(tmp_path / "client")
    write(client / "a" / "b.py", "b = 2\n")
    first = create_package(client, name="one.tgz", output=tmp_path)
    digest = sha256(first)
    assert first.read_bytes()[4:8] == b"\0\0\0\0"  # no gzip timestamp
    os.utime(client / "build.py", (time.time() + 100, time.time() + 100))  # file times must not matter
    second = create_package(client, name="one.tgz", output=tmp_path)
    assert sha256(second) == digest
    (client / "build.py").write_text("def build():\n    return 1\n")
    assert sha256(create_package(client, name="one.tgz", output=tmp_path)) != digest


def test_create_package_inside_the_project_does_not_include_itself(tmp_path: Path) -> None:
    client = make_client(tmp_path / "client")
    create_package(client, output=client)
    archive = create_package(client, output=client)
    assert "package.tgz" not in members_of(archive)
    assert not list(client.glob("*.partial"))


def test_create_package_needs_a_valid_project_and_an_existing_output(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="has no scaleout.yaml"):
        create_package(tmp_path, output=tmp_path)
    client = make_client(tmp_path / "client")
    with pytest.raises(ProjectError, match="output folder .* does not exist"):
        create_package(client, output=tmp_path / "missing")
    with pytest.raises(ProjectError, match="must end with .tgz"):
        create_package(client, name="package.zip", output=tmp_path)


# ---------------------------------------------------------------- safe_extract


def build_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def file_member(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


YAML_MEMBER = file_member("scaleout.yaml", YAML.encode())


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([YAML_MEMBER, file_member("/etc/evil")], "absolute"),
        ([YAML_MEMBER, file_member("a/../../evil")], r"contains '\.\.'"),
        ([YAML_MEMBER, link_member("escape", "../../outside")], "outside the destination"),
        ([YAML_MEMBER, link_member("abs", "/etc/passwd")], "outside the destination"),
        ([YAML_MEMBER, link_member("root", "."), link_member("up", "root/..")], "through another symlink"),
        ([YAML_MEMBER, link_member("d", "sub"), file_member("d/x.py")], "below symlink 'd'"),
        ([YAML_MEMBER, link_member("hard", "../x", tarfile.LNKTYPE)], r"contains '\.\.'"),
        ([YAML_MEMBER, link_member("hard", "nothing", tarfile.LNKTYPE)], "not a file in the archive"),
        ([YAML_MEMBER, link_member("dev", "", tarfile.CHRTYPE)], "device or fifo"),
        ([YAML_MEMBER, link_member("pipe", "", tarfile.FIFOTYPE)], "device or fifo"),
        ([YAML_MEMBER, file_member("a.py"), file_member("a.py")], "appears twice"),
        ([YAML_MEMBER, file_member("lib"), file_member("lib/x.py")], "not a folder"),
    ],
)
def test_safe_extract_refuses_unsafe_members_and_writes_nothing(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    # Safe members first, so a extract-as-you-go implementation would have written something already.
    archive = build_tar(tmp_path / "bad.tgz", [file_member("first.py"), *members])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match=message):
        safe_extract(archive, dest)
    assert not dest.exists()


def test_safe_extract_refuses_oversized_content_and_names_the_member(tmp_path: Path) -> None:
    archive = build_tar(tmp_path / "big.tgz", [YAML_MEMBER, file_member("small.bin", b"a" * 100),
                                               file_member("huge.bin", b"\0" * 5000)])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchive, match="exceed 1000 bytes.*huge.bin"):
        safe_extract(archive, dest, max_bytes=1000)
    assert list(dest.iterdir()) == []


def test_safe_extract_of_created_package_returns_its_root(tmp_path: Path) -> None:
    client = make_client(tmp_path / "client")
    write(client / "lib" / "m.py", "M = 3\n")
    archive = create_package(client, output=tmp_path)
    root = safe_extract(archive, tmp_path / "package")
    assert root == tmp_path / "package"
    assert (root / "lib" / "m.py").read_text() == "M = 3\n"
    assert (root / "scaleout.yaml").read_text() == YAML


def test_safe_extract_finds_single_top_folder_and_allows_inner_links(tmp_path: Path) -> None:
    top = tarfile.TarInfo("proj")
    top.type = tarfile.DIRTYPE
    archive = build_tar(tmp_path / "p.tar.bz2", [
        (top, None),
        file_member("proj/scaleout.yaml", YAML.encode()),
        file_member("proj/lib/a.py", b"A = 1\n"),
        link_member("proj/alias.py", "lib/a.py"),
        link_member("proj/lib/up.py", "../scaleout.yaml"),
        link_member("proj/copy.py", "proj/lib/a.py", tarfile.LNKTYPE),
    ], mode="w:bz2")
    dest = tmp_path / "dest"
    root = safe_extract(archive, dest)
    assert root == dest / "proj"
    assert (root / "alias.py").read_text() == "A = 1\n"
    assert (root / "alias.py").is_symlink()
    assert (root / "lib" / "up.py").read_text() == YAML
    assert (root / "copy.py").read_text() == "A = 1\n"


def test_safe_extract_without_scaleout_yaml_fails_before_writing(tmp_path: Path) -> None:
    archive = build_tar(tmp_path / "p.tgz", [file_member("a/scaleout.yaml"), file_member("b/x.py")])
    with pytest.raises(ProjectError, match="has no scaleout.yaml"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_safe_extract_rejects_unknown_types_and_corrupt_archives(tmp_path: Path) -> None:
    zip_like = tmp_path / "p.zip"
    zip_like.write_bytes(b"PK")
    with pytest.raises(ProjectError, match="unsupported package type"):
        safe_extract(zip_like, tmp_path / "d")
    corrupt = tmp_path / "p.tgz"
    corrupt.write_bytes(b"not a gzip file")
    with pytest.raises(ProjectError, match="not a readable package archive"):
        safe_extract(corrupt, tmp_path / "d")
    with pytest.raises(ProjectError, match="does not exist"):
        safe_extract(tmp_path / "missing.tgz", tmp_path / "d")
