"""Server settings: one object, from a YAML file, overridden by `SCALEOUT_*` environment
variables, overridden by command-line flags (applied by the CLI)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    api_port: int = 8092
    combiner_port: int = 12080
    data_dir: Path = field(default_factory=lambda: Path("scaleout-data"))
    # statestore: a SQLAlchemy URL; empty means SQLite in data_dir
    store_url: str = ""
    # model repository: "local" (a folder in data_dir) for now
    repository_type: str = "local"
    repository_path: str = ""
    # combiner
    combiner_name: str = "combiner"
    controller_url: str = ""  # where a stand-alone combiner registers
    public_hostname: str = ""  # host clients dial; defaults to `host`
    # limits
    max_upload_bytes: int = 2 * 1024**3
    max_package_bytes: int = 512 * 1024**2
    # client liveness: a client not heard from for this long counts as offline
    client_offline_after: float = 15.0
    # hold a poll that announces its interval (official 1.1 clients) until a task arrives or the
    # interval is over, instead of answering at once: tasks reach them without the polling wait
    hold_interval_polls: bool = True

    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite:///{(Path(self.data_dir) / 'scaleout.db').resolve()}"

    def resolved_repository_path(self) -> Path:
        return Path(self.repository_path) if self.repository_path else Path(self.data_dir) / "repository"

    def masked(self) -> dict[str, Any]:
        """For printing at start: every value, secrets hidden."""
        out = {k: str(v) for k, v in dataclasses.asdict(self).items()}
        out["store_url"] = self.resolved_store_url()
        out["repository_path"] = str(self.resolved_repository_path().resolve())
        if "@" in out["store_url"]:
            scheme, rest = out["store_url"].split("://", 1)
            out["store_url"] = f"{scheme}://***@{rest.split('@', 1)[1]}"
        return out


ENV_PREFIX = "SCALEOUT_"


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> ServerSettings:
    """YAML file (optional) < `SCALEOUT_<FIELD>` environment variables < explicit overrides (None ignored)."""
    values: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
        values.update(loaded)
    names = {f.name: f for f in dataclasses.fields(ServerSettings)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; valid: {sorted(names)}")
    for name in names:
        env = os.environ.get(ENV_PREFIX + name.upper())
        if env is not None and env != "":
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = ServerSettings()
    for name, value in values.items():
        current = getattr(settings, name)
        try:
            if isinstance(current, bool):
                value = str(value).lower() in ("1", "true", "yes", "on") if not isinstance(value, bool) else value
            elif isinstance(current, int):
                value = int(value)
            elif isinstance(current, float):
                value = float(value)
            elif isinstance(current, Path):
                value = Path(value)
        except (TypeError, ValueError):
            # the bare int()/float() error would not say which setting, or where it came from
            kind = "an integer" if isinstance(current, int) else "a number" if isinstance(current, float) else "a path"
            raise ValueError(f"setting {name} must be {kind}, got {value!r} (from the settings file, "
                             f"{ENV_PREFIX}{name.upper()} or a command-line flag)") from None
        setattr(settings, name, value)
    return settings
