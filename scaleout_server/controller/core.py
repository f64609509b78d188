"""The controller's operations, called by the REST routes. STUB: signatures fixed by the lead.

The routes translate and validate HTTP; everything that needs a rule lives behind this facade.
Errors are raised as `scaleout_server.errors` types (InvalidInput, NotFoundError, Conflict,
Unavailable, TooLarge) or `scaleout_server.store.base.NotFound`; the API maps them to statuses.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from scaleout_server.repository.base import ModelRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store import records as r
from scaleout_server.store.base import Store


class Controller:
    def __init__(self, settings: ServerSettings, store: Store, repository: ModelRepository) -> None:
        self.settings = settings
        self.store = store
        self.repository = repository

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start background work (liveness sweeps) and resume nothing yet."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop running sessions' threads and background work."""
        raise NotImplementedError

    # -- combiners -------------------------------------------------------------------------
    def register_combiner(self, name: str, host: str, port: int,
                          public_hostname: str | None = None) -> tuple[r.CombinerRecord, dict[str, str]]:
        """Add or refresh a combiner (same name = same combiner); returns it and the repository
        description (`ModelRepository.describe()`) the combiner should open."""
        raise NotImplementedError

    def ingest_events(self, combiner_id: str, events: list[dict[str, Any]]) -> int:
        """Store a batch of encoded records (`store.codec.encode`) sent by a combiner, plus
        `{"kind": "client_seen", "data": {client_id, name, status, ip?}}` liveness events and
        `{"kind": "combiner_load", "data": {"load": n}}`. Returns how many were stored."""
        raise NotImplementedError

    # -- clients ---------------------------------------------------------------------------
    def add_client(self, client_id: str | None, name: str | None, preferred_combiner: str | None,
                   package: str, client_version: str | None, ip: str | None) -> tuple[r.ClientRecord, r.CombinerRecord]:
        """Register (or re-register) a client and assign it a combiner: the preferred one when it
        exists, else the least loaded. Unavailable when no combiner is registered."""
        raise NotImplementedError

    # -- models and packages ---------------------------------------------------------------
    def add_model(self, stream: BinaryIO, helper_type: str, name: str | None = None) -> r.ModelRecord:
        """Store a seed model (raw helper bytes, e.g. NPZ, or a container). Validates that the
        helper can load it (InvalidInput otherwise), wraps it in a container with a new id."""
        raise NotImplementedError

    def add_package(self, stream: BinaryIO, file_name: str, name: str, description: str,
                    helper: str) -> r.PackageRecord:
        """Store a compute package archive, validate it (a tar.gz/tgz/tar.bz2 with scaleout.yaml),
        record its SHA-256, and make it the active package."""
        raise NotImplementedError

    # -- sessions --------------------------------------------------------------------------
    def create_session(self, name: str | None, session_config: dict[str, Any],
                       seed_model_id: str | None) -> r.SessionRecord:
        """Validate the config (aggregator known, rounds >= 1, timeouts > 0, model exists...)."""
        raise NotImplementedError

    def start_session(self, session_id: str, rounds: int | None = None,
                      round_timeout: float | None = None) -> r.SessionRecord:
        """Start (or continue) a session's rounds in the background. Conflict if one runs."""
        raise NotImplementedError

    def stop_session(self, session_id: str | None = None) -> r.SessionRecord:
        """Stop the given (or the running) session: abort its clients' tasks, end as Stopped."""
        raise NotImplementedError

    # -- ad-hoc tasks ----------------------------------------------------------------------
    def run_command(self, command_type: str, parameters: dict[str, Any], client_ids: list[str] | None,
                    timeout: float, synchronous: bool) -> r.CommandRecord:
        """Send a `Custom_<name>` task to the chosen (default: all online) clients; with
        `synchronous`, wait for their results (or the timeout) before returning."""
        raise NotImplementedError

    def start_prediction(self, prediction_id: str, model_id: str | None, client_ids: list[str] | None,
                         parameters: dict[str, Any], timeout: float, synchronous: bool) -> r.CommandRecord:
        """Ask clients' predict callbacks to run on a model (default: latest); results are stored
        as PredictionRecords under `prediction_id`."""
        raise NotImplementedError

    def start_validation(self, session_id: str | None, model_id: str, client_ids: list[str] | None,
                         timeout: float, synchronous: bool) -> r.CommandRecord:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """`{"state": "idle"|"running", "session_id": ...}` for `/get_controller_status`."""
        raise NotImplementedError
