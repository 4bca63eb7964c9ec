"""Command-line front ends. A `TracinError` (a mistake the user can fix) ends a command with one line on
stderr and exit code 2; so does a usage error. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import math
import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

from tracin.config import (
    AUTO_MEMORY_SHARE,
    COARSE_LABELS,
    DATASETS,
    DEVICES,
    DISTILL,
    EVAL_DATASETS,
    MODES,
    OPTIMIZERS,
    PRECISIONS,
    ROLES,
    SCHEDULES,
    SCORE_LOSSES,
    SHORTCUT_MODES,
    STUDENT_INIT,
    SWEEP_KEYS,
    TEST_LABELS,
    DataConfig,
    EngineConfig,
    ScoreConfig,
    TrainConfig,
    default_data_root,
)
from tracin.errors import TracinError
from tracin.files import disk_full
from tracin.options import EvalOptions, ReportOptions, RunOptions, ScoreOptions, ValidateOptions, check_run_name
from tracin.variants import SCORE_VARIANTS
from tracin.version import __version__

# Only light modules above: every parser is built, and --help answered, without importing torch. The code that
# carries a command out is imported inside its function.

TRAIN = TrainConfig()
DATA = DataConfig()


def _defaults(options: type) -> SimpleNamespace:
    """The defaults of an options dataclass's fields, read without constructing (and so validating) one."""
    return SimpleNamespace(
        **{f.name: f.default for f in dataclasses.fields(options) if f.default is not dataclasses.MISSING}
    )


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit code 2, like every other user error.
    Options are never abbreviated (`--overw` is not `--overwrite`), and every command has --version."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Registered:
    """An option's type that accepts a name of a registry, looked up only when an argument is checked (the
    registries need torch, which --help does not import)."""

    def __init__(self, module: str, registry: str):
        self.module, self.registry = module, registry
        self.__name__ = registry  # argparse names the type in its error

    def __call__(self, name: str) -> str:
        import importlib

        names = sorted(getattr(importlib.import_module(self.module), self.registry))
        if name not in names:
            raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {', '.join(names)})")
        return name


def _arguments(argv: Optional[Sequence[str]]) -> list[str]:
    """The command's arguments. Under `torchrun ... tracin-train -- --run NAME` they follow a `--` that
    torchrun passes on: its own parser would take a bare --run for an abbreviation of its --run-path."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return argv[1:] if argv[:1] == ["--"] else argv


# Faults of the machine a user fixes (a full disk, a read-only or foreign folder): one line, never a traceback.
USER_FIXABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _fail(prog: str, message: object) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def _disk_fault(error: Exception) -> Optional[str]:
    """The fault of a full, read-only or foreign disk in one line, or None for anything else. h5py and
    torch.save report a full disk without an errno, in their message."""
    number = getattr(error, "errno", None)
    if number in USER_FIXABLE_ERRNOS:
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        return f"{os.strerror(number)}{where}"
    text = str(error)
    for words, number in (("No space left on device", errno.ENOSPC), ("Disk quota exceeded", errno.EDQUOT)):
        if words in text:
            return os.strerror(number)
    return None


def _exit_keeping_hdf5_files(code: int) -> int:
    """After a full disk, an HDF5 file open for writing is left as a kill would leave it: closing it would
    flush half-written metadata over its last consistent state (and h5py can crash doing so)."""
    if "h5py" in sys.modules:
        from tracin.results.store import hdf5_open_for_writing

        if hdf5_open_for_writing():
            _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def _full_disk_inside_h5py(stop: Callable[[str], int]):
    """h5py meets a full disk while it closes an object, where nothing can raise (Cython prints the error
    through sys.excepthook, then passes it to sys.unraisablehook): the command stops there with
    stop(reason)'s one line, instead of printing a traceback and going on."""

    def unraisable(report) -> None:
        if not disk_full(report.exc_value) or "h5py" not in repr(report.object):
            return previous_hook(report)
        _exit_now(stop(_disk_fault(report.exc_value)))

    def excepthook(kind, error, trace) -> None:
        if not disk_full(error):
            previous_excepthook(kind, error, trace)

    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    previous_excepthook, sys.excepthook = sys.excepthook, excepthook
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = previous_hook, previous_excepthook


