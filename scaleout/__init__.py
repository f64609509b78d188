"""Scaleout Edge client SDK: `EdgeClient` for your project's startup(client), `ScaleoutModel` for the
models it trains, `APIClient` to drive the server from Python."""

from scaleout.client.edge_client import EdgeClient
from scaleoututil.api.client import APIClient
from scaleoututil.model import ScaleoutModel

__all__ = ["APIClient", "EdgeClient", "ScaleoutModel"]
