"""Reading and validating a project's `scaleout.yaml` (the compute package's project file).

Everything that can be wrong with a project is checked here, once, so that `run build`,
`package create` and `client start` all fail early with the same message that says what to fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

PROJECT_FILE = "scaleout.yaml"
KNOWN_ENTRY_POINTS = ("build", "startup")  # the importer's entry points: .py files defining build()/startup(client)
DISPATCHER_TASKS = ("train", "validate", "predict")  # `client start --dispatcher` runs these commands


class ProjectError(Exception):
    """A project (compute package) is missing, malformed or failed; the message says what to fix."""


@dataclass
class ProjectConfig:
    """A validated project: its folder, the entry-point file names and the raw yaml mapping.

    Entry points come in two forms: importer files (`startup: startup.py`, kept in `entry_points`) and
    legacy dispatcher commands (`train: {command: python train.py}`, kept in `commands`).
    """

    path: Path
    python_env: str | None
    build: str | None
    startup: str | None
    raw: dict[str, Any] = field(repr=False)
    commands: dict[str, str] = field(default_factory=dict)

    @property
    def project_file(self) -> Path:
        return self.path / PROJECT_FILE

    @property
    def entry_points(self) -> dict[str, str]:
        """All importer-style entry points, name -> file relative to the project folder."""
        return {str(k): v.strip() for k, v in (self.raw.get("entry_points") or {}).items() if isinstance(v, str)}

    def entry_point_file(self, name: str) -> Path:
        """The absolute file of entry point `name`; ProjectError if the project does not declare it."""
        relative = self.entry_points.get(name)
        if relative is None:
            if name in self.commands:
                raise ProjectError(
                    f"{self.project_file}: entry_points.{name} is a dispatcher command ({self.commands[name]!r}); "
                    f"start the client with --dispatcher to run command entry points, or name a .py file defining "
                    f"{name}() instead (e.g. '{name}: {name}.py')"
                )
            hint = ""
            if any(task in self.commands for task in DISPATCHER_TASKS):
                hint = (f" (this project declares dispatcher commands for "
                        f"{', '.join(t for t in DISPATCHER_TASKS if t in self.commands)}: start the client with "
                        "--dispatcher to run them)")
            raise ProjectError(
                f"{self.project_file} declares no entry_points.{name}: add e.g. '{name}: {name}.py' under "
                f"entry_points{hint}"
            )
        return self.path / relative

    def command(self, name: str) -> str:
        """The command line of dispatcher entry point `name`; ProjectError naming file and key when the
        project does not declare it in the `name: {command: ...}` form."""
        if name in self.commands:
            return self.commands[name]
        example = f"'{name}: {{command: python {name}.py}}'"
        value = (self.raw.get("entry_points") or {}).get(name)
        if value is None:
            raise ProjectError(
                f"{self.project_file} declares no entry_points.{name}: dispatcher mode (--dispatcher) runs it as a "
                f"command; add {example} under entry_points"
            )
        raise ProjectError(
            f"{self.project_file}: entry_points.{name} is {_describe(value)}, but dispatcher mode (--dispatcher) "
            f"needs a mapping with a command line, e.g. {example}"
        )

    @property
    def python_env_file(self) -> Path | None:
        return None if self.python_env is None else self.path / self.python_env


def load_project(path: Path | str) -> ProjectConfig:
    """Read and validate `path/scaleout.yaml`; raise ProjectError naming the problem and the fix."""
    folder = Path(path)
    if not folder.exists():
        raise ProjectError(f"project folder {folder} does not exist: pass the client folder that holds {PROJECT_FILE}")
    if not folder.is_dir():
        raise ProjectError(f"{folder} is not a folder: pass the client folder that holds {PROJECT_FILE}")
    folder = folder.resolve()
    project_file = folder / PROJECT_FILE
    if not project_file.is_file():
        raise ProjectError(
            f"{folder} has no {PROJECT_FILE}: a project's client folder needs one, with entry_points.build and "
            "entry_points.startup naming .py files"
        )
    try:
        with open(project_file, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)  # a file handle makes the YAML error name the file
    except yaml.YAMLError as exc:
        raise ProjectError(f"{project_file} is not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"cannot read {project_file}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProjectError(
            f"{project_file} must be a YAML mapping with an entry_points mapping (e.g. 'entry_points: "
            f"{{startup: startup.py, build: build.py}}'), not {_describe(raw)}"
        )

    entry_points, commands = _validate_entry_points(project_file, raw.get("entry_points"))
    for name, relative in entry_points.items():
        if name in KNOWN_ENTRY_POINTS:  # other keys are not imported (the published clients ignore them too)
            _check_project_file(folder, project_file, f"entry_points.{name}", relative, python=True)

    python_env = raw.get("python_env")
    if python_env is not None:
        if not isinstance(python_env, str) or not python_env.strip():
            raise ProjectError(
                f"{project_file}: python_env must name a yaml file in the project folder (e.g. "
                f"'python_env: python_env.yaml'), not {_describe(python_env)}; remove the key to manage the "
                "environment yourself"
            )
        python_env = python_env.strip()
        _check_project_file(folder, project_file, "python_env", python_env, python=False)

    return ProjectConfig(
        path=folder,
        python_env=python_env,
        build=entry_points.get("build"),
        startup=entry_points.get("startup"),
        raw=raw,
        commands=commands,
    )


def find_project_dir(root: Path | str) -> Path:
    """The project folder for `root`: root itself if it holds scaleout.yaml, else the first folder (sorted walk)
    under `root/client` that does, as `client start --local-package` expects."""
    root = Path(root)
    if (root / PROJECT_FILE).is_file():
        return root
    client = root / "client"
    if client.is_dir():
        for current, dirnames, filenames in os.walk(client):
            dirnames.sort()
            if PROJECT_FILE in filenames:
                return Path(current)
    raise ProjectError(
        f"no client folder with {PROJECT_FILE} under {root}: run from the project folder that holds client/, "
        "or pass the client folder itself"
    )


def _validate_entry_points(project_file: Path, value: object) -> tuple[dict[str, str], dict[str, str]]:
    """Split entry points into importer files and dispatcher command lines, refusing any other shape."""
    if value is None or value == {} or value == []:
        raise ProjectError(
            f"{project_file} has no entry_points: add 'entry_points:' with 'startup: startup.py' (a file defining "
            "startup(client)) and 'build: build.py' (a file defining build())"
        )
    if not isinstance(value, dict):
        raise ProjectError(
            f"{project_file}: entry_points must be a mapping such as '{{startup: startup.py, build: build.py}}', "
            f"not {_describe(value)}"
        )
    entry_points: dict[str, str] = {}
    commands: dict[str, str] = {}
    for key, target in value.items():
        name = str(key)
        if isinstance(target, dict) and "command" in target:
            command = target["command"]
            if not isinstance(command, str) or not command.strip():
                raise ProjectError(
                    f"{project_file}: entry_points.{name}.command must be a command line such as "
                    f"'python {name}.py', not {_describe(command)}"
                )
            commands[name] = command.strip()
        elif isinstance(target, str) and target.strip():
            entry_points[name] = target.strip()
        else:
            raise ProjectError(
                f"{project_file}: entry_points.{name} must name a .py file in the project folder (e.g. "
                f"'{name}: {name}.py'), or, for dispatcher mode, be a mapping with a command line (e.g. "
                f"'{name}: {{command: python {name}.py}}'), not {_describe(target)}"
            )
    if "startup" not in entry_points and not commands:  # command entry points make it a dispatcher project
        raise ProjectError(
            f"{project_file} has no entry_points.startup: add 'startup: startup.py' naming a file that defines "
            "startup(client) and registers your callbacks"
        )
    return entry_points, commands


def _check_project_file(folder: Path, project_file: Path, key: str, relative: str, *, python: bool) -> None:
    """The file named by `key` must exist inside the project folder (packages carry only that folder)."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or Path(relative).is_absolute():
        raise ProjectError(
            f"{project_file}: {key} is '{relative}', but it must be a path relative to the project folder "
            "(the package holds only that folder)"
        )
    if python and pure.suffix != ".py":
        raise ProjectError(f"{project_file}: {key} is '{relative}', but it must name a .py file")
    if not (folder / relative).is_file():
        raise ProjectError(
            f"{project_file}: {key} names {relative}, which does not exist in {folder}: create it or fix the name"
        )


def _describe(value: object) -> str:
    if value is None:
        return "an empty value"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
