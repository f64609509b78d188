"""Aggregation strategies: one interface (`base.Strategy`), slice-wise parameter views (`params`,
`stored`), one module per strategy family, a registry by name, and the per-round driver (`job`)."""

from scaleout_server.aggregation.base import Strategy
from scaleout_server.aggregation.registry import available_strategies, check_strategy_config, make_strategy

__all__ = ["Strategy", "available_strategies", "check_strategy_config", "make_strategy"]
