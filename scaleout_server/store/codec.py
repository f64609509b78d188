"""JSON encoding of store records, for the REST API and the combiner -> controller event feed.

One codec for every record type: datetimes become ISO-8601 strings, nested dataclasses
become dicts, and `decode` rebuilds the typed record from what `encode` produced.
"""

from __future__ import annotations

import dataclasses
import functools
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
    """Rebuild a record; ValueError naming the field when a value has the wrong JSON type, so that
    a malformed record is refused here rather than failing (as a 500) when it is stored."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    kwargs: dict[str, Any] = {}
    for name, hint in _field_hints(cls):
        if name in data:
            kwargs[name] = _typed(hint, data[name], name)
    return cls(**kwargs)


@functools.cache
def _field_hints(cls: type) -> tuple[tuple[str, Any], ...]:
    """Each field's name and type, resolved once per class: resolving the string annotations
    (`from __future__ import annotations`) for every record was most of the cost of decoding a batch."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


# the widest integer every store backend holds (64-bit signed)
MAX_INT = 2**63 - 1


def _typed(hint: Any, value: Any, name: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is not type(None):
                return _typed(arg, value, name)
    if hint is datetime:
        if isinstance(value, datetime):
            return value
        if isinstance(value, str):
            return datetime.fromisoformat(value)
        raise ValueError(f"{name}: expected an ISO-8601 date and time, got {value!r}")
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_jsonable(hint, value)
    if hint is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    expected = _JSON_TYPES.get(origin or hint)
    if expected is not None and (not isinstance(value, expected[0]) or isinstance(value, bool) and hint is not bool):
        raise ValueError(f"{name}: expected {expected[1]}, got {type(value).__name__}")
    if hint is int and not -MAX_INT <= value <= MAX_INT:
        raise ValueError(f"{name}: {value} is out of range")
    return value


_JSON_TYPES: dict[Any, tuple[type | tuple[type, ...], str]] = {
    str: (str, "a string"),
    int: (int, "an integer"),
    float: ((int, float), "a number"),
    bool: (bool, "true or false"),
    dict: (dict, "an object"),
    list: (list, "a list"),
}
