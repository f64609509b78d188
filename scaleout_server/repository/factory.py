"""Open a model repository from its `describe()` output, so a combiner reaches the controller's storage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from scaleout_server.repository.base import ModelRepository

if TYPE_CHECKING:
    from scaleout_server.settings import ServerSettings

KNOWN_TYPES = ("local", "s3")


def make_repository(description: Mapping[str, Any], settings: ServerSettings | None = None) -> ModelRepository:
    """`{"type": "local", "path": "/abs/folder"}` -> LocalRepository;
    `{"type": "s3", "bucket": ..., "endpoint_url": ..., "region": ..., "prefix": ...}` -> S3Repository.

    Descriptions never carry secrets (see `describe()`): S3 credentials come from the description
    when the caller built it from its own settings, else from `settings` (s3_access_key/s3_secret_key),
    else from the standard AWS sources. ValueError for an unknown type or a missing field."""
    kind = description.get("type")
    if kind == "local":
        path = description.get("path")
        if not path:
            raise ValueError('a "local" repository needs "path" (the folder holding the models)')
        from scaleout_server.repository.local import LocalRepository

        return LocalRepository(path)
    if kind == "s3":
        bucket = description.get("bucket")
        if not bucket:
            raise ValueError('an "s3" repository needs "bucket" (setting s3_bucket / SCALEOUT_S3_BUCKET)')
        access_key = description.get("access_key") or (settings.s3_access_key if settings else "")
        secret_key = description.get("secret_key") or (settings.s3_secret_key if settings else "")
        from scaleout_server.repository.s3 import S3Repository

        return S3Repository(bucket, endpoint_url=description.get("endpoint_url") or None,
                            region=description.get("region") or None, prefix=description.get("prefix") or "",
                            access_key=access_key or None, secret_key=secret_key or None)
    raise ValueError(f"unknown repository type {kind!r}; known types: {', '.join(KNOWN_TYPES)}")


def repository_from_settings(settings: ServerSettings) -> ModelRepository:
    """The repository the settings describe (`repository_type` local or s3), with its credentials."""
    return make_repository(settings.repository_description(), settings)
