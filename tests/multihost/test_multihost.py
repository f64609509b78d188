"""Several hosts: the controller, two combiners and four clients each in their own network namespace
(own address, one veth link to a shared bridge), on PostgreSQL and an S3 store (SeaweedFS) listening
on the bridge. Select with `pytest -k multihost`; it starts every service it needs.

- The global model of a round over both combiners equals the flat FedAvg of the four updates.
- Cutting one combiner's link while its clients train does not stop the session: the round completes
  from the other combiner, the cut combiner's clients move over, the next rounds run on the survivor,
  and every committed model is in the S3 bucket. Restoring the link brings the combiner back online.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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
from tests.e2e.deployment import Deployment, Proc, scaleout_cmd, wait_until
from tests.multihost.netns import Host, HostNetwork, netns_available, remove_stale
from tests.multihost.relay import TcpRelay
from tests.storage.services import (
    PG_USER,
    PostgresServer,
    S3Server,
    ServiceError,
    postgres_bindir,
    start_postgres,
    start_seaweedfs,
    weed_binary,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

API_PORT = 8092
COMBINER_PORT = 12080
BUCKET = "scaleout-multihost"
FAILOVER_AFTER = 5.0  # seconds; the default is 10


@dataclass
class HostDeployment(Deployment):
    """`Deployment` whose processes run on the test hosts; the REST helpers reach the controller's host."""

    controller_host: Host | None = None
    server_env: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        assert self.controller_host is not None
        return f"http://{self.controller_host.address}:{API_PORT}"

    def api_args(self) -> list[str]:
        assert self.controller_host is not None
        return ["-p", "http", "-H", self.controller_host.address, "-P", str(API_PORT)]

    def start_controller_on(self, host: Host, timeout: float = 60) -> Proc:
        """The controller (always secured): its admin token then signs the tokens of combiners and clients."""
        self.controller_host = host
        proc = self._spawn("controller", host.cmd(*scaleout_cmd(
            "controller", "start", "--host", host.address, "--api-port", str(API_PORT),
            "--data-dir", str(self.data_dir))), cwd=self.root, env=self.server_env)
        wait_until(lambda: self._answers("/health", proc), timeout, what="controller")
        wait_until(self._read_admin_token, 10, what="the controller's admin token file")
        return proc

    def start_combiners_on(self, hosts: dict[str, Host], timeout: float = 60) -> dict[str, Proc]:
        """One combiner per host, started together; each binds every address of its host, and the
        controller and clients dial its public hostname."""
        procs = {name: self._spawn(f"combiner-{name}", host.cmd(*scaleout_cmd(
            "combiner", "start", "--controller", self.api_url, "--host", "0.0.0.0", "--public-hostname",
            host.address, "--port", str(COMBINER_PORT), "--name", name,
            "--data-dir", str(self.root / f"combiner-{name}"))), cwd=self.root,
            env={**self.server_env, "SCALEOUT_COMBINER_TOKEN": self.create_token("combiner", name=name)})
            for name, host in hosts.items()}

        def registered() -> bool:
            for proc in procs.values():
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited early:\n{proc.output()}")
            return all(combiner_status(self, name) == "online" for name in procs)

        wait_until(registered, timeout, what=f"combiners {sorted(procs)} to register")
        return procs

    def start_client_on(self, host: Host, name: str, project: Path, env: dict[str, str]) -> Proc:
        token = self.create_token("client", name=name)
        return self._spawn(f"client-{name}", host.cmd(*scaleout_cmd(
            "client", "start", "--api-url", self.api_url, "-n", name, "--local-package", "--token", token)),
            cwd=project, env=env)


@dataclass
class Cluster:
    dep: HostDeployment
    net: HostNetwork
    s3: S3Server
    combiners: dict[str, Proc]
    combiner_hosts: dict[str, Host]
    clients: dict[str, Proc]
    seed: str
    markers: Path


