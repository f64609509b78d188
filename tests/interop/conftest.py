"""Fixtures for the interop tests: the published client venvs (built once, cached) and one real
server per test module that every release's clients talk to."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import deployment as deployment  # noqa: F401  (one running server per module)
from tests.e2e.conftest import pytest_runtest_makereport  # noqa: F401  (deployment logs on failure)
from tests.e2e.deployment import Deployment, Proc, wait_until
from tests.interop.official import PUBLISHED, REPO, Published, client_env, ensure_venv, for_published_clients


@pytest.fixture(scope="session", params=PUBLISHED, ids=[r.label for r in PUBLISHED])
def release(request: pytest.FixtureRequest) -> Published:
    return ensure_venv(request.param)


class Official:
    """The published CLI and client of one release, run against a deployment."""

    def __init__(self, release: Published, dep: Deployment, home: Path) -> None:
        self.release = release
        self.dep = dep
        self.home = home

    def cli(self, *args: str, cwd: Path | None = None, api: bool = True) -> str:
        """Run `scaleout ARGS` of the release (with the controller's address when `api`); its output."""
        command = [str(self.release.scaleout), *args]
        if api:
            command += ["-H", "127.0.0.1", "-P", str(self.dep.api_port), "-p", "http"]
        result = subprocess.run(command, cwd=cwd or self.dep.root, capture_output=True, text=True, timeout=240,
                                env=client_env(self.home))
        output = result.stdout + result.stderr
        if result.returncode != 0 or "Traceback" in output:
            raise AssertionError(f"official {self.release.label}: scaleout {' '.join(args)} failed "
                                 f"({result.returncode}):\n{output[-4000:]}")
        return output

    def start_client(self, name: str, cwd: Path, *extra: str, env: dict[str, str] | None = None,
                     wait: bool = True) -> Proc:
        """`scaleout client start` of the release in `cwd` (which holds client/ unless --remote-package)."""
        cwd.mkdir(parents=True, exist_ok=True)
        command = [str(self.release.scaleout), "client", "start", "--api-url", self.dep.api_url, "-n", name,
                   "--disable-managed-env", *extra]
        proc = self.dep._spawn(f"client-{name}", command, cwd=cwd,
                               env={**client_env(self.home / name), **(env or {})})
        if wait:
            self.dep.wait_online([name], proc=proc)
        return proc


@pytest.fixture
def official(release: Published, deployment: Deployment, tmp_path: Path) -> Iterator[Official]:  # noqa: F811
    yield Official(release, deployment, tmp_path / "home")
    deployment.stop_clients()
    wait_until(lambda: not deployment.online_clients(), 20, 0.2, "stopped clients to be seen offline")


def project_copy(source: Path, dest: Path) -> Path:
    """A copy of a project folder (holding client/) that the published clients can run."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.npz", "*.tgz"))
    return for_published_clients(dest)


SEED_EXAMPLE = REPO / "examples" / "importer-client"
WEIGHTED = REPO / "tests" / "e2e" / "projects" / "weighted"
