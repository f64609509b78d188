"""`scaleout certs create`, `scaleout keys create` and `scaleout package sign`: the files TLS and signed
packages need, made locally (nothing here talks to a server)."""

from __future__ import annotations

from pathlib import Path

import click

from scaleout.cli.extras import needs_server
from scaleout.cli.groups import certs_group, keys_group, package_group


def _hosts(text: str | None) -> list[str] | None:
    if text is None:
        return None
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    if not hosts:
        raise click.BadParameter("give at least one host name or IP address", param_hint="'--hosts'")
    return hosts


@certs_group.command("create")
@click.option("-o", "--out", "out", default="certs", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder to write the files to.")
@click.option("--hosts", default=None, metavar="HOST,HOST,...",
              help="Names and addresses clients use to reach the server (the certificate is valid for exactly "
                   "these).  [default: localhost,127.0.0.1,::1 and this machine's host name]")
@click.option("--overwrite", is_flag=True, help="Replace an existing server.pem/server.key (the CA is kept).")
@needs_server("scaleout certs create")
def certs_create(out: Path, hosts: str | None, overwrite: bool) -> None:
    """Create a development CA (ca.pem) and a server certificate signed by it (server.pem, server.key).

    \b
    Start the server with the certificate, and clients with the CA:
      scaleout server start --tls-cert certs/server.pem --tls-key certs/server.key --tls-ca-file certs/ca.pem
      scaleout client start --api-url https://127.0.0.1:8092 --ca-file certs/ca.pem
    An existing ca.pem/ca.key in the folder is reused, so clients keep trusting re-issued certificates.
    Keep ca.key private; for production use certificates from your own or a public CA.
    """
    from scaleout_server.devcerts import create_dev_certs

    try:
        made = create_dev_certs(out, _hosts(hosts), overwrite=overwrite)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--hosts'") from exc
    click.echo(f"CA certificate:     {made.ca_cert}   (give it to clients: --ca-file)")
    click.echo(f"CA key:             {made.ca_key}   (keep private)")
    click.echo(f"Server certificate: {made.cert}   valid for {', '.join(made.hosts)}")
    click.echo(f"Server key:         {made.key}")
    click.echo("Start the server with:")
    click.echo(f"  scaleout server start --tls-cert {made.cert} --tls-key {made.key} --tls-ca-file {made.ca_cert}")
    click.echo("and clients with:")
    click.echo(f"  scaleout client start --api-url https://{made.hosts[0]}:8092 --ca-file {made.ca_cert}")


@keys_group.command("create")
@click.option("-o", "--out", "out", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder to write the key pair to.")
@click.option("-n", "--name", default="package-signing", show_default=True,
              help="File name stem: writes NAME.key (private) and NAME.pub (public).")
def keys_create(out: Path, name: str) -> None:
    """Create an Ed25519 key pair for signing compute packages.

    \b
    Sign packages with the private key, start clients with the public one:
      scaleout package create --path client --sign-key package-signing.key
      scaleout client start --api-url ... --package-public-key package-signing.pub
    """
    from scaleoututil.signing import SigningError, create_keypair

    private, public = out / f"{name}.key", out / f"{name}.pub"
    try:
        create_keypair(private, public)
    except SigningError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Private key: {private}   (keep it secret; it signs packages)")
    click.echo(f"Public key:  {public}   (give it to clients: --package-public-key)")


def sign_archive(archive: Path, key: Path) -> Path:
    """Write `<archive>.sig`; a ClickException when the key cannot be used."""
    from scaleoututil.signing import SigningError, sign_file

    try:
        return sign_file(archive, key)
    except SigningError as exc:
        raise click.ClickException(str(exc)) from exc


@package_group.command("sign")
@click.option("-k", "--key", "key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 private key (PEM) from `scaleout keys create`.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def package_sign(key: Path, file: Path) -> None:
    """Sign a compute package: writes FILE.sig, which `package set-active` uploads with the package."""
    signature = sign_archive(file, key)
    click.echo(f"Signed {file}: {signature}")
