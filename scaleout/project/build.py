"""`scaleout run build`: call the project's `build()` in this process (typically it writes seed.npz).

The working directory is left alone, so a build that writes to "." writes where the user ran the command.
"""

from __future__ import annotations

import os
from pathlib import Path

from scaleout.project.config import ProjectError, load_project
from scaleout.project.loader import call_entrypoint

OUTPUT_DIR_ENV = "SCALEOUT_BUILD_OUTPUT_DIR"


def run_build(path: Path | str, output_dir: Path | str | None = None) -> None:
    """Call entry point `build()` of the project in `path`.

    With `output_dir`, SCALEOUT_BUILD_OUTPUT_DIR is set to its absolute path (the folder is created) for the
    duration of the call and restored afterwards; without it the environment is left as it is.
    """
    project = load_project(path)
    if project.build is None:
        raise ProjectError(
            f"{project.project_file} declares no entry_points.build: add 'build: build.py' naming a file that "
            "defines build()"
        )
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
