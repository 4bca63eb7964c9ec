"""What each command was asked to do: frozen options dataclasses, validated in `__post_init__`.

Kept apart from the code that carries the commands out, and light to import (no torch), so that parsing a
command line and answering --help never wait for torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from tracin.config import (
    CONDITIONS,
    MAX_VALIDATION_SEEDS,
    ROLES,
    SCORE_LOSSES,
    TEST_LABELS,
    EngineConfig,
    ScoreConfig,
    split_model_name,
)
from tracin.errors import TracinError


def check_run_name(name: str) -> str:
    """A run name is one plain folder name: --overwrite removes OUT_ROOT/NAME, so "", ".", "..", paths
    and separators (which would point it at other runs or at folders no run made) are refused."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name or "\0" in name:
        raise TracinError(
            f"--run must be a plain name (no path separators, not empty, '.' or '..'), got {name!r}; use --out-root for the folder"
        )
    return name


@dataclass(frozen=True)
class RunOptions:
    """How to run, as opposed to what to train (TrainConfig) and on which data (DataConfig).

    teacher: path of an outside teacher checkpoint for the students (None: the run's own final teacher).
    replicas: how many times each model is trained, with seeds seed + N * REPLICA_SEED_STRIDE (N = 0, 1,
    ...), on the same data with the same configuration: the noise floor of every comparison.
    command: the command line, recorded in run.json.
    """

    run: str
    out_root: str = "checkpoints"
    models: tuple[str, ...] = ROLES
    teacher: Optional[str] = None
    replicas: int = 1
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    command: tuple[str, ...] = ()

    def __post_init__(self):
        check_run_name(self.run)
        if self.replicas < 1:
            raise TracinError(f"--replicas must be at least 1, got {self.replicas}")


@dataclass(frozen=True)
class ScoreOptions:
    """What `tracin-score` was asked to do (see `tracin-score --help`)."""

    run: str
    models: tuple[str, ...] = ("teacher", "student")
    replicas: Optional[int] = None
    score: ScoreConfig = field(default_factory=ScoreConfig)
    checkpoints: str = "all"
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None
    topk: str = "100,500,1000"
    cap_topk: bool = False
    out: Optional[str] = None
    device: str = "auto"
    engine: EngineConfig = field(default_factory=EngineConfig)
    per_checkpoint: bool = False
    overwrite: bool = False
    quiet: bool = False
    loss: str = "ce"
    test_label: str = "label"  # the test side's cross-entropy: on the test label, or on the model's prediction
    data_root: Optional[str] = None
    corr_rows: int = 1000
    plots: bool = False
    examples: tuple[int, ...] = ()  # test indices the --plots proponent grids show (default: chosen by rule)
    command: str = ""

    def __post_init__(self) -> None:
        if not self.models:
            raise TracinError(f"--models takes {', '.join(ROLES)} (or ROLE.rN for one replica); got nothing")
        for name in self.models:
            try:
                split_model_name(name)
            except TracinError:
                raise TracinError(
                    f"--models takes {', '.join(ROLES)}, or ROLE.rN for replica N (e.g. teacher.r1); "
                    f"{name!r} is neither"
                ) from None
        if self.replicas is not None and self.replicas < 1:
            raise TracinError(f"--replicas must be at least 1, got {self.replicas}")
        if self.loss not in SCORE_LOSSES:
            raise TracinError(f"--loss must be one of {', '.join(SCORE_LOSSES)}, got {self.loss!r}")
        if self.corr_rows < 1:
            raise TracinError(f"--corr-rows must be at least 1, got {self.corr_rows}")
        if self.test_label not in TEST_LABELS:
            raise TracinError(f"--test-label must be one of {', '.join(TEST_LABELS)}, got {self.test_label!r}")
        if self.test_label == "prediction" and self.loss == "kd":
            raise TracinError(
                "--test-label prediction needs a cross-entropy test side: use --loss ce or kd-train, not kd"
            )


@dataclass(frozen=True)
class ValidateOptions:
    """What `tracin-validate` was asked to do (see `tracin-validate --help`)."""

    run: str
    scores: Optional[str] = None
    models: tuple[str, ...] = ("student",)
    variants: tuple[str, ...] = ()
    test_examples: int = 5
    k: int = 50
    conditions: tuple[str, ...] = CONDITIONS
    subsets: int = 20
    fraction: float = 0.5
    seeds: int = 1
    epochs: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    data_root: Optional[str] = None
    overwrite: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        if not self.models:
            raise TracinError("--models names no model to retrain (e.g. student, or teacher,student.r1)")
        for name in self.models:
            split_model_name(name)  # a TracinError naming the valid names
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise TracinError(f"--conditions takes {', '.join(CONDITIONS)}; got {', '.join(unknown)}")
        checks = (
            (self.test_examples >= 0, f"--test-examples must be 0 or more, got {self.test_examples}"),
            (self.k >= 1, f"--k must be at least 1, got {self.k}"),
            (self.subsets >= 0, f"--subsets must be 0 or more, got {self.subsets}"),
            (
                self.subsets == 0 or self.subsets >= 3,
                f"--subsets: the LDS needs at least 3 subsets, got {self.subsets}",
            ),
            (0.0 < self.fraction < 1.0, f"--fraction must be in (0, 1), got {self.fraction}"),
            (
                1 <= self.seeds <= MAX_VALIDATION_SEEDS,
                f"--seeds must be between 1 and {MAX_VALIDATION_SEEDS}, got {self.seeds}",
            ),
            (self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
        )
        for holds, message in checks:
            if not holds:
                raise TracinError(message)


@dataclass(frozen=True)
class ReportOptions:
    """What `tracin-report` was asked to do (see `tracin-report --help`)."""

    run: str
    scores: Optional[str] = None
    models: tuple[str, ...] = ROLES
    randomization_train: int = 500
    randomization_test: int = 40
    seed: int = 0
    device: str = "auto"
    data_root: Optional[str] = None
    groups: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        for name in self.models:
            split_model_name(name)  # a TracinError naming the valid names
        if self.randomization_train < 3 or self.randomization_test < 2:
            raise TracinError(
                f"--randomization-train must be at least 3 and --randomization-test at least 2, got "
                f"{self.randomization_train} and {self.randomization_test}"
            )


@dataclass(frozen=True)
class EvalOptions:
    """What `tracin-eval` was asked to do (see `tracin-eval --help`)."""

    run: str
    dataset: str
    data_root: str = "data"
    class_map: Optional[str] = None  # a JSON file {"their class": "run class", ...}
    checksum: bool = True
    device: str = "auto"
