"""The server-functions example (examples/server-functions) on a real local deployment: four device
clients report their tier and whether they are charging; the example's ServerFunctions, given to
`scaleout session start --server-functions FILE`, trains on a rotating half of the charging devices and
gives each its tier's local epochs and batch size. What each client trained with is read back from its
model updates and metrics in the store, over REST."""

from __future__ import annotations

import importlib.util
import inspect
import io
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import requests

from scaleout_server.controller.server_functions import Limits, WorkerProcess
from scaleoututil.helpers.helpers import get_helper
from tests.conftest import free_port
from tests.e2e.deployment import Deployment, wait_until

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "server-functions"
ROUNDS = 3
# name -> (tier, charging); the server functions must never pick sf-4, which is not charging
DEVICES = {"sf-1": ("fast", "true"), "sf-2": ("slow", "true"), "sf-3": ("fast", "true"), "sf-4": ("slow", "false")}
TIERS = {"fast": {"local_epochs": 4, "batch_size": 16}, "slow": {"local_epochs": 1, "batch_size": 64}}

helper = get_helper("numpyhelper")


def load_example_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # inspect.getsource finds the class through its module
    spec.loader.exec_module(module)
    return module


def download_params(dep: Deployment, model_id: str) -> list[np.ndarray]:
    r = requests.get(f"{dep.api_url}/api/v1/models/{model_id}/download", params={"format": "raw"}, timeout=30)
    assert r.status_code == 200, r.text
    return helper.load(io.BytesIO(r.content))


def current_attributes(dep: Deployment, ids: list[str]) -> dict[str, dict[str, Any]]:
    r = dep.post("/api/v1/attributes/current", {"node_ids": ids})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.timeout(240)
def test_rotating_half_of_the_charging_devices_trains_each_with_its_tiers_settings(
        deployment: Deployment, clients_stopped: None) -> None:
    dep = deployment
    project = dep.root / "server-functions"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "*.npz", "*.tgz"))
    seed = dep.upload_seed(project)
    for i, (name, (tier, charging)) in enumerate(DEVICES.items()):
        dep.start_client(name, project, env={"EXAMPLE_PARTITION": str(i), "DEVICE_TIER": tier,
                                             "DEVICE_CHARGING": charging})
    ids = {name: dep.online_clients()[name]["client_id"] for name in DEVICES}
    names = {cid: name for name, cid in ids.items()}
    # the attributes travel client -> combiner -> controller: wait until the server knows them all
    wait_until(lambda: all("tier" in a for a in current_attributes(dep, list(ids.values())).values()), 30, 0.2,
               "the clients' attributes")

    result = dep.cli("session", "start", "--server-functions", str(project / "server_functions.py"),
                     "-r", str(ROUNDS), "-rt", "60", "-mc", str(len(DEVICES)), "-v", "false", "-m", seed,
                     "-n", "server-functions-example", "--wait", "--timeout", "180", *dep.api_args(),
                     cwd=project)
    assert "with server functions" in result.stdout

    session = dep.get("/api/v1/sessions/", params={"name": "server-functions-example"})["result"][0]
    assert session["status"] == "Finished", session
    rounds = dep.rounds(session["session_id"])
    assert [r["status"] for r in rounds] == ["Finished"] * ROUNDS
    charging = sorted(ids[name] for name, (_, on) in DEVICES.items() if on == "true")
    for number, round_ in enumerate(rounds, start=1):
        # who trained: every other charging device in id order, starting with the first in odd rounds
        expected = set(charging[(number - 1) % 2::2])
        updates = dep.get("/api/v1/updates/", params={"round_id": round_["round_id"]})["result"]
        assert {u["client_id"] for u in updates} == expected, (number, [names[u["client_id"]] for u in updates])
        notes = round_["round_data"]["server_functions"]
        assert "errors" not in notes, notes
        assert notes["client_selection"] == {**notes["client_selection"], "selected": len(expected), "offered": 4}
        assert notes["client_settings_for"]["clients"] == len(expected)
        # how: the round's learning rate for all, the tier's epochs and batch size for each
        learning_rate = round(0.05 * 0.7 ** (number - 1), 6)
        for update in updates:
            tier = DEVICES[names[update["client_id"]]][0]
            training = update["meta"]["training_metadata"]
            assert update["meta"]["tier"] == tier
            assert update["meta"]["client_settings"] == {"round": number, "learning_rate": learning_rate,
                                                         **TIERS[tier]}
            assert (training["learning_rate"], training["local_epochs"], training["batch_size"]) == (
                learning_rate, TIERS[tier]["local_epochs"], TIERS[tier]["batch_size"])
            assert training["num_examples"] == 200

    # the settings are in the clients' metrics too, per round
    metrics = dep.get("/api/v1/metrics/", params={"session_id": session["session_id"], "key": "local_epochs"})
    logged = sorted((m["round_id"], m["sender"]["client_id"], m["value"]) for m in metrics["result"])
    assert logged == sorted((u["round_id"], u["client_id"], float(TIERS[DEVICES[names[u["client_id"]]][0]]
                                                                      ["local_epochs"]))
                            for r in rounds for u in dep.get("/api/v1/updates/",
                                                             params={"round_id": r["round_id"]})["result"])
    assert ids["sf-4"] not in {client for _, client, _ in logged}  # not charging: never trained

    # and they trained for real: the final global model is much closer to the true one than the seed
    data = load_example_module("server_functions_example_data", EXAMPLE / "client" / "data.py")
    truth = np.append(data.TRUE_WEIGHTS, data.TRUE_BIAS)
    start = np.concatenate(download_params(dep, seed))
    final = np.concatenate(download_params(dep, rounds[-1]["new_model_id"]))
    assert np.linalg.norm(final - truth) < 0.25 * np.linalg.norm(start - truth)


def test_the_class_alone_runs_as_the_api_client_sends_it(tmp_path: Path) -> None:
    """APIClient.start_session(server_functions=ServerFunctions) sends only the class's text: it must run
    without the file's imports, and select as if no client said anything when the controller is away."""
    module = load_example_module("server_functions_example", EXAMPLE / "server_functions.py")
    source = inspect.getsource(module.ServerFunctions)
    unreachable = {"host": "127.0.0.1", "port": free_port()}
    worker = WorkerProcess(source, Limits(timeout=20.0, memory_bytes=1024 * 2**20), tmp_path / "sf", unreachable)
    model = tmp_path / "global"
    model.mkdir()
    np.save(model / "0.npy", np.zeros(8))
    np.save(model / "1.npy", np.zeros(1))
    try:
        assert worker.ensure_loaded() == ["client_selection", "client_settings", "client_settings_for"]
        ids = ["d", "b", "c", "a"]
        for expected in (["a", "c"], ["b", "d"]):
            assert worker.call({"op": "client_selection", "client_ids": ids, "round_type": "training"})[
                "result"] == expected
        assert worker.call({"op": "client_settings", "global_model": {"dir": str(model), "count": 2}})[
            "result"] == {"round": 2, "learning_rate": 0.035}
        assert worker.call({"op": "client_settings_for", "client_ids": ["b"],
                            "global_model": {"dir": str(model), "count": 2}})["result"] == {"b": TIERS["slow"]}
    finally:
        worker.close()