def run_command(prog: str, work: Callable[[], object], how_to_continue: str) -> int:
    """Exit code of a command: 0 done, 2 a user mistake or a full/read-only disk (one line), 130
    interrupted (saying how to go on). Anything else is a bug and keeps its traceback."""

    def disk_fault(reason: str) -> int:
        return _exit_keeping_hdf5_files(_fail(prog, f"{reason}; finished work is kept: fix it and {how_to_continue}"))

    try:
        with _full_disk_inside_h5py(disk_fault):
            work()
    except TracinError as error:
        return _fail(prog, error)
    except (OSError, RuntimeError, ValueError) as error:  # h5py reports a full disk as any of these
        reason = _disk_fault(error)
        if reason is None:
            raise
        return disk_fault(reason)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {how_to_continue}", file=sys.stderr)
        return 130
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--run", required=True, help="name of the run; its files go to OUT_ROOT/RUN/")
    group.add_argument("--out-root", default="checkpoints", help="folder holding the runs (default: %(default)s)")
    group.add_argument(
        "--models",
        nargs="+",
        choices=ROLES,
        default=None,
        help="models to train, always in the order teacher, student, student_baseline "
        "(default: all three; with --teacher: student student_baseline)",
    )
    group.add_argument(
        "--teacher",
        metavar="PATH",
        help="a teacher checkpoint (tracin-train's teacher/epoch_NNN.pt) for the students, instead of the "
        "run's own final teacher",
    )
    group.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="train every model N times: replica 0 as ROLE/, replica k as ROLE.rk/ with seed + k * 1000 "
        "(other initial weights and data order; same data and configuration), the noise floor tracin-score "
        "compares against (default: %(default)s; --resume with a larger N adds replicas)",
    )
    group.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available (default: auto)")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its last state (finished models are skipped); refused if the configuration differs",
    )
    exclusive.add_argument(
        "--overwrite", action="store_true", help="delete an existing run of this name and start over"
    )
    group.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch lines")


def _add_allow_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-model",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="import this model factory, named by the run (tracin-train --model): code is never imported "
        "because a run folder or checkpoint names it (repeatable)",
    )


def _allowing(factories: Sequence[str], work: Callable[[], object]) -> Callable[[], object]:
    """`work`, with the model factories the user named on the command line allowed to be imported first
    (a bad name is then a one-line error too)."""

    def allowed_work() -> object:
        from tracin.training.models import allow_imports

        allow_imports(factories)
        return work()

    return allowed_work


def _config_option(group, flag: str, help: str, defaults=TRAIN, field: Optional[str] = None, **kwargs) -> None:
    """An option whose default and type come from a configuration field, named like the flag unless
    `field` says otherwise (--batch-size: TrainConfig.batch_size)."""
    default = getattr(defaults, field or flag[2:].replace("-", "_"))
    if "choices" not in kwargs and "type" not in kwargs:
        kwargs["type"] = type(default)
    group.add_argument(flag, default=default, help=f"{help} (default: %(default)s)", **kwargs)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    _config_option(group, "--dataset", "data set", DATA, choices=DATASETS)
    group.add_argument(
        "--data-root",
        default=None,
        help=f"folder of the torchvision data sets (default: $TRACIN_DATA, else data; now {default_data_root()})",
    )
    group.add_argument(
        "--no-checksum",
        action="store_true",
        help="do not verify torchvision's checksums (CIFAR-format files that are not the published ones)",
    )
    group.add_argument("--train-subset", type=int, help="train on a class-stratified subset of this many examples")
    group.add_argument("--test-subset", type=int, help="evaluate on a class-stratified subset of this many examples")
    noise = "fraction of training labels flipped to another class, exactly round(p * n)"
    _config_option(group, "--label-noise", noise, DATA)
    _config_option(group, "--data-seed", "seed of subsets, label noise and the stamped examples", DATA, field="seed")
    merges = "; ".join(f"{dataset}: {', '.join(names)}" for dataset, names in COARSE_LABELS.items())
    group.add_argument(
        "--coarse-labels",
        metavar="MERGE",
        choices=sorted({n for names in COARSE_LABELS.values() for n in names}),
        help=f"train on merged classes ({merges}; tracin.training.data.CLASS_MERGES); the data set's own "
        "labels are kept for the identical-subclass check",
    )
    group.add_argument(
        "--shortcut-class",
        type=int,
        metavar="C",
        help="plant a shortcut: stamp a white corner square on a fraction of the training images of class C "
        "(and on half of every class's test images); the stamped examples are recorded in the run",
    )
    _config_option(group, "--shortcut-fraction", "fraction of class C's training images stamped", DATA)
    _config_option(group, "--shortcut-patch", "side of the stamped square in pixels", DATA)
    _config_option(
        group,
        "--shortcut-mode",
        "class: every model trains on the stamped class; inherit: the known-positive control of distillation, replica "
        "r's teacher learns the stamp on class (C + r) mod classes and every student trains on images stamped on that "
        "fraction of every class with their true labels, so only the teacher's soft targets carry it",
        DATA,
        choices=SHORTCUT_MODES,
    )


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    _config_option(group, "--epochs", "epochs per model")
    _config_option(group, "--batch-size", "global batch size, split among processes under torchrun")
    _config_option(group, "--lr", "peak learning rate")
    schedule = "OneCycleLR, or linear warm-up then cosine or constant; stepped every optimizer step"
    _config_option(group, "--schedule", schedule, choices=SCHEDULES)
    _config_option(group, "--optimizer", "SGD, or Adam / AdamW with betas (momentum, 0.999)", choices=OPTIMIZERS)
    _config_option(group, "--momentum", "SGD momentum; Adam's first beta")
    _config_option(group, "--weight-decay", "L2 weight decay (decoupled for adamw)")
    group.add_argument(
        "--nesterov",
        action=argparse.BooleanOptionalAction,
        default=TRAIN.nesterov,
        help="Nesterov momentum for SGD (default: %(default)s)",
    )
    _config_option(group, "--warmup-epochs", "epochs of rising learning rate")
    _config_option(group, "--label-smoothing", "cross-entropy label smoothing")
    _config_option(group, "--save-every", "save a checkpoint every N epochs, and at the end")
    _config_option(group, "--seed", "seed of initial weights, data order and augmentation")
    group.add_argument("--no-augment", action="store_true", help="train without random crops and flips")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models and distillation")
    _config_option(
        group,
        "--arch",
        "architecture of teacher and students, registered in tracin.training.models",
        type=_Registered("tracin.training.models", "MODELS"),
        metavar="NAME",
    )
    group.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="the teacher from your own factory, called as FUNCTION(num_classes=..., in_channels=...) (importable "
        "from PYTHONPATH); needs --student-model; scoring it later needs --allow-model",
    )
    group.add_argument(
        "--student-model", metavar="MODULE:FUNCTION", help="the students from your own factory (as --model)"
    )
    _config_option(group, "--width", "channels of the first stage; 64 is the standard ResNet")
    _config_option(group, "--student-stages", "stages of the students, 1-4")
    _config_option(
        group,
        "--student-init",
        "students start from scratch or from the teacher's stem and stages",
        choices=STUDENT_INIT,
    )
    _config_option(
        group,
        "--distill",
        "the student learns from the teacher, from its own previous checkpoint (self; "
        "cross-entropy until its first save), or from labels only (none)",
        choices=DISTILL,
    )
    _config_option(
        group,
        "--kd-loss",
        "soft-target loss, a kind registered in tracin.training.losses: kl (T^2 KL at temperature T), mse (logit "
        "MSE), kl-elementwise (nn.KLDivLoss()'s mean over batch x classes, as one study wrote it: 2 T^2 KL / C)",
        type=_Registered("tracin.training.losses", "KD_LOSSES"),
    )
    _config_option(group, "--temperature", "distillation temperature T")
    _config_option(group, "--alpha", "weight of the soft-target term: alpha * T^2 * KL + (1 - alpha) * CE")


def build_train_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tracin-train",
        description="Train a teacher, a distilled student and a baseline student, with checkpoints for TracIn.",
        epilog="Several processes (DistributedDataParallel): torchrun --nproc_per_node=N $(which tracin-train) "
        "-- --run NAME ... (the `--` keeps torchrun from reading --run as its own --run-path).",
    )
    for add in (_add_run_options, _add_data_options, _add_training_options, _add_model_options):
        add(parser)
    return parser


