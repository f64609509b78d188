"""Strategies by name: what a session's `aggregator` (and `aggregator_kwargs`) may say."""

from __future__ import annotations

from typing import Any

from scaleout_server.aggregation.base import Strategy
from scaleout_server.aggregation.fedavg import FedAvg

_STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (FedAvg,)}


def available_strategies() -> list[str]:
    """Names a session's `aggregator` may take (also listed in error messages)."""
    return sorted(_STRATEGIES)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under `name` (case and surrounding blanks ignored)."""
    cls = _STRATEGIES.get((name or "").strip().lower())
    if cls is None:
        raise ValueError(f"unknown aggregator {name!r}; available: {', '.join(available_strategies())}")
    return cls


def make_strategy(name: str, helper: Any, kwargs: dict[str, Any] | None = None) -> Strategy:
    """A new strategy instance; ValueError naming the valid choices for a bad name or keyword."""
    kwargs = kwargs or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"aggregator_kwargs must be a JSON object, got {type(kwargs).__name__}")
    return strategy_class(name)(helper, **kwargs)
