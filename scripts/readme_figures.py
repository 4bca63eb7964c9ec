#!/usr/bin/env python
"""Regenerate the figures of docs/results.md from the runs' own output, so that they cannot go stale.

    python scripts/readme_figures.py [--run checkpoints/demo] [--second checkpoints/demo_noise20]
                                     [--doc docs/results.md] [--front README.md] [--headline] [--print]

Reads RUN/run.json, RUN/tracin.h5 (or --scores) and RUN/demo.json (the timings and machine scripts/demo
records) and rewrites the part of docs/results.md between the `<!-- demo-figures:start -->` and
`<!-- demo-figures:end -->` markers; with --second (a demo run on another noise rate and data seed:
scripts/demo --run demo_noise20 --label-noise 0.2 --data-seed 1), also the part between the
`<!-- variants-figures:start -->` and `<!-- variants-figures:end -->` markers: each score variant on both
runs, the measurement the defaults rest on; with --validation, the tracin-validate tables of the run's score
file between `<!-- validation-figures:start -->` and `<!-- validation-figures:end -->`; with --quality RUN (the
sanity run, scripts/sanity), tracin-report's quality report and verdicts between
`<!-- quality-report:start -->` and `<!-- quality-report:end -->`; with --sweep DIR, a tracin-sweep's results
between `<!-- sweep-results:start -->` and `<!-- sweep-results:end -->`; with --control CONTROL DEMO (the runs of
scripts/positive_control and scripts/positive_control --setting demo), the headline verdict on the demo's setting
beside its known-positive control between `<!-- positive-control:start -->` and `<!-- positive-control:end -->`
(--no-demo leaves the demo's own part as it is). Writing the control part also rewrites the README's
headline (`<!-- headline:start -->` to `<!-- headline:end -->`): the control part's verdicts on the demo's
setting and on the control, copied; --headline copies them again from the document as it is. --print writes
the parts to standard output instead. Every number in those parts comes from those files:
accuracies, quality checks, the agreement table with its confidence intervals, mislabel detection, and
how much each figure moves between the two replicas (other seed, same data), which is what a re-run on
another machine changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from tracin.cli.boundary import run_command
from tracin.config import replicas_by_role, split_variant
from tracin.errors import TracinError
from tracin.files import write_atomic
from tracin.results.agreement import (
    MIN_PAIRING_REPLICAS,
    OWN_VS_OTHER,
    detectable_by_pairings,
    format_agreement,
    format_agreement_by_depth,
    pairing_matrix,
    pairing_noise,
)
from tracin.results.detection import detection_summary, detection_table, mislabel_curves
from tracin.results.markdown import groups_markdown, quality_report_markdown, report_verdicts, validation_markdown
from tracin.results.sanity import INHERITED, MODEL_ROWS
from tracin.results.statistics import overlap_at_k
from tracin.results.store import ScoreFile, rankings_name
from tracin.results.store.checks import check_finished

START, END = "<!-- demo-figures:start -->", "<!-- demo-figures:end -->"
VARIANTS_START, VARIANTS_END = "<!-- variants-figures:start -->", "<!-- variants-figures:end -->"
VALIDATION_START, VALIDATION_END = "<!-- validation-figures:start -->", "<!-- validation-figures:end -->"
QUALITY_START, QUALITY_END = "<!-- quality-report:start -->", "<!-- quality-report:end -->"
SWEEP_START, SWEEP_END = "<!-- sweep-results:start -->", "<!-- sweep-results:end -->"
CONTROL_START, CONTROL_END = "<!-- positive-control:start -->", "<!-- positive-control:end -->"
HEADLINE_START, HEADLINE_END = "<!-- headline:start -->", "<!-- headline:end -->"
REPO = Path(__file__).resolve().parents[1]
DOC, FRONT = REPO / "docs" / "results.md", REPO / "README.md"
# the losses the headline reads, in order of preference (docs/cli.md, "Which losses by default")
HEADLINE_LOSSES = ("--test-label prediction", "defaults")


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
        raise TracinError(
            f"{', '.join(unfinished)} not trained to the end: finish the demo (run scripts/demo again) first"
        )
    accuracy = {name: entry["metrics"]["test_acc"] for name, entry in record["models"].items()}
    header = ["model", "parameters", *[f"test accuracy, replica {r}" for r in range(max(map(len, by_role.values())))]]
    rows = [
        [role, f"{record['param_counts'][role]:,}", *[f"{accuracy[n]:.1%}" for n in names]]
        for role, names in by_role.items()
    ]
    return markdown(header, rows), accuracy


def whole_model(variant: str) -> bool:
    """Whether a variant scores every parameter (not VARIANT@GROUP, one layer group's)."""
    return split_variant(variant)[1] is None


def quality_section(store: ScoreFile) -> str:
    table = store.read_table("quality")
    table = table[[whole_model(v.decode()) for v in table["variant"]]]  # the groups': group_section
    header = [
        "model",
        "variant",
        "same class, top-1",
        "same class, top-10",
        "most common top-1 proponent serves",
        "distinct in all top-10",
    ]
    rows = [
        [
            r["model"].decode(),
            r["variant"].decode(),
            f"{r['identical_class_top1']:.1%}",
            f"{r['identical_class_topk']:.1%}",
            f"{r['top1_max_share']:.1%}",
            r["distinct_in_topk"],
        ]
        for r in table
    ]
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
    quality = {(r["model"].decode(), r["variant"].decode()): r for r in store.read_table("quality")}
    variants = [v for v in store.model(store.models[0]).variants if whole_model(v)]
    for variant in variants:
        for role, names in by_role.items():
            first, second = quality[(names[0], variant)], quality[(names[1], variant)]
            add(
                f"{role}, {variant}: same class top-1",
                first["identical_class_top1"],
                second["identical_class_top1"],
                True,
            )
            add(f"{role}, {variant}: most common top-1 serves", first["top1_max_share"], second["top1_max_share"], True)
    teachers, students = by_role.get("teacher", []), by_role.get("student", [])
    for variant in variants if teachers and students else ():
        add(
            f"teacher-student overlap@{k}, {variant}",
            pair_overlap(store, teachers[0], students[0], variant, k),
            pair_overlap(store, teachers[1], students[1], variant, k),
        )
    if store.noisy.any():
        areas = {r["ranking"]: r["area"] for r in detection_summary(mislabel_curves(store, store.models))}
        for role, names in by_role.items():
            add(
                f"{role}: mislabel detection AUC (self-influence)",
                areas[f"{names[0]}: self-influence"],
                areas[f"{names[1]}: self-influence"],
            )
    return markdown(["figure", "replica 0", "replica 1", "difference"], rows)


def detection_name(model: str, variant: str) -> Optional[str]:
    """The mislabel_curves name of the ranking by a variant's self-influence (None for cosine ones: their
    self-influence is the same for every example)."""
    base, group = split_variant(variant)
    if base == "cosine":
        return None
    name = f"{model}: self-influence" + (", train-normalised" if base == "train-normalised" else "")
    return name + (f", {group} only" if group else "")


def area_cell(areas: dict, model: str, variant: str) -> str:
    """A mislabel AUC as a cell; "-" where the file lacks that self-influence (scored by an older version)."""
    area = areas.get(detection_name(model, variant))
    return "-" if area is None else f"{area:.3f}"


def group_section(store: ScoreFile) -> str:
    """Per layer group of the teacher and student (replica 0): its share of the self-influence mass,
    mislabel detection by its raw and train-normalised self-influence alone, and (where the group's
    train-normalised scores were kept) its quality checks, beside all parameters."""
    models = [m for m in ("teacher", "student") if m in store.models]
    areas = {r["ranking"]: r["area"] for r in detection_summary(mislabel_curves(store, models, groups=True))}
    quality = {(r["model"].decode(), r["variant"].decode()): r for r in store.read_table("quality")}
    rows = []
    for model in models:
        scores = store.model(model)
        total = float(scores.self_influence.sum())
        parts = [
            ("all parameters", "", 1.0),
            *((group, f"@{group}", v.sum() / total) for group, v in scores.group_self_influence.items()),
        ]
        for group, suffix, share in parts:
            q = quality.get((model, f"train-normalised{suffix}"))
            rows.append(
                [
                    model,
                    group,
                    f"{share:.0%}",
                    area_cell(areas, model, "raw" + suffix),
                    area_cell(areas, model, "train-normalised" + suffix),
                    f"{q['identical_class_top1']:.1%}" if q else "-",
                    f"{q['top1_max_share']:.1%}" if q else "-",
                ]
            )
    return markdown(
        [
            "model",
            "layer group",
            "share of the raw self-influence",
            "mislabel AUC, raw",
            "mislabel AUC, train-normalised",
            "same class top-1, train-normalised",
            "most common top-1 serves, train-normalised",
        ],
        rows,
    )


def depth_section(agreement) -> str:
    """The agreement by depth as a fenced block, when the demo scored layer-group variants."""
    text = format_agreement_by_depth(agreement)
    return (
        (
            "**Agreement by depth** (each layer group's train-normalised scores alone: at which depth do teacher "
            f"and student lean on the same examples, against the replicas?):\n\n```\n{text}\n```"
        )
        if text
        else ""
    )


def figures(run: Path, scores: Path) -> str:
    """The demo part of docs/results.md, from the run's files and its score file."""
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
            "```\n" + format_agreement(store.read_table("agreement")) + "\n```",
            depth_section(store.read_table("agreement")),
            detection_table(mislabel_curves(store, store.models)) if store.noisy.any() else "",
            "**By layer group** (which depth carries the self-influence, what each depth alone finds, and how its "
            "proponents fare):"
            if store.noisy.any()
            else "",
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
        setting = (
            f"{run.name}: noise {record['data_config']['label_noise']:.0%}, data seed {record['data_config']['seed']}"
        )
        with ScoreFile.open_read(run / "tracin.h5") as store:
            check_finished(store)
            quality = {(r["model"].decode(), r["variant"].decode()): r for r in store.read_table("quality")}
            if not store.noisy.any():
                raise TracinError(f"{run} has no flipped labels: the variants table compares mislabel detection")
            areas = {
                r["ranking"]: r["area"] for r in detection_summary(mislabel_curves(store, store.models, groups=True))
            }
            agreement = store.read_table("agreement")
            for variant in store.model(store.models[0]).variants:
                chosen = agreement[
                    (agreement["variant"] == variant.encode())
                    & (agreement["comparison"] == b"normalised teacher-student")
                    & (np.char.startswith(agreement["statistic"], b"overlap@"))
                ]
                normalised = (
                    f"{chosen[0]['mean']:.2f} [{chosen[0]['ci_low']:.2f}, {chosen[0]['ci_high']:.2f}]"
                    if len(chosen)
                    else "-"
                )
                for role in ("teacher", "student"):
                    if (role, variant) not in quality:  # a layer group the student does not have
                        continue
                    q = quality[(role, variant)]
                    area = areas.get(detection_name(role, variant))
                    detection = "none (constant)" if area is None else f"{area:.3f}"
                    rows.append(
                        [
                            setting,
                            variant,
                            role,
                            f"{q['identical_class_top1']:.1%}",
                            f"{q['top1_max_share']:.1%}",
                            detection,
                            f"{areas[f'{role}: loss (last checkpoint)']:.3f}",
                            normalised if role == "teacher" else "",
                        ]
                    )
    header = [
        "run",
        "variant",
        "model",
        "same class, top-1",
        "most common top-1 serves",
        "mislabel AUC, self-influence",
        "mislabel AUC, loss",
        "normalised teacher-student overlap [95% CI]",
    ]
    return "\n\n".join(
        [
            f"{VARIANTS_START}\n<!-- generated by scripts/readme_figures.py --second; edit that script, not this text -->",
            markdown(header, rows),
            VARIANTS_END,
        ]
    )


def validation_figures(scores: Path) -> str:
    """tracin-validate's tables of a score file, with the settings, time and machine they came from."""
    with ScoreFile.open_read(scores) as store:
        record = store.validation()
        leave_out, lds = record.tables()
        settings, provenance = record.settings, record.provenance
    plan, machine = settings["plan"], provenance["machine"]
    epochs = settings["epochs"] or "the run's"
    said = (
        f"Measured {provenance['finished']} on {machine['cpu']} ({machine['cores']} cores), {machine['device']}, torch "
        f"{machine['torch']}: **{provenance['retraining_seconds']:.0f} s** of retraining for {', '.join(plan['models'])}: "
        f"{len(plan['test_rows'])} sampled test examples x k = {plan['k']} (seeds: {plan['seeds']}), {plan['subsets']} LDS "
        f"subsets of {plan['fraction']:.0%} of the train examples, {epochs} epochs, removals by the "
        f"{', '.join(f'`{v}`' for v in plan['variants'])} scores."
    )
    body = validation_markdown(leave_out, lds).split("\n\n", 1)[1]  # without its title
    return "\n\n".join(
        [
            f"{VALIDATION_START}\n<!-- generated by scripts/readme_figures.py --validation; edit that script, not this text -->",
            said,
            body.rstrip("\n"),
            VALIDATION_END,
        ]
    )


def quality_figures(runs: list[Path]) -> str:
    """quality_figures_of each run, between one pair of markers."""
    parts = [quality_figures_of(run) for run in runs]
    return "\n\n".join(
        [
            f"{QUALITY_START}\n<!-- generated by scripts/readme_figures.py --quality; edit that script, not this text -->",
            *parts,
            QUALITY_END,
        ]
    )


def quality_figures_of(run: Path) -> str:
    """tracin-report's table (whole-model variants) and verdicts of a run's score file, with the run's
    planted data, the time and the machine they came from."""
    record = json.loads((run / "run.json").read_text())
    data = record["data_config"]
    with ScoreFile.open_read(run / "tracin.h5") as store:
        table, provenance = store.read_table("quality_report"), store.table_attrs("quality_report")["provenance"]
        said = report_verdicts(store, table)
        n_train, n_test, n_stamped = store.n_train, store.n_test, int(store.train_stamped.sum())
    machine = provenance["machine"]
    planted = [
        f"coarse labels `{data['coarse_labels']}`" if data.get("coarse_labels") else "",
        f"a shortcut on {n_stamped} training images of class {data['shortcut_class']}"
        if data.get("shortcut_class") is not None
        else "",
        f"{data['label_noise']:.0%} flipped labels" if data.get("label_noise") else "",
    ]
    said_run = (
        f"**Run `{run.name}`**: {data['dataset']}, {n_train:,} train and {n_test:,} test examples scored, with "
        f"{', '.join(p for p in planted if p) or 'nothing planted'}. Report made {provenance['finished']} on {machine['cpu']} "
        f"({machine['cores']} cores), {machine['device']}, torch {machine['torch']}, in {provenance['seconds']:.0f} s"
        + (
            f" (model randomization, kept in the file from the run that computed it: {provenance['randomization_seconds']:.0f} s)."
            if provenance.get("randomization_seconds")
            else "."
        )
    )
    body = quality_report_markdown(table).split("\n", 3)[3].replace("\n## ", "\n#### ")  # without its title and note
    by_group = groups_markdown(table)
    group_part = (
        [f"By layer group (each group's scores alone; means, CIs in `quality_report.md`):\n\n{by_group.strip()}"]
        if by_group
        else []
    )
    return "\n\n".join([said_run, body.strip("\n"), *group_part, "\n".join(f"- {line}" for line in said)])


def sweep_figures(folders: list[Path]) -> str:
    """Each tracin-sweep's results table with its command, date and machine (sweep.json), between one pair of
    markers."""
    parts = []
    for folder in folders:
        record = json.loads((folder / "sweep.json").read_text())
        machine = record["machine"]
        parts += [
            f"`{' '.join(record['command'])}`, finished {record['finished']} on {machine['cpu']} ({machine['cores']} "
            f"cores), {machine['device']}, torch {machine['torch']}:",
            (folder / "results.md").read_text().strip("\n"),
        ]
    return "\n\n".join(
        [
            f"{SWEEP_START}\n<!-- generated by scripts/readme_figures.py --sweep; edit that script, not this text -->",
            *parts,
            SWEEP_END,
        ]
    )


# The score files scripts/positive_control writes, one per choice of the losses TracIn differentiates
SCORINGS = {
    "tracin.h5": "defaults",
    "tracin_prediction.h5": "--test-label prediction",
    "tracin_kd_train.h5": "--loss kd-train",
    "tracin_kd_train_prediction.h5": "--loss kd-train --test-label prediction",
}
DEFAULT_VARIANT = "train-normalised"
CHOICE_CHECKS = {  # the quality checks that decide the losses: (run label, check, models)
    "demo setting": [
        ("identical class top-10", ("teacher", "student", "student_baseline")),
        ("mislabel AUC", ("teacher", "student", "student_baseline")),
        ("randomization: all layers (lower)", ("teacher", "student", "student_baseline")),
    ],
    "positive control": [
        ("identical class top-10", ("teacher", "student", "student_baseline")),
        ("predicted-as-shortcut shortcut AUPRC", ("teacher", "student", "student_baseline")),
        (f"{INHERITED}: own - other teacher@100, stamped", ("student",)),
    ],
}
SIMULATED_REPLICAS = (4, 6)


def scored_files(run: Path) -> dict[str, Path]:
    """The run's score files among SCORINGS, in their order; the default file must be there."""
    found = {name: run / name for name in SCORINGS if (run / name).exists()}
    if "tracin.h5" not in found:
        raise TracinError(f"{run} has no tracin.h5: run scripts/positive_control first")
    return found


def _ci(value: float, low: float, high: float, signed: bool = True) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]" if np.isfinite(value) else "-"


