#!/usr/bin/env python
"""Benchmark the TracIn engine against its references, side by side in one process.

Every contestant gets the same model (a student: ResNet-34 stem + first stages), the same checkpoints
and the same data, and the script prints time ratios, each contestant's peak device memory (CUDA) and the
largest relative difference of the scores:

  tracin exact            all parameters (BatchNorm included), cost-model representations
  tracin exact eager      the same without CUDA graphs (CUDA only: on a CPU every batch runs eagerly)
  tracin exact bf16       the same, inner products with bfloat16 features (not equal scores: ~1e-3)
  torch.func reference    vmap(grad) per-sample gradients materialised, one matrix product (tracin.engine.reference)
  tracin exact conv+fc    the parameters captum's hook path supports
  captum TracInCP         same parameters, test set in batches (captum recomputes train gradients per batch)
  tracin last-layer / captum TracInCPFast
  tracin projected        Kronecker-projected gradients
  floor                   one batched forward+backward over the same examples per checkpoint
  resnet18 exact / resnet18 reference   torchvision's resnet18 (in-place ReLU, residual +=), all its
                          11.2 M parameters, on its own smaller data (--zoo-n-train x --zoo-n-test)

    python scripts/bench_engine.py                         # CPU size: width 16, 2 stages, 2048 x 512
    python scripts/bench_engine.py --device cuda --width 64 --n-train 50000 --n-test 10000 \
        --checkpoints 10 --only projected floor             # the full-size GPU target
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import warnings
from dataclasses import replace
from typing import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset

from tracin.config import EngineConfig, ModelConfig, ScoreConfig
from tracin.engine.reference import func_tracin_scores
from tracin.engine.tracin import TracIn
from tracin.training.models import build_model, count_parameters

CONTESTANTS = (
    "exact",
    "exact-eager",
    "exact-bf16",
    "reference",
    "exact-conv-fc",
    "captum",
    "last-layer",
    "captum-fast",
    "projected",
    "floor",
    "resnet18-exact",
    "resnet18-reference",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--n-test", type=int, default=512)
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--proj-dim", type=int, default=1024)
    parser.add_argument("--captum-test-batch", type=int, default=128, help="test examples per captum influence call")
    parser.add_argument("--max-memory-gb", default="auto", help="as tracin-score's: GB, or auto (default: %(default)s)")
    parser.add_argument(
        "--tf32", action="store_true", help="allow TF32 matrix products and convolutions (CUDA), for all"
    )
    parser.add_argument("--no-cuda-graphs", action="store_true", help="run every engine contestant eagerly")
    parser.add_argument("--only", nargs="*", choices=CONTESTANTS, help="run only these contestants")
    parser.add_argument("--warmup", type=int, default=64, help="train examples of an untimed first pass per contestant")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per contestant; the fastest counts")
    parser.add_argument("--zoo-n-train", type=int, default=64, help="train examples for the resnet18 rows")
    parser.add_argument("--zoo-n-test", type=int, default=16, help="test examples for the resnet18 rows")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args()


def make_setup(args: argparse.Namespace):
    torch.manual_seed(0)
    config = ModelConfig(stages=args.stages, width=args.width, in_channels=args.channels, num_classes=10)
    model = build_model(config).eval()
    checkpoints = []
    for i in range(args.checkpoints):  # distinct, plausible states: init plus seeded noise
        generator = torch.Generator().manual_seed(i)
        state = {
            k: v + 0.02 * torch.randn(v.shape, generator=generator)
            if v.dtype.is_floating_point and "running" not in k
            else v
            for k, v in model.state_dict().items()
        }
        checkpoints.append((state, 0.1 / (i + 1)))
    generator = torch.Generator().manual_seed(1)
    shape = (args.channels, args.image_size, args.image_size)
    train = (
        torch.randn(args.n_train, *shape, generator=generator),
        torch.randint(0, 10, (args.n_train,), generator=generator),
    )
    test = (
        torch.randn(args.n_test, *shape, generator=generator),
        torch.randint(0, 10, (args.n_test,), generator=generator),
    )
    return model, checkpoints, train, test


def make_zoo_setup(args: argparse.Namespace):
    """torchvision's resnet18 (10 classes) with BatchNorm statistics moved off their initial values, 2
    checkpoints, and --zoo-n-train x --zoo-n-test examples of the bench's input shape."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    shape = (args.channels, args.image_size, args.image_size)
    if args.channels != 3:
        model.conv1 = nn.Conv2d(args.channels, 64, 7, 2, 3, bias=False)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, *shape))
    model.eval()
    checkpoints = [
        (model.state_dict(), 0.1),
        ({k: v * 1.01 if v.dtype.is_floating_point else v for k, v in model.state_dict().items()}, 0.05),
    ]
    generator = torch.Generator().manual_seed(2)
    n_train, n_test = args.zoo_n_train, args.zoo_n_test
    train = (torch.randn(n_train, *shape, generator=generator), torch.randint(0, 10, (n_train,), generator=generator))
    test = (torch.randn(n_test, *shape, generator=generator), torch.randint(0, 10, (n_test,), generator=generator))
    return model, checkpoints, train, test


