"""`scaleout client start`: register with the controller, load the project and serve tasks."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from scaleout.cli.groups import client_group

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_INIT_KEYS = {
    "api_url": ("api_url", "discover_host"),
    "api_port": ("api_port", "discover_port"),
    "client_id": ("client_id",),
    "name": ("name",),
    "preferred_combiner": ("preferred_combiner",),
    "token": ("token", "refresh_token"),
}


def _read_init(path: Path) -> dict[str, Any]:
    """The keys client start understands from an --init YAML (the published clients' spelling included)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="'-in' / '--init'") from exc
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must be a YAML mapping (api_url: ..., name: ...)",
                                 param_hint="'-in' / '--init'")
    found: dict[str, Any] = {}
    for key, aliases in _INIT_KEYS.items():
        for alias in aliases:
            if data.get(alias) not in (None, ""):
                found[key] = data[alias]
                break
    return found


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)


def _package_limit(text: str | None) -> int | None:
    from scaleout.project.package import parse_size

    if text is None or not text.strip():
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--max-package-size'") from exc


@client_group.command("start")
@click.option("-u", "--api-url", default=None,
              help="Controller URL, e.g. http://127.0.0.1:8092 (without a scheme: http for localhost, else https); "
                   "several, comma-separated, for an active controller and its standbys: the client follows "
                   "whichever is active.")
@click.option("-p", "--api-port", type=int, default=None, help="Controller port, when not part of --api-url.")
@click.option("--token", default=None, help="Refresh token; exchanged for access tokens at /api/auth/refresh.")
@click.option("-n", "--name", default=None, help="Client name shown on the server [default: client-<id prefix>].")
@click.option("-i", "--client-id", default=None,
              help="Client id; pin it to keep the same identity across restarts [default: a new uuid].")
@click.option("--local-package", is_flag=True,
              help="Use the project in ./client (a folder holding scaleout.yaml) instead of downloading the "
                   "server's compute package.")
@click.option("--remote-package", "remote_package", is_flag=False, flag_value="", default=None, metavar="[NAME]",
              help="Download the compute package from the server (the default); NAME picks a package by name "
                   "instead of the active one.")
@click.option("--managed-env", is_flag=True,
              help="Install the python_env.yaml dependencies into the active virtual environment at start and "
                   "whenever a new package arrives (skipped when already installed). Create and activate a venv "
                   "in the client's folder first; outside a venv the client refuses to start.")
@click.option("--disable-managed-env", is_flag=True,
              help="The environment is not managed (the default): install the project's requirements yourself, "
                   "e.g. scaleout run install -p client. Accepted for compatibility with the published clients.")
@click.option("--max-package-size", "max_package_size", default=None, metavar="SIZE",
              envvar="SCALEOUT_MAX_PACKAGE_SIZE", show_envvar=True,
              help="Largest compute package this client downloads and unpacks, e.g. 500MB or 2GiB; larger or "
                   "hostile archives are refused with nothing unpacked [default: 1GiB].")
@click.option("--ca-file", "ca_file", default=None, type=click.Path(exists=True, dir_okay=False),
              envvar="SCALEOUT_CA_FILE", show_envvar=True,
              help="CA certificate (PEM) to trust for the controller's HTTPS and the combiner's TLS, e.g. the "
                   "ca.pem of `scaleout certs create` [default: the system store].")
@click.option("--package-public-key", "package_public_key", default=None,
              type=click.Path(exists=True, dir_okay=False), envvar="SCALEOUT_PACKAGE_PUBLIC_KEY", show_envvar=True,
              help="Ed25519 public key (PEM, from `scaleout keys create`): run only compute packages signed with "
                   "the matching private key; unsigned or altered packages are refused before they are unpacked.")
@click.option("-c", "--preferred-combiner", default=None, help="Ask the controller for this combiner.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO", show_default=True,
              help="How much the client logs (to stderr).")
