"""The aggregation strategy interface: how a combiner turns a round's client updates into one model.

Small on purpose. A round calls `configure` once (settings sent to clients), `begin` with the
global model, `accumulate` once per update as updates stream in (so memory stays at about one
model plus the accumulator), and `result` at the end. Strategies that keep state between rounds
of a session (server momentum, for example) expose it through `state_dict`/`load_state_dict`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar


class Strategy(ABC):
    """Base class of every aggregation strategy.

    Subclasses set `name` (the value of a session's `aggregator`) and `keywords` (every accepted
    `aggregator_kwargs` key with its default). Parameters (`params`) are whatever the session's
    helper loads: for `numpyhelper` a list of numpy arrays.
    """

    name: ClassVar[str]
    keywords: ClassVar[dict[str, Any]] = {}

    def __init__(self, helper: Any, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.keywords))
        if unknown:
            valid = ", ".join(sorted(self.keywords)) or "none"
            raise ValueError(f"aggregator {self.name!r} got unknown keyword(s) {', '.join(unknown)}; "
                             f"valid keywords: {valid}")
        self.helper = helper
        self.options: dict[str, Any] = {**self.keywords, **kwargs}

    def configure(self, client_settings: dict[str, Any]) -> dict[str, Any]:
        """Client settings to send with this round's training tasks (default: unchanged)."""
        return client_settings

    @abstractmethod
    def begin(self, global_params: Any) -> None:
        """Start a round whose clients train from `global_params`; forget the previous round's updates."""

    @abstractmethod
    def accumulate(self, params: Any, num_examples: float, metadata: dict[str, Any]) -> None:
        """Fold one client's update into the round; `num_examples` > 0, `metadata` is the client's meta JSON."""

    @abstractmethod
    def result(self) -> Any | None:
        """The round's aggregated params, or None when nothing was accumulated."""

    def state_dict(self) -> dict[str, Any]:
        """State to carry to the session's next round (JSON-able or numpy values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned at the end of the previous round."""
        return None
