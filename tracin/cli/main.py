"""The commands' front ends: a table of what each command is, its parser generated from its options dataclasses
(tracin.options, and tracin-train's DataConfig and TrainConfig), and the error boundary around it
(tracin.cli.boundary). No option is declared here.

Only light modules are imported at the top: every parser is built, and --help answered, without importing
torch. The code that carries a command out is imported when it runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shlex
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from tracin.cli.boundary import arguments, run_command
from tracin.cli.parsing import Parser, command_parser, options_from
from tracin.config import SWEEP_KEYS, DataConfig, TrainConfig
from tracin.errors import OverwriteNeeded, TracinError
from tracin.files import refuse_link, refuse_links_under
from tracin.options import (
    EvalOptions,
    ExploreOptions,
    ReportOptions,
    RunOptions,
    ScoreOptions,
    SweepOptions,
    ValidateOptions,
    check_run_name,
)


@dataclass(frozen=True)
class CommandSpec:
    """A command: its parser's options dataclasses and texts, the function that carries it out (MODULE:NAME,
    called with the options object; imported when it runs) and what to do after an interruption."""

    prog: str
    options: tuple[type, ...]
    run: str
    description: str
    how_to_continue: str = "run the same command again to continue"
    epilog: Optional[str] = None

    def parser(self) -> Parser:
        return command_parser(self.prog, self.description, *self.options, epilog=self.epilog)


SPECS = {
    "train": CommandSpec(
        "tracin-train",
        (RunOptions, DataConfig, TrainConfig),
        "tracin.commands.train:train_run",
        "Train a teacher, a distilled student and a baseline student, with checkpoints for TracIn.",
        # with or without --resume; after --overwrite the earlier run is back and the same command replaces it
        # again (--resume would be refused: round 8, K1)
        "run the same command again to continue",
        epilog="Several processes (DistributedDataParallel): torchrun --nproc_per_node=N $(which tracin-train) "
        "-- --run NAME ... (the `--` keeps torchrun from reading --run as its own --run-path).",
    ),
    "score": CommandSpec(
        "tracin-score",
        (ScoreOptions,),
        "tracin.commands.score:score_run",
        "TracIn (TracInCP) scores of a trained run's models into one resumable HDF5 file, and the comparison of "
        "their rankings (overlap@k, rank correlation, score distributions). Rerunning the same command after an "
        "interruption continues where it stopped.",
    ),
    "validate": CommandSpec(
        "tracin-validate",
        (ValidateOptions,),
        "tracin.commands.validate:validate_run",
        "Counterfactual checks of a run's TracIn scores: retrain without each sampled test example's top-k "
        "proponents (the model's own, its teacher's, the baseline student's), k random examples or its k strongest "
        "opponents, and measure the margin change; and the linear datamodeling score (LDS) over models retrained on "
        "random subsets. Retrains through tracin-train's own code; resumable.",
        "run the same command again to continue (finished retrainings are kept)",
    ),
    "report": CommandSpec(
        "tracin-report",
        (ReportOptions,),
        "tracin.commands.report:report_run",
        "The field's sanity checks of a run's TracIn scores, teacher, student and baseline side by side: identical "
        "class and subclass, concentration, model randomization (cascading from the head down), mislabel AUC, "
        "planted-shortcut precision and AUC, and tracin-validate's LDS and leave-top-k-out where the file holds "
        "them; each with its bootstrap CI and chance. Writes /quality_report into the score file, quality_report.md "
        "and plots/quality_report.png beside it; randomization is kept per model (resumable).",
        "run the same command again (finished models are kept)",
    ),
    "sweep": CommandSpec(
        "tracin-sweep",
        (SweepOptions,),
        "",
        "One distillation experiment over values of one or more settings: trains only what must be trained "
        "(students reuse one teacher when only their settings vary), through tracin-train's own code, resumable; "
        "writes results.csv, results.md and results.png. Every other option is tracin-train's and applies to every "
        "run.",
        "run the same command again (finished runs are kept)",
        epilog="Example: tracin-sweep --sweep temperature --vary temperature=1,2,5 --dataset fashion-mnist "
        "--train-subset 2000 --epochs 4 --width 8. Settings: " + ", ".join(SWEEP_KEYS) + " (teacher_epoch: "
        "which saved checkpoint of the shared teacher the students distil from; augment: on,off).",
    ),
    "eval": CommandSpec(
        "tracin-eval",
        (EvalOptions,),
        "tracin.commands.evaluate:eval_run",
        "Evaluate a trained run's finished models (their last checkpoints) on another torchvision data set's test "
        "split, its classes mapped to the run's; writes RUN/eval_DATASET.csv.",
        "run it again",
    ),
    "explore": CommandSpec(
        "tracin-explore",
        (ExploreOptions,),
        "tracin.commands.explore:explore_run",
        "Write a web page (opens from disk, no server) where you pick a test example and see what each model leans "
        "on: proponents and opponents side by side, predictions, flipped and stamped examples, overlaps against "
        "the replica floor, and the quality report.",
    ),
}


def build_parser(command: str) -> Parser:
    """The parser of `tracin COMMAND` (train, score, validate, report, sweep, eval, explore)."""
    return SPECS[command].parser()


def _function(path: str) -> Callable:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _allow(factories: Sequence[str]) -> None:
    """Allow the model factories the user named on the command line to be imported (a bad name is one line)."""
    from tracin.training.models import allow_imports

    allow_imports(factories)  # a name that is not MODULE:FUNCTION is refused, not passed over


def _say_unused(prog: str, factories: Sequence[str]) -> None:
    """One line for each allowed factory no model of the command was built by (round 19, R8: a typo or a
    needless --allow-model went unsaid)."""
    from tracin.training.models import IMPORTED

    if os.environ.get("RANK", "0") != "0":  # under torchrun: said once
        return
    for factory in dict.fromkeys(f for f in factories or () if f not in IMPORTED):
        print(f"{prog}: note: --allow-model {factory} was not used: no model this command built is made by it")


def _main(command: str, argv: Optional[Sequence[str]]) -> int:
    """A command of one options dataclass: parse (--help and usage errors before anything heavy is imported),
    then build and check its options and carry it out inside the error boundary."""
    spec = SPECS[command]
    args = spec.parser().parse_args(arguments(argv))

    def work() -> None:
        options = options_from(spec.options[0], args, spec.prog)
        _allow(getattr(options, "allow_model", ()))
        _function(spec.run)(options)
        _say_unused(spec.prog, getattr(options, "allow_model", ()))

    return run_command(spec.prog, work, spec.how_to_continue)


def validate_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-validate`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    return _main("validate", argv)


def report_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-report`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    return _main("report", argv)


def eval_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-eval`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    return _main("eval", argv)


def explore_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-explore`: the page, and its path on stdout."""
    return _main("explore", argv)


# --- tracin-score: its command line is recorded in the file ---------------------------------------------------


def build_score_parser() -> Parser:
    return build_parser("score")


def score_options(args, argv: Sequence[str]) -> ScoreOptions:
    """The ScoreOptions of parsed arguments, with the command line recorded."""
    return options_from(ScoreOptions, args, "tracin-score", command=" ".join(["tracin-score", *argv]))


def score_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-score`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    argv = arguments(argv)
    args = build_score_parser().parse_args(argv)

    def work() -> None:
        options = score_options(args, argv)
        _allow(options.allow_model)
        _function(SPECS["score"].run)(options)
        _say_unused("tracin-score", options.allow_model)

    return run_command("tracin-score", work, SPECS["score"].how_to_continue)


# --- tracin-train: three options objects from one command line ----------------------------------------------


def build_train_parser() -> Parser:
    return build_parser("train")


def train_configs(args) -> tuple[TrainConfig, DataConfig]:
    """The configurations named by parsed arguments (validated: a bad value is a TracinError)."""
    return options_from(TrainConfig, args, "tracin-train"), options_from(DataConfig, args, "tracin-train")


def run_options(args, argv: Sequence[str]) -> RunOptions:
    return options_from(RunOptions, args, "tracin-train", command=("tracin-train", *argv))


def _train_argv(argv: Sequence[str]) -> None:
    """Train as tracin-train with these arguments would (they are parsed again: tracin-sweep passes its own on)."""
    from tracin.commands.train import train_run

    args = build_train_parser().parse_args(argv)
    config, data_config = train_configs(args)
    _allow([arch for arch in (config.arch, config.student_arch) if arch and ":" in arch])  # not the registered
    train_run(config, data_config, run_options(args, argv))


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-train`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    argv = arguments(argv)
    build_train_parser().parse_args(argv)  # --help and usage errors before anything heavy is imported
    return run_command("tracin-train", lambda: _train_argv(argv), SPECS["train"].how_to_continue)


