"""The published `scaleout` client packages, each in its own throwaway venv.

They share our import names (`scaleout`, `scaleoututil`), so they must never be installed into the
project's environment: each version gets a venv under `.cache/interop/` (git-ignored), built once
from the package registry and reused by later runs while its marker says the same requirement.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "interop"
MARKER = ".scaleout-requirement"


@dataclass(frozen=True)
class Published:
    """One published client release line and the Python it runs on."""

    label: str  # test id: 1.0.7 | 1.1
    requirement: str
    python: str  # major.minor

    @property
    def venv(self) -> Path:
        return CACHE / f"scaleout-{self.label}"

    @property
    def scaleout(self) -> Path:
        return self.venv / "bin" / "scaleout"


PUBLISHED = (
    Published("1.0.7", "scaleout==1.0.7", "3.11"),
    Published("1.1", "scaleout>=1.1,<1.2", "3.12"),
)


def find_python(minor: str) -> str:
    """A working `pythonX.Y`: pyenv's install first (its PATH shim fails unless the version is
    selected), else from PATH."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = sorted(glob.glob(f"{root}/versions/{minor}.*/bin/python{minor}"), reverse=True)
    on_path = shutil.which(f"python{minor}")
    for candidate in [*candidates, *([on_path] if on_path else [])]:
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    raise RuntimeError(f"Python {minor} is needed for the published scaleout client but was not found "
                       f"under {root}/versions or on PATH (install it with: pyenv install {minor})")


def ensure_venv(release: Published) -> Published:
    """Build the release's venv unless the cache already holds it; safe against parallel runs."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{release.label}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = release.venv / MARKER
        if release.scaleout.exists() and marker.exists() and marker.read_text() == release.requirement:
            return release
        shutil.rmtree(release.venv, ignore_errors=True)
        _run([find_python(release.python), "-m", "venv", str(release.venv)])
        _run([str(release.venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
              release.requirement])
        marker.write_text(release.requirement)
    return release


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")


def client_env(home: Path, poll_interval: int = 1) -> dict[str, str]:
    """What an official process needs here: its own HOME (contexts, token cache), plaintext gRPC
    (1.0.7 dials TLS unless told otherwise; our combiner speaks plaintext), a short poll interval,
    and none of our venv's variables."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env.update({"HOME": str(home), "PYTHONPATH": "", "SCALEOUT_GRPC_SECURE": "false",
                "SCALEOUT_CLIENT_TASK_POLLING_INTERVAL": str(poll_interval), "PYTHONUNBUFFERED": "1"})
    return env


def for_published_clients(project_dir: Path) -> Path:
    """The published ScaleoutModel builds models with `from_training_model`; the seed's example
    calls `from_model_params`, which only ours has. Rename the call (ours has both) in place."""
    startup = project_dir / "client" / "startup.py"
    startup.write_text(startup.read_text().replace("ScaleoutModel.from_model_params(",
                                                   "ScaleoutModel.from_training_model("))
    return project_dir
