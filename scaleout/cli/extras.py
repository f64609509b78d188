"""Commands that run a server need the `server` extra; an edge install (`pip install scaleout-edge-open`)
has only the client. Such a command says which extra to install instead of failing on an import deep
inside the server."""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

DISTRIBUTION = "scaleout-edge-open"
SERVER_EXTRA = "server"
INSTALL_SERVER = f"pip install '{DISTRIBUTION}[{SERVER_EXTRA}]'"

F = TypeVar("F", bound=Callable[..., Any])


def missing_extra_packages(extra: str) -> list[str]:
    """The packages that `extra` of this distribution lists and this environment lacks. The list comes
    from the installed metadata (pyproject.toml's extras), so it cannot drift from what the extra installs;
    a source tree run without installing has no metadata and is taken as complete."""
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    missing = []
    for requirement in requirements:
        name, _, marker = requirement.partition(";")
        if not re.search(rf"""extra\s*==\s*["']{re.escape(extra)}["']""", marker):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", name.strip())
        if match is None:
            continue
        try:
            importlib.metadata.version(match.group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(match.group(0))
    return missing


def needs_server(command: str) -> Callable[[F], F]:
    """Decorate a command callback (innermost, right above `def`) that runs server code: without the
    server extra it stops with one line that says what to install, exit code 1. `--help` still works."""

    def decorate(callback: F) -> F:
        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            missing = missing_extra_packages(SERVER_EXTRA)
            if missing:
                raise click.ClickException(
                    f"`{command}` is part of the server, which this client-only install lacks "
                    f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''} missing): {INSTALL_SERVER}")
            return callback(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate
