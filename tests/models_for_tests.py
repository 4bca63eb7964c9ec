"""Tiny models with every kind of parameterised layer the engine handles, and checkpoint helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tracin.config import ModelConfig
from tracin.training.models import build_model

TINY_RESNET = ModelConfig(stages=2, width=4, in_channels=1, num_classes=10)


class Scale(nn.Module):
    """A parameterised module of no standard type: handled through torch.func."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1)


class EveryLayer(nn.Module):
    """Strided, dilated, grouped and reflect-padded convolutions, padding='same', BatchNorm, LayerNorm,
    a custom module, a Linear called twice and a parameter on the root module."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv_strided = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv_grouped = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4, padding_mode="reflect")
        self.conv_same = nn.Conv2d(8, 6, 3, padding="same", bias=False)
        self.scale = Scale(6)
        self.norm = nn.LayerNorm(6)
        self.shared = nn.Linear(6, 6)
        self.fc = nn.Linear(6, classes)
        self.temperature = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        x = F.relu(self.bn(self.conv_strided(x)))
        x = F.relu(self.conv_grouped(x))
        x = self.scale(self.conv_same(x)).mean((2, 3))
        x = self.shared(torch.tanh(self.shared(self.norm(x))))
        return self.fc(x) * self.temperature


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from their initial 0/1, so BatchNorm matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) - 0.5)
    return model


def perturbed_states(model: nn.Module, lrs, scale: float = 0.1) -> list[tuple[dict, float]]:
    """(state_dict, lr) checkpoints: the model's weights plus seeded noise, running_var kept positive."""
    checkpoints = []
    for i, lr in enumerate(lrs):
        generator = torch.Generator().manual_seed(100 + i)
        state = {}
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                value = value + scale * torch.randn(value.shape, generator=generator)
                if "running_var" in key:
                    value = value.abs() + 0.5
            state[key] = value
        checkpoints.append((state, lr))
    return checkpoints


def tiny_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(build_model(TINY_RESNET), seed).eval()


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).abs().max() / expected.abs().max())


class ChangesInputInPlace(nn.Module):
    """Changes a recorded module's input in place after the module ran, which autograd allows when the
    module's weight is frozen (as in the engine's copy): the engine must notice and record copies.
    in_place=False computes the same function out of place, for the reference."""

    def __init__(self, features: int = 6, classes: int = 4, in_place: bool = True):
        super().__init__()
        self.a = nn.Linear(features, features)
        self.b = nn.Linear(features, classes)
        self.in_place = in_place

    def forward(self, x):
        h = self.a(x) + 0.5
        out = self.b(h)
        h = h.add_(1.0) if self.in_place else h + 1.0  # b's input, after b ran
        return out + h[:, :1] ** 2


class SequenceFirst(nn.Module):
    """Examples in dimension 1: nn.MultiheadAttention with batch_first=False (returns a tuple, and uses
    out_proj's tensors without calling it) and a Linear applied to [length, n, features]."""

    def __init__(self, length: int = 3, features: int = 8, classes: int = 4):
        super().__init__()
        self.length, self.features = length, features
        self.embed = nn.Linear(features, features)
        self.attention = nn.MultiheadAttention(features, 2)
        self.fc = nn.Linear(features, classes)

    def forward(self, x):
        seq = self.embed(x.view(len(x), self.length, self.features).transpose(0, 1))  # [length, n, features]
        attended, _ = self.attention(seq, seq, seq, need_weights=False)
        return self.fc(attended.mean(0))


class TiedAndSubclassed(nn.Module):
    """A weight shared by two Linear modules, a Linear subclass whose forward differs from Linear's, and
    a module returning a dict (holding one tensor twice)."""

    class Doubled(nn.Linear):
        def forward(self, x):
            return 2.0 * super().forward(x)

    class DictOut(nn.Module):
        def __init__(self, features: int):
            super().__init__()
            self.proj = nn.Linear(features, features)

        def forward(self, x):
            out = torch.tanh(self.proj(x))
            return {"out": out, "again": out, "index": torch.zeros(len(x), dtype=torch.long)}  # one tensor twice

    def __init__(self, features: int = 6, classes: int = 4):
        super().__init__()
        self.first = nn.Linear(features, features)
        self.second = nn.Linear(features, features)
        self.second.weight = self.first.weight
        self.doubled = self.Doubled(features, features)
        self.dict_out = self.DictOut(features)
        self.fc = nn.Linear(features, classes)

    def forward(self, x):
        x = self.second(torch.tanh(self.first(x)))
        return self.fc(self.dict_out(torch.tanh(self.doubled(x)))["out"])


class MixesExamples(nn.Module):
    """A custom module whose output for one example depends on the others: not separable."""

    def __init__(self, features: int = 6, classes: int = 4):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(features))
        self.fc = nn.Linear(features, classes)

    def forward(self, x):
        return self.fc((x - x.mean(0)) * self.scale)


class ConvNeXtStyle(nn.Module):
    """torchvision's own ConvNeXt block (LayerNorm over channels, a layer-scale parameter held on the
    block itself) behind a patchify stem, at CPU size."""

    def __init__(self, dim: int = 16, classes: int = 10):
        super().__init__()
        from torchvision.models.convnext import CNBlock, LayerNorm2d

        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, stride=4), LayerNorm2d(dim))
        self.blocks = nn.Sequential(CNBlock(dim, 0.5, 0.0), CNBlock(dim, 0.5, 0.0))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(dim), nn.Linear(dim, classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class TiedHead(nn.Module):
    """An embedding-style Linear whose weight is also read directly by the head (h @ W^T): the weight's
    own module is called, yet that is not its only use."""

    def __init__(self, features: int = 6):
        super().__init__()
        self.embed = nn.Linear(features, features, bias=False)
        self.mix = nn.Linear(features, features)

    def forward(self, x):
        h = torch.tanh(self.mix(self.embed(x)))
        return h @ self.embed.weight.T


def small_cnn(num_classes: int, in_channels: int) -> nn.Module:
    """A user's own teacher, as `tracin-train --model models_for_tests:small_cnn` builds it."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


def smaller_cnn(num_classes: int, in_channels: int) -> nn.Module:
    """A user's own student (--student-model models_for_tests:smaller_cnn)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )
