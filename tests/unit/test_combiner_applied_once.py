"""Crash safety on a real combiner: an update is on disk before it is acknowledged, and a retried
upload or a replayed ModelUpdate / report is recognised by its ids and folded only once."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from scaleout_server import durable
from scaleout_server.combiner.server import updates_dir_for
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import ScaleoutModel
from tests.unit.test_combiner_support import SEED_ID, SEED_PARAMS, Harness, SimClient, wait_until


@dataclass
class ReplayingClient(SimClient):
    """Uploads every update twice (a retried upload, same model-id) and sends its ModelUpdate twice
    (a replay after a lost acknowledgement); keeps the combiner's answers."""

    answers: list[str] = field(default_factory=list)

    def _train(self, task: pb.TaskRequest) -> ScaleoutModel:
        model = super()._train(task)
        self.upload(model)
        return model

    def _send_update(self, task: pb.TaskRequest, model: ScaleoutModel) -> None:
        meta = {"training_metadata": {"num_examples": self.num_examples}}
        message = pb.ModelUpdate(client_id=self.client_id, model_id=task.model_id, model_update_id=model.model_id,
                                 correlation_id=task.correlation_id, round_id=task.round_id,
                                 session_id=task.session_id, meta=json.dumps(meta))
        for _ in range(2):
            self.answers.append(self.stub.SendModelUpdate(message, metadata=self.metadata).response)


def round_spec(client_ids: list[str], round_id: str = "r1") -> pb.RoundSpec:
    return pb.RoundSpec(session_id="s1", round_id=round_id, model_id=SEED_ID, helper_type="numpyhelper",
                        client_ids=client_ids, aggregator="fedavg", round_timeout=10, buffer_size=-1,
                        delete_models=True)


def test_retried_upload_and_replayed_model_update_are_folded_once(harness: Harness,
                                                                  clients: list[SimClient]) -> None:
    replaying = ReplayingClient(harness.port, "a", constant=1.0, num_examples=1).start()
    clients.append(replaying)
    clients.append(SimClient(harness.port, "b", constant=3.0, num_examples=3).start())

    outcome = harness.control.RunRound(round_spec(["a", "b"]), timeout=30)

    assert outcome.error == ""
    assert replaying.answers == ["update received", "duplicate update, already received"]
    assert sorted(u.client_id for u in outcome.updates) == ["a", "b"]
    assert outcome.num_examples == 4.0  # a's update weighs 1, not 2
    expected = [p + 2.5 for p in SEED_PARAMS]  # (1 * 1 + 3 * 3) / 4
    for got, want in zip(harness.load_model(outcome.model_id), expected, strict=True):
        np.testing.assert_allclose(got, want)
    assert wait_until(lambda: len(harness.events_of("update")) >= 2)
    reported = [e["update_id"] for e in harness.events_of("update")]
    assert len(reported) == len(set(reported)) == 2  # the replay is not reported to the controller again


def test_replayed_done_report_does_not_settle_the_task_again(harness: Harness, clients: list[SimClient]) -> None:
    client = SimClient(harness.port, "a", constant=1.0).start()
    clients.append(client)
    first = harness.control.RunRound(round_spec(["a"]), timeout=30)
    (task_result,) = [t for t in first.tasks if t.client_id == "a"]
    task = harness.combiner.server.clients.get_task(task_result.correlation_id)
    assert task is not None and task.done
    settled_at, status = task.reported_at, task.status

    replay = pb.ActivityReport(node_id="a", correlation_id=task_result.correlation_id, status="COMPLETED", done=True)
    client.poll(reports=[replay], timeout=1.0)

    assert (task.reported_at, task.status) == (settled_at, status)
    second = harness.control.RunRound(round_spec(["a"], round_id="r2"), timeout=30)
    assert second.error == "" and len(second.updates) == 1 and second.num_examples == 1.0


def test_update_file_and_folder_are_fsynced_before_the_upload_is_acknowledged(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", recording_fsync)
    client = SimClient(harness.port, "a")
    try:
        model = ScaleoutModel.from_model_params([p + 1 for p in SEED_PARAMS], get_helper("numpyhelper"),
                                                model_id="upd-1")
        reply = client.upload(model)
    finally:
        client.stop()

    assert reply.status == pb.OK
    updates = updates_dir_for(harness.combiner.settings).resolve()
    assert (updates / "upd-1.scm").exists()
    # the bytes (under their temporary name), then the folder holding the rename, both before the reply
    assert len(synced) == 2, synced
    assert Path(synced[0]).parent == updates and Path(synced[0]).name.startswith(".upd-1.")
    assert Path(synced[1]) == updates


def test_commit_file_leaves_the_complete_file_under_its_final_name(tmp_path: Path) -> None:
    tmp = tmp_path / ".x.part"
    tmp.write_bytes(b"payload")
    durable.commit_file(tmp, tmp_path / "x.scm")
    assert not tmp.exists() and (tmp_path / "x.scm").read_bytes() == b"payload"
