#!/usr/bin/env python
"""The measured tables of docs/engine.md, each from the logs of one folder of docs/measurements (a
`scripts/bench_engine.py` run, or a `scripts/gpu_session` run and later single steps saved beside it as
NN-name.log), so that no figure there is typed by hand.

    python scripts/bench_figures.py docs/measurements/cpu-2026-12-05               # print its section
    python scripts/bench_figures.py docs/measurements/* --write docs/engine.md     # rewrite every section

A folder's section sits between the markers `markers(folder)` names (the folder is in them); --write
replaces the text between them in that file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PROBLEM = re.compile(
    r"^device \S+, student width (\d+) stages (\d+) \(([\d,]+) parameters\), (\d+) checkpoints, (\d+) train x (\d+) test"
)
TIMING = re.compile(r"^  (\S+)\s+([\d.]+) s(?:\s+peak\s+([\d.]+) GiB)?\s*$")
PLAN = re.compile(r"^  plan of (\S+): memory (.*?) \(.*?\): (.*)$")
DIFFERENCE = re.compile(r"^  (.+?)\s{2,}(\d\.\d+e[-+]\d+)$")
RATIO = re.compile(r"^  (.+?)\s{2,}([\d.]+x .+?)\s*$")
ZOO_PROBLEM = "torchvision resnet18, its own data (--zoo-n-train x --zoo-n-test, in the folder's README)"
FAILED = re.compile(r"^(torch\.OutOfMemoryError|\w+Error): (.{0,60})")


def bench_rows(name: str, lines: list[str]) -> list[str]:
    """Markdown rows (log, problem, contestant, seconds, peak, plan) of one bench_engine log."""
    problem, plans, rows = "", {}, []
    for line in lines:
        if match := PROBLEM.match(line):
            width, stages, params, checkpoints, n_train, n_test = match.groups()
            role = "teacher" if stages == "4" else "student"
            problem = f"{role} ({params} parameters), {int(n_train):,} x {int(n_test):,}, {checkpoints} checkpoint(s)"
        elif match := PLAN.match(line):
            plans[match.group(1)] = f"{match.group(2)}: {match.group(3)}"
        elif match := TIMING.match(line):
            contestant, seconds, peak = match.groups()
            task = ZOO_PROBLEM if contestant.startswith("resnet18") else problem
            rows.append(f"| {name} | {task} | {contestant} | {seconds} | {peak or ''} | {plans.get(contestant, '')} |")
        elif match := FAILED.match(line):
            rows.append(f"| {name} | {problem} | (next contestant) | failed: {match.group(1)} | | |")
    return rows


def markers(folder: Path) -> tuple[str, str]:
    """The comments around the section of `folder` (as given: relative to the repository)."""
    return f"<!-- figures of {folder.as_posix()}: start -->", f"<!-- figures of {folder.as_posix()}: end -->"


def section(folder: Path) -> str:
    """The section of `folder`'s logs, markers included."""
    logs = sorted(folder.glob("*.log"))
    if not logs:
        raise SystemExit(f"bench_figures: no *.log in {folder}")
    start, end = markers(folder)
    machine = (
        (folder / "00-machine.log").read_text().strip().splitlines() if (folder / "00-machine.log").exists() else []
    )
    out = [
        start,
        "",
        f"Made by `python scripts/bench_figures.py {folder.as_posix()}` from the logs in that folder (its README",
        "says which code each ran).",
        "",
    ]
    out += ["```", *machine, "```", ""]
    rows = []
    ratios = []
    for log in logs:
        lines = log.read_text().splitlines()
        if any(PROBLEM.match(line) for line in lines):
            rows += bench_rows(log.stem, lines)
            ratios += [
                f"- {log.stem}: {m.group(1)} **{m.group(2)}**"
                for line in lines
                if (m := RATIO.match(line)) and "x " in m.group(2)
            ]
            ratios += [
                f"- {log.stem}: {m.group(1)}, max relative difference **{m.group(2)}**"
                for line in lines
                if (m := DIFFERENCE.match(line))
            ]
    out += [
        "| log | problem | contestant | seconds | peak GiB | plan (memory auto) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    out += ["Ratios and score differences, each within one process:", "", *ratios, ""]
    for path in (log for log in logs if log.stem.endswith(("gpu_check", "train-speed"))):  # shown as they are
        body = [line for line in path.read_text().splitlines() if not line.startswith("== ")]
        out += [f"`{path.stem}`:", "", "```", *body, "```", ""]
    out.append(end)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("folders", type=Path, nargs="+", metavar="folder")
    parser.add_argument("--write", type=Path, help="replace each folder's section between its markers in this file")
    args = parser.parse_args()
    if not args.write:
        print("\n\n".join(section(folder) for folder in args.folders))
        return
    document = args.write.read_text()
    for folder in args.folders:
        start, end = markers(folder)
        if document.count(start) != 1 or document.count(end) != 1:
            sys.exit(f"bench_figures: {args.write} needs one {start} and one {end}")
        head, rest = document.split(start, 1)
        document = head + section(folder) + rest.split(end, 1)[1]
    args.write.write_text(document)


if __name__ == "__main__":
    main()
