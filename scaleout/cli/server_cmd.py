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
from typing import Any

import click

from scaleout.cli.groups import combiner_group, controller_group, server_group

LOCAL_MODE_WARNING = (
    "Authentication is OFF (local mode): anyone who can reach these ports can use the API and the combiner. "
    "Keep the server on 127.0.0.1."
)


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


def _log_level_option(f: Any) -> Any:
    return click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
                        default="info", show_default=True, help="How much the server logs (to stderr).")(f)


def configure_logging(level: str) -> None:
    """One log format for every server process; uvicorn's access log stays quiet."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _run_controller(settings: Any) -> None:
    import uvicorn

    from scaleout_server.controller.app_factory import build_controller_app

    app, controller = build_controller_app(settings)
    try:
        uvicorn.run(app, host=settings.host, port=settings.api_port, log_level="warning")
    finally:
        controller.close()


@controller_group.command("start")
@click.option("--host", default=None, help="Address to bind the REST API and UI to.  [default: 127.0.0.1]")
@click.option("--api-port", type=int, default=None, help="Port of the REST API and UI.  [default: 8092]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the statestore and model repository.  [default: ./scaleout-data]")
@_config_option
@_log_level_option
def controller_start(host: str | None, api_port: int | None, data_dir: str | None, config: str | None,
                     log_level: str) -> None:
    """Start a stand-alone controller: REST API, UI, sessions and rounds.

    Combiners register with it (`scaleout combiner start --controller URL`)."""
    configure_logging(log_level)
    settings = _settings(config, host=host, api_port=api_port, data_dir=data_dir)
    _print_settings("Starting controller with settings:", settings)
    click.secho(LOCAL_MODE_WARNING, fg="yellow", err=True)
    click.echo(f"REST API and UI: http://{settings.host}:{settings.api_port}  (OpenAPI at /docs)")
    _run_controller(settings)


@combiner_group.command("start")
@click.option("--controller", "controller_url", default=None,
              help="URL of the controller to register with, e.g. http://127.0.0.1:8092.")
@click.option("--host", default=None, help="Address to bind the combiner's gRPC server to.  [default: 127.0.0.1]")
@click.option("--port", "combiner_port", type=int, default=None, help="gRPC port.  [default: 12080]")
@click.option("--name", "combiner_name", default=None, help="Unique combiner name.  [default: combiner]")
@click.option("--public-hostname", default=None, help="Host clients dial to reach this combiner.  [default: --host]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for in-flight model updates.  [default: ./scaleout-data]")
@_config_option
@_log_level_option
def combiner_start(controller_url: str | None, host: str | None, combiner_port: int | None, combiner_name: str | None,
                   public_hostname: str | None, data_dir: str | None, config: str | None, log_level: str) -> None:
    """Start a combiner: clients poll it for tasks and send it their model updates."""
    configure_logging(log_level)
    settings = _settings(config, controller_url=controller_url, host=host, combiner_port=combiner_port,
                         combiner_name=combiner_name, public_hostname=public_hostname, data_dir=data_dir)
    if not settings.controller_url:
        raise click.UsageError("--controller URL is required (or controller_url in --config / SCALEOUT_CONTROLLER_URL)")
    from scaleout_server.combiner.server import run_combiner

    click.echo(f"Combiner {settings.combiner_name!r} on {settings.host}:{settings.combiner_port}, "
               f"controller {settings.controller_url}")
    run_combiner(settings)


@server_group.command("start")
@click.option("--host", default=None, help="Address to bind API, UI and combiner to.  [default: 127.0.0.1]")
@click.option("--api-port", type=int, default=None, help="Port of the REST API and UI.  [default: 8092]")
@click.option("--combiner-port", type=int, default=None, help="gRPC port of the combiner.  [default: 12080]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the SQLite statestore, the model repository and in-flight updates.  "
                   "[default: ./scaleout-data]")
@_config_option
@_log_level_option
def server_start(host: str | None, api_port: int | None, combiner_port: int | None, data_dir: str | None,
                 config: str | None, log_level: str) -> None:
    """Run the whole server on this machine: a controller and one combiner.

    Storage is embedded: SQLite and a local folder under --data-dir; no other services."""
    configure_logging(log_level)
    settings = _settings(config, host=host, api_port=api_port, combiner_port=combiner_port, data_dir=data_dir)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    _print_settings("Starting Scaleout Edge server (controller + combiner) with settings:", settings)
    click.secho(LOCAL_MODE_WARNING, fg="yellow", err=True)
    api_url = f"http://{settings.host}:{settings.api_port}"
    combiner_cmd = [
        sys.executable, "-m", "scaleout", "combiner", "start",
        "--controller", api_url, "--host", settings.host, "--port", str(settings.combiner_port),
        "--name", settings.combiner_name, "--data-dir", str(settings.data_dir), "--log-level", log_level,
    ]
    if config:
        combiner_cmd += ["--config", config]
    combiner = subprocess.Popen(combiner_cmd, preexec_fn=_die_with_parent)

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
    click.echo(f"Start clients with: scaleout client start --api-url {api_url}")
    try:
        _run_controller(settings)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_combiner()
        signal.signal(signal.SIGTERM, previous)
        click.echo("Server stopped.")
    if _combiner_failed.is_set():
        sys.exit(1)


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

