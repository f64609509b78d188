"""Chaos: a seeded schedule of faults (SIGKILLs of the controller, the combiner and clients, each process
started again) during a 5-round session on one machine.

A scenario turns a seed into a schedule (`SCENARIOS`); a few fixed (scenario, seed) pairs run in CI so a
landing never depends on luck, and `scripts/chaos.sh` runs many rotating seeds (the scenario follows from
the seed) through `test_chaos_replay`. Whatever the schedule, the session must finish with rounds 1..5
each Finished exactly once, every committed model must equal FedAvg recomputed here from the stored
updates its round lists (each update carries the constant its client adds and its num_examples), and
every killed client must come back online on its own.

Replay one seed:  E2E_CHAOS_SEED=<seed> .venv/bin/pytest tests/e2e/test_chaos.py -k replay -s
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.cluster import check_fedavg_rounds
from tests.e2e.deployment import Deployment, Proc, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROUNDS = 5
ROUND_TIMEOUT = 15
CLIENTS = {"c1": (1.0, 1), "c2": (2.0, 2), "c3": (4.0, 3)}  # name -> (constant, num_examples)
CLIENT_ENV = {"E2E_STEP_SECONDS": "0.4", "E2E_TRAIN_STEPS": "3"}  # ~1.2 s of training per round
RECOVERY_LINE = "interrupted by a controller restart"  # recovery.py logs it while settling the old round


@dataclass(frozen=True, order=True)
class Fault:
    """`kind` hits `victim` `delay` seconds after round `round_number` started; `pause` is the kind's second
    seeded delay (flap: between the restart and the second kill; controller-down: how long it stays down)."""
    round_number: int
    kind: str
    victim: str
    delay: float
    pause: float = 0.0


def _rounds(rng: random.Random, k: int) -> list[int]:
    return sorted(rng.sample(range(2, ROUNDS + 1), k))


def mixed(rng: random.Random) -> list[Fault]:
    """One controller, one combiner and one client kill, each in a different round."""
    victims = ["controller", "combiner", rng.choice(sorted(CLIENTS))]
    rounds = rng.sample(range(2, ROUNDS + 1), 3)
    return sorted(Fault(n, "kill", v, rng.uniform(0.2, 1.0)) for n, v in zip(rounds, victims, strict=True))


def flapping_combiner(rng: random.Random) -> list[Fault]:
    """The combiner killed twice in one round (restarted in between, killed again once its clients are
    back and the round runs again), and a client killed in another round."""
    first, second = _rounds(rng, 2)
    return [Fault(first, "flap", "combiner", rng.uniform(0.2, 1.2), rng.uniform(0.5, 2.0)),
            Fault(second, "kill", rng.choice(sorted(CLIENTS)), rng.uniform(0.2, 1.0))]


def recovering_controller(rng: random.Random) -> list[Fault]:
    """The controller killed, and killed again while the restarted one resumes the session; later the
    combiner is killed too."""
    first, second = _rounds(rng, 2)
    return [Fault(first, "kill-in-recovery", "controller", rng.uniform(0.2, 1.0), rng.uniform(0.0, 0.6)),
            Fault(second, "kill", "combiner", rng.uniform(0.2, 1.0))]


def client_while_controller_down(rng: random.Random) -> list[Fault]:
    """The controller and a client killed together; the client is started again while the controller is
    still down (as after a host reboot) and must wait for it instead of giving up."""
    (first,) = _rounds(rng, 1)
    return [Fault(first, "controller-down", rng.choice(sorted(CLIENTS)), rng.uniform(0.2, 1.0),
                  rng.uniform(2.0, 5.0))]


SCENARIOS: dict[str, Callable[[random.Random], list[Fault]]] = {
    "mixed": mixed, "flapping_combiner": flapping_combiner, "recovering_controller": recovering_controller,
}
# Built, not yet in the rotation: our client gives up when started while the controller is down
# (issue 15, item 1). Add it to SCENARIOS and CI_SEEDS once clients retry the token exchange.
PENDING_SCENARIOS: dict[str, Callable[[random.Random], list[Fault]]] = {
    "client_while_controller_down": client_while_controller_down,
}


def scenario_for(seed: int) -> str:
    """The scenario a rotating seed runs: the seeds of a chaos.sh run cover every scenario in turn."""
    names = sorted(SCENARIOS)
    return names[seed % len(names)]


@dataclass
class ChaosResult:
    """One session's line in the chaos table (scripts/chaos.sh adds them up)."""
    scenario: str
    seed: int
    faults: int = 0
    sessions: int = 1
    finished: int = 0
    models_checked: int = 0
    anomalies: list[str] = field(default_factory=list)
    seconds: float = 0.0