@click.option("-in", "--init", "init_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML file with any of api_url (or discover_host), api_port (or discover_port), client_id, "
                   "name, preferred_combiner, token. Command-line options win.")
@click.option("--poll-timeout", type=click.FloatRange(min=1.0), default=10.0, show_default=True,
              help="Seconds the combiner may hold a task poll open before answering.")
@click.option("--dispatcher", is_flag=True,
              help="Legacy dispatcher mode: instead of importing startup(client), run the train/validate/predict "
                   "'command:' lines of scaleout.yaml's entry_points as separate processes (each gets the input "
                   "model file and an output path as its two arguments).")
def client_start(api_url: str | None, api_port: int | None, token: str | None, name: str | None,
                 client_id: str | None, local_package: bool, remote_package: str | None, disable_managed_env: bool,
                 preferred_combiner: str | None, log_level: str, init_file: Path | None, poll_timeout: float,
                 dispatcher: bool, managed_env: bool, max_package_size: str | None, ca_file: str | None,
                 package_public_key: str | None) -> None:
    """Start an edge client: register with the controller, load the project's startup(client) and run the
    train/validate/predict/custom tasks the combiner sends, until Ctrl-C or SIGTERM.

    \b
    Examples:
      scaleout client start --api-url http://127.0.0.1:8092 --local-package
      scaleout client start -u https://edge.example.com --token $TOKEN -n site-a -i site-a
      scaleout client start --init client.yaml
      scaleout client start --api-url http://127.0.0.1:8092 --local-package --dispatcher
      scaleout client start --api-url http://127.0.0.1:8092 --managed-env    # inside an active venv

    The first Ctrl-C aborts running tasks, reports them and disconnects; a second one exits at once.
    """
    from scaleout.client.registration import RegistrationError
    from scaleout.client.runtime import ClientConfig, run_client

    if local_package and remote_package is not None:
        raise click.UsageError("use either --local-package or --remote-package, not both")
    if managed_env and disable_managed_env:
        raise click.UsageError("use either --managed-env or --disable-managed-env, not both")
    if package_public_key and local_package:
        raise click.UsageError("--package-public-key checks packages downloaded from the server; it cannot be "
                               "combined with --local-package")
    max_package_bytes = _package_limit(max_package_size)
    settings = _read_init(init_file) if init_file is not None else {}
    given = {"api_url": api_url, "api_port": api_port, "token": token, "name": name, "client_id": client_id,
             "preferred_combiner": preferred_combiner}
    settings.update({k: v for k, v in given.items() if v is not None})
    if not settings.get("api_url"):
        raise click.UsageError("the controller's address is missing: pass --api-url (e.g. http://127.0.0.1:8092) "
                               "or give api_url in an --init file")
    api_port_value = settings.get("api_port")
    try:
        api_port_value = None if api_port_value in (None, "") else int(api_port_value)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(f"api_port must be a number, not {api_port_value!r}") from exc

    _setup_logging(log_level.upper())
    config = ClientConfig(
        api_url=str(settings["api_url"]), api_port=api_port_value,
        token=str(settings["token"]) if settings.get("token") else None,
        name=str(settings["name"]) if settings.get("name") else None,
        client_id=str(settings["client_id"]) if settings.get("client_id") else None,
        preferred_combiner=str(settings["preferred_combiner"]) if settings.get("preferred_combiner") else None,
        local_package=local_package, package_name=remote_package or None, poll_timeout=poll_timeout,
        dispatcher=dispatcher, managed_env=managed_env, max_package_bytes=max_package_bytes,
        ca_file=ca_file, package_public_key=package_public_key,
    )
    try:
        code = run_client(config, echo=click.echo)
    except RegistrationError as exc:  # an answer that can never succeed: its own exit code (README, CLI reference)
        error = click.ClickException(str(exc))
        error.exit_code = exc.exit_code
        raise error from exc
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(code)