def own_vs_other_cell(table: np.ndarray, variant: str, statistic: str) -> str:
    """own - other teacher of one variant and statistic: mean [CI], and p where the pairings allow p < 0.05."""
    match = table[
        (table["variant"] == variant.encode())
        & (table["statistic"] == statistic.encode())
        & (table["comparison"] == OWN_VS_OTHER.encode())
    ]
    if not len(match):
        return "-"
    r = match[0]
    p = f", p = {r['p_value']:.3f}" if r["pairs"] >= MIN_PAIRING_REPLICAS and np.isfinite(r["p_value"]) else ""
    return _ci(r["mean"], r["ci_low"], r["ci_high"]) + p


def report_cell(report: np.ndarray, check: str, model: str, variant: str) -> str:
    match = report[
        (report["check"] == check.encode())
        & (report["model"] == model.encode())
        & (report["variant"] == variant.encode())
    ]
    return _ci(match[0]["value"], match[0]["ci_low"], match[0]["ci_high"], signed=False) if len(match) else "-"


def pairing_cells(store: ScoreFile, variant: str, statistic: str) -> list[str]:
    """The pairing noise of own - other teacher (agreement.pairing_noise) and the difference the pairing test
    would see with 80% power at each of SIMULATED_REPLICAS (agreement.detectable_by_pairings, simulated)."""
    models = list(store.models)
    noise = pairing_noise(pairing_matrix(store, models, variant, statistic))
    if not np.isfinite(noise):  # too few replicas to tell pairing noise from teachers and students
        return ["-"] * (1 + len(SIMULATED_REPLICAS))
    return [f"{noise:.4f}", *(f"{detectable_by_pairings(noise, replicas):.3f}" for replicas in SIMULATED_REPLICAS)]


