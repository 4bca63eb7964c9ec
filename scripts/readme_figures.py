#!/usr/bin/env python
"""Regenerate the README's demo figures from the demo's own output, so that they cannot go stale.

    python scripts/readme_figures.py [--run checkpoints/demo] [--readme README.md] [--print]

Reads RUN/run.json, RUN/tracin.h5 (or --scores) and RUN/demo.json (the timings and machine scripts/demo records) and
rewrites the part of the README between the `<!-- demo-figures:start -->` and `<!-- demo-figures:end -->`
markers (--print: write it to standard output instead). Every number in that part comes from those files:
accuracies, quality checks, the agreement table with its confidence intervals, mislabel detection, and
how much each figure moves between the two replicas (other seed, same data), which is what a re-run on
another machine changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tracin.cli.main import run_command
from tracin.config import split_model_name
from tracin.errors import TracinError
from tracin.results.agreement import format_agreement
from tracin.results.report import check_finished, detection_summary, detection_table, mislabel_curves
from tracin.results.statistics import overlap_at_k
from tracin.results.store import ScoreFile, rankings_name

START, END = "<!-- demo-figures:start -->", "<!-- demo-figures:end -->"


def markdown(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def replicas_of(names) -> dict[str, list[str]]:
    by_role: dict[str, list[str]] = {}
    for name in names:
        by_role.setdefault(split_model_name(name)[0], []).append(name)
    return by_role


def timing_section(demo: dict) -> str:
    machine, seconds = demo["machine"], demo["seconds"]
    return (
        f"Measured {demo['finished']} on {machine['cpu']} ({machine['cores']} cores), {machine['device']}, "
        f"torch {machine['torch']}, {machine['platform']}. A run from scratch took **{seconds['total']} s** "
        f"(training {seconds['training']} s, scoring {seconds['scoring']} s, report and notebooks "
        f"{seconds['report']} s), after the one-time set-up."
    )


def accuracy_section(record: dict) -> tuple[str, dict]:
    by_role = replicas_of(record["models"])
    accuracy = {name: entry["metrics"]["test_acc"] for name, entry in record["models"].items()}
    header = ["model", "parameters", *[f"test accuracy, replica {r}" for r in range(max(map(len, by_role.values())))]]
    rows = [[role, f"{record['param_counts'][role]:,}", *[f"{accuracy[n]:.1%}" for n in names]] for role, names in by_role.items()]
    return markdown(header, rows), accuracy


def quality_section(store: ScoreFile) -> str:
    table = store.quality()
    header = ["model", "variant", "same class, top-1", "same class, top-10", "most common top-1 proponent serves",
              "distinct in all top-10"]
    rows = [[r["model"].decode(), r["variant"].decode(), f"{r['identical_class_top1']:.1%}", f"{r['identical_class_topk']:.1%}",
             f"{r['top1_max_share']:.1%}", r["distinct_in_topk"]] for r in table]
    return markdown(header, rows)


def pair_overlap(store: ScoreFile, a: str, b: str, variant: str, k: int) -> float:
    name = rankings_name(variant=None if variant == store.model(a).variants[0] else variant)
    return float(overlap_at_k(store.model(a).rankings(name)[0].top_index, store.model(b).rankings(name)[0].top_index, k).mean())


def spread_section(store: ScoreFile, accuracy: dict, k: int) -> str:
    """Each figure on replica 0 and replica 1 of the same pipeline, and their difference."""
    by_role = replicas_of(store.models)
    if min(map(len, by_role.values())) < 2:
        return "(one replica only: the demo trains two to measure this)"
    rows = []

    def add(figure, first, second, percent=False):
        fmt = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:.3f}")
        rows.append([figure, fmt(first), fmt(second), fmt(abs(first - second))])

    for role, names in by_role.items():
        add(f"{role}: test accuracy", accuracy[names[0]], accuracy[names[1]], percent=True)
    quality = {(r["model"].decode(), r["variant"].decode()): r for r in store.quality()}
    variants = store.model(store.models[0]).variants
    for variant in variants:
        for role, names in by_role.items():
            first, second = quality[(names[0], variant)], quality[(names[1], variant)]
            add(f"{role}, {variant}: same class top-1", first["identical_class_top1"], second["identical_class_top1"], True)
            add(f"{role}, {variant}: most common top-1 serves", first["top1_max_share"], second["top1_max_share"], True)
    teachers, students = by_role.get("teacher", []), by_role.get("student", [])
    for variant in variants if teachers and students else ():
        add(f"teacher-student overlap@{k}, {variant}", pair_overlap(store, teachers[0], students[0], variant, k),
            pair_overlap(store, teachers[1], students[1], variant, k))
    if store.noisy.any():
        areas = {r["ranking"]: r["area"] for r in detection_summary(mislabel_curves(store, store.models))}
        for role, names in by_role.items():
            add(f"{role}: mislabel detection AUC (self-influence)", areas[f"{names[0]}: self-influence"],
                areas[f"{names[1]}: self-influence"])
    return markdown(["figure", "replica 0", "replica 1", "difference"], rows)


def figures(run: Path, scores: Path) -> str:
    """The README's demo part, from the run's files and its score file."""
    record = json.loads((run / "run.json").read_text())
    demo_json = run / "demo.json"
    if not demo_json.is_file():
        raise TracinError(f"{demo_json} is missing: run scripts/demo (it records the timings) first")
    demo = json.loads(demo_json.read_text())
    accuracy_table, accuracy = accuracy_section(record)
    with ScoreFile.open_read(scores) as store:
        check_finished(store)
        k = store.model(store.models[0]).rankings(rankings_name())[0].top_index.shape[1]  # the largest --topk
        parts = [
            f"{START}\n<!-- generated by scripts/readme_figures.py from the run {run.name}; edit that script, not this text -->",
            timing_section(demo),
            accuracy_table,
            "**Quality checks of the proponents** (no retraining; every model and replica, every score variant):",
            quality_section(store),
            "**Teacher-student agreement against the noise floor** (`'` = the other replica; each figure a mean over "
            "the 1,000 test examples with its 95% bootstrap confidence interval):",
            "```\n" + format_agreement(store.agreement()) + "\n```",
            detection_table(mislabel_curves(store, store.models)) if store.noisy.any() else "",
            "**What a re-run changes**: the same figures on the two replicas (same data and configuration, other seed). "
            "A difference of this size is what another machine, thread count or seed can change:",
            spread_section(store, accuracy, k),
            END,
        ]
    return "\n\n".join(part for part in parts if part)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="checkpoints/demo", help="the demo's run folder (default: %(default)s)")
    parser.add_argument("--scores", help="the demo's score file (default: RUN/tracin.h5)")
    parser.add_argument("--readme", default=str(Path(__file__).resolve().parents[1] / "README.md"))
    parser.add_argument("--print", action="store_true", help="print the part instead of rewriting the README")
    args = parser.parse_args()

    def work() -> None:
        text = figures(Path(args.run), Path(args.scores or Path(args.run) / "tracin.h5"))
        if args.print:
            print(text)
            return
        readme = Path(args.readme)
        old = readme.read_text()
        if old.count(START) != 1 or old.count(END) != 1:
            raise TracinError(f"{readme} needs one {START} and one {END} marker around the demo figures")
        before, rest = old.split(START)
        readme.write_text(before + text + rest.split(END, 1)[1])
        print(f"rewrote the demo figures in {readme}")

    return run_command("readme_figures", work, "run scripts/demo first")


if __name__ == "__main__":
    sys.exit(main())
