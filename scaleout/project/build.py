"""`scaleout run build`: call the project's `build()` in this process (typically it writes seed.npz).

The working directory is left alone, so a build that writes to "." writes where the user ran the command.
A dispatcher-style `build: {command: ...}` runs as a child process in the project folder instead, with
SCALEOUT_BUILD_OUTPUT_DIR always set (to -o, else the variable's value, else the user's folder), so the
seed lands in the same place either way.
"""

from __future__ import annotations

import os
from pathlib import Path

from scaleout.project.commands import CommandStopped, child_environment, entry_point_argv, run_command
from scaleout.project.config import ProjectConfig, ProjectError, load_project
from scaleout.project.loader import call_entrypoint

OUTPUT_DIR_ENV = "SCALEOUT_BUILD_OUTPUT_DIR"


def run_build(path: Path | str, output_dir: Path | str | None = None) -> None:
    """Call entry point `build()` of the project in `path`.

    With `output_dir`, SCALEOUT_BUILD_OUTPUT_DIR is set to its absolute path (the folder is created) for the
    duration of the call and restored afterwards; without it the environment is left as it is.
    """
    project = load_project(path)
    if project.build is None and "build" not in project.commands:
        raise ProjectError(
            f"{project.project_file} declares no entry_points.build: add 'build: build.py' naming a file that "
            "defines build() (or, for a dispatcher project, 'build: {command: python build.py}')"
        )
    if project.build is None:
        run_build_command(project, build_output_dir(output_dir))
        return
    if output_dir is None:
        call_entrypoint(project, "build")
        return

    target = Path(output_dir).resolve()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProjectError(f"cannot create build output folder {target}: {exc}") from exc
    previous = os.environ.get(OUTPUT_DIR_ENV)
    os.environ[OUTPUT_DIR_ENV] = str(target)
    try:
        call_entrypoint(project, "build")
    finally:
        if previous is None:
            os.environ.pop(OUTPUT_DIR_ENV, None)
        else:
            os.environ[OUTPUT_DIR_ENV] = previous


def build_output_dir(output_dir: Path | str | None = None) -> Path:
    """Where a build writes: `output_dir`, else $SCALEOUT_BUILD_OUTPUT_DIR, else the current directory."""
    if output_dir is not None:
        return Path(output_dir).resolve()
    return Path(os.environ.get(OUTPUT_DIR_ENV) or ".").resolve()


def run_build_command(project: ProjectConfig, output_dir: Path) -> None:
    """Run `entry_points.build.command` in the project folder with SCALEOUT_BUILD_OUTPUT_DIR=output_dir."""
    line = project.commands["build"]
    argv = entry_point_argv(project, "build")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProjectError(f"cannot create build output folder {output_dir}: {exc}") from exc
    try:
        result = run_command(argv, project.path, env=child_environment({OUTPUT_DIR_ENV: str(output_dir)}))
    except (OSError, CommandStopped) as exc:
        raise ProjectError(f"cannot run the build command {line!r} in {project.path}: {exc}") from exc
    if not result.ok:
        raise ProjectError(f"the build command {line!r} of {project.project_file} {result.exit_text()}. "
                           f"{result.tail_text()}")
