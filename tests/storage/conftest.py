"""Storage backends for the contract tests: SQLite and a real PostgreSQL 15; a local folder and a real S3.

The services are session-scoped and start only when a selected test needs them, so
`pytest tests/storage -k postgres` and `-k s3` each run on their own. Test ids name the backend
(`[sqlite]`, `[postgres]`, `[local]`, `[s3]`), and only PostgreSQL/S3 tests carry those words.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from scaleout_server.repository.base import ModelRepository
from scaleout_server.repository.factory import make_repository
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store.base import Store
from scaleout_server.store.factory import make_store
from scaleout_server.store.migration import VERSION_TABLE, upgrade
from tests.storage.services import PostgresServer, S3Server, start_postgres, start_seaweedfs

STORE_BACKENDS = ["sqlite", "postgres"]
REPOSITORY_BACKENDS = ["local", "s3"]
S3_BUCKET = "scaleout-contract"


def _service_root(prefix: str) -> Path:
    # not under pytest's tmp folder: that one is private to root, and PostgreSQL runs as `postgres`
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    root = _service_root("scaleout-test-pg-")
    server = start_postgres(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    root = _service_root("scaleout-test-s3-")
    server = start_seaweedfs(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- statestore ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_contract_url(postgres_server: PostgresServer) -> str:
    """One migrated database shared by the contract tests; `store_url` empties it before each test."""
    url = postgres_server.create_database("contract")
    upgrade(url)
    return url


def _empty_all_tables(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            names = [n for n in sa.inspect(conn).get_table_names() if n != VERSION_TABLE]
            for name in names:  # DELETE: much faster than TRUNCATE on tables this small
                conn.execute(sa.text(f'DELETE FROM "{name}"'))
    finally:
        engine.dispose()


@pytest.fixture(params=STORE_BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new database with nothing in it (PostgreSQL: a new database in the shared cluster)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/store.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that `store_url` copies: migrating anew for every test would cost more
    than the test (migrating an empty database is tested in test_migrations.py)."""
    path = tmp_path_factory.mktemp("template") / "store.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "store.db")
        return f"sqlite:///{tmp_path}/store.db"
    url: str = request.getfixturevalue("postgres_contract_url")
    _empty_all_tables(url)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = make_store(store_url)
    yield s
    s.close()


# -- model repository ------------------------------------------------------------------------------


def s3_settings(server: S3Server, **overrides: str) -> ServerSettings:
    values = {"repository_type": "s3", "s3_endpoint": server.endpoint, "s3_bucket": S3_BUCKET,
              "s3_access_key": server.access_key, "s3_secret_key": server.secret_key,
              "s3_prefix": f"test-{uuid.uuid4().hex[:10]}", **overrides}
    return ServerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(params=REPOSITORY_BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelRepository]:
    if request.param == "local":
        yield LocalRepository(tmp_path / "repo" / "nested")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    # A process that reopens the repository from describe() (no secrets) finds the standard AWS variables.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    settings = s3_settings(server)
    repository = make_repository(settings.repository_description(), settings)
    yield repository
    repository.close()  # type: ignore[attr-defined]
