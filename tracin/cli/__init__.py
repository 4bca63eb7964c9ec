"""Command-line front ends: tracin-train, tracin-score, tracin-validate, tracin-report, tracin-sweep, tracin-eval
and the notebook runner."""

from tracin.cli.main import eval_main, report_main, score_main, sweep_main, train_main, validate_main  # noqa: F401
