"""The model: a small Keras 3 CNN for 8x8 digit images, on the PyTorch backend unless KERAS_BACKEND says
otherwise (the layers use no backend-specific code, so TensorFlow or JAX run it too).

The parameters on the wire are `model.get_weights()`: numpy arrays in the layers' order, the same in every
client, so FedAvg adds up matching arrays. No batch norm: its moving statistics would need separate
treatment in federated averaging.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere in this process

from collections.abc import Callable  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

if keras.backend.backend() == "torch":
    import torch

    torch.set_num_threads(1)  # a tiny model gains nothing from many threads, and clients often share a machine

PIXEL_MEAN, PIXEL_STD = 0.3, 0.4  # of the digits' pixels scaled to 0..1, so inputs are roughly standardized
NUM_FEATURES = 64


def digits_net(learning_rate: float = 0.1, momentum: float = 0.9) -> keras.Model:
    """conv 3x3 (16) -> pool -> conv 3x3 (32) -> pool -> dense (10): 6,090 parameters, compiled for
    SGD with momentum on the cross-entropy of the logits."""
    model = keras.Sequential([
        keras.Input(shape=(NUM_FEATURES,)),
        keras.layers.Rescaling(1.0 / PIXEL_STD, offset=-PIXEL_MEAN / PIXEL_STD),
        keras.layers.Reshape((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),  # 4 x 4 x 16
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),  # 2 x 2 x 32
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ], name="digits_net")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def get_params(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w, dtype=np.float32) for w in model.get_weights()]


def set_params(model: keras.Model, params: list[np.ndarray]) -> None:
    shapes = [tuple(p.shape) for p in params]
    expected = [tuple(w.shape) for w in model.weights]
    if shapes != expected:
        raise ValueError(f"the model's arrays have shapes {shapes}, but digits_net needs {expected}; "
                         "was the seed model built by this example's build.py?")
    model.set_weights([np.asarray(p, dtype=np.float32) for p in params])


def set_seed(seed: int) -> None:
    """Seed Python's, numpy's and the backend's generators: weight initialization and batch order."""
    keras.utils.set_random_seed(seed)


def backend() -> str:
    return keras.backend.backend()


class _AfterEachBatch(keras.callbacks.Callback):
    def __init__(self, hook: Callable[[], None]) -> None:
        super().__init__()
        self.hook = hook

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.hook()


def fit(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int,
        after_each_batch: Callable[[], None]) -> list[dict[str, float]]:
    """Mini-batch training, shuffled each epoch; `after_each_batch` may raise to stop it (a stopped
    session). Returns each epoch's mean loss and accuracy."""
    history = model.fit(x.astype(np.float32), y.astype(np.int64), epochs=epochs, batch_size=batch_size,
                        shuffle=True, verbose=0, callbacks=[_AfterEachBatch(after_each_batch)])
    return [{"loss": float(loss), "accuracy": float(accuracy)}
            for loss, accuracy in zip(history.history["loss"], history.history["accuracy"], strict=True)]


def scores(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, cross-entropy loss) of the model on (x, y)."""
    result = model.evaluate(x.astype(np.float32), y.astype(np.int64), batch_size=len(y), verbose=0,
                            return_dict=True)
    return float(result["accuracy"]), float(result["loss"])