def try_get(dep: Deployment, path: str, **kw: Any) -> Any:
    try:
        return dep.get(path, **kw)
    except (requests.RequestException, ValueError):
        return None  # the controller may be down right now


def running_round(dep: Deployment, session_id: str) -> int | None:
    found = try_get(dep, "/api/v1/rounds/", params={"session_id": session_id},
                    headers={"X-Sort-Key": "round_number", "X-Sort-Order": "desc", "X-Limit": "1"})
    if not found or not found["result"]:
        return None
    latest = found["result"][0]
    return int(latest["round_number"]) if latest["status"] == "Running" else None


class Chaos:
    """The processes of one chaos session and the faults that hit them."""

    def __init__(self, dep: Deployment, result: ChaosResult) -> None:
        self.dep = dep
        self.result = result
        self.project = dep.project("weighted")
        self.procs: dict[str, Proc] = {}

    def start(self, name: str, wait: bool = True) -> Proc:
        if name == "controller":
            proc = self.dep.start_controller() if wait else self.dep.spawn_controller()
        elif name == "combiner":
            proc = self.dep.start_combiner("edge-1")
        else:
            constant, examples = CLIENTS[name]
            proc = self.dep.start_client(name, self.project, wait=wait, env={
                **CLIENT_ENV, "E2E_CONSTANT": str(constant), "E2E_NUM_EXAMPLES": str(examples)})
        self.procs[name] = proc
        return proc

    def kill(self, name: str, why: str) -> None:
        self.procs[name].stop(signal.SIGKILL)
        self.result.faults += 1
        print(f"[chaos] killed {name} ({why})", flush=True)

    def inject(self, fault: Fault) -> None:
        where = f"{fault.delay:.2f}s into round {fault.round_number}"
        if fault.kind == "kill":
            self.kill(fault.victim, where)
            if fault.victim not in ("controller", "combiner"):
                time.sleep(0.5)
            self.start(fault.victim, wait=fault.victim in ("controller", "combiner"))
        elif fault.kind == "flap":
            self.kill(fault.victim, where)
            self.start(fault.victim)
            time.sleep(fault.pause)
            self.kill(fault.victim, f"again, {fault.pause:.2f}s after its restart registered")
            self.start(fault.victim)
        elif fault.kind == "kill-in-recovery":
            self.kill("controller", where)
            proc = self.start("controller", wait=False)
            wait_until(lambda: RECOVERY_LINE in proc.output() or proc.popen.poll() is not None, 60, 0.02,
                       "the restarted controller to start its recovery")
            time.sleep(fault.pause)
            self.kill("controller", f"{fault.pause:.2f}s into its recovery")
            self.start("controller")
        elif fault.kind == "controller-down":
            self.kill("controller", where)
            self.kill(fault.victim, where)
            self.start(fault.victim, wait=False)
            print(f"[chaos] restarted {fault.victim} while the controller is down", flush=True)
            time.sleep(fault.pause)
            self.start("controller")
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")


