"""ServerApp: FedAvg over all nodes for R rounds, no evaluation; writes per-round timestamps and the
final model to `out-dir` so the benchmark can time the rounds and check the result."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from flowerbench.workload import seed_model

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.time()
    config = context.run_config
    rounds, nodes = int(config["num-server-rounds"]), int(config["num-nodes"])
    out = Path(str(config["out-dir"]))
    stamps: list[float] = []

    def stamp(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Called by the strategy before round 1 and after every round: our round clock."""
        stamps.append(time.time())
        return None

    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=nodes, min_available_nodes=nodes)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord([seed_model(int(config["num-params"]))]),
                            num_rounds=rounds, evaluate_fn=stamp)
    (final,) = result.arrays.to_numpy_ndarrays()
    np.save(out / "final.npy", final)
    report = out / "server.json.part"  # renamed when complete: the benchmark waits for server.json
    report.write_text(json.dumps({"main_started": started, "round_clock": stamps, "main_finished": time.time()}))
    report.rename(out / "server.json")
