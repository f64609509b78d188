"""Request bodies of the REST API.

Field names follow what the official CLI and APIClient send. Unknown keys are ignored (clients
of several versions talk to us) except where noted; rule checks (known aggregator, rounds >= 1,
...) belong to the controller, so the messages are the same whatever the entry point.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ClientIds = list[str] | str | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TokenRequest(_Body):
    refresh_token: str | None = None
    role: str | None = None


class ClientAdd(_Body):
    client_id: str | None = None
    name: str | None = None
    preferred_combiner: str | None = None
    combiner_preferred: str | None = None  # the pre-1.0 spelling
    package: str = "remote"
    client_version: str | None = None


# a host clients and the controller can dial: DNS name, IPv4 or (bracketed or bare) IPv6 literal
HOSTNAME_PATTERN = r"^[A-Za-z0-9._:\[\]-]{1,253}$"


class CombinerRegister(_Body):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    host: str = Field(pattern=HOSTNAME_PATTERN)
    port: int = Field(gt=0, lt=65536)
    public_hostname: str | None = Field(default=None, pattern=HOSTNAME_PATTERN)
    grpc_secure: bool = False  # the combiner serves gRPC over TLS


class CombinerPatch(_Body):
    public_hostname: str


class CombinerEvents(_Body):
    events: list[dict[str, Any]]


class ActiveHelper(_Body):
    helper: str


class UploadInit(_Body):
    file_name: str = Field(min_length=1)
    file_size: int = Field(ge=0)
    chunk_size: int = Field(gt=0)


class SessionCreate(_Body):
    name: str | None = None
    seed_model_id: str | None = None
    session_config: dict[str, Any] = Field(default_factory=dict)


class SessionStart(_Body):
    session_id: str
    rounds: int | None = None
    round_timeout: float | None = None


class SessionPatch(_Body):
    status: str


class ControlStop(_Body):
    session_id: str | None = None


class RunCommand(BaseModel):
    """Extra top-level keys are command parameters: the official APIClient merges them in."""

    model_config = ConfigDict(extra="allow")

    command_type: str = Field(min_length=1)
    parameters: dict[str, Any] | None = None
    client_ids: ClientIds = None
    timeout: float | None = None
    synchronous: bool | None = None
    blocking: bool | None = None


class StartPrediction(_Body):
    prediction_id: str | None = None
    model_id: str | None = None
    client_ids: ClientIds = None
    parameters: dict[str, Any] | None = None
    timeout: float | None = None
    synchronous: bool | None = None
    blocking: bool | None = None


class StartValidation(_Body):
    session_id: str | None = None
    model_id: str
    client_ids: ClientIds = None
    timeout: float | None = None
    synchronous: bool | None = None
    blocking: bool | None = None


class CurrentAttributes(_Body):
    node_ids: list[str] | str | None = None
    client_ids: list[str] | str | None = None


class StageModel(_Body):
    client_ids: ClientIds = None
    timeout: float | None = None
    synchronous: bool | None = None


class CommandEnd(_Body):
    correlation_id: str | None = None  # the official APIClient repeats the path's id here


class SenderIn(_Body):
    client_id: str | None = None
    name: str | None = None
    role: str | None = None


class AttributeIn(_Body):
    """The official AttributeDTO: `{key, value, entity_id}` (node_id / client_id / sender.client_id too)."""

    key: str = Field(min_length=1, max_length=256)
    value: Any = None
    entity_id: str | None = None
    node_id: str | None = None
    client_id: str | None = None
    sender: SenderIn | None = None

    def entity(self) -> str | None:
        for candidate in (self.entity_id, self.node_id, self.client_id, self.sender.client_id if self.sender else None):
            if candidate and candidate.strip():
                return candidate.strip()
        return None


class AttributeTrail(_Body):
    entity_id: str | None = None
    node_id: str | None = None


class StatusIn(_Body):
    """The official StatusDTO: `{status, type, log_level, sender: {client_id, name, role}, ...}`."""

    status: str = Field(min_length=1)
    type: str | None = None
    log_level: str = "INFO"
    sender: SenderIn | None = None
    session_id: str | None = None
    round_id: str | None = None
    correlation_id: str | None = None
    data: dict[str, Any] | None = None
