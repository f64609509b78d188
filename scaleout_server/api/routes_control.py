"""Ad-hoc work: stop the running session, custom commands, predictions, validations, model staging, and
stopping or skipping a running command."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from scaleout_server.api.common import ControllerDep, client_ids_list
from scaleout_server.api.listing import to_json
from scaleout_server.api.schemas import (
    CommandEnd,
    ControlStop,
    RunCommand,
    StageModel,
    StartPrediction,
    StartValidation,
)
from scaleout_server.controller.core import Controller
from scaleout_server.errors import Conflict, InvalidInput
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery
from scaleoututil.protocol import custom_task_type

router = APIRouter(tags=["control"])

DEFAULT_TASK_TIMEOUT = 60.0
UNLIMITED_TASK_TIMEOUT = 24 * 3600.0  # what "-1: infinite" (the official APIClient's start_inference) means here


def _timeout(value: float | None) -> float:
    """The default when absent, a day for -1 (the official client's "infinite"); the controller checks the
    value (one rule, one message)."""
    if value is None:
        return DEFAULT_TASK_TIMEOUT
    return UNLIMITED_TASK_TIMEOUT if value == -1 else value


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
def continue_current(controller: ControllerDep) -> dict[str, Any]:
    """Skip the wait of the newest running command (as POST /api/v1/commands/{id}/skip does; the official
    APIClient's step_current_command). To run more rounds of a session, POST /api/v1/sessions/start."""
    _, running = controller.store.commands.list(ListQuery(filters={"status": "Running"}, limit=1))
    if not running:
        raise Conflict("no command is running, so there is nothing to skip; to run more rounds of a session, "
                       'POST /api/v1/sessions/start with {"session_id": ..., "rounds": N}')
    return controller.end_command(running[0].command_id, skip=True)


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


@router.post("/api/v1/models/{model_id}/stage", tags=["models"])
def stage_model(model_id: str, controller: ControllerDep, body: StageModel | None = None) -> dict[str, Any]:
    """Send `Scaleout_StageModel` to the chosen clients (`{"client_ids": [...]}`, default: all connected):
    each caches the model and runs its stage callback, ready for inference. The answer is the command."""
    body = body or StageModel()
    command = controller.stage_model(model_id, client_ids_list(body.client_ids), _timeout(body.timeout),
                                     bool(body.synchronous))
    return command_reply(command, message=f"Staging model {model_id} on {len(command.client_ids)} client(s)")


def _check_same_id(command_id: str, body: CommandEnd | None) -> None:
    if body is not None and body.correlation_id and body.correlation_id != command_id:
        raise InvalidInput(f"correlation_id {body.correlation_id!r} in the body differs from {command_id!r} in the "
                           "path; send the same id (or leave it out of the body)")


@router.post("/api/v1/commands/{command_id}/stop", tags=["commands"])
def stop_command(command_id: str, controller: ControllerDep, body: CommandEnd | None = None) -> dict[str, Any]:
    """Stop a running command (its clients still working are told to stop; results in hand are kept; status
    Stopped), or the session with this id."""
    _check_same_id(command_id, body)
    return controller.end_command(command_id, skip=False)


@router.post("/api/v1/commands/{command_id}/skip", tags=["commands"])
def skip_command(command_id: str, controller: ControllerDep, body: CommandEnd | None = None) -> dict[str, Any]:
    """Stop waiting for a running command: it finishes now (status Finished) with the results in hand, and
    its clients still working are told to stop."""
    _check_same_id(command_id, body)
    return controller.end_command(command_id, skip=True)
