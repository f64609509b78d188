"""Strategy state per session on the combiner's disk, so server momentum and Adam moments survive a restart.

One file per session, `<state_dir>/<session id>.npz` (uncompressed, written to a temporary name and
committed with `durable.commit_file`, so a crash never leaves half a state): the strategy's name, its
JSON-able values and its lists of arrays. State saved by another strategy is ignored. Only the
`MAX_SESSIONS` most recently used sessions are kept; older files are deleted.

The arrays (Adam's two moments are 2 x a float32 model) never sit whole in memory: `save` writes them a
slice at a time (from lists or from file-backed views) and `load` hands out views that read the file in
place (`stored.FileArrays`), each holding the file open, so a later save over the same name does not
disturb a round still reading the previous state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from scaleout_server.aggregation.params import ArrayParams, ParamsView, as_view
from scaleout_server.aggregation.stored import FileArrays, write_npz_member
from scaleout_server.durable import commit_file

log = logging.getLogger(__name__)

MAX_SESSIONS = 16
_META = "__meta__"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SessionStates:
    """Load and save strategy state by session id (thread-safe enough: one round per session at a time)."""

    def __init__(self, directory: str | os.PathLike[str], max_sessions: int = MAX_SESSIONS) -> None:
        self.directory = Path(directory)
        self.max_sessions = max_sessions

    def path(self, session_id: str) -> Path:
        name = session_id if _SAFE.match(session_id or "") else hashlib.sha256(session_id.encode()).hexdigest()
        return self.directory / f"{name}.npz"

    def load(self, session_id: str, strategy_name: str) -> dict[str, Any] | None:
        """The state a round of this session left for a strategy of this name (None: start afresh)."""
        if not session_id:
            return None
        path = self.path(session_id)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = json.loads(str(npz[_META]))
                if meta.get("strategy") != strategy_name:
                    log.info("session %s: saved state belongs to %r, not %r; starting afresh", session_id,
                             meta.get("strategy"), strategy_name)
                    return None
                state: dict[str, Any] = dict(meta.get("values", {}))
                for key, count in meta.get("arrays", {}).items():
                    names = [f"{key}.{i}" for i in range(int(count))]
                    try:
                        state[key] = FileArrays.npz_members(path, names)
                    except ValueError:  # not written by us (compressed): read into memory
                        state[key] = [npz[name] for name in names]
            os.utime(path)  # recently used: kept by the pruning
            return state
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("session %s: cannot read saved strategy state %s (%s); starting afresh", session_id, path, exc)
            return None

    def save(self, session_id: str, strategy_name: str, state: dict[str, Any]) -> None:
        """Replace the session's saved state (nothing to save: the file is removed)."""
        if not session_id:
            return
        path = self.path(session_id)
        if not state:
            path.unlink(missing_ok=True)
            return
        values: dict[str, Any] = {}
        arrays: dict[str, ParamsView] = {}
        for key, value in state.items():
            if isinstance(value, ParamsView):
                arrays[key] = value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(a, np.ndarray) for a in value):
                arrays[key] = as_view(value)
            else:
                values[key] = value
        counts = {key: len(view.specs) for key, view in arrays.items()}
        meta = json.dumps({"strategy": strategy_name, "values": values, "arrays": counts})
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
        try:
            with open(tmp, "wb") as out, zipfile.ZipFile(out, mode="w", allowZip64=True) as zf:
                write_npz_member(zf, _META, ArrayParams([np.array(meta)]), 0)
                for key, view in arrays.items():  # a slice at a time: never a whole moment in memory
                    for i in range(len(view.specs)):
                        write_npz_member(zf, f"{key}.{i}", view, i)
            commit_file(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self._prune(keep=path)

    def _prune(self, keep: Path) -> None:
        files = sorted((p for p in self.directory.glob("*.npz") if p != keep), key=_mtime, reverse=True)
        for old in files[max(0, self.max_sessions - 1):]:
            old.unlink(missing_ok=True)
            log.info("deleted the strategy state of an old session: %s", old.name)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