def train_configs(args: argparse.Namespace) -> tuple[TrainConfig, DataConfig]:
    """The configurations named by parsed arguments (validated: a bad value is a TracinError)."""
    data_config = DataConfig(
        dataset=args.dataset,
        data_root=str(Path(args.data_root or default_data_root()).resolve()),  # runs are read from anywhere
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        label_noise=args.label_noise,
        seed=args.data_seed,
        checksum=not args.no_checksum,
        coarse_labels=args.coarse_labels,
        shortcut_class=args.shortcut_class,
        shortcut_fraction=args.shortcut_fraction,
        shortcut_patch=args.shortcut_patch,
        shortcut_mode=args.shortcut_mode,
    )
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        nesterov=args.nesterov,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        save_every=args.save_every,
        seed=args.seed,
        arch=args.model or args.arch,
        student_arch=args.student_model,
        width=args.width,
        student_stages=args.student_stages,
        student_init=args.student_init,
        distill=args.distill,
        kd_loss=args.kd_loss,
        temperature=args.temperature,
        alpha=args.alpha,
        augment=not args.no_augment,
    )
    return config, data_config


def run_options(args: argparse.Namespace, argv: Sequence[str]) -> RunOptions:
    default_models = ("student", "student_baseline") if args.teacher else ROLES
    return RunOptions(
        run=args.run,
        out_root=args.out_root,
        models=tuple(args.models or default_models),
        teacher=args.teacher,
        replicas=args.replicas,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
        command=("tracin-train", *argv),
    )


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-train`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    argv = _arguments(argv)
    build_train_parser().parse_args(argv)  # --help and usage errors before anything heavy is imported
    return run_command("tracin-train", lambda: _train_argv(argv), "continue with --resume")


# --- tracin-score ----------------------------------------------------------------------------------


DEFAULT_VARIANTS = (
    "train-normalised"  # measured: docs/results.md, "Defaults chosen by measurement" (the API's default stays raw)
)


def build_score_parser() -> argparse.ArgumentParser:
    score = _defaults(ScoreConfig)
    parser = _Parser(
        prog="tracin-score",
        description="TracIn (TracInCP) scores of a trained run's models into one resumable HDF5 file, and the "
        "comparison of their rankings (overlap@k, rank correlation, score distributions). Rerunning the same "
        "command after an interruption continues where it stopped.",
    )
    parser.add_argument("--run", required=True, help="the run folder written by tracin-train, e.g. checkpoints/demo")
    parser.add_argument(
        "--models",
        default="teacher,student",
        help=f"comma-separated models to score and compare, from {', '.join(ROLES)}, each with its trained "
        "replicas; ROLE.rN names one replica (default: %(default)s)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help="score the first N replicas of each model (default: every replica tracin-train trained)",
    )
    parser.add_argument(
        "--mode", choices=MODES, default=score.mode, help="exact | projected | last-layer (default: %(default)s)"
    )
    parser.add_argument("--proj-dim", type=int, help="per-layer projection size in projected mode (e.g. 1024)")
    parser.add_argument(
        "--projector",
        type=_Registered("tracin.engine.projection", "PROJECTORS"),
        default=score.projector,
        metavar="NAME",
        help="random projection of projected mode, registered in tracin.engine.projection (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=score.seed, help="projection and sampling seed (default: %(default)s)"
    )
    parser.add_argument(
        "--layers", default="", help="comma-separated module-name prefixes to use (default: every parameter)"
    )
    parser.add_argument(
        "--loss",
        choices=SCORE_LOSSES,
        default="ce",
        help="ce: cross-entropy on both sides; kd-train: a distilled student's train examples by the "
        "objective its steps were taken on (its recorded teacher, temperature, alpha, kd loss), its test "
        "examples by cross-entropy on the test label (TracIn's derivation); kd: the distillation "
        "objective on both sides (default: %(default)s)",
    )
    parser.add_argument(
        "--test-label",
        choices=TEST_LABELS,
        default="label",
        help="the test side's cross-entropy on the test example's label, or on the class the model "
        "predicts (explanations of the prediction, as the field's shortcut check asks; default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=score.precision,
        help="inner products in float32 (exact, default), tf32 (CUDA) or bf16 (features kept in bfloat16, "
        "float32 accumulation: ~1e-3 relative to the largest score, half the memory)",
    )
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"comma-separated score variants from {', '.join(SCORE_VARIANTS)}, formed in one pass; the first "
        "is the file's `scores`. raw is TracInCP as published; the default passes the quality checks "
        "(same-class proponents, no dominant outlier) and its self-influence finds flipped labels "
        "better than raw's (docs/results.md: Defaults chosen by measurement). VARIANT@GROUP scores one layer "
        "group's parameters alone (e.g. cosine@layer4), VARIANT@* each group (default: %(default)s)",
    )
    parser.add_argument(
        "--group",
        dest="groups",
        action="append",
        default=[],
        metavar="NAME=PREFIX[,PREFIX...]",
        help="a layer group of your own, by module-name prefixes (repeat for more; modules in none form "
        "'other'); default: the ResNet stages stem, layer1, ..., head",
    )
    parser.add_argument(
        "--checkpoints", default="all", help="all | last | comma-separated epochs (default: %(default)s)"
    )
    parser.add_argument("--train-subset", type=int, help="score a stratified subset of the run's train examples")
    parser.add_argument("--test-subset", type=int, help="score a stratified subset of the run's test examples")
    parser.add_argument(
        "--topk", default="100,500,1000", help="comma-separated k for top-k tables and overlap@k (default: %(default)s)"
    )
    parser.add_argument(
        "--cap-topk",
        action="store_true",
        help="lower a --topk k larger than the train or test set to its size instead of refusing it",
    )
    parser.add_argument(
        "--per-checkpoint",
        action="store_true",
        help="also keep each checkpoint's scores, for the matched-epoch comparison",
    )
    parser.add_argument("--out", help="HDF5 file (default: RUN/tracin.h5)")
    parser.add_argument("--data-root", help="where the run's data set is, if not where it was trained")
    _add_engine_options(parser)
    parser.add_argument(
        "--corr-rows", type=int, default=1000, help="rows sampled for rank correlations (default: %(default)s)"
    )
    parser.add_argument(
        "--plots",
        action="store_true",
        help="also write the figures (PNG) and tables (report.md) to plots/ beside the HDF5 file",
    )
    parser.add_argument(
        "--examples",
        default="",
        metavar="I,J,...",
        help="test indices (of the data set) the proponent grids of --plots show (default: where teacher "
        "and student disagree most, and the most confident errors)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a finished or mismatched result file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    _add_allow_model(parser)
    return parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    engine = EngineConfig()
    group = parser.add_argument_group("engine (the same scores either way)")
    group.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available (default: auto)")
    group.add_argument(
        "--batch-size", type=int, default=engine.batch_size, help="examples per forward/backward (default: %(default)s)"
    )
    group.add_argument(
        "--max-memory-gb",
        default="auto",
        metavar="GB|auto",
        help="memory for kept gradients and score blocks; sets the chunking. auto: "
        f"{AUTO_MEMORY_SHARE * 100:.0f}%% of the memory free on the device once the model is loaded (CPU: "
        "available RAM, shared among torchrun's processes); the plan is printed (default: %(default)s)",
    )
    group.add_argument(
        "--no-cuda-graphs",
        dest="cuda_graphs",
        action="store_false",
        help="run every batch eagerly on CUDA (needed only for a model that cannot be graph-captured)",
    )


def _memory_bytes(value: str) -> Optional[int]:
    """--max-memory-gb in bytes; None for auto."""
    if value == "auto":
        return None
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = math.nan
    if not math.isfinite(gigabytes) or gigabytes <= 0:
        raise TracinError(f"--max-memory-gb must be a positive number or auto, got {value}")
    return max(1, int(gigabytes * 2**30))


def _indices(option: str, text: str) -> tuple[int, ...]:
    """A comma-separated list of non-negative integers, e.g. --examples 12,40,7."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise TracinError(f"{option} takes comma-separated test indices (e.g. 12,40,7), got {text!r}")
    return tuple(int(part) for part in parts)


def parse_group(spec: str) -> tuple[str, tuple[str, ...]]:
    """--group NAME=PREFIX[,PREFIX...] -> (name, prefixes)."""
    name, separator, prefixes = spec.partition("=")
    modules = tuple(p.strip() for p in prefixes.split(",") if p.strip())
    if not separator or not modules:
        raise TracinError(f"--group takes NAME=PREFIX[,PREFIX...] (e.g. early=conv1,bn1,layer1), got {spec!r}")
    return name.strip(), modules


def score_options(args: argparse.Namespace, argv: Sequence[str]) -> ScoreOptions:
    layers = tuple(p.strip() for p in args.layers.split(",") if p.strip())
    config = ScoreConfig(
        mode=args.mode,
        layers=layers,
        proj_dim=args.proj_dim,
        projector=args.projector,
        seed=args.seed,
        precision=args.precision,
        variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
        groups=tuple(parse_group(spec) for spec in args.groups),
    )
    return ScoreOptions(
        run=args.run,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        replicas=args.replicas,
        score=config,
        loss=args.loss,
        test_label=args.test_label,
        checkpoints=args.checkpoints,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        topk=args.topk,
        cap_topk=args.cap_topk,
        out=args.out,
        device=args.device,
        engine=EngineConfig(
            batch_size=args.batch_size, max_memory=_memory_bytes(args.max_memory_gb), cuda_graphs=args.cuda_graphs
        ),
        per_checkpoint=args.per_checkpoint,
        overwrite=args.overwrite,
        quiet=args.quiet,
        data_root=str(Path(args.data_root).resolve()) if args.data_root else None,
        corr_rows=args.corr_rows,
        plots=args.plots,
        examples=_indices("--examples", args.examples),
        command=" ".join(["tracin-score", *argv]),
    )


def score_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-score`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    argv = _arguments(argv)
    args = build_score_parser().parse_args(argv)

    def work() -> None:
        from tracin.commands.score import score_run

        score_run(score_options(args, argv))

    return run_command("tracin-score", _allowing(args.allow_model, work), "run the same command again to continue")


