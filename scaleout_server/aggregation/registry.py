"""Strategies by name: what a session's `aggregator` (and `aggregator_kwargs`) may say."""

from __future__ import annotations

from typing import Any

from scaleout_server.aggregation.base import Strategy
from scaleout_server.aggregation.fedavg import FedAvg
from scaleout_server.aggregation.fedprox import FedProx
from scaleout_server.aggregation.robust import FedMedian, FedTrimmedAvg, Krum, MultiKrum
from scaleout_server.aggregation.serveropt import FedAdagrad, FedAdam, FedAvgM, FedYogi

_STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (
    FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad, FedProx, FedMedian, FedTrimmedAvg, Krum, MultiKrum)}


def available_strategies() -> list[str]:
    """Names a session's `aggregator` may take (also listed in error messages)."""
    return sorted(_STRATEGIES)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under `name` (case and surrounding blanks ignored)."""
    cls = _STRATEGIES.get((name or "").strip().lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown aggregator {name!r}; available: {', '.join(available_strategies())}")
    return cls


def make_strategy(name: str, helper: Any, kwargs: dict[str, Any] | None = None) -> Strategy:
    """A new strategy instance; ValueError naming the valid choices for a bad name, keyword or value."""
    kwargs = kwargs or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"aggregator_kwargs must be a JSON object, got {type(kwargs).__name__}")
    return strategy_class(name)(helper, **kwargs)


def check_strategy_config(name: str, kwargs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Validate a session's aggregator and its keywords before any round runs: the registered name and
    the full options (defaults filled in), or ValueError saying what is valid."""
    strategy = make_strategy(name, None, kwargs)
    return strategy.name, dict(strategy.options)

