"""Token checks for the combiner's gRPC services: one server interceptor in front of every RPC.

The gate knows its mode only once the combiner has registered: the controller's reply says
whether tokens are required and carries the key to check them with. Until then calls are answered
UNAVAILABLE (every client retries that). Refusals use the codes the clients handle: UNAUTHENTICATED
for a missing, bad, expired or revoked token (the official client refreshes and retries) and
PERMISSION_DENIED for a valid token of the wrong role or for another client's id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import grpc

from scaleout_server.auth.bearer import refusal, token_from_header
from scaleout_server.auth.jwt import InvalidToken
from scaleout_server.auth.keys import SigningKeys
from scaleout_server.auth.policy import GRPC_SUBJECT_BOUND, grpc_roles, grpc_service
from scaleout_server.auth.tokens import Claims
from scaleout_server.auth.verifier import TokenVerifier
from scaleoututil.protocol import MD_AUTHORIZATION, MD_CLIENT, MD_CLIENT_ID

log = logging.getLogger(__name__)


class GateMode(StrEnum):
    PENDING = "pending"  # not registered yet: no call is served
    OFF = "off"  # local mode: no tokens
    ON = "on"


class Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class GrpcGate:
    """The mode and the checker; `check` decides one call (see module docstring)."""

    def __init__(self, mode: GateMode, verifier: TokenVerifier | None = None) -> None:
        self.mode = mode
        self.verifier = verifier

    @classmethod
    def off(cls) -> GrpcGate:
        return cls(GateMode.OFF)

    @classmethod
    def pending(cls) -> GrpcGate:
        return cls(GateMode.PENDING)

    @classmethod
    def with_keys(cls, keys: SigningKeys, revoked: Mapping[str, float | None] | None = None) -> GrpcGate:
        return cls(GateMode.ON, TokenVerifier(keys, revoked))

    def configure(self, auth: Mapping[str, Any] | None) -> None:
        """Apply the `auth` part of the controller's registration reply (absent: tokens are off)."""
        if not auth:
            self.verifier = None
            self.mode = GateMode.OFF
            return
        key = auth.get("grpc_key")
        if not isinstance(key, str) or not key:
            raise ValueError("the controller's registration reply names no grpc_key; upgrade the controller")
        self.verifier = TokenVerifier(SigningKeys.for_combiner(key), revoked=self.verifier.revoked
                                      if self.verifier is not None else None)
        self.mode = GateMode.ON

    def set_revoked(self, token_ids: Sequence[str]) -> None:
        if self.verifier is not None:
            self.verifier.set_revoked(set(token_ids))

    def check(self, method: str, metadata: Sequence[tuple[str, Any]] | None) -> Claims | None:
        """The caller's claims (None in local mode); raises Refusal when the call must not run."""
        if self.mode is GateMode.OFF:
            return None
        if self.mode is GateMode.PENDING or self.verifier is None:
            raise Refusal(grpc.StatusCode.UNAVAILABLE, "the combiner is starting; retry in a moment")
        md = _metadata(metadata)
        roles = grpc_roles(method)
        if not roles:
            raise Refusal(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not open to any token")
        token = token_from_header(md.get(MD_AUTHORIZATION))
        if token is None:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED,
                          "this combiner requires a token: send metadata 'authorization: Bearer <access token>'")
        try:
            claims = self.verifier.verify(token)
        except InvalidToken as exc:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, refusal(exc)) from None
        if claims.role not in roles:
            raise Refusal(grpc.StatusCode.PERMISSION_DENIED, f"a {claims.role.value} token may not call {method}")
        if grpc_service(method) in GRPC_SUBJECT_BOUND and claims.sub is not None:
            named = {md[k] for k in (MD_CLIENT_ID, MD_CLIENT) if md.get(k)}
            if named != {claims.sub}:
                raise Refusal(grpc.StatusCode.PERMISSION_DENIED,
                              f"metadata '{MD_CLIENT_ID}' must be the client id this token belongs to "
                              f"({claims.sub})")
        return claims


def _metadata(metadata: Sequence[tuple[str, Any]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            out.setdefault(key.lower(), value)
    return out


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Runs `gate.check` before every RPC; a refused call never reaches the servicer."""

    LOG_EVERY = 30.0  # seconds between log lines per refusal code: a retrying client must not flood the log

    def __init__(self, gate: GrpcGate) -> None:
        self.gate = gate
        self._logged: dict[grpc.StatusCode, float] = {}

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler]],
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        try:
            self.gate.check(method, handler_call_details.invocation_metadata)  # type: ignore[arg-type]
        except Refusal as refused:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler  # unknown method: UNIMPLEMENTED, as without the gate
            now = time.monotonic()
            if refused.code is not grpc.StatusCode.UNAVAILABLE and \
                    now - self._logged.get(refused.code, -self.LOG_EVERY) >= self.LOG_EVERY:
                self._logged[refused.code] = now
                log.info("refused %s (%s): %s", method, refused.code.name, refused.details)
            return refusing_handler(handler, refused.code, refused.details)
        return await continuation(handler_call_details)


def refusing_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that ends the call with `code`."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, details)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, details)
        yield  # pragma: no cover  (makes this an async generator, as streaming responses need)

    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
