"""Building the controller process from its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaleout_server.controller.app_factory import build_controller_app
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings, load_settings


def test_local_repository_is_opened_at_the_configured_path(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data", repository_path=str(tmp_path / "models"))
    app, controller = build_controller_app(settings)
    try:
        assert isinstance(controller.repository, LocalRepository)
        assert controller.repository.root == (tmp_path / "models").resolve()
        assert app.state.controller is controller
    finally:
        controller.close()
        controller.store.close()


def test_unknown_repository_type_is_refused_instead_of_ignored(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data", repository_type="ftp")
    with pytest.raises(ValueError, match="unknown repository type 'ftp'; known types: local, s3"):
        build_controller_app(settings)


def test_a_malformed_numeric_setting_names_the_setting_and_its_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOUT_API_PORT", "eighty")
    with pytest.raises(ValueError, match="setting api_port must be an integer, got 'eighty'.*SCALEOUT_API_PORT"):
        load_settings()
