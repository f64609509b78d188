"""Find a helper plugin by name, plus the small JSON file contract used by dispatcher-mode clients."""

from __future__ import annotations

import importlib
import json
import pkgutil
from typing import Any

from scaleoututil.helpers import plugins
from scaleoututil.helpers.helperbase import HelperBase


def available_helpers() -> list[str]:
    """Names of the plugin modules shipped in `scaleoututil.helpers.plugins`, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(plugins.__path__) if not m.name.startswith("_"))


def get_helper(name: str) -> HelperBase:
    """`Helper()` from `scaleoututil.helpers.plugins.<name>`.

    Only plain identifiers naming a shipped plugin are accepted, so a helper name taken from a model's
    metadata or a settings file can never import an arbitrary module.
    """
    known = available_helpers()
    if not isinstance(name, str) or not name.isidentifier() or name not in known:
        raise ValueError(f"unknown helper {name!r}; available: {', '.join(known)}")
    module = importlib.import_module(f"{plugins.__name__}.{name}")
    return module.Helper()


def save_metadata(metadata: dict[str, Any], filename: str) -> None:
    """Write `metadata` as JSON to `<filename>-metadata` (the dispatcher's training output contract)."""
    with open(filename + "-metadata", "w", encoding="utf-8") as fh:
        json.dump(metadata, fh)


def load_metadata(filename: str) -> dict[str, Any]:
    """Read what `save_metadata(…, filename)` wrote."""
    with open(filename + "-metadata", encoding="utf-8") as fh:
        return json.load(fh)


def save_metrics(metrics: dict[str, Any], filename: str) -> None:
    """Write `metrics` as JSON to `filename` itself (the dispatcher's validation output contract)."""
    with open(filename, "w", encoding="utf-8") as fh:
        json.dump(metrics, fh)
