"""`scaleout server|controller|combiner start`: thin entry points into `scaleout_server`.

The server package is imported inside the commands, so client-only commands start fast.
`server start` runs the controller in this process and one combiner as a child process;
they talk over the network exactly as they would on separate hosts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from scaleout.cli.extras import needs_server
from scaleout.cli.groups import combiner_group, controller_group, server_group

if TYPE_CHECKING:
    from scaleout_server.tls import ServerTls

LOCAL_MODE_WARNING = (
    "Authentication is OFF (local mode): anyone who can reach these ports can use the API and the combiner. "
    "Keep the server on 127.0.0.1, or start it with --secure."
)
COMBINER_TOKEN_ENV = "SCALEOUT_COMBINER_TOKEN"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: addresses only this machine can reach."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _refuse_open_host(host: str, insecure: bool, what: str, fix: str) -> None:
    """Without authentication, only a loopback address is allowed (unless the user insists)."""
    if not insecure and not is_loopback(host):
        raise click.UsageError(f"{what} runs without authentication and may only bind a loopback address, not "
                               f"{host!r}: anyone who reaches it could use it. {fix}, or pass --insecure if this "
                               "network is trusted.")


def _insecure_option(f: Any) -> Any:
    return click.option("--insecure", is_flag=True,
                        help="Allow a non-loopback --host without authentication (trusted networks only).")(f)


def _settings(config: str | None, **overrides: Any) -> Any:
    from scaleout_server.settings import load_settings

    try:
        return load_settings(config, **overrides)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc


def _print_settings(title: str, settings: Any) -> None:
    click.echo(title)
    for key, value in settings.masked().items():
        click.echo(f"  {key:<22} {value}")


def _config_option(f: Any) -> Any:
    return click.option("--config", "config", type=click.Path(exists=True, dir_okay=False),
                        help="YAML settings file (overridden by SCALEOUT_* variables and by flags).")(f)


def _tls_options(f: Any) -> Any:
    """--tls-cert/--tls-key/--tls-ca-file: the settings tls_cert, tls_key, tls_ca_file (scaleout_server/tls.py)."""
    f = click.option("--tls-ca-file", default=None, type=click.Path(dir_okay=False),
                     help="CA bundle (PEM) trusted for this server's own connections to the controller or "
                          "combiners, e.g. the ca.pem of `scaleout certs create`.  [default: the system store]")(f)
    f = click.option("--tls-key", default=None, type=click.Path(dir_okay=False),
                     help="Private key (PEM) of --tls-cert.")(f)
    return click.option("--tls-cert", default=None, type=click.Path(dir_okay=False),
                        help="Certificate chain (PEM): serve HTTPS and gRPC over TLS with it (with --tls-key); "
                             "`scaleout certs create` makes a development pair.")(f)


def _check_tls(settings: Any) -> ServerTls | None:
    """The checked certificate and key (None: TLS off); a ClickException naming the file when the TLS
    settings cannot be used. Read once per start and passed on."""
    from scaleout_server.tls import TlsConfigError, server_tls

    try:
        return server_tls(settings)
    except TlsConfigError as exc:
        raise click.ClickException(f"invalid TLS settings: {exc}") from exc


def _log_level_option(f: Any) -> Any:
    return click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
                        default="info", show_default=True, help="How much the server logs (to stderr).")(f)


def configure_logging(level: str) -> None:
    """One log format for every server process; uvicorn's access log stays quiet."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # store/migration.py logs what changed


