"""The base class of user-supplied server functions (`class ServerFunctions(ServerFunctionsBase)`).

Users subclass it in a file they hand to `scaleout session start --server-functions FILE` (or to
`APIClient.start_session(server_functions=ServerFunctions)`). Every method is optional: the server
calls only the ones the subclass overrides and keeps its own default for the others. One instance
lives for the whole session, so attributes set in one call are there in the next round's calls.
"""

from __future__ import annotations

from abc import ABC
from enum import StrEnum
from typing import Any

import numpy as np

FUNCTION_NAMES = ("client_selection", "client_settings", "client_settings_for", "aggregate",
                  "incremental_aggregate", "get_incremental_aggregate_model")


class RoundType(StrEnum):
    """What the clients chosen by `client_selection` will be asked to do."""

    TRAINING = "training"
    VALIDATION = "validation"
    PREDICTION = "prediction"


class ServerFunctionsBase(ABC):  # noqa: B024 - every method is optional on purpose
    """Override any of these; the server uses its default behaviour for the rest. A subclass may define
    `__init__` (no arguments) to set up state kept across the calls of one session."""

    def client_selection(self, client_ids: list[str], round_type: RoundType = RoundType.TRAINING) -> list[str]:
        """Choose the clients of a round among the connected, idle `client_ids`; return a subset.
        (A one-argument override `client_selection(self, client_ids)` is accepted too.)"""
        return list(client_ids)

    def client_settings(self, global_model: list[np.ndarray]) -> dict[str, Any]:
        """Settings (JSON values) delivered to every selected client with the round's training task,
        merged into its `client_settings`; `global_model` is the model the round trains from."""
        return {}

    def client_settings_for(self, client_id: str, global_model: list[np.ndarray]) -> dict[str, Any]:
        """Settings (JSON values) for one selected client only, merged over `client_settings`'s for that
        client's training task: e.g. a learning rate or a number of local epochs per client or per group.
        Called each training round once per selected client, after `client_selection` and `client_settings`
        (an addition of this server: the official server has no per-client settings)."""
        return {}

    def aggregate(self, previous_global: list[np.ndarray],
                  client_updates: dict[str, tuple[list[np.ndarray], dict[str, Any]]]) -> list[np.ndarray]:
        """The new global model from the previous one and `{client_id: (params, training_metadata)}`.
        The arrays are read-only and memory-mapped: copy one before changing it in place."""
        raise NotImplementedError

    def incremental_aggregate(self, client_id: str, model: list[np.ndarray], client_metadata: dict[str, Any],
                              previous_global: list[np.ndarray]) -> None:
        """Fold one client's update (an alternative to `aggregate` that sees one update at a time)."""
        raise NotImplementedError

    def get_incremental_aggregate_model(self) -> list[np.ndarray]:
        """The model built by `incremental_aggregate` calls (called once per round, after the last update)."""
        raise NotImplementedError


def provided_functions(cls: type) -> list[str]:
    """The server functions `cls` implements itself: callables that are not the base class's defaults
    (a class that does not subclass ServerFunctionsBase counts every method it has)."""
    provided = []
    for name in FUNCTION_NAMES:
        method = getattr(cls, name, None)
        if callable(method) and method is not getattr(ServerFunctionsBase, name):
            provided.append(name)
    return provided
