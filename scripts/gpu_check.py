#!/usr/bin/env python
"""Check the engine on a CUDA device against the float64 torch.func reference (run on the CPU), and time
the engine's two ways of forming per-sample convolution gradients on that device.

    python scripts/gpu_check.py            # needs a CUDA device

Prints, per engine mode, the largest error relative to the largest reference score (the tests' measure;
float32 precision is ~1e-6 here, the tests demand <= 1e-4).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from tracin.config import EngineConfig, ModelConfig, ScoreConfig
from tracin.engine.grads import Call, Target, layer_flat
from tracin.engine.layers import CONV, GROUPED, PATCHES, conv_grad_method
from tracin.engine.reference import func_tracin_scores
from tracin.engine.tracin import TracIn
from tracin.training.models import build_model


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double().cpu() - expected.double().cpu()).abs().max() / expected.double().abs().max())


def tiny_setup():
    torch.manual_seed(0)
    model = build_model(ModelConfig(stages=2, width=8, in_channels=3, num_classes=10)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    checkpoints = []
    for i, lr in enumerate((0.1, 0.03)):
        g = torch.Generator().manual_seed(10 + i)
        state = {
            k: v + 0.05 * torch.randn(v.shape, generator=g) if v.dtype.is_floating_point and "running" not in k else v
            for k, v in model.state_dict().items()
        }
        checkpoints.append((state, lr))
    train = (torch.randn(64, 3, 16, 16, generator=generator), torch.randint(0, 10, (64,), generator=generator))
    test = (torch.randn(16, 3, 16, 16, generator=generator), torch.randint(0, 10, (16,), generator=generator))
    return model, checkpoints, train, test


def check_correctness(device: str) -> None:
    model, checkpoints, train, test = tiny_setup()
    reference = func_tracin_scores(model, checkpoints, train, test)
    print(f"engine on {device} vs float64 torch.func reference (CPU), all parameters incl. BatchNorm:")
    batch = EngineConfig(batch_size=16)  # 4 full train batches: replayed from a captured CUDA graph
    for representation in ("flat", "factored", "auto"):
        scores = TracIn(model, checkpoints, engine=replace(batch, representation=representation), device=device).scores(
            train, test
        )
        print(f"  exact/{representation:9s} relative error {relative_error(scores, reference):.2e}")
    for precision in ("tf32", "bf16"):  # optional lower precisions: ~1e-3, the tests demand <= 1e-2 for bf16
        scores = TracIn(model, checkpoints, ScoreConfig(precision=precision), engine=batch, device=device).scores(
            train, test
        )
        print(f"  exact/{precision:9s} relative error {relative_error(scores, reference):.2e}")
    eager = TracIn(model, checkpoints, engine=replace(batch, cuda_graphs=False), device=device).scores(train, test)
    graphed = TracIn(model, checkpoints, engine=batch, device=device).scores(train, test)
    print(f"  CUDA graphs vs eager: relative difference {relative_error(graphed, eager):.2e}")
    tracin = TracIn(model, checkpoints, engine=batch, device=device)
    diagonal = func_tracin_scores(model, checkpoints, train, train).diagonal()
    print(f"  self-influence   relative error {relative_error(tracin.self_influence(train), diagonal):.2e}")
    head = func_tracin_scores(model, checkpoints, train, test, layers=["fc.weight"])
    last = TracIn(model, checkpoints, ScoreConfig(mode="last-layer"), engine=batch, device=device).scores(train, test)
    print(f"  last-layer       relative error {relative_error(last, head):.2e}")
    runs = [
        TracIn(
            model, checkpoints, ScoreConfig(mode="projected", proj_dim=64, seed=s), engine=batch, device=device
        ).scores(train, test)
        for s in range(32)
    ]
    single = sum(relative_error(r, reference) for r in runs) / len(runs)
    print(
        f"  projected(64)    single-seed error {single:.3f}, mean of 32 seeds {relative_error(torch.stack(runs).mean(0), reference):.3f}"
    )
    cpu = TracIn(model, checkpoints, config=ScoreConfig(mode="projected", proj_dim=64, seed=3), device="cpu").scores(
        train, test
    )
    gpu = TracIn(model, checkpoints, config=ScoreConfig(mode="projected", proj_dim=64, seed=3), device=device).scores(
        train, test
    )
    print(f"  projected, same seed on CPU and {device}: relative difference {relative_error(gpu, cpu):.2e}")


def timed(function, device: str, repeats: int = 5) -> float:
    function()
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1000


def time_conv_gradients(device: str) -> None:
    """The engine's two exact ways of forming per-sample conv weight gradients, in float32 (TF32 off, as
    the engine runs them), against the ordinary summed gradient."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    print("per-sample conv weight gradients, float32, batch 128 (ms): grouped conv | patches + bmm | summed (floor)")
    n = 128
    for channels, out, size, stride in (
        (3, 16, 32, 1),
        (16, 16, 32, 1),
        (16, 32, 32, 2),
        (32, 32, 16, 1),
        (64, 64, 32, 1),
    ):
        conv = torch.nn.Conv2d(channels, out, 3, stride=stride, padding=1, bias=False).to(device)
        x = torch.randn(n, channels, size, size, device=device)
        g = torch.randn(n, out, size // stride, size // stride, device=device)
        target, calls = Target("conv", conv, CONV, ("weight",)), [Call(outputs=[g], inputs=(x,), grads=[g])]
        grouped = lambda: layer_flat(target, calls, GROUPED)
        patches = lambda: layer_flat(target, calls, PATCHES)
        summed = lambda: torch.nn.grad.conv2d_weight(x, conv.weight.shape, g, stride=stride, padding=1)
        print(
            f"  C{channels}->{out} {size}x{size} stride {stride}: {timed(grouped, device):8.2f} | "
            f"{timed(patches, device):8.2f} | {timed(summed, device):8.2f}   "
            f"(chosen: {conv_grad_method(conv, torch.device(device))})"
        )


def main() -> None:
    device = "cuda"
    print(torch.__version__, torch.cuda.get_device_name(0))
    check_correctness(device)
    time_conv_gradients(device)


if __name__ == "__main__":
    main()