def _run_controller(settings: Any, tls: ServerTls | None, secure: bool = False, standby: bool = False) -> None:
    """Serve the controller; `tls` is what `_check_tls(settings)` returned. On PostgreSQL it holds the
    controller lease while active; `standby`: serve at once but stay passive until it can take the lease
    (scaleout_server/controller/active.py)."""
    import uvicorn

    from scaleout_server.controller.active import ControllerProcess
    from scaleout_server.repository.base import RepositoryError
    from scaleout_server.store.base import StoreError
    from scaleout_server.tls import uvicorn_ssl_options

    ssl_options = uvicorn_ssl_options(tls)

    def announce(app: Any) -> None:
        if secure:
            _announce_admin_token(app.state.auth, settings)

    process = ControllerProcess(settings, secure=secure, standby=standby, on_active=announce)
    try:
        gate = process.prepare()
    except (StoreError, RepositoryError, ValueError) as exc:  # "run scaleout server migrate", "cannot reach S3"
        process.close()
        raise click.ClickException(f"cannot start the controller: {exc}") from exc
    if standby:
        click.echo("Standing by: /health answers, every other route 503 until this controller takes over.")
    # uvicorn ends on SIGTERM by raising the signal again once it has stopped serving; with a lease, turn
    # that into an exception so that `close` runs and hands the lease over at once (SIGKILL: it expires)
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt) if process.lease is not None else None
    try:
        uvicorn.run(gate, host=settings.host, port=settings.api_port, log_level="warning", **ssl_options)
    except KeyboardInterrupt:
        if previous is None:
            raise
    finally:
        process.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _announce_admin_token(authority: Any, settings: Any) -> None:
    """Write (first start) or keep the admin token file and print its path, never the token."""
    path, written = authority.ensure_admin_token(settings.data_dir)
    path = path.resolve()
    state = "written now" if written else "kept from an earlier start"
    click.secho(f"Authentication is ON: every API call and RPC needs a token. Admin token: {path} ({state}, "
                "readable by this user only).", fg="green")
    click.echo(f'  e.g. scaleout session list -t "$(cat {path})"; '
               "scaleout token create --role client|combiner|admin makes more")


@controller_group.command("start")
@click.option("--host", default=None, help="Address to bind the REST API and UI to.  [default: 127.0.0.1]")
@click.option("--api-port", type=int, default=None, help="Port of the REST API and UI.  [default: 8092]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the statestore and model repository.  [default: ./scaleout-data]")
@click.option("--standby", is_flag=True,
              help="Stand by for the active controller (PostgreSQL statestore and S3 repository only): take over "
                   "within seconds when it dies, resuming its running session. Refused on SQLite.")
@_tls_options
@_config_option
@_log_level_option
@needs_server("scaleout controller start")
def controller_start(host: str | None, api_port: int | None, data_dir: str | None, standby: bool,
                     config: str | None, log_level: str, **tls: str | None) -> None:
    """Start a stand-alone controller: REST API, UI, sessions and rounds.

    Combiners register with it (`scaleout combiner start --controller URL[,URL2]`). On PostgreSQL the
    active controller holds a lease in the database; `--standby` waits to take it over."""
    configure_logging(log_level)
    settings = _settings(config, host=host, api_port=api_port, data_dir=data_dir, **tls)
    _print_settings("Starting controller with settings:", settings)
    from scaleout_server.tls import api_url

    click.echo(f"REST API and UI: {api_url(settings)}  (OpenAPI at /docs)")
    _run_controller(settings, _check_tls(settings), secure=True, standby=standby)


@combiner_group.command("start")
@click.option("--controller", "controller_url", default=None,
              help="URL of the controller to register with, e.g. http://127.0.0.1:8092; with a standby controller "
                   "give both, comma-separated: the combiner follows whichever is active.")
@click.option("--host", default=None, help="Address to bind the combiner's gRPC server to.  [default: 127.0.0.1]")
@click.option("--port", "combiner_port", type=int, default=None, help="gRPC port.  [default: 12080]")
@click.option("--name", "combiner_name", default=None,
              help="Unique combiner name: letters, digits, dots, dashes, underscores.  [default: combiner]")
@click.option("--public-hostname", default=None, help="Host clients dial to reach this combiner.  [default: --host]")
@click.option("--byte-port", type=int, default=None,
              help="Port of the byte path beside gRPC: our clients move models of 16 MiB and more over it, the kernel "
                   "copying the bytes (published clients keep gRPC). 0 picks a free port, -1 turns it off; clients "
                   "that cannot reach it fall back to gRPC.  [default: 0]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for in-flight model updates.  [default: ./scaleout-data]")
@click.option("--token", "combiner_token", default=None,
              help=f"Combiner token for a secured controller (`scaleout token create --role combiner --name NAME` "
                   f"there); better passed as ${COMBINER_TOKEN_ENV}, which `ps` does not show.")
