"""Session config validation: defaults, and one clear message per problem."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scaleout_server.errors import InvalidInput, NotFoundError
from scaleoututil.protocol import SessionStatus
from tests.unit.test_controller_fakes import Env, environment, seed_bytes


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with environment(tmp_path, start=False) as e:
        yield e


def test_defaults_fill_every_key_and_start_from_the_latest_model(env: Env) -> None:
    env.seed()
    latest = env.seed()
    session = env.controller.create_session(None, {}, None)
    assert session.status == SessionStatus.CREATED
    assert session.name == f"session-{session.session_id[:8]}"
    assert session.seed_model_id == latest
    assert session.session_config == {
        "aggregator": "fedavg", "aggregator_kwargs": {}, "rounds": 5, "round_timeout": 180.0, "buffer_size": -1,
        "model_id": latest, "delete_models_storage": True, "clients_required": 1, "requested_clients": 8,
        "validate": True, "helper_type": "numpyhelper", "server_functions": None, "mode": "sync",
        "staleness_exponent": 0.5}
    assert env.store.sessions.require(session.session_id).session_config == session.session_config


def test_given_values_are_kept_and_kwargs_json_is_parsed(env: Env) -> None:
    first = env.seed()
    env.seed()
    session = env.controller.create_session("mine", {
        "aggregator": "fedadam", "aggregator_kwargs": '{"server_lr": 0.1}', "rounds": 3, "round_timeout": 2.5,
        "buffer_size": 4,
        "clients_required": 2, "requested_clients": 10, "validate": False, "delete_models_storage": "false",
        "model_id": first, "helper_type": "binaryhelper"}, None)
    config = session.session_config
    assert config["aggregator"] == "fedadam" and config["aggregator_kwargs"] == {"server_lr": 0.1}
    assert (config["rounds"], config["round_timeout"], config["buffer_size"]) == (3, 2.5, 4)
    assert (config["clients_required"], config["requested_clients"]) == (2, 10)
    assert config["validate"] is False and config["delete_models_storage"] is False
    assert config["model_id"] == first and config["helper_type"] == "binaryhelper"


def test_seed_model_id_is_the_starting_model(env: Env) -> None:
    first = env.seed()
    env.seed()
    session = env.controller.create_session("s", {}, first)
    assert session.session_config["model_id"] == first and session.seed_model_id == first


@pytest.mark.parametrize(("config", "message"), [
    ({"aggregator": "x"}, "unknown aggregator 'x'; available: fedadagrad, fedadam, fedavg"),
    ({"aggregator": "fedadam", "aggregator_kwargs": {"lr": 1}}, "valid keywords"),
    ({"rounds": 0}, "rounds must be an integer >= 1, got 0"),
    ({"rounds": "many"}, "rounds must be an integer >= 1"),
    ({"rounds": True}, "rounds must be an integer >= 1"),
    ({"round_timeout": 0}, "round_timeout must be a number of seconds > 0, got 0"),
    ({"round_timeout": "soon"}, "round_timeout must be a number of seconds > 0"),
    ({"buffer_size": 0}, "buffer_size must be an integer >= 1 or -1, got 0"),
    ({"buffer_size": -2}, "buffer_size must be an integer >= 1 or -1"),
    ({"clients_required": 0}, "clients_required must be an integer >= 1"),
    ({"requested_clients": -1}, "requested_clients must be an integer >= 1"),
    ({"validate": "maybe"}, "validate must be true or false"),
    ({"delete_models_storage": 3}, "delete_models_storage must be true or false"),
    ({"aggregator_kwargs": "{not json"}, "aggregator_kwargs must be a JSON object:"),
    ({"aggregator_kwargs": [1, 2]}, "aggregator_kwargs must be a JSON object (a dict), got list"),
    ({"helper_type": "torchhelper"}, "unknown helper 'torchhelper'; available: binaryhelper, numpyhelper"),
    ({"server_functions": "class Other: pass"}, "server_functions must define a class named ServerFunctions"),
    ({"server_functions": "class ServerFunctions(:"}, "server_functions is not valid Python"),
    ({"server_functions": 42}, "server_functions must be the Python source text of a ServerFunctions class"),
    ({"mode": "turbo"}, "mode must be one of sync, async, got 'turbo'"),
    ({"mode": "async", "aggregator": "fedadam"}, "aggregator must be one of fedavg, fedprox"),
    ({"mode": "async", "server_functions": "class ServerFunctions: pass"}, "cannot be used with mode async"),
    ({"staleness_exponent": -1}, "staleness_exponent must be a number >= 0, got -1"),
    ({"round": 3, "speed": 1}, "unknown session_config keys ['round', 'speed']; valid keys: aggregator,"),
])
def test_invalid_config_is_rejected_with_a_clear_message(env: Env, config: dict[str, Any], message: str) -> None:
    env.seed()
    with pytest.raises(InvalidInput) as info:
        env.controller.create_session("s", config, None)
    assert message in str(info.value)
    assert env.store.sessions.count() == 0


def test_no_model_at_all_says_how_to_upload_a_seed(env: Env) -> None:
    with pytest.raises(InvalidInput, match="no model in the repository: upload a seed model first with "
                                           "`scaleout model set-active --file seed.npz`"):
        env.controller.create_session("s", {}, None)


def test_unknown_model_is_not_found(env: Env) -> None:
    env.seed()
    with pytest.raises(NotFoundError, match="model 'nope' not found"):
        env.controller.create_session("s", {"model_id": "nope"}, None)
    with pytest.raises(NotFoundError):
        env.controller.create_session("s", {}, "nope")


def test_conflicting_seed_and_model_id_are_rejected(env: Env) -> None:
    a, b = env.seed(), env.seed()
    with pytest.raises(InvalidInput, match="differ"):
        env.controller.create_session("s", {"model_id": a}, b)


def test_helper_defaults_to_the_active_helper_setting(env: Env) -> None:
    env.controller.add_model(io.BytesIO(seed_bytes()), "numpyhelper")
    env.store.set_setting("active_helper", "binaryhelper")
    assert env.controller.create_session("s", {}, None).session_config["helper_type"] == "binaryhelper"
