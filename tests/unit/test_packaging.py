"""The installed distribution declares every third-party package its code imports.

Tests run with the `dev` extra installed, so a runtime import that is only satisfied by a dev tool
(httpx once was) passes every other test and breaks `pip install .` on a fresh machine.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWN = {"scaleout", "scaleoututil", "scaleout_server"}


def _runtime_requirements() -> set[str]:
    """[project.dependencies] plus the user-facing extras (e.g. `ray`, imported only by the backend that needs
    it, with an install hint); never the `dev` extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [req for name, reqs in project.get("optional-dependencies", {}).items() if name != "dev" for req in reqs]
    return {re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower().replace("_", "-")
            for req in [*project["dependencies"], *extras]}


def _imported_top_level_modules() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in OWN:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_runtime_dependency() -> None:
    declared = _runtime_requirements()
    distributions = packages_distributions()
    missing = []
    for module, where in sorted(_imported_top_level_modules().items()):
        if module in OWN or module in sys.stdlib_module_names or module == "__future__":
            continue
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not dists & declared:
            missing.append(f"{module} (imported in {where}; distribution {sorted(dists)})")
    assert not missing, "add to [project.dependencies]: " + "; ".join(missing)
