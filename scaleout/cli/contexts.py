"""CLI contexts: the servers `scaleout login` logged into, stored where the published CLI keeps them
(`$SCALEOUT_HOME_DIR` or the home folder, `.scaleout/contexts.yaml` holding a list of `{name, host,
token}` and `.scaleout/active.yaml` holding `{active_index}`), so both CLIs share them. API commands
given no `-H/--host` use the active context's host and token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

FOLDER = ".scaleout"


def home() -> Path:
    return Path(os.environ.get("SCALEOUT_HOME_DIR") or Path.home()) / FOLDER


def _read(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as exc:
        raise ContextError(f"cannot read {path}: {exc}; fix or delete the file") from None


def _write(path: Path, data: Any) -> None:
    """Through a temporary file: a crash never leaves half a contexts file (it holds tokens: mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, default_flow_style=False)
    partial.replace(path)


class ContextError(Exception):
    """A context file that cannot be read, or a context that does not exist."""


@dataclass
class Context:
    name: str
    host: str
    token: str | None = None


def load() -> list[Context]:
    data = _read(home() / "contexts.yaml") or []
    if isinstance(data, dict):  # the published CLI's older {name: {...}} layout
        data = [{"name": name, **(value or {})} for name, value in data.items()]
    out = []
    for index, item in enumerate(data if isinstance(data, list) else []):
        if isinstance(item, dict) and item.get("host"):
            out.append(Context(name=str(item.get("name") or f"context-{index}"), host=str(item["host"]),
                               token=item.get("token") or None))
    return out


def save(contexts: list[Context]) -> None:
    _write(home() / "contexts.yaml", [{"name": c.name, "host": c.host, "token": c.token} for c in contexts])


def active_index() -> int | None:
    data = _read(home() / "active.yaml")
    index = data.get("active_index") if isinstance(data, dict) else None
    return index if isinstance(index, int) and not isinstance(index, bool) else None


def set_active(index: int | None) -> None:
    path = home() / "active.yaml"
    if index is None:
        path.unlink(missing_ok=True)
    else:
        _write(path, {"active_index": index})


def active() -> Context | None:
    """The active context (the first one when none is marked active, as the published CLI does)."""
    contexts = load()
    if not contexts:
        return None
    index = active_index()
    return contexts[index] if index is not None and 0 <= index < len(contexts) else contexts[0]


def add(host: str, token: str | None) -> int:
    """Save a login and make it active; a context with the same name and host is replaced. Its index."""
    name = urlsplit(host).netloc or host
    contexts = load()
    for index, existing in enumerate(contexts):
        if existing.name == name and existing.host == host:
            contexts[index] = Context(name, host, token)
            break
    else:
        contexts.append(Context(name, host, token))
        index = len(contexts) - 1
    save(contexts)
    set_active(index)
    return index


def find(selector: str) -> int:
    """A context by index (`2`) or name; ContextError listing the known ones otherwise."""
    contexts = load()
    if selector.isdigit():
        index = int(selector)
        if index < len(contexts):
            return index
        raise ContextError(f"no context at index {index}; " + _known(contexts))
    for index, context in enumerate(contexts):
        if context.name == selector:
            return index
    raise ContextError(f"no context named {selector!r}; " + _known(contexts))


def _known(contexts: list[Context]) -> str:
    if not contexts:
        return "there are none yet: create one with `scaleout login <server url>`"
    return "known: " + ", ".join(f"[{i}] {c.name}" for i, c in enumerate(contexts))


def remove(index: int) -> Context | None:
    """Remove a context; when it was the active one the first remaining becomes active. The new active one."""
    contexts = load()
    was_active = active_index()
    contexts.pop(index)
    save(contexts)
    if not contexts:
        set_active(None)
        return None
    if was_active == index:
        set_active(0)
    elif was_active is not None and was_active > index:
        set_active(was_active - 1)
    return active()
