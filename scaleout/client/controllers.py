"""Several controller addresses: follow whichever controller is active.

With a standby controller, `--api-url` may list both (`http://ctl-a:8092,http://ctl-b:8092`). Every REST
call of the client (token exchange, registration, packages) goes through one `requests.Session`; this
module mounts an adapter on it that sends each request to the controller that answered last, and moves
on to the next address when that one cannot be reached or answers 503 (a standby controller answers
every route but /health with 503). The rest of the client keeps using the first address as its base
URL and never needs to know which controller answered.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from scaleout.client.registration import api_base_url

logger = logging.getLogger(__name__)


def controller_urls(value: str, port: int | str | None = None) -> list[str]:
    """The normalised controller URLs of an `--api-url` value: one URL, or several comma-separated."""
    urls = [api_base_url(part, port) for part in value.split(",") if part.strip()]
    return urls or [api_base_url(value, port)]  # the empty value's own error message


class FollowActiveController(HTTPAdapter):
    """Sends a request meant for `urls[0]` to the controller that is active, trying each in turn."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__()
        self.urls = urls
        self.current = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        base = self.urls[0]
        path = (request.url or "")[len(base):]
        last_error: Exception | None = None
        response: requests.Response | None = None
        for step in range(len(self.urls)):
            index = (self.current + step) % len(self.urls)
            attempt = request.copy()
            attempt.url = self.urls[index] + path
            try:
                response = super().send(attempt, **kwargs)
            except requests.ConnectionError as exc:
                last_error = exc
                continue
            if response.status_code == 503 and step < len(self.urls) - 1:
                continue  # a standby (or an overloaded controller): ask the next one
            if index != self.current:
                logger.info("controller at %s answers now (was %s)", self.urls[index], self.urls[self.current])
                self.current = index
            return response
        if response is not None:
            return response
        assert last_error is not None
        raise last_error


def follow_controllers(session: requests.Session, urls: list[str]) -> None:
    """Route `session`'s requests for `urls[0]` to whichever of `urls` is active (nothing to do for one)."""
    if len(urls) > 1:
        session.mount(urls[0] + "/", FollowActiveController(urls))
