"""ClientApp: 'training' adds a constant that depends on the node's partition-id, so every update differs."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flowerbench.workload import local_update

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    (params,) = msg.content["arrays"].to_numpy_ndarrays()
    updated = local_update(params, int(context.node_config["partition-id"]))
    content = RecordDict({"arrays": ArrayRecord([updated]), "metrics": MetricRecord({"num-examples": 1})})
    return Message(content=content, reply_to=msg)
