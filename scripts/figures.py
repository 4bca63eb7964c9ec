#!/usr/bin/env python
"""Figures (PNG) and tables (report.md) of a finished tracin-score file, for readers without Jupyter.

    python scripts/figures.py checkpoints/demo/tracin.h5 [--out DIR] [--data-root DIR]

The same as `tracin-score ... --plots`; the notebooks in notebooks/ show the same figures.
"""

import argparse
import sys

from tracin.arguments import comma_separated
from tracin.cli.boundary import run_command
from tracin.options import test_index
from tracin.results.report_folder import write_report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("scores", help="HDF5 file written by tracin-score")
    parser.add_argument("--out", help="folder for the files (default: plots/ beside the HDF5 file)")
    parser.add_argument("--data-root", help="where the run's data set is, if not where it was trained")
    parser.add_argument(
        "--examples",
        default="",
        metavar="I,J,...",
        help="test indices the proponent grids show (default: where teacher and student disagree most, "
        "and the most confident errors)",
    )
    args = parser.parse_args()

    def work() -> None:
        for path in write_report(
            args.scores, args.out, args.data_root, tuple(map(test_index, comma_separated(args.examples)))
        ):
            print(path)

    return run_command("figures", work, "run the same command again")


if __name__ == "__main__":
    sys.exit(main())
