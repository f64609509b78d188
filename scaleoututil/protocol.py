"""Names both sides of the wire agree on: task types, task statuses, metadata keys.

These strings travel in `TaskRequest.type`, `TaskRequest.status` and `ActivityReport.status`;
the published Scaleout Edge clients parse them, so they must stay exactly as they are.
"""

from __future__ import annotations

from enum import StrEnum

CHUNK_SIZE = 1024 * 1024  # model transfer chunks, both directions
CUSTOM_PREFIX = "Custom_"


class TaskType(StrEnum):
    MODEL_UPDATE = "Scaleout_ModelUpdate"
    VALIDATION = "Scaleout_Validation"
    STAGE_MODEL = "Scaleout_StageModel"
    INFERENCE = "Scaleout_Inference"
    RESTART_CLIENT = "Scaleout_RestartClient"


class TaskStatus(StrEnum):
    """Statuses a client understands; anything else makes an official client shut down."""

    EMPTY = ""
    CREATED = "CREATED"
    NEW = "NEW"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"
    TIMEOUT = "TIMEOUT"
    UNKNOWN = "UNKNOWN"


# A RunTasks result only (scaleout.Control), never sent to a client: the client was not given the task, e.g. a
# validation task for a client that does not validate.
TASK_SKIPPED = "SKIPPED"

FINAL_TASK_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.INTERRUPTED, TaskStatus.TIMEOUT})


class AnnounceType(StrEnum):
    VERSION_CHECK = "VersionCheck"
    CONNECT = "Connect"
    DISCONNECT = "Disconnect"


class SessionStatus(StrEnum):
    CREATED = "Created"
    RUNNING = "Running"
    FINISHED = "Finished"
    STOPPED = "Stopped"
    FAILED = "Failed"


class RoundStatus(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    VALIDATING = "Validating"
    FINISHED = "Finished"
    FAILED = "Failed"
    STOPPED = "Stopped"


# gRPC metadata keys
MD_CLIENT = "client"
MD_CLIENT_ID = "client-id"
MD_NAME = "name"
MD_AUTHORIZATION = "authorization"
MD_MODEL_ID = "model-id"
MD_CHECKSUM = "checksum"
# our client's telemetry carried on a poll instead of a SendTelemetryMessage call (JSON: {"at": epoch s,
# "values": {key: number}}); the published clients never send it
MD_TELEMETRY = "scaleout-telemetry"


def custom_task_type(name: str) -> str:
    """`my_command` -> `Custom_my_command` (an already prefixed name is kept)."""
    return name if name.startswith(CUSTOM_PREFIX) else CUSTOM_PREFIX + name


def is_custom_task(task_type: str) -> bool:
    return task_type.startswith(CUSTOM_PREFIX)
