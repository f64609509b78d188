"""How API records are shown: rich tables for people, the exact records as JSON or YAML for scripts.

`-o json` / `-o yaml` print the list reply's `result` (or the single object) unchanged, so they can be
piped into `jq`; the human tables pick a few meaningful columns per resource.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

Record = dict[str, Any]
Column = tuple[str, Callable[[Record], Any]]

STATUS_STYLES = {
    "finished": "green", "completed": "green", "success": "green", "online": "green",
    "running": "cyan", "validating": "cyan", "pending": "yellow", "created": "yellow", "new": "yellow",
    "stopped": "yellow", "interrupted": "yellow", "timeout": "red", "failed": "red", "offline": "dim",
}


def console() -> Console:
    """A console on the current stdout; wide when not a terminal so that piped tables do not wrap."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    width = int(os.environ.get("COLUMNS", "0") or 0) or 200
    return Console(highlight=False, width=width, soft_wrap=False)


# -- value formatting -------------------------------------------------------------------------------------
def dig(record: Any, path: str, default: Any = None) -> Any:
    """`dig(r, "sender.name")`: a nested value, or `default` when any step is missing."""
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def short(value: Any, length: int = 8) -> str:
    """The first characters of an id: enough to recognise it in a table."""
    return "" if value in (None, "") else str(value)[:length]


def when(value: Any) -> str:
    """An ISO timestamp as local `YYYY-MM-DD HH:MM:SS`."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def size(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)


def number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def seconds(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    if value < 60:
        return f"{value:.1f}s"
    minutes, rest = divmod(int(round(value)), 60)
    return f"{minutes}m{rest:02d}s"


def compact(data: Any, limit: int = 80) -> str:
    """A dict as `key=value key=value` (numbers shortened), anything else as JSON, cut at `limit`."""
    if isinstance(data, dict):
        text = " ".join(f"{k}={number(v) if isinstance(v, (int, float)) else json.dumps(v, default=str)}"
                        for k, v in data.items())
    elif data is None:
        text = ""
    else:
        text = data if isinstance(data, str) else json.dumps(data, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_text(value: Any) -> Text:
    label = "" if value is None else str(value)
    return Text(label, style=STATUS_STYLES.get(label.lower(), ""))


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- rounds: counts and duration, shared by `round list` and the session summary -------------------------
_UPDATE_KEYS = ("updates_received", "num_updates", "updates", "received", "nr_updates", "data.nr_received_updates",
                "data.aggregation_time.nr_aggregated_models")
_EXPECTED_KEYS = ("updates_expected", "expected_updates", "num_expected", "expected", "nr_expected_updates",
                  "data.nr_expected_updates", "clients", "num_clients", "clients_selected")
_CLIENT_KEYS = ("clients", "num_clients", "clients_selected")


def _count(record: Record, keys: Sequence[str]) -> int | None:
    for key in keys:
        value = dig(record, key)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            return int(value)
        if isinstance(value, list):
            return len(value)
    return None


def round_counts(round_: Record) -> tuple[int | None, int | None]:
    """(updates received, updates expected) of a round, summed over its combiners."""
    updates: int | None = None
    expected: int | None = None
    for entry in round_.get("combiners") or []:
        if not isinstance(entry, dict):
            continue
        got, want = _count(entry, _UPDATE_KEYS), _count(entry, _EXPECTED_KEYS)
        if got is not None:
            updates = (updates or 0) + got
        if want is not None:
            expected = (expected or 0) + want
    data = round_.get("round_data") or {}
    if updates is None:
        updates = _count(data, _UPDATE_KEYS)
    if expected is None:
        expected = _count(data, _EXPECTED_KEYS)
    return updates, expected


def round_duration(round_: Record, now: datetime | None = None) -> float | None:
    """Seconds the round took (or has taken so far while it runs)."""
    data = round_.get("round_data") or {}
    for key in ("duration", "time_total", "round_duration"):
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    start = parse_time(round_.get("started_at"))
    if start is None:
        return None
    end = parse_time(round_.get("finished_at"))
    if end is None:
        if str(round_.get("status", "")).lower() not in ("running", "validating", "pending"):
            return None
        end = now or datetime.now(UTC)
    return max(0.0, (end - start).total_seconds())


def round_clients(round_: Record) -> int | None:
    """How many clients were asked to train in the round."""
    counts = [_count(e, _CLIENT_KEYS) for e in round_.get("combiners") or [] if isinstance(e, dict)]
    known = [c for c in counts if c is not None]
    if known:
        return sum(known)
    selected = _count(round_.get("round_data") or {}, _CLIENT_KEYS)
    return selected if selected is not None else round_counts(round_)[1]


def validation_cell(round_: Record) -> str:
    """'validated/asked' from round_data.validation (clients that sent metrics / clients asked), with the
    clients not asked because they do not validate; "" for a round without validation."""
    data = dig(round_, "round_data.validation")
    if not isinstance(data, dict) or not isinstance(data.get("clients"), int):
        return ""
    validated = data.get("validated", data.get("completed"))
    cell = f"{validated if isinstance(validated, int) else '?'}/{data['clients']}"
    skipped = data.get("skipped")
    return f"{cell} ({len(skipped)} skipped)" if isinstance(skipped, list) and skipped else cell


def _sender(record: Record) -> str:
    """Who sent a status, metric, validation or prediction: the client's name, else its short id."""
    return dig(record, "sender.name") or short(dig(record, "sender.client_id"))


