"""tracin.training.losses against hand computations in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tracin.errors import TracinError
from tracin.training import losses

from conftest import ATOL, RTOL


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
    losses.distillation(student, teacher, labels, 4.0, 0.7).sum().backward()
    assert teacher.grad is None and student.grad is not None


def test_unknown_distillation_loss_is_refused():
    student, teacher, labels = _logits(4)
    with pytest.raises(TracinError, match="kd loss must be one of kl, mse, kl-elementwise, got 'l1'"):
        losses.distillation(student, teacher, labels, 4.0, 0.7, kind="l1")
    with pytest.raises(TracinError, match="kd loss must be one of kl, mse, kl-elementwise"):
        losses.Distillation(torch.nn.Linear(5, 5), 4.0, 0.7, kind="l1")


def test_kl_elementwise_is_the_studys_objective_to_the_letter():
    """The study's line, nn.KLDivLoss()'s default mean over batch x classes included: the per-example
    losses' batch mean equals it, and its soft term is 2/C of the usual T^2 KL."""
    student, teacher, labels = _logits(6)
    temperature, alpha = 4.0, 0.7
    study = torch.nn.KLDivLoss()(
        F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1)
    ) * (temperature * temperature * 2.0 * alpha) + F.cross_entropy(student, labels) * (1.0 - alpha)
    mine = losses.distillation(student, teacher, labels, temperature, alpha, kind="kl-elementwise")
    assert mine.shape == (6,)
    torch.testing.assert_close(mine.mean(), study, rtol=1e-6, atol=1e-7)
    usual = losses.distillation(student, teacher, labels, temperature, 1.0, kind="kl")
    elementwise = losses.distillation(student, teacher, labels, temperature, 1.0, kind="kl-elementwise")
    torch.testing.assert_close(elementwise, usual * 2.0 / student.shape[1])


def test_temperature_and_alpha_have_no_silent_defaults():
    """TracIn once scored every student with T=4, alpha=0.7 whatever it was trained with."""
    with pytest.raises(TypeError):
        losses.Distillation(torch.nn.Linear(5, 5))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        losses.distillation(*_logits(5))  # type: ignore[call-arg]


def test_loss_objects_equal_the_functions():
    student, _, labels = _logits(6)
    inputs = torch.randn(6, 3, generator=torch.Generator().manual_seed(6))
    teacher = torch.nn.Linear(3, 5)
    expected = losses.distillation(student, teacher(inputs), labels, 2.0, 0.4, "mse", 0.1)
    got = losses.Distillation(teacher, 2.0, 0.4, "mse", 0.1)(student, labels, inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(
        losses.CrossEntropy(0.1)(student, labels, inputs), losses.cross_entropy(student, labels, 0.1)
    )
    moved = losses.Distillation(teacher, 2.0, 0.4).to(torch.device("cpu"))
    assert moved.teacher is not teacher and not any(p.requires_grad for p in moved.teacher.parameters())
