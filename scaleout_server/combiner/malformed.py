"""Requests that are not valid protobuf messages get INVALID_ARGUMENT (a gRPC server interceptor).

Why: grpc.aio answers a request it cannot deserialize with UNKNOWN and logs a traceback as if the server
had crashed. Both mislead: the client sent bytes of the wrong shape, and saying so (INVALID_ARGUMENT, with
the message type expected) is what a client or its developer can act on. Deserialization failures are
turned into a marker value here and answered by a wrapper around the real servicer method.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)


class Malformed:
    """Stands in for a request that could not be parsed."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError and whatever else a deserializer raises
            return Malformed(exc)

    return parse


async def _refuse(context: grpc.aio.ServicerContext, method: str, bad: Malformed) -> None:
    log.info("malformed request to %s from %s: %s", method, context.peer(), bad.error)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"the request is not a valid message for {method}: {bad.error}")


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Answer unparseable requests (unary or streamed) with INVALID_ARGUMENT instead of UNKNOWN."""

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler | None]],
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        kwargs = {"request_deserializer": _tolerant(handler.request_deserializer),
                  "response_serializer": handler.response_serializer}

        async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, Malformed):
                    await _refuse(context, method, request)
                yield request

        if not handler.request_streaming and not handler.response_streaming:
            unary_unary = handler.unary_unary

            async def uu(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, Malformed):
                    await _refuse(context, method, request)
                return await unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(uu, **kwargs)
        if not handler.request_streaming:
            unary_stream = handler.unary_stream

            async def us(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if isinstance(request, Malformed):
                    await _refuse(context, method, request)
                async for response in unary_stream(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(us, **kwargs)
        if not handler.response_streaming:
            stream_unary = handler.stream_unary

            async def su(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                return await stream_unary(checked(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(su, **kwargs)
        stream_stream = handler.stream_stream

        async def ss(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in stream_stream(checked(requests, context), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(ss, **kwargs)
