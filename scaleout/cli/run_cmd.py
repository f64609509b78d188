"""`scaleout run build|install`: run a project's entry points on this machine."""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import click

from scaleout.cli.groups import run_group
from scaleout.project.build import build_output_dir, run_build
from scaleout.project.config import PROJECT_FILE, ProjectError, find_project_dir, load_project
from scaleout.project.environment import in_virtualenv, sync_environment
from scaleout.project.loader import UserCodeError

_PATH_HELP = (
    f"The project's client folder (the one holding {PROJECT_FILE}). A project folder with a client/ "
    "subfolder works too."
)


def _project_path(path: Path) -> Path:
    """Accept the client folder itself, or a project root whose client/ holds the scaleout.yaml."""
    if (path / PROJECT_FILE).is_file() or not (path / "client").is_dir():
        return path
    return find_project_dir(path)


def _fail(exc: ProjectError) -> click.ClickException:
    """Turn a project error into a CLI error; for errors in the user's own code, show their traceback."""
    if isinstance(exc, UserCodeError) and exc.__cause__ is not None:
        traceback.print_exception(exc.__cause__, file=sys.stderr)
    return click.ClickException(str(exc))


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@run_group.command("build")
@click.option("-p", "--path", "path", required=True, type=click.Path(path_type=Path, file_okay=False),
              help=_PATH_HELP)
@click.option("-o", "--output", "output", type=click.Path(path_type=Path, dir_okay=True, file_okay=False),
              default=None,
              help="Folder the build writes to (created if missing); passed to build() as "
                   "$SCALEOUT_BUILD_OUTPUT_DIR. Default: $SCALEOUT_BUILD_OUTPUT_DIR if set, else the current folder.")
def build_command(path: Path, output: Path | None) -> None:
    """Run the project's build() entry point in this process.

    A dispatcher-style entry point ('build: {command: python build.py}') runs as a child process in the
    project folder instead, with $SCALEOUT_BUILD_OUTPUT_DIR set to the output folder.

    \b
    build() usually creates the seed model, e.g. seed.npz in the current folder:
      scaleout run build -p client
      scaleout run build -p client -o build/      # writes build/seed.npz
    Upload the result with 'scaleout model set-active --file seed.npz'.
    """
    started = time.perf_counter()
    try:
        project = load_project(_project_path(path))
        run_build(project.path, output)
    except ProjectError as exc:
        raise _fail(exc) from exc
    elapsed = time.perf_counter() - started
    what = f"{project.build}:build" if project.build else f"command {project.commands['build']!r}"
    click.echo(
        f"Built project {_shown(project.path)} ({what}) in {elapsed:.1f} s; "
        f"output dir: {build_output_dir(output)}"
    )


@run_group.command("install")
@click.option("-p", "--path", "path", required=True, type=click.Path(path_type=Path, file_okay=False),
              help=_PATH_HELP)
def install_command(path: Path) -> None:
    """Install the project's python_env requirements.

    Installs build_dependencies, then dependencies, from the file named by python_env in scaleout.yaml,
    into the Python running scaleout ('<this python> -m pip install'). Activate the virtual environment
    you want first. Entries scaleout, scaleoututil and fedn are skipped: this installation provides them.
    Inside a virtual environment the installed set is remembered, so running it again with an unchanged
    python_env.yaml does nothing; 'scaleout client start --managed-env' does the same at every start.

    \b
      scaleout run install -p client
    """
    try:
        project = load_project(_project_path(path))
        if project.python_env is None:
            click.echo(f"Nothing to install: {_shown(project.project_file)} names no python_env.")
            return
        result = sync_environment(project, require_venv=False)
    except ProjectError as exc:
        raise _fail(exc) from exc
    if result.skipped:
        click.echo(f"Skipped (provided by this installation): {', '.join(result.skipped)}")
    if result.state == "up-to-date":
        click.echo(f"Already installed in {sys.prefix}: {', '.join(result.requirements) or 'nothing to install'} "
                   f"(unchanged {project.python_env}; pip not run).")
    elif result.requirements:
        click.echo(f"Installed into {sys.executable}: {', '.join(result.requirements)}")
    else:
        click.echo(f"Nothing to install: {project.python_env} lists no requirements beyond scaleout itself.")
    if not in_virtualenv():
        click.echo("Note: this Python is not a virtual environment, so pip will run again next time.")
