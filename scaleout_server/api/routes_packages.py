"""Compute packages: upload (activates), active package, download and checksum for clients."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import StreamingResponse

from scaleout_server.api.common import ControllerDep, UploadsDep, root_route, safe_file_name
from scaleout_server.api.listing import to_json
from scaleout_server.api.routes_models import stream_and_close
from scaleout_server.api.uploads import file_size_of
from scaleout_server.controller.session_config import active_helper
from scaleout_server.errors import InvalidInput, NotFoundError, TooLarge
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery, Store

router = APIRouter(tags=["packages"])

SIGNATURE_HEADER = "X-Scaleout-Package-Signature"  # on downloads of signed packages

NO_ACTIVE = "No compute package is active: upload one with scaleout package set-active --file package.tgz -n NAME"


def find_package(store: Store, name: str | None) -> r.PackageRecord:
    """The package a client asks for: by package name or file name (the official client sends the
    file name to /checksum), preferring the active package; no name means the active package."""
    active = store.packages.get_active()
    if not name:
        if active is None:
            raise NotFoundError(NO_ACTIVE)
        return active
    if active is not None and name in (active.name, active.file_name):
        return active
    _, by_name = store.packages.list(ListQuery(filters={"name": name}, limit=1))
    if by_name:
        return by_name[0]
    by_file = store.packages.get_by_file_name(name)
    if by_file is not None:
        return by_file
    raise NotFoundError(f"No compute package named {name!r} (as package name or file name); "
                        "list them with GET /api/v1/packages/")


@root_route(router, "/api/v1/packages/", "POST")
def add_package(
    controller: ControllerDep,
    uploads: UploadsDep,
    helper: str | None = Form(None),
    name: str | None = Form(None),
    description: str = Form(""),
    file_token: str | None = Form(None),
    file_name: str | None = Form(None),
    file: UploadFile | None = File(None),
    restart_clients: bool = Form(False),
    abort_ongoing_tasks: bool = Form(False),
    signature: str | None = Form(None),
) -> dict[str, Any]:
    """Store a compute package (tar.gz/tgz/tar.bz2 with scaleout.yaml) and make it the active one.

    Either a multipart `file`, or `file_token` from /api/v1/file-upload (official CLI). With
    `restart_clients=true` (official CLI `--restart-clients`) every connected client is asked to
    restart, aborting its running tasks first when `abort_ongoing_tasks=true`. `signature`: the
    base64 Ed25519 signature of the archive (`scaleout package sign`), stored with the package and
    handed to clients with its checksum."""
    helper_type = (helper or active_helper(controller.store)).strip()
    signature = checked_signature(signature)
    limit = controller.settings.max_package_bytes
    if file is not None:
        if file_size_of(file.file) > limit:
            raise TooLarge(f"The package is over this server's limit of {limit} bytes (setting max_package_bytes)")
        stored_name = safe_file_name(file_name or file.filename, "package.tgz")
        record = controller.add_package(file.file, stored_name, name or stored_name, description, helper_type,
                                        signature=signature)
    elif file_token:
        upload, stream = uploads.claim(file_token)
        try:
            if upload.file_size > limit:
                raise TooLarge(f"The package is over this server's limit of {limit} bytes "
                               "(setting max_package_bytes)")
            stored_name = safe_file_name(file_name or upload.file_name, "package.tgz")
            record = controller.add_package(stream, stored_name, name or stored_name, description, helper_type,
                                            signature=signature)
        finally:
            stream.close()
        uploads.discard(upload)
    else:
        raise InvalidInput("Send the package as a multipart 'file' field, or upload it with /api/v1/file-upload "
                           "and send the returned 'file_token' as a form field")
    out: dict[str, Any] = {"message": "Package uploaded", "package_id": record.package_id, "package": to_json(record)}
    if restart_clients:
        command = controller.restart_clients(abort_ongoing_tasks)
        out["restart_command_id"] = command.command_id if command is not None else None
        out["restarted_clients"] = command.client_ids if command is not None else []
    return out


@router.get("/api/v1/packages/active")
def active_package(controller: ControllerDep) -> dict[str, Any]:
    """The active compute package (404 when none)."""
    active = controller.store.packages.get_active()
    if active is None:
        raise NotFoundError(NO_ACTIVE)
    return to_json(active)


@router.put("/api/v1/packages/active")
def set_active_package(body: dict[str, Any], controller: ControllerDep) -> dict[str, Any]:
    """Make a stored package the active one: body `{"id": package_id}`."""
    package_id = body.get("id") or body.get("package_id")
    if not isinstance(package_id, str) or not package_id:
        raise InvalidInput('Send {"id": "<package_id>"}; list packages with GET /api/v1/packages/')
    return to_json(controller.store.packages.set_active(package_id))


@router.get("/api/v1/packages/download")
def download_package(controller: ControllerDep, name: str | None = None) -> StreamingResponse:
    """The package archive (default: the active package), with its file name in Content-Disposition."""
    record = find_package(controller.store, name)
    stream = controller.repository.open("packages", record.storage_file_name)
    headers = {"Content-Disposition": f"attachment; filename={record.file_name}"}
    if record.signature:
        headers[SIGNATURE_HEADER] = record.signature
    if record.size:
        headers["Content-Length"] = str(record.size)
    return StreamingResponse(stream_and_close(stream), media_type="application/octet-stream", headers=headers)


@router.get("/api/v1/packages/checksum")
def package_checksum(controller: ControllerDep, name: str | None = None) -> dict[str, Any]:
    """SHA-256 of the package archive (name: package name or file name; default the active package), and its
    Ed25519 `signature` (null when the package is unsigned)."""
    record = find_package(controller.store, name)
    return {"checksum": record.checksum, "file_name": record.file_name, "signature": record.signature,
            "message": "Checksum of the package archive"}


def checked_signature(signature: str | None) -> str | None:
    """A signature form field: None when empty, InvalidInput when it is not a base64 Ed25519 signature."""
    if signature is None or not signature.strip():
        return None
    from scaleoututil.signing import SigningError, decode_signature

    try:
        decode_signature(signature)
    except SigningError as exc:
        raise InvalidInput(f"signature: {exc}; send the contents of the .sig file `scaleout package sign` "
                           "writes") from exc
    return signature.strip()
