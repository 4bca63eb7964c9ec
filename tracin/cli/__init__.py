"""Command-line front ends: one table of commands, reachable as `tracin COMMAND ...`, `python -m tracin COMMAND
...` or `tracin-COMMAND ...`. Every parser is built without importing torch, so --help and --version answer at
once; what a command does is imported when it runs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from tracin.cli.main import eval_main, explore_main, report_main, score_main, sweep_main, train_main, validate_main
from tracin.cli.notebooks import main as notebooks_main
from tracin.version import __version__


@dataclass(frozen=True)
class Command:
    """A command: its entry point (argv -> exit code) and one line on what it does."""

    main: Callable[[Optional[Sequence[str]]], int]
    summary: str


COMMANDS = {
    "train": Command(train_main, "train a teacher, a distilled student and a baseline student, with checkpoints"),
    "score": Command(score_main, "TracIn scores of a run's models into one HDF5 file, and their comparison"),
    "report": Command(report_main, "the field's sanity checks of the scores, models side by side"),
    "validate": Command(validate_main, "counterfactual checks: retrain without the credited examples (LDS too)"),
    "sweep": Command(sweep_main, "one distillation experiment over values of one or more settings"),
    "eval": Command(eval_main, "a run's models on another data set's test split"),
    "notebooks": Command(notebooks_main, "the notebooks, executed on a score file, as HTML"),
    "explore": Command(explore_main, "a web page to browse each test example's proponents, models side by side"),
}

USAGE = "usage: tracin [--version] COMMAND [--help | OPTIONS]"


def usage() -> str:
    """The umbrella command's help: each command on one line."""
    width = max(map(len, COMMANDS))
    lines = [USAGE, "", "TracIn influence analysis for teacher and student image classifiers.", "", "commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", "Each is also installed as tracin-COMMAND. `tracin COMMAND --help` shows its options."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`tracin COMMAND ...`: runs tracin-COMMAND with the remaining arguments; its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"tracin {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(
            f"tracin: error: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)} (see tracin --help)",
            file=sys.stderr,
        )
        return 2
    return COMMANDS[argv[0]].main(argv[1:])


__all__ = [
    "COMMANDS",
    "eval_main",
    "explore_main",
    "main",
    "notebooks_main",
    "report_main",
    "score_main",
    "sweep_main",
    "train_main",
    "validate_main",
]
