"""`scaleout token create|list|revoke`: tokens of a secured server (admin token required).

The admin token comes from -t/--token or SCALEOUT_AUTH_TOKEN; on the server machine the file the
server wrote (`<data-dir>/auth/admin.token`) is used when neither is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scaleout.cli.api_options import Api, api_options, output_option
from scaleout.cli.groups import token_group
from scaleout.cli.output import console, dump, show_list
from scaleoututil.jwtpeek import jwt_payload

ROLES = ("client", "admin", "combiner", "enrollment")
ADMIN_TOKEN_FILE = Path("auth") / "admin.token"


def _data_dir_option(f: Any) -> Any:
    return click.option("--data-dir", type=click.Path(file_okay=False), default="scaleout-data", show_default=True,
                        help="Server data folder whose admin token file is used when no token is given.")(f)


def _with_admin_token(api: Api, data_dir: str) -> Api:
    """Fall back on the admin token file the server wrote (same machine, same user)."""
    if api.token:
        return api
    path = Path(data_dir) / ADMIN_TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
    except OSError:
        return api
    click.echo(f"(using the admin token in {path})", err=True)
    return Api(api.base_url, token=token or None, verify=api.verify)


@token_group.command("create")
@click.option("--role", type=click.Choice(ROLES, case_sensitive=False), required=True,
              help="client: an edge client's refresh token (bound to one client id); admin: API and CLI; "
                   "combiner: a stand-alone combiner; enrollment: lets clients enroll themselves (1.1 clients).")
@click.option("--expires", default=None,
              help="Lifetime, e.g. 30m, 24h, 30d or never.  [default: admin 30d, enrollment 24h, others never]")
@click.option("-n", "--name", default=None,
              help="A label. For a combiner token: the combiner name it may register as.")
@click.option("--client-id", default=None, help="Client tokens: the client id it binds to.  [default: a new id]")
@click.option("-q", "--quiet", is_flag=True, help="Print only the token (for scripts).")
@_data_dir_option
@api_options
@output_option
def token_create(api: Api, role: str, expires: str | None, name: str | None, client_id: str | None, quiet: bool,
                 data_dir: str, output: str) -> None:
    """Create a token. It is shown once: the server keeps only its id."""
    body: dict[str, Any] = {"role": role.lower(), "name": name, "expires": expires, "client_id": client_id}
    reply = _with_admin_token(api, data_dir).call("POST", "auth/tokens", json={k: v for k, v in body.items() if v})
    if quiet:
        click.echo(reply["token"])
        return
    if output != "human":
        dump(reply, output)
        return
    out = console()
    out.print(f"[bold]{reply['role']} token[/bold] {reply['token_id']}"
              + (f" for {reply['subject']}" if reply.get("subject") else "")
              + f", expires {reply.get('expires_at') or 'never'}. Shown only now; keep it secret:")
    click.echo(reply["token"])
    hint = {"client": "scaleout client start --api-url URL --token TOKEN",
            "combiner": "SCALEOUT_COMBINER_TOKEN=TOKEN scaleout combiner start --controller URL --name "
                        + (reply.get("subject") or "NAME"),
            "admin": "scaleout session list -t TOKEN   (or export SCALEOUT_AUTH_TOKEN=TOKEN)",
            "enrollment": "scaleout client start --api-url URL --token TOKEN   (official 1.1 clients enroll)"}
    out.print(f"Use: {hint[reply['role']]}", highlight=False)


@token_group.command("list")
@_data_dir_option
@api_options
@output_option
def token_list(api: Api, data_dir: str, output: str) -> None:
    """List the tokens this server issued (ids, roles, status; never the tokens themselves)."""
    body = _with_admin_token(api, data_dir).call("GET", "auth/tokens")
    show_list("tokens", body, output, api.base_url)


def _token_id(text: str) -> str:
    """A token id, or the id inside a whole token pasted instead (its `jti` claim)."""
    text = text.strip()
    if len(text.split(".")) != 3:
        return text
    claims = jwt_payload(text)
    if claims is None or "jti" not in claims:
        raise click.BadParameter("this looks like a token but carries no id (jti)")
    return str(claims["jti"])


@token_group.command("revoke")
@click.argument("token_id", metavar="ID")
@_data_dir_option
@api_options
@output_option
def token_revoke(api: Api, token_id: str, data_dir: str, output: str) -> None:
    """Revoke the token with TOKEN_ID (see `scaleout token list`). Revoking a client token also ends
    the access tokens exchanged from it; combiners learn of it within seconds."""
    record = _with_admin_token(api, data_dir).call("POST", f"auth/tokens/{_token_id(token_id)}/revoke")
    if output != "human":
        dump(record, output)
        return
    click.echo(f"Token {record['token_id']} ({record['role']}{', ' + record['name'] if record.get('name') else ''}) "
               "revoked.")
