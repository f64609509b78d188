"""The aggregation strategy interface: how a combiner turns a round's client updates into one model.

Small on purpose. A round calls `configure` once (settings sent to clients), `begin` with the
global model, `accumulate` once per update as updates arrive, and `result` at the end. Parameters
are `params.ParamsView`s (a list of arrays is accepted too): the combiner hands over its stored
files, and strategies read them a slice at a time, so memory stays bounded whatever the model
size and the number of updates.

Streaming strategies (`streaming = True`, the default) fold each update in `accumulate` and never
look at it again, so the combiner deletes it right away. Strategies that need every update at once
(median, trimmed mean, Krum) set `streaming = False`: `accumulate` only records the update, which
the combiner keeps readable until `result` has been read; `result` then walks the stored updates
slice by slice. Strategies that keep state between rounds of a session (server momentum, Adam
moments) expose it through `state_dict`/`load_state_dict`; the combiner persists it to disk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from scaleout_server.aggregation.params import ParamsView


class Strategy(ABC):
    """Base class of every aggregation strategy.

    Subclasses set `name` (the value of a session's `aggregator`), `keywords` (every accepted
    `aggregator_kwargs` key with its default) and may override `check_options` to validate values.
    A strategy that reads the global model in `begin` sets `uses_global_model`: the others get None,
    so a round does not copy the global model for nothing.
    """

    name: ClassVar[str]
    keywords: ClassVar[dict[str, Any]] = {}
    streaming: ClassVar[bool] = True
    uses_global_model: ClassVar[bool] = False

    def __init__(self, helper: Any, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.keywords))
        if unknown:
            valid = ", ".join(sorted(self.keywords)) or "none"
            raise ValueError(f"aggregator {self.name!r} got unknown keyword(s) {', '.join(unknown)}; "
                             f"valid keywords: {valid}")
        self.helper = helper
        self.options: dict[str, Any] = {**self.keywords, **kwargs}
        self.check_options()

    def check_options(self) -> None:
        """Raise ValueError naming the keyword and its valid range when an option value is unusable."""
        return None

    def configure(self, client_settings: dict[str, Any]) -> dict[str, Any]:
        """Client settings to send with this round's training tasks (default: unchanged)."""
        return client_settings

    @abstractmethod
    def begin(self, global_params: Any) -> None:
        """Start a round whose clients train from `global_params` (None unless `uses_global_model`);
        forget the previous round's updates."""

    @abstractmethod
    def accumulate(self, params: Any, num_examples: float, metadata: dict[str, Any]) -> None:
        """Take one client's update; `num_examples` > 0, `metadata` is the client's meta JSON.
        A non-streaming strategy keeps `params` (a view the caller keeps open) until `result`."""

    @abstractmethod
    def result(self) -> ParamsView | None:
        """The round's aggregated params (read them before closing the updates), or None when nothing
        was accumulated."""

    def state_dict(self) -> dict[str, Any]:
        """State to carry to the session's next round: JSON-able values and lists of numpy arrays (or
        `ParamsView`s, sequences of arrays too, which the combiner saves slice by slice)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned at the end of the previous round (arrays the combiner
        saved come back as `ParamsView`s reading its file in place)."""
        return None
