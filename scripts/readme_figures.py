#!/usr/bin/env python
"""Regenerate the README's demo figures from the demo's own output, so that they cannot go stale.

    python scripts/readme_figures.py [--run checkpoints/demo] [--second checkpoints/demo_noise20]
                                     [--readme README.md] [--print]

Reads RUN/run.json, RUN/tracin.h5 (or --scores) and RUN/demo.json (the timings and machine scripts/demo
records) and rewrites the part of the README between the `<!-- demo-figures:start -->` and
`<!-- demo-figures:end -->` markers; with --second (a demo run on another noise rate and data seed:
scripts/demo --run demo_noise20 --label-noise 0.2 --data-seed 1), also the part between the
`<!-- variants-figures:start -->` and `<!-- variants-figures:end -->` markers: each score variant on both
runs, the measurement the defaults rest on. --print writes the parts to standard output instead. Every number in that part comes from those files:
accuracies, quality checks, the agreement table with its confidence intervals, mislabel detection, and
how much each figure moves between the two replicas (other seed, same data), which is what a re-run on
another machine changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tracin.cli.main import run_command
from tracin.config import replicas_by_role
from tracin.errors import TracinError
from tracin.files import write_atomic
from tracin.results.agreement import format_agreement
from tracin.results.report import check_finished, detection_summary, detection_table, mislabel_curves
from tracin.results.statistics import overlap_at_k
from tracin.results.store import ScoreFile, rankings_name

START, END = "<!-- demo-figures:start -->", "<!-- demo-figures:end -->"
VARIANTS_START, VARIANTS_END = "<!-- variants-figures:start -->", "<!-- variants-figures:end -->"


def markdown(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def replicas_of(names) -> dict[str, list[str]]:
    """role -> its trained models in replica order (ensembles left out)."""
    return {role: list(found.values()) for role, found in replicas_by_role(names).items()}


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
    unfinished = [name for name, entry in record["models"].items() if entry.get("status") != "done"]
    if unfinished:
        raise TracinError(f"{', '.join(unfinished)} not trained to the end: finish the demo (run scripts/demo again) first")
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
    top_a, top_b = store.model(a).variant_rankings(variant)[0], store.model(b).variant_rankings(variant)[0]
    return float(overlap_at_k(top_a.top_index, top_b.top_index, k).mean())


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


def group_section(store: ScoreFile) -> str:
    """Per layer group of the teacher and student (replica 0): its share of the self-influence mass and
    mislabel detection by its self-influence alone, beside all parameters."""
    curves = mislabel_curves(store, [m for m in ("teacher", "student") if m in store.models], groups=True)
    areas = {r["ranking"]: r["area"] for r in detection_summary(curves)}
    rows = []
    for model in ("teacher", "student"):
        if model not in store.models:
            continue
        scores = store.model(model)
        total = float(scores.self_influence.sum())
        rows.append([model, "all parameters", "100%", f"{areas[f'{model}: self-influence']:.3f}"])
        for group, values in scores.group_self_influence.items():
            rows.append([model, group, f"{values.sum() / total:.0%}", f"{areas[f'{model}: self-influence, {group} only']:.3f}"])
    return markdown(["model", "layer group", "share of the self-influence", "mislabel AUC, this group alone"], rows)


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
            f"the {store.n_test:,} test examples with its 95% bootstrap confidence interval):",
            "```\n" + format_agreement(store.agreement()) + "\n```",
            detection_table(mislabel_curves(store, store.models)) if store.noisy.any() else "",
            "**Self-influence by layer group** (raw TracInCP; which depth carries it, and what each depth alone finds):"
            if store.noisy.any() else "",
            group_section(store) if store.noisy.any() else "",
            "**What a re-run changes**: the same figures on the two replicas (same data and configuration, other seed). "
            "A difference of this size is what another machine, thread count or seed can change:",
            spread_section(store, accuracy, k),
            END,
        ]
    return "\n\n".join(part for part in parts if part)


def variants_figures(runs: list[Path]) -> str:
    """Per run, role (replica 0) and score variant: identical class, concentration, mislabel detection by
    that variant's self-influence, and the teacher-student agreement normalised by the replicas'."""
    rows = []
    for run in runs:
        record = json.loads((run / "run.json").read_text())
        setting = f"{run.name}: noise {record['data_config']['label_noise']:.0%}, data seed {record['data_config']['seed']}"
        with ScoreFile.open_read(run / "tracin.h5") as store:
            check_finished(store)
            quality = {(r["model"].decode(), r["variant"].decode()): r for r in store.quality()}
            if not store.noisy.any():
                raise TracinError(f"{run} has no flipped labels: the variants table compares mislabel detection")
            areas = {r["ranking"]: r["area"] for r in detection_summary(mislabel_curves(store, store.models))}
            agreement = store.agreement()
            for variant in store.model(store.models[0]).variants:
                chosen = agreement[(agreement["variant"] == variant.encode()) & (agreement["comparison"] == b"normalised teacher-student")
                                   & (np.char.startswith(agreement["statistic"], b"overlap@"))]
                normalised = f"{chosen[0]['mean']:.2f} [{chosen[0]['ci_low']:.2f}, {chosen[0]['ci_high']:.2f}]" if len(chosen) else "-"
                for role in ("teacher", "student"):
                    q = quality[(role, variant)]
                    detection = {"raw": f"{areas[f'{role}: self-influence']:.3f}",
                                 "train-normalised": f"{areas.get(f'{role}: self-influence, train-normalised', np.nan):.3f}",
                                 }.get(variant, "none (constant)")
                    rows.append([setting, variant, role, f"{q['identical_class_top1']:.1%}", f"{q['top1_max_share']:.1%}",
                                 detection, f"{areas[f'{role}: loss (last checkpoint)']:.3f}", normalised if role == "teacher" else ""])
    header = ["run", "variant", "model", "same class, top-1", "most common top-1 serves", "mislabel AUC, self-influence",
              "mislabel AUC, loss", "normalised teacher-student overlap [95% CI]"]
    return "\n\n".join([f"{VARIANTS_START}\n<!-- generated by scripts/readme_figures.py --second; edit that script, not this text -->",
                         markdown(header, rows), VARIANTS_END])


def replace_part(text: str, start: str, end: str, part: str, readme: Path) -> str:
    if text.count(start) != 1 or text.count(end) != 1:
        raise TracinError(f"{readme} needs one {start} and one {end} marker around the generated figures")
    before, rest = text.split(start)
    return before + part + rest.split(end, 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="checkpoints/demo", help="the demo's run folder (default: %(default)s)")
    parser.add_argument("--scores", help="the demo's score file (default: RUN/tracin.h5)")
    parser.add_argument("--second", help="a demo run on another noise rate and data seed, for the variants table")
    parser.add_argument("--readme", default=str(Path(__file__).resolve().parents[1] / "README.md"))
    parser.add_argument("--print", action="store_true", help="print the part instead of rewriting the README")
    args = parser.parse_args()

    def work() -> None:
        parts = {(START, END): figures(Path(args.run), Path(args.scores or Path(args.run) / "tracin.h5"))}
        if args.second:
            parts[(VARIANTS_START, VARIANTS_END)] = variants_figures([Path(args.run), Path(args.second)])
        if args.print:
            print("\n\n".join(parts.values()))
            return
        readme = Path(args.readme)
        text = readme.read_text()
        for (start, end), part in parts.items():
            text = replace_part(text, start, end, part, readme)
        write_atomic(readme, lambda handle: handle.write(text.encode()))
        print(f"rewrote {len(parts)} generated part(s) of {readme}")

    return run_command("readme_figures", work, "run scripts/demo first")


if __name__ == "__main__":
    sys.exit(main())
