"""JSON encoding of store records, for the REST API and the combiner -> controller event feed.

One codec for every record type: datetimes become ISO-8601 strings, nested dataclasses
become dicts, and `decode` rebuilds the typed record from what `encode` produced.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from typing import Any

from scaleout_server.store import records as r

RECORD_TYPES: dict[str, type] = {
    "client": r.ClientRecord,
    "combiner": r.CombinerRecord,
    "model": r.ModelRecord,
    "package": r.PackageRecord,
    "session": r.SessionRecord,
    "round": r.RoundRecord,
    "update": r.UpdateRecord,
    "validation": r.ValidationRecord,
    "metric": r.MetricRecord,
    "status": r.StatusRecord,
    "prediction": r.PredictionRecord,
    "command": r.CommandRecord,
    "telemetry": r.TelemetryRecord,
    "attribute": r.AttributeRecord,
    "upload": r.UploadRecord,
}
KIND_OF: dict[type, str] = {cls: kind for kind, cls in RECORD_TYPES.items()}


def to_jsonable(record: Any) -> dict[str, Any]:
    """A record as a JSON-able dict (field names unchanged)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        out[f.name] = _plain(getattr(record, f.name))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def encode(record: Any) -> dict[str, Any]:
    """`{"kind": ..., "data": {...}}`, decodable by `decode`."""
    return {"kind": KIND_OF[type(record)], "data": to_jsonable(record)}


def decode(message: dict[str, Any]) -> Any:
    kind = message.get("kind")
    cls = RECORD_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(sorted(RECORD_TYPES))}")
    return from_jsonable(cls, message.get("data") or {})


def from_jsonable(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _typed(hints[f.name], data[f.name])
    return cls(**kwargs)


def _typed(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is not type(None):
                return _typed(arg, value)
    if hint is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_jsonable(hint, value)
    return value
