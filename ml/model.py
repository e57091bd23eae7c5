"""The seed's digit network: two 3x3 convolutions, max-pooling, one hidden dense layer.

    conv 1->32 3x3 (padding 1) + ReLU -> 2x2 max-pool     28x28 -> 14x14
    conv 32->64 3x3 (padding 1) + ReLU -> 2x2 max-pool    14x14 -> 7x7
    dense 64*7*7 -> 128 + ReLU -> dense 128 -> 10         (softmax at inference)

Parameters: 320 + 18,496 + 401,536 + 1,290 = 421,642.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

IMAGE_SIZE = 28
NUM_CLASSES = 10


@dataclass(frozen=True)
class DigitNetConfig:
    """What it takes to rebuild the network; stored in every checkpoint beside the weights."""

    conv1_channels: int = 32
    conv2_channels: int = 64
    hidden: int = 128
    conv_dropout: float = 0.25
    dense_dropout: float = 0.5

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class DigitNet(nn.Module):
    def __init__(self, config: DigitNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or DigitNetConfig()
        c = self.config
        self.features = nn.Sequential(
            nn.Conv2d(1, c.conv1_channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c.conv1_channels, c.conv2_channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(c.conv_dropout),
        )
        # Two 2x2 poolings take 28 to 7; named so nobody has to guess a magic flatten size.
        pooled = IMAGE_SIZE // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c.conv2_channels * pooled * pooled, c.hidden),
            nn.ReLU(),
            nn.Dropout(c.dense_dropout),
            nn.Linear(c.hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised N x 1 x 28 x 28 inputs."""
        return self.classifier(self.features(x))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