def control_figures(control: Path, demo: Path) -> str:
    """The headline question (own - other teacher) on the demo's setting beside the known-positive control
    (scripts/positive_control), for each score file the recipe makes (SCORINGS): each whole-model variant's
    own - other teacher on every test row with its CI and permutation p (tracin-score's agreement table), what
    the replica pairings could see (simulated), the control's behaviour and attribution rows and the quality
    checks that decide the losses (tracin-report), and the default variant's verdicts; with each run's data,
    date and machine."""
    runs = {"demo setting": demo, "positive control": control}
    files = {label: scored_files(run) for label, run in runs.items()}
    scorings = [name for name in SCORINGS if all(name in found for found in files.values())]
    tables, reports, power, lines, stamps = {}, {}, {}, [], []
    for label, run in runs.items():
        for name in scorings:
            with ScoreFile.open_read(files[label][name]) as store:
                agreement, report, provenance = (
                    store.read_table("agreement"),
                    store.read_table("quality_report"),
                    store.table_attrs("quality_report")["provenance"],
                )
                replicas = len(replicas_by_role(store.models).get("teacher", {}))
                said = report_verdicts(store, report)
                k = max(
                    int(s.decode().removeprefix("overlap@"))
                    for s in agreement["statistic"]
                    if s.startswith(b"overlap@")
                )
                whole = [v for v in dict.fromkeys(agreement["variant"].astype(str)) if split_variant(v)[1] is None]
                power[label, name] = {v: pairing_cells(store, v, f"overlap@{k}") for v in whole}
                n_train, n_test = store.n_train, store.n_test
            tables[label, name], reports[label, name] = agreement, report
            if name == "tracin.h5":
                machine = provenance["machine"]
                stamps.append(
                    f"`{run.name}` ({label}): {n_train:,} train x {n_test:,} test examples, {replicas} replicas; "
                    f"reports made from {provenance['finished']} on {machine['cpu']} ({machine['cores']} cores), "
                    f"{machine['device']}, torch {machine['torch']}"
                )
            lines += [
                f"- {label}, {SCORINGS[name]}: {line}" for line in said if _headline(line, name, main_variant(report))
            ]
    first = tables["demo setting", "tracin.h5"]
    whole = [
        (v.decode(), s.decode())
        for v, s, c in zip(first["variant"], first["statistic"], first["comparison"])
        if c == OWN_VS_OTHER.encode() and split_variant(v.decode())[1] is None
    ]
    agreement_rows = [
        [
            variant,
            statistic,
            SCORINGS[name],
            *(own_vs_other_cell(tables[label, name], variant, statistic) for label in runs),
        ]
        for variant, statistic in whole
        for name in scorings
    ]
    power_rows = [
        [variant, SCORINGS[name], *(cell for label in runs for cell in power[label, name][variant])]
        for variant in power["demo setting", "tracin.h5"]
        for name in scorings
    ]
    simulated = [f"detectable, {r} replicas" for r in SIMULATED_REPLICAS]
    report = reports["positive control", "tracin.h5"]
    mine = report[np.char.startswith(report["check"], INHERITED.encode()) & (report["variant"] == MODEL_ROWS.encode())]
    behaviour = [
        [
            r["check"].decode().removeprefix(f"{INHERITED}: "),
            r["model"].decode(),
            _ci(r["value"], r["ci_low"], r["ci_high"], signed=False),
            str(r["n_rows"]),
        ]
        for r in mine
    ]
    attribution = [
        (r["check"].decode(), r["variant"].decode())
        for r in report
        if r["check"].startswith(INHERITED.encode())
        and r["variant"] != MODEL_ROWS.encode()
        and b"@" not in r["variant"]
    ]
    attribution_rows = [
        [
            check.removeprefix(f"{INHERITED}: "),
            variant,
            *(report_cell(reports["positive control", name], check, "student", variant) for name in scorings),
        ]
        for check, variant in attribution
    ]
    variant = main_variant(report)  # the control's default file's
    choice_rows = [
        [label, check, model, *(report_cell(reports[label, name], check, model, variant) for name in scorings)]
        for label, checks in CHOICE_CHECKS.items()
        for check, models in checks
        for model in models
    ]
    return "\n\n".join(
        [
            f"{CONTROL_START}\n<!-- generated by scripts/readme_figures.py --control; edit that script, not this text -->",
            "\n".join(f"- {stamp}" for stamp in stamps),
            "Own - other teacher on every test row, for each choice of losses (mean over test examples [95% bootstrap CI]; the "
            "permutation p over the replica pairings where they allow p < 0.05):",
            markdown(["variant", "statistic", "losses", *runs], agreement_rows),
            f"What the replica pairings can see (overlap@{k}): the pairing noise is the spread of teacher i - student j agreement "
            "that no teacher or student explains (agreement.pairing_noise); the detectable difference is the own - other teacher "
            "difference the permutation test finds (p < 0.05) in 80% of simulated replica sets with that noise "
            "(agreement.detectable_by_pairings, 2,000 simulations):",
            markdown(
                ["variant", "losses", *(f"{label}: {c}" for label in runs for c in ("pairing noise", *simulated))],
                power_rows,
            ),
            "The positive control's behaviour (the share of test images of other classes a model takes for its replica teacher's "
            "shortcut class; the same in every score file):",
            markdown(["check", "model", "value [95% CI]", "test rows"], behaviour),
            "Its attribution rows (the distilled student's own - other teacher overlap@k on the stamped test images of other "
            "classes, and on those it takes for its teacher's class), per choice of losses:",
            markdown(["check", "variant", *(SCORINGS[name] for name in scorings)], attribution_rows),
            f"The quality checks that decide the default losses ({variant}; mean [95% CI] over test examples or "
            "train examples):",
            markdown(["setting", "check", "model", *(SCORINGS[name] for name in scorings)], choice_rows),
            f"Verdicts ({variant}):",
            "\n".join(lines),
            CONTROL_END,
        ]
    )