@_insecure_option
@_tls_options
@_config_option
@_log_level_option
@needs_server("scaleout combiner start")
def combiner_start(controller_url: str | None, host: str | None, combiner_port: int | None, combiner_name: str | None,
                   public_hostname: str | None, byte_port: int | None, data_dir: str | None,
                   combiner_token: str | None, insecure: bool,
                   config: str | None, log_level: str, **tls: str | None) -> None:
    """Start a combiner: clients poll it for tasks and send it their model updates.

    With a combiner token it joins a secured controller and checks a token on every RPC; without
    one it can only join a local-mode server (`scaleout server start`) and binds loopback only."""
    configure_logging(log_level)
    settings = _settings(config, controller_url=controller_url, host=host, combiner_port=combiner_port,
                         combiner_name=combiner_name, public_hostname=public_hostname, byte_port=byte_port,
                         data_dir=data_dir, combiner_token=combiner_token, **tls)
    _check_tls(settings)
    if not settings.controller_url:
        raise click.UsageError("--controller URL is required (or controller_url in --config / SCALEOUT_CONTROLLER_URL)")
    if not settings.combiner_token:
        _refuse_open_host(settings.host, insecure, "A combiner without --token",
                          "Give it a combiner token of a secured controller")
    from scaleout_server.combiner.server import run_combiner

    click.echo(f"Combiner {settings.combiner_name!r} on {settings.host}:{settings.combiner_port}, "
               f"controller {settings.controller_url}")
    run_combiner(settings)


def _upgrade_embedded_store(settings: Any) -> None:
    """The embedded default's SQLite file belongs to this one server: bring it to the current schema
    (an explicit `server migrate` is asked for only where several processes share a database)."""
    from scaleout_server.store.migration import upgrade

    try:
        result = upgrade(settings.resolved_store_url())
    except Exception as exc:  # SchemaMismatch, a damaged file: one line, not a traceback
        raise click.ClickException(f"cannot open the statestore: {exc}") from exc
    if result.applied and result.before:
        click.echo(f"Statestore upgraded from schema revision {result.before} to {result.after}.")


@server_group.command("start")
@click.option("--host", default=None, help="Address to bind API, UI and combiner to.  [default: 127.0.0.1]")
@click.option("--api-port", type=int, default=None, help="Port of the REST API and UI.  [default: 8092]")
@click.option("--combiner-port", type=int, default=None, help="gRPC port of the combiner.  [default: 12080]")
@click.option("--byte-port", type=int, default=None,
              help="Port of the byte path beside gRPC: our clients move models of 16 MiB and more over it, the kernel "
                   "copying the bytes (published clients keep gRPC). 0 picks a free port, -1 turns it off; clients "
                   "that cannot reach it fall back to gRPC.  [default: 0]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the SQLite statestore, the model repository and in-flight updates.  "
                   "[default: ./scaleout-data]")
@click.option("--secure", is_flag=True,
              help="Require a token on every API call and RPC; an admin token is written into the data folder.")
