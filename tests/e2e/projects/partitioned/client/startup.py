"""Client i (of its partition) adds i + 1 to every parameter and reports i + 1 examples, so a FedAvg round
moves the model by sum((i+1)^2) / sum(i+1); validate reports the model's mean and the partition."""

from scaleout import EdgeClient, ScaleoutModel
from scaleoututil.helpers.helpers import get_helper

helper = get_helper("numpyhelper")


def startup(client: EdgeClient) -> None:
    partition = client.partition
    assert partition is not None, "scaleout simulate gives every virtual client a partition"
    step = partition.index + 1

    def train(model: ScaleoutModel, settings: dict) -> tuple[ScaleoutModel, dict]:
        params = [p + step for p in model.get_model_params(helper)]
        client.log_metric({"step": step})
        return ScaleoutModel.from_model_params(params, helper=helper), {"training_metadata": {"num_examples": step}}

    def validate(model: ScaleoutModel) -> dict:
        params = model.get_model_params(helper)
        return {"mean": float(params[0].mean()), "partition": partition.index, "partitions": partition.count}

    client.set_train_callback(train)
    client.set_validate_callback(validate)
