"""The combiner's REST link to its controller, against a tiny real HTTP controller on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from scaleout_server.combiner.controller_link import ControllerLink
from scaleout_server.combiner.server import serve
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store import codec
from scaleout_server.store import records as r
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc


class FakeController:
    """Answers registration and event posts; `fail_next` makes the next N requests answer 503."""

    def __init__(self, repository_path: Path) -> None:
        self.registrations: list[dict[str, Any]] = []
        self.batches: list[list[dict[str, Any]]] = []
        self.fail_next = 0
        self.repository_path = repository_path
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    self._reply(503, {"message": "starting"})
                elif self.path == "/api/v1/combiners/":
                    outer.registrations.append(body)
                    self._reply(200, {"combiner_id": "comb-1",
                                      "repository": {"type": "local", "path": str(outer.repository_path)}})
                elif self.path == "/api/v1/combiners/comb-1/events":
                    outer.batches.append(body["events"])
                    self._reply(200, {"stored": len(body["events"])})
                else:
                    self._reply(404, {"message": "no such route"})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[FakeController]:
    fake = FakeController(tmp_path / "repo")
    yield fake
    fake.close()


def test_registration_retries_until_the_controller_answers(controller: FakeController) -> None:
    controller.fail_next = 2

    async def go() -> dict[str, Any] | None:
        link = ControllerLink(controller.url)
        try:
            return await link.connect("c", "127.0.0.1", 1234, "edge.example")
        finally:
            await link.aclose()

    description = asyncio.run(go())
    assert description == {"type": "local", "path": str(controller.repository_path)}
    assert controller.registrations == [{"name": "c", "host": "127.0.0.1", "port": 1234,
                                         "public_hostname": "edge.example"}]


def test_events_are_posted_in_batches_and_flush_waits_for_them(controller: FakeController) -> None:
    async def go() -> bool:
        link = ControllerLink(controller.url, batch_interval=0.05, batch_max=10)
        await link.connect("c", "127.0.0.1", 1, "h")
        link.start()
        controller.fail_next = 1  # the first delivery fails and is retried
        for i in range(25):
            link.emit_record(r.MetricRecord(metric_id=f"m{i}", key="loss", value=float(i), sender=r.Sender("x")))
        flushed = await link.flush(timeout=10)
        await link.stop()
        await link.aclose()
        return flushed

    assert asyncio.run(go()) is True
    assert [codec.decode(e).metric_id for e in controller.events] == [f"m{i}" for i in range(25)]
    assert max(len(b) for b in controller.batches) <= 10


def test_a_full_queue_drops_the_oldest_events() -> None:
    async def go() -> ControllerLink:
        link = ControllerLink("http://127.0.0.1:9", queue_max=3)
        for i in range(5):
            link.emit({"kind": "combiner_load", "data": {"load": i}})
        await link.aclose()
        return link

    link = asyncio.run(go())
    assert link.dropped == 2 and link.pending == 3


def test_link_without_controller_url_says_what_to_set() -> None:
    with pytest.raises(ValueError, match="controller_url"):
        ControllerLink("")


def test_serve_registers_opens_the_named_repository_and_serves(controller: FakeController, tmp_path: Path) -> None:
    LocalRepository(controller.repository_path)
    settings = ServerSettings(host="127.0.0.1", combiner_port=0, data_dir=tmp_path / "data", combiner_name="edge-1",
                              controller_url=controller.url, public_hostname="combiner.example")
    ports: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(serve(settings, stop, ready=ports.append)))
    thread.start()
    try:
        for _ in range(200):
            if ports:
                break
            threading.Event().wait(0.05)
        assert ports and controller.registrations[0]["port"] == ports[0]
        assert controller.registrations[0]["public_hostname"] == "combiner.example"
        with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as channel:
            reply = pb_grpc.CombinerClientStub(channel).Announce(
                pb.ClientAnnounceRequest(type="VersionCheck"), metadata=(("client-id", "c1"),), timeout=5)
            assert json.loads(reply.parameters)["success"] is True
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.ModelServiceStub(channel).Download(pb.ModelRequest(model_id="nope")).next()
            assert err.value.code() == grpc.StatusCode.NOT_FOUND  # the repository is open
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
    kinds = {e["kind"] for e in controller.events}
    assert "client_seen" in kinds and "combiner_load" in kinds
