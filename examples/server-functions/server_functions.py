"""Server functions of the server-functions example: which devices train each round, and with what.

  scaleout session start --server-functions server_functions.py --rounds 4 --min_clients 4

or, from Python, `APIClient(...).start_session(server_functions=ServerFunctions, ...)`. The server runs
one instance of the class for the whole session, in a process of its own, so attributes kept on `self`
last from one round to the next.

APIClient.start_session sends only the text of the class, not this file: the class may use the names of
`scaleoututil.serverfunctions.allowed_import` (np, api_client, ScaleoutLogger, RoundType, ...), which the
server provides, and its own class attributes, but nothing else defined in this file.
"""

from scaleoututil.serverfunctions.allowed_import import (
    Any,
    RoundType,
    ScaleoutLogger,
    ServerFunctionsBase,
    api_client,
    np,
)


class ServerFunctions(ServerFunctionsBase):
    """Train only on devices that are charging, a rotating half of them each round; the learning rate
    decays from round to round, and each device's hardware tier decides its local epochs and batch size."""

    LEARNING_RATE = 0.05  # the first round's; multiplied by DECAY every round
    DECAY = 0.7
    # each client's own settings, by the `tier` attribute it reports; merged over client_settings()
    TIER_SETTINGS: dict[str, dict[str, Any]] = {
        "fast": {"local_epochs": 4, "batch_size": 16},
        "slow": {"local_epochs": 1, "batch_size": 64},
    }
    DEFAULT_TIER = "slow"  # a device that has not said which it is gets the light settings

    def __init__(self) -> None:
        self.round = 0
        self.attributes: dict[str, dict[str, Any]] = {}  # client id -> its current attributes

    def client_selection(self, client_ids: list[str], round_type: RoundType = RoundType.TRAINING) -> list[str]:
        """Of the connected, idle clients: those charging (or that did not say), then every other one of
        them in id order, starting with the first in odd rounds and the second in even rounds."""
        if round_type != RoundType.TRAINING:
            return client_ids
        self.round += 1
        try:
            self.attributes = api_client.get_current_attributes(client_ids)
        except Exception as exc:  # the controller did not answer: select as if nobody said anything
            ScaleoutLogger().warning(f"round {self.round}: could not read the client attributes: {exc}")
            self.attributes = {}
        charging = sorted(cid for cid in client_ids
                          if str(self.attributes.get(cid, {}).get("charging", "true")).lower() == "true")
        chosen = charging[(self.round - 1) % 2::2] or charging
        ScaleoutLogger().info(f"round {self.round}: {len(charging)} of {len(client_ids)} clients charging, "
                              f"training on {len(chosen)}")
        return chosen

    def client_settings(self, global_model: list[np.ndarray]) -> dict[str, Any]:
        """The settings every selected client gets: the round and its learning rate."""
        return {"round": self.round, "learning_rate": round(self.LEARNING_RATE * self.DECAY ** (self.round - 1), 6)}

    def client_settings_for(self, client_id: str, global_model: list[np.ndarray]) -> dict[str, Any]:
        """This client's own settings, from the tier it reported."""
        tier = str(self.attributes.get(client_id, {}).get("tier", self.DEFAULT_TIER))
        return dict(self.TIER_SETTINGS.get(tier, self.TIER_SETTINGS[self.DEFAULT_TIER]))