def timed(device: str, run: Callable[[], torch.Tensor | None], repeat: int) -> tuple[float, torch.Tensor | None]:
    """Fastest of `repeat` runs: the first large run of anything also pays for faulting in fresh memory."""
    best, result = float("inf"), None
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def floor(model: nn.Module, checkpoints, train, test, args) -> None:
    """One forward and backward pass over every example, per checkpoint: what any gradient method pays."""
    model = model.to(args.device)
    for state, _ in checkpoints:
        model.load_state_dict(state)
        for inputs, labels in (train, test):
            for start in range(0, len(inputs), args.batch_size):
                x = inputs[start : start + args.batch_size].to(args.device)
                y = labels[start : start + args.batch_size].to(args.device)
                loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
                torch.autograd.grad(loss, [p for p in model.parameters()])


def captum_scores(model, checkpoints, train, test, layers, args, fast: bool) -> torch.Tensor:
    from captum.influence import TracInCP, TracInCPFast

    states = {str(i): c for i, c in enumerate(checkpoints)}

    def load(module: nn.Module, key: str) -> float:
        module.load_state_dict(states[key][0])
        return states[key][1]

    model = model.to(args.device)
    dataset = TensorDataset(train[0].to(args.device), train[1].to(args.device))
    loss = nn.CrossEntropyLoss(reduction="sum")
    common = dict(checkpoints_load_func=load, loss_fn=loss, batch_size=args.batch_size)
    if fast:
        influence = TracInCPFast(model, "fc", dataset, list(states), **common)
    else:
        influence = TracInCP(model, dataset, list(states), layers=layers, sample_wise_grads_per_batch=True, **common)
    columns = []
    for start in range(0, len(test[0]), args.captum_test_batch):
        batch = tuple(t[start : start + args.captum_test_batch].to(args.device) for t in test)
        columns.append(influence.influence(batch).T.cpu())
    return torch.cat(columns, dim=1)


