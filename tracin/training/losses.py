"""Per-example losses, and the loss objects training and scoring share.

Every function returns Tensor[n] (one loss per example); training averages it, TracIn differentiates the
sum, so each example's gradient is that of its own loss. A loss object is called as
`loss(logits, labels, inputs) -> Tensor[n]` (the inputs feed a distillation teacher) everywhere: the
trainer, the engine (`TracIn(..., loss=...)`) and `per_sample_grads`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from dataclasses import dataclass, field, replace
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracin.errors import TracinError

Objective = Callable[[Tensor, Tensor, Tensor], Tensor]  # (logits, labels, inputs) -> Tensor[n]


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


# The soft-target terms a distilled student can train with, by name (TrainConfig.kd_loss, --kd-loss): each
# (student logits [n, C], teacher logits [n, C], temperature) -> Tensor[n], the term alpha weighs. Adding one
# is one `@register_kd_loss` function here; training, scoring (--loss kd, kd-train) and the CLI read this.
SoftTarget = Callable[[Tensor, Tensor, float], Tensor]
KD_LOSSES: dict[str, SoftTarget] = {}


def register_kd_loss(name: str) -> Callable[[SoftTarget], SoftTarget]:
    def register(function: SoftTarget) -> SoftTarget:
        if name in KD_LOSSES:
            raise TracinError(f"kd loss {name!r} is already registered")
        KD_LOSSES[name] = function
        return function

    return register


def check_kd_loss(kind: str) -> None:
    """Refuse a kd loss kind the registry does not hold."""
    if kind not in KD_LOSSES:
        raise TracinError(f"kd loss must be one of {', '.join(KD_LOSSES)}, got {kind!r}")


@register_kd_loss("kl")
def _kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(teacher_T || student_T): the T^2 keeps the gradient's scale independent of T (Hinton et
    al., 2015)."""
    return temperature**2 * soft_kl(student_logits, teacher_logits, temperature)


