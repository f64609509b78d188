"""The authorization matrix: every REST route and every gRPC RPC, with no token, bad ones, an expired
and a revoked one, and every wrong role, is refused (401/403, UNAUTHENTICATED/PERMISSION_DENIED);
the roles a route is meant for are not refused.

Routes are enumerated from the app's own route table and RPCs from the proto's service descriptors,
so a route or RPC added later is covered without touching this file (and is admin-only until
`scaleout_server/auth/policy.py` opens it).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi.testclient import TestClient
from google.protobuf import message_factory

from scaleout_server.api.app import create_app
from scaleout_server.auth import open_authority
from scaleout_server.auth.authority import Authority
from scaleout_server.auth.grpc_client import AuthorizedStub
from scaleout_server.auth.grpc_gate import GrpcGate
from scaleout_server.auth.keys import SigningKeys
from scaleout_server.auth.policy import GRPC_ROLES, REST_ROLES, rest_roles
from scaleout_server.auth.rest import iter_routes
from scaleout_server.auth.tokens import Role
from scaleout_server.combiner.controller_link import CallbackLink
from scaleout_server.combiner.server import CombinerThread
from scaleout_server.controller.core import Controller
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store.factory import make_store
from scaleoututil.grpc import scaleout_pb2 as pb

CLIENT_ID = "site-1"
COMBINER_NAME = "edge-1"


class OffsetClock:
    """Real time plus an offset, so tokens can be minted in the past (already expired)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Secured:
    client: TestClient
    authority: Authority
    controller: Controller
    tokens: dict[str, str]  # by role name: a valid token of each role
    refused: dict[str, str]  # by kind: tokens that must be 401 everywhere


def mint(authority: Authority, tmp_path: Path, clock: OffsetClock) -> tuple[dict[str, str], dict[str, str]]:
    refresh = authority.issue_client(client_id=CLIENT_ID)
    tokens = {
        "admin": authority.issue(Role.ADMIN).token,
        "client": str(authority.exchange(refresh.token)["access_token"]),
        "client_refresh": refresh.token,
        "combiner": authority.issue(Role.COMBINER, subject=COMBINER_NAME).token,
        "enrollment": authority.issue(Role.ENROLLMENT, expires_in=3600).token,
        "controller": authority.controller_token(),
    }
    clock.offset = -7200
    expired = authority.issue(Role.ADMIN, expires_in=60).token
    expired_access = str(authority.exchange(authority.issue_client(client_id=CLIENT_ID).token)["access_token"])
    clock.offset = 0
    revoked = authority.issue(Role.ADMIN)
    authority.revoke(revoked.claims.jti)
    revoked_refresh = authority.issue_client(client_id=CLIENT_ID)
    revoked_access = str(authority.exchange(revoked_refresh.token)["access_token"])
    authority.revoke(revoked_refresh.claims.jti)
    other_store = make_store(f"sqlite:///{tmp_path / 'another-server.sqlite'}")
    foreign = open_authority(tmp_path / "another-server", other_store).issue(Role.ADMIN).token
    other_store.close()
    header, payload, signature = tokens["client"].split(".")
    admin_payload = tokens["admin"].split(".")[1]
    refused = {
        "garbage": "not-a-token",
        "foreign": foreign,  # an admin token of another deployment
        "tampered": f"{header}.{admin_payload}.{signature}",  # admin claims under a client signature
        "expired": expired,
        "expired-access": expired_access,
        "revoked": revoked.token,
        "revoked-access": revoked_access,  # its refresh token was revoked
    }
    return tokens, refused


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp_path = tmp_path_factory.mktemp("secured")
    store = make_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    controller = Controller(ServerSettings(data_dir=tmp_path / "data"), store, LocalRepository(tmp_path / "repo"))
    clock = OffsetClock()
    authority = open_authority(tmp_path / "data", store)
    authority.clock = authority.verifier.clock = clock
    tokens, refused = mint(authority, tmp_path, clock)
    app = create_app(controller, authority)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Secured(client, authority, controller, tokens, refused)
    store.close()


# -- REST ----------------------------------------------------------------------------------------
def all_routes(client: TestClient) -> list[tuple[str, str]]:
    out = []
    for methods, path, _ in iter_routes(list(client.app.routes)):  # type: ignore[attr-defined]
        for method in sorted(methods or {"GET"}):
            if method != "HEAD":
                out.append((method, path))
    return out