def _clients_cell(round_: Record) -> str:
    clients = round_clients(round_)
    return "" if clients is None else str(clients)


def _updates_cell(round_: Record) -> str:
    updates, expected = round_counts(round_)
    if updates is None:
        return ""
    return f"{updates}/{expected}" if expected is not None else str(updates)


def _command_results(command: Record) -> str:
    results = command.get("results") or []
    parts = [f"{r.get('client_name') or short(r.get('client_id'))}: {r.get('status', '')}"
             for r in results if isinstance(r, dict)]
    return ", ".join(parts)


# -- column specs per resource ----------------------------------------------------------------------------
COLUMNS: dict[str, list[Column]] = {
    "sessions": [
        ("ID", lambda r: r.get("session_id")),
        ("Name", lambda r: r.get("name")),
        ("Status", lambda r: status_text(r.get("status"))),
        ("Rounds", lambda r: dig(r, "session_config.rounds")),
        ("Aggregator", lambda r: dig(r, "session_config.aggregator")),
        ("Created", lambda r: when(r.get("committed_at"))),
    ],
    "rounds": [
        ("ID", lambda r: r.get("round_id")),
        ("Session", lambda r: short(r.get("session_id"))),
        ("Round", lambda r: r.get("round_number")),
        ("Status", lambda r: status_text(r.get("status"))),
        ("Clients", _clients_cell),
        ("Updates", _updates_cell),
        ("Validated", validation_cell),
        ("Duration", lambda r: seconds(round_duration(r))),
        ("New model", lambda r: short(r.get("new_model_id"))),
    ],
    "models": [
        ("ID", lambda r: r.get("model_id")),
        ("Parent", lambda r: short(r.get("parent_model"))),
        ("Session", lambda r: short(r.get("session_id"))),
        ("Round", lambda r: short(r.get("round_id"))),
        ("Size", lambda r: size(r.get("size"))),
        ("Created", lambda r: when(r.get("committed_at"))),
    ],
    "validations": [
        ("ID", lambda r: r.get("validation_id")),
        ("Model", lambda r: short(r.get("model_id"))),
        ("Client", _sender),
        ("Round", lambda r: short(r.get("round_id"))),
        ("Metrics", lambda r: compact(r.get("data"))),
    ],
    "clients": [
        ("ID", lambda r: r.get("client_id")),
        ("Name", lambda r: r.get("name")),
        ("Status", lambda r: status_text(r.get("status"))),
        ("Combiner", lambda r: short(r.get("combiner_id"))),
        ("Last seen", lambda r: when(r.get("last_seen"))),
    ],
    "combiners": [
        ("ID", lambda r: r.get("combiner_id")),
        ("Name", lambda r: r.get("name")),
        ("Address", lambda r: f"{r.get('host', '')}:{r.get('port', '')}"),
        ("Public hostname", lambda r: r.get("public_hostname")),
        ("Status", lambda r: status_text(r.get("status"))),
        ("Clients", lambda r: r.get("load")),
        ("Last seen", lambda r: when(r.get("last_seen"))),
    ],
    "packages": [
        ("Active", lambda r: Text("*", style="green bold") if r.get("active") else ""),
        ("ID", lambda r: r.get("package_id")),
        ("Name", lambda r: r.get("name")),
        ("File", lambda r: r.get("file_name")),
        ("Helper", lambda r: r.get("helper")),
        ("Size", lambda r: size(r.get("size"))),
        ("Created", lambda r: when(r.get("committed_at"))),
    ],
    "statuses": [
        ("ID", lambda r: r.get("status_id")),
        ("Time", lambda r: when(r.get("timestamp"))),
        ("Sender", _sender),
        ("Level", lambda r: r.get("log_level")),
        ("Type", lambda r: r.get("type")),
        ("Status", lambda r: compact(r.get("status"), 100)),
    ],
    "metrics": [
        ("Time", lambda r: when(r.get("timestamp"))),
        ("Sender", _sender),
        ("Key", lambda r: r.get("key")),
        ("Value", lambda r: number(r.get("value"))),
        ("Step", lambda r: r.get("step")),
        ("Round", lambda r: short(r.get("round_id"))),
        ("Session", lambda r: short(r.get("session_id"))),
    ],
    "predictions": [
        ("Prediction", lambda r: r.get("prediction_id")),
        ("Model", lambda r: short(r.get("model_id"))),
        ("Client", _sender),
        ("Data", lambda r: compact(r.get("data"))),
        ("Time", lambda r: when(r.get("timestamp"))),
    ],
    "tokens": [
        ("ID", lambda r: r.get("token_id")),
        ("Role", lambda r: r.get("role")),
        ("Name", lambda r: r.get("name")),
        ("Bound to", lambda r: r.get("subject")),
        ("Status", lambda r: status_text(r.get("status"))),
        ("Created", lambda r: when(r.get("created_at"))),
        ("Expires", lambda r: r.get("expires_at") or "never"),
    ],
    "commands": [
        ("ID", lambda r: r.get("command_id")),
        ("Type", lambda r: r.get("command_type")),
        ("Status", lambda r: status_text(r.get("status"))),
        ("Clients", lambda r: len(r.get("results") or r.get("client_ids") or [])),
        ("Results", _command_results),
        ("Created", lambda r: when(r.get("committed_at"))),
    ],
}


