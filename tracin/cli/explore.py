"""`tracin explore`: one web page per score file, where a person picks a test image and sees each model's
proponents and opponents side by side (tracin.results.explore), and the lists as CSV or Parquet."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional, Sequence

from tracin.cli.main import _arguments, _Parser, run_command


def build_parser() -> _Parser:
    parser = _Parser(
        prog="tracin-explore",
        description="Write a web page (opens from disk, no server) where you pick a test example and see what "
        "each model leans on: proponents and opponents side by side, predictions, flipped and stamped "
        "examples, overlaps against the replica floor, and the quality report.",
    )
    parser.add_argument("--run", required=True, help="the run folder (tracin-train's OUT_ROOT/RUN)")
    parser.add_argument("--scores", help="the score file (default: RUN/tracin.h5)")
    parser.add_argument(
        "--out",
        help="the page (default: explore.html beside the score file, STEM.explore.html for another "
        "name than tracin.h5); data too large to hold inline go to a folder beside it, OUT_STEM_files/",
    )
    parser.add_argument(
        "--depth",
        type=int,
        help="proponents and opponents shown per model (default: 10, or the file's largest --topk where it is smaller)",
    )
    parser.add_argument("--models", help="comma-separated models to include (default: every model in the file)")
    parser.add_argument("--data-root", help="where the run's data set is, if it moved")
    parser.add_argument(
        "--max-inline-mb",
        type=float,
        default=25.0,
        help="data up to this size go inside the page, more to the folder beside it (default: %(default)s)",
    )
    parser.add_argument(
        "--export",
        metavar="DIR",
        help="also write the top-DEPTH lists and per-test overlaps as "
        "DIR/topk.csv and DIR/overlap.csv (and .parquet where pyarrow is installed)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """tracin-explore --run RUN [--scores FILE] [--out PAGE]: the page, and its path on stdout."""
    args = build_parser().parse_args(_arguments(argv if argv is not None else sys.argv[1:]))

    def work() -> None:
        from tracin.errors import TracinError
        from tracin.results.explore import ExploreOptions, explore

        run = Path(args.run)
        if not run.is_dir():
            raise TracinError(f"--run {run}: no such run folder")
        scores = Path(args.scores) if args.scores else run / "tracin.h5"
        if not scores.is_file():
            raise TracinError(f"{scores}: no such score file (tracin-score --run {run} makes it)")
        if not (math.isfinite(args.max_inline_mb) and args.max_inline_mb >= 0):
            raise TracinError(f"--max-inline-mb must be a number, 0 or more, got {args.max_inline_mb}")
        models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
        options = ExploreOptions(
            scores=scores,
            out=Path(args.out) if args.out else None,
            depth=args.depth,
            models=models,
            data_root=args.data_root,
            max_inline_mb=args.max_inline_mb,
            export=Path(args.export) if args.export else None,
        )
        for line in explore(options):
            print(line, flush=True)

    return run_command("tracin-explore", work, "run the same command again")


if __name__ == "__main__":
    raise SystemExit(main())
