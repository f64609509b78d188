"""Open a model repository from its `describe()` output, so a combiner reaches the controller's storage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scaleout_server.repository.base import ModelRepository

KNOWN_TYPES = ("local",)


def make_repository(description: Mapping[str, Any]) -> ModelRepository:
    """`{"type": "local", "path": "/abs/folder"}` -> LocalRepository; ValueError for anything else."""
    kind = description.get("type")
    if kind == "local":
        path = description.get("path")
        if not path:
            raise ValueError('a "local" repository needs "path" (the folder holding the models)')
        from scaleout_server.repository.local import LocalRepository

        return LocalRepository(path)
    raise ValueError(f"unknown repository type {kind!r}; known types: {', '.join(KNOWN_TYPES)}")