def main_variant(report: np.ndarray) -> str:
    """The variant the choice of losses is read on: the default one where the report has it, else its first."""
    variants = [
        v for v in dict.fromkeys(report["variant"].astype(str)) if v != MODEL_ROWS and split_variant(v)[1] is None
    ]
    return DEFAULT_VARIANT if DEFAULT_VARIANT in variants else variants[0]


def _headline(line: str, name: str, variant: str) -> bool:
    """The verdict lines of one variant that bear on the distillation question: own - other teacher,
    and the control's attribution (its behaviour once, from the default file)."""
    if "(behaviour)" in line:
        return name == "tracin.h5"
    if line.startswith("known-positive control (attribution)"):
        return f": {variant}," in line
    return line.startswith(f"{variant}, overlap@") and "own teacher" in line


def lds_lines(validation: str, variant: str) -> list[str]:
    """From a validation part (its text, as validation_figures made it): the line saying when and where it
    was measured, and the LDS table's header and the rows of each model's own scores by `variant`, copied
    word for word; [] where the part holds no LDS table."""
    lines = validation.splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("| retrained model | scores of | variant | LDS")]
    if not header:
        return []
    start = header[0]
    cells = lambda line: [cell.strip() for cell in line.strip("|").split("|")]  # noqa: E731
    own = [
        line
        for line in lines[start + 2 :]
        if line.startswith("| ") and cells(line)[0] == cells(line)[1] and cells(line)[2] == variant
    ]
    measured = [line for line in lines if line.startswith("Measured ")][:1]
    return [*measured, "", lines[start], lines[start + 1], *own] if own else []


