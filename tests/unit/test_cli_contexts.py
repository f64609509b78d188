"""CLI contexts on disk, in the published CLI's layout: adding, choosing, removing, and its older format."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scaleout.cli import contexts


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCALEOUT_HOME_DIR", str(tmp_path))
    return tmp_path / ".scaleout"


def test_a_login_is_added_as_the_published_cli_writes_it_and_a_second_login_to_the_same_host_replaces_it(
        home: Path) -> None:
    assert contexts.add("http://127.0.0.1:8092", "t1") == 0
    assert contexts.add("https://edge.example.com", "t2") == 1
    assert contexts.add("http://127.0.0.1:8092", "t3") == 0
    assert yaml.safe_load((home / "contexts.yaml").read_text()) == [
        {"name": "127.0.0.1:8092", "host": "http://127.0.0.1:8092", "token": "t3"},
        {"name": "edge.example.com", "host": "https://edge.example.com", "token": "t2"}]
    assert yaml.safe_load((home / "active.yaml").read_text()) == {"active_index": 0}
    assert (home / "contexts.yaml").stat().st_mode & 0o077 == 0


def test_removing_keeps_the_active_context_pointing_at_the_same_server() -> None:
    for host in ("http://a:1", "http://b:2", "http://c:3"):
        contexts.add(host, None)
    contexts.set_active(contexts.find("c:3"))
    assert contexts.remove(contexts.find("0")).host == "http://c:3"
    assert contexts.active_index() == 1
    assert contexts.remove(1).host == "http://b:2"  # the active one went: the first remaining takes over
    assert contexts.remove(0) is None and contexts.active() is None


def test_the_older_name_keyed_layout_is_read_and_unknown_selectors_list_the_known_ones(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "contexts.yaml").write_text(yaml.safe_dump({"prod": {"host": "https://p", "token": "x"}}))
    assert contexts.active() == contexts.Context("prod", "https://p", "x")  # none marked active: the first
    with pytest.raises(contexts.ContextError, match=r"known: \[0\] prod"):
        contexts.find("staging")
    with pytest.raises(contexts.ContextError, match="no context at index 4"):
        contexts.find("4")
