"""Tokens on outgoing gRPC calls: the controller's Control calls to its combiners (the combiner
registry wraps the stubs it hands out when its `call_token` is set).

`AuthorizedStub` wraps a generated stub so that every call (plain, `.future`, `.with_call`)
carries `authorization: Bearer <token>`, with the token fetched per call so that a long-lived
channel never sends an expired one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from scaleoututil.protocol import MD_AUTHORIZATION


def _with_token(metadata: Sequence[tuple[str, str]] | None, token: str) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in (metadata or ()) if k.lower() != MD_AUTHORIZATION]
    return [*kept, (MD_AUTHORIZATION, f"Bearer {token}")]


class _AuthorizedCallable:
    def __init__(self, callable_: Any, token: Callable[[], str]) -> None:
        self._callable = callable_
        self._token = token

    def __call__(self, request: Any, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        return self._callable(request, *args, metadata=_with_token(metadata, self._token()), **kwargs)

    def future(self, request: Any, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        return self._callable.future(request, *args, metadata=_with_token(metadata, self._token()), **kwargs)

    def with_call(self, request: Any, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        return self._callable.with_call(request, *args, metadata=_with_token(metadata, self._token()), **kwargs)


class AuthorizedStub:
    """`stub.Method(...)` with the token added; any other attribute passes through."""

    def __init__(self, stub: Any, token: Callable[[], str]) -> None:
        self._stub = stub
        self._token = token

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._stub, name)
        if callable(attribute) and not name.startswith("_"):
            return _AuthorizedCallable(attribute, self._token)
        return attribute
