"""Fuzzing the REST API from its own OpenAPI description: whatever a caller sends, the answer is
never a 5xx, and the server keeps answering afterwards.

schemathesis generates requests for every operation in /openapi.json (valid and invalid bodies,
query strings, path ids and headers) against the real app: a real Controller with SQLite and a
local repository, seeded with a model and a package so that the happy paths run too. It runs twice:
with authentication off, and with it on, where each request carries a token drawn from every role
plus none and a forged one; then a request the policy does not allow must never succeed either.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaleout_server.api.app import create_app
from scaleout_server.auth import open_authority
from scaleout_server.auth.policy import rest_roles
from scaleout_server.auth.tokens import Role
from tests.unit.test_api_support import npz_bytes, package_bytes
from tests.unit.test_controller_with_combiner import running_deployment

pytestmark = pytest.mark.timeout(600)

EXAMPLES = 15  # per operation and authentication mode (was 10, one mode)
NO_TOKEN = "none"
FORGED = "forged"


@dataclass
class Fuzzed:
    app: FastAPI
    tokens: dict[str, str]  # role name (or NO_TOKEN / FORGED) -> bearer token ("" for none)

    def headers(self, role: str) -> dict[str, str]:
        token = self.tokens.get(role, "")
        return {"Authorization": f"Bearer {token}"} if token else {}


def seed(client: TestClient, headers: dict[str, str]) -> None:
    """A model and a package: the happy paths run too."""
    assert client.post("/api/v1/models/", files={"file": ("seed.npz", npz_bytes(3))}, headers=headers).status_code < 300
    assert client.post("/api/v1/packages/", files={"file": ("p.tgz", package_bytes())}, data={"name": "p"},
                       headers=headers).status_code < 300


@pytest.fixture(scope="module", params=["auth-off", "auth-on"])
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    # a real combiner beside the controller: client registration and sessions find one
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with running_deployment(tmp) as deployment:
        tokens: dict[str, str] = {}
        authority = None
        if request.param == "auth-on":
            authority = open_authority(tmp / "auth", deployment.store)
            refresh = authority.issue_client(client_id="fuzz-client")
            tokens = {"admin": authority.issue(Role.ADMIN).token,
                      "client": str(authority.exchange(refresh.token)["access_token"]),
                      "client_refresh": refresh.token,
                      "combiner": authority.issue(Role.COMBINER, subject="c1").token,
                      "enrollment": authority.issue(Role.ENROLLMENT, expires_in=3600).token,
                      FORGED: authority.issue(Role.CLIENT).token[:-4] + "AAAA", NO_TOKEN: ""}
        app = create_app(deployment.controller, authority)
        fuzzed = Fuzzed(app, tokens)
        with TestClient(app) as client:
            seed(client, fuzzed.headers("admin"))
            yield fuzzed
            assert client.get("/health").status_code == 200  # still serving after the fuzzing
            if authority is not None:  # and still refusing what it refused before
                assert client.get("/api/v1/models/", headers=fuzzed.headers(NO_TOKEN)).status_code == 401
                assert client.get("/api/v1/models/", headers=fuzzed.headers("admin")).status_code == 200


@pytest.fixture(scope="module")
def api_schema(fuzzed: Fuzzed) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed.app)


def allowed(role: str, method: str, path: str) -> bool:
    roles = rest_roles(method, path)
    if roles is None:
        return True  # a public route
    if role in (NO_TOKEN, FORGED, "client_refresh"):  # a refresh token is only for /api/auth/refresh
        return False
    return Role(role) in roles or role == "admin"


def test_no_request_makes_the_api_answer_a_server_error(api_schema: schemathesis.BaseSchema,
                                                        fuzzed: Fuzzed) -> None:
    failures: list[str] = []
    roles = sorted(fuzzed.tokens, key=lambda role: role != "admin") or [NO_TOKEN]
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        # half the requests as admin, so the handlers behind the auth check are fuzzed as much
        @given(case=operation.as_strategy(), role=st.one_of(st.just(roles[0]), st.sampled_from(roles)))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case, role: str) -> None:
            response = case.call(headers=fuzzed.headers(role)) if fuzzed.tokens else case.call()
            def what() -> str:
                body = response.content[:300].decode("utf-8", "replace")
                return f"{case.method} {case.formatted_path} as {role} -> {response.status_code}: {body}"

            if response.status_code >= 500:
                failures.append(what())
            elif fuzzed.tokens and response.status_code < 400 and not allowed(role, case.method, case.path):
                failures.append(f"not refused: {what()}")

        call()
    assert not failures, "\n".join(sorted(set(failures))[:20])


def test_the_fuzzing_covers_every_route(api_schema: schemathesis.BaseSchema) -> None:
    """A new route is fuzzed as soon as it is in the OpenAPI description (the dashboard pages are not)."""
    described = {op.ok().path for op in api_schema.get_all_operations()}
    assert {"/api/v1/sessions/", "/api/v1/clients/add"} <= described
    assert any(path.startswith("/api/v1/models/{") for path in described)
    assert len(described) > 40