@register_kd_loss("mse")
def _mse(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """The logits' mean squared difference (T is not used)."""
    return logit_mse(student_logits, teacher_logits)


@register_kd_loss("kl-elementwise")
def _kl_elementwise(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """The exact objective of the teacher-student study this toolkit grew from, per example:

        nn.KLDivLoss()(log_softmax(s / T), softmax(t / T)) * (T * T * 2.0 * alpha) + cross_entropy(s, y) * (1 - alpha)

    KLDivLoss's default reduction averages over every element (batch x classes), not per example, so its
    soft term is 2 T^2 KL / C: 2/C of the usual T^2 KL. Kept as its own kind to reproduce that study to the
    letter; its batch mean equals the line above."""
    classes = student_logits.shape[1]
    return 2.0 * temperature**2 * soft_kl(student_logits, teacher_logits, temperature) / classes


def distillation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float,
    alpha: float,
    kind: str = "kl",
    label_smoothing: float = 0.0,
) -> Tensor:
    """alpha * soft + (1 - alpha) * CE, Tensor[n], the soft term the registered `kind` (KD_LOSSES): for
    "kl", T^2 * KL(teacher_T || student_T); for "mse", the logits' MSE; for "kl-elementwise", 2 T^2 KL / C.
    T and alpha have no defaults here: TrainConfig holds them, and a scored student uses its own.
    """
    check_kd_loss(kind)
    soft = KD_LOSSES[kind](student_logits, teacher_logits.detach(), temperature)
    return alpha * soft + (1.0 - alpha) * cross_entropy(student_logits, labels, label_smoothing)


@dataclass(frozen=True)
class CrossEntropy:
    """Per-example cross-entropy, Tensor[n] nats; the inputs are not used."""

    label_smoothing: float = 0.0

    def __call__(self, logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
        return cross_entropy(logits, labels, self.label_smoothing)

    def to(self, device: torch.device) -> "CrossEntropy":
        return self


@dataclass(frozen=True, eq=False)
class Distillation:
    """The distillation objective against `teacher`'s logits on the same inputs, Tensor[n].

    The teacher is put in eval mode here and runs without gradients (its BatchNorm uses running
    statistics);
    `autocast` is the context it runs under (training's mixed precision), its logits are used in float32.
    """

    teacher: nn.Module
    temperature: float
    alpha: float
    kind: str = "kl"
    label_smoothing: float = 0.0
    autocast: Callable[[], ContextManager] = field(default=contextlib.nullcontext, repr=False)

    def __post_init__(self) -> None:
        check_kd_loss(self.kind)
        if not self.temperature > 0 or not 0.0 <= self.alpha <= 1.0:
            raise TracinError(
                f"distillation needs temperature > 0 and alpha in [0, 1], got {self.temperature}, {self.alpha}"
            )
        self.teacher.eval()

    def __call__(self, logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
        with torch.no_grad(), self.autocast():
            teacher_logits = self.teacher(inputs).float()
        return distillation(
            logits, teacher_logits, labels, self.temperature, self.alpha, self.kind, self.label_smoothing
        )

    def to(self, device: torch.device) -> "Distillation":
        """A copy whose teacher is a frozen copy on `device` (the caller's teacher is left as it was)."""
        teacher = copy.deepcopy(self.teacher).to(device).eval().requires_grad_(False)
        return replace(self, teacher=teacher)


@dataclass(frozen=True, eq=False)
class LabelLoss:
    """A loss of the standard `(logits, labels) -> Tensor[n]` signature (any torch loss with
    reduction="none", a function), called as an Objective: the inputs are not used."""

    loss: Callable[[Tensor, Tensor], Tensor]

    def __call__(self, logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
        return self.loss(logits, labels)

    def to(self, device: torch.device) -> "LabelLoss":
        return replace(self, loss=self.loss.to(device)) if isinstance(self.loss, nn.Module) else self


@dataclass(frozen=True)
class PredictedCrossEntropy:
    """Cross-entropy on the model's own prediction (the argmax of its logits), Tensor[n] nats; the labels
    and inputs are not used. As a test-side loss it explains each test example with respect to the class
    the model predicts (quanda's explanations of the predicted class), not its true label."""

    def __call__(self, logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
        return cross_entropy(logits, logits.detach().argmax(dim=1))

    def to(self, device: torch.device) -> "PredictedCrossEntropy":
        return self


@dataclass(frozen=True, eq=False)
class TrainTest:
    """A pair of objectives for TracIn: `train` differentiates the train examples' losses, `test` the test
    examples'. TracIn's derivation (the change of a test loss from the steps taken on a train example) asks
    for the objective the steps were taken on on the train side (a distilled student's: Distillation
    against its teacher) and the loss of interest on the test side (cross-entropy on the test label).
    Self-influence and losses() use `train`."""

    train: Objective
    test: Objective


def as_objective(loss: object) -> Objective:
    """`loss` as TracIn calls it, `(logits, labels, inputs) -> Tensor[n]`: an Objective as it is, a loss of
    the standard `(logits, labels)` signature wrapped in LabelLoss. A torch loss that averages or sums over
    the batch is refused (TracIn needs each example's own loss: reduction="none")."""
    if not callable(loss):
        raise TracinError(
            f"the loss must be called as loss(logits, labels) or loss(logits, labels, inputs) -> Tensor[n], got {loss!r}"
        )
    reduction = getattr(loss, "reduction", "none")
    if reduction != "none":
        raise TracinError(
            f"{type(loss).__name__}(reduction={reduction!r}) gives one number per batch; TracIn needs one "
            f'per example: use {type(loss).__name__}(reduction="none")'
        )
    return loss if _positional_arguments(loss) >= 3 else LabelLoss(loss)


def _positional_arguments(function: Callable) -> int:
    """How many positional arguments `function` requires (3 for *args or where unknown): F.cross_entropy's
    optional `weight` must not receive the inputs."""
    target = function.forward if isinstance(function, nn.Module) else function
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return 3
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 3
    return sum(
        p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.default is inspect.Parameter.empty
        for p in parameters
    )
