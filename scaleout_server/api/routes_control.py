"""Ad-hoc work: stop the running session, custom commands, predictions, validations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from scaleout_server.api.common import ControllerDep, client_ids_list
from scaleout_server.api.listing import to_json
from scaleout_server.api.schemas import ControlStop, RunCommand, StartPrediction, StartValidation
from scaleout_server.controller.core import Controller
from scaleout_server.errors import InvalidInput
from scaleout_server.store import records as r
from scaleoututil.protocol import custom_task_type

router = APIRouter(tags=["control"])

DEFAULT_TASK_TIMEOUT = 60.0


def _timeout(value: float | None) -> float:
    """The default when absent; the controller checks the value (one rule, one message)."""
    return DEFAULT_TASK_TIMEOUT if value is None else value


def _sync(synchronous: bool | None, blocking: bool | None) -> bool:
    return bool(synchronous if synchronous is not None else blocking)


def stop_reply(session: r.SessionRecord) -> dict[str, Any]:
    """What every stop route answers (sessions/{id}/stop, PATCH sessions/{id}, control/stop)."""
    return {"message": f"Session {session.session_id} stopped", "session_id": session.session_id,
            "status": session.status}


def command_reply(command: r.CommandRecord, **extra: Any) -> dict[str, Any]:
    out = to_json(command)
    out.update(extra)
    return out


@router.post("/api/v1/control/stop")
def stop_running_session(controller: ControllerDep, body: ControlStop | None = None) -> dict[str, Any]:
    """Stop the running session (or the one named by session_id)."""
    return stop_reply(controller.stop_session(body.session_id if body else None))


@router.post("/api/v1/control/continue")
def continue_session() -> dict[str, Any]:
    """Not supported: continue a session with POST /api/v1/sessions/start and its session_id."""
    raise InvalidInput("control/continue is not supported; to run more rounds, POST /api/v1/sessions/start "
                       'with {"session_id": ..., "rounds": N}')


@router.post("/api/v1/control/run_command")
def run_command(body: RunCommand, controller: ControllerDep) -> dict[str, Any]:
    """Send a Custom_<name> task to clients; with synchronous (or blocking) wait for their results."""
    parameters = dict(body.parameters or {})
    parameters.update(body.model_extra or {})  # the official APIClient merges parameters at the top level
    command = controller.run_command(
        custom_task_type(body.command_type.strip()),
        parameters,
        client_ids_list(body.client_ids),
        _timeout(body.timeout),
        _sync(body.synchronous, body.blocking),
    )
    return command_reply(command)


def _start_prediction(body: StartPrediction, controller: Controller) -> dict[str, Any]:
    prediction_id = body.prediction_id or r.new_id()
    command = controller.start_prediction(
        prediction_id,
        body.model_id or None,
        client_ids_list(body.client_ids),
        dict(body.parameters or {}),
        _timeout(body.timeout),
        _sync(body.synchronous, body.blocking),
    )
    return command_reply(command, prediction_id=prediction_id, message="Prediction started")


@router.post("/api/v1/control/start_inference")
def start_inference(body: StartPrediction, controller: ControllerDep) -> dict[str, Any]:
    """Run clients' predict callbacks on a model (default: the latest); results are stored as predictions."""
    return _start_prediction(body, controller)


@router.post("/api/v1/predictions/start")
def start_prediction(body: StartPrediction, controller: ControllerDep) -> dict[str, Any]:
    """Same as control/start_inference; prediction_id groups the results (a new id when absent)."""
    return _start_prediction(body, controller)


@router.post("/api/v1/validations/start")
def start_validation(body: StartValidation, controller: ControllerDep) -> dict[str, Any]:
    """Ask clients to validate a model; results are stored as validations."""
    command = controller.start_validation(
        body.session_id or None,
        body.model_id,
        client_ids_list(body.client_ids),
        _timeout(body.timeout),
        _sync(body.synchronous, body.blocking),
    )
    return command_reply(command, message="Validation started")
