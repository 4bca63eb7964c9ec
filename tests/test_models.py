"""tracin.training.models: ResNet-34 with a CIFAR stem, students cut after fewer stages, no in-place operations."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet34

from tracin.config import ModelConfig
from tracin.errors import CheckpointError, TracinError
from tracin.training.models import MODELS, build_model, copy_shared_stages, count_parameters, register


def _torchvision_cifar_resnet34() -> nn.Module:
    """The reference: torchvision's ResNet-34 with the usual CIFAR stem (3x3 conv, stride 1, no max-pool)."""
    model = resnet34(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def test_teacher_is_torchvision_resnet34_with_a_cifar_stem():
    ours = build_model(ModelConfig(stages=4, width=64)).state_dict()
    reference = _torchvision_cifar_resnet34().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}
    assert count_parameters(build_model(ModelConfig())) == count_parameters(_torchvision_cifar_resnet34())


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
@pytest.mark.parametrize("in_channels,size", [(3, 32), (1, 28)])
def test_shapes(stages, in_channels, size):
    config = ModelConfig(stages=stages, width=4, in_channels=in_channels, num_classes=7)
    model = build_model(config).eval()
    images = torch.randn(3, in_channels, size, size)
    assert model(images).shape == (3, 7)
    assert model.features(images).shape == (3, 4 * 2 ** (stages - 1))


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_student_is_the_teachers_first_stages_plus_a_new_head(stages):
    teacher = build_model(ModelConfig(stages=4, width=8))
    student = build_model(ModelConfig(stages=stages, width=8))
    kept = ("conv1.", "bn1.") + tuple(f"layer{i}." for i in range(1, stages + 1))
    assert {n.split(".")[0] for n, _ in student.named_children()} == {
        "conv1",
        "bn1",
        "relu",
        "avgpool",
        "fc",
        *(f"layer{i}" for i in range(1, stages + 1)),
    }
    body = sum(p.numel() for n, p in teacher.named_parameters() if n.startswith(kept))
    head = (8 * 2 ** (stages - 1) + 1) * 10
    assert count_parameters(student) == body + head
    assert count_parameters(student) < count_parameters(build_model(ModelConfig(stages=stages + 1, width=8)))


def test_no_relu_is_in_place():
    model = build_model(ModelConfig(stages=4, width=4))
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(not m.inplace for m in relus)


def test_forward_never_modifies_a_layer_input_in_place():
    # Per-sample-gradient hooks read layer inputs after the forward pass: nothing may overwrite them.
    model = build_model(ModelConfig(stages=4, width=4))
    seen = []
    for module in model.modules():
        module.register_forward_hook(lambda m, inputs, output: seen.extend((t, t._version) for t in inputs))
    model(torch.randn(2, 3, 32, 32))
    assert len(seen) > 50
    assert all(tensor._version == version for tensor, version in seen)


def test_student_and_teacher_state_dicts_align_for_copy_shared_stages():
    teacher = build_model(ModelConfig(stages=4, width=8))
    student = build_model(ModelConfig(stages=2, width=8))
    teacher_state, head_before = teacher.state_dict(), student.fc.weight.detach().clone()
    body = {k: v for k, v in student.state_dict().items() if not k.startswith("fc.")}
    assert all(teacher_state[k].shape == v.shape for k, v in body.items())
    assert copy_shared_stages(student, teacher_state) == len(body)
    after = student.state_dict()
    assert all(torch.equal(after[k], teacher_state[k]) for k in body)
    assert torch.equal(student.fc.weight, head_before)


def test_copy_shared_stages_refuses_a_teacher_of_another_width():
    teacher = build_model(ModelConfig(stages=4, width=8))
    with pytest.raises(CheckpointError, match="same width"):
        copy_shared_stages(build_model(ModelConfig(stages=2, width=4)), teacher.state_dict())


def test_architectures_come_from_the_registry():
    """build_model once built a ResNet-34 whatever it was asked for: a new architecture is one factory."""
    assert {"resnet18", "resnet34"} <= set(MODELS)
    blocks = lambda model: [len(getattr(model, f"layer{i}")) for i in range(1, 5)]  # noqa: E731
    assert blocks(build_model(ModelConfig(arch="resnet18", width=4))) == [2, 2, 2, 2]
    assert blocks(build_model(ModelConfig(arch="resnet34", width=4))) == [3, 4, 6, 3]

    @register("tiny-test-net")
    def tiny(config: ModelConfig) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(config.num_classes))

    try:
        assert isinstance(build_model(ModelConfig(arch="tiny-test-net")), nn.Sequential)
    finally:
        del MODELS["tiny-test-net"]
    with pytest.raises(TracinError, match="unknown architecture 'tiny-test-net'"):
        build_model(ModelConfig(arch="tiny-test-net"))


@pytest.mark.parametrize("path", ["a b:c", "pkg.models", ":f", "pkg:", "pkg..m:f", "pkg:f.g", "1pkg:f", "pkg:f "])
def test_allow_imports_refuses_what_names_no_module_and_function(path):
    """Round 8, R10: --allow-model 'a b:c' was accepted (and never used)."""
    from tracin.training.models import ALLOWED_IMPORTS, allow_imports

    with pytest.raises(TracinError, match="a model factory is MODULE:FUNCTION"):
        allow_imports([path])
    assert path not in ALLOWED_IMPORTS
    allow_imports(["my_package.sub_2.models:small_cnn"])
    assert "my_package.sub_2.models:small_cnn" in ALLOWED_IMPORTS
