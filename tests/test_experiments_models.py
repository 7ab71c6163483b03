"""The protocols' networks: output shapes and parameter counts computed by hand from docs/PAPER.md §2
(and torchvision's resnet18 layer shapes)."""
import torch

from newton_lab.models import RankingCNN, RankingMLP, ResNetStemCosts, SmallCostCNN


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_paper_ranking_cnn():
    model = RankingCNN((1, 28, 112))
    assert model(torch.zeros(3, 1, 28, 112)).shape == (3,)
    conv1, conv2 = 1 * 32 * 25 + 32, 32 * 64 * 25 + 64
    fc1, fc2 = 64 * 7 * 28 * 64 + 64, 64 + 1
    assert _count(model) == conv1 + conv2 + fc1 + fc2


def test_quick_ranking_mlp():
    model = RankingMLP((1, 14, 56), hidden=256)
    assert model(torch.zeros(3, 1, 14, 56)).shape == (3,)
    assert _count(model) == (784 * 256 + 256) + (256 * 256 + 256) + (256 + 1)


def test_resnet18_stem_costs():
    model = ResNetStemCosts()
    out = model(torch.rand(2, 3, 96, 96))
    assert out.shape == (2, 12, 12) and bool((out >= 0).all())  # mean of post-ReLU features
    conv1, bn1 = 3 * 64 * 49, 2 * 64
    block = 2 * (64 * 64 * 9) + 2 * (2 * 64)
    assert _count(model) == conv1 + bn1 + 2 * block


def test_small_cost_cnn_is_tilewise():
    model = SmallCostCNN(channels=4)
    x = torch.rand(1, 3, 96, 96)
    y = model(x)
    assert y.shape == (1, 12, 12) and bool((y > 0).all())
    # Changing one 8×8 tile changes costs only in its 3×3 neighbourhood of tiles.
    x2 = x.clone()
    x2[..., 0:8, 0:8] = 1 - x2[..., 0:8, 0:8]
    changed = (model(x2) != y)[0]
    assert changed[0, 0] and not changed[2:, :].any() and not changed[:, 2:].any()
