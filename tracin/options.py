"""What each command was asked to do: frozen options dataclasses, validated in `__post_init__`, each field that
the command line sets declared with its help beside it (tracin.arguments); the parsers are generated from them
(tracin.cli.parsing). tracin-train's data and training settings are DataConfig's and TrainConfig's fields
(tracin.config), declared the same way. Kept apart from the code that carries the commands out, and light to
import (no torch), so that parsing a command line and answering --help never wait for torch. Adding an option:
a field here, and its use in the command's module (docs/extending.md).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from tracin.arguments import option
from tracin.config import (
    AUTO_MEMORY_SHARE,
    CONDITIONS,
    DATA_FOLDERS,
    DEVICES,
    EVAL_DATASETS,
    MAX_VALIDATION_SEEDS,
    MODES,
    PRECISIONS,
    ROLES,
    SCORE_LOSSES,
    SEED_LIMIT,
    TEST_LABELS,
    EngineConfig,
    ScoreConfig,
    default_data_root,
    parse_topk,
    split_model_name,
)
from tracin.errors import TracinError
from tracin.files import existing_folder, resolved, score_file_name, score_path
from tracin.variants import SCORE_VARIANTS

# --- option groups every command declares alike -----------------------------------------------------------


def run_folder(help: str = "the run folder (tracin-train's OUT_ROOT/RUN)") -> Any:
    return option(help=help, section="run")


def score_file(help: str, renamed: tuple[str, ...] = ()) -> Any:
    return option(None, help=help, section="run", metavar="FILE.h5", renamed=renamed, item=score_file_name)


def models(default: tuple[str, ...], help: str) -> Any:
    return option(default, help=help + " (ROLE, or ROLE.rN for replica N)", section="run", metavar="MODEL,...")


def device() -> Any:
    return option("auto", help="auto: CUDA when available", section="run", choices=DEVICES)


def moved_data_root(**how: Any) -> Any:  # round 12, B69 and round 16, P8: a mistyped or empty one was filled with data
    help, hint = "where the run's data set is, if not where it was trained", "give the folder the data set is in now"
    check = functools.partial(existing_folder, what="data root", hint=hint, holds=tuple(DATA_FOLDERS.values()))
    return option(None, help=help, item=check, **{"section": "run", **how})


def quiet(help: str = "no progress bars or progress lines") -> Any:
    return option(False, help=help, section="run")


def overwrite(help: str) -> Any:
    return option(False, help=help, section="run")


def allow_model() -> Any:
    return option(
        (),
        help="import this model factory, named by the run (tracin-train --model): code is never imported "
        "because a run folder or checkpoint names it (repeatable)",
        section="run",
        metavar="MODULE:FUNCTION",
        repeat=True,
    )


def check_models(option_name: str, names: tuple[str, ...]) -> None:
    """Every name a trained model's: a role, or ROLE.rN for replica N."""
    if not names:
        raise TracinError(f"{option_name} takes {', '.join(ROLES)} (or ROLE.rN for one replica); got nothing")
    for name in names:
        try:
            split_model_name(name)
        except TracinError:
            raise TracinError(
                f"{option_name} takes {', '.join(ROLES)}, or ROLE.rN for replica N (e.g. teacher.r1); {name!r} is neither"
            ) from None


