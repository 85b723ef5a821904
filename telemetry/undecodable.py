"""Requests that are not valid protobuf messages get INVALID_ARGUMENT, not UNKNOWN.

gRPC decodes a unary request before the handler runs; when the bytes are corrupt (or hold a
string that is not UTF-8) it answers UNKNOWN and logs a traceback, as if the daemon had
failed. This interceptor decodes such requests itself and refuses the bad ones with a clear
INVALID_ARGUMENT. Streamed requests are decoded while the handler iterates them; the publish
handlers catch the error there (``telemetry.daemon``), and this interceptor leaves them alone.
"""
from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError


class _Undecodable:
    """Stands for a request whose bytes could not be decoded."""
    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


async def _refuse(context: grpc.aio.ServicerContext, method: str, request: _Undecodable) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"the {method.rsplit('/', 1)[-1]} request cannot be decoded ({request.error}); "
                        "send a serialized message of the RPC's type, with UTF-8 strings")


class RefuseUndecodable(grpc.aio.ServerInterceptor):
    """Wraps every unary-request handler so an undecodable request is INVALID_ARGUMENT."""

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        decode = handler.request_deserializer
        method = details.method

        def tolerant(data: bytes) -> Any:
            try:
                return decode(data)
            except DecodeError as error:
                return _Undecodable(error)

        if handler.response_streaming:
            inner = handler.unary_stream
            if not inspect.isasyncgenfunction(inner):   # the daemon's streaming handlers all yield
                return handler

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Undecodable):
                    await _refuse(context, method, request)
                async for response in inner(request, context):
                    yield response
            return grpc.unary_stream_rpc_method_handler(
                streaming, request_deserializer=tolerant, response_serializer=handler.response_serializer)

        unary = handler.unary_unary

        async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                await _refuse(context, method, request)
            return await unary(request, context)
        return grpc.unary_unary_rpc_method_handler(
            answer, request_deserializer=tolerant, response_serializer=handler.response_serializer)
