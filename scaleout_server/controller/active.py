"""One controller process, active or standing by: the lease, the take-over and the HTTP gate in front.

On PostgreSQL every controller holds the controller lease (`store/lease.py`) while it is active, and
every write it makes is fenced by the lease's epoch. `controller start` takes the lease (waiting up to one
lease period for the lease of a controller that just died) or refuses when another controller is alive;
`controller start --standby` serves `/health` at once, answers every other route with 503 (`standby`),
and tries the lease every second. When it gets it, it builds the controller from the statestore and the
repository only (`Controller.start` resumes the running session as after a restart, `recovery.py`), and
from then on the gate passes every request to the REST app.

`/ready` is answered by the gate itself: 200 while active, 503 while standing by (the readiness probe of a
Kubernetes Service, so that the service address reaches the active controller only; `/health` stays the
liveness probe, 200 in both states).

The active controller renews the lease every 1.5 s. When a renewal finds that another controller took the
lease, the process exits at once with `EXIT_LEASE_LOST` (its writes are already refused by the fence;
exiting also stops its calls to combiners). While the database cannot be reached it keeps trying: its
writes fail meanwhile, and nobody else can take the lease either. A clean shutdown (SIGTERM) of a
controller holding the lease hands over: it stops writing first (so its running session stays Running),
then releases the lease, and the standby (or the next start) resumes the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from scaleout_server.controller.app_factory import build_controller_app
from scaleout_server.controller.core import Controller
from scaleout_server.repository.factory import repository_from_settings
from scaleout_server.settings import ServerSettings
from scaleout_server.store.base import Store
from scaleout_server.store.factory import make_store
from scaleout_server.store.lease import (
    RENEW_EVERY,
    STANDBY_POLL,
    ControllerLease,
    LeaseHolder,
    LeaseLost,
    supports_lease,
)
from scaleout_server.tls import api_url

log = logging.getLogger(__name__)

EXIT_LEASE_LOST = 75  # the process exit code when another controller took the lease
READY_PATH = "/ready"
HEALTH_PATH = "/health"
STANDBY_NEEDS_POSTGRES = (
    "--standby needs a PostgreSQL statestore (store_url / SCALEOUT_STORE_URL = postgresql+psycopg://...) and a "
    "repository both controllers reach (S3): a standby takes over through a lease held in that database. "
    "SQLite belongs to one host and one controller, so there is nothing a standby could take over")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class StandbyGate:
    """The ASGI app uvicorn serves: answers by itself while standing by, then passes requests to `app`."""

    def __init__(self, describe_active: Callable[[], str]) -> None:
        self.app: FastAPI | None = None
        self._describe_active = describe_active

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the REST app has no start-up work of its own
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope.get("path", "")
        if scope["type"] == "http" and path == READY_PATH:
            active = self.app is not None
            await _answer(send, 200 if active else 503, {"state": "active" if active else "standby"})
            return
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1013})
            return
        if path == HEALTH_PATH:
            await _answer(send, 200, None, text="OK")
            return
        who = await asyncio.to_thread(self._describe_active)  # a database query: not on the event loop
        await _answer(send, 503, {"message": f"this controller is a standby; {who}", "state": "standby"},
                      retry_after=True)


async def _answer(send: Send, status: int, body: dict[str, Any] | None, text: str = "",
                  retry_after: bool = False) -> None:
    payload = json.dumps(body).encode() if body is not None else text.encode()
    headers = [(b"content-type", b"application/json" if body is not None else b"text/plain; charset=utf-8"),
               (b"content-length", str(len(payload)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def describe(holder: LeaseHolder | None) -> str:
    if holder is None:
        return "no controller has taken the lease yet"
    state = "expired" if holder.expired else "held"
    return f"the active controller is {holder.holder} at {holder.address} (lease epoch {holder.epoch}, {state})"


class ControllerProcess:
    """Builds the gate, takes the lease (now, or when standing by, later), activates the controller."""

    def __init__(self, settings: ServerSettings, *, secure: bool, standby: bool,
                 on_active: Callable[[FastAPI], None] = lambda app: None,
                 exit_process: Callable[[int], None] = os._exit) -> None:
        self.settings = settings
        self.secure = secure
        self.standby = standby
        self.on_active = on_active
        self.exit_process = exit_process  # tests pass a recorder instead of ending the interpreter
        self.store: Store | None = None
        self.lease: ControllerLease | None = None
        self.controller: Controller | None = None
        self.gate = StandbyGate(self._describe_active)
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []

    def prepare(self) -> StandbyGate:
        """Open storage and, unless standing by, take the lease and activate; returns the app to serve.
        ValueError/StoreError/RepositoryError when it cannot (the CLI prints them)."""
        url = self.settings.resolved_store_url()
        if self.standby and not supports_lease(url):
            raise ValueError(STANDBY_NEEDS_POSTGRES)
        Path(self.settings.data_dir).mkdir(parents=True, exist_ok=True)
        repository = repository_from_settings(self.settings)  # cannot reach S3: fail now, not at take-over
        self.store = make_store(url)
        if supports_lease(url):
            self.lease = ControllerLease(url, address=api_url(self.settings))
        if not self.standby:
            self._take_or_refuse()
            self._activate(repository)
        else:
            log.info("standing by: %s; taking over when its lease expires", self._describe_active())
            self._spawn(self._stand_by, "standby", repository)
        return self.gate

    def _describe_active(self) -> str:
        try:
            return describe(self.lease.current()) if self.lease is not None else "no lease (SQLite)"
        except Exception as exc:  # the database is down: say so rather than fail the answer
            return f"the statestore cannot be asked who is active ({type(exc).__name__})"

    def _take_or_refuse(self) -> None:
        """Without --standby: the lease now, or once the lease of a controller that just died expires."""
        if self.lease is None:
            return
        deadline = time.monotonic() + self.lease.ttl + 2 * STANDBY_POLL
        while not self.lease.try_acquire():
            holder = self.lease.current()
            if time.monotonic() > deadline:
                raise ValueError(f"another controller is active: {describe(holder)}. Stop it first, or start "
                                 "this one with --standby to take over when it dies")
            log.info("waiting for the controller lease: %s", describe(holder))
            time.sleep(STANDBY_POLL)

    def _stand_by(self, repository: Any) -> None:
        assert self.lease is not None
        last_error = ""
        while not self._closing.is_set():
            try:
                if self.lease.try_acquire():
                    break
                last_error = ""
            except Exception as exc:  # the database is down: keep standing by, say it once
                if str(exc) != last_error:
                    log.warning("standby cannot reach the statestore: %s", exc)
                last_error = str(exc)
            self._closing.wait(STANDBY_POLL)
        if self._closing.is_set():
            return
        log.warning("taking over as the active controller (lease epoch %s)", self.lease.epoch)
        started = time.monotonic()
        try:
            self._activate(repository)
        except Exception:
            log.exception("could not take over as the active controller; exiting so another one can")
            self.lease.release()
            self.exit_process(EXIT_LEASE_LOST)
            return
        log.warning("active: took over in %.1f s", time.monotonic() - started)

    def _activate(self, repository: Any) -> None:
        assert self.store is not None
        if self.lease is not None:
            self.store.set_write_fence(self.lease.fence)  # type: ignore[attr-defined]
            self._spawn(self._renew, "lease-renew")
        app, self.controller = build_controller_app(self.settings, secure=self.secure, store=self.store,
                                                    repository=repository)
        self.on_active(app)
        self.gate.app = app

    def _renew(self) -> None:
        assert self.lease is not None
        failing = False
        while not self._closing.wait(RENEW_EVERY):
            try:
                held = self.lease.renew()
            except Exception as exc:  # writes are fenced: nobody else can write while we cannot renew
                if not failing:
                    log.warning("cannot renew the controller lease (%s); retrying", exc)
                failing = True
                continue
            if failing:
                log.info("controller lease renewed again")
            failing = False
            if not held and not self._closing.is_set():
                log.critical("another controller took the controller lease: %s. Exiting (code %d) so that only "
                             "one controller is active", self._describe_active(), EXIT_LEASE_LOST)
                self.exit_process(EXIT_LEASE_LOST)
                return

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        """Shut down. Holding the lease, hand over: stop writing first (the running session stays Running
        for the next active controller to resume), close the controller, then release the lease."""
        self._closing.set()
        if self.lease is not None and self.lease.epoch is not None and self.store is not None:
            self.store.set_write_fence(_handing_over)  # type: ignore[attr-defined]
        if self.controller is not None:
            self.controller.close()
        for thread in self._threads:
            thread.join(5)
        if self.lease is not None:
            self.lease.release()
            self.lease.close()
        if self.store is not None:
            self.store.close()


def _handing_over(conn: Any) -> None:
    raise LeaseLost("this controller is shutting down and handing over: it writes nothing more")


__all__ = ["ControllerProcess", "StandbyGate", "EXIT_LEASE_LOST", "STANDBY_NEEDS_POSTGRES"]
