#!/usr/bin/env python
"""The tables of docs/engine.md's GPU section, from the logs of one `scripts/gpu_session` run (and any
later single steps saved beside them as NN-name.log), so that no figure there is typed by hand.

    python scripts/gpu_figures.py docs/measurements/h200-2026-12-04                 # print the section
    python scripts/gpu_figures.py docs/measurements/h200-2026-12-04 --write docs/engine.md

--write replaces the text between the GPU_FIGURES markers of that file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

START, END = "<!-- gpu-figures: start -->", "<!-- gpu-figures: end -->"
PROBLEM = re.compile(
    r"^device \S+, student width (\d+) stages (\d+) \(([\d,]+) parameters\), (\d+) checkpoints, (\d+) train x (\d+) test"
)
TIMING = re.compile(r"^  (\S+)\s+([\d.]+) s(?:\s+peak\s+([\d.]+) GiB)?\s*$")
PLAN = re.compile(r"^  plan of (\S+): memory (.*?) \(.*?\): (.*)$")
DIFFERENCE = re.compile(r"^  (.+?)\s{2,}(\d\.\d+e[-+]\d+)$")
RATIO = re.compile(r"^  (.+?)\s{2,}([\d.]+x .+?)\s*$")
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
            rows.append(
                f"| {name} | {problem} | {contestant} | {seconds} | {peak or ''} | {plans.get(contestant, '')} |"
            )
        elif match := FAILED.match(line):
            rows.append(f"| {name} | {problem} | (next contestant) | failed: {match.group(1)} | | |")
    return rows


def section(folder: Path) -> str:
    logs = sorted(folder.glob("*.log"))
    if not logs:
        raise SystemExit(f"gpu_figures: no *.log in {folder}")
    machine = (
        (folder / "00-machine.log").read_text().strip().splitlines() if (folder / "00-machine.log").exists() else []
    )
    out = [
        START,
        "",
        f"Made by `python scripts/gpu_figures.py {folder}` from the logs in that folder (its README says",
        "which code each ran).",
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
    for stem in ("01-gpu_check", "05-train-speed"):
        path = folder / f"{stem}.log"
        if path.exists():
            body = [line for line in path.read_text().splitlines() if not line.startswith("== ")]
            out += [f"`{stem}`:", "", "```", *body, "```", ""]
    out.append(END)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--write", type=Path, help="replace the section between the markers in this file")
    args = parser.parse_args()
    text = section(args.folder)
    if not args.write:
        print(text)
        return
    document = args.write.read_text()
    if START not in document or END not in document:
        sys.exit(f"gpu_figures: {args.write} has no {START} ... {END} markers")
    head, rest = document.split(START, 1)
    args.write.write_text(head + text + rest.split(END, 1)[1])


if __name__ == "__main__":
    main()
