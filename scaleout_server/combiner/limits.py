"""Per-client request rate limit on the combiner's client-facing RPCs (a gRPC server interceptor).

Each client id (metadata `client-id`/`client`) gets a token bucket (settings `client_rate_limit` requests
per second, burst `client_rate_burst`); calls without an id share one bucket. The controller's `Control`
service is not limited.

The status code of a refusal follows what the clients do with it (client-1.1 wire contract, §2.5 and §4):
the official client *exits* when a poll fails with RESOURCE_EXHAUSTED, and fails the task when a model
transfer does, while it retries FAILED_PRECONDITION. So the calls a client retries in its main loop
(polls, Announce, Download, Upload) are refused with FAILED_PRECONDITION and the queued messages
(metrics, statuses, updates, telemetry) with RESOURCE_EXHAUSTED, which the clients' outboxes retry with
back-off. Both carry a message naming the limit and the setting that raises it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from scaleout_server.auth.grpc_gate import refusing_handler
from scaleout_server.ratelimit import RateLimiter
from scaleoututil.protocol import MD_CLIENT, MD_CLIENT_ID

log = logging.getLogger(__name__)

LIMITED_SERVICES = ("/scaleout.CombinerClient/", "/scaleout.ModelService/")
# retried by the clients' main loops only when refused with UNAVAILABLE / FAILED_PRECONDITION
LIVE_METHODS = frozenset({
    "/scaleout.CombinerClient/PollAndReportAsync", "/scaleout.CombinerClient/PollAndReport",
    "/scaleout.CombinerClient/TaskStream", "/scaleout.CombinerClient/Announce",
    "/scaleout.ModelService/Download", "/scaleout.ModelService/Upload", "/scaleout.ModelService/OpenTransfer",
})


def client_key(metadata: Any) -> str:
    for key, value in metadata or ():
        if key.lower() in (MD_CLIENT_ID, MD_CLIENT) and isinstance(value, str) and value:
            return value
    return ""


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Refuse a client's call when its bucket is empty (see the module docstring for the codes)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler | None]],
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if not self.limiter.enabled or not method.startswith(LIMITED_SERVICES):
            return await continuation(handler_call_details)
        key = client_key(handler_call_details.invocation_metadata)
        if self.limiter.allow(key):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        who = f"client {key}" if key else "calls without a client id"
        message = (f"rate limit exceeded: {who} sent more than {self.limiter.rate:g} requests per second "
                   f"(burst {self.limiter.burst}); retry in {self.limiter.retry_after(key):.1f}s, or raise the "
                   "combiner settings client_rate_limit / client_rate_burst")
        if self.limiter.should_warn(key):
            log.warning("%s (%s)", message, method)
        code = grpc.StatusCode.FAILED_PRECONDITION if method in LIVE_METHODS else grpc.StatusCode.RESOURCE_EXHAUSTED
        return refusing_handler(handler, code, message)