# --- tracin-sweep: its own options, and tracin-train's passed on to every run ---------------------------------


def _score_argv(argv: list[str]) -> None:
    """tracin-score's work for one of a sweep's runs: its error becomes the sweep's one line, an interrupt the
    sweep's (round 10, S9 and S13: two lines, and an interrupt that exited 2)."""
    options = score_options(_sweep_score_parser().parse_args(argv), argv)
    _allow(options.allow_model)
    try:
        _function(SPECS["score"].run)(options)
    except OverwriteNeeded as error:  # round 19, SW7 and round 20, SW6: its advice named an option a sweep lacks
        raise TracinError(
            f"scoring {argv[1]}: {error.problem}; tracin-sweep passes no --overwrite: run tracin-score "
            f"{shlex.join(argv[:-1])} --overwrite yourself, or move the file away, then run the same tracin-sweep again"
        ) from None
    except TracinError as error:
        raise TracinError(f"scoring {argv[1]}: {error}; fix it and run the same tracin-sweep again") from None


def _sweep_score_parser() -> Parser:
    parser = build_score_parser()
    parser.prog = "tracin-sweep --score"
    return parser


def _sweep_score_options(argv: Sequence[str]) -> ScoreOptions:
    """--score's words as tracin-score's options; a value they refuse is said as --score's (round 27, W05)."""
    parsed = _sweep_score_parser().parse_args(list(argv))
    try:
        return options_from(ScoreOptions, parsed, "tracin-sweep --score")
    except TracinError as error:
        raise TracinError(f"--score: {error}") from None


SWEEP_SETS_FOR_SCORE = ("--run", "--models", "--scores", "--out")  # tracin-sweep scores every run into RUN/tracin.h5


def sweep_score_arguments(text: Optional[str]) -> Optional[tuple[str, ...]]:
    """The tracin-score arguments of `tracin-sweep --score TEXT`, checked as tracin-score checks them, before
    anything trains: one line for a broken quote, an option the sweep sets itself, or any option tracin-score
    would refuse."""
    if text is None:
        return None
    try:
        words = tuple(shlex.split(text))
    except ValueError as error:
        raise TracinError(f"--score {text!r}: {error}") from None
    for word in words:
        if word.split("=", 1)[0] == "--overwrite":  # round 23, SW18: every run's finished score file was replaced
            raise TracinError(
                "--score: tracin-sweep passes no --overwrite, it keeps every finished score file (run tracin-score "
                "--overwrite on a run yourself, or move its file away)"
            )
        if word.split("=", 1)[0] in SWEEP_SETS_FOR_SCORE:
            raise TracinError(f"--score: tracin-sweep sets {word.split('=', 1)[0]} itself; leave it out")
    _sweep_score_options(["--run", "RUN", *words])
    return words


