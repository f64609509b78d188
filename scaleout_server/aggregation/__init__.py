"""Aggregation strategies: one interface (`base.Strategy`), one module per strategy, a registry by name."""

from scaleout_server.aggregation.base import Strategy
from scaleout_server.aggregation.registry import available_strategies, make_strategy

__all__ = ["Strategy", "available_strategies", "make_strategy"]
