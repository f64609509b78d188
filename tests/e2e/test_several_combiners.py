"""One machine, several combiners: a controller, two stand-alone combiners and four clients, each its
own process, sharing the controller's local model repository folder.

- Clients spread over the combiners (least loaded); a round goes to both; the global model is the
  flat FedAvg of the four updates.
- One combiner is killed (SIGKILL) while its clients train: the round completes from the other
  combiner, its clients move to the survivor, the next rounds run there, no committed model is lost.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.cluster import (
    CLIENTS,
    assert_params,
    check_no_model_lost,
    clients_by_combiner,
    combiner_status,
    download_params,
    fedavg_step,
    rounds_of,
    seed_params,
    stop_all,
    wait_for_training,
)
from tests.e2e.deployment import Deployment, Proc, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

FAILOVER_AFTER = 4.0  # seconds; the default is 10


@dataclass
class Cluster:
    dep: Deployment
    combiners: dict[str, Proc]
    clients: dict[str, Proc]
    project: Path
    seed: str
    markers: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    dep = Deployment(tmp_path_factory.mktemp("several"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    try:
        dep.start_controller()
        combiners = {name: dep.start_combiner(name, port=free_port()) for name in ("alpha", "beta")}
        project = dep.project("weighted")
        seed = dep.upload_seed(project)
        markers = dep.root / "markers"
        clients = {spec.name: dep.start_client(spec.name, project, env=spec.env(markers, FAILOVER_AFTER), wait=False)
                   for spec in CLIENTS}
        dep.wait_online(list(clients))
        yield Cluster(dep, combiners, clients, project, seed, markers)
    except BaseException:
        print(dep.dump_logs())
        raise
    finally:
        stop_all(dep.procs)
        dep.close()


def test_an_unknown_preferred_combiner_is_refused_with_the_registered_names(cluster: Cluster) -> None:
    proc = cluster.dep.start_client("typo", cluster.project, extra=("--local-package", "-c", "gamma"), wait=False)
    assert proc.popen.wait(timeout=30) != 0
    output = proc.output()
    assert "preferred combiner 'gamma' is not registered with this controller (registered: alpha, beta)" in output


def test_global_model_is_flat_fedavg_and_a_killed_combiner_does_not_stop_the_session(cluster: Cluster) -> None:
    dep = cluster.dep
    placement = clients_by_combiner(dep)
    assert sorted(len(v) for k, v in placement.items() if k in ("alpha", "beta")) == [2, 2], placement

    # 1. one round over both combiners: the controller's reduce equals flat FedAvg over all four clients
    first = dep.start_session(rounds=1, round_timeout=60, model_id=cluster.seed, clients_required=4,
                              validate=False)
    assert dep.wait_session(first, 60)["status"] == "Finished"
    (round1,) = rounds_of(dep, first)
    entries = {c["name"]: c for c in round1["combiners"]}
    assert set(entries) == {"alpha", "beta"} and all(e["model_id"] and e["error"] is None for e in entries.values())
    assert sum(e["num_examples"] for e in entries.values()) == sum(s.num_examples for s in CLIENTS)
    after_first = download_params(dep, round1["new_model_id"])
    assert_params(after_first, seed_params(), fedavg_step(CLIENTS))

    # 2. kill beta while its clients train
    doomed = placement["beta"]
    survivors = [s for s in CLIENTS if s.name in placement["alpha"]]
    since = time.time()
    second = dep.start_session(rounds=3, round_timeout=45, model_id=round1["new_model_id"], clients_required=4,
                               validate=False)
    wait_for_training(cluster.markers, [cluster.clients[n].popen.pid for n in doomed], since)
    cluster.combiners["beta"].stop(signal.SIGKILL)

    session = dep.wait_session(second, 120)
    assert session["status"] == "Finished", session
    rounds = rounds_of(dep, second)
    assert [r["round_number"] for r in rounds] == [1, 2, 3]
    check_no_model_lost(dep, rounds, round1["new_model_id"])

    # the round beta died in was completed from alpha's clients alone
    killed = {c["name"]: c for c in rounds[0]["combiners"]}
    assert killed["beta"]["model_id"] is None and "UNAVAILABLE" in killed["beta"]["error"]
    assert rounds[0]["round_data"]["lost_combiners"] == ["beta"]
    assert_params(download_params(dep, rounds[0]["new_model_id"]), after_first, fedavg_step(survivors))

    # the next rounds ran on alpha only, with all four clients (beta's moved there)
    for r in rounds[1:]:
        assert [c["name"] for c in r["combiners"]] == ["alpha"], r["combiners"]
        assert r["combiners"][0]["updates_received"] == 4
    expected = fedavg_step(survivors) + 2 * fedavg_step(CLIENTS)
    assert_params(download_params(dep, rounds[-1]["new_model_id"]), after_first, expected)
    assert combiner_status(dep, "beta") == "offline"
    wait_until(lambda: clients_by_combiner(dep).get("alpha") == sorted(s.name for s in CLIENTS), 10,
               what="every client on alpha")
    for name in doomed:
        assert "moved from combiner" in cluster.clients[name].output()
