"""`scaleout client enroll`, `client create-enrollment-token` and `client get-config`: giving edge clients
their identity, with the published CLI's flags.

An admin creates an enrollment token (`create-enrollment-token`, printed alone on stdout so it pipes); a
device enrolls with it (`enroll`: the server answers a client id and a refresh token bound to it) and
starts with the config file enroll wrote (`client start --init <client_id>.yaml`). `get-config` writes
such files for a group of clients directly (with a client token each on a secured server).
"""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path
from typing import Any

import click
import requests
import yaml

from scaleout.cli.api_options import Api, ApiError, api_options, resolve_base_url
from scaleout.cli.groups import client_group

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhd]?)\s*$")
MAX_ENROLLMENT_HOURS = 24 * 365


def expires_in_hours(text: str) -> float:
    """`24h`, `7d`, `90m` (a bare number is hours) -> hours; BadParameter for anything else."""
    match = DURATION.match(text or "")
    if not match:
        raise click.BadParameter(f"{text!r} is not a lifetime; use e.g. 90m, 24h or 7d", param_hint="'--expires-in'")
    hours = float(match.group(1)) * {"m": 1 / 60, "h": 1.0, "": 1.0, "d": 24.0}[match.group(2)]
    if not 0 < hours <= MAX_ENROLLMENT_HOURS:
        raise click.BadParameter(f"{text!r}: an enrollment token lives more than 0 and at most 365 days",
                                 param_hint="'--expires-in'")
    return hours


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    """The file holds a refresh token: readable by its owner only, written through a temporary name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.touch(mode=0o600)
    partial.write_text(yaml.safe_dump(data, default_flow_style=False), encoding="utf-8")
    partial.replace(path)


@client_group.command("create-enrollment-token")
@api_options
@click.option("-n", "--name", required=True, help="Human-readable label for the enrollment token.")
@click.option("--expires-in", default="24h", show_default=True, help="Token lifetime, e.g. '24h', '7d', '90m'.")
def create_enrollment_token(api: Api, name: str, expires_in: str) -> None:
    """Create an enrollment token for edge client registration (needs the admin token of a secured server).

    Prints only the token on stdout, so it can be piped to `scaleout client enroll`."""
    hours = expires_in_hours(expires_in)
    if not api.token:
        raise ApiError("No token found. Pass the admin token with -t/--token (or SCALEOUT_AUTH_TOKEN), or log in "
                       "with 'scaleout login <server url>'.")
    click.echo(f"Creating enrollment token '{name}' (expires in {hours:g}h)...", err=True)
    reply = api.call("POST", "auth/enrollment-tokens", json={"name": name, "expires_in_hours": hours})
    click.echo(f"Enrollment token created (name={name}, expires={reply.get('expires_at', '')})", err=True)
    click.echo(reply["token"])


@client_group.command("enroll")
@click.option("--enrollment-token", required=True, help="Enrollment JWT issued by an admin.")
@click.option("-u", "--api-url", required=True, help="API server URL (e.g. https://edge.example.com).")
@click.option("-n", "--name", default=None, help="Optional per-client label stored on the server.")
@click.option("-p", "--config-dir", default=".", show_default=True,
              help="Directory to write a client YAML config file (named <client_id>.yaml).")
@click.option("--client-id", default=None,
              help="Optional stable client ID for traceability (e.g. device serial number).")
@click.option("--no-config", is_flag=True, help="Disable the generation of config yaml")
def enroll(enrollment_token: str, api_url: str, name: str | None, config_dir: str, client_id: str | None,
           no_config: bool) -> None:
    """Enroll a new edge client using an enrollment token.

    The server answers a client id and a refresh token bound to it; both go into <config-dir>/<client_id>.yaml
    for `scaleout client start --init`. Only the client id is printed on stdout (CLIENT_ID=$(scaleout client
    enroll ...))."""
    base = api_url.strip().rstrip("/")
    if "://" not in base:
        raise click.BadParameter(f"{api_url!r} needs a scheme: http://{base} or https://{base}",
                                 param_hint="'-u' / '--api-url'")
    body = {key: value for key, value in (("name", name), ("client_id", client_id)) if value}
    try:
        reply = requests.post(f"{base}/api/v1/clients/enroll", json=body, timeout=30,
                              headers={"Authorization": f"Bearer {enrollment_token.strip()}"})
    except requests.RequestException as exc:
        click.echo(f"Enrollment failed: could not reach {base}: {exc}", err=True)
        sys.exit(1)
    try:
        answer = reply.json()
    except ValueError:
        answer = {"message": reply.text[:300]}
    if reply.status_code != 200 or not isinstance(answer, dict) or not answer.get("client_id"):
        message = answer.get("message") if isinstance(answer, dict) else answer
        click.echo(f"Enrollment failed ({reply.status_code}): {message}", err=True)
        sys.exit(1)
    enrolled, refresh = str(answer["client_id"]), answer.get("refresh_token")
    click.echo(f"Enrolled successfully. client_id: {enrolled}", err=True)
    if no_config:
        click.echo("Start with: scaleout client start --client-id "
                   f"{enrolled} --api-url {base} --token <the refresh token below>", err=True)
        click.echo(f"Refresh token (shown only now): {refresh}", err=True)
    else:
        path = Path(config_dir).expanduser().resolve() / f"{enrolled}.yaml"
        _write_yaml(path, {"client_id": enrolled, "discover_host": base, "name": name or f"client-{enrolled[:8]}",
                           "refresh_token": refresh})
        click.echo(f"Config written to: {path}", err=True)
        click.echo(f"Start with: scaleout client start --init {path}", err=True)
    click.echo(enrolled)


@client_group.command("get-config")
@click.option("-n", "--name", required=True,
              help="Client name, used as prefix for client names; the client name is suffixed with an index.")
@click.option("-g", "--group", type=click.IntRange(1, 10000), default=1, show_default=True,
              help="number of clients to generate in a bulk")
@click.option("-t", "--token", envvar="SCALEOUT_AUTH_TOKEN", default=None,
              help="Authentication admin token (a secured server then issues a client token per config)")
@click.option("-P", "--port", type=click.IntRange(1, 65535), default=None, help="Port of api-server (api)")
@click.option("-H", "--host", default=None, help="Hostname of api-server (api)")
@click.option("--protocol", type=click.Choice(["http", "https"], case_sensitive=False), default=None,
              help="Communication protocol of api-server (api)")
@click.option("-p", "--path", "path", default=None, help="Path to where client yaml file will be located")
@click.option("--no-verify-tls", "no_verify_tls", is_flag=True,
              help="Do not verify the server TLS certificate (connection is still encrypted).")
def get_config(name: str, group: int, token: str | None, port: int | None, host: str | None, protocol: str | None,
               path: str | None, no_verify_tls: bool) -> None:
    """Generate client config file(s) <name>_<i>.yaml for `scaleout client start --init`.

    Each holds a new client_id, the controller address (discover_host) and the name <name>_<i>. On a secured
    server (with the admin token) each also gets its own client refresh token; on a local server none is
    needed."""
    from scaleout.cli import contexts

    if not host and protocol is None and port is None and (context := contexts.active()) is not None:
        host, token = context.host, token or context.token
    api = Api(resolve_base_url(host, port, protocol), token=token or None, verify=not no_verify_tls)
    folder = Path(path or ".").expanduser().resolve()
    secured = _secured(api)
    for index in range(group):
        client_id = str(uuid.uuid4())
        client_name = f"{name}_{index}"
        refresh = None
        if secured:
            reply = api.call("POST", "auth/tokens", json={"role": "client", "name": client_name,
                                                          "client_id": client_id})
            refresh, client_id = reply["token"], reply.get("subject") or client_id
        target = folder / f"{client_name}.yaml"
        _write_yaml(target, {"client_id": client_id, "discover_host": api.base_url, "name": client_name,
                             "refresh_token": refresh, "token": None})
        click.echo(f"{index}: client config for {client_name} ({client_id}) saved to {target}")


def _secured(api: Api) -> bool:
    """Whether the server issues tokens: its token list answers 409 in local mode (authentication off)."""
    reply = api.send("GET", "auth/tokens", allow=(409,))
    return reply.status_code != 409