def _sweep_train_argv(argv: Sequence[str]) -> None:
    """_train_argv for a sweep's run: a run folder of another configuration (the sweep's name used before
    with other settings) is refused with the sweep's way out, not tracin-train's --overwrite."""
    from tracin.errors import ConfigMismatchError

    try:
        _train_argv(argv)
    except ConfigMismatchError as error:
        raise TracinError(
            f"{error.root} was trained with other settings ({'; '.join(error.differences)}): this sweep's name was "
            "used with other options; give those again, choose another --sweep, or move that run folder away"
        ) from None


def _check_sweep_runs(runs: Sequence[tuple[TrainConfig, DataConfig, str]], score: Optional[Sequence[str]]) -> None:
    """What tracin-train checks once its data are loaded, for every run (config, data config, --device) of a
    sweep before the first trains: each data set's subsets are drawn (loaded once per data setting), each
    model fits the device; and with `score` (--score's words) each --topk k within the sets scored."""
    from tracin.runtime import select_device
    from tracin.training.data import load_data
    from tracin.training.models import check_fits
    from tracin.training.roles import model_configs

    by_data: dict = {}
    warned: list[str] = []
    for config, data_config, device in runs:
        by_data.setdefault(data_config, []).append((config, select_device(device)))
    for data_config, trained in by_data.items():
        data = load_data(data_config)  # one data set in memory at a time
        scoring = None if score is None else _sweep_score_options(["--run", "RUN", *score])
        if scoring is not None:
            from tracin.commands.score import scored_subsets

            try:
                scored = scored_subsets(data, scoring)  # round 22, S14, S27
            except TracinError as error:
                raise TracinError(f"--score: {error}") from None
            _check_score_topk(scoring, min(len(scored.train), len(scored.test)))
            if scoring.examples:  # round 21, SO15: refused by tracin-score once the grid had trained
                from tracin.results.grids import example_rows

                try:
                    example_rows(scoring.examples, scored.test.index.cpu().numpy())
                except TracinError as error:
                    raise TracinError(f"--score: {error}") from None
        for config, device in trained:
            check_fits(model_configs(config, data).values(), device)
            if scoring is not None:
                warned += [w for w in _check_score_engines(scoring, config, scored) if w not in warned]
    for warning in warned:  # round 23, SW25, SW31: said by each run's tracin-score only once it had trained
        print(warning.replace("warning: ", "warning: --score: ", 1), flush=True)  # on stdout, as tracin-score


def _check_score_engines(score: ScoreOptions, config: TrainConfig, data) -> list[str]:
    """What tracin-score checks once a run's checkpoints exist, on each model a run of `config` trains,
    freshly initialised (round 20, SW29; round 21, SO10-SO14: a --score option no model takes was refused only
    after the whole grid had trained): the checkpoints it selects among the epochs the run saves, and
    tracin.engine.TracIn's own checks and memory plan (layers, variants' groups, precision on the device, the
    memory budget), then --group against the models' groups. A user's factory is not run here. Returns
    tracin-score's warnings of the memory plans (a budget so small that blocking multiplies the work, or more
    than the device has free)."""
    from tracin.commands.score import budget_warning, plan_warning
    from tracin.engine.tracin import TracIn
    from tracin.runtime import select_device
    from tracin.training.models import build_model, is_import_path
    from tracin.training.optimization import saved_epochs, select_epochs
    from tracin.training.roles import model_configs

    trained = next(f.default for f in dataclasses.fields(RunOptions) if f.name == "replicas")  # a sweep's runs'
    if score.replicas is not None and score.replicas > trained:  # round 22, S11
        raise TracinError(f"--score: --replicas {score.replicas}: each run of a sweep trains {trained} replica")
    device, groups, warnings = select_device(score.device), set(), []
    for role, model_config in model_configs(config, data).items():
        if is_import_path(model_config.arch):
            return warnings
        try:
            epochs = select_epochs(score.checkpoints, saved_epochs(config), role)
            model = build_model(model_config)
            checkpoints = [(model.state_dict(), 1.0)] * len(epochs)
            tracin = TracIn(model, checkpoints, score.score, engine=score.engine, device=device)
            plan = tracin.memory_plan(data.train, data.test, score.per_checkpoint)
        except TracinError as error:
            raise TracinError(f"--score: {error}") from None
        groups.update(tracin.group_names)
        sizes = (len(data.train), len(data.test), score.engine.batch_size)
        warnings += [w for w in (plan_warning(role, plan, *sizes), budget_warning(plan, device)) if w]
    for group, prefixes in score.score.groups:  # as tracin-score.checked_models: over all the models
        if group not in groups:
            raise TracinError(f"--score: --group {group}={','.join(prefixes)} names no scored module of any model")
    return warnings