def check_run_name(name: str, flag: str = "--run") -> str:
    """A run name (or the `flag` that names another folder under --out-root) is one plain folder name:
    --overwrite removes OUT_ROOT/NAME, so "", ".", "..", paths and separators (which would point it at other
    runs or at folders no run made) are refused."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name or "\0" in name:
        raise TracinError(
            f"{flag} must be a plain name (no path separators, not empty, '.' or '..'), got {name!r}; use --out-root for the folder"
        )
    return name


def _check(*checks: tuple[bool, str]) -> None:
    for holds, message in checks:
        if not holds:
            raise TracinError(message)


# --- tracin-train ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    """How tracin-train runs, as opposed to what it trains (TrainConfig) and on which data (DataConfig).
    command: the command line, recorded in run.json."""

    run: str = option(help="name of the run; its files go to OUT_ROOT/RUN/", section="run")
    out_root: str = option("checkpoints", help="folder holding the runs", section="run")
    models: Optional[tuple[str, ...]] = option(
        None,
        help="models to train, always in the order teacher, student, student_baseline",
        default_text="all three; with --teacher: student,student_baseline",
        section="run",
        choices=ROLES,
        metavar="MODEL,...",
    )
    teacher: Optional[str] = option(
        None,
        help="a teacher checkpoint (tracin-train's teacher/epoch_NNN.pt) for the students, instead of the run's "
        "own final teacher",
        section="run",
        metavar="PATH",
    )
    replicas: int = option(
        1,
        help="train every model N times: replica 0 as ROLE/, replica k as ROLE.rk/ with seed + k * 1000 (other "
        "initial weights and data order; same data and configuration), the noise floor tracin-score compares "
        "against (--resume with a larger N adds replicas)",
        section="run",
        metavar="N",
    )
    device: str = device()
    resume: bool = option(
        False,
        help="continue the run from its last state (finished models are skipped); refused if the configuration differs",
        section="run",
        exclusive="resume",
    )
    overwrite: bool = option(
        False, help="delete an existing run of this name and start over", section="run", exclusive="resume"
    )
    quiet: bool = quiet("no progress bars and no per-epoch lines")
    command: tuple[str, ...] = ()

    def __post_init__(self):
        check_run_name(self.run)
        if self.models is None:
            object.__setattr__(self, "models", ("student", "student_baseline") if self.teacher else ROLES)
        _check((self.replicas >= 1, f"--replicas must be at least 1, got {self.replicas}"))


# --- tracin-score ------------------------------------------------------------------------------------------

DEFAULT_VARIANTS = ("train-normalised",)  # measured: docs/results.md, "Defaults chosen by measurement"


def memory_bytes(value: str) -> Optional[int]:
    """--max-memory-gb in bytes; None for auto."""
    if value == "auto":
        return None
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = math.nan
    if not 0 < gigabytes * 2**30 < math.inf:  # round 29, Q12: 1e300 GB overflowed; round 30, O3: said so
        below = f" below {math.nextafter(math.inf, 0) / 2**30:.2g}" * (gigabytes > 0)
        raise TracinError(f"--max-memory-gb must be a positive number{below} or auto, got {value}")
    return max(1, int(gigabytes * 2**30))


def parse_group(spec: str) -> tuple[str, tuple[str, ...]]:
    """--group NAME=PREFIX[,PREFIX...] -> (name, prefixes)."""
    name, separator, prefixes = spec.partition("=")
    modules = tuple(p.strip() for p in prefixes.split(",") if p.strip())
    if not separator or not modules:
        raise TracinError(f"--group takes NAME=PREFIX[,PREFIX...] (e.g. early=conv1,bn1,layer1), got {spec!r}")
    return name.strip(), modules


def test_index(text: str) -> int:
    """One test index of --examples 12,40,7."""
    if not text.isdigit():
        raise TracinError(f"--examples takes comma-separated test indices (e.g. 12,40,7), got {text!r}")
    return int(text)


SCORING, ENGINE = "what is scored", "engine (the same scores either way)"


@dataclass(frozen=True)
class ScoreOptions:
    """What `tracin-score` was asked to do (see `tracin-score --help`). `score` and `engine` are the
    library's configurations the options describe (tracin.config)."""

    run: str = run_folder("the run folder written by tracin-train, e.g. checkpoints/demo")
    models: tuple[str, ...] = models(
        ("teacher", "student"), "models to score and compare, each with its trained replicas"
    )
    replicas: Optional[int] = option(
        None,
        help="score the first N replicas of each model",
        default_text="every replica tracin-train trained",
        section="run",
        metavar="N",
    )
    scores: Optional[str] = score_file("the HDF5 file the scores go to", renamed=("--out",))
    mode: str = option("exact", help="exact | projected | last-layer", section=SCORING, choices=MODES)
    proj_dim: Optional[int] = option(
        None, help="per-layer projection size in projected mode (e.g. 1024)", section=SCORING
    )
    projector: str = option(
        "gaussian",
        help="random projection of projected mode, registered in tracin.engine.projection",
        section=SCORING,
        registry=("tracin.engine.projection", "PROJECTORS"),
        metavar="NAME",
    )
    seed: int = option(0, help="projection and sampling seed", section=SCORING)
    layers: tuple[str, ...] = option(
        (), help="module-name prefixes to use", default_text="every parameter", section=SCORING, metavar="PREFIX,..."
    )
    loss: str = option(
        "ce",
        help="ce: cross-entropy on both sides; kd-train: a distilled student's train examples by the objective its "
        "steps were taken on (its recorded teacher, temperature, alpha, kd loss), its test examples by "
        "cross-entropy on the test label (TracIn's derivation); kd: the distillation objective on both sides",
        section=SCORING,
        choices=SCORE_LOSSES,
    )
    test_label: str = option(
        "label",
        help="the test side's cross-entropy on the test example's label, or on the class the model predicts "
        "(explanations of the prediction, as the field's shortcut check asks)",
        section=SCORING,
        choices=TEST_LABELS,
    )
    precision: str = option(
        "float32",
        help="inner products in float32 (exact), tf32 (CUDA) or bf16 (features kept in bfloat16, float32 "
        "accumulation: ~1e-3 relative to the largest score, half the memory)",
        section=SCORING,
        choices=PRECISIONS,
    )
    variants: tuple[str, ...] = option(
        DEFAULT_VARIANTS,
        help=f"score variants from {', '.join(SCORE_VARIANTS)}, formed in one pass; the first is the file's "
        "`scores`. raw is TracInCP as published; the default passes the quality checks (same-class proponents, "
        "no dominant outlier) and its self-influence finds flipped labels better than raw's (docs/results.md: "
        "Defaults chosen by measurement). VARIANT@GROUP scores one layer group's parameters alone (e.g. "
        "cosine@layer4), VARIANT@* each group",
        section=SCORING,
        metavar="VARIANT,...",
    )
    groups: tuple[tuple[str, tuple[str, ...]], ...] = option(
        (),
        flag="--group",
        help="a layer group of your own, by module-name prefixes (repeat for more; modules in none form 'other')",
        default_text="the ResNet stages stem, layer1, ..., head",
        section=SCORING,
        metavar="NAME=PREFIX[,PREFIX...]",
        repeat=True,
        item=parse_group,
    )
    checkpoints: str = option("all", help="all | last | comma-separated epochs", section=SCORING)
    train_subset: Optional[int] = option(
        None, help="score a stratified subset of the run's train examples", section=SCORING, metavar="N"
    )
    test_subset: Optional[int] = option(
        None, help="score a stratified subset of the run's test examples", section=SCORING, metavar="N"
    )
    topk: str = option("100,500,1000", help="comma-separated k for top-k tables and overlap@k", section=SCORING)
    cap_topk: bool = option(
        False,
        help="lower a --topk k larger than the train or test set to its size instead of refusing it",
        section=SCORING,
    )
    per_checkpoint: bool = option(
        False, help="also keep each checkpoint's scores, for the matched-epoch comparison", section=SCORING
    )
    corr_rows: int = option(1000, help="rows sampled for rank correlations", section=SCORING)
    plots: bool = option(
        False, help="also write the figures (PNG) and tables (report.md) to plots/ beside the HDF5 file", section="run"
    )
    examples: tuple[int, ...] = option(
        (),
        help="test indices (of the data set) the proponent grids of --plots show",
        default_text="where teacher and student disagree most, and the most confident errors",
        section="run",
        metavar="I,J,...",
        item=test_index,
    )
    data_root: Optional[str] = moved_data_root()
    device: str = device()
    batch_size: int = option(128, help="examples per forward/backward", section=ENGINE)
    max_memory_gb: str = option(
        "auto",
        help="memory for kept gradients and score blocks; sets the chunking. auto: "
        f"{AUTO_MEMORY_SHARE * 100:.0f}% of the memory free on the device once the model is loaded (CPU: "
        "available RAM, shared among torchrun's processes); the plan is printed",
        section=ENGINE,
        metavar="GB|auto",
    )
    cuda_graphs: bool = option(
        True,
        help="replay full train batches as captured CUDA graphs (--no-cuda-graphs: eagerly, for a model that "
        "cannot be captured)",
        section=ENGINE,
    )
    overwrite: bool = overwrite("replace a finished or mismatched result file")
    quiet: bool = quiet()
    allow_model: tuple[str, ...] = allow_model()
    command: str = ""

    @property
    def score(self) -> ScoreConfig:
        return ScoreConfig(
            mode=self.mode,
            layers=self.layers,
            proj_dim=self.proj_dim,
            projector=self.projector,
            seed=self.seed,
            precision=self.precision,
            variants=self.variants,
            groups=self.groups,
        )

    @property
    def engine(self) -> EngineConfig:
        return EngineConfig(
            batch_size=self.batch_size, max_memory=memory_bytes(self.max_memory_gb), cuda_graphs=self.cuda_graphs
        )

    def __post_init__(self) -> None:
        check_models("--models", self.models)
        _check(
            (self.replicas is None or self.replicas >= 1, f"--replicas must be at least 1, got {self.replicas}"),
            (self.loss in SCORE_LOSSES, f"--loss must be one of {', '.join(SCORE_LOSSES)}, got {self.loss!r}"),
            (self.corr_rows >= 1, f"--corr-rows must be at least 1, got {self.corr_rows}"),
            (
                self.train_subset is None or self.train_subset >= 1,
                f"--train-subset must be at least 1, got {self.train_subset}",
            ),
            (
                self.test_subset is None or self.test_subset >= 1,
                f"--test-subset must be at least 1, got {self.test_subset}",
            ),
            (
                self.test_label in TEST_LABELS,
                f"--test-label must be one of {', '.join(TEST_LABELS)}, got {self.test_label!r}",
            ),
            (not self.examples or self.plots, "--examples chooses the proponent grids of --plots; give --plots too"),
            (
                not (self.test_label == "prediction" and self.loss == "kd"),
                "--test-label prediction needs a cross-entropy test side: use --loss ce or kd-train, not kd",
            ),
        )
        parse_topk(self.topk)  # the set's size is checked once the data are loaded
        _ = (self.score, self.engine)  # each checks its own fields: a bad value is one TracinError


