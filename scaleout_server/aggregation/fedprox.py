"""FedProx: FedAvg on the server; the proximal term lives in the clients' training loss.

The server's only part is to tell every client the proximal weight `mu`: it is added to the
training task's `client_settings` (`settings["mu"]` in the train callback), where the client adds
`mu / 2 * ||w - w_global||^2` to its loss. Aggregation is the example-weighted mean.
"""

from __future__ import annotations

from typing import Any, ClassVar

from scaleout_server.aggregation.fedavg import FedAvg
from scaleout_server.aggregation.options import number

MU_SETTING = "mu"


class FedProx(FedAvg):
    name = "fedprox"
    keywords: ClassVar[dict[str, Any]] = {"mu": 0.01}

    def check_options(self) -> None:
        self.options["mu"] = number(self.options, "mu", low=0.0)

    def configure(self, client_settings: dict[str, Any]) -> dict[str, Any]:
        return {**client_settings, MU_SETTING: self.options["mu"]}
