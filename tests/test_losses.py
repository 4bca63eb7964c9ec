"""tracin.training.losses against hand computations in float64."""

from __future__ import annotations

import pytest
import torch

from conftest import ATOL, RTOL
from tracin.training import losses


def _logits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    student = 3 * torch.randn(6, 5, generator=generator)
    teacher = 3 * torch.randn(6, 5, generator=generator)
    labels = torch.randint(0, 5, (6,), generator=generator)
    return student, teacher, labels


def _log_softmax64(logits: torch.Tensor) -> torch.Tensor:
    z = logits.double()
    z = z - z.max(dim=1, keepdim=True).values
    return z - torch.log(torch.exp(z).sum(dim=1, keepdim=True))


def _cross_entropy64(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    log_p = _log_softmax64(logits)
    nll = -log_p[torch.arange(len(labels)), labels]
    return (1 - smoothing) * nll + smoothing * (-log_p.mean(dim=1))


def _kl64(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p_teacher, log_p_student = _log_softmax64(teacher / temperature), _log_softmax64(student / temperature)
    return (torch.exp(log_p_teacher) * (log_p_teacher - log_p_student)).sum(dim=1)


@pytest.mark.parametrize("temperature,alpha,smoothing", [(4.0, 0.7, 0.0), (1.0, 0.3, 0.0), (2.5, 0.5, 0.1)])
def test_kl_distillation_equals_hand_computation(temperature, alpha, smoothing):
    student, teacher, labels = _logits(0)
    expected = alpha * temperature**2 * _kl64(student, teacher, temperature)
    expected += (1 - alpha) * _cross_entropy64(student, labels, smoothing)
    got = losses.distillation(student, teacher, labels, temperature, alpha, "kl", smoothing)
    assert got.shape == (6,) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=RTOL, atol=ATOL)


def test_mse_distillation_equals_hand_computation():
    student, teacher, labels = _logits(1)
    mse = ((student.double() - teacher.double()) ** 2).mean(dim=1)
    expected = 0.7 * mse + 0.3 * _cross_entropy64(student, labels)
    got = losses.distillation(student, teacher, labels, temperature=4.0, alpha=0.7, kind="mse")
    torch.testing.assert_close(got.double(), expected, rtol=RTOL, atol=ATOL)


def test_cross_entropy_is_per_example():
    student, _, labels = _logits(2)
    got = losses.cross_entropy(student, labels)
    assert got.shape == (6,)
    torch.testing.assert_close(got.double(), _cross_entropy64(student, labels), rtol=RTOL, atol=ATOL)


def test_distillation_sends_no_gradient_to_the_teacher():
    student, teacher, labels = _logits(3)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    losses.distillation(student, teacher, labels).sum().backward()
    assert teacher.grad is None and student.grad is not None


def test_unknown_distillation_loss_is_refused():
    student, teacher, labels = _logits(4)
    with pytest.raises(ValueError, match="unknown distillation loss"):
        losses.distillation(student, teacher, labels, kind="l1")
