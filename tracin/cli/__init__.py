"""Command-line front ends: tracin-train, tracin-score, tracin-validate, tracin-report, tracin-sweep and the notebook runner."""

from tracin.cli.main import report_main, score_main, sweep_main, train_main, validate_main  # noqa: F401