def concrete(path: str) -> str:
    """A request path for a template: every parameter becomes `probe` (`{path:path}` a file name)."""
    return re.sub(r"\{[^}:]+(:[^}]+)?\}", lambda m: "app.js" if m.group(1) == ":path" else "probe", path)


def header_for(token: str | None, raw_header: str | None = None) -> dict[str, str]:
    if raw_header is not None:
        return {"Authorization": raw_header}
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def call(client: TestClient, method: str, path: str, token: str | None, raw_header: str | None = None) -> int:
    return client.request(method, concrete(path), headers=header_for(token, raw_header), json={}).status_code


def statuses(client: TestClient, calls: list[tuple[str, str, dict[str, str]]]) -> list[int]:
    """Status of each (method, path template, headers), sent straight to the ASGI app concurrently
    (TestClient's thread hop per request would make the matrix take many seconds)."""
    app = client.app

    async def run() -> list[int]:
        limit = asyncio.Semaphore(32)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            async def one(method: str, path: str, headers: dict[str, str]) -> int:
                async with limit:
                    return (await http.request(method, concrete(path), headers=headers, json={})).status_code

            return list(await asyncio.gather(*(one(*c) for c in calls)))

    return asyncio.run(run())


def protected(secured: Secured) -> list[tuple[str, str, frozenset[Role]]]:
    out = []
    for method, path in all_routes(secured.client):
        roles = rest_roles(method, path)
        if roles is not None:
            out.append((method, path, roles))
    return out


def test_route_enumeration_covers_the_openapi_description(secured: Secured) -> None:
    enumerated = set(all_routes(secured.client))
    spec = secured.client.get("/openapi.json").json()
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert described <= enumerated, sorted(described - enumerated)
    assert len(protected(secured)) >= 60  # the API has many routes; a broken walk finds few


def test_policy_names_only_routes_that_exist(secured: Secured) -> None:
    enumerated = set(all_routes(secured.client))
    assert set(REST_ROLES) <= enumerated, sorted(set(REST_ROLES) - enumerated)


# What each non-admin role may reach, written out here independently of policy.py: a client registers
# and fetches its package; a combiner registers, sends events and reads the revocation list. Nothing
# else (no sessions, no other clients' data, no uploads), and no route at all for the other kinds.
EXPECTED_NON_ADMIN = {
    Role.CLIENT: {("POST", "/api/v1/clients/add"), ("GET", "/api/v1/packages/download"),
                  ("GET", "/api/v1/packages/checksum")},
    Role.COMBINER: {("POST", "/api/v1/combiners/"), ("POST", "/api/v1/combiners"),
                    ("POST", "/api/v1/combiners/{combiner_id}/events"), ("GET", "/api/v1/auth/revoked")},
    Role.CLIENT_REFRESH: set(), Role.ENROLLMENT: set(), Role.CONTROLLER: set(),
}


def test_clients_and_combiners_reach_only_what_they_need(secured: Secured) -> None:
    for role, expected in EXPECTED_NON_ADMIN.items():
        reachable = {(m, p) for m, p, roles in protected(secured) if role in roles}
        assert reachable == expected, role
    assert all(Role.ADMIN in roles for _, _, roles in protected(secured))


def test_every_protected_route_refuses_missing_and_invalid_tokens(secured: Secured) -> None:
    attempts: dict[str, dict[str, str]] = {
        "no header": {}, "Bearer None": header_for(None, "Bearer None"), "empty": header_for(None, "Bearer "),
        **{kind: header_for(token) for kind, token in secured.refused.items()}}
    calls = [(method, path, headers, kind) for method, path, _ in protected(secured)
             for kind, headers in attempts.items()]
    got = statuses(secured.client, [c[:3] for c in calls])
    failures = [f"{m} {p} with {kind}: {status}" for (m, p, _, kind), status in zip(calls, got, strict=True)
                if status != 401]
    assert not failures, "\n".join(failures)


def test_every_protected_route_refuses_every_role_it_is_not_for(secured: Secured) -> None:
    calls = [(method, path, header_for(token), role) for method, path, roles in protected(secured)
             for role, token in secured.tokens.items() if Role(role) not in roles]
    assert len(calls) > 300
    got = statuses(secured.client, [c[:3] for c in calls])
    failures = [f"{m} {p} with a {role} token: {status}" for (m, p, _, role), status in zip(calls, got, strict=True)
                if status != 403]
    assert not failures, "\n".join(failures)


