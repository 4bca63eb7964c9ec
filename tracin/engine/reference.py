"""The obviously correct, slow TracInCP: torch.func per-sample gradients, materialised whole.

Shares no code with the engine (tracin.engine.grads / tracin.engine.features / tracin.engine.tracin): the tests and
scripts/bench_engine.py compare the engine with this. Default float64.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from tracin.variants import score_variant

# loss(logits [1, classes], label [1], input [1, ...]) -> scalar, for one example
ExampleLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


def _cross_entropy(logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="sum")


def _selected(name: str, layers: Optional[Sequence[str]]) -> bool:
    return not layers or any(name == p or name.startswith(p + ".") for p in layers)


def func_per_sample_grads(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    layers: Optional[Sequence[str]] = None,
    loss: ExampleLoss = _cross_entropy,
    dtype: torch.dtype = torch.float64,
    batch_size: int = 256,
) -> Tensor:
    """Tensor[n, D]: vmap(grad) of each example's loss with respect to the selected parameters
    (name prefixes), flattened in named_parameters order. The model is copied, cast and put in eval."""
    model = copy.deepcopy(model).to(dtype).eval()
    params = {k: v.detach() for k, v in model.named_parameters() if _selected(k, layers)}
    fixed = {k: v.detach() for k, v in model.named_parameters() if k not in params}
    fixed.update({k: v.detach() for k, v in model.named_buffers()})

    def example_loss(p: dict, x: Tensor, y: Tensor) -> Tensor:
        return loss(functional_call(model, (p, fixed), (x[None],)), y[None], x[None])

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))
    rows = []
    for start in range(0, len(inputs), batch_size):
        grads = per_example(params, inputs[start : start + batch_size].to(dtype), labels[start : start + batch_size])
        rows.append(torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1))
    return torch.cat(rows)


def func_tracin_scores(
    model: nn.Module,
    checkpoints: Sequence[tuple[dict, float]],
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    layers: Optional[Sequence[str]] = None,
    loss: ExampleLoss = _cross_entropy,
    dtype: torch.dtype = torch.float64,
    batch_size: int = 256,
    variant: str = "raw",
    test_loss: Optional[ExampleLoss] = None,
) -> Tensor:
    """Tensor[n_train, n_test]: sum over (state_dict, lr) checkpoints of lr * G_train @ G_test^T, with the
    rows of G_train and/or G_test divided by their norms as the registered `variant` says (tracin.variants).
    G_train differentiates `loss`, G_test `test_loss` (default: `loss` too)."""
    total = None
    for state, lr in checkpoints:
        model = copy.deepcopy(model)
        model.load_state_dict(state)
        g_train = func_per_sample_grads(model, *train, layers=layers, loss=loss, dtype=dtype, batch_size=batch_size)
        g_test = func_per_sample_grads(
            model, *test, layers=layers, loss=test_loss or loss, dtype=dtype, batch_size=batch_size
        )
        kind = score_variant(variant)
        if kind.normalise_train:
            g_train = g_train / g_train.norm(dim=1, keepdim=True)
        if kind.normalise_test:
            g_test = g_test / g_test.norm(dim=1, keepdim=True)
        term = lr * g_train @ g_test.T
        total = term if total is None else total + term
    return total
