import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import wrappers_pb2 as _wrappers_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[LogLevel]
    INFO: _ClassVar[LogLevel]
    DEBUG: _ClassVar[LogLevel]
    WARNING: _ClassVar[LogLevel]
    ERROR: _ClassVar[LogLevel]
    AUDIT: _ClassVar[LogLevel]

class ModelStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[ModelStatus]
    IN_PROGRESS: _ClassVar[ModelStatus]
    OK: _ClassVar[ModelStatus]
    FAILED: _ClassVar[ModelStatus]
NONE: LogLevel
INFO: LogLevel
DEBUG: LogLevel
WARNING: LogLevel
ERROR: LogLevel
AUDIT: LogLevel
UNKNOWN: ModelStatus
IN_PROGRESS: ModelStatus
OK: ModelStatus
FAILED: ModelStatus

class Response(_message.Message):
    __slots__ = ("response", "parameters")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    response: str
    parameters: str
    def __init__(self, response: _Optional[str] = ..., parameters: _Optional[str] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("client_id", "status", "log_level", "timestamp", "type")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LOG_LEVEL_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    status: str
    log_level: LogLevel
    timestamp: _timestamp_pb2.Timestamp
    type: str
    def __init__(self, client_id: _Optional[str] = ..., status: _Optional[str] = ..., log_level: _Optional[_Union[LogLevel, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[str] = ...) -> None: ...

class ModelUpdate(_message.Message):
    __slots__ = ("client_id", "model_id", "model_update_id", "correlation_id", "timestamp", "meta", "config", "round_id", "session_id")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    model_id: str
    model_update_id: str
    correlation_id: str
    timestamp: _timestamp_pb2.Timestamp
    meta: str
    config: str
    round_id: str
    session_id: str
    def __init__(self, client_id: _Optional[str] = ..., model_id: _Optional[str] = ..., model_update_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., meta: _Optional[str] = ..., config: _Optional[str] = ..., round_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ModelValidation(_message.Message):
    __slots__ = ("client_id", "model_id", "data", "correlation_id", "timestamp", "session_id")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    model_id: str
    data: str
    correlation_id: str
    timestamp: _timestamp_pb2.Timestamp
    session_id: str
    def __init__(self, client_id: _Optional[str] = ..., model_id: _Optional[str] = ..., data: _Optional[str] = ..., correlation_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_id: _Optional[str] = ...) -> None: ...

class ModelPrediction(_message.Message):
    __slots__ = ("client_id", "model_id", "data", "correlation_id", "timestamp", "prediction_id")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    model_id: str
    data: str
    correlation_id: str
    timestamp: _timestamp_pb2.Timestamp
    prediction_id: str
    def __init__(self, client_id: _Optional[str] = ..., model_id: _Optional[str] = ..., data: _Optional[str] = ..., correlation_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., prediction_id: _Optional[str] = ...) -> None: ...

class ModelMetric(_message.Message):
    __slots__ = ("client_id", "metrics", "timestamp", "step", "model_id", "round_id", "session_id")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    metrics: _containers.RepeatedCompositeFieldContainer[MetricElem]
    timestamp: _timestamp_pb2.Timestamp
    step: _wrappers_pb2.UInt32Value
    model_id: str
    round_id: str
    session_id: str
    def __init__(self, client_id: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[MetricElem, _Mapping]]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., model_id: _Optional[str] = ..., round_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class MetricElem(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: float
    def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class AttributeMessage(_message.Message):
    __slots__ = ("client_id", "attributes", "timestamp")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    attributes: _containers.RepeatedCompositeFieldContainer[AttributeElem]
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, client_id: _Optional[str] = ..., attributes: _Optional[_Iterable[_Union[AttributeElem, _Mapping]]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AttributeElem(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class TelemetryMessage(_message.Message):
    __slots__ = ("client_id", "telemetries", "timestamp", "record_id")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TELEMETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    telemetries: _containers.RepeatedCompositeFieldContainer[TelemetryElem]
    timestamp: _timestamp_pb2.Timestamp
    record_id: str
    def __init__(self, client_id: _Optional[str] = ..., telemetries: _Optional[_Iterable[_Union[TelemetryElem, _Mapping]]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., record_id: _Optional[str] = ...) -> None: ...

class TelemetryElem(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: float
    def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class TelemetryRecord(_message.Message):
    __slots__ = ("telemetry_id", "client_id", "timestamp", "key", "payload")
    TELEMETRY_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    telemetry_id: str
    client_id: str
    timestamp: _timestamp_pb2.Timestamp
    key: str
    payload: str
    def __init__(self, telemetry_id: _Optional[str] = ..., client_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key: _Optional[str] = ..., payload: _Optional[str] = ...) -> None: ...

class AttributeRecord(_message.Message):
    __slots__ = ("attribute_id", "client_id", "timestamp", "key", "payload")
    ATTRIBUTE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    attribute_id: str
    client_id: str
    timestamp: _timestamp_pb2.Timestamp
    key: str
    payload: str
    def __init__(self, attribute_id: _Optional[str] = ..., client_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key: _Optional[str] = ..., payload: _Optional[str] = ...) -> None: ...

class RecordAck(_message.Message):
    __slots__ = ("record_ids",)
    RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    record_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, record_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class InferenceResult(_message.Message):
    __slots__ = ("inference_result_id", "node_id", "timestamp", "key", "payload", "inference_id", "model_id")
    INFERENCE_RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    inference_result_id: str
    node_id: str
    timestamp: _timestamp_pb2.Timestamp
    key: str
    payload: str
    inference_id: str
    model_id: str
    def __init__(self, inference_result_id: _Optional[str] = ..., node_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key: _Optional[str] = ..., payload: _Optional[str] = ..., inference_id: _Optional[str] = ..., model_id: _Optional[str] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("client_id", "model_id", "data", "correlation_id", "timestamp", "session_id", "round_id", "type", "status")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    model_id: str
    data: str
    correlation_id: str
    timestamp: str
    session_id: str
    round_id: str
    type: str
    status: str
    def __init__(self, client_id: _Optional[str] = ..., model_id: _Optional[str] = ..., data: _Optional[str] = ..., correlation_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., session_id: _Optional[str] = ..., round_id: _Optional[str] = ..., type: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ActivityReport(_message.Message):
    __slots__ = ("node_id", "correlation_id", "status", "done", "response", "command_type", "parameters", "started_at", "completed_at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    correlation_id: str
    status: str
    done: bool
    response: str
    command_type: str
    parameters: str
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., status: _Optional[str] = ..., done: _Optional[bool] = ..., response: _Optional[str] = ..., command_type: _Optional[str] = ..., parameters: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("client_id", "memory_utilisation", "cpu_utilisation", "heartbeat_interval_ms")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTILISATION_FIELD_NUMBER: _ClassVar[int]
    CPU_UTILISATION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    memory_utilisation: float
    cpu_utilisation: float
    heartbeat_interval_ms: int
    def __init__(self, client_id: _Optional[str] = ..., memory_utilisation: _Optional[float] = ..., cpu_utilisation: _Optional[float] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class ClientAvailableMessage(_message.Message):
    __slots__ = ("client_id", "data", "timestamp")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    data: str
    timestamp: str
    def __init__(self, client_id: _Optional[str] = ..., data: _Optional[str] = ..., timestamp: _Optional[str] = ...) -> None: ...

class ClientAnnounceRequest(_message.Message):
    __slots__ = ("client_id", "type", "parameters")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    type: str
    parameters: str
    def __init__(self, client_id: _Optional[str] = ..., type: _Optional[str] = ..., parameters: _Optional[str] = ...) -> None: ...

class BacklogReport(_message.Message):
    __slots__ = ("client_id", "backlog_total", "backlog_dropped_total", "backlog_oldest_age_ms")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_DROPPED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_OLDEST_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    backlog_total: int
    backlog_dropped_total: int
    backlog_oldest_age_ms: float
    def __init__(self, client_id: _Optional[str] = ..., backlog_total: _Optional[int] = ..., backlog_dropped_total: _Optional[int] = ..., backlog_oldest_age_ms: _Optional[float] = ...) -> None: ...

class ClientReport(_message.Message):
    __slots__ = ("client_id", "reports", "poll_interval_ms", "skip_polling_tasks")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    POLL_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    SKIP_POLLING_TASKS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    reports: _containers.RepeatedCompositeFieldContainer[ActivityReport]
    poll_interval_ms: int
    skip_polling_tasks: bool
    def __init__(self, client_id: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[ActivityReport, _Mapping]]] = ..., poll_interval_ms: _Optional[int] = ..., skip_polling_tasks: _Optional[bool] = ...) -> None: ...

class CombinerDirective(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskRequest]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskRequest, _Mapping]]] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ModelResponse(_message.Message):
    __slots__ = ("status", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: ModelStatus
    message: str
    def __init__(self, status: _Optional[_Union[ModelStatus, str]] = ..., message: _Optional[str] = ...) -> None: ...

class TransferOffer(_message.Message):
    __slots__ = ("direction", "model_id", "size", "digests")
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    direction: str
    model_id: str
    size: int
    digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, direction: _Optional[str] = ..., model_id: _Optional[str] = ..., size: _Optional[int] = ..., digests: _Optional[_Iterable[str]] = ...) -> None: ...

class TransferTicket(_message.Message):
    __slots__ = ("ticket", "port", "tls", "size", "reason", "digest")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    port: int
    tls: bool
    size: int
    reason: str
    digest: str
    def __init__(self, ticket: _Optional[str] = ..., port: _Optional[int] = ..., tls: _Optional[bool] = ..., size: _Optional[int] = ..., reason: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class RoundSpec(_message.Message):
    __slots__ = ("session_id", "round_id", "model_id", "helper_type", "client_ids", "aggregator", "aggregator_kwargs", "round_timeout", "buffer_size", "client_settings", "delete_models", "client_settings_by_client")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    HELPER_TYPE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_KWARGS_FIELD_NUMBER: _ClassVar[int]
    ROUND_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    DELETE_MODELS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SETTINGS_BY_CLIENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    round_id: str
    model_id: str
    helper_type: str
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    aggregator: str
    aggregator_kwargs: str
    round_timeout: float
    buffer_size: int
    client_settings: str
    delete_models: bool
    client_settings_by_client: str
    def __init__(self, session_id: _Optional[str] = ..., round_id: _Optional[str] = ..., model_id: _Optional[str] = ..., helper_type: _Optional[str] = ..., client_ids: _Optional[_Iterable[str]] = ..., aggregator: _Optional[str] = ..., aggregator_kwargs: _Optional[str] = ..., round_timeout: _Optional[float] = ..., buffer_size: _Optional[int] = ..., client_settings: _Optional[str] = ..., delete_models: _Optional[bool] = ..., client_settings_by_client: _Optional[str] = ...) -> None: ...

class UpdateInfo(_message.Message):
    __slots__ = ("client_id", "model_update_id", "correlation_id", "num_examples", "meta", "client_name")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    model_update_id: str
    correlation_id: str
    num_examples: float
    meta: str
    client_name: str
    def __init__(self, client_id: _Optional[str] = ..., model_update_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., num_examples: _Optional[float] = ..., meta: _Optional[str] = ..., client_name: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("client_id", "correlation_id", "status", "response", "client_name")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    correlation_id: str
    status: str
    response: str
    client_name: str
    def __init__(self, client_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., status: _Optional[str] = ..., response: _Optional[str] = ..., client_name: _Optional[str] = ...) -> None: ...

class RoundOutcome(_message.Message):
    __slots__ = ("model_id", "num_examples", "updates", "tasks", "updates_expected", "time_wait", "time_aggregation", "error", "aborted")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    UPDATES_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    TIME_WAIT_FIELD_NUMBER: _ClassVar[int]
    TIME_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    num_examples: float
    updates: _containers.RepeatedCompositeFieldContainer[UpdateInfo]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskResult]
    updates_expected: int
    time_wait: float
    time_aggregation: float
    error: str
    aborted: bool
    def __init__(self, model_id: _Optional[str] = ..., num_examples: _Optional[float] = ..., updates: _Optional[_Iterable[_Union[UpdateInfo, _Mapping]]] = ..., tasks: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ..., updates_expected: _Optional[int] = ..., time_wait: _Optional[float] = ..., time_aggregation: _Optional[float] = ..., error: _Optional[str] = ..., aborted: _Optional[bool] = ...) -> None: ...

class TaskBatchSpec(_message.Message):
    __slots__ = ("session_id", "round_id", "model_id", "type", "data", "client_ids", "timeout", "batch_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    round_id: str
    model_id: str
    type: str
    data: str
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    timeout: float
    batch_id: str
    def __init__(self, session_id: _Optional[str] = ..., round_id: _Optional[str] = ..., model_id: _Optional[str] = ..., type: _Optional[str] = ..., data: _Optional[str] = ..., client_ids: _Optional[_Iterable[str]] = ..., timeout: _Optional[float] = ..., batch_id: _Optional[str] = ...) -> None: ...

class TaskBatchOutcome(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("session_id", "reason", "conclude")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONCLUDE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    reason: str
    conclude: bool
    def __init__(self, session_id: _Optional[str] = ..., reason: _Optional[str] = ..., conclude: _Optional[bool] = ...) -> None: ...

class ClientListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ActiveClient(_message.Message):
    __slots__ = ("client_id", "name", "busy", "last_seen")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    name: str
    busy: bool
    last_seen: float
    def __init__(self, client_id: _Optional[str] = ..., name: _Optional[str] = ..., busy: _Optional[bool] = ..., last_seen: _Optional[float] = ...) -> None: ...

class ClientList(_message.Message):
    __slots__ = ("clients",)
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[ActiveClient]
    def __init__(self, clients: _Optional[_Iterable[_Union[ActiveClient, _Mapping]]] = ...) -> None: ...
