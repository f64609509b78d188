"""A one-page, server-rendered overview of the deployment (no JavaScript build).

Enough to see at a glance whether clients are connected and a session is progressing; the full
dashboard is a later piece of work.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery, Store

MAX_ROWS = 20
REFRESH_SECONDS = 10


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "<td>-</td>"
    if isinstance(value, datetime):
        value = value.strftime("%Y-%m-%d %H:%M:%S")
    return f"<td>{escape(str(value))}</td>"


def _table(headers: list[str], rows: list[list[Any]], empty: str) -> str:
    if not rows:
        return f"<p class='empty'>{escape(empty)}</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _duration(round_: r.RoundRecord) -> str | None:
    seconds = round_.round_data.get("duration")
    if not isinstance(seconds, (int, float)) and round_.started_at and round_.finished_at:
        seconds = (round_.finished_at - round_.started_at).total_seconds()
    return f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else None


def _round_clients(store: Store, round_: r.RoundRecord) -> Any:
    """Clients whose update made it into the round, else how many were asked."""
    contributed = store.updates.count({"round_id": round_.round_id})
    return contributed or round_.round_data.get("clients_selected")


def render_overview(store: Store) -> str:
    online_total, online = store.clients.list(ListQuery(filters={"status": "online"}, limit=MAX_ROWS))
    clients_total = store.clients.count()
    sessions_total, sessions = store.sessions.list(ListQuery(limit=MAX_ROWS))
    latest_model = store.models.latest()
    active_package = store.packages.get_active()

    parts = [
        f"<h2>Clients</h2><p>{online_total} online of {clients_total} registered.</p>",
        _table(["name", "client id", "combiner", "last seen"],
               [[c.name, c.client_id, c.combiner_id, c.last_seen] for c in online], "No client is online."),
        f"<h2>Sessions</h2><p>{sessions_total} in total.</p>",
        _table(["name", "session id", "status", "aggregator", "rounds", "created"],
               [[s.name, s.session_id, s.status, s.session_config.get("aggregator"),
                 s.session_config.get("rounds"), s.committed_at] for s in sessions],
               "No session yet."),
    ]
    if sessions:
        latest = sessions[0]
        _, rounds = store.rounds.list(ListQuery(filters={"session_id": latest.session_id}, sort_key="round_number",
                                                descending=False))
        parts.append(f"<h2>Rounds of {escape(latest.name)}</h2>")
        parts.append(_table(["round", "status", "clients", "duration", "new model"],
                            [[x.round_number, x.status, _round_clients(store, x),
                              _duration(x), x.new_model_id] for x in rounds],
                            "No round has started."))
    parts.append("<h2>Latest model</h2>")
    if latest_model is None:
        parts.append("<p class='empty'>No model yet: upload a seed model with scaleout model set-active.</p>")
    else:
        parts.append(_table(["model id", "session", "parent", "created"],
                            [[latest_model.model_id, latest_model.session_id, latest_model.parent_model,
                              latest_model.committed_at]], ""))
    parts.append("<h2>Compute package</h2>")
    parts.append(f"<p>{escape(active_package.name)} ({escape(active_package.file_name)})</p>" if active_package
                 else "<p class='empty'>No active package.</p>")
    return _PAGE.format(refresh=REFRESH_SECONDS, body="\n".join(parts))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<title>Scaleout Edge controller</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1rem; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; font-size: .9rem; }}
th {{ background: #f3f3f3; }}
.empty {{ color: #777; }}
</style></head>
<body>
<h1>Scaleout Edge controller</h1>
<p>REST API reference: <a href="/docs">/docs</a> &middot; health: <a href="/health">/health</a></p>
{body}
</body></html>
"""
