"""`python_env.yaml`: the pip requirements a project needs, installed into the running interpreter.

Environment management is the user's choice: `scaleout run install` installs once, `client start
--managed-env` installs at start and again whenever a new package arrives. We install into whatever
interpreter runs scaleout (a venv the user created and activated), never create environments ourselves, and
never install our own packages from PyPI over this installation. A marker file in the venv remembers what
was installed, so an unchanged python_env.yaml costs no pip run.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scaleout.project.config import ProjectConfig, ProjectError

DEFAULT_ENV_NAME = "scaleout_env"
ALLOWED_KEYS = ("name", "python", "build_dependencies", "dependencies")
# Provided by this installation; the official PyPI packages share the import names and would overwrite it.
PROVIDED_PACKAGES = frozenset({"scaleout", "scaleoututil", "fedn"})
_STDERR_TAIL_LINES = 20
ENV_MARKER = "scaleout-python-env.json"  # in sys.prefix of a managed venv: what was installed last
VENV_HINT = (
    "create one in the client's folder and start the client from it:\n"
    "  python -m venv .venv && source .venv/bin/activate   (Windows: .venv\\Scripts\\activate)\n"
    "  pip install <this scaleout installation, e.g. pip install -e /path/to/scaleout-edge-open>\n"
    "  scaleout client start --managed-env ...\n"
    "or leave out --managed-env and install the requirements yourself (scaleout run install -p client)"
)

logger = logging.getLogger(__name__)


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
    Always runs pip; sync_environment is the variant that skips an unchanged, already installed env.
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


def in_virtualenv() -> bool:
    """True when the running interpreter is a virtual environment (venv or virtualenv)."""
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def require_virtualenv(why: str = "--managed-env") -> None:
    """ProjectError explaining how to create a venv when the running interpreter is not one."""
    if not in_virtualenv():
        raise ProjectError(f"{why} installs python_env.yaml's dependencies into the active virtual environment, "
                           f"but {sys.executable} is not running in one: {VENV_HINT}")


@dataclass(frozen=True)
class EnvSync:
    """What sync_environment did: 'unmanaged' (no python_env), 'up-to-date' (marker matched, pip not run)
    or 'installed' (pip ran); the requirements involved and the ones skipped because scaleout provides them."""

    state: str
    requirements: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    marker: Path | None = None


def env_marker_path() -> Path:
    return Path(sys.prefix) / ENV_MARKER


def requirements_digest(env: PythonEnv) -> str:
    """SHA-256 of what an install depends on: both requirement lists (in order) and the interpreter version."""
    build, _ = split_provided(env.build_dependencies)
    deps, _ = split_provided(env.dependencies)
    text = json.dumps({"build_dependencies": build, "dependencies": deps, "python": platform.python_version()},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def sync_environment(project: ProjectConfig, *, require_venv: bool = True, pip_args: Sequence[str] = ()) -> EnvSync:
    """Bring the running environment in step with the project's python_env.yaml.

    No python_env in scaleout.yaml: nothing is done (the environment is the user's). Inside a venv, a marker
    in sys.prefix holds the digest of the last successful install; when it matches, pip is not run at all.
    Otherwise pip installs build_dependencies then dependencies (pip itself skips what is satisfied) and the
    marker is rewritten. `require_venv` refuses outside a venv (ProjectError saying how to create one);
    without it (`scaleout run install`) pip installs into whatever interpreter runs, and no marker is kept.
    """
    if project.python_env is None:
        return EnvSync("unmanaged")
    if require_venv:
        require_virtualenv()
    env = read_python_env(project)
    requirements, skipped = split_provided([*env.build_dependencies, *env.dependencies])
    digest = requirements_digest(env)
    marker = env_marker_path() if in_virtualenv() else None
    if marker is not None and _read_marker(marker) == digest:
        logger.info("python_env %s already installed in %s (marker %s): nothing to do",
                    project.python_env, sys.prefix, marker.name)
        return EnvSync("up-to-date", tuple(requirements), tuple(skipped), marker)
    installed = install_requirements(project, pip_args)
    importlib.invalidate_caches()  # packages new to site-packages become importable in this process
    if marker is not None:
        _write_marker(marker, digest, project, installed)
    logger.info("pip installed %s (from %s) into %s", ", ".join(installed) or "nothing", project.python_env,
                sys.prefix)
    return EnvSync("installed", tuple(installed), tuple(skipped), marker)


def _read_marker(marker: Path) -> str | None:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("digest") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _write_marker(marker: Path, digest: str, project: ProjectConfig, installed: list[str]) -> None:
    payload = {"digest": digest, "python": platform.python_version(), "requirements": installed,
               "python_env": str(project.python_env_file)}
    partial = marker.with_name(marker.name + ".partial")
    try:
        partial.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        partial.replace(marker)
    except OSError as exc:  # the install itself worked; without a marker the next start simply asks pip again
        logger.warning("cannot write %s (%s): the next start will run pip again", marker, exc)


def _pip_install(requirements: list[str], pip_args: Sequence[str], project: ProjectConfig) -> None:
    # A requirements file keeps environment markers and options exactly as the user wrote them.
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="scaleout-requirements-", delete=False) as handle:
        handle.write("\n".join(requirements) + "\n")
        requirements_file = handle.name
    command = [sys.executable, "-m", "pip", "install", *pip_args, "-r", requirements_file]
    environment = {**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        # cwd: relative paths in python_env.yaml (e.g. ./wheels/x.whl) are relative to the project folder
        result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False,
                                cwd=project.path)
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
