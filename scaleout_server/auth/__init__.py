"""Authentication and authorization: signed tokens, roles, and their checks on REST and gRPC.

- `tokens`: kinds, roles and claims; `jwt`: HS256 signing; `keys`: the server secret (0600 file).
- `authority`: the controller's issuing, exchange, enrollment and revocation (`book`: storage).
- `policy`: which role may call which REST route and gRPC service (deny by default).
- `rest`: the REST middleware; `grpc_gate`: the combiner's interceptor (both read the header with
  `bearer`); `grpc_client`: tokens on the controller's Control calls; `revocation_sync`: combiners'
  copy of the revocation list.
"""

from __future__ import annotations

import os

from scaleout_server.auth.authority import Authority
from scaleout_server.auth.keys import SigningKeys, load_or_create_secret
from scaleout_server.store.base import Store


def open_authority(data_dir: str | os.PathLike[str], store: Store) -> Authority:
    """The authority of the deployment whose secret lives in `data_dir` (created on first use)."""
    return Authority(store, SigningKeys.from_secret(load_or_create_secret(data_dir)))


__all__ = ["Authority", "open_authority"]
