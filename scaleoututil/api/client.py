"""`APIClient`: a Python client of the controller's REST API.

Same constructor and method names as the official Scaleout Edge `APIClient`, so notebooks and
scripts written for it keep working: methods return the reply's JSON body whatever the HTTP status
(errors arrive as `{"message": ...}`), and network errors propagate. Unlike the official one it uses
timeouts, sends the token as is (no token exchange), and uploads models and packages in chunks.
"""

from __future__ import annotations

import inspect
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from scaleoututil.api.upload import UPLOAD_TIMEOUT, ProgressCallback, UploadError, chunked_upload

DEFAULT_TIMEOUT = 30.0
DEFAULT_API_PORT = 8092
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
FINAL_SESSION_STATUSES = frozenset({"finished", "stopped", "failed"})
MODEL_HELPERS = {".npz": "numpyhelper", ".bin": "binaryhelper"}


def helper_for_model_file(path: str | os.PathLike[str]) -> str:
    """The helper that reads a seed model file, from its extension (ValueError listing the accepted ones)."""
    suffix = Path(path).suffix.lower()
    if suffix not in MODEL_HELPERS:
        accepted = ", ".join(f"{ext} ({helper})" for ext, helper in MODEL_HELPERS.items())
        raise ValueError(f"{path}: unsupported model file extension {suffix or '(none)'!r}; accepted: {accepted}")
    return MODEL_HELPERS[suffix]


def default_secure(host: str, port: int | None) -> bool:
    """https except for this machine (localhost, 127.0.0.1) or an explicit non-443 port."""
    if port == 443:
        return True
    if host.lower() in LOCAL_HOSTS or port is not None:
        return False
    return True


