"""The child process that runs one session's user-supplied `ServerFunctions` class.

Started by the controller (`server_functions.WorkerProcess`) as
`python -m scaleout_server.controller.server_functions_worker MEMORY_LIMIT_BYTES`. Requests and replies
are JSON lines: requests on stdin, replies on the process's original stdout. File descriptor 1 is then
pointed at stderr, so that a `print` (or a C library) in user code cannot corrupt the replies; stderr
becomes the controller's log.

User code is not trusted to behave: the parent bounds every call by a timeout (it kills this process
and starts a new one), and this process caps its own memory with RLIMIT_DATA, which counts what the
code allocates (heap and anonymous mappings) but not the read-only memory-mapped model files it is
given: a model of any size can be read, only copies of it cost memory. Model arrays travel as `.npy`
files in folders the parent prepares; results go back the same way. Nothing is pickled, in either
direction, so the controller never unpickles data produced by user code.
"""

from __future__ import annotations

import inspect
import json
import linecache
import logging
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

SOURCE_NAME = "<server_functions>"
CLASS_NAME = "ServerFunctions"

log = logging.getLogger("scaleout.serverfunctions")


class UserError(Exception):
    """A server function returned something the server cannot use; the message says what was expected."""


def apply_memory_limit(limit_bytes: int) -> None:
    """Cap heap and anonymous memory (0: no cap). Read-only file mappings do not count."""
    if limit_bytes > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit_bytes = min(limit_bytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, hard))


def describe_error(exc: BaseException, limit_bytes: int = 0) -> str:
    """`Type: message (line N of the server functions: code)`: what a user needs to find the bug."""
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, MemoryError):
        limit = f" of {limit_bytes // 2**20} MiB" if limit_bytes else ""
        text = f"exceeded the memory limit{limit} (setting server_functions_memory_mb): {text}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == SOURCE_NAME]
    if frames:
        frame = frames[-1]
        code = (frame.line or "").strip()
        text += f" (line {frame.lineno} of the server functions, in {frame.name}" + (f": {code})" if code else ")")
    return text


def load_arrays(spec: dict[str, Any]) -> list[np.ndarray]:
    """The arrays `0.npy`..`N-1.npy` of a folder, memory-mapped read-only where numpy can."""
    folder = Path(spec["dir"])
    arrays = []
    for i in range(int(spec["count"])):
        path = folder / f"{i}.npy"
        try:
            arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
        except ValueError:  # e.g. an empty array, which cannot be mapped
            arrays.append(np.load(path, allow_pickle=False))
    return arrays


def save_arrays(result: Any, folder: Path, function: str) -> int:
    """Write a function's list of arrays as `.npy` files (C order); UserError when it is not one."""
    if isinstance(result, np.ndarray) or not isinstance(result, Sequence) or isinstance(result, (str, bytes)):
        raise UserError(f"{function} must return a list of numpy arrays, got {type(result).__name__}")
    folder.mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(result):
        array = np.ascontiguousarray(item)
        if array.dtype.kind not in "biuf":
            raise UserError(f"{function} returned array {i} with dtype {array.dtype}; numeric arrays are needed")
        np.save(folder / f"{i}.npy", array, allow_pickle=False)
    return len(result)


def json_settings(result: Any, function: str) -> dict[str, Any]:
    """A settings dict as plain JSON values; UserError saying what is wrong otherwise."""
    if not isinstance(result, dict):
        raise UserError(f"{function} must return a dict, got {type(result).__name__}")
    try:
        text = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{function} must return JSON values (numbers, strings, lists, dicts): {exc}") from None
    return dict(json.loads(text))


