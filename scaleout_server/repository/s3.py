"""Model repository in an S3-compatible object store (AWS S3, MinIO, SeaweedFS, Ceph, ...) through boto3.

Objects are `<prefix><namespace>/<key>` in one bucket, which is created when missing.
- Uploads stream: an object smaller than one part goes up in a single PUT, a larger one as a
  multipart upload, so at most one part (`part_size`, 8 MiB) is held in memory whatever the model
  size. S3 publishes an object only when its upload completes, so readers never see half a model,
  and a failed upload is aborted, leaving the previous object in place.
- Downloads stream too, and are seekable (zip readers seek): a seek re-requests the object from the
  new offset, pinned to the ETag read at open, so a concurrent replacement cannot mix two versions.
- Failures become RepositoryUnavailable (endpoint unreachable) or RepositoryAccessDenied (credentials,
  permissions) with the setting to check in the message.
- An endpoint that stops answering (an object store restarting) is retried with back-off and jitter for
  up to `unavailable_wait` seconds per call (60 s), with one log line when it goes away and one when it
  is back, before RepositoryUnavailable is raised: a round whose combiner stores its model during a
  short outage waits instead of failing. Opening the repository is not retried: a wrong endpoint at
  start fails at once.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, BinaryIO, TypeVar

import boto3
import botocore.loaders
import botocore.session
from botocore.client import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from scaleout_server.outages import ride_out
from scaleout_server.repository.base import (
    BlobNotFound,
    ModelRepository,
    RepositoryAccessDenied,
    RepositoryError,
    RepositoryUnavailable,
    check_name,
)
from scaleoututil.protocol import CHUNK_SIZE

PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's maximum number of parts per upload
DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
UNAVAILABLE_WAIT_S = 60.0  # how long one call waits for an unreachable endpoint to come back
RETRY_MAX_S = 5.0  # longest pause between tries while the endpoint is unreachable
# the store is up but not serving yet (or says "please try again": InternalError, HTTP 500): as unreachable
_BUSY = {"ServiceUnavailable", "SlowDown", "503", "InternalError", "500"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
           "InvalidSecurity", "AuthorizationHeaderMalformed", "403", "Forbidden"}
_MISSING = {"NoSuchKey", "404", "NotFound"}

T = TypeVar("T")
log = logging.getLogger(__name__)


class S3Repository(ModelRepository):
    """Blobs as objects `<prefix><namespace>/<key>` in `bucket`.

    Credentials: `access_key`/`secret_key` when given, else boto3's standard sources
    (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, instance roles). `endpoint_url` empty: AWS itself;
    any other endpoint is addressed path-style (http://host:port/bucket/key), which every
    S3-compatible server understands."""

    def __init__(self, bucket: str, endpoint_url: str | None = None, region: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None, prefix: str = "",
                 part_size: int = PART_SIZE, create_bucket: bool = True,
                 unavailable_wait: float = UNAVAILABLE_WAIT_S) -> None:
        if not bucket:
            raise ValueError("an S3 repository needs a bucket name (setting s3_bucket / SCALEOUT_S3_BUCKET)")
        if bool(access_key) != bool(secret_key):
            raise ValueError("give both s3_access_key and s3_secret_key, or neither (then the standard AWS "
                             "sources are used: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, roles)")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum part size)")
        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.unavailable_wait = unavailable_wait
        session = _new_session()
        self.region = region or session.region_name or DEFAULT_REGION
        config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, max_pool_connections=32,
                        retries={"max_attempts": 3, "mode": "standard"},
                        s3={"addressing_style": "path" if self.endpoint_url else "auto"})
        self._client = session.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                                      aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
                                      config=config)
        self._where = self.endpoint_url or f"AWS S3 ({self.region})"
        self._ensure_bucket(create_bucket)

    def __repr__(self) -> str:
        return f"S3Repository(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r}, prefix={self.prefix!r})"

    # -- errors -----------------------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate boto3 failures into repository errors that name what to check."""
        try:
            yield
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise RepositoryAccessDenied(
                f"no S3 credentials for {action} ({exc}): set s3_access_key and s3_secret_key "
                "(SCALEOUT_S3_ACCESS_KEY / SCALEOUT_S3_SECRET_KEY) or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            ) from None
        except BotoConnectionError as exc:
            raise RepositoryUnavailable(
                f"cannot reach the S3 endpoint {self._where} for {action}: {exc}. Check s3_endpoint "
                "(SCALEOUT_S3_ENDPOINT) and that the object store is running and reachable from this host"
            ) from None
        except ClientError as exc:
            code, message = _code(exc), _message(exc)
            if code in _BUSY:
                raise RepositoryUnavailable(f"the S3 endpoint {self._where} is not serving {action} yet: {code} "
                                            f"({message})") from None
            if code in _DENIED:
                raise RepositoryAccessDenied(
                    f"the S3 endpoint {self._where} refused {action}: {code} ({message}). Check s3_access_key / "
                    "s3_secret_key (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and that they may read and "
                    f"write bucket {self.bucket!r}") from None
            if code == "NoSuchBucket":
                raise RepositoryError(f"the S3 bucket {self.bucket!r} at {self._where} no longer exists "
                                      f"({action}); restart to create it again") from None
            raise RepositoryError(f"S3 {action} failed at {self._where}: {code} ({message})") from None
        except BotoCoreError as exc:
            raise RepositoryError(f"S3 {action} failed at {self._where}: {exc}") from None

    def _call(self, action: str, fn: Callable[..., T], **kwargs: Any) -> T:
        def once() -> T:
            with self._errors(action):
                return fn(**kwargs)

        return self._retrying(once)

    def _retrying(self, once: Callable[[], T]) -> T:
        """`once()`, ridden through an outage of the endpoint for up to `unavailable_wait` seconds
        (scaleout_server/outages.py). Every call here is idempotent: a whole PUT of one part, a GET, a HEAD
        or a DELETE."""
        return ride_out(once, RepositoryUnavailable, self.unavailable_wait,
                        f"the S3 endpoint {self._where}", log, max_pause=RETRY_MAX_S)

    def _ensure_bucket(self, create: bool) -> None:
        """Fail at start, with a clear message, rather than at the first model upload."""
        try:
            with self._errors(f"opening bucket {self.bucket!r}"):
                try:
                    self._client.head_bucket(Bucket=self.bucket)
                    return
                except ClientError as exc:
                    if _code(exc) in _MISSING or _code(exc) == "NoSuchBucket":
                        pass
                    elif _code(exc) in _DENIED:
                        # HEAD answers carry no error code; a GET tells bad credentials from a foreign bucket
                        self._client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
                        raise
                    else:
                        raise
                if not create:
                    raise RepositoryError(f"the S3 bucket {self.bucket!r} does not exist at {self._where}")
                kwargs: dict[str, Any] = {"Bucket": self.bucket}
                if self.region != DEFAULT_REGION:
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
                try:
                    self._client.create_bucket(**kwargs)
                except ClientError as exc:
                    if _code(exc) == "BucketAlreadyExists":
                        raise RepositoryError(f"the S3 bucket name {self.bucket!r} is taken by another account; "
                                              "choose another s3_bucket") from None
                    if _code(exc) != "BucketAlreadyOwnedByYou":  # created meanwhile by another process
                        raise
        except RepositoryError:
            self._client.close()
            raise

    # -- interface --------------------------------------------------------------------------------

    def _name(self, namespace: str, key: str) -> str:
        return f"{self.prefix}{check_name('namespace', namespace)}/{check_name('key', key)}"

    def put(self, namespace: str, key: str, stream: BinaryIO) -> tuple[int, str]:
        name = self._name(namespace, key)
        digest = hashlib.sha256()
        part = _read_part(stream, self.part_size)
        digest.update(part)
        size = len(part)
        if len(part) < self.part_size:
            self._call(f"uploading {name}", self._client.put_object, Bucket=self.bucket, Key=name, Body=part)
            return size, digest.hexdigest()
        upload = self._call(f"uploading {name}", self._client.create_multipart_upload, Bucket=self.bucket, Key=name)
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            while part:
                number = len(parts) + 1
                if number > MAX_PARTS:
                    raise RepositoryError(f"{name} is larger than {MAX_PARTS} parts of {self.part_size} bytes")
                answer = self._call(f"uploading part {number} of {name}", self._client.upload_part,
                                    Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=part)
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
                part = _read_part(stream, self.part_size)
                digest.update(part)
                size += len(part)
            self._call(f"completing the upload of {name}", self._client.complete_multipart_upload,
                       Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            try:  # best effort: the store would garbage-collect the parts eventually anyway
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            except (BotoCoreError, ClientError):
                pass
            raise
        return size, digest.hexdigest()

    def open(self, namespace: str, key: str) -> BinaryIO:
        name = self._name(namespace, key)

        def once() -> dict[str, Any]:
            with self._errors(f"downloading {name}"):
                try:
                    return self._client.get_object(Bucket=self.bucket, Key=name)
                except ClientError as exc:
                    if _code(exc) in _MISSING:
                        raise BlobNotFound(f"{namespace}/{key}") from None
                    raise

        answer = self._retrying(once)
        reader = _ObjectReader(self, name, answer)
        return io.BufferedReader(reader, buffer_size=CHUNK_SIZE)  # type: ignore[return-value]

    def _head(self, name: str) -> dict[str, Any] | None:
        def once() -> dict[str, Any] | None:
            with self._errors(f"looking up {name}"):
                try:
                    return self._client.head_object(Bucket=self.bucket, Key=name)
                except ClientError as exc:
                    if _code(exc) in _MISSING:
                        return None
                    raise

        return self._retrying(once)

    def exists(self, namespace: str, key: str) -> bool:
        return self._head(self._name(namespace, key)) is not None

    def size(self, namespace: str, key: str) -> int:
        head = self._head(self._name(namespace, key))
        if head is None:
            raise BlobNotFound(f"{namespace}/{key}")
        return int(head["ContentLength"])

    def delete(self, namespace: str, key: str) -> bool:
        name = self._name(namespace, key)
        if self._head(name) is None:  # S3 deletes are idempotent and do not say whether anything was there
            return False
        self._call(f"deleting {name}", self._client.delete_object, Bucket=self.bucket, Key=name)
        return True

    def describe(self) -> dict[str, str]:
        """No credentials: each process brings its own (settings or the standard AWS sources)."""
        return {"type": "s3", "bucket": self.bucket, "endpoint_url": self.endpoint_url or "", "region": self.region,
                "prefix": self.prefix}

    def close(self) -> None:
        self._client.close()


class _ObjectReader(io.RawIOBase):
    """A seekable view of one S3 object version: sequential reads share one GET; a seek opens a ranged GET."""

    def __init__(self, repo: S3Repository, name: str, answer: dict[str, Any]) -> None:
        self._repo = repo
        self._name = name
        self._size = int(answer["ContentLength"])
        self._etag = answer.get("ETag")
        self._body: Any = answer["Body"]
        self._body_pos = 0  # where the open body's next byte is
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def _reopen(self) -> None:
        self._close_body()
        kwargs: dict[str, Any] = {"Bucket": self._repo.bucket, "Key": self._name, "Range": f"bytes={self._pos}-"}
        if self._etag:
            kwargs["IfMatch"] = self._etag
        def once() -> dict[str, Any]:
            with self._repo._errors(f"downloading {self._name}"):
                try:
                    return self._repo._client.get_object(**kwargs)
                except ClientError as exc:
                    if _code(exc) in ("PreconditionFailed", "412"):
                        raise OSError(f"{self._name} was replaced while being read; open it again") from None
                    raise

        answer = self._repo._retrying(once)
        self._body = answer["Body"]
        self._body_pos = self._pos

    def _read(self, amount: int | None) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._pos >= self._size:
            return b""
        if self._body is None or self._body_pos != self._pos:
            self._reopen()
        try:
            data: bytes = self._body.read(amount) if amount is not None else self._body.read()
        except (BotoCoreError, OSError) as exc:
            self._close_body()
            raise OSError(f"reading {self._name} from S3 failed: {exc}") from exc
        self._pos += len(data)
        self._body_pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read(len(view))
        view[:len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self._read(None)

    def _close_body(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except (BotoCoreError, OSError):
                pass
            self._body = None

    def close(self) -> None:
        self._close_body()
        super().close()


@lru_cache(maxsize=1)
def _data_loader() -> Any:
    return botocore.loaders.create_loader()


def _new_session() -> boto3.session.Session:
    """A fresh session (credentials and region resolved anew) sharing the parsed service descriptions,
    which makes a client in milliseconds instead of a few hundred (botocore's JSON models are large)."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _data_loader())
    return boto3.session.Session(botocore_session=core)


def _read_part(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes (fewer only at the end of the stream), read in CHUNK_SIZE pieces."""
    pieces: list[bytes] = []
    remaining = size
    while remaining > 0:
        piece = stream.read(min(CHUNK_SIZE, remaining))
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    return b"".join(pieces)


def _code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message") or exc)
