"""Our client tells its combiner whether it validates: Announce Connect carries {"validate": bool} from the
callbacks startup() registered, and is sent again when a new compute package is switched in. Real client
runtime against the in-test controller (serving the packages) and combiner."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from scaleout.client.runtime import ClientConfig, ClientRuntime
from scaleout.project.package import create_package
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.unit.test_client_fakes import (
    FakeController,
    HttpReply,
    assignment,
    running_combiner,
    running_controller,
    wait_until,
    write_project,
)

pytestmark = pytest.mark.timeout(60)

ADD = "POST /api/v1/clients/add"
TRAIN_ONLY = '''
def startup(client):
    client.set_custom_callback("ping", lambda params: {"version": 1})
    client.set_train_callback(lambda model, settings: (model, {"training_metadata": {"num_examples": 1}}))
'''
VALIDATING = TRAIN_ONLY.replace('"version": 1', '"version": 2') + '''
    client.set_validate_callback(lambda model: {"accuracy": 1.0})
'''


def serve(archive: Path) -> dict[str, list[HttpReply]]:
    data = archive.read_bytes()
    return {"GET /api/v1/packages/checksum": [HttpReply(200, {"checksum": hashlib.sha256(data).hexdigest()})],
            "GET /api/v1/packages/download": [HttpReply(200, data, {
                "Content-Disposition": f"attachment; filename={archive.name}"})]}


def connects(announces: list[pb.ClientAnnounceRequest]) -> list[dict[str, object]]:
    return [json.loads(a.parameters) for a in announces if a.type == "Connect"]


def test_connect_says_whether_the_client_validates_and_is_repeated_after_a_package_switch(tmp_path: Path) -> None:
    v1 = create_package(write_project(tmp_path / "v1", TRAIN_ONLY), name="v1.tgz", output=tmp_path)
    v2 = create_package(write_project(tmp_path / "v2", VALIDATING), name="v2.tgz", output=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    with running_combiner() as (combiner, port):
        fake = FakeController({ADD: [assignment(port)], **serve(v1)})
        with running_controller(fake) as url:
            runtime = ClientRuntime(ClientConfig(api_url=url, name="site-a", client_id="cid-1", workdir=work,
                                                 heartbeat_interval=0.1), echo=lambda text: None)
            runner = threading.Thread(target=runtime.run)
            runner.start()
            try:
                assert runtime.started.wait(20)
                assert connects(combiner.announces) == [{"validate": False}]
                fake.routes.update(serve(v2))  # the user activates a package that validates
                combiner.enqueue(pb.TaskRequest(correlation_id="t-1", type="Custom_ping", session_id="s2"))
                report = wait_until(lambda: combiner.done_report("t-1"), timeout=30)
                assert json.loads(report.response) == {"version": 2}  # the new package's callback answered
                assert connects(combiner.announces) == [{"validate": False}, {"validate": True}]
            finally:
                runtime.stop()
                runner.join(10)
