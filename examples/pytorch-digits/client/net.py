"""The model: a small CNN for 8x8 digit images, and its conversion to and from a list of numpy arrays.

The arrays are the state_dict's tensors in the state_dict's own (definition) order, which is the same
in every client, so FedAvg adds up matching arrays. No batch norm: its running statistics would need
separate treatment in federated averaging.
"""

import numpy as np
import torch
from torch import nn

PIXEL_MEAN, PIXEL_STD = 0.3, 0.4  # of the digits' pixels scaled to 0..1, so inputs are roughly standardized


class DigitsNet(nn.Module):
    """conv 3x3 (16) -> pool -> conv 3x3 (32) -> pool -> linear (10): 6,090 parameters."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, 64) pixel values in 0..1; returns (batch, 10) logits."""
        x = ((x - PIXEL_MEAN) / PIXEL_STD).reshape(-1, 1, 8, 8)
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)  # 16 x 4 x 4
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # 32 x 2 x 2
        return self.fc(x.flatten(1))


def get_params(net: nn.Module) -> list[np.ndarray]:
    return [tensor.detach().cpu().numpy().copy() for tensor in net.state_dict().values()]


def set_params(net: nn.Module, params: list[np.ndarray]) -> None:
    state = net.state_dict()
    shapes = [tuple(p.shape) for p in params]
    expected = [tuple(t.shape) for t in state.values()]
    if shapes != expected:
        raise ValueError(f"the model's arrays have shapes {shapes}, but DigitsNet needs {expected}; "
                         "was the seed model built by this example's build.py?")
    tensors = [torch.from_numpy(np.asarray(p, dtype=np.float32)) for p in params]
    net.load_state_dict(dict(zip(state, tensors, strict=True)))
