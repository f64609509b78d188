"""Server functions: a session's user-supplied `ServerFunctions` class, run in a child process.

The user's class (source text in `session_config.server_functions`) may choose each round's clients
(`client_selection`), add settings to the round's training tasks (`client_settings`, and per client
`client_settings_for`, delivered in `RoundSpec.client_settings_by_client`) and replace the
aggregation (`aggregate`, or `incremental_aggregate` + `get_incremental_aggregate_model`). It runs in
one child process per session (`server_functions_worker`), so its state lasts across the session's
rounds, and a crash, a hang or a runaway allocation in it cannot take the controller down:

- every call has a time limit (setting `server_functions_timeout`; starting the process and loading
  the class, which may import large libraries, gets at least `MIN_LOAD_TIMEOUT`); past it the child
  is killed and a new one is started for the next call (its state starts over);
- the child caps its memory (setting `server_functions_memory_mb`, RLIMIT_DATA);
- when a function raises, times out, runs out of memory or returns something unusable, the round uses
  the default behaviour instead (random selection, no extra settings, FedAvg) and the error is
  recorded in the round's `round_data["server_functions"]`.

Models reach the child as `.npy` files it memory-maps (read-only), written slice by slice from the
repository, and the result comes back the same way, so no model is pickled or held twice in memory.
This is isolation against accidents, not a sandbox: the code runs with the controller user's rights.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scaleout_server.aggregation.params import (
    ArraySpec,
    ComputedParams,
    block_elements,
    blocks,
    cast_to,
    check_layout,
    check_numeric,
)
from scaleout_server.aggregation.stored import open_copy, write_npy_header, write_params
from scaleout_server.controller import models
from scaleout_server.controller import reduce as reducing
from scaleout_server.controller.combiners import ActiveClient
from scaleout_server.repository.base import ModelRepository
from scaleout_server.store import records as r
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.helpers.helpers import get_helper

if TYPE_CHECKING:  # session_config imports check_source from here
    from scaleout_server.controller.session_config import SessionConfig

log = logging.getLogger(__name__)

CLASS_NAME = "ServerFunctions"
MAX_SOURCE_CHARS = 512 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_MEMORY_MB = 2048
ROUND_DATA_KEY = "server_functions"
INCREMENTAL = {"incremental_aggregate", "get_incremental_aggregate_model"}
WORKER_MODULE = "scaleout_server.controller.server_functions_worker"
CLOSE_GRACE = 3.0
MIN_LOAD_TIMEOUT = 60.0  # starting the process and loading the class may import large libraries
# the child gets the controller's environment without its secrets
SECRET_ENV_PREFIXES = ("SCALEOUT_", "AWS_", "FEDN_")
SECRET_ENV_WORDS = ("SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "PRIVATE")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # one BLAS thread: bounded memory


class CallFailed(Exception):
    """A server function gave no usable answer; the message is recorded on the round."""


def check_source(source: Any) -> str:
    """The source text if it defines `class ServerFunctions` at its top level; ValueError saying what
    to fix otherwise (checked when the session is created: compiling runs none of the code)."""
    if not isinstance(source, str):
        raise ValueError(f"server_functions must be the Python source text of a {CLASS_NAME} class, "
                         f"got {type(source).__name__}")
    source = textwrap.dedent(source)  # inspect.getsource of a class defined inside a block is indented
    if len(source) > MAX_SOURCE_CHARS:
        raise ValueError(f"server_functions source is {len(source)} characters; the limit is {MAX_SOURCE_CHARS}")
    try:
        tree = ast.parse(source, filename="<server_functions>")
    except SyntaxError as exc:
        raise ValueError(f"server_functions is not valid Python: {exc.msg} (line {exc.lineno})") from None
    if not any(isinstance(node, ast.ClassDef) and node.name == CLASS_NAME for node in tree.body):
        raise ValueError(f"server_functions must define a class named {CLASS_NAME} at its top level "
                         f"(e.g. class {CLASS_NAME}(ServerFunctionsBase): ...)")
    return source


def describe_source(source: str) -> dict[str, Any]:
    """What a round record keeps of the source: enough to tell versions apart, not the code itself."""
    return {"chars": len(source), "sha256": hashlib.sha256(source.encode()).hexdigest()}


@dataclass(frozen=True)
class Limits:
    """Per-call wall-clock limit (seconds) and the child's memory cap (bytes; 0: none)."""

    timeout: float = DEFAULT_TIMEOUT
    memory_bytes: int = DEFAULT_MEMORY_MB * 1024**2


