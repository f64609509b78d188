"""Fuzzing the REST API from its own OpenAPI description: whatever a caller sends, the answer is
never a 5xx, and the server keeps answering afterwards.

schemathesis generates requests for every operation in /openapi.json (valid and invalid bodies,
query strings, path ids and headers) against the real app: a real Controller with SQLite and a
local repository, seeded with a model and a package so that the happy paths run too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from scaleout_server.api.app import create_app
from tests.unit.test_api_support import npz_bytes, package_bytes
from tests.unit.test_controller_with_combiner import running_deployment

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    # a real combiner beside the controller: client registration and sessions find one
    with running_deployment(tmp_path_factory.mktemp("fuzz")) as deployment:
        app = create_app(deployment.controller)
        with TestClient(app) as client:  # seed a model and a package: the happy paths run too
            assert client.post("/api/v1/models/", files={"file": ("seed.npz", npz_bytes(3))}).status_code < 300
            assert client.post("/api/v1/packages/", files={"file": ("p.tgz", package_bytes())},
                               data={"name": "p"}).status_code < 300
            yield app
            assert client.get("/health").status_code == 200  # still serving after the fuzzing


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


def test_no_request_makes_the_api_answer_a_server_error(api_schema: schemathesis.BaseSchema) -> None:
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case) -> None:
            response = case.call()
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{response.text[:300]}")

        call()
    assert not failures, "\n".join(sorted(set(failures))[:20])


def test_the_fuzzing_covers_every_route(api_schema: schemathesis.BaseSchema, fuzzed_app: FastAPI) -> None:
    """A new route is fuzzed as soon as it is in the OpenAPI description (the dashboard pages are not)."""
    described = {op.ok().path for op in api_schema.get_all_operations()}
    assert {"/api/v1/sessions/", "/api/v1/clients/add"} <= described
    assert any(path.startswith("/api/v1/models/{") for path in described)
    assert len(described) > 40
