"""Show what the server functions did in a session: which clients trained in each round, and with
which settings (as each client reported them in its update's metadata).

  python show_rounds.py                        # the newest session on 127.0.0.1:8092
  python show_rounds.py -H HOST -P PORT --session-id ID

Reads everything over the REST API with the APIClient (a token is taken from SCALEOUT_AUTH_TOKEN).
"""

from __future__ import annotations

import argparse
from typing import Any

from scaleoututil.api.client import APIClient

NEWEST_FIRST = {"X-Sort-Key": "committed_at", "X-Sort-Order": "desc"}
SHOWN = ("learning_rate", "local_epochs", "batch_size", "train_mse")


def fetch(api: APIClient, endpoint: str, params: dict[str, Any] | None = None,
          headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    reply = api.request("GET", endpoint, params=params, headers=headers)
    reply.raise_for_status()
    return list(reply.json()["result"])


def report(api: APIClient, session_id: str | None = None) -> str:
    """The text `main` prints: one block per round, one line per client that trained in it."""
    if session_id is None:
        newest = fetch(api, "sessions/", headers={**NEWEST_FIRST, "X-Limit": "1"})
        if not newest:
            return "No session yet."
        session_id = newest[0]["session_id"]
    session = api.get_session(id=session_id)
    clients = {c["client_id"]: c for c in fetch(api, "clients/")}
    rounds = fetch(api, "rounds/", params={"session_id": session_id},
                   headers={"X-Sort-Key": "round_number", "X-Sort-Order": "asc"})
    lines = [f"Session {session.get('name') or session_id}: {session.get('status')}, {len(rounds)} round(s)"]
    trained: set[str] = set()
    for round_ in rounds:
        notes = (round_.get("round_data") or {}).get("server_functions") or {}
        selection = notes.get("client_selection") or {}
        lines.append(f"Round {round_['round_number']} ({round_['status']}): "
                     f"{selection.get('selected', '?')} of {selection.get('offered', '?')} idle clients selected")
        for error in notes.get("errors") or []:
            lines.append(f"  server functions error: {error}")
        updates = fetch(api, "updates/", params={"round_id": round_["round_id"]})
        rows = []
        for update in updates:
            client = clients.get(update["client_id"], {})
            trained.add(update["client_id"])
            meta = update.get("meta") or {}
            training = meta.get("training_metadata") or {}
            values = "  ".join(f"{key} {training[key]:.4g}" if isinstance(training.get(key), float)
                               else f"{key} {training.get(key)}" for key in SHOWN if key in training)
            rows.append(f"  {client.get('name', update['client_id']):<12} tier {meta.get('tier', '?'):<5} {values}")
        lines.extend(sorted(rows))
    idle = [c for cid, c in clients.items() if cid not in trained and c.get("status") == "online"]
    for client in sorted(idle, key=lambda c: c.get("name") or ""):
        lines.append(f"Never selected: {client.get('name')} (attributes {client.get('attributes') or {}})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-P", "--port", type=int, default=8092)
    parser.add_argument("--session-id", default=None, help="default: the newest session")
    args = parser.parse_args()
    print(report(APIClient(args.host, args.port), args.session_id))


if __name__ == "__main__":
    main()
