"""Strategies by name: errors that list what is valid."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from scaleout_server.aggregation import Strategy, available_strategies, make_strategy
from scaleout_server.aggregation.fedavg import FedAvg


def test_registry_lists_fedavg() -> None:
    assert "fedavg" in available_strategies()


def test_make_strategy_by_name_ignores_case() -> None:
    assert isinstance(make_strategy("FedAvg", None, None), FedAvg)
    assert isinstance(make_strategy("fedavg", None, {}), FedAvg)


def test_unknown_aggregator_lists_the_available_ones() -> None:
    with pytest.raises(ValueError) as err:
        make_strategy("x", None, {})
    assert str(err.value) == f"unknown aggregator 'x'; available: {', '.join(available_strategies())}"
    assert "fedavg" in available_strategies() and "krum" in available_strategies()


def test_unknown_keyword_lists_the_valid_keywords() -> None:
    with pytest.raises(ValueError, match="unknown keyword.*lr.*valid keywords: none"):
        make_strategy("fedavg", None, {"lr": 0.1})


def test_kwargs_must_be_an_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        make_strategy("fedavg", None, [1])  # type: ignore[arg-type]


class Momentum(Strategy):
    """A strategy with options and session state, to check the base class plumbing."""

    name = "momentum"
    keywords: ClassVar[dict[str, Any]] = {"beta": 0.9, "lr": 1.0}

    def begin(self, global_params: Any) -> None:
        self.seen = 0

    def accumulate(self, params: Any, num_examples: float, metadata: dict[str, Any]) -> None:
        self.seen += 1

    def result(self) -> Any:
        return None


def test_base_class_fills_defaults_and_checks_keywords() -> None:
    s = Momentum(None, lr=0.5)
    assert s.options == {"beta": 0.9, "lr": 0.5}
    with pytest.raises(ValueError, match="valid keywords: beta, lr"):
        Momentum(None, gamma=1)
