"""Global models in the repository: ingest a seed, load a container's parameters, write new ones.

Everything streams through temporary files, so a model is never held twice in memory.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from scaleout_server.aggregation.params import check_numeric
from scaleout_server.aggregation.stored import StoredParams
from scaleout_server.errors import InvalidInput, TooLarge
from scaleout_server.repository.base import ModelRepository
from scaleout_server.store import records as r
from scaleoututil import model as container
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.protocol import CHUNK_SIZE

MODELS = "models"


@dataclass(frozen=True)
class StoredModel:
    model_id: str
    helper_type: str
    size: int
    checksum: str


def copy_limited(source: BinaryIO, target: IO[bytes], max_bytes: int, what: str,
                 setting: str = "max_upload_bytes") -> int:
    """Copy in chunks; TooLarge (naming `setting`) as soon as the limit is passed (0: no limit)."""
    total = 0
    while True:
        chunk = source.read(CHUNK_SIZE)
        if not chunk:
            return total
        total += len(chunk)
        if max_bytes and total > max_bytes:
            raise TooLarge(f"{what} is larger than the limit of {max_bytes} bytes (setting {setting})")
        target.write(chunk)


def spooled_copy(source: IO[bytes]) -> IO[bytes]:
    """A seekable copy (helpers such as numpy need to seek)."""
    out = tempfile.TemporaryFile()
    shutil.copyfileobj(source, out, CHUNK_SIZE)
    out.seek(0)
    return out


def model_size_limit(max_model_bytes: int, max_upload_bytes: int) -> tuple[int, str]:
    """The limit a model upload meets first, and the setting that raises it (0: unlimited)."""
    limits = [(n, name) for n, name in ((max_model_bytes, "max_model_bytes"), (max_upload_bytes, "max_upload_bytes"))
              if n > 0]
    return min(limits) if limits else (0, "max_model_bytes")


def ingest_model(repository: ModelRepository, stream: BinaryIO, helper_type: str,
                 max_bytes: int = 0, setting: str = "max_upload_bytes") -> StoredModel:
    """Accept raw helper bytes (e.g. an NPZ) or a container; store a container with a new id.

    InvalidInput when the parameters cannot be read, so that a broken seed is refused at upload rather
    than failing the first round. The check reads the arrays' headers in place (StoredParams), not the
    arrays: a 1 GiB seed used to take 1.1 GiB of the controller's memory just to be checked.
    """
    with tempfile.TemporaryDirectory(prefix="scaleout-upload-") as folder:
        upload_path = Path(folder) / "upload"
        with open(upload_path, "w+b") as upload:
            copy_limited(stream, upload, max_bytes, "the model file", setting)
            if upload.tell() == 0:
                raise InvalidInput(f"not a valid model file for {helper_type}: the file is empty")
            upload.seek(0)
            try:
                wrapped = container.is_container(upload)
                if wrapped:
                    metadata = container.read_container_metadata(upload)
                    helper_type = metadata.get("helper_type") or helper_type
            except container.InvalidModel as exc:
                raise InvalidInput(f"not a valid model file for {helper_type}: {exc}") from None
        helper = get_helper(helper_type)
        _check_parameters(upload_path, helper, helper_type)
        with open(upload_path, "rb") as upload:
            if not wrapped:
                return write_model(repository, upload, helper_type)
            with container.open_training_model(upload) as entry, spooled_copy(entry) as training:
                return write_model(repository, training, helper_type)


def _check_parameters(path: Path, helper: Any, helper_type: str) -> None:
    """InvalidInput unless the file holds numeric arrays the helper can read (checked without loading them)."""
    try:
        view = StoredParams.open(path, helper)
    except Exception as exc:  # any reader failure means "not a model"
        raise InvalidInput(f"not a valid model file for {helper_type}: {exc}") from None
    try:
        check_numeric(view.specs, what="the model")
    except ValueError as exc:
        raise InvalidInput(f"not a valid model file for {helper_type}: {exc}") from None
    finally:
        view.close()


def write_model(repository: ModelRepository, training_model: BinaryIO, helper_type: str,
                model_id: str | None = None) -> StoredModel:
    """Wrap raw helper bytes in a container and store it under `models/<model_id>`."""
    model_id = model_id or r.new_id()
    with tempfile.TemporaryFile() as out:
        container.write_container(out, model_id, training_model, helper_type=helper_type)
        out.seek(0)
        size, checksum = repository.put(MODELS, model_id, out)
    return StoredModel(model_id, helper_type, size, checksum)


def save_params(repository: ModelRepository, params: Any, helper_type: str, model_id: str | None = None) -> StoredModel:
    helper = get_helper(helper_type)
    with tempfile.TemporaryFile() as raw:
        helper.save(params, raw)
        raw.seek(0)
        return write_model(repository, raw, helper_type, model_id)


def load_params(repository: ModelRepository, model_id: str, helper_type: str) -> Any:
    """The training parameters of a stored container (or raw helper bytes, for robustness)."""
    helper = get_helper(helper_type)
    with repository.open(MODELS, model_id) as stream, spooled_copy(stream) as local:
        if container.is_container(local):
            with container.open_training_model(local) as entry, spooled_copy(entry) as training:
                return helper.load(training)
        return helper.load(local)


def describe(repository: ModelRepository, model_id: str, helper_type: str) -> StoredModel:
    """Size and SHA-256 of a stored model (for a combiner's model adopted as the global one)."""
    digest = hashlib.sha256()
    size = 0
    with repository.open(MODELS, model_id) as stream:
        while chunk := stream.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return StoredModel(model_id, helper_type, size, digest.hexdigest())