def positional_arity(function: Callable[..., Any]) -> int:
    """How many positional arguments a bound method takes (a large number for *args)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 99
    return sum(1 for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                     inspect.Parameter.POSITIONAL_OR_KEYWORD))


class Worker:
    """Holds the user's ServerFunctions instance and answers the controller's requests."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.instance: Any = None
        self.provided: list[str] = []

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown request {op!r}"}
        if op != "load" and self.instance is None:
            return {"ok": False, "error": "no ServerFunctions loaded"}
        try:
            return {"ok": True, **handler(request)}
        except UserError as exc:
            return {"ok": False, "error": str(exc)}
        except BaseException as exc:  # user code: anything, SystemExit included, is an error to report
            if isinstance(exc, KeyboardInterrupt):
                raise
            return {"ok": False, "error": describe_error(exc, self.limit_bytes)}

    # -- requests ----------------------------------------------------------------------------
    def op_load(self, request: dict[str, Any]) -> dict[str, Any]:
        from scaleoututil.serverfunctions import allowed_import
        from scaleoututil.serverfunctions.serverfunctionsbase import provided_functions

        source = str(request.get("source") or "")
        api = request.get("api") or {}
        if api.get("host") and api.get("port"):
            allowed_import.configure_api_client(host=api["host"], port=int(api["port"]), token=api.get("token"))
        linecache.cache[SOURCE_NAME] = (len(source), None, source.splitlines(keepends=True), SOURCE_NAME)
        namespace: dict[str, Any] = {name: getattr(allowed_import, name) for name in allowed_import.__all__}
        namespace.update(__name__="server_functions", __builtins__=__builtins__)
        exec(compile(source, SOURCE_NAME, "exec"), namespace)  # noqa: S102 - running user code is the point
        cls = namespace.get(CLASS_NAME)
        if not isinstance(cls, type):
            raise UserError(f"the server functions define no class named {CLASS_NAME}")
        self.instance = cls()
        self.provided = provided_functions(cls)
        log.info("ServerFunctions loaded; it provides: %s", ", ".join(self.provided) or "nothing")
        return {"provided": self.provided}

    def op_client_selection(self, request: dict[str, Any]) -> dict[str, Any]:
        from scaleoututil.serverfunctions.serverfunctionsbase import RoundType

        ids = [str(x) for x in request.get("client_ids") or []]
        function = self.instance.client_selection
        round_type = RoundType(request.get("round_type") or RoundType.TRAINING.value)
        result = function(list(ids), round_type) if positional_arity(function) >= 2 else function(list(ids))
        if isinstance(result, (str, bytes)) or not isinstance(result, (list, tuple, set, frozenset)):
            raise UserError(f"client_selection must return a list of client ids, got {type(result).__name__}")
        bad = [x for x in result if not isinstance(x, str)]
        if bad:
            raise UserError(f"client_selection must return client ids (strings), got {bad[:3]!r}")
        return {"result": list(result)}

    def op_client_settings(self, request: dict[str, Any]) -> dict[str, Any]:
        result = self.instance.client_settings(load_arrays(request["global_model"]))
        return {"result": json_settings(result, "client_settings")}

    def op_client_settings_for(self, request: dict[str, Any]) -> dict[str, Any]:
        """`client_settings_for(client_id, global_model)` for each of `client_ids` (the model is mapped once)."""
        global_model = load_arrays(request["global_model"])
        out: dict[str, dict[str, Any]] = {}
        for client_id in dict.fromkeys(str(x) for x in request.get("client_ids") or []):
            result = self.instance.client_settings_for(client_id, global_model)
            out[client_id] = json_settings(result, f"client_settings_for({client_id!r})")
        return {"result": out}

    def op_aggregate(self, request: dict[str, Any]) -> dict[str, Any]:
        previous = load_arrays(request["previous_global"])
        updates = request.get("updates") or []
        if "aggregate" in self.provided:
            client_updates = {u["client_id"]: (load_arrays(u), dict(u.get("metadata") or {})) for u in updates}
            result = self.instance.aggregate(previous, client_updates)
            function = "aggregate"
        else:
            for u in updates:
                self.instance.incremental_aggregate(u["client_id"], load_arrays(u), dict(u.get("metadata") or {}),
                                                    previous)
            result = self.instance.get_incremental_aggregate_model()
            function = "get_incremental_aggregate_model"
        return {"arrays": save_arrays(result, Path(request["result_dir"]), function)}


def serve(requests: TextIO, replies: TextIO, worker: Worker) -> None:
    """Answer requests until the controller closes the pipe."""
    for line in requests:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError as exc:
            reply: dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
        else:
            reply = worker.handle(request if isinstance(request, dict) else {})
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def watch_parent(interval: float = 1.0) -> None:
    """End this process when the controller is gone (it would be re-parented), even in the middle of a
    user function that never returns: nobody would ever read its answer."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    limit = int(argv[1]) if len(argv) > 1 else 0
    watch_parent()
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    apply_memory_limit(limit)
    serve(sys.stdin, replies, Worker(limit))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
