"""Ad-hoc tasks (commands, predictions, validations) and model / package ingest."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from scaleout_server.controller import models
from scaleout_server.controller.combiners import ActiveClient
from scaleout_server.controller.tasks import Target, TaskBatch
from scaleout_server.errors import Conflict, InvalidInput, NotFoundError, TooLarge
from scaleoututil import model as container
from tests.unit.test_controller_fakes import HELPER, Env, environment, seed_bytes


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with environment(tmp_path) as e:
        yield e


def test_command_results_are_grouped_per_combiner(env: Env) -> None:
    one = env.combiner("one", "a", "b")
    two = env.combiner("two", "c")
    record = env.controller.run_command("ping", {"x": 1}, None, timeout=5, synchronous=True)

    assert record.command_type == "Custom_ping" and record.status == "Finished"
    assert sorted(record.client_ids) == ["a", "b", "c"]
    assert [sorted(s.client_ids) for s in one.task_specs] == [["a", "b"]]
    assert [list(s.client_ids) for s in two.task_specs] == [["c"]]
    spec = one.task_specs[0]
    assert spec.type == "Custom_ping" and json.loads(spec.data) == {"parameters": {"x": 1}}
    assert spec.batch_id == record.command_id and spec.timeout == 5
    by_client = {x["client_id"]: x for x in record.results}
    assert {cid: x["combiner"] for cid, x in by_client.items()} == {"a": "one", "b": "one", "c": "two"}
    assert by_client["c"] == {"client_id": "c", "client_name": "name-c", "combiner": "two", "correlation_id": "c-c",
                              "status": "COMPLETED", "response": {"echo": {"x": 1}, "combiner": "two"}}
    assert env.store.commands.require(record.command_id).results == record.results


def test_command_to_chosen_clients_only_and_unknown_ids_are_listed(env: Env) -> None:
    one = env.combiner("one", "a", "b")
    two = env.combiner("two", "c")
    record = env.controller.run_command("Custom_ping", {}, ["b"], timeout=5, synchronous=True)
    assert record.command_type == "Custom_ping" and [x["client_id"] for x in record.results] == ["b"]
    assert [list(s.client_ids) for s in one.task_specs] == [["b"]] and two.task_specs == []
    with pytest.raises(InvalidInput, match="clients not connected \\(unknown or offline\\): zz, yy"):
        env.controller.run_command("ping", {}, ["a", "zz", "yy"], timeout=5, synchronous=True)
    with pytest.raises(InvalidInput, match="timeout"):
        env.controller.run_command("ping", {}, None, timeout=0, synchronous=True)


def test_command_without_clients_is_refused(env: Env) -> None:
    env.combiner("empty")
    with pytest.raises(InvalidInput, match="no client is connected"):
        env.controller.run_command("ping", {}, None, timeout=5, synchronous=True)


def test_asynchronous_command_returns_running_then_finishes(env: Env) -> None:
    env.combiner("one", "a")
    record = env.controller.run_command("ping", {}, None, timeout=5, synchronous=False)
    assert record.status == "Running"
    deadline = time.monotonic() + 5
    while env.store.commands.require(record.command_id).status == "Running" and time.monotonic() < deadline:
        time.sleep(0.05)
    stored = env.store.commands.require(record.command_id)
    assert stored.status == "Finished" and [x["status"] for x in stored.results] == ["COMPLETED"]


def test_an_unreachable_combiner_fails_its_clients_only(env: Env) -> None:
    env.combiner("one", "a")
    down, _ = env.controller.register_combiner("down", "127.0.0.1", 1)  # nothing listens there
    targets = env.controller.dispatcher.resolve(None)  # only "a": "down" cannot even list its clients
    assert [c.client_id for t in targets for c in t.clients] == ["a"]
    targets.append(Target(down, [ActiveClient("b", "name-b", False, down.combiner_id)]))
    results = env.controller.dispatcher.run(TaskBatch(task_type="Custom_ping", timeout=2), targets)
    by_client = {x["client_id"]: x for x in results}
    assert by_client["a"]["status"] == "COMPLETED"
    assert by_client["b"]["status"] == "FAILED"
    assert "RunTasks(Custom_ping) on combiner down failed" in by_client["b"]["response"]["error"]


def test_a_combiner_forgotten_during_the_batch_keeps_its_results_once(env: Env) -> None:
    env.combiner("one", "a")
    targets = env.controller.dispatcher.resolve(None)
    env.store.combiners.delete(targets[0].combiner.combiner_id)  # e.g. DELETE /api/v1/combiners/{id} meanwhile
    results = env.controller.dispatcher.run(TaskBatch(task_type="Custom_ping", timeout=2), targets)
    assert [(x["client_id"], x["status"]) for x in results] == [("a", "COMPLETED")]


def test_prediction_sends_inference_tasks_with_parameters_under_the_prediction_id(env: Env) -> None:
    fake = env.combiner("one", "a")
    seed = env.seed()
    record = env.controller.start_prediction("p1", None, None, {"n": 2}, timeout=5, synchronous=True)
    assert record.command_id == "p1" and record.command_type == "Scaleout_Inference"
    (spec,) = fake.task_specs
    assert (spec.type, spec.model_id, spec.batch_id) == ("Scaleout_Inference", seed, "p1")
    assert json.loads(spec.data) == {"parameters": {"n": 2}}
    with pytest.raises(Conflict, match="prediction 'p1' already exists"):
        env.controller.start_prediction("p1", None, None, {}, timeout=5, synchronous=True)
    with pytest.raises(NotFoundError):
        env.controller.start_prediction("p2", "nope", None, {}, timeout=5, synchronous=True)


def test_validation_of_a_model_on_all_clients(env: Env) -> None:
    fake = env.combiner("one", "a", "b")
    seed = env.seed()
    record = env.controller.start_validation(None, seed, None, timeout=5, synchronous=True)
    assert record.command_type == "Scaleout_Validation" and len(record.results) == 2
    (spec,) = fake.task_specs
    assert spec.type == "Scaleout_Validation" and spec.model_id == seed and sorted(spec.client_ids) == ["a", "b"]
    with pytest.raises(NotFoundError):
        env.controller.start_validation("no-session", seed, None, timeout=5, synchronous=True)


def test_add_model_wraps_raw_npz_in_a_container_and_sets_the_active_helper(env: Env) -> None:
    record = env.controller.add_model(io.BytesIO(seed_bytes([np.arange(4.0)])), HELPER, name="seed")
    assert record.parent_model is None and record.session_id is None and record.name == "seed"
    with env.repository.open("models", record.model_id) as stream:
        data = stream.read()
    assert len(data) == record.size
    assert container.read_container_metadata(io.BytesIO(data))["model_id"] == record.model_id
    assert np.array_equal(models.load_params(env.repository, record.model_id, HELPER)[0], np.arange(4.0))
    assert env.store.get_setting("active_helper") == HELPER


def test_add_model_accepts_a_container_under_a_new_id(env: Env) -> None:
    out = io.BytesIO()
    container.write_container(out, "old-id", io.BytesIO(seed_bytes([np.ones(2)])), helper_type=HELPER)
    out.seek(0)
    record = env.controller.add_model(out, HELPER)
    assert record.model_id != "old-id"
    assert np.array_equal(models.load_params(env.repository, record.model_id, HELPER)[0], np.ones(2))


def test_add_model_rejects_what_the_helper_cannot_load(env: Env) -> None:
    with pytest.raises(InvalidInput, match="not a valid model file for numpyhelper"):
        env.controller.add_model(io.BytesIO(b"certainly not a model"), HELPER)
    with pytest.raises(InvalidInput, match="unknown helper"):
        env.controller.add_model(io.BytesIO(seed_bytes()), "torchhelper")
    env.settings.max_upload_bytes = 10
    with pytest.raises(TooLarge):
        env.controller.add_model(io.BytesIO(seed_bytes()), HELPER)
    assert env.store.models.count() == 0


def make_tar(files: dict[str, bytes], mode: str = "w:gz") -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def test_add_package_stores_a_valid_archive_and_makes_it_active(env: Env) -> None:
    first = env.controller.add_package(make_tar({"scaleout.yaml": b"entry_points: {}"}), "pkg.tgz", "p1", "", HELPER)
    second = env.controller.add_package(make_tar({"proj/scaleout.yaml": b"x", "proj/a.py": b""}, "w:bz2"),
                                        "pkg.tar.bz2", "p2", "two", HELPER)
    assert second.active and not env.store.packages.require(first.package_id).active
    assert second.storage_file_name.endswith(".tar.bz2") and second.storage_file_name != "pkg.tar.bz2"
    assert env.repository.size("packages", second.storage_file_name) == second.size
    assert len(second.checksum) == 64 and second.description == "two" and second.file_name == "pkg.tar.bz2"


@pytest.mark.parametrize(("data", "file_name", "message"), [
    (make_tar({"scaleout.yaml": b""}).getvalue(), "pkg.zip", "must be a .tar.gz, .tgz, .tar.bz2 archive"),
    (b"not a tar", "pkg.tgz", "is not a readable tar archive"),
    (make_tar({"a/b/scaleout.yaml": b"", "readme": b""}).getvalue(), "pkg.tar.gz", "has no scaleout.yaml"),
])
def test_add_package_rejects_bad_archives(env: Env, data: bytes, file_name: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        env.controller.add_package(io.BytesIO(data), file_name, "p", "", HELPER)
    assert env.store.packages.count() == 0
