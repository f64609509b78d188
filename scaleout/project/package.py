"""Compute packages: writing a project folder as a reproducible .tgz, and unpacking one safely.

Packages travel over the network and are unpacked on edge nodes, so extraction treats every archive as
hostile: all members are checked before a single byte is written.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import tarfile
import uuid
import zlib
from pathlib import Path, PurePosixPath

from scaleout.project.config import PROJECT_FILE, ProjectError, load_project
from scaleout.project.ignore import iter_package_files

DEFAULT_PACKAGE_NAME = "package.tgz"
DEFAULT_MAX_BYTES = 1024**3  # unpacked size a client accepts unless told otherwise (--max-package-size)
MAX_BYTES_ENV = "SCALEOUT_MAX_PACKAGE_SIZE"
MAX_MEMBERS = 100_000  # more entries than any real project; an archive of empty entries is a cheap bomb
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}
ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar.bz2")
_FILTER_ERROR: type[Exception] | tuple[()] = getattr(tarfile, "FilterError", ())


class UnsafeArchive(ProjectError):
    """An archive member could write outside the destination or is not plain data; nothing was extracted."""


def create_package(path: Path | str, name: str = DEFAULT_PACKAGE_NAME, output: Path | str = Path(".")) -> Path:
    """Write the non-ignored files of project folder `path` to `output/name` (gzip tar) and return its path.

    Members are named relative to `path` (scaleout.yaml at the archive root). The archive is deterministic
    (sorted members, mtime 0, owner 0, no user names, no gzip timestamp), so an unchanged folder always
    gives the same checksum.
    """
    project = load_project(path)
    output_dir = Path(output)
    if not output_dir.is_dir():
        raise ProjectError(f"output folder {output_dir} does not exist: create it or pass an existing --output")
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ProjectError(f"package name '{name}' must be a plain file name such as {DEFAULT_PACKAGE_NAME}")
    if not name.endswith((".tgz", ".tar.gz")):
        raise ProjectError(f"package name '{name}' must end with .tgz or .tar.gz (packages are gzip tar files)")

    archive = (output_dir / name).resolve()
    partial = archive.with_name(archive.name + ".partial")
    files = list(iter_package_files(project.path, exclude=(archive, partial)))
    try:
        with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for relative in files:
                    _add_file(tar, project.path / relative, relative.as_posix())
        os.replace(partial, archive)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ProjectError(f"cannot write package {archive}: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return archive


def _add_file(tar: tarfile.TarFile, source: Path, member_name: str) -> None:
    info = tarfile.TarInfo(member_name)
    st = source.stat()  # follows symlinks: a symlinked file is packaged by content
    info.size = st.st_size
    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    with open(source, "rb") as handle:
        tar.addfile(info, handle)


def parse_size(text: str | int) -> int:
    """Bytes from '1073741824', '500MB', '1.5GiB' or '200 mib' (decimal and binary units); ValueError otherwise."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"'{text}' is not a size: use a number of bytes or e.g. 500MB, 2GiB")
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise ValueError(f"a size limit must be positive, not {text!r}")
    return value


