"""`scaleout login <url>`: the published CLI's browser login (`/api/cli-auth/...`), on our server.

1. The CLI posts `/api/cli-auth/init` (no token) and gets `{requestId, pollToken, loginUrl}`.
2. It opens `loginUrl`, a dashboard page where a person approves the request: on a secured server
   with the admin token they hold (the page's "API token", as for every dashboard action), in
   local mode with one click. The approval (`POST /api/cli-auth/approve`) is an admin route.
3. The CLI polls `/api/cli-auth/status?requestId=..&pollToken=..` every 2 s: `pending` until then,
   `done` with the credential once: a new admin token named after the login (30 days; listed and
   revocable with `scaleout token list|revoke`), or none in local mode, which needs none.
Requests live in the controller's memory for 5 minutes (the CLI's own limit); only the holder of the
poll token, which never leaves the CLI, can collect the credential.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from scaleout_server.auth.rest import authority_of
from scaleout_server.auth.tokens import Role
from scaleout_server.errors import Conflict, InvalidInput, NotFoundError, ServerError

router = APIRouter(tags=["auth"])

REQUEST_TTL = 300.0  # seconds; the published CLI gives up after 5 minutes
MAX_PENDING = 200  # /init needs no token: bound what strangers can make the controller hold
LOGIN_TOKEN_EXPIRY = 30 * 24 * 3600.0
LOGIN_PAGE = "/cli-login/{request_id}"


class TooManyRequests(ServerError):
    http_status = 429


@dataclass
class LoginRequest:
    request_id: str
    poll_token: str
    created: float
    status: str = "pending"  # pending | done | error | collected
    credential: str | None = None
    api_url: str = ""
    message: str = ""


class LoginRequests:
    """The login requests of one controller process."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: dict[str, LoginRequest] = {}

    def _expire(self) -> None:
        cutoff = self._clock() - REQUEST_TTL
        for key in [k for k, v in self._requests.items() if v.created < cutoff]:
            del self._requests[key]

    def create(self) -> LoginRequest:
        with self._lock:
            self._expire()
            if len(self._requests) >= MAX_PENDING:
                raise TooManyRequests(f"{MAX_PENDING} logins are waiting for approval; try again in a few minutes")
            request = LoginRequest(request_id=secrets.token_urlsafe(12), poll_token=secrets.token_urlsafe(32),
                                   created=self._clock())
            self._requests[request.request_id] = request
            return request

    def get(self, request_id: str) -> LoginRequest:
        with self._lock:
            self._expire()
            found = self._requests.get(request_id)
        if found is None:
            raise NotFoundError(f"no login request {request_id!r} waiting (they expire after "
                                f"{int(REQUEST_TTL // 60)} minutes); run `scaleout login <url>` again")
        return found

    def collect(self, request_id: str, poll_token: str) -> dict[str, Any]:
        """The answer to one status poll; a done request hands its credential over once."""
        found = self.get(request_id)
        if not hmac.compare_digest(found.poll_token, poll_token):
            raise NotFoundError(f"no login request {request_id!r} with this poll token")
        with self._lock:
            if found.status == "pending":
                return {"status": "pending"}
            if found.status == "error":
                return {"status": "error", "message": found.message}
            if found.status == "collected":
                return {"status": "error", "message": "this login was already completed"}
            found.status = "collected"
            credential, found.credential = found.credential, None
        return {"status": "done", "access_token": credential, "refresh_token": None, "api_url": found.api_url}


class LoginDecision(BaseModel):
    model_config = ConfigDict(extra="ignore")
    request_id: str | None = Field(default=None, alias="requestId")
    approve: bool = True


def _requests(request: Request) -> LoginRequests:
    state = request.app.state
    if getattr(state, "cli_logins", None) is None:
        state.cli_logins = LoginRequests()
    return state.cli_logins


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post("/api/cli-auth/init")
def cli_auth_init(request: Request) -> dict[str, Any]:
    """Start a CLI login: `{requestId, pollToken, loginUrl, expiresIn}`; open loginUrl to approve it."""
    login = _requests(request).create()
    return {"requestId": login.request_id, "pollToken": login.poll_token,
            "loginUrl": _base_url(request) + LOGIN_PAGE.format(request_id=login.request_id),
            "expiresIn": int(REQUEST_TTL)}


@router.get("/api/cli-auth/status")
def cli_auth_status(request: Request, requestId: str = "", pollToken: str = "") -> dict[str, Any]:  # noqa: N803
    """`{"status": "pending"}` until approved, then once `{"status": "done", "access_token", "api_url"}`
    (`access_token` is null in local mode) or `{"status": "error", "message"}` when refused."""
    if not requestId or not pollToken:
        raise InvalidInput("send the query parameters requestId and pollToken that /api/cli-auth/init answered")
    return _requests(request).collect(requestId, pollToken)


@router.get("/api/cli-auth/requests/{request_id}")
def cli_auth_request(request_id: str, request: Request) -> dict[str, Any]:
    """What the login page shows about a request (never its tokens)."""
    login = _requests(request).get(request_id)
    return {"requestId": login.request_id, "status": login.status,
            "secured": authority_of(request) is not None,
            "expiresIn": max(0, int(REQUEST_TTL - (time.monotonic() - login.created)))}


@router.post("/api/cli-auth/approve")
def cli_auth_approve(body: LoginDecision, request: Request) -> dict[str, Any]:
    """Approve (or, with `approve: false`, refuse) a waiting CLI login. Admin only: on a secured server
    the CLI gets a new admin token, named after this login, that `scaleout token revoke` can end."""
    if not body.request_id:
        raise InvalidInput('send {"requestId": "..."} as shown on the login page')
    requests_ = _requests(request)
    login = requests_.get(body.request_id)
    if login.status != "pending":
        raise Conflict(f"login request {login.request_id} was already {login.status}")
    if not body.approve:
        login.status, login.message = "error", "the login was refused in the dashboard"
        return {"message": "Login refused", "requestId": login.request_id}
    authority = authority_of(request)
    credential = None
    if authority is not None:
        issued = authority.issue(Role.ADMIN, name=f"cli-login-{login.request_id[:8]}",
                                 expires_in=LOGIN_TOKEN_EXPIRY)
        credential = issued.token
    login.credential, login.api_url, login.status = credential, _base_url(request), "done"
    return {"message": "Login approved: the CLI picks it up within 2 seconds", "requestId": login.request_id}
