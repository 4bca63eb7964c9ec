"""Model factories behind a registry: ResNet-34 and ResNet-18 with a CIFAR stem, and students made of
their first stages plus a new head.

Built from torchvision's BasicBlock; parameter names follow torchvision's ResNet (`conv1`, `bn1`,
`layer1`..`layer4`, `fc`), so a student's stages line up with the teacher's. A new architecture is one
factory here: `@register("name")` on a function ModelConfig -> nn.Module (`--arch name` then chooses it;
`stages` and `width` are the factory's to interpret).

A user's own model is a factory by import path, `MODULE:FUNCTION`, called as FUNCTION(num_classes=...,
in_channels=...) (`tracin-train --model` for the teacher, `--student-model` for the students). An import
path runs code, so a run folder or checkpoint that names one is never enough to import it: a command imports
only the paths its user allowed (`allow_imports`: tracin-train's --model/--student-model, the other
commands' --allow-model).
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torchvision.models import resnet

from tracin.config import ModelConfig
from tracin.errors import CheckpointError, TracinError

RESNET34_BLOCKS = (3, 4, 6, 3)
RESNET18_BLOCKS = (2, 2, 2, 2)
MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register(name: str):
    """Function decorator: make a factory ModelConfig -> nn.Module buildable as ModelConfig(arch=name)."""

    def add(factory):
        MODELS[name] = factory
        return factory

    return add


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
    """A ResNet of BasicBlocks (`blocks` per stage) cut after `config.stages` stages, CIFAR stem (3x3 conv,
    stride 1, no max-pool).

    forward: Tensor[n, in_channels, H, W] float32 -> logits Tensor[n, num_classes].
    `features` gives the pooled penultimate activations Tensor[n, width * 2**(stages-1)].
    """

    def __init__(self, config: ModelConfig, blocks: tuple[int, ...] = RESNET34_BLOCKS):
        super().__init__()
        self.config = config
        width = config.width
        self.conv1 = nn.Conv2d(config.in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        inplanes = width
        for i, count in enumerate(blocks[: config.stages]):
            planes = width * 2**i
            self.add_module(f"layer{i + 1}", _stage(inplanes, planes, count, stride=1 if i == 0 else 2))
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


@register("resnet34")
def resnet34(config: ModelConfig) -> ResNet:
    return ResNet(config, RESNET34_BLOCKS)


@register("resnet18")
def resnet18(config: ModelConfig) -> ResNet:
    return ResNet(config, RESNET18_BLOCKS)


ALLOWED_IMPORTS: set[str] = set()  # MODULE:FUNCTION factories this process's user allowed
IMPORTED: set[str] = set()  # those of them a model was built by (an unused one is told: round 19, R8)


IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")  # dotted.module:function


def is_import_path(arch: str) -> bool:
    return ":" in arch


def allow_imports(paths) -> None:
    """Allow these MODULE:FUNCTION factories (named by the user on the command line) to be imported."""
    for path in (p for p in paths or () if p is not None):
        if not IMPORT_PATH.fullmatch(path):  # 'a b:c' named no module it could ever allow (round 8: R10)
            raise TracinError(f"a model factory is MODULE:FUNCTION (e.g. mypackage.models:small_cnn), got {path!r}")
        ALLOWED_IMPORTS.add(path)


def _imported_factory(arch: str) -> Callable[[ModelConfig], nn.Module]:
    if arch not in ALLOWED_IMPORTS:
        raise TracinError(
            f"the model is built by {arch!r}, an import path, i.e. code: it is imported only when you "
            f"allow it (--allow-model {arch}, or --model/--student-model for tracin-train)"
        )
    IMPORTED.add(arch)
    module_name, _, function_name = arch.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise TracinError(f"model factory {arch!r} cannot be imported ({error})") from None
    if not callable(function):
        raise TracinError(f"model factory {arch!r} is a {type(function).__name__}, not a function")

    def build(config: ModelConfig) -> nn.Module:
        try:
            model = function(num_classes=config.num_classes, in_channels=config.in_channels)
        except TypeError as error:  # the wrong signature; a TypeError inside a right one reads the same
            raise TracinError(
                f"model factory {arch!r} must be called as FUNCTION(num_classes=..., in_channels=...) "
                f"and return an nn.Module; calling it failed: {error}"
            ) from None
        if not isinstance(model, nn.Module):
            raise TracinError(f"model factory {arch!r} returned a {type(model).__name__}, not an nn.Module")
        return model

    return build


def build_model(config: ModelConfig) -> nn.Module:
    """The registered factory of config.arch, called with the config; or an allowed MODULE:FUNCTION,
    called with num_classes and in_channels."""
    if is_import_path(config.arch):
        model = _imported_factory(config.arch)(config)
        if not isinstance(model, nn.Module):
            raise TracinError(f"model factory {config.arch!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model
    if config.arch not in MODELS:
        raise TracinError(f"unknown architecture {config.arch!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[config.arch](config)


def teacher_config(arch: str, width: int, in_channels: int, num_classes: int) -> ModelConfig:
    return ModelConfig(arch=arch, stages=4, width=width, in_channels=in_channels, num_classes=num_classes)


def student_config(arch: str, width: int, stages: int, in_channels: int, num_classes: int) -> ModelConfig:
    return ModelConfig(arch=arch, stages=stages, width=width, in_channels=in_channels, num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


TRAINING_COPIES = 4  # float32 copies of the weights training holds: weights, gradients, momentum, a spare


def check_fits(configs: Iterable[ModelConfig], device: torch.device) -> None:
    """A TracinError, before anything is allocated, when a registered model's training state
    (TRAINING_COPIES float32 copies of its weights) exceeds the device's whole memory: a --width typed
    with a digit too many is one line, not an allocator's traceback or the out-of-memory killer. Models
    are built on the meta device (shapes only); a user's factory is not run here."""
    total = device_memory(device)
    for config in configs:
        if is_import_path(config.arch):
            continue
        try:
            with torch.device("meta"):
                parameters = count_parameters(build_model(config))
        except RuntimeError as error:  # "Storage size calculation overflowed": more than an index can count
            raise TracinError(
                f"{config.arch} of width {config.width} cannot be built ({str(error).splitlines()[0]}); choose a "
                "smaller --width"
            ) from None
        needed = parameters * 4 * TRAINING_COPIES
        if needed > total:
            raise TracinError(
                f"{config.arch} of width {config.width} has {parameters:,} parameters: training it needs about "
                f"{needed / 2**30:,.0f} GiB, more than the {total / 2**30:,.0f} GiB of {device}; choose a smaller --width"
            )


def device_memory(device: torch.device) -> int:
    """Bytes of memory of `device`: a CUDA device's own, else the machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def copy_shared_stages(student: nn.Module, teacher_state: dict[str, Tensor]) -> int:
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