def _cell(value: Any) -> Text | str:
    if isinstance(value, Text):
        return value
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return compact(value)
    return number(value) if isinstance(value, float) else str(value)


def build_table(kind: str, records: Sequence[Record], title: str | None = None) -> Table:
    """A table of `records` with the columns chosen for `kind` (all keys for an unknown kind)."""
    columns = COLUMNS.get(kind)
    if columns is None:
        keys: list[str] = []
        for record in records:
            keys.extend(k for k in record if k not in keys)
        columns = [(key, (lambda k: lambda r: r.get(k))(key)) for key in keys]
    table = Table(title=title, title_justify="left", header_style="bold")
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for record in records:
        table.add_row(*(_cell(getter(record)) for _, getter in columns))
    return table


def object_table(record: Record) -> Table:
    """A single record as `field | value` rows (nested values as compact JSON)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in record.items():
        if key in ("status",) and isinstance(value, str):
            table.add_row(key, status_text(value))
        elif isinstance(value, (dict, list)):
            table.add_row(key, json.dumps(value, default=str))
        elif isinstance(value, str) and key.endswith(("_at", "timestamp", "last_seen")):
            table.add_row(key, f"{value}  ({when(value)})" if value else "")
        else:
            table.add_row(key, _cell(value))
    return table


# -- entry points used by the commands --------------------------------------------------------------------
def dump(data: Any, fmt: str) -> None:
    """The data itself, as JSON or YAML, on stdout."""
    if fmt == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    else:
        click.echo(json.dumps(data, indent=2, default=str))


def show_list(kind: str, body: Record, fmt: str = "human", base_url: str | None = None) -> None:
    """A list reply `{"count", "result"}`: machine formats print exactly `result`."""
    records = body.get("result") or []
    if fmt != "human":
        dump(records, fmt)
        return
    total = body.get("count", len(records))
    out = console()
    if not records:
        where = f" at {base_url}" if base_url else ""
        out.print(f"No {kind} found{where}.")
        return
    shown = f"{len(records)} of {total}" if isinstance(total, int) and total != len(records) else str(len(records))
    out.print(build_table(kind, records, title=f"{kind.capitalize()} ({shown})"))


def show_object(kind: str, record: Any, fmt: str = "human") -> None:
    """One record (a get reply)."""
    if fmt != "human":
        dump(record, fmt)
        return
    out = console()
    if not isinstance(record, dict):
        out.print(str(record))
        return
    if kind == "commands" and record.get("results"):
        out.print(object_table({k: v for k, v in record.items() if k != "results"}))
        out.print(results_table(record["results"]))
    else:
        out.print(object_table(record))


def results_table(results: Sequence[Record]) -> Table:
    """Per-client results of a command/prediction: who, status and what the client answered."""
    table = Table(title="Results", title_justify="left", header_style="bold")
    for header in ("Client", "Client ID", "Status", "Response"):
        table.add_column(header, overflow="fold")
    for result in results:
        response = result.get("response")
        if response is None:
            response = result.get("error") or result.get("message")
        table.add_row(str(result.get("client_name") or ""), str(result.get("client_id") or ""),
                      status_text(result.get("status")), compact(response, 400))
    return table
