"""Typed records that cross the store boundary.

Plain dataclasses: the REST layer serialises them, the session runner and combiner
bridge build them, and every store backend maps them to its own storage. Times are
timezone-aware UTC datetimes; nested structures are plain JSON-able dicts/lists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class ClientRecord:
    client_id: str
    name: str
    combiner_id: str | None = None
    status: str = "offline"  # online | offline
    package: str = "remote"  # local | remote
    client_version: str | None = None
    preferred_combiner: str | None = None
    ip: str | None = None
    package_checksum: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)
    last_seen: datetime | None = None
    committed_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass
class CombinerRecord:
    combiner_id: str
    name: str
    host: str
    port: int
    public_hostname: str | None = None
    status: str = "online"
    load: int = 0  # connected clients, as last reported
    last_seen: datetime | None = None
    committed_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    grpc_secure: bool = False  # serves gRPC over TLS: clients are told to dial it with TLS


@dataclass
class ModelRecord:
    model_id: str
    parent_model: str | None = None
    session_id: str | None = None
    round_id: str | None = None
    name: str | None = None
    helper_type: str | None = None
    size: int = 0
    checksum: str | None = None
    committed_at: datetime = field(default_factory=utcnow)


@dataclass
class PackageRecord:
    package_id: str
    name: str
    file_name: str
    storage_file_name: str
    checksum: str
    size: int = 0
    description: str = ""
    helper: str = "numpyhelper"
    active: bool = False
    committed_at: datetime = field(default_factory=utcnow)
    signature: str | None = None  # base64 Ed25519 signature of the checksum (scaleoututil.signing), if signed


@dataclass
class SessionRecord:
    session_id: str
    name: str
    status: str  # scaleoututil.protocol.SessionStatus
    session_config: dict[str, Any]
    seed_model_id: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    committed_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass
class RoundRecord:
    round_id: str
    session_id: str
    round_number: int  # 1-based within the session
    status: str  # scaleoututil.protocol.RoundStatus
    model_id: str | None = None  # global model this round started from
    new_model_id: str | None = None  # global model this round produced
    round_config: dict[str, Any] = field(default_factory=dict)
    round_data: dict[str, Any] = field(default_factory=dict)  # timings, counts
    combiners: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    committed_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass
class UpdateRecord:
    """One client's model update: the metadata its train callback returned."""

    update_id: str  # the model_update_id the client uploaded under
    round_id: str
    session_id: str
    client_id: str
    model_id: str | None = None  # the global model it was trained from
    correlation_id: str | None = None
    num_examples: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    committed_at: datetime = field(default_factory=utcnow)


@dataclass
class Sender:
    client_id: str | None = None
    name: str | None = None
    role: str = "client"


@dataclass
class ValidationRecord:
    validation_id: str
    model_id: str
    data: dict[str, Any]
    sender: Sender
    correlation_id: str | None = None
    session_id: str | None = None
    round_id: str | None = None
    timestamp: datetime = field(default_factory=utcnow)
    committed_at: datetime = field(default_factory=utcnow)


@dataclass
class MetricRecord:
    metric_id: str
    key: str
    value: float
    sender: Sender
    step: int | None = None
    model_id: str | None = None
    round_id: str | None = None
    session_id: str | None = None
    timestamp: datetime = field(default_factory=utcnow)
    committed_at: datetime = field(default_factory=utcnow)


@dataclass
class StatusRecord:
    status_id: str
    status: str
    sender: Sender
    log_level: str = "INFO"
    type: str | None = None
    correlation_id: str | None = None
    session_id: str | None = None
    round_id: str | None = None
    data: dict[str, Any] | None = None
    timestamp: datetime = field(default_factory=utcnow)
    committed_at: datetime = field(default_factory=utcnow)


@dataclass
class PredictionRecord:
    prediction_record_id: str
    prediction_id: str  # the prediction run
    model_id: str
    sender: Sender
    data: Any = None
    correlation_id: str | None = None
    timestamp: datetime = field(default_factory=utcnow)
    committed_at: datetime = field(default_factory=utcnow)


@dataclass
class CommandRecord:
    """A custom command (or other ad-hoc task batch) sent to clients, with their results."""

    command_id: str
    command_type: str
    parameters: dict[str, Any] = field(default_factory=dict)
    client_ids: list[str] = field(default_factory=list)
    status: str = "Running"  # Running | Finished | Failed
    results: list[dict[str, Any]] = field(default_factory=list)
    committed_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass
class TelemetryRecord:
    telemetry_id: str
    client_id: str
    key: str
    value: Any
    timestamp: datetime = field(default_factory=utcnow)


@dataclass
class AttributeRecord:
    attribute_id: str
    client_id: str
    key: str
    value: Any
    timestamp: datetime = field(default_factory=utcnow)


@dataclass
class UploadRecord:
    """A chunked file upload in progress (`/api/v1/file-upload/...`)."""

    upload_id: str
    file_name: str
    file_size: int
    chunk_size: int
    received_bytes: int = 0
    chunks: int = 0
    status: str = "open"  # open | complete | aborted
    file_token: str | None = None
    committed_at: datetime = field(default_factory=utcnow)
