"""Per-example losses shared by training and scoring.

Every function returns Tensor[n] (one loss per example); training averages it, TracIn differentiates the
sum, so each example's gradient is that of its own loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """logits Tensor[n, classes], labels Tensor[n] int64 -> Tensor[n], nats."""
    return F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)


def soft_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) per example, Tensor[n], nats (not scaled by T^2)."""
    student_log_p = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_p = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(student_log_p, teacher_log_p, reduction="none", log_target=True).sum(dim=1)


def logit_mse(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean squared difference of logits per example, Tensor[n]."""
    return (student_logits - teacher_logits).pow(2).mean(dim=1)


def distillation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
    kind: str = "kl",
    label_smoothing: float = 0.0,
) -> Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE for `kind="kl"`;
    alpha * MSE(student logits, teacher logits) + (1 - alpha) * CE for `kind="mse"`. Tensor[n].

    The T^2 factor keeps the soft term's gradient scale independent of T (Hinton et al., 2015).
    """
    teacher_logits = teacher_logits.detach()
    if kind == "kl":
        soft = temperature**2 * soft_kl(student_logits, teacher_logits, temperature)
    elif kind == "mse":
        soft = logit_mse(student_logits, teacher_logits)
    else:
        raise ValueError(f"unknown distillation loss {kind!r}")
    return alpha * soft + (1.0 - alpha) * cross_entropy(student_logits, labels, label_smoothing)
