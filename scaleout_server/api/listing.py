"""The list conventions every resource shares, and how each record looks on the wire.

`GET /api/v1/<res>/` takes query-string equality filters and the headers `X-Limit` (0 or absent:
all), `X-Skip`, `X-Sort-Key` and `X-Sort-Order` (asc|desc, default desc) and answers
`{"count": <matches ignoring limit>, "result": [...]}`; `GET .../count` answers a bare integer;
`GET .../{id}` answers one object or 404. The official CLI and APIClient rely on exactly this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request

from scaleout_server.errors import InvalidInput
from scaleout_server.store import records as r
from scaleout_server.store.base import Collection, ListQuery, Store
from scaleout_server.store.codec import MAX_INT, to_jsonable


def _model_extras(out: dict[str, Any]) -> None:
    out["model"] = out["model_id"]  # legacy key the older clients and dashboards read


def _client_extras(out: dict[str, Any]) -> None:
    out["combiner"] = out.get("combiner_id")
    out["combiner_preferred"] = out.get("preferred_combiner")


def _round_extras(out: dict[str, Any]) -> None:
    config = dict(out.get("round_config") or {})
    config.setdefault("session_id", out.get("session_id"))
    config.setdefault("round_id", out.get("round_id"))
    out["round_config"] = config


@dataclass(frozen=True)
class Resource:
    """One REST collection: its URL segment, store attribute and wire quirks."""

    name: str  # URL segment under /api/v1/
    attr: str  # Store attribute holding the collection
    record_type: type
    filter_aliases: Mapping[str, str] = field(default_factory=dict)  # legacy filter name -> field
    ignored_filters: frozenset[str] = frozenset()  # sent by official clients, meaningless here
    extras: Callable[[dict[str, Any]], None] | None = None

    def collection(self, store: Store) -> Collection[Any]:
        return getattr(store, self.attr)


RESOURCES: dict[str, Resource] = {
    res.name: res
    for res in (
        Resource("clients", "clients", r.ClientRecord,
                 filter_aliases={"combiner": "combiner_id", "combiner_preferred": "preferred_combiner"},
                 extras=_client_extras),
        Resource("combiners", "combiners", r.CombinerRecord),
        Resource("models", "models", r.ModelRecord, filter_aliases={"model": "model_id"},
                 ignored_filters=frozenset({"allow_training"}), extras=_model_extras),
        Resource("packages", "packages", r.PackageRecord),
        Resource("sessions", "sessions", r.SessionRecord),
        Resource("rounds", "rounds", r.RoundRecord,
                 filter_aliases={"round_config.session_id": "session_id", "round_config.round_id": "round_id"},
                 extras=_round_extras),
        Resource("updates", "updates", r.UpdateRecord),
        Resource("validations", "validations", r.ValidationRecord),
        Resource("metrics", "metrics", r.MetricRecord),
        Resource("statuses", "statuses", r.StatusRecord),
        Resource("predictions", "predictions", r.PredictionRecord),
        Resource("commands", "commands", r.CommandRecord, ignored_filters=frozenset({"parent_correlation_id"})),
        Resource("telemetry", "telemetry", r.TelemetryRecord),
        Resource("attributes", "attributes", r.AttributeRecord),
    )
}
_BY_TYPE: dict[type, Resource] = {res.record_type: res for res in RESOURCES.values()}


def to_json(record: Any) -> dict[str, Any]:
    """A record as the REST API shows it: its fields plus the legacy aliases of its resource."""
    out = to_jsonable(record)
    resource = _BY_TYPE.get(type(record))
    if resource is not None and resource.extras is not None:
        resource.extras(out)
    return out


# -- query parsing -------------------------------------------------------------------------

def int_header(request: Request, name: str) -> int:
    """A count header such as X-Limit (absent or empty: 0). Bounded by what the database holds, so
    an absurd value is a 400 naming the header rather than an overflow (500) in the query."""
    raw = request.headers.get(name)
    if raw is None or raw.strip() == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_INT:
        raise InvalidInput(f"header {name} must be an integer from 0 to {MAX_INT}, got {raw!r}")
    return value


def _descending(request: Request) -> bool:
    raw = (request.headers.get("X-Sort-Order") or "desc").strip().lower()
    if raw in ("desc", "descending", "-1"):
        return True
    if raw in ("asc", "ascending", "1"):
        return False
    raise InvalidInput(f"header X-Sort-Order must be asc or desc, got {raw!r}")


def filters_of(request: Request, resource: Resource) -> dict[str, Any]:
    """Query parameters as store filters (legacy names mapped); the store types the values
    ("null" matches a missing value) and rejects unknown fields with the list of valid ones."""
    filters: dict[str, Any] = {}
    for key, raw in request.query_params.items():
        if key in resource.ignored_filters:
            continue
        filters[resource.filter_aliases.get(key, key)] = raw
    return filters


def _sort_key(request: Request, resource: Resource) -> str | None:
    key = (request.headers.get("X-Sort-Key") or "").strip()
    if not key:
        return None
    key = resource.filter_aliases.get(key, key)
    names = {f.name for f in dataclasses.fields(resource.record_type)}
    if key == "committed_at" and key not in names and "timestamp" in names:
        return "timestamp"  # telemetry and attributes are only time-stamped
    return key


def list_query(request: Request, resource: Resource) -> ListQuery:
    return ListQuery(
        filters=filters_of(request, resource) or None,
        limit=int_header(request, "X-Limit"),
        skip=int_header(request, "X-Skip"),
        sort_key=_sort_key(request, resource),
        descending=_descending(request),
    )


# -- routes --------------------------------------------------------------------------------

def add_list_routes(router: APIRouter, resource: Resource) -> None:
    """`GET /api/v1/<res>/`, `/count`, `/{id}`; register resource-specific GET routes first."""
    base = f"/api/v1/{resource.name}"
    tag = resource.name

    def list_records(request: Request) -> dict[str, Any]:
        store: Store = request.app.state.controller.store
        total, page = resource.collection(store).list(list_query(request, resource))
        return {"count": total, "result": [to_json(rec) for rec in page]}

    def count_records(request: Request) -> int:
        store: Store = request.app.state.controller.store
        return resource.collection(store).count(filters_of(request, resource) or None)

    def get_record(request: Request, record_id: str) -> dict[str, Any]:
        store: Store = request.app.state.controller.store
        return to_json(resource.collection(store).require(record_id))

    list_records.__doc__ = (f"List {resource.name}: query-string equality filters; headers X-Limit, X-Skip, "
                            "X-Sort-Key, X-Sort-Order.")
    count_records.__doc__ = f"Count {resource.name} matching the query-string filters."
    get_record.__doc__ = f"One of the {resource.name} by id."
    router.add_api_route(f"{base}/", list_records, methods=["GET"], tags=[tag], name=f"list_{resource.name}")
    router.add_api_route(base, list_records, methods=["GET"], tags=[tag], include_in_schema=False)
    router.add_api_route(f"{base}/count", count_records, methods=["GET"], tags=[tag], name=f"count_{resource.name}")
    router.add_api_route(f"{base}/{{record_id}}", get_record, methods=["GET"], tags=[tag],
                         name=f"get_{resource.name}")