def safe_extract(archive: Path | str, dest: Path | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Extract a .tgz/.tar.gz/.tar.bz2 package into `dest` after validating every member; return the folder
    holding scaleout.yaml (dest itself, or the archive's single top folder).

    Refused (UnsafeArchive): absolute names, '..' components, names below a symlink member, links whose target
    leaves dest, device/fifo and other special members, duplicate names, more than MAX_MEMBERS entries and a
    total uncompressed size above `max_bytes` (checked while reading headers, so a compression bomb is
    refused before it is inflated). `dest` must be absent or an empty folder: the archive is unpacked into a
    temporary folder beside it and moved into place only when complete, so on any error nothing is written.
    """
    archive = Path(archive)
    mode = _read_mode(archive)
    dest = Path(os.path.abspath(dest))
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ProjectError(f"cannot unpack {archive.name} into {dest}: it exists and is not an empty folder")
    staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        with tarfile.open(archive, mode) as tar:
            members = _read_members(archive, tar, max_bytes)
            names = _validate_members(archive, members)
            project_parts = _project_root(archive, names)
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging.mkdir()
            if hasattr(tarfile, "data_filter"):
                # Second line of defence, should our own validation above ever miss a case.
                tar.extractall(staging, members=members, filter="data")
            else:  # Python < 3.11.4: our own validation above is the only check
                tar.extractall(staging, members=members)
        if dest.exists():
            dest.rmdir()  # empty (checked above); a rename cannot replace a folder portably
        staging.rename(dest)
    except _FILTER_ERROR as exc:
        raise UnsafeArchive(f"{archive}: refused during extraction into {dest}: {exc}") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ProjectError(f"{archive} is not a readable package archive: {exc}") from exc
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not archive.exists():
            raise ProjectError(f"package archive {archive} does not exist") from exc
        raise ProjectError(f"cannot unpack {archive} into {dest}: {exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return dest.joinpath(*project_parts)


def _read_mode(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith((".tgz", ".tar.gz")):
        return "r:gz"
    if name.endswith(".tar.bz2"):
        return "r:bz2"
    raise ProjectError(f"{archive}: unsupported package type; use a .tgz, .tar.gz or .tar.bz2 archive")


def _read_members(archive: Path, tar: tarfile.TarFile, max_bytes: int) -> list[tarfile.TarInfo]:
    """Read the member headers one by one, refusing as soon as the size or count limit is passed: a member's
    size is known from its header, before its (possibly huge) content is inflated."""
    members: list[tarfile.TarInfo] = []
    total = 0
    while (member := tar.next()) is not None:
        members.append(member)
        if len(members) > MAX_MEMBERS:
            raise UnsafeArchive(f"{archive}: more than {MAX_MEMBERS} entries; refusing oversized packages")
        if member.isreg():
            total += member.size
            if total > max_bytes:
                raise UnsafeArchive(
                    f"{archive}: unpacking would exceed {max_bytes} bytes (reached at member '{member.name}'); "
                    f"refusing oversized packages (raise the limit with --max-package-size or ${MAX_BYTES_ENV})"
                )
    return members


def _validate_members(archive: Path, members: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    """Check every member before anything is written; return normalized name -> member."""
    symlinks: set[str] = set()
    names: dict[str, tarfile.TarInfo] = {}
    for member in members:
        parts = _safe_parts(archive, member.name, member.name)
        key = "/".join(parts)
        if not parts:
            if member.isdir():
                continue  # the "./" entry of archives made with `tar -C dir .`
            raise UnsafeArchive(f"{archive}: member '{member.name}' has an empty name")
        if key in names:
            raise UnsafeArchive(f"{archive}: member '{member.name}' appears twice; refusing ambiguous archives")
        if member.ischr() or member.isblk() or member.isfifo():
            raise UnsafeArchive(f"{archive}: member '{member.name}' is a device or fifo; packages may hold only files")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeArchive(f"{archive}: member '{member.name}' has unsupported type {member.type!r}")
        if member.issym():
            symlinks.add(key)
        names[key] = member

    for key, member in names.items():
        for depth in range(1, key.count("/") + 1):
            prefix = "/".join(key.split("/")[:depth])
            if prefix in symlinks:
                raise UnsafeArchive(f"{archive}: member '{member.name}' lies below symlink '{prefix}'")
            if prefix in names and not names[prefix].isdir():
                raise UnsafeArchive(f"{archive}: member '{member.name}' lies below '{prefix}', which is not a folder")
        if member.issym():
            _check_symlink(archive, member, key, symlinks)
        elif member.islnk():
            target = "/".join(_safe_parts(archive, member.linkname, member.name))
            if names.get(target) is None or not names[target].isreg():
                raise UnsafeArchive(
                    f"{archive}: hard link '{member.name}' points to '{member.linkname}', which is not a file "
                    "in the archive"
                )
    return names


def _safe_parts(archive: Path, name: str, member_name: str) -> tuple[str, ...]:
    """Path components of a member name, refusing absolute names and '..'."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise UnsafeArchive(f"{archive}: member '{member_name}' has an absolute or non-posix path '{name}'")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise UnsafeArchive(f"{archive}: member '{member_name}' contains '..' in '{name}'")
    return parts


def _check_symlink(archive: Path, member: tarfile.TarInfo, key: str, symlinks: set[str]) -> None:
    """A symlink must resolve inside dest, without passing through another symlink on the way."""
    target = member.linkname
    if not target or target.startswith(("/", "\\")) or (len(target) > 1 and target[1] == ":"):
        raise UnsafeArchive(f"{archive}: symlink '{member.name}' points to '{target}', outside the destination")
    resolved = key.split("/")[:-1]
    components = target.split("/")
    for index, component in enumerate(components):
        if component in ("", "."):
            continue
        if component == "..":
            if not resolved:
                raise UnsafeArchive(
                    f"{archive}: symlink '{member.name}' points to '{target}', outside the destination"
                )
            resolved.pop()
            continue
        resolved.append(component)
        if index < len(components) - 1 and "/".join(resolved) in symlinks:
            raise UnsafeArchive(
                f"{archive}: symlink '{member.name}' points through another symlink ('{'/'.join(resolved)}')"
            )


def _project_root(archive: Path, names: dict[str, tarfile.TarInfo]) -> tuple[str, ...]:
    """Where scaleout.yaml is: at the archive root, or inside the single top-level folder."""
    if PROJECT_FILE in names and names[PROJECT_FILE].isreg():
        return ()
    tops = {key.split("/")[0] for key in names}
    if len(tops) == 1:
        (top,) = tops
        candidate = f"{top}/{PROJECT_FILE}"
        if candidate in names and names[candidate].isreg():
            return (top,)
    raise ProjectError(
        f"{archive} has no {PROJECT_FILE} at its root or in a single top folder: create packages with "
        "'scaleout package create --path client'"
    )
