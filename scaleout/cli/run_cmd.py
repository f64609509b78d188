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
from scaleout.project.environment import install_requirements, read_python_env, split_provided
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
    click.echo(
        f"Built project {_shown(project.path)} ({project.build}:build) in {elapsed:.1f} s; "
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

    \b
      scaleout run install -p client
    """
    try:
        project = load_project(_project_path(path))
        if project.python_env is None:
            click.echo(f"Nothing to install: {_shown(project.project_file)} names no python_env.")
            return
        env = read_python_env(project)
        _, skipped = split_provided([*env.build_dependencies, *env.dependencies])
        installed = install_requirements(project)
    except ProjectError as exc:
        raise _fail(exc) from exc
    if skipped:
        click.echo(f"Skipped (provided by this installation): {', '.join(skipped)}")
    if installed:
        click.echo(f"Installed into {sys.executable}: {', '.join(installed)}")
    else:
        click.echo(f"Nothing to install: {project.python_env} lists no requirements beyond scaleout itself.")
