"""Tokens: HS256 signing and verification, expiry, revocation, the exchanges and the secret files."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaleout_server.auth import jwt, open_authority
from scaleout_server.auth.authority import Authority, TokenRefused
from scaleout_server.auth.jwt import ExpiredToken, InvalidToken
from scaleout_server.auth.keys import SigningKeys, auth_dir, load_or_create_secret
from scaleout_server.auth.tokens import ACCESS_TOKEN_SECONDS, Role, parse_duration
from scaleout_server.auth.verifier import RevokedToken, TokenVerifier
from scaleout_server.store.base import Store
from scaleout_server.store.factory import make_store


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = make_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def authority(tmp_path: Path, store: Store, clock: Clock) -> Authority:
    keys = SigningKeys.from_secret(load_or_create_secret(tmp_path / "data"))
    return Authority(store, keys, clock=clock)


def payload_of(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def with_payload(token: str, **changes: object) -> str:
    header, _, signature = token.split(".")
    claims = {**payload_of(token), **changes}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


def test_signed_token_verifies_and_carries_its_claims(authority: Authority) -> None:
    issued = authority.issue(Role.ADMIN, name="ops")
    claims = authority.verify(issued.token)
    assert claims.role is Role.ADMIN and claims.name == "ops" and claims.jti == issued.claims.jti
    assert jwt.decode(issued.token, authority.keys.by_kid(), now=authority.clock())["token_type"] == "api_key"


def test_claims_tell_the_official_client_which_exchange_to_use(authority: Authority) -> None:
    # the 1.1 client reads role/token_type unverified: api_key is sent as is, client_refresh goes to
    # /api/v1/clients/token (cached under sub), enrollment to /api/v1/clients/enroll
    admin = payload_of(authority.issue(Role.ADMIN).token)
    client = payload_of(authority.issue_client(client_id="site-1").token)
    enrollment = payload_of(authority.issue(Role.ENROLLMENT, expires_in=3600).token)
    assert admin["token_type"] == "api_key"
    assert client["role"] == "client_refresh" and client["sub"] == "site-1"
    assert enrollment["role"] == "enrollment" and "exp" in enrollment


def test_tampered_payload_is_refused(authority: Authority) -> None:
    token = authority.issue_client(client_id="site-1").token
    with pytest.raises(InvalidToken, match="signature"):
        authority.verify(with_payload(token, role="admin", token_type="api_key"))


def test_other_algorithms_and_unsigned_tokens_are_refused(authority: Authority) -> None:
    token = authority.issue(Role.ADMIN).token
    payload = token.split(".")[1]
    for alg in ("none", "HS512", "RS256"):
        header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "kid": "root"}).encode()).rstrip(b"=").decode()
        with pytest.raises(InvalidToken, match="algorithm"):
            authority.verify(f"{header}.{payload}.")
    for garbage in ("", "abc", "a.b", "a.b.c", "None", "x" * 10_000):
        with pytest.raises(InvalidToken):
            authority.verify(garbage)


def test_token_signed_by_another_server_is_refused(tmp_path: Path, authority: Authority, store: Store) -> None:
    other = Authority(store, SigningKeys.from_secret(load_or_create_secret(tmp_path / "other")))
    with pytest.raises(InvalidToken, match="signature"):
        authority.verify(other.issue(Role.ADMIN).token)


def test_expired_token_is_refused_once_past_the_leeway(authority: Authority, clock: Clock) -> None:
    token = authority.issue(Role.ADMIN, expires_in=60).token
    clock.now += 60 + jwt.LEEWAY_SECONDS - 1
    authority.verify(token)
    clock.now += 2
    with pytest.raises(ExpiredToken):
        authority.verify(token)


def test_token_without_expiry_stays_valid(authority: Authority, clock: Clock) -> None:
    token = authority.issue(Role.COMBINER, subject="edge-1").token
    clock.now += 10 * 365 * 86400
    assert authority.verify(token).sub == "edge-1"


def test_revoked_token_and_the_access_tokens_exchanged_from_it_are_refused(authority: Authority) -> None:
    refresh = authority.issue_client(client_id="site-1")
    access = str(authority.exchange(refresh.token)["access_token"])
    authority.verify(access)
    authority.revoke(refresh.claims.jti)
    for token in (refresh.token, access):
        with pytest.raises(RevokedToken):
            authority.verify(token)
    with pytest.raises(RevokedToken):
        authority.exchange(refresh.token)


def test_revocation_is_remembered_by_a_restarted_controller(tmp_path: Path, store: Store) -> None:
    first = open_authority(tmp_path / "data", store)
    token = first.issue(Role.ADMIN, name="leaked")
    first.revoke(token.claims.jti)
    restarted = open_authority(tmp_path / "data", store)
    with pytest.raises(RevokedToken):
        restarted.verify(token.token)
    assert [(r.name, r.status()) for r in restarted.list()] == [("leaked", "revoked")]


def test_revoking_an_unknown_id_is_a_key_error(authority: Authority) -> None:
    with pytest.raises(KeyError):
        authority.revoke("0123456789abcdef")


def test_exchange_gives_a_short_lived_access_token_bound_to_the_client(authority: Authority, clock: Clock) -> None:
    refresh = authority.issue_client(client_id="site-1", name="site one")
    answer = authority.exchange(refresh.token)
    assert answer["expires_in"] == ACCESS_TOKEN_SECONDS
    claims = authority.verify(str(answer["access_token"]))
    assert (claims.role, claims.sub, claims.rid) == (Role.CLIENT, "site-1", refresh.claims.jti)
    assert claims.exp == clock.now + ACCESS_TOKEN_SECONDS
    # the refresh token is not rotated: the official client exchanges the same one twice at start
    assert "refresh_token" not in answer
    authority.exchange(refresh.token)


def test_access_token_never_outlives_its_refresh_token(authority: Authority, clock: Clock) -> None:
    refresh = authority.issue_client(client_id="site-1", expires_in=60)
    claims = authority.verify(str(authority.exchange(refresh.token)["access_token"]))
    assert claims.exp == int(clock.now + 60)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.COMBINER, Role.ENROLLMENT])
def test_exchange_refuses_tokens_that_are_not_client_tokens(authority: Authority, role: Role) -> None:
    with pytest.raises(TokenRefused):
        authority.exchange(authority.issue(role, expires_in=3600).token)


def test_enrollment_gives_an_identity_and_never_hands_out_another_clients_id(authority: Authority) -> None:
    enrollment = authority.issue(Role.ENROLLMENT, name="fleet", expires_in=3600)
    first = authority.enroll(enrollment.token, client_id="device-7", name="d7")
    assert first["client_id"] == "device-7"
    refresh = authority.verify(str(first["refresh_token"]))
    assert (refresh.role, refresh.sub) == (Role.CLIENT_REFRESH, "device-7")
    assert authority.verify(str(first["access_token"])).sub == "device-7"
    # the same device enrolling again with the same enrollment token keeps its id
    assert authority.enroll(enrollment.token, client_id="device-7", name="d7")["client_id"] == "device-7"
    # an id owned by another token is not handed out: the client gets a new one
    authority.issue_client(client_id="site-1")
    assert authority.enroll(enrollment.token, client_id="site-1", name="x")["client_id"] != "site-1"
    other = authority.issue(Role.ENROLLMENT, expires_in=3600)
    assert authority.enroll(other.token, client_id="device-7", name="x")["client_id"] != "device-7"


def test_enrollment_refuses_other_tokens_and_expired_enrollment_tokens(authority: Authority, clock: Clock) -> None:
    with pytest.raises(TokenRefused):
        authority.enroll(authority.issue(Role.ADMIN).token, client_id=None, name=None)
    expiring = authority.issue(Role.ENROLLMENT, expires_in=60)
    clock.now += 3600
    with pytest.raises(ExpiredToken):
        authority.enroll(expiring.token, client_id=None, name=None)


def test_combiner_keys_check_access_tokens_but_not_root_tokens(authority: Authority) -> None:
    combiner = TokenVerifier(SigningKeys.for_combiner(authority.keys.grpc_key_b64()), clock=authority.clock)
    refresh = authority.issue_client(client_id="site-1")
    assert combiner.verify(str(authority.exchange(refresh.token)["access_token"])).sub == "site-1"
    assert combiner.verify(authority.controller_token()).role is Role.CONTROLLER
    for token in (authority.issue(Role.ADMIN).token, refresh.token):
        with pytest.raises(InvalidToken, match="unknown key"):
            combiner.verify(token)
    combiner.set_revoked({refresh.claims.jti})
    with pytest.raises(RevokedToken):
        combiner.verify(str(authority.exchange(refresh.token)["access_token"]))


def test_controller_token_is_reused_until_half_its_life_is_gone(authority: Authority, clock: Clock) -> None:
    first = authority.controller_token()
    assert authority.controller_token() == first
    clock.now += 6 * 60
    assert authority.controller_token() != first


def test_secret_file_is_created_private_and_reused(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path)
    path = auth_dir(tmp_path) / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_secret(tmp_path) == secret
    path.chmod(0o644)  # someone loosened it: it is tightened again
    assert load_or_create_secret(tmp_path) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_admin_token_file_is_private_kept_while_valid_and_rewritten_when_revoked(tmp_path: Path,
                                                                               authority: Authority) -> None:
    path, written = authority.ensure_admin_token(tmp_path / "data")
    assert written and stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert authority.verify(token).role is Role.ADMIN
    assert authority.ensure_admin_token(tmp_path / "data") == (path, False)
    authority.revoke(authority.verify(token).jti)
    assert authority.ensure_admin_token(tmp_path / "data") == (path, True)
    assert path.read_text().strip() != token


def test_token_list_never_holds_the_token_strings(authority: Authority, store: Store) -> None:
    issued = authority.issue_client(client_id="site-1", name="site one")
    assert [(r.role, r.subject, r.status()) for r in authority.list()] == [("client_refresh", "site-1", "active")]
    signature = issued.token.split(".")[2]
    assert signature not in json.dumps([r.to_json() for r in authority.list()])
    assert signature not in (store.get_setting(f"auth.token.{issued.claims.jti}") or "")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("24h", 86400), ("2", 7200),
                                               ("30d", 30 * 86400), ("1w", 7 * 86400), ("never", None), ("0", None)])
def test_durations_accept_units_and_never(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_says_what_to_write() -> None:
    with pytest.raises(ValueError, match="30m, 24h"):
        parse_duration("tomorrow")
