"""Command-line front ends: tracin-train, tracin-score and the notebook runner."""

from tracin.cli.main import score_main, train_main  # noqa: F401