def rel_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    if a is None or b is None:
        return None
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def main() -> None:
    args = parse_args()
    # One precision for every contestant: cuDNN convolutions default to TF32, the engine to float32.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    model, checkpoints, train, test = make_setup(args)
    conv_fc = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zoo_model, zoo_checkpoints, zoo_train, zoo_test = make_zoo_setup(args)
    zoo = (zoo_model, zoo_checkpoints, zoo_train, zoo_test)
    zoo_warm = (zoo_model, zoo_checkpoints, tuple(t[:4] for t in zoo_train), tuple(t[:2] for t in zoo_test))
    runs = contestants(model, checkpoints, train, test, conv_fc, args, zoo)
    warm = contestants(
        model,
        checkpoints,
        tuple(t[: args.warmup] for t in train),
        tuple(t[: args.warmup // 4] for t in test),
        conv_fc,
        args,
        zoo_warm,
    )
    selected = args.only or [c for c in CONTESTANTS if c != "exact-eager" or args.device.startswith("cuda")]
    print(
        f"device {args.device}, student width {args.width} stages {args.stages} ({count_parameters(model):,} parameters), "
        f"{args.checkpoints} checkpoints, {args.n_train} train x {args.n_test} test, "
        f"{args.channels}x{args.image_size}x{args.image_size} inputs, batch {args.batch_size}"
    )
    plans = engine_runs(model, conv_fc, args)
    for name in selected:
        if name in plans:  # the blocking tracin-score would print for this problem
            config, engine = plans[name]
            plan = TracIn(model, checkpoints, config, engine=engine, device=args.device).memory_plan(train, test)
            print(f"  plan of {name}: {plan.describe(len(test[0]))}")
    times, scores, peaks = {}, {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in selected:
            gc.collect()  # what an earlier contestant left (CUDA graphs, kept features) is not this one's
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            if args.warmup:
                warm[name]()  # one-time costs (allocator, kernel selection) stay out of the timing
            times[name], scores[name] = timed(args.device, runs[name], args.repeat)
            peak = ""
            if args.device.startswith("cuda"):  # of the last timed run: what the contestant held on the device at most
                peaks[name] = torch.cuda.max_memory_allocated() / 2**30
                peak = f"   peak {peaks[name]:7.2f} GiB"
            print(f"  {name:14s} {times[name]:9.2f} s{peak}", flush=True)
    report(times, scores, args, peaks)


def engine_runs(model, conv_fc, args) -> dict[str, tuple[ScoreConfig, EngineConfig]]:
    """Each TracIn contestant's settings (the student's), so that its memory plan can be printed."""
    budget = None if args.max_memory_gb == "auto" else int(float(args.max_memory_gb) * 2**30)
    engine = EngineConfig(batch_size=args.batch_size, max_memory=budget, cuda_graphs=not args.no_cuda_graphs)
    exact = ScoreConfig(precision="tf32" if args.tf32 else "float32")
    return {
        "exact": (exact, engine),
        "exact-eager": (exact, replace(engine, cuda_graphs=False)),
        "exact-bf16": (replace(exact, precision="bf16"), engine),
        "exact-conv-fc": (replace(exact, layers=conv_fc), engine),
        "last-layer": (replace(exact, mode="last-layer"), engine),
        "projected": (replace(exact, mode="projected", proj_dim=args.proj_dim), engine),
    }


def contestants(model, checkpoints, train, test, conv_fc, args, zoo) -> dict[str, Callable[[], torch.Tensor | None]]:
    runs = {
        name: (
            lambda config=config, engine=engine: TracIn(
                model, checkpoints, config, engine=engine, device=args.device
            ).scores(train, test)
        )
        for name, (config, engine) in engine_runs(model, conv_fc, args).items()
    }
    exact, engine = engine_runs(model, conv_fc, args)["exact"]
    return {
        **runs,
        "reference": lambda: reference_scores(model, checkpoints, train, test, args),
        "captum": lambda: captum_scores(model, checkpoints, train, test, conv_fc, args, fast=False),
        "captum-fast": lambda: captum_scores(model, checkpoints, train, test, conv_fc, args, fast=True),
        "floor": lambda: floor(model, checkpoints, train, test, args),
        "resnet18-exact": lambda: TracIn(zoo[0], zoo[1], exact, engine=engine, device=args.device).scores(
            zoo[2], zoo[3]
        ),
        "resnet18-reference": lambda: reference_scores(*zoo, args),
    }


def reference_scores(model, checkpoints, train, test, args) -> torch.Tensor:
    """The torch.func reference in float32 on the bench's device."""
    device = args.device
    return func_tracin_scores(
        model.to(device),
        [({k: v.to(device) for k, v in s.items()}, lr) for s, lr in checkpoints],
        tuple(t.to(device) for t in train),
        tuple(t.to(device) for t in test),
        dtype=torch.float32,
        batch_size=args.batch_size,
    ).cpu()


def report(times: dict, scores: dict, args: argparse.Namespace, peaks: dict) -> None:
    comparisons = [
        ("exact vs torch.func reference", "reference", "exact", "faster", "target >= 2x"),
        ("exact eager vs torch.func reference", "reference", "exact-eager", "faster", "(without CUDA graphs)"),
        ("exact bf16 vs torch.func reference", "reference", "exact-bf16", "faster", "(bf16: not equal scores)"),
        ("exact conv+fc vs captum TracInCP", "captum", "exact-conv-fc", "faster", "target >= 10x"),
        ("last-layer vs captum TracInCPFast", "captum-fast", "last-layer", "faster", ""),
        ("projected / floor", "projected", "floor", "of the floor", "target <= 3x"),
        ("exact / floor", "exact", "floor", "of the floor", ""),
        ("exact bf16 / floor", "exact-bf16", "floor", "of the floor", ""),
        ("exact bf16 vs exact (float32)", "exact", "exact-bf16", "faster", ""),
        (
            "resnet18 exact vs torch.func reference",
            "resnet18-reference",
            "resnet18-exact",
            "faster",
            "(torchvision model)",
        ),
    ]
    results = {"args": vars(args), "seconds": times, "peak_gib": peaks, "ratios": {}, "max_rel_diff": {}}
    print("\nratios (same process, same data):")
    for label, slow, fast, word, target in comparisons:
        if slow in times and fast in times:
            ratio = times[slow] / times[fast]
            results["ratios"][label] = ratio
            print(f"  {label:40s} {ratio:7.2f}x {word}   {target}")
    print("max relative difference of scores:")
    for label, a, b in (
        ("exact vs torch.func reference", "exact", "reference"),
        ("exact eager vs exact", "exact-eager", "exact"),
        ("exact bf16 vs torch.func reference", "exact-bf16", "reference"),
        ("exact bf16 vs exact (float32)", "exact-bf16", "exact"),
        ("exact conv+fc vs captum TracInCP", "exact-conv-fc", "captum"),
        ("last-layer vs captum TracInCPFast", "last-layer", "captum-fast"),
        ("projected vs exact", "projected", "exact"),
        ("resnet18 exact vs torch.func reference", "resnet18-exact", "resnet18-reference"),
    ):
        diff = rel_diff(scores.get(a), scores.get(b))
        if diff is not None:
            results["max_rel_diff"][label] = diff
            print(f"  {label:40s} {diff:9.2e}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2, default=str)


if __name__ == "__main__":
    main()