def test_every_protected_route_admits_the_roles_it_is_for(secured: Secured) -> None:
    calls = [(method, path, header_for(secured.tokens[role.value]), role.value)
             for method, path, roles in protected(secured) for role in roles]
    got = statuses(secured.client, [c[:3] for c in calls])
    failures = [f"{m} {p} with a {role} token: {status}" for (m, p, _, role), status in zip(calls, got, strict=True)
                if status in (401, 403)]
    assert not failures, "\n".join(failures)
    assert sum(1 for (_, _, _, role) in calls if role != "admin") == len(REST_ROLES)


def test_the_scheme_word_is_free_and_a_bare_token_works(secured: Secured) -> None:
    admin = secured.tokens["admin"]
    # SCALEOUT_AUTH_SCHEME may change the word; the official 1.0 package upload sends no scheme at all
    for header in (f"Bearer {admin}", f"bearer {admin}", f"Token {admin}", admin):
        assert call(secured.client, "GET", "/api/v1/sessions/", None, header) == 200, header


def test_public_routes_answer_without_a_token(secured: Secured) -> None:
    for path in ("/health", "/openapi.json", "/docs", "/", "/sessions", "/clients", "/ui/static/api.js"):
        assert secured.client.get(path).status_code == 200, path


def test_unknown_paths_need_a_token_too(secured: Secured) -> None:
    assert secured.client.get("/api/v1/no-such-thing").status_code == 401
    assert secured.client.get("/api/v1/no-such-thing", headers={
        "Authorization": f"Bearer {secured.tokens['admin']}"}).status_code == 404


@pytest.mark.parametrize("path", ["/api/auth/refresh", "/api/v1/clients/token"])
def test_token_exchange_refuses_all_but_valid_client_refresh_tokens(secured: Secured, path: str) -> None:
    c = secured.client
    assert c.post(path).status_code == 401
    assert c.post(path, json={"role": "client"}).status_code == 401
    for kind, token in secured.refused.items():
        assert c.post(path, json={"refresh_token": token, "role": "client"}).status_code == 401, kind
    for role in ("admin", "client", "combiner", "enrollment", "controller"):
        status = c.post(path, json={"refresh_token": secured.tokens[role], "role": "client"}).status_code
        assert status in (401, 403), (role, status)
    res = c.post(path, json={"refresh_token": secured.tokens["client_refresh"], "role": "client"})
    assert res.status_code == 200
    body = res.json()
    assert set(body) >= {"access_token", "expires_in"} and 0 < body["expires_in"] <= 900
    assert secured.authority.verify(body["access_token"]).sub == CLIENT_ID


def test_enrollment_route_refuses_all_but_enrollment_tokens(secured: Secured) -> None:
    c = secured.client
    path = "/api/v1/clients/enroll"
    assert c.post(path, json={"name": "d"}).status_code == 401
    assert c.post(path, json={"name": "d"}, headers={"Authorization": "Bearer None"}).status_code == 401
    for kind, token in secured.refused.items():
        assert c.post(path, json={}, headers={"Authorization": f"Bearer {token}"}).status_code == 401, kind
    for role in ("admin", "client", "client_refresh", "combiner", "controller"):
        status = c.post(path, json={}, headers={"Authorization": f"Bearer {secured.tokens[role]}"}).status_code
        assert status in (401, 403), (role, status)
    res = c.post(path, json={"name": "d", "client_id": "device-1"},
                 headers={"Authorization": f"Bearer {secured.tokens['enrollment']}"})
    assert res.status_code == 200
    assert res.json()["client_id"] == "device-1" and {"access_token", "refresh_token"} <= set(res.json())


def test_a_client_token_registers_as_its_own_client_whatever_id_it_asks_for(secured: Secured) -> None:
    res = secured.client.post("/api/v1/clients/add",
                              json={"client_id": "someone-else", "name": "x", "package": "local"},
                              headers={"Authorization": f"Bearer {secured.tokens['client']}"})
    # no combiner is registered here (503), but the id it would have got is checked via the store below
    assert res.status_code in (200, 503), res.text
    assert secured.controller.store.clients.get("someone-else") is None