@_insecure_option
@_tls_options
@_config_option
@_log_level_option
@needs_server("scaleout server start")
def server_start(host: str | None, api_port: int | None, combiner_port: int | None, byte_port: int | None,
                 data_dir: str | None, secure: bool, insecure: bool, config: str | None, log_level: str,
                 **tls: str | None) -> None:
    """Run the whole server on this machine: a controller and one combiner.

    Storage is embedded: SQLite and a local folder under --data-dir; no other services. Without
    --secure authentication is off and the server binds loopback addresses only."""
    configure_logging(log_level)
    settings = _settings(config, host=host, api_port=api_port, combiner_port=combiner_port, byte_port=byte_port,
                         data_dir=data_dir, **tls)
    checked_tls = _check_tls(settings)
    if not secure:
        _refuse_open_host(settings.host, insecure, "`scaleout server start`", "Add --secure (tokens)")
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    _print_settings("Starting Scaleout Edge server (controller + combiner) with settings:", settings)
    if not settings.store_url:
        _upgrade_embedded_store(settings)
    child_env = {k: v for k, v in os.environ.items() if k != COMBINER_TOKEN_ENV}
    if secure:
        from scaleout_server.auth.authority import local_combiner_token

        # the child's combiner token travels in its environment: not on its command line, not on disk
        child_env[COMBINER_TOKEN_ENV] = local_combiner_token(settings.data_dir, settings.combiner_name)
    else:
        click.secho(LOCAL_MODE_WARNING, fg="yellow", err=True)
    from scaleout_server.tls import api_url as api_url_of

    api_url = api_url_of(settings)
    combiner_cmd = [
        sys.executable, "-m", "scaleout", "combiner", "start",
        "--controller", api_url, "--host", settings.host, "--port", str(settings.combiner_port),
        "--name", settings.combiner_name, "--data-dir", str(settings.data_dir), "--log-level", log_level,
        "--byte-port", str(settings.byte_port),
    ]
    if config:
        combiner_cmd += ["--config", config]
    if insecure and not secure:
        combiner_cmd.append("--insecure")
    for flag, value in (("--tls-cert", settings.tls_cert), ("--tls-key", settings.tls_key),
                        ("--tls-ca-file", settings.tls_ca_file)):
        if value:
            combiner_cmd += [flag, str(value)]
    combiner = subprocess.Popen(combiner_cmd, preexec_fn=_die_with_parent, env=child_env)

    def _stop_combiner(*_: Any) -> None:
        _stopping.set()
        if combiner.poll() is None:
            combiner.terminate()
            try:
                combiner.wait(timeout=10)
            except subprocess.TimeoutExpired:
                combiner.kill()

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    threading.Thread(target=_watch_combiner, args=(combiner,), name="combiner-watch", daemon=True).start()
    click.echo(f"REST API and UI: {api_url}  (OpenAPI at {api_url}/docs)")
    click.echo(f"Combiner (gRPC): {settings.host}:{settings.combiner_port}   data: {Path(settings.data_dir).resolve()}")
    trust = f" --ca-file {settings.tls_ca_file}" if settings.tls_ca_file else ""
    click.echo(f"Start clients with: scaleout client start --api-url {api_url}{trust}")
    try:
        _run_controller(settings, checked_tls, secure=secure)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_combiner()
        signal.signal(signal.SIGTERM, previous)
        click.echo("Server stopped.")
    if _combiner_failed.is_set():
        sys.exit(1)


@server_group.command("migrate")
@click.option("--store-url", default=None,
              help="Statestore to upgrade, e.g. postgresql+psycopg://user:password@host:5432/scaleout.  "
                   "[default: the store_url setting, else the SQLite file in --data-dir]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of the default SQLite statestore.  [default: ./scaleout-data]")
@_config_option
@needs_server("scaleout server migrate")
def server_migrate(store_url: str | None, data_dir: str | None, config: str | None) -> None:
    """Upgrade the statestore schema to the newest revision of this version.

    The server refuses to start on a database with an older schema: back the database up, then run
    this once with the same settings. An empty database gets the whole schema."""
    settings = _settings(config, store_url=store_url, data_dir=data_dir)
    from scaleout_server.store.base import StoreError
    from scaleout_server.store.engine import safe_url
    from scaleout_server.store.migration import revision_summary, upgrade

    url = settings.resolved_store_url()
    try:
        click.echo(f"Statestore: {safe_url(url)}")
        result = upgrade(url)
    except (StoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Schema revision before: {result.before or '(empty database)'}")
    for revision in result.applied:
        click.echo(f"  applied {revision}: {revision_summary(revision)}")
    if not result.applied:
        click.echo("Already at the newest revision; nothing to do.")
    click.echo(f"Schema revision now:    {result.after}")


def _watch_combiner(combiner: subprocess.Popen[bytes]) -> None:
    """A server without its combiner cannot train: if the child dies, say so and stop the whole server
    (instead of serving an API whose sessions would wait for clients that can never connect)."""
    code = combiner.wait()
    if _stopping.is_set():
        return
    _combiner_failed.set()
    click.secho(f"The combiner exited unexpectedly (exit code {code}); its output is above. Stopping the server.",
                fg="red", err=True)
    os.kill(os.getpid(), signal.SIGTERM)


_stopping = threading.Event()
_combiner_failed = threading.Event()


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends the server like Ctrl-C, so the combiner child is stopped too."""
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """Linux: the combiner child gets SIGTERM if this process dies without cleaning up."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def wait_for_http(url: str, timeout: float = 30.0) -> bool:
    """Poll `url` until it answers 200 (used by scripts and tests)."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False

