"""`scaleout package ...` and `scaleout model ...`: the two artefacts a user uploads to the controller.

Both go up with the chunked upload (a rich progress bar for large files) and are then registered with a
form POST naming the upload's `file_token`, exactly as the official CLI does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import requests

from scaleout.cli.api_options import Api, ApiError, api_options, id_option, list_options, output_option
from scaleout.cli.groups import model_group, package_group
from scaleout.cli.output import console, show_list, show_object, size
from scaleoututil.api.client import helper_for_model_file, save_stream
from scaleoututil.api.upload import DEFAULT_CHUNK_SIZE, ProgressCallback, UploadError, chunked_upload
from scaleoututil.checksum import sha256_file

PROGRESS_THRESHOLD = DEFAULT_CHUNK_SIZE  # show a progress bar for files larger than one chunk


@contextmanager
def upload_progress(path: Path) -> Iterator[ProgressCallback | None]:
    """A rich progress bar for files over one chunk; nothing for small ones."""
    total = path.stat().st_size
    if total <= PROGRESS_THRESHOLD:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("Uploading {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console(), transient=True) as bar:
        task = bar.add_task(path.name, total=total)

        def update(sent: int, _total: int) -> None:
            bar.update(task, completed=sent)

        yield update


def upload(api: Api, path: Path) -> str:
    """Chunked upload of `path`; the `file_token` or exit 1 with the server's message."""
    try:
        with upload_progress(path) as progress:
            return chunked_upload(api.base_url, path, headers=api.headers, progress=progress, verify=api.verify)
    except UploadError as err:
        raise ApiError(err.message) from None
    except requests.ConnectionError:
        raise ApiError(api.connect_hint()) from None
    except requests.Timeout:
        raise ApiError(f"The controller at {api.base_url} did not answer in time during the upload.") from None


