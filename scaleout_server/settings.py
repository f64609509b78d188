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
    # statestore: a SQLAlchemy URL (sqlite:////abs/file.db, postgresql+psycopg://user:pw@host:5432/db);
    # empty means SQLite in data_dir
    store_url: str = ""
    # model repository: "local" (a folder, default data_dir/repository) or "s3"
    repository_type: str = "local"
    repository_path: str = ""
    # S3 repository (repository_type s3). Empty endpoint: AWS itself. Empty keys: the standard AWS
    # sources (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, instance roles). Empty region:
    # AWS_REGION / AWS_DEFAULT_REGION, else us-east-1. The prefix lets deployments share a bucket.
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_prefix: str = ""
    # combiner
    combiner_name: str = "combiner"
    controller_url: str = ""  # where a stand-alone combiner registers
    combiner_token: str = ""  # a combiner's token for a secured controller (scaleout token create --role combiner)
    public_hostname: str = ""  # host clients dial; defaults to `host`
    # the byte path: large models over a plain TCP/TLS port beside gRPC, negotiated by our client (the
    # published clients keep ModelService.Upload/Download). 0: a free port; -1: off. Clients dial it on
    # the host they dial for gRPC, so expose it next to combiner_port (clients that cannot reach it fall
    # back to gRPC). Models under byte_path_min_bytes stay on gRPC.
    byte_port: int = 0
    byte_path_min_bytes: int = 16 * 1024**2
    # limits
    max_upload_bytes: int = 2 * 1024**3
    max_package_bytes: int = 512 * 1024**2
    max_model_bytes: int = 2 * 1024**3  # a model container: seed models (REST) and client updates (gRPC)
    max_chunk_bytes: int = 4 * 1024**2  # one gRPC FileChunk of a model upload (clients send 1 MiB)
    # requests per second and burst per client id on the combiner's client RPCs (0 = unlimited)
    client_rate_limit: float = 100.0
    client_rate_burst: int = 1000
    # POST /api/v1/clients/add per client (id, else address), per second and burst (0 = unlimited)
    registration_rate_limit: float = 1.0
    registration_burst: int = 20
    # TLS: the certificate chain and key this server presents (PEM files; both or neither). With them the
    # controller serves HTTPS and the combiner gRPC over TLS, and tells clients so.
    tls_cert: str = ""
    tls_key: str = ""
    # CA bundle (PEM) this server trusts when it connects to its peers (combiner -> controller over HTTPS,
    # controller -> combiner over TLS); empty: the system store
    tls_ca_file: str = ""
    # client liveness: a client not heard from for this long counts as offline
    client_offline_after: float = 15.0
    # hold a poll that announces its interval (official 1.1 clients) until a task arrives or the
    # interval is over, instead of answering at once: tasks reach them without the polling wait
    hold_interval_polls: bool = True
    # server functions (a session's ServerFunctions class, run in a child process): seconds each call
    # may take before the process is killed, and its memory cap in MiB (0 = none); past either, the
    # round falls back to the default behaviour
    server_functions_timeout: float = 30.0
    server_functions_memory_mb: int = 2048

    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite:///{(Path(self.data_dir) / 'scaleout.db').resolve()}"

    def resolved_repository_path(self) -> Path:
        return Path(self.repository_path) if self.repository_path else Path(self.data_dir) / "repository"

    def repository_description(self) -> dict[str, str]:
        """What `repository.factory.make_repository` opens (credentials included: keep it in-process)."""
        if self.repository_type == "s3":
            return {"type": "s3", "bucket": self.s3_bucket, "endpoint_url": self.s3_endpoint,
                    "region": self.s3_region, "prefix": self.s3_prefix,
                    "access_key": self.s3_access_key, "secret_key": self.s3_secret_key}
        return {"type": self.repository_type, "path": str(self.resolved_repository_path())}

    def masked(self) -> dict[str, Any]:
        """For printing at start: every value, secrets hidden."""
        out = {k: str(v) for k, v in dataclasses.asdict(self).items()}
        out["store_url"] = self.resolved_store_url()
        out["repository_path"] = str(self.resolved_repository_path().resolve())
        if "@" in out["store_url"]:
            scheme, rest = out["store_url"].split("://", 1)
            out["store_url"] = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        for secret in SECRET_SETTINGS:
            if out.get(secret):
                out[secret] = "***"
        return out


SECRET_SETTINGS = ("s3_secret_key", "combiner_token")


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
