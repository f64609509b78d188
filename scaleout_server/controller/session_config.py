"""A session's configuration: validated once, when the session is created, then trusted.

The REST layer hands us the user's dict; everything a round needs is checked here so that a
session never starts with a value the runner or the combiners would choke on later. The stored
form is a plain JSON-able dict (`SessionConfig.to_dict()`), read back with `from_stored`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scaleout_server.aggregation.registry import available_strategies, check_strategy_config
from scaleout_server.controller.server_functions import check_source
from scaleout_server.errors import InvalidInput
from scaleout_server.store.base import Store
from scaleoututil.helpers.helpers import available_helpers
from scaleoututil.model import DEFAULT_HELPER

ACTIVE_HELPER_SETTING = "active_helper"  # store setting: the helper of the latest seed model, or as set by the user
SESSION_MODES = ("sync", "async")
ASYNC_AGGREGATORS = ("fedavg", "fedprox")


@dataclass
class SessionConfig:
    aggregator: str = "fedavg"
    aggregator_kwargs: dict[str, Any] = field(default_factory=dict)
    rounds: int = 5
    round_timeout: float = 180.0
    buffer_size: int = -1
    model_id: str | None = None
    delete_models_storage: bool = True
    clients_required: int = 1
    requested_clients: int = 8
    validate: bool = True
    helper_type: str = DEFAULT_HELPER
    server_functions: str | None = None  # source text of a ServerFunctions class (server_functions.py)
    mode: str = "sync"  # "async": buffered asynchronous rounds (async_sessions.py)
    staleness_exponent: float = 0.5  # async: an update's weight is num_examples / (1 + staleness) ** this

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SessionConfig:
        """Rebuild from a stored (already validated) dict; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


VALID_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SessionConfig))


def available_aggregators() -> list[str]:
    return available_strategies()


def active_helper(store: Store) -> str:
    """The helper new sessions and seed models default to: the stored choice, else numpyhelper
    (what the official CLI assumes when none is set)."""
    return store.get_setting(ACTIVE_HELPER_SETTING) or DEFAULT_HELPER


def check_helper(name: Any) -> str:
    """The helper name if a helper plugin of that name ships with scaleoututil, else InvalidInput."""
    known = available_helpers()
    if not isinstance(name, str) or name not in known:
        raise InvalidInput(f"unknown helper {name!r}; available: {', '.join(known)}")
    return name


def parse_int(key: str, value: Any, minimum: int, allow: tuple[int, ...] = ()) -> int:
    """An int (or an integral float / numeric string) >= minimum, or one of `allow`."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    extra = f" or {' / '.join(str(a) for a in allow)}" if allow else ""
    if number is None or (number < minimum and number not in allow):
        raise InvalidInput(f"{key} must be an integer >= {minimum}{extra}, got {value!r}")
    return number


def parse_positive_float(key: str, value: Any) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not number > 0 or number != number or number == float("inf"):
        raise InvalidInput(f"{key} must be a number of seconds > 0, got {value!r}")
    return number


def parse_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidInput(f"{key} must be true or false, got {value!r}")


def parse_kwargs(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"aggregator_kwargs must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"aggregator_kwargs must be a JSON object (a dict), got {type(value).__name__}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"aggregator_kwargs must be JSON-serialisable: {exc}") from None
    return value


def check_mode(config: SessionConfig, raw: dict[str, Any]) -> None:
    """`mode` and the asynchronous mode's own keys (and what it cannot be combined with)."""
    mode = raw.get("mode")
    if mode not in (None, ""):
        if not isinstance(mode, str) or mode.strip().lower() not in SESSION_MODES:
            raise InvalidInput(f"mode must be one of {', '.join(SESSION_MODES)}, got {mode!r}")
        config.mode = mode.strip().lower()
    if raw.get("staleness_exponent") is not None:
        value = raw["staleness_exponent"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise InvalidInput(f"staleness_exponent must be a number >= 0, got {value!r}")
        config.staleness_exponent = float(value)
    if config.mode != "async":
        return
    if config.aggregator not in ASYNC_AGGREGATORS:
        raise InvalidInput(f"mode async aggregates with staleness-weighted FedBuff steps; aggregator must be one of "
                           f"{', '.join(ASYNC_AGGREGATORS)} (fedprox sends its mu to the clients), "
                           f"got {config.aggregator!r}")
    if config.server_functions:
        raise InvalidInput("server_functions cannot be used with mode async; start a synchronous session instead")


def validate_session_config(raw: dict[str, Any] | None, *, default_helper: str | None,
                            resolve_model: Callable[[str | None], str]) -> SessionConfig:
    """Check every key of a user-supplied session config and fill in the defaults.

    `resolve_model(model_id_or_None)` returns the model id to start from (the latest one for None)
    and raises InvalidInput / NotFoundError when there is none or it is unknown.
    """
    if raw is not None and not isinstance(raw, dict):
        raise InvalidInput(f"session_config must be an object, got {type(raw).__name__}")
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(VALID_KEYS))
    if unknown:
        raise InvalidInput(f"unknown session_config keys {unknown}; valid keys: {', '.join(VALID_KEYS)}")
    config = SessionConfig()

    aggregator = raw.get("aggregator")
    if aggregator is not None:
        known = available_aggregators()
        if aggregator not in known:
            raise InvalidInput(f"unknown aggregator {aggregator!r}; available: {', '.join(known)}")
        config.aggregator = aggregator
    config.aggregator_kwargs = parse_kwargs(raw.get("aggregator_kwargs"))
    try:  # keywords and their values are checked now, not when the first round fails
        check_strategy_config(config.aggregator, config.aggregator_kwargs)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if raw.get("rounds") is not None:
        config.rounds = parse_int("rounds", raw["rounds"], 1)
    if raw.get("round_timeout") is not None:
        config.round_timeout = parse_positive_float("round_timeout", raw["round_timeout"])
    if raw.get("buffer_size") is not None:
        config.buffer_size = parse_int("buffer_size", raw["buffer_size"], 1, allow=(-1,))
    if raw.get("delete_models_storage") is not None:
        config.delete_models_storage = parse_bool("delete_models_storage", raw["delete_models_storage"])
    if raw.get("clients_required") is not None:
        config.clients_required = parse_int("clients_required", raw["clients_required"], 1)
    if raw.get("requested_clients") is not None:
        config.requested_clients = parse_int("requested_clients", raw["requested_clients"], 1)
    if raw.get("validate") is not None:
        config.validate = parse_bool("validate", raw["validate"])
    helper = raw.get("helper_type") or default_helper or DEFAULT_HELPER
    config.helper_type = check_helper(helper)
    if raw.get("server_functions") not in (None, ""):
        try:
            config.server_functions = check_source(raw["server_functions"])
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    check_mode(config, raw)
    model_id = raw.get("model_id")
    if model_id is not None and not isinstance(model_id, str):
        raise InvalidInput(f"model_id must be a string, got {model_id!r}")
    config.model_id = resolve_model(model_id or None)
    return config