def headline_part(control: str, source: str, validation: Optional[str] = None) -> str:
    """The README's headline: from a positive-control part (its text, as control_figures made it), the
    verdicts of own - other teacher on the demo's setting and on the control, and the control's behaviour,
    for the first of HEADLINE_LOSSES the part holds, copied word for word; and from the validation part
    (`validation`, where the document has one) the LDS of each model's own scores by the headline's variant."""
    verdicts = [
        line[2:]
        for line in control.splitlines()
        if line.startswith("- demo setting, ") or line.startswith("- positive control, ")
    ]
    for losses in HEADLINE_LOSSES:
        demo = [
            v
            for v in verdicts
            if v.startswith(f"demo setting, {losses}: ") and "own teacher" in v and "known-positive" not in v
        ]
        own = [
            v
            for v in verdicts
            if v.startswith(f"positive control, {losses}: ") and "own teacher" in v and "known-positive" not in v
        ]
        if demo and own:
            break
    else:
        raise TracinError(f"{source}: its positive-control part holds no verdict of the demo's setting and the control")
    behaviour = [v for v in verdicts if v.startswith("positive control, ") and "control (behaviour)" in v][:1]
    runs = [line for line in control.splitlines() if line.startswith("- `")]  # each run: its size, date and machine
    variant = demo[0].split(": ", 1)[1].split(",")[0]  # "demo setting, LOSSES: VARIANT, overlap@k: ..."
    lds = lds_lines(validation or "", variant)
    counterfactual = (
        [
            "Do the scores predict what retraining does? The linear datamodeling score (the Spearman correlation, "
            "over models retrained on random halves of the train set, between a half's summed scores and the "
            "margin its model gives) of each model's own scores on the demo's setting:",
            "",
            *lds,
            "",
            "Leave-top-k-out, the replica ensembles and the teacher's scores beside each student's own: "
            "[docs/results.md](docs/results.md#validation-tracin-validate).",
            "",
        ]
        if lds
        else []
    )
    return "\n".join(
        [
            HEADLINE_START,
            f"<!-- copied by scripts/readme_figures.py from the positive-control part of {source}; edit that script, not this text -->",
            "",
            f"**Does a distilled student lean on its own teacher's training data?** On the demo's setting "
            f"(scored with {losses}):",
            "",
            *[f"- {line}" for line in demo],
            "",
            "The same measure, at the same size, on a known-positive control whose students inherit their teacher's "
            "planted shortcut by construction:",
            "",
            *[f"- {line}" for line in behaviour + own],
            "",
            *counterfactual,
            "The runs:",
            "",
            *runs,
            "",
            'How these were made, the other choices of losses, and what a "no" is worth: '
            "[docs/results.md](docs/results.md#can-it-see-an-imprint-the-known-positive-control).",
            "",
            HEADLINE_END,
        ]
    )


