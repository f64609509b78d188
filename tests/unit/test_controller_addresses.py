"""Several controller addresses: our client's REST session and the combiner's link reach whichever
controller is active (real HTTP servers on 127.0.0.1: one gone, one standby answering 503, one active)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from scaleout.client.controllers import controller_urls, follow_controllers
from scaleout_server.combiner.controller_link import ControllerLink
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(30)


class Controller(ThreadingHTTPServer):
    def __init__(self, active: bool) -> None:
        self.active = active
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Controller

    def _answer(self) -> None:
        self.server.paths.append(self.path)
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        status, body = (200, {"combiner_id": "c1", "ok": True}) if self.server.active else \
            (503, {"message": "this controller is a standby"})
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def controllers() -> Iterator[tuple[str, Controller, Controller]]:
    gone = f"http://127.0.0.1:{free_port()}"
    standby, active = Controller(False), Controller(True)
    for server in (standby, active):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield gone, standby, active
    for server in (standby, active):
        server.shutdown()
        server.server_close()


def test_addresses_are_parsed_from_a_comma_separated_value() -> None:
    assert controller_urls("127.0.0.1:8092, https://ctl-b.example:443/ ,") == [
        "http://127.0.0.1:8092", "https://ctl-b.example:443"]
    assert controller_urls("ctl-a.example", 8092) == ["https://ctl-a.example:8092"]


def test_the_client_session_reaches_the_active_controller_past_a_dead_one_and_a_standby(
        controllers: tuple[str, Controller, Controller]) -> None:
    gone, standby, active = controllers
    session = requests.Session()
    follow_controllers(session, [gone, standby.url, active.url])
    r = session.post(f"{gone}/api/v1/clients/add", json={"name": "x"}, timeout=5)
    assert r.status_code == 200 and r.json()["ok"] is True
    assert standby.paths == ["/api/v1/clients/add"] and active.paths == ["/api/v1/clients/add"]
    # the next request goes straight to the controller that answered
    assert session.get(f"{gone}/api/v1/packages/checksum", timeout=5).status_code == 200
    assert standby.paths == ["/api/v1/clients/add"] and len(active.paths) == 2
    # when it becomes a standby and the other one takes over, the session follows
    active.active, standby.active = False, True
    assert session.get(f"{gone}/api/v1/packages/checksum", timeout=5).status_code == 200
    assert standby.paths[-1] == "/api/v1/packages/checksum"


def test_with_no_active_controller_the_client_gets_the_standbys_503(
        controllers: tuple[str, Controller, Controller]) -> None:
    gone, standby, _ = controllers
    session = requests.Session()
    follow_controllers(session, [gone, standby.url])
    r = session.get(f"{gone}/api/v1/packages/checksum", timeout=5)
    assert r.status_code == 503 and "standby" in r.json()["message"]


def test_the_combiner_registers_with_the_active_controller_of_its_list(
        controllers: tuple[str, Controller, Controller]) -> None:
    gone, standby, active = controllers

    async def register() -> str:
        link = ControllerLink(f"{gone},{standby.url},{active.url}")
        try:
            await link.connect("edge", "127.0.0.1", 12080, "")
            return link.url
        finally:
            await link.aclose()

    assert asyncio.run(asyncio.wait_for(register(), 20)) == active.url
    assert standby.paths == ["/api/v1/combiners/"] and active.paths == ["/api/v1/combiners/"]
