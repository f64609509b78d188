"""Pick the statestore backend from its URL, so callers never import a backend directly."""

from __future__ import annotations

from scaleout_server.store.base import Store
from scaleout_server.store.engine import SUPPORTED_SCHEMES, parse_url

__all__ = ["SUPPORTED_SCHEMES", "make_store"]


def make_store(url: str) -> Store:
    """A `Store` for `sqlite:////abs/path.db` (or `sqlite://` in memory) or `postgresql[+psycopg]://...`.

    ValueError for a URL that names no supported database; StoreUnavailable when the database cannot
    be reached; SchemaMismatch when it needs `scaleout server migrate` first."""
    parse_url(url)  # the ValueError for bad URLs, before importing the SQL machinery
    from scaleout_server.store.sql import SQLStore

    return SQLStore(url)