def _check_score_topk(score: ScoreOptions, scored: int) -> None:
    """--score's --topk against the smaller of the sets a run scores, `scored` examples (tracin-score checks
    it once the run is trained: round 10, S9)."""
    from tracin.config import parse_topk

    try:
        parse_topk(score.topk, limit=scored, cap=score.cap_topk)
    except TracinError as error:
        raise TracinError(f"--score: {error}") from None


def sweep_main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin-sweep`: exit code 0 when done, 2 for a user mistake (one line on stderr)."""
    parser, passed_on = build_parser("sweep"), build_train_parser()
    parser.refuse_unknown_options(arguments(argv), passed_on)
    args, base = parser.parse_known_args(arguments(argv))
    passed_on.prog = "tracin-sweep"  # what goes on to tracin-train is checked first, as the sweep's own usage error
    passed_on.parse_args(["--run", args.sweep, *base])

    def work() -> None:
        from tracin.commands import sweep as sweep_module
        from tracin.training.optimization import saved_epochs

        options = options_from(SweepOptions, args, "tracin-sweep")
        sweep = sweep_module.Sweep(
            check_run_name(options.sweep, "--sweep"),
            tuple(sweep_module.parse_vary(v) for v in options.vary),
            tuple(base),
            options.out_root,
            ("tracin-sweep", *arguments(argv)),
            sweep_score_arguments(options.score),
        )
        refuse_link(sweep.root, "the sweep folder")  # its runs and results would land in the link's target
        if sweep.root.is_dir():
            refuse_links_under(sweep.root, "in the sweep folder,")
        epochs = sweep_module.final_epochs(base, TrainConfig().epochs)
        passed_on.prog = "tracin-sweep --vary"  # a varied value tracin-train would refuse (red-team S03)
        runs = [  # every run checked before any trains: its options, its data and its models' size
            passed_on.parse_args(run_argv) for _, run_argv in sweep_module.train_arguments(sweep, epochs)
        ]
        configs = [(*train_configs(run_args), run_options(run_args, ()).device) for run_args in runs]
        sweep_module.check_grid(sweep)  # after the values: a bad one is named, not said to differ (round 31, SW10)
        _check_sweep_runs(configs, sweep.score)
        saved = saved_epochs(configs[0][0])  # with teacher_epoch the first run is the shared teacher's
        unsaved = [e for e in dict(sweep.vary).get("teacher_epoch", ()) if int(e) not in saved]
        if unsaved:
            raise TracinError(
                f"--vary teacher_epoch {', '.join(unsaved)}: the shared teacher saves epochs {', '.join(map(str, saved))} "
                "(--save-every and the last)"
            )
        print(f"results: {sweep_module.run_sweep(sweep, _sweep_train_argv, epochs, _score_argv)}", flush=True)
        if sweep.score is not None:  # round 20, SW30: as tracin-score alone says it
            _say_unused("tracin-sweep --score", _sweep_score_options(["--run", "RUN", *sweep.score]).allow_model)

    return run_command("tracin-sweep", work, SPECS["sweep"].how_to_continue)