def part_of(text: str, start: str, end: str) -> Optional[str]:
    """The part of a document's text between one pair of markers (None where it has no such part)."""
    if text.count(start) != 1 or text.count(end) != 1:
        return None
    return text.split(start)[1].split(end)[0]


def replace_part(text: str, start: str, end: str, part: str, readme: Path) -> str:
    if text.count(start) != 1 or text.count(end) != 1:
        raise TracinError(f"{readme} needs one {start} and one {end} marker around the generated figures")
    before, rest = text.split(start)
    return before + part + rest.split(end, 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--run", default="checkpoints/demo", help="the demo's run folder (default: %(default)s)")
    parser.add_argument("--scores", help="the demo's score file (default: RUN/tracin.h5)")
    parser.add_argument("--second", help="a demo run on another noise rate and data seed, for the variants table")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="also the tracin-validate tables of the run's score file (tracin-validate --run RUN first)",
    )
    parser.add_argument(
        "--quality",
        metavar="RUN",
        nargs="+",
        help="also tracin-report's quality report of each RUN (scripts/sanity: checkpoints/sanity)",
    )
    parser.add_argument(
        "--sweep", metavar="DIR", nargs="+", help="also each tracin-sweep's results (e.g. checkpoints/temperature)"
    )
    parser.add_argument(
        "--control",
        metavar=("CONTROL", "DEMO"),
        nargs=2,
        help="also the known-positive control beside the demo's setting (scripts/positive_control, with --setting demo)",
    )
    parser.add_argument("--no-demo", action="store_true", help="leave the demo's own part as it is")
    parser.add_argument(
        "--doc",
        "--readme",
        dest="doc",
        default=str(DOC),
        help="the document the parts go in (default: docs/results.md)",
    )
    parser.add_argument(
        "--front",
        help="the front page whose headline the control part rewrites (default: README.md, when --doc is the default)",
    )
    parser.add_argument(
        "--headline",
        action="store_true",
        help="copy the headline again from the document's positive-control part (the demo's part is left as it is)",
    )
    parser.add_argument("--print", action="store_true", help="print the parts instead of rewriting the document")
    args = parser.parse_args()

    def work() -> None:
        parts = (
            {}
            if args.no_demo or args.headline
            else {(START, END): figures(Path(args.run), Path(args.scores or Path(args.run) / "tracin.h5"))}
        )
        if args.control:
            parts[(CONTROL_START, CONTROL_END)] = control_figures(Path(args.control[0]), Path(args.control[1]))
        if args.second:
            parts[(VARIANTS_START, VARIANTS_END)] = variants_figures([Path(args.run), Path(args.second)])
        if args.validation:
            parts[(VALIDATION_START, VALIDATION_END)] = validation_figures(
                Path(args.scores or Path(args.run) / "tracin.h5")
            )
        if args.quality:
            parts[(QUALITY_START, QUALITY_END)] = quality_figures([Path(run) for run in args.quality])
        if args.sweep:
            parts[(SWEEP_START, SWEEP_END)] = sweep_figures([Path(folder) for folder in args.sweep])
        if args.print:
            print("\n\n".join(parts.values()))
            return
        doc = Path(args.doc)
        text = doc.read_text()
        for (start, end), part in parts.items():
            text = replace_part(text, start, end, part, doc)
        if parts:
            write_atomic(doc, lambda handle: handle.write(text.encode()))
            print(f"rewrote {len(parts)} generated part(s) of {doc}")
        front = Path(args.front) if args.front else FRONT if doc.resolve() == DOC else None
        if front is not None and (args.control or args.headline):
            source = doc.resolve().relative_to(REPO).as_posix() if doc.resolve().is_relative_to(REPO) else doc.name
            validation = part_of(text, VALIDATION_START, VALIDATION_END)
            control = part_of(text, CONTROL_START, CONTROL_END)
            if control is None:
                raise TracinError(f"{doc} needs one {CONTROL_START} and one {CONTROL_END} marker")
            headline = headline_part(CONTROL_START + control + CONTROL_END, source, validation)
            page = replace_part(front.read_text(), HEADLINE_START, HEADLINE_END, headline, front)
            write_atomic(front, lambda handle: handle.write(page.encode()))
            print(f"rewrote the headline of {front}")

    return run_command("readme_figures", work, "run scripts/demo first")


if __name__ == "__main__":
    sys.exit(main())
