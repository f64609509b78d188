"""Files that survive a crash: an update is acknowledged to its client only after this has run, and
the local model repository makes its atomic writes durable the same way.

`os.replace` alone makes the new name visible, not durable: after a power loss or a killed host the
rename (and the bytes) may be gone although the client was told "received". So the bytes are
fsync'd first, then renamed into place, then the folder is fsync'd so the rename itself is on disk.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    """Flush a closed file's bytes to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make renames and creations in `folder` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_file(tmp: Path, dest: Path) -> None:
    """fsync `tmp`, rename it to `dest` atomically, fsync the folder: afterwards `dest` is on disk
    with all its bytes, or (on a crash before the end) not there at all. Blocking: run it in a thread."""
    fsync_file(tmp)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
