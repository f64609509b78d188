"""Where issued tokens and revocations are remembered: a few keys in the statestore's settings.

No schema change: each issued token is one setting (`auth.token.<id>`, JSON without the token
itself), plus an index of ids, a map of revoked ids to their expiry (pruned once expired) and,
per client id, the token that owns it. Only the controller process writes these.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from scaleout_server.store.base import Store

PREFIX = "auth."
INDEX_KEY = PREFIX + "tokens"
REVOKED_KEY = PREFIX + "revoked"


@dataclass
class TokenRecord:
    """What the server remembers about a token it issued (never the token string)."""

    token_id: str
    role: str
    name: str | None = None
    subject: str | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    parent: str | None = None  # the enrollment token a client refresh token came from

    def status(self, now: float | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (now or time.time()) > self.expires_at:
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status()}


class TokenBook:
    """Issued tokens and the revocation list, kept in `store` settings (see module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()

    def _load(self, key: str, default: Any) -> Any:
        raw = self.store.get_setting(key)
        if not raw:
            return default
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return default

    def _save(self, key: str, value: Any) -> None:
        self.store.set_setting(key, json.dumps(value, separators=(",", ":")))

    # -- issued tokens ---------------------------------------------------------------------
    def add(self, record: TokenRecord) -> None:
        with self._lock:
            self._save(f"{PREFIX}token.{record.token_id}", asdict(record))
            index = self._load(INDEX_KEY, [])
            index.append(record.token_id)
            self._save(INDEX_KEY, index)

    def get(self, token_id: str) -> TokenRecord | None:
        data = self._load(f"{PREFIX}token.{token_id}", None)
        if not isinstance(data, dict):
            return None
        known = set(TokenRecord.__dataclass_fields__)
        return TokenRecord(**{k: v for k, v in data.items() if k in known})

    def all(self) -> list[TokenRecord]:
        """Every issued token, oldest first."""
        out = []
        for token_id in self._load(INDEX_KEY, []):
            record = self.get(token_id)
            if record is not None:
                out.append(record)
        return out

    # -- revocation ------------------------------------------------------------------------
    def revoke(self, record: TokenRecord) -> TokenRecord:
        """Mark revoked (idempotent) and add to the revocation list; expired entries are pruned."""
        with self._lock:
            if record.revoked_at is None:
                record.revoked_at = time.time()
                self._save(f"{PREFIX}token.{record.token_id}", asdict(record))
            revoked = self._load(REVOKED_KEY, {})
            revoked[record.token_id] = record.expires_at
            now = time.time()
            self._save(REVOKED_KEY, {k: v for k, v in revoked.items() if v is None or v > now})
            return record

    def revoked(self) -> dict[str, float | None]:
        """Revoked token ids that have not expired yet, with their expiry (None: never)."""
        now = time.time()
        data = self._load(REVOKED_KEY, {})
        return {k: v for k, v in data.items() if isinstance(k, str) and (v is None or v > now)}

    # -- client ids owned by tokens --------------------------------------------------------
    def owner_of_client(self, client_id: str) -> str | None:
        """Id of the client refresh token bound to `client_id`, if any."""
        value = self.store.get_setting(f"{PREFIX}client.{client_id}")
        return value or None

    def bind_client(self, client_id: str, token_id: str) -> None:
        self.store.set_setting(f"{PREFIX}client.{client_id}", token_id)
