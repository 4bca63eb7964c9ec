"""ResNet-34 with a CIFAR stem, and students made of its first stages plus a new head.

Built from torchvision's BasicBlock (stages [3, 4, 6, 3]); parameter names follow torchvision's
ResNet (`conv1`, `bn1`, `layer1`..`layer4`, `fc`), so a student's stages line up with the teacher's.
Activations are never in-place: per-sample-gradient hooks read layer inputs after the forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import resnet

from tracin.config import ModelConfig
from tracin.errors import CheckpointError

RESNET34_BLOCKS = (3, 4, 6, 3)


class BasicBlock(resnet.BasicBlock):
    """torchvision's BasicBlock with an out-of-place ReLU and residual sum."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__(inplanes, planes, stride=stride, downsample=downsample)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            resnet.conv1x1(inplanes, planes, stride),
            nn.BatchNorm2d(planes),
        )
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """ResNet-34 cut after `config.stages` stages, CIFAR stem (3x3 conv, stride 1, no max-pool).

    forward: Tensor[n, in_channels, H, W] float32 -> logits Tensor[n, num_classes].
    `features` gives the pooled penultimate activations Tensor[n, width * 2**(stages-1)].
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.conv1 = nn.Conv2d(config.in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        inplanes = width
        for i, blocks in enumerate(RESNET34_BLOCKS[: config.stages]):
            planes = width * 2**i
            self.add_module(f"layer{i + 1}", _stage(inplanes, planes, blocks, stride=1 if i == 0 else 2))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.config.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def build_model(config: ModelConfig) -> ResNet:
    return ResNet(config)


def teacher_config(width: int, in_channels: int, num_classes: int) -> ModelConfig:
    return ModelConfig(stages=4, width=width, in_channels=in_channels, num_classes=num_classes)


def student_config(width: int, stages: int, in_channels: int, num_classes: int) -> ModelConfig:
    return ModelConfig(stages=stages, width=width, in_channels=in_channels, num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def copy_shared_stages(student: ResNet, teacher_state: dict[str, Tensor]) -> int:
    """Initialise the student's stem and stages from a teacher state dict; the head stays new.

    Returns the number of tensors copied. A teacher whose shared tensors have other shapes (another width
    or input channels) is a CheckpointError.
    """
    own = student.state_dict()
    shared = {k: v for k, v in teacher_state.items() if k in own and not k.startswith("fc.")}
    misfits = [k for k, v in shared.items() if v.shape != own[k].shape]
    if misfits:
        name = misfits[0]
        raise CheckpointError(
            f"the teacher's stages do not fit the student ({name}: teacher {tuple(shared[name].shape)}, "
            f"student {tuple(own[name].shape)}); --student-init teacher needs the same width"
        )
    student.load_state_dict(shared, strict=False)
    return len(shared)
