"""Statestore schema migrations on SQLite and a real PostgreSQL 15: from an empty database, from the
previous revision with data in it, from a database made before migrations existed, and the
`scaleout server migrate` command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner

from scaleout.cli.main import cli
from scaleout_server.store import records as r
from scaleout_server.store.base import SchemaMismatch
from scaleout_server.store.engine import make_engine
from scaleout_server.store.factory import make_store
from scaleout_server.store.migration import (
    BASELINE,
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
    known_revisions,
    upgrade,
)
from scaleout_server.store.sql import metadata
from tests.storage.concurrency import run_together

PREVIOUS = known_revisions()[-2]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@contextmanager
def _connection(url: str) -> Iterator[sa.Connection]:
    engine = make_engine(url)
    try:
        with engine.execution_options(scaleout_write=True).begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _migrate_to(url: str, revision: str) -> None:
    with _connection(url) as conn:
        command.upgrade(alembic_config(conn), revision)


def _revision(url: str) -> str | None:
    with _connection(url) as conn:
        return current_revision(conn)


def _schema_differences(url: str) -> list[object]:
    def ignore_version_table(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        return not (type_ == "table" and name == VERSION_TABLE)

    with _connection(url) as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "include_object": ignore_version_table})
        return list(compare_metadata(context, metadata))


def _fill_at_previous_revision(url: str) -> None:
    """Rows as the baseline and later schemas hold them (plain SQL: the store code is for head)."""
    with _connection(url) as conn:
        conn.execute(sa.text(
            "INSERT INTO clients (client_id, name, status, package, attributes, telemetry, committed_at, updated_at) "
            "VALUES ('c1', 'client-1', 'online', 'remote', :attrs, '{}', :t, :t)"),
            {"attrs": '{"zone": "eu", "gpu": true}', "t": T0.replace(tzinfo=None)})
        conn.execute(sa.text(
            "INSERT INTO statuses (status_id, status, sender_client_id, sender_name, sender_role, log_level, "
            "data, timestamp, committed_at) VALUES ('st1', 'hello', 'c1', 'client-1', 'client', 'INFO', "
            ":data, :t, :t)"), {"data": '{"b": 1, "a": [1, 2]}', "t": T0.replace(tzinfo=None)})
        conn.execute(sa.text(
            "INSERT INTO sessions (session_id, name, status, session_config, committed_at, updated_at) "
            "VALUES ('s1', 'session', 'Finished', :cfg, :t, :t)"),
            {"cfg": '{"rounds": 3}', "t": T0.replace(tzinfo=None)})


def test_migrations_form_one_line_from_the_baseline() -> None:
    assert known_revisions()[0] == BASELINE
    assert known_revisions()[-1] == head_revision()
    assert len(set(known_revisions())) == len(known_revisions())


def test_upgrade_from_empty_database_creates_exactly_the_store_tables(empty_database: str) -> None:
    result = upgrade(empty_database)
    assert (result.before, result.after, result.applied) == (None, head_revision(), known_revisions())
    assert _revision(empty_database) == head_revision()
    assert _schema_differences(empty_database) == []  # a table changed in sql.py without a revision fails here


def test_store_on_empty_database_runs_the_migrations_itself(empty_database: str) -> None:
    store = make_store(empty_database)
    try:
        store.clients.add(r.ClientRecord(client_id="c1", name="n"))
    finally:
        store.close()
    assert _revision(empty_database) == head_revision()
    again = upgrade(empty_database)
    assert again.applied == [] and again.before == again.after == head_revision()


def test_upgrade_from_previous_revision_keeps_the_data(empty_database: str) -> None:
    _migrate_to(empty_database, PREVIOUS)
    _fill_at_previous_revision(empty_database)

    result = upgrade(empty_database)

    assert (result.before, result.after, result.applied) == (PREVIOUS, head_revision(), [head_revision()])
    assert _schema_differences(empty_database) == []
    store = make_store(empty_database)
    try:
        client = store.clients.require("c1")
        assert (client.name, client.attributes, client.committed_at) == ("client-1", {"zone": "eu", "gpu": True}, T0)
        status = store.statuses.require("st1")
        assert (status.status, status.data, status.sender.name) == ("hello", {"b": 1, "a": [1, 2]}, "client-1")
        assert store.sessions.require("s1").session_config == {"rounds": 3}
        long_message = "trace " * 20_000  # what revision 0002 is for: PostgreSQL could not index this
        store.statuses.add(r.StatusRecord(status_id="st2", status=long_message, sender=r.Sender()))
        assert store.statuses.require("st2").status == long_message
    finally:
        store.close()


def test_store_refuses_a_database_at_an_older_revision_and_names_the_command(empty_database: str) -> None:
    _migrate_to(empty_database, PREVIOUS)
    with pytest.raises(SchemaMismatch, match=f"revision {PREVIOUS}; this version needs {head_revision()}.*"
                                             "scaleout server migrate"):
        make_store(empty_database)
    assert _revision(empty_database) == PREVIOUS  # refused, not changed


def test_database_made_before_migrations_is_recognised_as_the_baseline(empty_database: str) -> None:
    _migrate_to(empty_database, BASELINE)
    _fill_at_previous_revision(empty_database)
    with _connection(empty_database) as conn:
        conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))  # what issue-2 releases left behind
    with pytest.raises(SchemaMismatch, match=f"revision {BASELINE}"):
        make_store(empty_database)
    result = upgrade(empty_database)
    assert result.before == BASELINE and result.applied == known_revisions()[1:]
    store = make_store(empty_database)
    try:
        assert store.clients.require("c1").name == "client-1"
    finally:
        store.close()


def test_database_from_a_newer_version_is_refused(empty_database: str) -> None:
    upgrade(empty_database)
    with _connection(empty_database) as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(SchemaMismatch, match="revision 9999, which this version of scaleout does not know"):
        make_store(empty_database)
    with pytest.raises(SchemaMismatch, match="upgrade scaleout-edge-open"):
        upgrade(empty_database)


def test_database_with_foreign_tables_of_the_same_names_is_refused(empty_database: str) -> None:
    with _connection(empty_database) as conn:
        conn.execute(sa.text("CREATE TABLE clients (id INTEGER PRIMARY KEY)"))
    with pytest.raises(SchemaMismatch, match="not created by scaleout"):
        make_store(empty_database)


def test_processes_starting_together_on_an_empty_database_migrate_it_once(empty_database: str) -> None:
    run_together([lambda: make_store(empty_database).close()] * 4)
    assert _revision(empty_database) == head_revision()


def test_server_migrate_command_upgrades_and_prints_the_revisions(empty_database: str, tmp_path: Path) -> None:
    _migrate_to(empty_database, PREVIOUS)
    runner = CliRunner()
    result = runner.invoke(cli, ["server", "migrate", "--store-url", empty_database])
    assert result.exit_code == 0, result.output
    assert f"Schema revision before: {PREVIOUS}" in result.output
    assert f"applied {head_revision()}: " in result.output
    assert f"Schema revision now:    {head_revision()}" in result.output

    config = tmp_path / "server.yaml"
    config.write_text(f"store_url: {empty_database}\n")
    again = runner.invoke(cli, ["server", "migrate", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output


def test_server_migrate_command_reports_an_unreachable_database(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(cli, ["server", "migrate", "--store-url",
                                      f"postgresql+psycopg://scaleout:secret@127.0.0.1:{port}/db"])
    assert result.exit_code == 1
    assert "cannot connect to the statestore" in result.output and "secret" not in result.output


def test_server_migrate_command_creates_the_default_sqlite_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["server", "migrate", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "(empty database)" in result.output and f"applied {BASELINE}" in result.output
    assert (tmp_path / "data" / "scaleout.db").is_file()


def test_embedded_server_upgrades_its_own_sqlite_file_and_keeps_the_data(tmp_path: Path) -> None:
    """`scaleout server start` owns the default SQLite file: it upgrades it instead of refusing."""
    from scaleout.cli.server_cmd import _upgrade_embedded_store
    from scaleout_server.settings import ServerSettings

    settings = ServerSettings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    url = settings.resolved_store_url()
    _migrate_to(url, BASELINE)
    _fill_at_previous_revision(url)
    _upgrade_embedded_store(settings)
    assert _revision(url) == head_revision()
    store = make_store(url)
    try:
        assert store.clients.require("c1").attributes == {"zone": "eu", "gpu": True}
    finally:
        store.close()
