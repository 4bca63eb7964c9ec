"""Command-line front ends: tracin-train, tracin-score, tracin-validate and the notebook runner."""

from tracin.cli.main import score_main, train_main, validate_main  # noqa: F401
