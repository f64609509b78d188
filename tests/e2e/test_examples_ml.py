"""The machine-learning examples (examples/sklearn-digits, pytorch-digits, keras-digits) on a real local deployment.

Each builds its seed model with `scaleout run build`, three clients take Dirichlet (non-IID) shares of
the digits through SCALEOUT_PARTITION_ID / SCALEOUT_NUM_PARTITIONS, and a FedAvg session must make the
test-set accuracy clearly better from the first round to the last. Cheap checks of the examples' data
split and of scripts/run_example.py's requirement check run without a server.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from scaleoututil.partitioning import Partition
from tests.e2e.deployment import Deployment, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NUM_CLIENTS = 3
ROUNDS = 4
TRAINING_ROWS = 1437  # 80% of the 1797 digits; the other 360 are the shared test set


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_example(dep: Deployment, name: str) -> Path:
    dest = dep.root / "projects" / name
    if not dest.exists():
        shutil.copytree(EXAMPLES / name, dest, ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    return dest


def run_session(dep: Deployment, example: str) -> tuple[list[float], list[dict[str, Any]]]:
    """Seed, three partitioned clients, ROUNDS rounds; returns the test accuracy after each round and the updates."""
    project = copy_example(dep, example)
    seed_model = dep.upload_seed(project)  # runs `scaleout run build -p client` in the project
    names = [f"{example}-{i}" for i in range(NUM_CLIENTS)]
    procs = [dep.start_client(name, project, env=Partition(i, NUM_CLIENTS).env(), wait=False)
             for i, name in enumerate(names)]
    for proc, name in zip(procs, names, strict=True):
        dep.wait_online([name], proc=proc)
    wait_until(lambda: set(dep.online_clients()) == set(names), 30, 0.2, "only this test's clients online")

    session_id = dep.start_session(name=example, rounds=ROUNDS, round_timeout=60, model_id=seed_model,
                                   clients_required=NUM_CLIENTS, validate=True)
    session = dep.wait_session(session_id, timeout=120)
    assert session["status"] == "Finished", session
    rounds = dep.rounds(session_id)
    assert [r["status"] for r in rounds] == ["Finished"] * ROUNDS, rounds

    def validations() -> list[dict[str, Any]] | None:
        found = dep.get("/api/v1/validations/", params={"session_id": session_id})["result"]
        return found if len(found) == ROUNDS * NUM_CLIENTS else None

    by_model: dict[str, list[dict[str, Any]]] = {}
    for v in wait_until(validations, 30, 0.2, "every client's validation of every round's model"):
        by_model.setdefault(v["model_id"], []).append(v["data"])
    accuracies = []
    for round_ in rounds:
        reports = by_model[round_["new_model_id"]]
        assert len(reports) == NUM_CLIENTS
        # the same model scored on the same test set: every client reports the same test accuracy
        assert max(r["test_accuracy"] for r in reports) == pytest.approx(min(r["test_accuracy"] for r in reports))
        assert all({"training_accuracy", "training_loss", "test_loss"} <= set(r) for r in reports)
        accuracies.append(reports[0]["test_accuracy"])
    print(f"{example}: test accuracy per round {[round(a, 4) for a in accuracies]}")

    def listed(path: str, **params: str) -> list[dict[str, Any]] | None:
        found = dep.get(path, params={"session_id": session_id, **params})["result"]
        return found if len(found) >= ROUNDS * NUM_CLIENTS else None

    # records sent apart from the model (metrics travel on their own stream) may trail the round's end
    updates = wait_until(lambda: listed("/api/v1/updates/"), 20, 0.2, "every model update's record")
    # one log_metric per epoch (1 epoch) per training task
    metrics = wait_until(lambda: listed("/api/v1/metrics/", key="train_accuracy"), 20, 0.2, "the train metrics")
    assert len(metrics) == ROUNDS * NUM_CLIENTS
    return accuracies, updates


def check_updates(updates: list[dict[str, Any]]) -> None:
    """Every round, the three shares together are all training rows, and they are of different sizes."""
    assert len(updates) == ROUNDS * NUM_CLIENTS
    by_round: dict[str, list[int]] = {}
    for u in updates:
        by_round.setdefault(u["round_id"], []).append(u["num_examples"])
    for sizes in by_round.values():
        assert sum(sizes) == TRAINING_ROWS and len(set(sizes)) == NUM_CLIENTS, sizes


@pytest.mark.timeout(180)  # about 20 s on an idle machine
def test_sklearn_digits_federated_logistic_regression_improves_test_accuracy(
        deployment: Deployment, clients_stopped: None) -> None:
    pytest.importorskip("sklearn")
    accuracies, updates = run_session(deployment, "sklearn-digits")
    check_updates(updates)
    assert accuracies[-1] > 0.85, accuracies
    assert accuracies[-1] > accuracies[0] + 0.1, accuracies
    assert all(u["meta"]["training_metadata"]["alpha"] == 0.5 for u in updates)


@pytest.mark.timeout(180)  # about 20 s on an idle machine
def test_pytorch_digits_federated_cnn_improves_test_accuracy(deployment: Deployment, clients_stopped: None) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    accuracies, updates = run_session(deployment, "pytorch-digits")
    check_updates(updates)
    assert accuracies[-1] > 0.8, accuracies
    assert accuracies[-1] > accuracies[0] + 0.2, accuracies


@pytest.mark.timeout(300)  # about 40 s on an idle machine (importing Keras and torch takes most of it)
def test_keras_digits_federated_cnn_on_the_torch_backend_improves_test_accuracy(
        deployment: Deployment, clients_stopped: None) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    if importlib.util.find_spec("keras") is None:  # importing it here would pick its default backend
        pytest.skip("keras is not installed (pip install -e '.[dev]')")
    accuracies, updates = run_session(deployment, "keras-digits")
    check_updates(updates)
    assert accuracies[-1] > 0.8, accuracies
    assert accuracies[-1] > accuracies[0] + 0.2, accuracies
    assert all(u["meta"]["training_metadata"]["batch_size"] == 32 for u in updates)


# -- without a server -----------------------------------------------------------------------------

def test_the_digits_examples_ship_the_same_data_module() -> None:
    """The compute packages are self-contained, so each has a copy; the copies must not drift apart."""
    sklearn_copy = (EXAMPLES / "sklearn-digits" / "client" / "digits_data.py").read_text()
    for example in ("pytorch-digits", "keras-digits"):
        assert sklearn_copy == (EXAMPLES / example / "client" / "digits_data.py").read_text(), example


def test_digits_shares_cover_the_training_rows_once_and_are_non_iid_and_repeatable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    data = load_module("digits_data_under_test", EXAMPLES / "sklearn-digits" / "client" / "digits_data.py")
    monkeypatch.delenv(data.ALPHA_ENV, raising=False)
    assert data.alpha() == 0.5
    rows = data.split(NUM_CLIENTS, 0.5)
    assert np.array_equal(np.sort(np.concatenate(rows)), np.arange(TRAINING_ROWS))
    shares = [data.share(Partition(i, NUM_CLIENTS), 0.5) for i in range(NUM_CLIENTS)]
    assert [len(y) for _, y in shares] == [len(r) for r in rows]
    x_test, y_test = data.test_set()
    assert len(x_test) == 1797 - TRAINING_ROWS and set(y_test) == set(range(10))
    # non-IID: the label mixes differ a lot between shares
    histograms = np.array([np.bincount(y, minlength=10) / len(y) for _, y in shares])
    assert np.abs(histograms[0] - histograms[1]).sum() > 0.5
    # repeatable: the same split every time, a different one for another alpha
    fresh = data.split.__wrapped__(NUM_CLIENTS, 0.5)  # recomputed, not the cached result
    assert all(np.array_equal(a, b) for a, b in zip(rows, fresh, strict=True))
    assert not np.array_equal(data.split(NUM_CLIENTS, 100.0)[0], rows[0])


def test_digits_alpha_comes_from_settings_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_module("digits_data_alpha", EXAMPLES / "sklearn-digits" / "client" / "digits_data.py")
    monkeypatch.setenv(data.ALPHA_ENV, "2.5")
    assert data.alpha() == 2.5
    assert data.alpha({"alpha": 0.1}) == 0.1
    monkeypatch.setenv(data.ALPHA_ENV, "zero")
    with pytest.raises(ValueError, match="DIGITS_ALPHA"):
        data.alpha()
    with pytest.raises(ValueError, match="positive"):
        data.alpha({"alpha": 0})


def test_run_example_names_the_missing_requirements_of_an_example(tmp_path: Path) -> None:
    script = load_module("run_example_under_test", ROOT / "scripts" / "run_example.py")
    client = tmp_path / "client"
    shutil.copytree(EXAMPLES / "importer-client" / "client", client)
    (client / "python_env.yaml").write_text(
        "name: .venv\nbuild_dependencies:\n  - pip\ndependencies:\n  - numpy\n  - numpy>=999\n"
        "  - surely-not-installed-package-4711\n  - scaleout\n  - other-os-only; sys_platform == 'nonexistent'\n")
    missing = script.missing_requirements(client)
    assert missing == [f"numpy>=999 (version {np.__version__} is installed)",
                       "surely-not-installed-package-4711 (not installed)"]
    assert set(script.EXAMPLES) >= {"importer-client", "dispatcher-numpy", "sklearn-digits", "pytorch-digits",
                                    "keras-digits"}

    # the script stops before starting anything, saying what is missing and the command that installs it
    (tmp_path / "examples" / "needs-more").mkdir(parents=True)
    client.rename(tmp_path / "examples" / "needs-more" / "client")
    script.ROOT = tmp_path
    with pytest.raises(SystemExit) as exited:
        script.check_requirements("needs-more")
    message = str(exited.value.code)
    assert "surely-not-installed-package-4711 (not installed)" in message and "numpy>=999" in message
    assert f"cd {tmp_path / 'examples' / 'needs-more'} && {sys.executable} -m scaleout run install -p client" in message


def test_the_examples_requirements_are_met_in_this_environment() -> None:
    """The suite's venv has what the examples need (else run_example.py refuses to start them)."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    script = load_module("run_example_requirements", ROOT / "scripts" / "run_example.py")
    for example in ("sklearn-digits", "pytorch-digits", "keras-digits"):
        assert script.missing_requirements(EXAMPLES / example / "client") == [], example