def child_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(SECRET_ENV_PREFIXES) and not any(w in k.upper() for w in SECRET_ENV_WORDS)}
    env.update({name: "1" for name in THREAD_ENV})
    root = str(Path(__file__).resolve().parents[2])  # where scaleout_server and scaleoututil live
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """One child process running a session's ServerFunctions; started on first use, and started
    again (with fresh state) after it died or was killed for exceeding its time limit."""

    def __init__(self, source: str, limits: Limits, work_dir: Path, api: dict[str, Any] | None = None,
                 tag: str = "") -> None:
        self.source = source
        self.limits = limits
        self.work_dir = Path(work_dir)
        self.api = api or {}
        self.tag = tag or "server functions"
        self.provided: list[str] = []
        self.starts = 0
        self.load_error: str | None = None  # the class cannot be loaded: no point starting it again
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def ensure_loaded(self) -> list[str]:
        """Start the child and load the class if needed; the functions it provides. CallFailed when
        it cannot be loaded."""
        with self._lock:
            self._ensure_started()
            return list(self.provided)

    def call(self, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one request, wait at most `timeout` (default: the limit) for its reply; the reply's
        fields on success, CallFailed with the reason otherwise."""
        with self._lock:
            self._ensure_started()
            reply = self._exchange(request, timeout or self.limits.timeout)
        if not reply.get("ok"):
            raise CallFailed(str(reply.get("error") or "failed without a reason"))
        return reply

    def close(self) -> None:
        """End the child: closing its input ends it; killed if it does not end within a moment."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(CLOSE_GRACE)
        except (OSError, subprocess.TimeoutExpired):
            self._kill(proc)

    # -- internals ---------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self.load_error is not None:
            raise CallFailed(self.load_error)
        if self.running:
            return
        if self._proc is not None:
            self._kill(self._proc)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._replies = queue.Queue()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(int(self.limits.memory_bytes))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.work_dir,
            env=child_environment(), start_new_session=True)
        self.starts += 1
        threading.Thread(target=self._read_replies, args=(self._proc, self._replies), daemon=True,
                         name=f"sf-replies-{self._proc.pid}").start()
        threading.Thread(target=self._forward_log, args=(self._proc,), daemon=True,
                         name=f"sf-log-{self._proc.pid}").start()
        log.info("%s: started process %d (memory limit %d MiB)", self.tag, self._proc.pid,
                 self.limits.memory_bytes // 2**20)
        reply = self._exchange({"op": "load", "source": self.source, "api": self.api},
                               max(self.limits.timeout, MIN_LOAD_TIMEOUT))
        if not reply.get("ok"):
            error = f"loading the {CLASS_NAME} class failed: {reply.get('error')}"
            self.load_error = error
            self._kill(self._proc)
            raise CallFailed(error)
        self.provided = [str(x) for x in reply.get("provided") or []]

    def _exchange(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        op = request.get("op")
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            self._kill(proc)
            raise CallFailed(f"{op} did not return within {timeout:g} s (setting server_functions_timeout); "
                             "the process was stopped and a new one starts on the next call, "
                             "so the ServerFunctions state starts over") from None
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            code = self._kill(proc)
            raise CallFailed(f"the server functions process ended during {op} ({exit_reason(code)}); "
                             "a new one starts on the next call, so the ServerFunctions state starts over")
        try:
            reply = json.loads(line)
        except ValueError:
            self._kill(proc)
            raise CallFailed(f"the server functions process sent an unreadable reply to {op}") from None
        return reply if isinstance(reply, dict) else {"ok": False, "error": "unreadable reply"}

    @staticmethod
    def _read_replies(proc: subprocess.Popen[bytes], replies: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            replies.put(raw.decode("utf-8", errors="replace"))
        replies.put(None)

    def _forward_log(self, proc: subprocess.Popen[bytes]) -> None:
        """The child's stderr (user prints and logging) into the controller's log, tagged."""
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                log.info("%s: %s", self.tag, line)

    def _kill(self, proc: subprocess.Popen[bytes]) -> int | None:
        """Kill the child and anything it started; its exit code (negative: the signal)."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            return None
        finally:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass


def exit_reason(code: int | None) -> str:
    if code is None:
        return "it did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ", likely the kernel's out-of-memory killer" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


# -- models as .npy folders ----------------------------------------------------------------------
def export_arrays(repository: ModelRepository, model_id: str, helper_type: str, dest: Path) -> list[ArraySpec]:
    """Write a stored model's arrays as `dest/0.npy`..`N-1.npy`, a slice at a time; their specs."""
    dest.mkdir(parents=True, exist_ok=True)
    local = dest / ".model.scm"
    with repository.open(models.MODELS, model_id) as source:
        view = open_copy(source, local, get_helper(helper_type), dest)
    try:
        for i, spec in enumerate(view.specs):
            with open(dest / f"{i}.npy", "wb") as fh:
                write_npy_header(fh, spec)
                for _, start, stop in blocks([spec], block_elements(spec.dtype.itemsize)):
                    fh.write(np.ascontiguousarray(view.read(i, start, stop)).view(np.uint8).data)
        return list(view.specs)
    finally:
        view.close()
        local.unlink(missing_ok=True)


def store_result(repository: ModelRepository, folder: Path, count: int, expected: list[ArraySpec],
                 helper_type: str) -> models.StoredModel:
    """The child's result arrays as a new model: same number of arrays and shapes as the previous global
    model (ValueError otherwise), stored in its dtypes, read slice by slice from the memory-mapped files."""
    arrays = [np.load(folder / f"{i}.npy", mmap_mode="r", allow_pickle=False) for i in range(count)]
    got = [ArraySpec(tuple(a.shape), a.dtype) for a in arrays]
    check_numeric(got, "the aggregated model")
    check_layout(expected, got, "the aggregated model", "the previous global model")
    flat = [a.reshape(-1) for a in arrays]
    view = ComputedParams(list(expected), lambda i, start, stop: cast_to(np.asarray(flat[i][start:stop]),
                                                                         expected[i].dtype))
    with tempfile.TemporaryFile(dir=folder) as raw:
        write_params(view, raw, get_helper(helper_type))
        raw.seek(0)
        return models.write_model(repository, raw, helper_type)


# -- the session runner's side ---------------------------------------------------------------------
class ServerFunctionsHooks:
    """What the session runner asks of a session's server functions, round by round. Each method
    records its call (seconds, error) on the round and returns None (or the default) on failure."""

    def __init__(self, source: str, repository: ModelRepository, work_dir: Path, limits: Limits | None = None,
                 api: dict[str, Any] | None = None, session_id: str = "") -> None:
        self.source = source
        self.repository = repository
        self.work_dir = Path(work_dir)
        self.limits = limits or Limits()
        self.process = WorkerProcess(source, self.limits, self.work_dir, api,
                                     tag=f"server functions of session {session_id[:8] or '-'}")
        # per round id: asked once a round, however often the runner asks (a round may be attempted twice)
        self._settings: dict[str, dict[str, Any]] = {}
        self._per_client: dict[str, dict[str, dict[str, Any]]] = {}  # round id -> client id -> own settings
        self._collects: dict[str, bool] = {}
        # the round's global model as .npy files, exported once for client_settings and aggregate:
        # ((round id, model id), folder, specs)
        self._global: tuple[tuple[str, str], Path, list[ArraySpec]] | None = None

    def describe(self) -> dict[str, Any]:
        return describe_source(self.source)

    def provided(self, record: r.RoundRecord) -> list[str]:
        """The functions the class provides ([] when it cannot be loaded; the error goes on the round)."""
        starts = self.process.starts
        try:
            provided = self.process.ensure_loaded()
        except CallFailed as exc:
            if "load" not in self._notes(record):  # once per round, however often it is asked
                self._note(record, "load", 0.0, str(exc))
            return []
        if self.process.starts > starts > 0:
            self._notes(record)["restarted"] = True
        return provided

    # -- client selection --------------------------------------------------------------------
    def select(self, record: r.RoundRecord, idle: list[ActiveClient]) -> list[ActiveClient] | None:
        """The clients `client_selection` chose among `idle`; None for the default (not provided, failed,
        or no connected client chosen)."""
        if "client_selection" not in self.provided(record):
            return None
        by_id = {c.client_id: c for c in idle}
        t = time.monotonic()
        try:
            reply = self.process.call({"op": "client_selection", "client_ids": list(by_id),
                                       "round_type": "training"})
        except CallFailed as exc:
            self._note(record, "client_selection", time.monotonic() - t, f"{exc}; used the default selection")
            return None
        chosen = list(dict.fromkeys(str(x) for x in reply.get("result") or []))
        unknown = [cid for cid in chosen if cid not in by_id]
        selected = [by_id[cid] for cid in chosen if cid in by_id]
        if not selected:
            self._note(record, "client_selection", time.monotonic() - t,
                       f"client_selection chose none of the {len(by_id)} idle connected clients "
                       f"(returned {chosen[:5]}); used the default selection")
            return None
        self._note(record, "client_selection", time.monotonic() - t, None,
                   selected=len(selected), offered=len(by_id), **({"unknown_ids": unknown[:10]} if unknown else {}))
        return selected

    # -- client settings ---------------------------------------------------------------------
    def client_settings(self, record: r.RoundRecord, helper_type: str,
                        client_ids: Sequence[str] = ()) -> dict[str, Any]:
        """`client_settings(global_model)`, merged into the round's training settings ({} on failure).
        Called once per round; asking again in the same round gives the same settings. With `client_ids`,
        their `client_settings_for` settings are prepared too (read them with `settings_by_client`), so the
        round's global model is exported once for both."""
        self._prepare_settings(record, helper_type, client_ids)
        return dict(self._settings[record.round_id])

    def settings_by_client(self, record: r.RoundRecord, helper_type: str,
                           client_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """`{client_id: client_settings_for(client_id, global_model)}` for those of `client_ids` that got
        settings of their own ({} when the class has no client_settings_for, or it failed). Asked once per
        client and round: a retried round asks only for the clients it did not ask for yet."""
        self._prepare_settings(record, helper_type, client_ids)
        own = self._per_client[record.round_id]
        return {cid: dict(own[cid]) for cid in dict.fromkeys(client_ids) if own.get(cid)}

    def _prepare_settings(self, record: r.RoundRecord, helper_type: str, client_ids: Sequence[str]) -> None:
        first = record.round_id not in self._settings
        if first:  # only the current round's settings are kept
            self._settings, self._per_client = {record.round_id: {}}, {record.round_id: {}}
        own = self._per_client[record.round_id]
        missing = [cid for cid in dict.fromkeys(client_ids) if cid not in own]
        if not first and not missing:
            return
        provided = self.provided(record)
        try:
            if first:
                self._settings[record.round_id] = self._client_settings(record, helper_type, provided)
            if missing:
                own.update(self._client_settings_for(record, helper_type, provided, missing))
        finally:
            if not aggregates(provided):  # else `aggregate` reads the same export at the end of the round
                self._drop_global()

    def _client_settings(self, record: r.RoundRecord, helper_type: str, provided: list[str]) -> dict[str, Any]:
        if "client_settings" not in provided or not record.model_id:
            return {}
        t = time.monotonic()
        try:
            folder, specs = self._global_arrays(record, helper_type)
            reply = self.process.call({"op": "client_settings", "global_model": {"dir": str(folder),
                                                                                 "count": len(specs)}})
            settings = reply.get("result")
            if not isinstance(settings, dict):
                raise CallFailed("client_settings did not return a dict")
        except (CallFailed, OSError, ValueError) as exc:
            self._note(record, "client_settings", time.monotonic() - t, f"{exc}; the clients got no extra settings")
            return {}
        self._note(record, "client_settings", time.monotonic() - t, None, keys=sorted(settings)[:20])
        return settings

    def _client_settings_for(self, record: r.RoundRecord, helper_type: str, provided: list[str],
                             client_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each client's own settings ({} for every one of them when the call fails: all or nothing, so no
        client of a round trains with settings that a bug gave only to some)."""
        if "client_settings_for" not in provided or not record.model_id:
            return {cid: {} for cid in client_ids}
        t = time.monotonic()
        try:
            folder, specs = self._global_arrays(record, helper_type)
            reply = self.process.call({"op": "client_settings_for", "client_ids": client_ids,
                                       "global_model": {"dir": str(folder), "count": len(specs)}})
            result = reply.get("result")
            if not isinstance(result, dict) or not all(isinstance(v, dict) for v in result.values()):
                raise CallFailed("client_settings_for did not return a dict per client")
        except (CallFailed, OSError, ValueError) as exc:
            self._note(record, "client_settings_for", time.monotonic() - t,
                       f"{exc}; the clients got no settings of their own")
            return {cid: {} for cid in client_ids}
        settings = {cid: dict(result.get(cid) or {}) for cid in client_ids}
        notes = self._notes(record).get("client_settings_for") or {}
        clients = int(notes.get("clients") or 0) + sum(1 for s in settings.values() if s)
        keys = sorted({k for s in settings.values() for k in s} | set(notes.get("keys") or []))[:20]
        self._note(record, "client_settings_for", float(notes.get("seconds") or 0) + time.monotonic() - t, None,
                   clients=clients, keys=keys)
        return settings

    # -- aggregation -------------------------------------------------------------------------
    def collects_updates(self, record: r.RoundRecord) -> bool:
        """True when the class aggregates: the round then asks each client's combiner for that
        client's update on its own (one RunRound per client), instead of a combined model.
        Decided once per round."""
        if record.round_id not in self._collects:
            self._collects = {record.round_id: aggregates(self.provided(record))}
        return self._collects[record.round_id]

    def reduce(self, record: r.RoundRecord, config: SessionConfig, outcomes: list[pb.RoundOutcome],
               partials: list[reducing.PartialModel]) -> reducing.Reduced | None:
        """The round's new model when its updates were collected per client: the user's aggregate, or FedAvg
        of the updates when that fails. None when the round ran the default way."""
        if not self._collects.get(record.round_id) or not partials:
            return None
        keep_updates = not config.delete_models_storage
        stored = self._aggregate(record, config.helper_type, outcomes) if record.model_id else None
        if stored is not None:
            return reducing.Reduced(stored, [] if keep_updates else [p.model_id for p in partials])
        fallback = reducing.reduce_partials(self.repository, partials, config.helper_type)
        if keep_updates:
            fallback = reducing.Reduced(fallback.model, [])
        return fallback

    def _aggregate(self, record: r.RoundRecord, helper_type: str,
                   outcomes: list[pb.RoundOutcome]) -> models.StoredModel | None:
        folder = self._call_dir()
        t = time.monotonic()
        try:
            previous, expected = self._global_arrays(record, helper_type)
            updates = []
            for k, outcome in enumerate(o for o in outcomes if o.model_id and o.updates):
                info = outcome.updates[0]
                count = len(export_arrays(self.repository, outcome.model_id, helper_type, folder / f"update-{k}"))
                updates.append({"client_id": info.client_id, "dir": str(folder / f"update-{k}"), "count": count,
                                "metadata": training_metadata(info)})
            reply = self.process.call({"op": "aggregate", "previous_global": {"dir": str(previous),
                                                                              "count": len(expected)},
                                       "updates": updates, "result_dir": str(folder / "result")})
            stored = store_result(self.repository, folder / "result", int(reply.get("arrays") or 0), expected,
                                  helper_type)
        except (CallFailed, OSError, ValueError) as exc:
            self._note(record, "aggregate", time.monotonic() - t, f"{exc}; the round used FedAvg instead")
            return None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            self._drop_global()
        self._note(record, "aggregate", time.monotonic() - t, None, updates=len(updates))
        return stored

    def close(self) -> None:
        self.process.close()
        self._global = None
        shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- bookkeeping -------------------------------------------------------------------------
    def _global_arrays(self, record: r.RoundRecord, helper_type: str) -> tuple[Path, list[ArraySpec]]:
        """The round's global model as `.npy` files and their specs, exported on first use in the round
        (client_settings and aggregate both read it); another round's export is deleted first."""
        key = (record.round_id, record.model_id or "")
        if self._global is None or self._global[0] != key:
            self._drop_global()
            folder = self._call_dir()
            try:
                specs = export_arrays(self.repository, key[1], helper_type, folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self._global = (key, folder, specs)
        return self._global[1], self._global[2]

    def _drop_global(self) -> None:
        if self._global is not None:
            shutil.rmtree(self._global[1], ignore_errors=True)
            self._global = None

    def _call_dir(self) -> Path:
        folder = self.work_dir / f"call-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @staticmethod
    def _notes(record: r.RoundRecord) -> dict[str, Any]:
        return record.round_data.setdefault(ROUND_DATA_KEY, {})

    def _note(self, record: r.RoundRecord, function: str, seconds: float, error: str | None, **detail: Any) -> None:
        notes = self._notes(record)
        notes[function] = {"seconds": round(seconds, 4), "error": error, **detail}
        if error is not None:
            notes.setdefault("errors", []).append(f"{function}: {error}")
            log.warning("session %s round %s: server function %s: %s", record.session_id, record.round_number,
                        function, error)


def aggregates(provided: list[str]) -> bool:
    """Whether a ServerFunctions class that provides these functions replaces the aggregation."""
    return "aggregate" in provided or INCREMENTAL <= set(provided)


def single_update_strategy(aggregator: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The combiner strategy for a RunRound that must hand back one client's update unchanged: FedAvg of
    one update is that update. FedProx stays FedProx (same result), so its `mu` still reaches the client."""
    return (aggregator, dict(kwargs)) if aggregator == "fedprox" else ("fedavg", {})


def training_metadata(info: pb.UpdateInfo) -> dict[str, Any]:
    """What `aggregate` gets as an update's metadata: the client's `training_metadata` (as the official
    server passes it), with `num_examples` always present."""
    try:
        meta = json.loads(info.meta or "{}")
    except ValueError:
        meta = {}
    training = meta.get("training_metadata") if isinstance(meta, dict) else None
    out = dict(training) if isinstance(training, dict) else {}
    out.setdefault("num_examples", info.num_examples)
    return out