# --- tracin-validate ---------------------------------------------------------------------------------------

RETRAINING = "retraining"


@dataclass(frozen=True)
class ValidateOptions:
    """What `tracin-validate` was asked to do (see `tracin-validate --help`)."""

    run: str = run_folder("the run folder (tracin-train's), scored with tracin-score")
    scores: Optional[str] = score_file("its score file (default: RUN/tracin.h5); the results go into it (/validation)")
    models: tuple[str, ...] = models(("student",), "models to retrain")
    variants: tuple[str, ...] = option(
        (),
        help="score variants (layer groups too, e.g. train-normalised@head) whose rankings the own, teacher, "
        "baseline and opponents conditions remove, each in its own retrainings",
        default_text="the file's first",
        section=RETRAINING,
        metavar="VARIANT,...",
    )
    test_examples: int = option(5, help="test examples sampled for leave-top-k-out (0: none)", section=RETRAINING)
    k: int = option(50, help="train examples removed per test example", section=RETRAINING)
    conditions: tuple[str, ...] = option(
        CONDITIONS, help="removals: own, teacher, baseline, random, opponents (those that apply)", section=RETRAINING
    )
    subsets: int = option(20, help="LDS: models retrained on random subsets (0: no LDS)", section=RETRAINING)
    fraction: float = option(0.5, help="LDS: the share of the train examples each subset keeps", section=RETRAINING)
    seeds: int = option(1, help="leave-top-k-out: retraining seeds (data order) per condition", section=RETRAINING)
    epochs: Optional[int] = option(
        None, help="retrain for this many epochs", default_text="the run's; its schedule shortened", section=RETRAINING
    )
    seed: int = option(0, help="seed of the samples and subsets", section=RETRAINING)
    device: str = device()
    data_root: Optional[str] = moved_data_root()
    overwrite: bool = overwrite("replace a validation made with other settings")
    quiet: bool = quiet("no progress bars")
    allow_model: tuple[str, ...] = allow_model()

    def __post_init__(self) -> None:
        _check((bool(self.models), "--models names no model to retrain (e.g. student, or teacher,student.r1)"))
        for name in self.models:
            split_model_name(name)  # a TracinError naming the valid names
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        _check(
            (not unknown, f"--conditions takes {', '.join(CONDITIONS)}; got {', '.join(unknown)}"),
            (self.test_examples >= 0, f"--test-examples must be 0 or more, got {self.test_examples}"),
            (self.k >= 1, f"--k must be at least 1, got {self.k}"),
            (0 <= self.seed < SEED_LIMIT, f"--seed must be in 0..{SEED_LIMIT - 1}, got {self.seed}"),
            (self.subsets >= 0, f"--subsets must be 0 or more, got {self.subsets}"),
            (self.subsets == 0 or self.subsets >= 3, f"--subsets: the LDS needs at least 3, got {self.subsets}"),
            (0.0 < self.fraction < 1.0, f"--fraction must be in (0, 1), got {self.fraction}"),
            (
                1 <= self.seeds <= MAX_VALIDATION_SEEDS,
                f"--seeds must be between 1 and {MAX_VALIDATION_SEEDS}, got {self.seeds}",
            ),
            (self.epochs is None or self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
        )
        # an option the plan does not read would still enter it, and block a resume without it (red-team round 7)
        defaults = {field.name: field.default for field in fields(ValidateOptions)}
        for off, flag, names in (
            (self.subsets == 0, "--subsets 0", ("fraction",)),
            (self.test_examples == 0, "--test-examples 0", ("k", "seeds", "conditions")),
        ):
            for name in names:
                unread = off and getattr(self, name) != defaults[name]
                _check((not unread, f"--{name} is not read with {flag}: leave it out"))


# --- tracin-report -----------------------------------------------------------------------------------------

CHECKS = "checks"


@dataclass(frozen=True)
class ReportOptions:
    """What `tracin-report` was asked to do (see `tracin-report --help`)."""

    run: str = run_folder("the run folder (tracin-train's), scored with tracin-score")
    scores: Optional[str] = score_file("its score file (default: RUN/tracin.h5); the report goes into it")
    models: tuple[str, ...] = models(ROLES, "models reported, those of them the file holds")
    randomization_train: int = option(500, help="model randomization: train examples sampled", section=CHECKS)
    randomization_test: int = option(40, help="model randomization: test examples sampled", section=CHECKS)
    seed: int = option(0, help="seed of the samples, random weights and bootstrap", section=CHECKS)
    groups: bool = option(
        False, help="print the layer groups' variants too (the files always hold them)", section=CHECKS
    )
    device: str = device()
    data_root: Optional[str] = moved_data_root()
    quiet: bool = quiet("no progress lines")
    allow_model: tuple[str, ...] = allow_model()

    def __post_init__(self) -> None:
        for name in self.models:
            split_model_name(name)  # a TracinError naming the valid names
        _check(
            (
                self.randomization_train >= 3 and self.randomization_test >= 2,
                f"--randomization-train must be at least 3 and --randomization-test at least 2, got "
                f"{self.randomization_train} and {self.randomization_test}",
            ),
            (0 <= self.seed < SEED_LIMIT, f"--seed must be in 0..{SEED_LIMIT - 1}, got {self.seed}"),
        )


# --- tracin-eval, tracin-sweep, tracin-explore, tracin-notebooks ---------------------------------------------


@dataclass(frozen=True)
class EvalOptions:
    """What `tracin-eval` was asked to do (see `tracin-eval --help`)."""

    run: str = run_folder("the run folder (tracin-train's)")
    dataset: str = option(
        help="the data set whose test split is read", flag="--eval-dataset", section="data", choices=EVAL_DATASETS
    )
    data_root: str = option(
        "data",
        help="where that data set is",
        default_text="$TRACIN_DATA, else data",
        default_from=default_data_root,
        section="data",
    )
    class_map: Optional[str] = option(
        None,
        help='{"its class": "run class", ...}; default: the classes both name alike, case, spaces, - and _ aside '
        "(others are left out)",
        section="data",
        metavar="FILE.json",
    )
    checksum: bool = option(
        True,
        help="verify torchvision's checksums (--no-checksum: CIFAR-format files not the published ones)",
        section="data",
    )
    device: str = device()
    allow_model: tuple[str, ...] = allow_model()


@dataclass(frozen=True)
class SweepOptions:
    """What `tracin-sweep` was asked to do; every other option is tracin-train's, passed on to each run."""

    sweep: str = option(help="name of the sweep: its runs and results go to OUT_ROOT/SWEEP/", section="run")
    vary: tuple[str, ...] = option(
        (),
        help="a setting and its values (repeatable: the grid of all combinations)",
        section="run",
        metavar="KEY=V1,V2,...",
        repeat=True,
    )
    out_root: str = option("checkpoints", help="folder holding the sweep", section="run")
    score: Optional[str] = option(
        None,
        help="score every run with tracin-score (these options, quoted, e.g. '--mode projected --topk 10,100'; "
        "alone: its defaults) and add each student's overlap with its teacher's proponents, with its CI, as columns",
        section="run",
        metavar="'TRACIN-SCORE OPTIONS'",
        optional_value="",
    )


@dataclass(frozen=True)
class ExploreOptions:
    """What tracin-explore writes: the page `out` (default: explore.html beside the score file), `depth`
    proponents and opponents per model and test example (at most the file's top-k), the models shown (None:
    every model in the file), the data inline up to `max_inline_mb` MB (else in the folder beside the page).
    `run` names the score file RUN/tracin.h5 where `scores` is not given."""

    run: Optional[Path] = option(None, help="the run folder (tracin-train's OUT_ROOT/RUN)", item=Path, section="run")
    scores: Optional[Path] = option(
        None, help="the score file", default_text="RUN/tracin.h5", item=score_path, section="run", metavar="FILE.h5"
    )
    out: Optional[Path] = option(
        None,
        help="the page (default: explore.html beside the score file, STEM.explore.html for another name than "
        "tracin.h5); data too large to hold inline go to a folder beside it, OUT_STEM_files/",
        item=Path,
        section="page",
    )
    depth: Optional[int] = option(
        None,
        help="proponents and opponents shown per model",
        default_text="10, or the file's largest --topk where it is smaller",
        section="page",
    )
    models: Optional[tuple[str, ...]] = option(
        None, help="models to include", default_text="every model in the file", section="run", metavar="MODEL,..."
    )
    data_root: Optional[str] = moved_data_root()
    max_inline_mb: float = option(
        25.0, help="data up to this size go inside the page, more to the folder beside it", section="page"
    )
    export: Optional[Path] = option(
        None,
        help="also write the top-DEPTH lists and per-test overlaps as DIR/topk.csv and DIR/overlap.csv (and "
        ".parquet where pyarrow is installed)",
        item=Path,
        section="page",
        metavar="DIR",
    )

    def __post_init__(self) -> None:
        _check(
            (self.scores is not None or self.run is not None, "tracin-explore needs --run RUN or --scores FILE"),
            (
                math.isfinite(self.max_inline_mb) and self.max_inline_mb >= 0,
                f"--max-inline-mb must be a number, 0 or more, got {self.max_inline_mb}",
            ),
        )
        if self.scores is None:
            object.__setattr__(self, "scores", Path(self.run) / "tracin.h5")


@dataclass(frozen=True)
class NotebooksOptions:
    """What `tracin-notebooks` was asked to do: every notebook that applies, to HTML in out_dir."""

    scores: str = option(
        help="the HDF5 file tracin-score wrote", positional=True, item=lambda v: resolved(score_path(v))
    )
    out_dir: str = option(help="folder for the HTML files", positional=True)
    data_root: Optional[str] = moved_data_root(section=None, positional=True)
