"""`scaleout login <url>`, `scaleout context [selector]` and `scaleout remove <selector>`: the published
CLI's contexts, with the same files (scaleout/cli/contexts.py) and the same login flow
(`/api/cli-auth/init`, approval in the browser, `/api/cli-auth/status`)."""

from __future__ import annotations

import sys
import time
import webbrowser

import click
import requests

from scaleout.cli import contexts
from scaleout.cli.groups import cli

LOGIN_TIMEOUT = 300.0  # the server keeps a login request this long
POLL_SECONDS = 2.0


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@cli.command("login")
@click.argument("instance_url")
@click.option("--no-browser", is_flag=True, help="Print the approval link instead of opening a browser.")
@click.option("--no-verify-tls", "no_verify_tls", is_flag=True,
              help="Do not verify the server TLS certificate (connection is still encrypted).")
def login(instance_url: str, no_browser: bool, no_verify_tls: bool) -> None:
    """Log in to a server: approve the request in the browser, and the server becomes the active context.

    INSTANCE_URL is the server's address, e.g. http://127.0.0.1:8092 or https://edge.example.com. On a
    secured server the approval needs the dashboard's admin token; the CLI then gets its own admin token
    (revocable with `scaleout token revoke`)."""
    base = instance_url.strip().rstrip("/")
    if "://" not in base:
        _fail(f"{instance_url!r} needs a scheme: http://{base} or https://{base}")
    verify = not no_verify_tls
    try:
        reply = requests.post(f"{base}/api/cli-auth/init", timeout=10, verify=verify)
    except requests.RequestException as exc:
        _fail(f"could not reach {base}: {exc}")
    if reply.status_code != 200:
        _fail(f"{base} refused the login ({reply.status_code}): {reply.text[:300]}")
    started = reply.json()
    request_id, poll_token, login_url = started["requestId"], started["pollToken"], started["loginUrl"]
    click.echo(f"Approve this login in your browser:\n   {login_url}\n")
    if not no_browser:
        webbrowser.open(login_url)
    click.echo("Waiting for the approval...")
    deadline = time.monotonic() + LOGIN_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        try:
            poll = requests.get(f"{base}/api/cli-auth/status", timeout=10, verify=verify,
                                params={"requestId": request_id, "pollToken": poll_token})
        except requests.RequestException:
            continue  # a blip: the request waits on the server
        if poll.status_code == 404:
            _fail("the login request expired or is unknown to the server; run `scaleout login` again")
        if poll.status_code != 200:
            continue
        status = poll.json()
        if status.get("status") == "error":
            _fail(f"login failed: {status.get('message', 'unknown error')}")
        if status.get("status") == "done":
            host = (status.get("api_url") or base).rstrip("/")
            contexts.add(host, status.get("refresh_token") or status.get("access_token"))
            click.echo(f"Logged in to {host}; it is the active context (see `scaleout context`).")
            return
    _fail("login timed out: nobody approved it within 5 minutes")


@cli.command("context")
@click.argument("selector", required=False)
def context_cmd(selector: str | None) -> None:
    """List the contexts, or make one active by its index or name (`scaleout context 1`)."""
    try:
        found = contexts.load()
        if selector is None:
            if not found:
                click.echo("No contexts found. Use 'scaleout login <server url>' to create one.")
                return
            current = contexts.active()
            click.echo("Available contexts:\n")
            for index, context in enumerate(found):
                marker = "★" if context == current else " "
                click.echo(f"  {marker} [{index}] {context.name}\n      Host: {context.host}")
            click.echo("\n★ = active context")
            return
        index = contexts.find(selector)
        contexts.set_active(index)
    except contexts.ContextError as exc:
        _fail(str(exc))
    click.echo(f"Switched to context '{found[index].name}'\n   Host: {found[index].host}")


@cli.command("remove")
@click.argument("selector")
@click.option("--yes", "-y", is_flag=True, help="Skip confirmation prompt")
def remove_cmd(selector: str, yes: bool) -> None:
    """Remove a context by its index or name (`scaleout remove 1 -y`)."""
    try:
        found = contexts.load()
        if not found:
            click.echo("No contexts found.")
            return
        index = contexts.find(selector)
        target = found[index]
        if not yes and not click.confirm(f"Remove context '{target.name}' ({target.host})?"):
            click.echo("Cancelled.")
            return
        now_active = contexts.remove(index)
    except contexts.ContextError as exc:
        _fail(str(exc))
    click.echo(f"Removed context '{target.name}'")
    click.echo(f"   Active context: {now_active.name}" if now_active else "   No contexts remaining")
