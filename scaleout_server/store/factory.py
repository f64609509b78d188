"""Pick the statestore backend from its URL, so callers never import a backend directly."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from scaleout_server.store.base import Store

SUPPORTED_SCHEMES = ("sqlite", "postgresql")


def make_store(url: str) -> Store:
    """A `Store` for `sqlite:////abs/path.db` (or `sqlite://` in memory) or `postgresql[+driver]://...`."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise ValueError(f"cannot parse statestore URL {url!r}; expected e.g. sqlite:////var/lib/scaleout/store.db "
                         "or postgresql+psycopg://user:password@host/dbname") from None
    if backend not in SUPPORTED_SCHEMES:
        raise ValueError(f"unsupported statestore URL scheme {backend!r}; supported: {', '.join(SUPPORTED_SCHEMES)}")
    from scaleout_server.store.sql import SQLStore

    return SQLStore(url)
