"""`python_env.yaml`: the pip requirements a project needs, installed into the running interpreter.

Environment management is the user's choice (`scaleout run install`): we install into whatever
interpreter runs scaleout, and never install our own packages from PyPI over this installation.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import yaml

from scaleout.project.config import ProjectConfig, ProjectError

DEFAULT_ENV_NAME = "scaleout_env"
ALLOWED_KEYS = ("name", "python", "build_dependencies", "dependencies")
# Provided by this installation; the official PyPI packages share the import names and would overwrite it.
PROVIDED_PACKAGES = frozenset({"scaleout", "scaleoututil", "fedn"})
_STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class PythonEnv:
    """The content of a project's python_env.yaml."""

    name: str = DEFAULT_ENV_NAME
    python: str = field(default_factory=platform.python_version)
    build_dependencies: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()


def read_python_env(project: ProjectConfig) -> PythonEnv:
    """Parse and validate the project's python_env file; ProjectError if it has none or it is malformed."""
    env_file = project.python_env_file
    if env_file is None:
        raise ProjectError(f"{project.project_file} names no python_env: add 'python_env: python_env.yaml'")
    try:
        raw = yaml.safe_load(env_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProjectError(f"{env_file} is not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ProjectError(f"cannot read {env_file}: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ProjectError(f"{env_file} must be a YAML mapping with keys {', '.join(ALLOWED_KEYS)}")
    unknown = sorted(str(key) for key in raw if key not in ALLOWED_KEYS)
    if unknown:
        raise ProjectError(
            f"{env_file}: unknown key(s) {', '.join(unknown)}; allowed keys are {', '.join(ALLOWED_KEYS)}"
        )
    values: dict[str, object] = {}
    for key in ("name", "python"):
        if raw.get(key) is not None:
            value = raw[key]
            if not isinstance(value, str):
                raise ProjectError(
                    f"{env_file}: {key} must be a string (quote it, e.g. {key}: \"{value}\"), "
                    f"not {type(value).__name__} {value!r}"
                )
            values[key] = value
    for key in ("build_dependencies", "dependencies"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            raise ProjectError(
                f"{env_file}: {key} must be a list of pip requirement strings (e.g. ['numpy>=1.26']), not {value!r}"
            )
        values[key] = tuple(item.strip() for item in value)
    return PythonEnv(**values)  # type: ignore[arg-type]


def split_provided(requirements: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split requirements into (to install, skipped because this installation provides them)."""
    keep: list[str] = []
    skipped: list[str] = []
    for requirement in requirements:
        (skipped if _project_name(requirement) in PROVIDED_PACKAGES else keep).append(requirement)
    return keep, skipped


def install_requirements(project: ProjectConfig, pip_args: Sequence[str] = ()) -> list[str]:
    """pip-install the project's build_dependencies, then its dependencies, into the running interpreter.

    Returns the requirements passed to pip ([] when the project names no python_env or nothing is left
    after dropping scaleout/scaleoututil/fedn). ProjectError with the tail of pip's stderr on failure.
    """
    if project.python_env is None:
        return []
    env = read_python_env(project)
    installed: list[str] = []
    for group in (env.build_dependencies, env.dependencies):
        requirements, _ = split_provided(group)
        if requirements:
            _pip_install(requirements, pip_args, project)
            installed.extend(requirements)
    return installed


def _pip_install(requirements: list[str], pip_args: Sequence[str], project: ProjectConfig) -> None:
    # A requirements file keeps environment markers and options exactly as the user wrote them.
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="scaleout-requirements-", delete=False) as handle:
        handle.write("\n".join(requirements) + "\n")
        requirements_file = handle.name
    command = [sys.executable, "-m", "pip", "install", *pip_args, "-r", requirements_file]
    environment = {**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    except OSError as exc:
        raise ProjectError(f"cannot run pip with {sys.executable}: {exc}") from exc
    finally:
        os.unlink(requirements_file)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-_STDERR_TAIL_LINES:])
        raise ProjectError(
            f"pip could not install {', '.join(requirements)} from {project.python_env} "
            f"(exit code {result.returncode}):\n{tail}"
        )


def _project_name(requirement: str) -> str:
    """The normalized distribution name of a requirement line ('' for options, URLs and paths)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        return ""
    name = match.group(1)
    rest = requirement.strip()[len(name):].lstrip()
    if not rest or rest[0] in "@[<>=!~;(":
        return re.sub(r"[-_.]+", "-", name).lower()
    return ""