def test_a_bound_combiner_token_registers_only_its_own_combiner(secured: Secured) -> None:
    headers = {"Authorization": f"Bearer {secured.tokens['combiner']}"}
    body = {"host": "127.0.0.1", "port": 1, "public_hostname": "127.0.0.1"}
    assert secured.client.post("/api/v1/combiners/", json={**body, "name": "intruder"},
                               headers=headers).status_code == 403
    res = secured.client.post("/api/v1/combiners/", json={**body, "name": COMBINER_NAME}, headers=headers)
    assert res.status_code == 200, res.text
    assert res.json()["auth"]["grpc_key"] == secured.authority.keys.grpc_key_b64()
    other = secured.client.post("/api/v1/combiners/", json={**body, "name": "edge-2"},
                                headers={"Authorization": f"Bearer {secured.tokens['admin']}"}).json()
    events = f"/api/v1/combiners/{other['combiner_id']}/events"
    assert secured.client.post(events, json={"events": []}, headers=headers).status_code == 403
    secured.controller.store.combiners.delete(other["combiner_id"])
    secured.controller.store.combiners.delete(res.json()["combiner_id"])


# -- gRPC ----------------------------------------------------------------------------------------
GRPC_TIMEOUT = 1.5
REFUSED_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


@dataclass(frozen=True)
class Rpc:
    path: str
    service: str
    client_streaming: bool
    server_streaming: bool
    request: Any
    response: Any


SERVED = ("CombinerClient", "ModelService", "Control")  # what a combiner serves


def all_rpcs() -> list[Rpc]:
    out = []
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            out.append(Rpc(f"/{service.full_name}/{method.name}", service.full_name, method.client_streaming,
                           method.server_streaming, message_factory.GetMessageClass(method.input_type),
                           message_factory.GetMessageClass(method.output_type)))
    return out


def rpc_code(channel: grpc.Channel, rpc: Rpc, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    """Call `rpc` with an empty message (one, for request streams) and return how it ended."""
    kwargs = {"request_serializer": rpc.request.SerializeToString, "response_deserializer": rpc.response.FromString}
    request: Any = iter([rpc.request()]) if rpc.client_streaming else rpc.request()
    kind = ("stream" if rpc.client_streaming else "unary") + "_" + ("stream" if rpc.server_streaming else "unary")
    callable_ = getattr(channel, kind)(rpc.path, **kwargs)
    try:
        result = callable_(request, metadata=metadata, timeout=GRPC_TIMEOUT)
        if rpc.server_streaming:
            for _ in result:
                pass
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return,attr-defined]
    return grpc.StatusCode.OK


@dataclass
class Combiner:
    channel: grpc.Channel
    gate: GrpcGate


@pytest.fixture(scope="module")
def combiner(secured: Secured, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Combiner]:
    tmp_path = tmp_path_factory.mktemp("combiner")
    gate = GrpcGate.with_keys(SigningKeys.for_combiner(secured.authority.keys.grpc_key_b64()),
                              secured.authority.revoked_ids())
    settings = ServerSettings(data_dir=tmp_path, host="127.0.0.1", combiner_port=0, combiner_name=COMBINER_NAME)
    thread = CombinerThread(settings, repository=LocalRepository(tmp_path / "repo"), link=CallbackLink(lambda e: None),
                            auth=gate)
    port = thread.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Combiner(channel, gate)
    finally:
        channel.close()
        thread.stop()


def client_md(token: str | None, client_id: str = CLIENT_ID) -> list[tuple[str, str]]:
    md = [("client", client_id), ("client-id", client_id), ("name", "probe")]
    return md + ([("authorization", f"Bearer {token}")] if token is not None else [])


def run_all(combiner: Combiner, calls: list[tuple[Rpc, list[tuple[str, str]]]]) -> list[grpc.StatusCode]:
    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(lambda c: rpc_code(combiner.channel, *c), calls))


def test_rpc_enumeration_covers_every_served_service() -> None:
    services = {rpc.service for rpc in all_rpcs()}
    assert services == {f"scaleout.{name}" for name in SERVED} == set(GRPC_ROLES)
    assert len(all_rpcs()) >= 20


def test_every_rpc_refuses_missing_and_invalid_tokens(secured: Secured, combiner: Combiner) -> None:
    attempts = {"no token": client_md(None), "Bearer None": [*client_md(None), ("authorization", "Bearer None")],
                **{kind: client_md(token) for kind, token in secured.refused.items()}}
    calls = [(rpc, md, kind) for rpc in all_rpcs() for kind, md in attempts.items()]
    codes = run_all(combiner, [c[:2] for c in calls])
    failures = [f"{rpc.path} with {kind}: {code.name}" for (rpc, _, kind), code in zip(calls, codes, strict=True)
                if code is not grpc.StatusCode.UNAUTHENTICATED]
    assert not failures, "\n".join(failures)


