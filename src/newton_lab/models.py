"""Networks of the experiment protocols (docs/PAPER.md §2), in plain torch.

- :class:`RankingCNN`: the diffsort CNN, one score per multi-digit image.
- :class:`RankingMLP`: the quick protocol's network, 2 hidden layers.
- :class:`ResNetStemCosts`: ResNet18 stem + layer1 → AdaptiveMaxPool2d(H×W) → mean over
  channels, the Warcraft shortest-path network (blackbox-backprop / PyEPO), without torchvision.
- :class:`SmallCostCNN`: a CPU-sized cost network for the quick shortest-path protocol.
- :class:`LinearCosts`, :class:`MLPCosts`: the predict-then-optimize task's models (``pto``:
  PyEPO's linear model, and a one-hidden-layer MLP), features (B, p) → costs (B, d).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RankingCNN", "RankingMLP", "ResNetStemCosts", "SmallCostCNN", "LinearCosts", "MLPCosts",
           "build_model"]


class RankingCNN(nn.Module):
    """Conv(1→32, 5, pad 2)–ReLU–MaxPool2 → Conv(32→64, 5, pad 2)–ReLU–MaxPool2 →
    FC(64·(h/4)·(w/4) → 64)–ReLU → FC(64 → 1). Images (B, 1, h, w) → scores (B,)
    (64·7·28 inputs to the first FC layer at the paper's 28×112)."""

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Linear(64 * (h // 4) * (w // 4), 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(-1)


class RankingMLP(nn.Module):
    """Flatten → Linear(h·w → hidden)–ReLU → Linear(hidden → hidden)–ReLU → Linear(hidden → 1).
    Images (B, 1, h, w) → scores (B,)."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: int = 256) -> None:
        super().__init__()
        c, h, w = image_shape
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


class _BasicBlock(nn.Module):
    """ResNet basic block with identity shortcut (stride 1, as in ResNet18's layer1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


class ResNetStemCosts(nn.Module):
    """ResNet18 conv1 (7×7/2), bn1, relu, maxpool (3/2), layer1 (2 basic blocks, 64 channels) →
    AdaptiveMaxPool2d(grid) → mean over channels. Images (B, 3, 96, 96) → costs (B, 12, 12).

    The layer shapes follow torchvision's ``resnet18`` (randomly initialized, as in the
    blackbox-backprop protocol's ``resnet18(pretrained=False)``)."""

    def __init__(self, grid: tuple[int, int] = (12, 12), in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
            nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.layer1 = nn.Sequential(_BasicBlock(64), _BasicBlock(64))
        self.pool = nn.AdaptiveMaxPool2d(grid)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.layer1(self.stem(x))).mean(1)


class SmallCostCNN(nn.Module):
    """A CPU-sized cost network: Conv(3→c, 8×8, stride 8) — one feature vector per 8×8-pixel
    tile — → ReLU → Conv(c→c, 3, pad 1)–ReLU → Conv(c→1, 1) → softplus (costs > 0), then
    AdaptiveMaxPool2d(grid) (the identity for 96×96 images of 12×12 tiles).
    Images (B, 3, 8H, 8W) → costs (B, H, W)."""

    def __init__(self, grid: tuple[int, int] = (12, 12), channels: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 8, stride=8), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 1, 1), nn.AdaptiveMaxPool2d(grid),
        )

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(self.net(x).squeeze(1))


class LinearCosts(nn.Module):
    """PyEPO's linear model: ``nn.Linear(p, d)``, features (B, p) -> costs (B, d)."""

    def __init__(self, p: int, d: int) -> None:
        super().__init__()
        self.linear = nn.Linear(p, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class MLPCosts(nn.Module):
    """A small MLP: Linear(p → hidden)–ReLU–Linear(hidden → d) (one hidden layer of
    ``RunConfig.hidden`` units; 64 in the protocols); features (B, p) -> costs (B, d)."""

    def __init__(self, p: int, d: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(p, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def build_model(name: str, *, image_shape=None, hidden: int = 256, grid=(12, 12)) -> nn.Module:
    """The network named by a run configuration's ``model`` field."""
    if name == "cnn":
        return RankingCNN(image_shape)
    if name == "mlp":
        return RankingMLP(image_shape, hidden)
    if name == "resnet_stem":
        return ResNetStemCosts(grid)
    if name == "small_cnn":
        return SmallCostCNN(grid, hidden)
    raise ValueError(f"model must be one of ('cnn', 'mlp', 'resnet_stem', 'small_cnn'); got {name!r}")
