"""Storage settings: YAML file < SCALEOUT_* environment variables, and what is printed at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaleout_server.settings import ServerSettings, load_settings


def test_storage_settings_come_from_yaml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(
        "store_url: postgresql+psycopg://scaleout:pw@db:5432/scaleout\n"
        "repository_type: s3\n"
        "s3_endpoint: http://objects:8333\n"
        "s3_bucket: from-yaml\n"
        "s3_region: eu-north-1\n"
        "s3_access_key: AKIAEXAMPLE\n"
        "s3_secret_key: yaml-secret\n")
    monkeypatch.setenv("SCALEOUT_S3_BUCKET", "from-env")
    monkeypatch.setenv("SCALEOUT_S3_PREFIX", "team-a")
    settings = load_settings(config)
    assert settings.resolved_store_url() == "postgresql+psycopg://scaleout:pw@db:5432/scaleout"
    assert settings.repository_description() == {
        "type": "s3", "bucket": "from-env", "endpoint_url": "http://objects:8333", "region": "eu-north-1",
        "prefix": "team-a", "access_key": "AKIAEXAMPLE", "secret_key": "yaml-secret"}


def test_default_storage_is_sqlite_and_a_folder_in_the_data_dir(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data")
    assert settings.resolved_store_url() == f"sqlite:///{(tmp_path / 'data' / 'scaleout.db').resolve()}"
    assert settings.repository_description() == {"type": "local", "path": str(tmp_path / "data" / "repository")}


def test_secrets_are_masked_when_settings_are_printed() -> None:
    settings = ServerSettings(store_url="postgresql+psycopg://scaleout:p@ss@db/scaleout", s3_secret_key="top-secret",
                              s3_access_key="AKIAEXAMPLE")
    shown = settings.masked()
    assert shown["store_url"] == "postgresql+psycopg://***@db/scaleout"
    assert shown["s3_secret_key"] == "***" and shown["s3_access_key"] == "AKIAEXAMPLE"
    assert "top-secret" not in str(shown) and "p@ss" not in str(shown)
    assert ServerSettings().masked()["s3_secret_key"] == ""  # nothing to hide: shown as unset