class APIClient:
    """Talks to `<scheme>://<host>:<port>/api/v1/...`.

    `host` may be a bare host name or a URL (`http://host:8092/anything`); a scheme in the URL wins
    over `secure`, `port` wins over a port in the URL, any path is dropped. Without a scheme, `secure`
    defaults to https except for localhost/127.0.0.1 or a non-443 port. The token is `token`, else the
    environment variable `SCALEOUT_AUTH_TOKEN`; it is sent as `Authorization: <scheme> <token>` only
    when present.
    """

    def __init__(self, host: str, port: int | None = None, secure: bool | None = None, verify: bool = True,
                 token: str | None = None, auth_scheme: str | None = None, token_endpoint: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if not host:
            raise ValueError("host is required, e.g. APIClient('127.0.0.1', 8092) or APIClient('http://host:8092')")
        parsed = urlsplit(host if "://" in host else f"//{host}")
        hostname = parsed.hostname or host
        if ":" in hostname:  # IPv6 literal
            hostname = f"[{hostname}]"
        if parsed.scheme:
            secure = parsed.scheme.lower() == "https"
        if port is None:
            port = parsed.port
        if secure is None:
            secure = default_secure(hostname, port)
        if port is None:
            port = 443 if secure else (DEFAULT_API_PORT if hostname.lower() in LOCAL_HOSTS else 80)
        self.host = hostname
        self.port = int(port)
        self.secure = bool(secure)
        self.verify = verify
        self.timeout = timeout
        self.token_endpoint = token_endpoint  # accepted for compatibility; tokens are sent as given
        self.auth_scheme = auth_scheme or os.environ.get("SCALEOUT_AUTH_SCHEME") or "Bearer"
        raw = token if token is not None else os.environ.get("SCALEOUT_AUTH_TOKEN")
        self.token = _clean_token(raw)
        self.session = requests.Session()

    # -- plumbing --------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}"

    def _get_url(self, endpoint: str) -> str:
        return f"{self.base_url}/{endpoint.lstrip('/')}"

    def _get_url_api_v1(self, endpoint: str) -> str:
        return self._get_url(f"api/v1/{endpoint.lstrip('/')}")

    def _get_headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"{self.auth_scheme} {self.token}"} if self.token else {}
        headers.update(extra or {})
        return headers

    def request(self, method: str, endpoint: str, *, params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None, json: Any = None, data: Any = None,
                timeout: float | None = None, stream: bool = False, root: bool = False) -> requests.Response:
        """One HTTP request to `/api/v1/<endpoint>` (or `/<endpoint>` with `root`), auth header included."""
        url = self._get_url(endpoint) if root else self._get_url_api_v1(endpoint)
        clean = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        return self.session.request(method, url, params=clean or None, headers=self._get_headers(headers),
                                    json=json, data=data, verify=self.verify, stream=stream,
                                    timeout=self.timeout if timeout is None else timeout)

    def _json(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        return _body(self.request(method, endpoint, **kwargs))

    def _list(self, endpoint: str, params: dict[str, Any] | None = None, n_max: int | None = None,
              extra_headers: dict[str, str] | None = None) -> Any:
        headers = dict(extra_headers or {})
        if n_max is not None:
            headers["X-Limit"] = str(n_max)
        return self._json("GET", endpoint, params=params, headers=headers)

    # -- clients -----------------------------------------------------------------------------
    def get_client(self, id: str) -> Any:
        return self._json("GET", f"clients/{id}")

    def get_clients(self, n_max: int | None = None) -> Any:
        return self._list("clients/", n_max=n_max)

    def get_clients_count(self, only_active: bool = False) -> Any:
        return self._json("GET", "clients/count", params={"status": "online"} if only_active else None)

    def get_client_config(self, checksum: bool = True) -> Any:
        return self._json("GET", "clients/config", params={"checksum": checksum})

    def get_active_clients(self, combiner_id: str | None = None, n_max: int | None = None) -> Any:
        return self._list("clients/", params={"status": "online", "combiner": combiner_id}, n_max=n_max)

    # -- combiners ---------------------------------------------------------------------------
    def get_combiner(self, id: str) -> Any:
        return self._json("GET", f"combiners/{id}")

    def get_combiners(self, n_max: int | None = None) -> Any:
        return self._list("combiners/", n_max=n_max)

    def get_combiners_count(self) -> Any:
        return self._json("GET", "combiners/count")

    def set_public_hostname(self, id: str, public_hostname: str) -> Any:
        """The address edge clients dial for combiner `id` (e.g. a load balancer's `host[:port]`)."""
        reply = self.request("PATCH", f"combiners/{id}", json={"public_hostname": public_hostname})
        return _raise_on_error(reply)

    def get_controller_status(self) -> Any:
        return self._json("GET", "get_controller_status", root=True)

    # -- models ------------------------------------------------------------------------------
    def get_model(self, id: str) -> Any:
        return self._json("GET", f"models/{id}")

    def get_models(self, session_id: str | None = None, n_max: int | None = None) -> Any:
        return self._list("models/", params={"session_id": session_id}, n_max=n_max)

    def get_models_count(self) -> Any:
        return self._json("GET", "models/count")

    def get_active_model(self) -> Any:
        """The most recently committed model, or the raw list reply when there is none."""
        body = self._list("models/", n_max=1, extra_headers={"X-Sort-Key": "committed_at", "X-Sort-Order": "desc"})
        if isinstance(body, dict) and body.get("result"):
            return body["result"][0]
        return body

    def get_model_trail(self, id: str | None = None, include_self: bool = True, reverse: bool = True,
                        n_max: int | None = None) -> Any:
        """The model's ancestors (seed first unless `reverse`); `id` defaults to the active model."""
        if id is None:
            active = self.get_active_model()
            if not isinstance(active, dict) or "model_id" not in active:
                return active
            id = active["model_id"]
        if n_max is None:
            count = self.get_models_count()
            n_max = count.get("count") if isinstance(count, dict) else count
        headers = {"X-Reverse": "true" if reverse else "false"}
        if isinstance(n_max, int) and n_max > 0:
            headers["X-Limit"] = str(n_max)
        return self._json("GET", f"models/{id}/ancestors", params={"include_self": include_self}, headers=headers)

    def download_model(self, id: str, path: str | os.PathLike[str]) -> dict[str, Any]:
        with self.request("GET", f"models/{id}/download", stream=True, timeout=UPLOAD_TIMEOUT) as reply:
            if reply.status_code != 200:  # `with`: an unread streamed error body must still free its connection
                return {"success": False, "message": "Failed to download model."}
            save_stream(reply, path)
        return {"success": True, "message": "Model downloaded successfully."}

    def get_active_helper(self) -> Any:
        return self._json("GET", "helpers/active")

    def set_active_helper(self, helper: str) -> Any:
        return self._json("PUT", "helpers/active", json={"helper": helper})

    def set_active_model(self, path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> Any:
        """Upload a seed model (`.npz` -> numpyhelper, `.bin` -> binaryhelper) and return the model reply."""
        helper = helper_for_model_file(path)
        reply = self.request("PUT", "helpers/active", json={"helper": helper})
        if reply.status_code >= 400:
            return _body(reply)
        try:
            token = self.upload_file(path, progress=progress)
        except UploadError as err:
            return {"success": False, "message": err.message}
        return self._json("POST", "models/", data={"helper": helper, "file_token": token}, timeout=UPLOAD_TIMEOUT)

    # -- packages ----------------------------------------------------------------------------
    def get_package(self, id: str) -> Any:
        return self._json("GET", f"packages/{id}")

    def get_packages(self, n_max: int | None = None) -> Any:
        return self._list("packages/", n_max=n_max)

    def get_packages_count(self) -> Any:
        return self._json("GET", "packages/count")

    def get_active_package(self) -> Any:
        return self._json("GET", "packages/active")

    def get_package_checksum(self) -> Any:
        return self._json("GET", "packages/checksum")

    def download_package(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        with self.request("GET", "packages/download", stream=True, timeout=UPLOAD_TIMEOUT) as reply:
            if reply.status_code != 200:  # `with`: an unread streamed error body must still free its connection
                return {"success": False, "message": "Failed to download package."}
            save_stream(reply, path)
        return {"success": True, "message": "Package downloaded successfully."}

    def set_active_package(self, path: str | os.PathLike[str], helper: str, name: str, description: str = "",
                           progress: ProgressCallback | None = None, signature: str | None = None) -> Any:
        """Upload a compute package archive and make it the active package. `signature`: its base64 Ed25519
        signature (scaleoututil.signing); by default the contents of `<path>.sig` when that file exists."""
        if signature is None:
            from scaleoututil.signing import signature_path  # here: importing APIClient must not load cryptography

            sig_file = signature_path(path)
            if sig_file.is_file():
                signature = sig_file.read_text(encoding="ascii").strip()
        try:
            token = self.upload_file(path, progress=progress)
        except UploadError as err:
            return {"success": False, "message": err.message}
        form = {"helper": helper, "name": name, "description": description or "", "file_token": token,
                "file_name": Path(path).name}
        if signature:
            form["signature"] = signature
        return self._json("POST", "packages/", data=form, timeout=UPLOAD_TIMEOUT)

    def upload_file(self, path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> str:
        """Chunked upload; returns the `file_token` the models/packages routes accept."""
        return chunked_upload(self.base_url, path, headers=self._get_headers(), progress=progress,
                              verify=self.verify, session=self.session)

    # -- rounds ------------------------------------------------------------------------------
    def get_round(self, id: str) -> Any:
        return self._json("GET", f"rounds/{id}")

    def get_rounds(self, n_max: int | None = None, filter: dict[str, Any] | None = None) -> Any:
        return self._list("rounds/", params=dict(filter or {}), n_max=n_max)

    def get_rounds_count(self) -> Any:
        return self._json("GET", "rounds/count")

    # -- sessions ----------------------------------------------------------------------------
    def get_session(self, id: str | None = None, name: str | None = None) -> Any:
        if id:
            return self._json("GET", f"sessions/{id}")
        if name:
            body = self._json("GET", "sessions/", params={"name": name})
            if isinstance(body, dict) and body.get("result"):
                return body["result"][0]
            return {"message": "Session not found."}
        return {"message": "No id or name provided."}

    def get_sessions(self, n_max: int | None = None, name: str | None = None) -> Any:
        return self._list("sessions/", params={"name": name}, n_max=n_max)

    def get_sessions_count(self) -> Any:
        return self._json("GET", "sessions/count")

    def get_session_status(self, id: str) -> Any:
        session = self.get_session(id=id)
        if isinstance(session, dict) and "status" in session:
            return session["status"]
        return "Could not retrieve session status."

    def session_is_finished(self, id: str) -> bool:
        status = self.get_session_status(id)
        return isinstance(status, str) and status.lower() == "finished"

    def start_session(self, name: str | None = None, aggregator: str = "fedavg",
                      aggregator_kwargs: dict[str, Any] | None = None, model_id: str | None = None,
                      round_timeout: int = 180, rounds: int = 5, round_buffer_size: int = -1,
                      delete_models: bool = True, validate: bool = True, helper: str | None = None,
                      min_clients: int = 1, requested_clients: int = 8, server_functions: Any = None,
                      mode: str | None = None, staleness_exponent: float | None = None) -> Any:
        """Create a session and start it: the start reply with `session_id` added, or the error body.

        `server_functions`: a `ServerFunctions` class (its source is sent) or its source text.
        `mode="async"`: buffered asynchronous training, aggregating every `round_buffer_size` updates
        (`staleness_exponent` discounts stale ones); `rounds` then counts aggregations."""
        if model_id is None:
            active = self.get_active_model()
            if not isinstance(active, dict) or "model_id" not in active:
                return {"message": "No models found in the repository"}
            model_id = active["model_id"]
        if helper is None:
            helper = self.resolve_active_helper()
        if server_functions is not None and not isinstance(server_functions, str):
            server_functions = inspect.getsource(server_functions)
        body = {
            "name": name,
            "seed_model_id": model_id,
            "session_config": session_config(
                aggregator=aggregator, aggregator_kwargs=aggregator_kwargs, rounds=rounds,
                round_timeout=round_timeout, buffer_size=round_buffer_size, model_id=model_id,
                delete_models=delete_models, min_clients=min_clients, requested_clients=requested_clients,
                validate=validate, helper=helper, server_functions=server_functions, mode=mode,
                staleness_exponent=staleness_exponent),
        }
        reply = self.request("POST", "sessions/", json=body)
        if reply.status_code != 201:
            return _body(reply)
        session_id = _body(reply).get("session_id")
        started = self.request("POST", "sessions/start",
                               json={"session_id": session_id, "rounds": rounds, "round_timeout": round_timeout})
        try:
            result = started.json()
        except ValueError:
            result = {"message": started.text, "status_code": started.status_code}
        if not isinstance(result, dict):
            result = {"result": result}
        result["session_id"] = session_id
        return result

    def resolve_active_helper(self) -> str:
        """The server's active helper; numpyhelper when none is set (the server answers 400 or 404)."""
        reply = self.request("GET", "helpers/active")
        if reply.status_code == 200:
            body = _body(reply)
            if isinstance(body, str) and body:
                return body
            if isinstance(body, dict) and body.get("helper"):
                return str(body["helper"])
        return "numpyhelper"

    def continue_session(self, session_id: str, rounds: int = 5, round_timeout: int = 180) -> Any:
        if not session_id:
            return {"message": "No session id provided."}
        if rounds is None or rounds <= 0:
            return {"message": "Invalid number of rounds provided. Must be greater than 0."}
        session = self.get_session(id=session_id)
        if not isinstance(session, dict) or "session_id" not in session:
            return {"message": "Session not found."}
        if str(session.get("status", "")).lower() == "running":
            return {"message": "Session is already running."}
        return self._json("POST", "sessions/start",
                          json={"session_id": session_id, "rounds": rounds, "round_timeout": round_timeout})

    def wait_for_session(self, session_id: str, timeout: float | None = None,
                         poll_interval: float = 1.0) -> dict[str, Any]:
        """Poll until the session is Finished, Stopped or Failed and return it (TimeoutError otherwise)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            session = self.get_session(id=session_id)
            if not isinstance(session, dict):
                raise RuntimeError(f"unexpected reply for session {session_id}: {session!r:.200}")
            status = session.get("status")
            if status is None:
                raise RuntimeError(f"session {session_id}: {session.get('message', session)}")
            if str(status).lower() in FINAL_SESSION_STATUSES:
                return session
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"session {session_id} still {status} after {timeout} s")
            time.sleep(poll_interval if deadline is None else max(0.0, min(poll_interval,
                                                                              deadline - time.monotonic())))

    def stop_session(self, session_id: str | None = None) -> Any:
        return self._json("POST", "control/stop", json={"session_id": session_id} if session_id else {})

    def stop_current_session(self) -> Any:
        return self._json("POST", "control/stop", json={})

    def step_current_session(self) -> Any:
        return self._json("POST", "control/continue", json={})

    # -- statuses, validations, metrics, predictions, commands -------------------------------
    def get_status(self, id: str) -> Any:
        return self._json("GET", f"statuses/{id}")

    def get_statuses(self, session_id: str | None = None, event_type: str | None = None,
                     sender_name: str | None = None, sender_role: str | None = None, n_max: int | None = None) -> Any:
        params = {"session_id": session_id, "type": event_type, "sender.name": sender_name,
                  "sender.role": sender_role}
        return self._list("statuses/", params=params, n_max=n_max)

    def get_statuses_count(self) -> Any:
        return self._json("GET", "statuses/count")

    def get_validation(self, id: str) -> Any:
        return self._json("GET", f"validations/{id}")

    def get_validations(self, session_id: str | None = None, model_id: str | None = None,
                        correlation_id: str | None = None, sender_name: str | None = None,
                        sender_role: str | None = None, sender_client_id: str | None = None,
                        n_max: int | None = None) -> Any:
        params = {"session_id": session_id, "model_id": model_id, "correlation_id": correlation_id,
                  "sender.name": sender_name, "sender.role": sender_role, "sender.client_id": sender_client_id}
        return self._list("validations/", params=params, n_max=n_max)

    def get_validations_count(self, session_id: str | None = None) -> Any:
        return self._json("GET", "validations/count", params={"session_id": session_id})

    def start_validation(self, model_id: str, session_id: str | None = None, client_ids: list[str] | None = None,
                         timeout: float = 180, synchronous: bool = False) -> Any:
        body = {"session_id": session_id, "model_id": model_id, "client_ids": client_ids, "timeout": timeout,
                "synchronous": synchronous}
        return self._json("POST", "validations/start", json=body, timeout=_call_timeout(timeout, synchronous))

    def get_metrics_count(self, session_id: str | None = None) -> Any:
        return self._json("GET", "metrics/count", params={"session_id": session_id})

    def get_metrics(self, session_id: str | None = None, model_id: str | None = None, round_id: str | None = None,
                    key: str | None = None, sender_name: str | None = None, sender_client_id: str | None = None,
                    n_max: int | None = None) -> Any:
        params = {"session_id": session_id, "model_id": model_id, "round_id": round_id, "key": key,
                  "sender.name": sender_name, "sender.client_id": sender_client_id}
        return self._list("metrics/", params=params, n_max=n_max)

    def get_predictions(self, prediction_id: str | None = None, model_id: str | None = None,
                        correlation_id: str | None = None, client_id: str | None = None,
                        n_max: int | None = None) -> Any:
        params = {"prediction_id": prediction_id, "model_id": model_id, "correlation_id": correlation_id,
                  "sender.client_id": client_id}
        return self._list("predictions/", params=params, n_max=n_max)

    def start_predictions(self, prediction_id: str | None = None, model_id: str | None = None,
                          client_ids: list[str] | None = None, parameters: dict[str, Any] | None = None,
                          timeout: float = 180, synchronous: bool = False) -> Any:
        body = {"prediction_id": prediction_id or str(uuid.uuid4()), "model_id": model_id, "client_ids": client_ids,
                "parameters": parameters or {}, "timeout": timeout, "synchronous": synchronous}
        return self._json("POST", "predictions/start", json=body, timeout=_call_timeout(timeout, synchronous))

    def run_custom_command(self, command_type: str, blocking: bool = False, timeout: float | None = None,
                           client_ids: list[str] | None = None, parameters: dict[str, Any] | None = None) -> Any:
        """Send `Custom_<command_type>` to clients; with `blocking`, wait for their results."""
        if not command_type.startswith("Custom_"):
            command_type = "Custom_" + command_type
        task_timeout = 60.0 if timeout is None else timeout
        body = {"command_type": command_type, "parameters": parameters or {}, "client_ids": client_ids,
                "timeout": task_timeout, "synchronous": blocking}
        reply = self.request("POST", "control/run_command", json=body,
                             timeout=_call_timeout(task_timeout, blocking))
        body_out = _body(reply)
        if reply.status_code == 200:
            return body_out
        message = body_out.get("message") if isinstance(body_out, dict) else body_out
        return {"success": False, "message": message}

    def get_command(self, id: str) -> Any:
        return self._json("GET", f"commands/{id}")

    def get_commands(self, n_max: int | None = None, parent_correlation_id: str | None = None) -> Any:
        """Commands (custom commands, inference runs, validations, staging), newest first. Commands are not
        nested here, so `parent_correlation_id` (the official client's filter) changes nothing."""
        del parent_correlation_id
        return self._list("commands/", n_max=n_max)

    def get_commands_roots(self, n_max: int | None = None) -> Any:
        return self._list("commands/roots", n_max=n_max)

    def get_commands_count(self) -> Any:
        return self._json("GET", "commands/count")

    def step_command(self, correlation_id: str) -> Any:
        """Stop waiting for a running command: it finishes now with the results in hand."""
        return self._json("POST", f"commands/{correlation_id}/skip", json={"correlation_id": correlation_id})

    def stop_command(self, correlation_id: str) -> Any:
        """Stop a running command (its clients still working are told to stop), or the session with this id."""
        return self._json("POST", f"commands/{correlation_id}/stop", json={"correlation_id": correlation_id})

    def step_current_command(self) -> Any:
        """Skip the wait of the newest running command."""
        return self._json("POST", "control/continue", json={})

    def stop_current_command(self) -> Any:
        """Stop the running session (RuntimeError with the server's message when none runs)."""
        return _raise_on_error(self.request("POST", "control/stop", json={}))

    # -- staging and inference ---------------------------------------------------------------
    def stage_model(self, model_id: str, client_ids: list[str] | None = None) -> Any:
        """Have clients (default: all connected) cache a model for inference (`Scaleout_StageModel`)."""
        return self._json("POST", f"models/{model_id}/stage", json={"client_ids": client_ids})

    def start_inference(self, model_id: str, synchronous: bool = True, timeout: float | None = None,
                        client_ids: list[str] | None = None, parameters: dict[str, Any] | None = None) -> Any:
        """Run clients' inference callbacks on a model (`timeout` -1: no limit); results are listed by
        `get_predictions` (`prediction_id` = the returned command id)."""
        task_timeout = 180.0 if timeout is None else timeout  # -1: no limit (the server allows a day)
        body = {"model_id": model_id, "synchronous": synchronous, "timeout": task_timeout,
                "parameters": parameters or {}, "client_ids": client_ids}
        wait = _call_timeout(24 * 3600.0 if task_timeout < 0 else task_timeout, synchronous)
        return self._json("POST", "control/start_inference", json=body, timeout=wait)

    # -- attributes --------------------------------------------------------------------------
    def get_current_attributes(self, node_list: list[str] | str) -> Any:
        if isinstance(node_list, str):
            node_list = [node_list]
        if not isinstance(node_list, list) or not node_list:
            raise ValueError("node_list must be a non-empty list of client ids")
        return self._json("POST", "attributes/current", json={"node_ids": node_list})

    def add_attributes(self, attribute: dict[str, Any]) -> Any:
        """Add an attribute to a client: `{"key": ..., "value": ..., "entity_id": <client_id>}`."""
        reply = self.request("POST", "attributes/", json=attribute)
        reply.raise_for_status()
        return _body(reply)

    def get_attribute_trail(self, entity_id: str) -> Any:
        """Every attribute recorded for one client, oldest first: `{"count", "result"}`."""
        if not isinstance(entity_id, str) or not entity_id:
            raise ValueError("entity_id must be a non-empty string (a client id)")
        reply = self.request("POST", "attributes/list", json={"entity_id": entity_id})
        reply.raise_for_status()
        return _body(reply)

    def add_status(self, status: dict[str, Any]) -> Any:
        """Add a status entry: `{"status": ..., "type": ..., "log_level": "INFO", "sender": {"client_id": ...}}`."""
        reply = self.request("POST", "statuses/", json=status)
        reply.raise_for_status()
        return _body(reply)


# -- helpers shared with the CLI -----------------------------------------------------------------
def session_config(*, aggregator: str, aggregator_kwargs: dict[str, Any] | None, rounds: int, round_timeout: float,
                   buffer_size: int, model_id: str, delete_models: bool, min_clients: int, requested_clients: int,
                   validate: bool, helper: str, server_functions: str | None = None, mode: str | None = None,
                   staleness_exponent: float | None = None) -> dict[str, Any]:
    """The `session_config` object of `POST /api/v1/sessions/`, in the official field names (plus `mode`
    and `staleness_exponent`, sent only when given, for the asynchronous mode)."""
    extra = {key: value for key, value in (("mode", mode), ("staleness_exponent", staleness_exponent))
             if value is not None}
    return {
        "aggregator": aggregator,
        "aggregator_kwargs": aggregator_kwargs or {},
        "rounds": rounds,
        "round_timeout": round_timeout,
        "buffer_size": buffer_size,
        "model_id": model_id,
        "delete_models_storage": delete_models,
        "clients_required": min_clients,
        "requested_clients": requested_clients,
        "validate": validate,
        "helper_type": helper,
        "server_functions": server_functions,
        **extra,
    }


def _clean_token(raw: str | None) -> str | None:
    """`"Bearer abc"` -> `"abc"`; blank -> None."""
    if raw is None:
        return None
    raw = raw.strip()
    if not raw:
        return None
    parts = re.split(r"\s+", raw, maxsplit=1)
    return parts[1] if len(parts) == 2 else raw


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, (str, list)) else str(value)


def _body(reply: requests.Response) -> Any:
    """The reply's JSON; a non-JSON reply becomes `{"message": <text>, "status_code": n}`."""
    try:
        return reply.json()
    except ValueError:
        return {"message": reply.text.strip() or f"HTTP {reply.status_code}", "status_code": reply.status_code}


def _raise_on_error(reply: requests.Response) -> Any:
    """The reply's JSON; RuntimeError with the server's message for HTTP >= 400 (as the official client)."""
    body = _body(reply)
    if reply.status_code >= 400:
        message = body.get("message") if isinstance(body, dict) else None
        raise RuntimeError(message or reply.text or f"HTTP {reply.status_code}")
    return body


def _call_timeout(task_timeout: float | None, synchronous: bool) -> float:
    """A synchronous task call blocks on the server for up to the task timeout; wait a little longer."""
    if synchronous:
        return float(task_timeout or 0) + DEFAULT_TIMEOUT
    return DEFAULT_TIMEOUT


def save_stream(reply: requests.Response, path: str | os.PathLike[str]) -> int:
    """Write a streamed reply to `path` and return its size; via `<path>.part`, so a download that breaks
    off never leaves a truncated file under the final name."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    written = 0
    try:
        with partial.open("wb") as out:
            for piece in reply.iter_content(chunk_size=1024 * 1024):
                out.write(piece)
                written += len(piece)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return written