# -- packages -----------------------------------------------------------------------------------------------
@package_group.command("create")
@click.option("-p", "--path", "path", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Path to the project folder containing scaleout.yaml")
@click.option("-n", "--name", default="package.tgz", show_default=True, help="Name of the package tarball")
@click.option("-o", "--output", "output", default=".", type=click.Path(file_okay=False, path_type=Path),
              show_default=True, help="Output directory for the generated tarball")
@click.option("--sign-key", "sign_key", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 private key (PEM, `scaleout keys create`): also write the signature <tarball>.sig")
def package_create(path: Path, name: str, output: Path, sign_key: Path | None) -> None:
    """Create a compute package: a .tgz of the project folder (honours .scaleoutignore)."""
    from scaleout.project.config import ProjectError
    from scaleout.project.package import create_package

    try:
        archive = Path(create_package(path, name=name, output=output))
    except ProjectError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"Created {archive}")
    click.echo(f"  size:   {size(archive.stat().st_size)} ({archive.stat().st_size} bytes)")
    click.echo(f"  sha256: {sha256_file(str(archive))}")
    if sign_key is not None:
        from scaleout.cli.security_cmd import sign_archive

        click.echo(f"  signed: {sign_archive(archive, sign_key)}")


@package_group.command("set-active")
@api_options
@click.option("-f", "--file", "file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Path to the package file (.tgz)")
@click.option("-n", "--name", required=True, help="Name of the package")
@click.option("-d", "--description", default="", help="Description of the package")
@click.option("--helper", default="numpyhelper", show_default=True, help="Helper to use for the package")
@click.option("--signature", "signature", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Signature file of the package (`scaleout package sign`).  [default: FILE.sig when it exists]")
def package_set_active(api: Api, file: Path, name: str, description: str, helper: str,
                       signature: Path | None) -> None:
    """Upload a compute package and make it the active one (clients download it at start)."""
    from scaleoututil.signing import SigningError, read_signature_file, signature_path

    sig_file = signature or (signature_path(file) if signature_path(file).is_file() else None)
    try:
        sig = read_signature_file(sig_file) if sig_file is not None else None
    except SigningError as exc:
        raise click.BadParameter(f"{sig_file}: {exc}", param_hint="'--signature'") from None
    token = upload(api, file)
    form = {"helper": helper, "name": name, "description": description, "file_token": token, "file_name": file.name}
    if sig:
        form["signature"] = sig
    reply = api.call("POST", "packages/", data=form, timeout=300)
    package = reply.get("package", {}) if isinstance(reply, dict) else {}
    package_id = (reply.get("package_id") if isinstance(reply, dict) else None) or package.get("package_id")
    checksum = package.get("checksum") or sha256_file(str(file))
    signed = f", signed ({sig_file.name})" if sig_file is not None else ", unsigned"
    click.echo(f"Package {name!r} is active (id {package_id}, sha256 {checksum}{signed}).")


@package_group.command("list")
@api_options
@list_options
def package_list(api: Api, output: str, n_max: int | None) -> None:
    """List compute packages (* marks the active one)."""
    show_list("packages", api.list("packages/", n_max=n_max), output, api.base_url)


@package_group.command("get")
@api_options
@id_option("Package")
@output_option
def package_get(api: Api, id_: str, output: str) -> None:
    """Show one compute package."""
    show_object("packages", api.call("GET", f"packages/{id_}"), output)


# -- models -------------------------------------------------------------------------------------------------
@model_group.command("set-active")
@api_options
@click.option("-f", "--file", "file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Path to the model file (.npz for numpyhelper, .bin for binaryhelper)")
def model_set_active(api: Api, file: Path) -> None:
    """Upload a seed model; sessions start from the newest model unless told otherwise."""
    try:
        helper = helper_for_model_file(file)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'-f' / '--file'") from None
    api.call("PUT", "helpers/active", json={"helper": helper})
    token = upload(api, file)
    reply = api.call("POST", "models/", data={"helper": helper, "file_token": token}, timeout=300)
    model_id = reply.get("model_id") if isinstance(reply, dict) else None
    if not model_id:
        raise ApiError(f"The controller did not return a model id: {str(reply)[:200]}")
    click.echo(f"Model {model_id} is active (helper {helper}).")


@model_group.command("list")
@api_options
@list_options
@click.option("-s", "--session_id", "session_id", default=None, help="Only models of this session")
def model_list(api: Api, output: str, n_max: int | None, session_id: str | None) -> None:
    """List models, newest first."""
    body = api.list("models/", params={"session_id": session_id}, n_max=n_max,
                    headers={"X-Sort-Key": "committed_at", "X-Sort-Order": "desc"})
    show_list("models", body, output, api.base_url)


@model_group.command("get")
@api_options
@id_option("Model")
@output_option
def model_get(api: Api, id_: str, output: str) -> None:
    """Show one model."""
    show_object("models", api.call("GET", f"models/{id_}"), output)


@model_group.command("download")
@api_options
@id_option("Model")
@click.option("-f", "--file", "file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it [default: <id>.zip, or <id>.npz / <id>.bin with --raw]")
@click.option("--raw", is_flag=True,
              help="Only the helper's bytes (e.g. the NPZ that np.load reads) instead of the model container")
def model_download(api: Api, id_: str, file: Path | None, raw: bool) -> None:
    """Download a model from the controller."""
    target = file
    if target is None:
        if raw:
            model = api.call("GET", f"models/{id_}")
            helper = model.get("helper_type") if isinstance(model, dict) else None
            target = Path(f"{id_}.{'bin' if helper == 'binaryhelper' else 'npz'}")
        else:
            target = Path(f"{id_}.zip")
    reply = api.send("GET", f"models/{id_}/download", params={"format": "raw" if raw else None},
                     stream=True, timeout=300)
    try:
        with reply:
            written = save_stream(reply, target)
    except requests.RequestException as err:
        raise ApiError(f"The download of model {id_} broke off: {err}") from None
    click.echo(f"Wrote {target} ({size(written)}).")


@model_group.command("trail")
@api_options
@click.option("-id", "--id", "id_", default=None, help="Model ID [default: the newest model]")
@output_option
def model_trail(api: Api, id_: str | None, output: str) -> None:
    """The chain of models that led to a model, from the seed to the model itself."""
    if id_ is None:
        latest = api.list("models/", n_max=1, headers={"X-Sort-Key": "committed_at", "X-Sort-Order": "desc"})
        if not latest["result"]:
            raise ApiError("There are no models yet: upload a seed model with `scaleout model set-active -f seed.npz`.")
        id_ = latest["result"][0]["model_id"]
    trail: Any = api.call("GET", f"models/{id_}/ancestors", params={"include_self": True},
                          headers={"X-Reverse": "true"})
    records = trail.get("result", []) if isinstance(trail, dict) else list(trail or [])
    records = _oldest_first(records)
    show_list("models", {"count": len(records), "result": records}, output, api.base_url)


def _oldest_first(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order a trail seed-first by following parent links (the server's order is not relied on)."""
    by_id = {r.get("model_id"): r for r in records}
    children = {r.get("parent_model"): r for r in records}
    seeds = [r for r in records if r.get("parent_model") not in by_id]
    if len(seeds) != 1:
        return records
    ordered = [seeds[0]]
    while (child := children.get(ordered[-1].get("model_id"))) is not None and len(ordered) < len(records):
        ordered.append(child)
    return ordered if len(ordered) == len(records) else records
