"""Failures a user can act on, one type per kind, mapped once to HTTP statuses (api/app.py)
and gRPC codes (combiner)."""

from __future__ import annotations


class ServerError(Exception):
    http_status = 500


class InvalidInput(ServerError):
    """The request is malformed or asks for something impossible; the message says what to fix."""

    http_status = 400


class NotFoundError(ServerError):
    http_status = 404


class Conflict(ServerError):
    """Valid request, wrong moment: e.g. a session already running."""

    http_status = 409


class TooLarge(ServerError):
    http_status = 413


class Unavailable(ServerError):
    """A part of the deployment (a combiner) cannot be reached right now."""

    http_status = 503