# --- tracin-validate -------------------------------------------------------------------------------


def build_validate_parser() -> argparse.ArgumentParser:
    defaults = ValidateOptions(run="")
    parser = _Parser(
        prog="tracin-validate",
        description="Counterfactual checks of a run's TracIn scores: retrain without each sampled test example's "
        "top-k proponents (the model's own, its teacher's, the baseline student's), k random examples or its "
        "k strongest opponents, and measure the margin change; and the linear datamodeling score (LDS) over "
        "models retrained on random subsets. Retrains through tracin-train's own code; resumable.",
    )
    parser.add_argument("--run", required=True, help="the run folder (tracin-train's), scored with tracin-score")
    parser.add_argument(
        "--scores", help="its score file (default: RUN/tracin.h5); the results go into it (/validation)"
    )
    parser.add_argument(
        "--models",
        default=",".join(defaults.models),
        help="comma-separated models to retrain (ROLE or ROLE.rN; default: %(default)s)",
    )
    parser.add_argument(
        "--variants",
        default="",
        help="comma-separated score variants (layer groups too, e.g. train-normalised@head) whose rankings "
        "the own, teacher, baseline and opponents conditions remove, each in its own retrainings "
        "(default: the file's first)",
    )
    parser.add_argument(
        "--test-examples",
        type=int,
        default=defaults.test_examples,
        help="test examples sampled for leave-top-k-out (0: none; default: %(default)s)",
    )
    parser.add_argument(
        "--k", type=int, default=defaults.k, help="train examples removed per test example (default: %(default)s)"
    )
    parser.add_argument(
        "--conditions",
        default=",".join(defaults.conditions),
        help="comma-separated removals: own, teacher, baseline, random, opponents (default: all that apply)",
    )
    parser.add_argument(
        "--subsets",
        type=int,
        default=defaults.subsets,
        help="LDS: models retrained on random subsets (0: no LDS; default: %(default)s)",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=defaults.fraction,
        help="LDS: the share of the train examples each subset keeps (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=defaults.seeds,
        help="leave-top-k-out: retraining seeds (data order) per condition (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs", type=int, help="retrain for this many epochs (default: the run's; its schedule shortened)"
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the samples and subsets (default: %(default)s)"
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available (default: auto)")
    parser.add_argument("--data-root", help="where the run's data set is, if not where it was trained")
    parser.add_argument("--overwrite", action="store_true", help="replace a validation made with other settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_allow_model(parser)
    return parser


def validate_options(args: argparse.Namespace) -> ValidateOptions:
    def listed(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())

    return ValidateOptions(
        run=args.run,
        scores=args.scores,
        models=listed(args.models),
        variants=listed(args.variants),
        test_examples=args.test_examples,
        k=args.k,
        conditions=listed(args.conditions),
        subsets=args.subsets,
        fraction=args.fraction,
        seeds=args.seeds,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        data_root=args.data_root,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


def validate_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-validate`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    args = build_validate_parser().parse_args(_arguments(argv))

    def work() -> None:
        from tracin.commands.validate import validate_run

        validate_run(validate_options(args))

    return run_command(
        "tracin-validate",
        _allowing(args.allow_model, work),
        "run the same command again to continue (finished retrainings are kept)",
    )


# --- tracin-report -----------------------------------------------------------------------------------


def build_report_parser() -> argparse.ArgumentParser:
    defaults = ReportOptions(run="")
    parser = _Parser(
        prog="tracin-report",
        description="The field's sanity checks of a run's TracIn scores, teacher, student and baseline side by side: "
        "identical class and subclass, concentration, model randomization (cascading from the head down), mislabel "
        "AUC, planted-shortcut precision and AUC, and tracin-validate's LDS and leave-top-k-out where the file "
        "holds them; each with its bootstrap CI and chance. Writes /quality_report into the score file, "
        "quality_report.md and plots/quality_report.png beside it; randomization is kept per model (resumable).",
    )
    parser.add_argument("--run", required=True, help="the run folder (tracin-train's), scored with tracin-score")
    parser.add_argument("--scores", help="its score file (default: RUN/tracin.h5); the report goes into it")
    parser.add_argument(
        "--models",
        default=",".join(defaults.models),
        help="comma-separated models reported (ROLE or ROLE.rN; default: those of %(default)s the file holds)",
    )
    parser.add_argument(
        "--randomization-train",
        type=int,
        default=defaults.randomization_train,
        help="model randomization: train examples sampled (default: %(default)s)",
    )
    parser.add_argument(
        "--randomization-test",
        type=int,
        default=defaults.randomization_test,
        help="model randomization: test examples sampled (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of the samples, random weights and bootstrap (default: %(default)s)",
    )
    parser.add_argument(
        "--groups", action="store_true", help="print the layer groups' variants too (the files always hold them)"
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available (default: auto)")
    parser.add_argument("--data-root", help="where the run's data set is, if not where it was trained")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_allow_model(parser)
    return parser


def report_options(args: argparse.Namespace) -> ReportOptions:
    return ReportOptions(
        run=args.run,
        scores=args.scores,
        models=tuple(part.strip() for part in args.models.split(",") if part.strip()),
        randomization_train=args.randomization_train,
        randomization_test=args.randomization_test,
        seed=args.seed,
        device=args.device,
        data_root=args.data_root,
        groups=args.groups,
        quiet=args.quiet,
    )


def report_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-report`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    args = build_report_parser().parse_args(_arguments(argv))

    def work() -> None:
        from tracin.commands.report import report_run

        report_run(report_options(args))

    return run_command(
        "tracin-report", _allowing(args.allow_model, work), "run the same command again (finished models are kept)"
    )


# --- tracin-sweep ------------------------------------------------------------------------------------


def build_sweep_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tracin-sweep",
        description="One distillation experiment over values of one or more settings: trains only what must be "
        "trained (students reuse one teacher when only their settings vary), through tracin-train's own code, "
        "resumable; writes results.csv, results.md and results.png. Every other option is tracin-train's and "
        "applies to every run.",
        epilog="Example: tracin-sweep --sweep temperature --vary temperature=1,2,5 --dataset fashion-mnist "
        "--train-subset 2000 --epochs 4 --width 8. Settings: " + ", ".join(SWEEP_KEYS) + " (teacher_epoch: "
        "which saved checkpoint of the shared teacher the students distil from; augment: on,off).",
    )
    parser.add_argument("--sweep", required=True, help="name of the sweep: its runs and results go to OUT_ROOT/SWEEP/")
    parser.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a setting and its values (repeatable: the grid of all combinations)",
    )
    parser.add_argument("--out-root", default="checkpoints", help="folder holding the sweep (default: %(default)s)")
    parser.add_argument(
        "--score",
        nargs="?",
        const="",
        metavar="'TRACIN-SCORE OPTIONS'",
        help="score every run with tracin-score (these options, quoted, e.g. '--mode projected --proj-dim 256 "
        "--topk 10,100') and add each student's overlap with its teacher's proponents, with its CI, as columns",
    )
    return parser


def _train_argv(argv: Sequence[str]) -> None:
    """Train as tracin-train with these arguments would (they are parsed again: tracin-sweep passes its own on)."""
    from tracin.commands.train import train_run
    from tracin.training.models import allow_imports

    args = build_train_parser().parse_args(argv)
    allow_imports([args.model, args.student_model])
    train_run(*train_configs(args), run_options(args, argv))


def _score_argv(argv: list[str]) -> None:
    if score_main(argv) != 0:  # its own line on stderr said why
        raise TracinError(f"scoring {argv[1]} failed (above); fix it and run the same tracin-sweep again")


def sweep_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-sweep`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    args, base = build_sweep_parser().parse_known_args(_arguments(argv))
    passed_on = build_train_parser()
    passed_on.prog = "tracin-sweep"  # what goes on to tracin-train is checked first, as the sweep's own usage error
    passed_on.parse_args(["--run", args.sweep, *base])

    def work() -> None:
        from tracin.commands import sweep as sweep_module
        from tracin.training.trainer import saved_epochs

        score = None if args.score is None else tuple(shlex.split(args.score))
        sweep = sweep_module.Sweep(
            check_run_name(args.sweep),
            tuple(sweep_module.parse_vary(v) for v in args.vary),
            tuple(base),
            args.out_root,
            ("tracin-sweep", *_arguments(argv)),
            score,
        )
        epochs = sweep_module.final_epochs(base, TRAIN.epochs)
        configs = [
            train_configs(build_train_parser().parse_args(run_argv))[0]  # every run checked before any trains
            for _, run_argv in sweep_module.train_arguments(sweep, epochs)
        ]
        saved = saved_epochs(configs[0])  # with teacher_epoch the first run is the shared teacher's
        unsaved = [e for e in dict(sweep.vary).get("teacher_epoch", ()) if int(e) not in saved]
        if unsaved:
            raise TracinError(
                f"--vary teacher_epoch {', '.join(unsaved)}: the shared teacher saves epochs {', '.join(map(str, saved))} "
                "(--save-every and the last)"
            )
        print(f"results: {sweep_module.run_sweep(sweep, _train_argv, epochs, _score_argv)}", flush=True)

    return run_command("tracin-sweep", work, "run the same command again (finished runs are kept)")


# --- tracin-eval -------------------------------------------------------------------------------------


def build_eval_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tracin-eval",
        description="Evaluate a trained run's finished models (their last checkpoints) on another torchvision data "
        "set's test split, its classes mapped to the run's; writes RUN/eval_DATASET.csv.",
    )
    parser.add_argument("--run", required=True, help="the run folder (tracin-train's)")
    parser.add_argument(
        "--eval-dataset", required=True, choices=EVAL_DATASETS, help="the data set whose test split is read"
    )
    parser.add_argument(
        "--data-root",
        default=None,
        help=f"where that data set is (default: $TRACIN_DATA, else data; now {default_data_root()})",
    )
    parser.add_argument(
        "--class-map",
        metavar="FILE.json",
        help='{"its class": "run class", ...}; default: the classes both name alike (others are left out)',
    )
    parser.add_argument("--no-checksum", action="store_true", help="CIFAR-format files that are not the published ones")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available (default: auto)")
    _add_allow_model(parser)
    return parser


def eval_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-eval`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    args = build_eval_parser().parse_args(_arguments(argv))
    options = EvalOptions(
        run=args.run,
        dataset=args.eval_dataset,
        data_root=args.data_root or default_data_root(),
        class_map=args.class_map,
        checksum=not args.no_checksum,
        device=args.device,
    )

    def work() -> None:
        from tracin.commands.evaluate import eval_run

        eval_run(options)

    return run_command("tracin-eval", _allowing(args.allow_model, work), "run it again")
