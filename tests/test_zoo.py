"""The engine on the models users bring: torchvision's zoo against the float64 torch.func reference.

Each model has random weights, BatchNorm statistics moved by a few training-mode batches and 32x32
inputs, and is scored over every parameter and over several layer selections (in-place ReLU/Hardswish,
residual `+=`, squeeze-excitation, attention returning tuples, parameters held on containers). Where
float32 itself cannot reach RTOL, the engine is bounded by a small multiple of the float32 torch.func
error on the same selection.
"""

import argparse

import pytest
import torch
import torchvision
from torch import nn

from tracin.config import ScoreConfig
from tracin.engine.reference import func_per_sample_grads
from tracin.engine.tracin import TracIn

from conftest import RTOL
from models_for_tests import ConvNeXtStyle

FLOAT32_MULTIPLE = 4  # the engine may be this many times further from float64 than float32 torch.func is
N_TRAIN, N_TEST, LR = 5, 3, 0.5


def small_vit() -> nn.Module:
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision zeroes it, which zeroes every other gradient
    return model


ZOO = {
    "resnet18": (
        lambda: torchvision.models.resnet18(num_classes=10),
        [None, ["layer1"], ["bn1"], ["layer4.1"], ["fc"]],
    ),
    "mobilenet_v3_small": (
        lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
        [None, ["features.12"], ["classifier"], ["features.4.block.2"], ["features.0", "classifier.3"]],
    ),
    "efficientnet_b0": (
        lambda: torchvision.models.efficientnet_b0(num_classes=10),
        [None, ["features.1"], ["classifier"]],
    ),
    "vit": (
        small_vit,
        [
            None,
            ["class_token"],
            ["encoder.pos_embedding"],
            ["encoder.layers.encoder_layer_0.self_attention"],
            ["heads"],
        ],
    ),
    "convnext_block": (ConvNeXtStyle, [None, ["blocks.0.layer_scale"], ["stem"], ["blocks.1.block"], ["head.2"]]),
}
CASES = [(name, layers) for name, (_, selections) in ZOO.items() for layers in selections]


@pytest.fixture(scope="module")
def zoo_reference():
    """name -> (model, train, test, per-sample gradients in float64 and float32 over every parameter)."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            model = ZOO[name][0]()
            model.train()
            with torch.no_grad():
                for _ in range(3):
                    model(torch.randn(16, 3, 32, 32))
            model.eval()
            x, y = torch.randn(N_TRAIN + N_TEST, 3, 32, 32), torch.randint(0, 10, (N_TRAIN + N_TEST,))
            g64 = func_per_sample_grads(model, x, y)
            g32 = func_per_sample_grads(model, x, y, dtype=torch.float32).double()
            cache[name] = model, (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:]), g64, g32
        return cache[name]

    return get


def selected_columns(model: nn.Module, layers) -> torch.Tensor:
    """Columns of func_per_sample_grads' [n, D] layout (named_parameters order) that `layers` selects."""
    columns, start = [], 0
    for name, param in model.named_parameters():
        if not layers or any(name == p or name.startswith(p + ".") for p in layers):
            columns.append(torch.arange(start, start + param.numel()))
        start += param.numel()
    return torch.cat(columns)


@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.parametrize(
    "name,layers", CASES, ids=[f"{n}-{'all' if chosen is None else '+'.join(chosen)}" for n, chosen in CASES]
)
def test_zoo_model_matches_float64_reference(zoo_reference, name, layers):
    model, train, test, g64, g32 = zoo_reference(name)
    cols = selected_columns(model, layers)
    expected = LR * g64[:N_TRAIN, cols] @ g64[N_TRAIN:, cols].T
    float32_error = float(
        (LR * g32[:N_TRAIN, cols] @ g32[N_TRAIN:, cols].T - expected).abs().max() / expected.abs().max()
    )
    engine = TracIn(model, [(model.state_dict(), LR)], config=ScoreConfig(layers=layers), device="cpu")
    actual = engine.scores(train, test).double()
    assert len(engine.parameter_names) == len(set(engine.parameter_names))
    assert sorted(engine.parameter_names) == sorted(
        n for n, _ in model.named_parameters() if not layers or any(n == p or n.startswith(p + ".") for p in layers)
    )
    error = float((actual - expected).abs().max() / expected.abs().max())
    assert error < max(RTOL, FLOAT32_MULTIPLE * float32_error), f"{error:.2e} (float32 torch.func: {float32_error:.2e})"


def test_readme_example_torchvision_model_from_reference_trainer_checkpoints(tmp_path):
    """docs/engine.md's worked example, on files written as torchvision's classification reference trainer
    writes them (model, optimizer, lr_scheduler, epoch and its argparse options), after real SGD steps."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    x, y = torch.randn(12, 3, 32, 32), torch.randint(0, 10, (12,))
    paths = []
    for epoch in range(2):
        nn.functional.cross_entropy(model(x[:8]), y[:8]).backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "args": argparse.Namespace(lr=0.1, epochs=2, model="resnet18"),
        }
        paths.append(tmp_path / f"model_{epoch}.pth")
        torch.save(payload, paths[-1])

    tracin = TracIn(
        torchvision.models.resnet18(num_classes=10), sorted(map(str, paths)), ScoreConfig(layers=("layer4", "fc"))
    )
    top = tracin.top_k((x[:8], y[:8]), (x[8:], y[8:]), k=3)

    assert [c.lr for c in tracin.checkpoints] == pytest.approx([0.05, 0.025])  # the optimizer's rate when saved
    assert [c.epoch for c in tracin.checkpoints] == [0, 1]
    states = [torch.load(p, weights_only=False)["model"] for p in paths]
    g = [func_per_sample_grads(_loaded(s), x, y, layers=["layer4", "fc"]) for s in states]
    expected = sum(c.lr * gc[:8] @ gc[8:].T for c, gc in zip(tracin.checkpoints, g))
    assert torch.equal(top.test.top_index, expected.T.argsort(dim=1, descending=True)[:, :3])


def _loaded(state: dict) -> nn.Module:
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(state)
    return model.eval()
