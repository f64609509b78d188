"""Server behaviour the official 1.0.7/1.1 clients and CLI rely on, found by running them against
our server: streamed attribute/telemetry values, current attributes per client, `package set-active
--restart-clients`, and a round error that names why training failed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from scaleout_server.api.app import create_app
from scaleout_server.combiner.client_service import record_value
from scaleout_server.controller.core import plaintext_hint
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.unit.test_api_support import package_bytes
from tests.unit.test_combiner_support import SimClient, wait_until
from tests.unit.test_controller_fakes import HELPER, seed_bytes
from tests.unit.test_controller_with_combiner import Deployment
from tests.unit.test_controller_with_combiner import deployment as deployment  # noqa: F401  (fixture)


def test_record_value_unwraps_only_the_1_1_scalar_wrapper() -> None:
    assert record_value(json.dumps({"value": "True"})) == "True"
    assert record_value(json.dumps({"value": 7.5})) == 7.5
    assert record_value(json.dumps({"value": 0.5, "step": 12})) == {"value": 0.5, "step": 12}
    assert record_value(json.dumps({"n": 2})) == {"n": 2}
    assert record_value("not json") == "not json"
    assert record_value("") is None


@pytest.fixture
def api(deployment: Deployment) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(create_app(deployment.controller), raise_server_exceptions=False) as client:
        yield client


def test_streamed_attributes_become_the_clients_current_attributes(deployment: Deployment,  # noqa: F811
                                                                   api: TestClient) -> None:
    d = deployment
    new = SimClient(d.port, "c11").start()  # streams like the 1.1 client
    old = SimClient(d.port, "c107").start()  # unary messages like 1.0.7 and our client
    try:
        records = [pb.AttributeRecord(attribute_id="a1", key="charging", payload=json.dumps({"value": "False"})),
                   pb.AttributeRecord(attribute_id="a2", key="charging", payload=json.dumps({"value": "True"})),
                   pb.AttributeRecord(attribute_id="a3", key="gpu", payload=json.dumps({"n": 2}))]
        assert len(list(new.stub.StreamAttributeRecord(iter(records), metadata=new.metadata, timeout=5))) == 3
        telemetry = [pb.TelemetryRecord(telemetry_id="t1", key="cpu_usage", payload=json.dumps({"value": 7.5}))]
        assert len(list(new.stub.StreamTelemetryRecord(iter(telemetry), metadata=new.metadata, timeout=5))) == 1
        old.stub.SendAttributeMessage(pb.AttributeMessage(
            client_id="c107", attributes=[pb.AttributeElem(key="charging", value="True")]), metadata=old.metadata)

        def current() -> dict[str, dict[str, object]]:
            res = api.post("/api/v1/attributes/current", json={"node_ids": ["c11", "c107"]})
            assert res.status_code == 200, res.text
            return res.json()

        assert wait_until(lambda: current()["c107"] and current()["c11"].get("gpu"), 10), current()
        assert current() == {"c11": {"charging": "True", "gpu": {"n": 2}}, "c107": {"charging": "True"}}
        assert wait_until(lambda: d.store.clients.require("c11").telemetry.get("cpu_usage") == 7.5, 10)
    finally:
        new.stop()
        old.stop()


def test_package_upload_with_restart_clients_sends_restart_tasks(deployment: Deployment,  # noqa: F811
                                                                 api: TestClient) -> None:
    d = deployment
    client = SimClient(d.port, "a").start()
    try:
        plain = api.post("/api/v1/packages/", files={"file": ("p.tgz", package_bytes())}, data={"name": "p1"})
        assert plain.status_code == 200, plain.text
        assert "restart_command_id" not in plain.json()
        res = api.post("/api/v1/packages/", files={"file": ("p.tgz", package_bytes())},
                       data={"name": "p2", "restart_clients": "true", "abort_ongoing_tasks": "true"})
        assert res.status_code == 200, res.text
        assert res.json()["restarted_clients"] == ["a"]
        assert wait_until(lambda: any(t.type == "Scaleout_RestartClient" for t in client.received), 10)
        (task,) = [t for t in client.received if t.type == "Scaleout_RestartClient"]
        assert json.loads(task.data) == {"parameters": {"abort_ongoing_tasks": True, "force": False}}
        command_id = res.json()["restart_command_id"]
        # this simulated client cannot restart: its answer is kept on the command
        assert wait_until(lambda: d.store.commands.require(command_id).status == "Finished", 10)
        (result,) = d.store.commands.require(command_id).results
        assert result["status"] == "FAILED"
    finally:
        client.stop()


def test_round_error_names_the_clients_whose_training_failed(deployment: Deployment) -> None:  # noqa: F811
    d = deployment
    d.controller.add_model(io.BytesIO(seed_bytes([np.zeros(3)])), HELPER)
    client = SimClient(d.port, "a", name="edge-a").start()
    client._run = lambda task: client._report(  # type: ignore[method-assign]
        task, "FAILED", True, {"error": "type object 'ScaleoutModel' has no attribute 'from_model_params'"})
    try:
        session = d.controller.create_session("s", {"rounds": 1, "round_timeout": 20}, None)
        d.controller.start_session(session.session_id)
        assert d.controller.wait_for_session(30)
        error = d.store.sessions.require(session.session_id).error or ""
        assert "training failed on 1 client(s): edge-a: type object 'ScaleoutModel' has no attribute" in error
    finally:
        client.stop()


def test_plaintext_hint_only_for_official_1_0_x_clients_after_1_0_0() -> None:
    hint = plaintext_hint("1.0.7")
    assert hint is not None and "SCALEOUT_GRPC_SECURE=false" in hint
    for version in (None, "", "1.0.0", "1.1.0", "0.33.1", "garbage"):
        assert plaintext_hint(version) is None