@pytest.fixture(scope="module")
def multihost_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = netns_available()
    if reason is not None:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")
    try:
        postgres_bindir(), weed_binary()
    except ServiceError as exc:
        pytest.skip(f"multi-host test needs PostgreSQL 15 and SeaweedFS: {exc}")
    remove_stale()
    net = HostNetwork()
    # not under tmp_path: that is private to root, and PostgreSQL runs as `postgres` (its folder is chowned)
    pg_root = Path(tempfile.mkdtemp(prefix="scaleout-multihost-pg-"))
    s3_root = Path(tempfile.mkdtemp(prefix="scaleout-multihost-s3-"))
    pg: PostgresServer | None = None
    relay: TcpRelay | None = None
    s3: S3Server | None = None
    dep: HostDeployment | None = None
    try:
        hosts = {label: net.add_host(label) for label in ("ctl", "cmb1", "cmb2", "cli1", "cli2", "cli3", "cli4")}
        # the services listen on the bridge, which every test host reaches; PostgreSQL trusts loopback
        # peers only, so it listens on 127.0.0.1 behind a relay on the bridge
        pg = start_postgres(pg_root)
        pg.create_database("scaleout")
        relay = TcpRelay(net.gateway, pg.host, pg.port)
        store_url = f"postgresql+psycopg://{PG_USER}@{net.gateway}:{relay.start()}/scaleout"
        s3 = start_seaweedfs(s3_root, host=net.gateway)
        server_env = {
            "SCALEOUT_STORE_URL": store_url,
            "SCALEOUT_REPOSITORY_TYPE": "s3", "SCALEOUT_S3_ENDPOINT": s3.endpoint, "SCALEOUT_S3_BUCKET": BUCKET,
            "SCALEOUT_S3_REGION": "us-east-1", "SCALEOUT_S3_ACCESS_KEY": s3.access_key,
            "SCALEOUT_S3_SECRET_KEY": s3.secret_key,
        }
        dep = HostDeployment(tmp_path_factory.mktemp("multihost"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"},
                             server_env=server_env)
        dep.start_controller_on(hosts["ctl"])
        combiner_hosts = {"cmb-1": hosts["cmb1"], "cmb-2": hosts["cmb2"]}
        combiners = dep.start_combiners_on(combiner_hosts)
        project = dep.project("weighted")
        seed = dep.upload_seed(project)
        markers = dep.root / "markers"
        clients: dict[str, Proc] = {}
        for spec, label in zip(CLIENTS, ("cli1", "cli2", "cli3", "cli4"), strict=True):
            clients[spec.name] = dep.start_client_on(hosts[label], spec.name, project,
                                                     spec.env(markers, FAILOVER_AFTER))
        dep.wait_online(list(clients))
        yield Cluster(dep, net, s3, combiners, combiner_hosts, clients, seed, markers)
    except BaseException:
        if dep is not None:
            print(dep.dump_logs())
        raise
    finally:
        try:
            for host in net.hosts.values():
                host.restore()  # a cut combiner then stops gracefully instead of waiting for its controller
            if dep is not None:
                stop_all(dep.procs)
                dep.close()
        finally:
            for service in (s3, relay, pg):
                if service is not None:
                    service.stop()
            net.remove()
            shutil.rmtree(pg_root, ignore_errors=True)
            shutil.rmtree(s3_root, ignore_errors=True)


def s3_keys(s3: S3Server) -> set[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                          aws_secret_access_key=s3.secret_key, region_name="us-east-1")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def test_multihost_flat_fedavg_and_a_cut_combiner_link_does_not_stop_the_session(
        multihost_cluster: Cluster) -> None:
    cluster = multihost_cluster
    dep = cluster.dep
    placement = clients_by_combiner(dep)
    assert sorted(len(v) for k, v in placement.items() if k in cluster.combiners) == [2, 2], placement
    ips = {c["name"]: c["ip"] for c in dep.get("/api/v1/clients/")["result"]}
    assert ips["site-a"] == cluster.net.hosts["cli1"].address  # clients really come from their own hosts

    # 1. a round over both combiners equals flat FedAvg over the four clients
    first = dep.start_session(rounds=1, round_timeout=60, model_id=cluster.seed, clients_required=4,
                              validate=False)
    assert dep.wait_session(first, 60)["status"] == "Finished"
    (round1,) = rounds_of(dep, first)
    assert sorted(c["name"] for c in round1["combiners"] if c["model_id"]) == ["cmb-1", "cmb-2"]
    after_first = download_params(dep, round1["new_model_id"])
    assert_params(after_first, seed_params(), fedavg_step(CLIENTS))

    # 2. cut cmb-2's link while its clients train
    doomed, survivors = placement["cmb-2"], [s for s in CLIENTS if s.name in placement["cmb-1"]]
    since = time.time()
    second = dep.start_session(rounds=3, round_timeout=45, model_id=round1["new_model_id"], clients_required=4,
                               validate=False)
    wait_for_training(cluster.markers, [cluster.clients[n].popen.pid for n in doomed], since)
    cluster.combiner_hosts["cmb-2"].cut()

    session = dep.wait_session(second, 150)
    assert session["status"] == "Finished", session
    rounds = rounds_of(dep, second)
    assert [r["round_number"] for r in rounds] == [1, 2, 3]
    check_no_model_lost(dep, rounds, round1["new_model_id"])
    keys = s3_keys(cluster.s3)
    for model_id in [round1["new_model_id"], *(r["new_model_id"] for r in rounds)]:
        assert any(key.endswith(model_id) for key in keys), f"model {model_id} is not in the bucket"

    cut_round = {c["name"]: c for c in rounds[0]["combiners"]}
    assert cut_round["cmb-2"]["model_id"] is None and cut_round["cmb-2"]["error"], cut_round
    assert rounds[0]["round_data"]["lost_combiners"] == ["cmb-2"]
    assert_params(download_params(dep, rounds[0]["new_model_id"]), after_first, fedavg_step(survivors))
    for r in rounds[1:]:
        assert [c["name"] for c in r["combiners"]] == ["cmb-1"], r["combiners"]
        assert r["combiners"][0]["updates_received"] == 4
    assert_params(download_params(dep, rounds[-1]["new_model_id"]), after_first,
                  fedavg_step(survivors) + 2 * fedavg_step(CLIENTS))
    assert combiner_status(dep, "cmb-2") == "offline"
    for name in doomed:
        assert "moved from combiner" in cluster.clients[name].output()

    # 3. the link comes back: the combiner reports in again and is online; its late news that the moved
    # clients left it does not take them away from cmb-1
    cluster.combiner_hosts["cmb-2"].restore()
    wait_until(lambda: combiner_status(dep, "cmb-2") == "online", 30, what="cmb-2 online again")
    time.sleep(1.0)  # the rest of cmb-2's queued events
    assert clients_by_combiner(dep) == {"cmb-1": sorted(s.name for s in CLIENTS)}
