"""tracin.engine.groups: layer groups by module name (the ResNet stages by default)."""

import torchvision

from tracin.config import ModelConfig
from tracin.engine.groups import group_names, stage_of
from tracin.training.models import build_model


def test_stages_of_our_resnet_and_torchvisions_and_other_names():
    assert [stage_of(n) for n in ("conv1", "bn1", "layer1.0.conv1", "layer4.1.bn2", "fc", "", "features.3")] == [
        "stem",
        "stem",
        "layer1",
        "layer4",
        "head",
        "model",
        "features",
    ]
    ours = build_model(ModelConfig(stages=4, width=2, in_channels=1, num_classes=10))
    theirs = torchvision.models.resnet18(num_classes=10)
    for model in (ours, theirs):
        names = [name for name, module in model.named_modules() if list(module.parameters(recurse=False))]
        assert group_names(names) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