def run_chaos(tmp_path: Path, scenario: str, seed: int) -> ChaosResult:
    """One 5-round session under the seed's schedule; the result lists what went wrong instead of raising."""
    plan = {**SCENARIOS, **PENDING_SCENARIOS}[scenario](random.Random(seed))
    print(f"[chaos] scenario {scenario} seed {seed}: {plan}", flush=True)
    result = ChaosResult(scenario, seed)
    dep = Deployment(tmp_path, env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    started = time.monotonic()
    with dep.guarded():
        chaos = Chaos(dep, result)
        chaos.start("controller")
        chaos.start("combiner")
        seed_id = dep.upload_seed(chaos.project)
        for name in CLIENTS:
            chaos.start(name)
        session_id = dep.start_session(rounds=ROUNDS, round_timeout=ROUND_TIMEOUT, model_id=seed_id,
                                       validate=False, clients_required=2)
        try:
            for fault in plan:
                wait_until(lambda n=fault.round_number: running_round(dep, session_id) == n, 90, 0.05,
                           f"round {fault.round_number} to run")
                time.sleep(fault.delay)
                chaos.inject(fault)
            session = wait_until(lambda: (s := try_get(dep, f"/api/v1/sessions/{session_id}"))
                                 and s["status"] in ("Finished", "Stopped", "Failed") and s, 150, 0.2, "session end")
        except TimeoutError as exc:
            result.anomalies.append(str(exc))
            session = try_get(dep, f"/api/v1/sessions/{session_id}") or {"status": "unknown"}
        if session["status"] == "Finished":
            result.finished = 1
        else:
            last = [x for x in dep.rounds(session_id) if x["status"] != "Finished"][-1:]
            result.anomalies.append(f"session ended {session['status']}: {last}")
        result.models_checked, anomalies = check_fedavg_rounds(dep, session_id, seed_id, ROUNDS)
        result.anomalies += anomalies if result.finished else []
        try:
            dep.wait_online(sorted(CLIENTS), timeout=30)  # killed clients came back on their own
        except TimeoutError:
            result.anomalies.append(f"clients not back online: {sorted(set(CLIENTS) - set(dep.online_clients()))}")
        result.seconds = round(time.monotonic() - started, 1)
        record(result)
        if result.anomalies:
            print(dep.dump_logs())
    print(f"[chaos] {scenario} seed {seed}: {result}", flush=True)
    return result


def record(result: ChaosResult) -> None:
    """Append the result as one JSON line to $E2E_CHAOS_RESULTS (scripts/chaos.sh reads them)."""
    path = os.environ.get("E2E_CHAOS_RESULTS")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(asdict(result)) + "\n")


# Fixed seeds for CI, one per scenario: a landing never depends on luck, and the cost stays about 2 min.
CI_SEEDS = [
    pytest.param("mixed", 20240611, id="mixed-20240611"),
    pytest.param("flapping_combiner", 7, id="flapping_combiner-7"),
    pytest.param("recovering_controller", 11, id="recovering_controller-11"),
]


@pytest.mark.parametrize(("scenario", "seed"), CI_SEEDS)
def test_session_survives_a_seeded_fault_schedule(tmp_path: Path, scenario: str, seed: int) -> None:
    result = run_chaos(tmp_path, scenario, seed)
    assert not result.anomalies, "\n".join(result.anomalies)
    assert result.finished == 1 and result.models_checked == ROUNDS and result.faults >= 2


def test_chaos_replay(tmp_path: Path) -> None:
    """One seed from $E2E_CHAOS_SEED (scenario from $E2E_CHAOS_SCENARIO, else from the seed): how
    scripts/chaos.sh runs its rotating seeds and how a failure it prints is replayed."""
    if "E2E_CHAOS_SEED" not in os.environ:
        pytest.skip("set E2E_CHAOS_SEED (scripts/chaos.sh does) to run one rotating seed")
    seed = int(os.environ["E2E_CHAOS_SEED"])
    result = run_chaos(tmp_path, os.environ.get("E2E_CHAOS_SCENARIO") or scenario_for(seed), seed)
    assert not result.anomalies, "\n".join(result.anomalies)


def test_every_scenario_injects_faults_during_rounds_of_the_session() -> None:
    """The schedules themselves: deterministic per seed, inside the session's rounds, and each scenario
    reached by the rotation."""
    for name, make in {**SCENARIOS, **PENDING_SCENARIOS}.items():
        for seed in range(30):
            plan = make(random.Random(seed))
            assert plan == make(random.Random(seed)) and plan, name
            assert all(2 <= f.round_number <= ROUNDS and f.delay > 0 for f in plan), (name, plan)
    assert {scenario_for(seed) for seed in range(len(SCENARIOS))} == set(SCENARIOS)