def test_every_rpc_refuses_every_role_it_is_not_for(secured: Secured, combiner: Combiner) -> None:
    calls = [(rpc, client_md(token), role) for rpc in all_rpcs() for role, token in secured.tokens.items()
             if Role(role) not in GRPC_ROLES[rpc.service]]
    codes = run_all(combiner, [c[:2] for c in calls])
    failures = [f"{rpc.path} with a {role} token: {code.name}"
                for (rpc, _, role), code in zip(calls, codes, strict=True) if code not in REFUSED_CODES]
    assert not failures, "\n".join(failures)
    # a client cannot drive the combiner, and the controller cannot act as a client
    by_rpc = {(rpc.path, role): code for (rpc, _, role), code in zip(calls, codes, strict=True)}
    assert by_rpc[("/scaleout.Control/RunRound", "client")] is grpc.StatusCode.PERMISSION_DENIED
    assert by_rpc[("/scaleout.CombinerClient/PollAndReportAsync", "controller")] is grpc.StatusCode.PERMISSION_DENIED


def test_every_rpc_admits_the_role_it_is_for(secured: Secured, combiner: Combiner) -> None:
    role_token = {"scaleout.CombinerClient": "client", "scaleout.ModelService": "client",
                  "scaleout.Control": "controller"}
    calls = [(rpc, client_md(secured.tokens[role_token[rpc.service]])) for rpc in all_rpcs()]
    codes = run_all(combiner, calls)
    failures = [f"{rpc.path}: {code.name}" for (rpc, _), code in zip(calls, codes, strict=True)
                if code in REFUSED_CODES or code is grpc.StatusCode.UNAVAILABLE]
    assert not failures, "\n".join(failures)


def test_a_client_token_speaks_only_for_its_own_client_id(secured: Secured, combiner: Combiner) -> None:
    token = secured.tokens["client"]
    heartbeat = next(rpc for rpc in all_rpcs() if rpc.path.endswith("/SendHeartbeat"))
    mixed = [("client", CLIENT_ID), ("client-id", "site-2"), ("authorization", f"Bearer {token}")]
    for md in (client_md(token, "site-2"), [("authorization", f"Bearer {token}")], mixed):
        assert rpc_code(combiner.channel, heartbeat, md) is grpc.StatusCode.PERMISSION_DENIED, md
    assert rpc_code(combiner.channel, heartbeat, client_md(token)) is grpc.StatusCode.OK


def test_revocation_reaches_the_combiner_with_its_next_list(secured: Secured, combiner: Combiner) -> None:
    refresh = secured.authority.issue_client(client_id=CLIENT_ID)
    access = str(secured.authority.exchange(refresh.token)["access_token"])
    heartbeat = next(rpc for rpc in all_rpcs() if rpc.path.endswith("/SendHeartbeat"))
    assert rpc_code(combiner.channel, heartbeat, client_md(access)) is grpc.StatusCode.OK
    secured.authority.revoke(refresh.claims.jti)
    combiner.gate.set_revoked(list(secured.authority.revoked_ids()))  # what sync_revocations does
    assert rpc_code(combiner.channel, heartbeat, client_md(access)) is grpc.StatusCode.UNAUTHENTICATED


def test_controller_stubs_send_a_token_the_combiner_accepts(secured: Secured, combiner: Combiner) -> None:
    from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc

    bare = pb_grpc.ControlStub(combiner.channel)
    with pytest.raises(grpc.RpcError) as refused:
        bare.ListActiveClients(pb.ClientListRequest(), timeout=GRPC_TIMEOUT)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    authorized = AuthorizedStub(bare, secured.authority.controller_token)
    assert authorized.ListActiveClients(pb.ClientListRequest(), timeout=GRPC_TIMEOUT).clients is not None
    assert authorized.ListActiveClients.future(pb.ClientListRequest(), timeout=GRPC_TIMEOUT).result()


def test_a_combiner_not_yet_registered_answers_unavailable() -> None:
    from scaleout_server.auth.grpc_gate import Refusal

    with pytest.raises(Refusal) as pending:
        GrpcGate.pending().check("/scaleout.CombinerClient/SendHeartbeat", [])
    assert pending.value.code is grpc.StatusCode.UNAVAILABLE  # every client retries this
    assert GrpcGate.off().check("/scaleout.CombinerClient/SendHeartbeat", []) is None
