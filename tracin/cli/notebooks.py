"""`tracin notebooks`: execute the package's notebooks (tracin.notebooks) on a score file, and export them to HTML.

Each notebook's first code cell (tagged "parameters") names the HDF5 file; it is replaced by the values given
here before the notebook runs in a fresh kernel (nbclient). A notebook whose metadata says it needs what the
score file lacks (`"tracin": {"needs": ["flipped-labels"]}`, a name of NEEDS) is skipped with one line; the
others still run. A cell that raises fails that notebook, and the command ends with one line per failure.
Needs the `notebooks` extra (nbclient, nbformat, nbconvert, ipykernel).
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tracin.cli.boundary import arguments, run_command
from tracin.cli.parsing import Parser, command_parser, options_from
from tracin.errors import TracinError
from tracin.files import check_made_of, head_holds, made_of_marks, refuse_link, refuse_links, write_atomic
from tracin.options import NotebooksOptions


def notebook_folder() -> Path:
    """The notebooks' folder: the repository's notebooks/ in an editable install, else the installed copy."""
    try:
        return Path(str(importlib.resources.files("tracin.notebooks")))
    except ModuleNotFoundError:
        raise TracinError(
            "the notebooks are not installed (tracin.notebooks): install the package with pip install '.[notebooks]'"
        ) from None


@dataclass(frozen=True)
class Need:
    """Something a notebook needs from a score file: `holds(store)`, and why it is skipped when not."""

    holds: Callable[[Any], bool]
    missing: str


NEEDS = {
    "flipped-labels": Need(
        lambda store: bool(store.noisy.any()),
        "the run flipped no training label (train with tracin-train --label-noise P to study detection)",
    ),
}


MARK = '<meta name="generator" content="tracin-notebooks">'  # in every page's head: a file without it is kept


def _check_page(page: Path, scores: Path, identity: str) -> None:
    """Refuse to replace a page tracin-notebooks did not write, or wrote of another score file (round 13, Z3,
    M4: a colleague's page, or the pages of another file, were replaced without a word; round 18, N8, N9:
    known by the file's identity, not its path)."""
    if not page.exists():  # a link there was refused before
        return
    if not head_holds(page, MARK):  # a folder or FIFO there too (round 17, N4, N5: replaced, or a traceback)
        raise TracinError(f"{page} exists and is not a page tracin-notebooks wrote; it is left as it is")
    check_made_of(page, scores, identity, "a notebook page", "move the pages away, or choose another OUT_DIR")


def _parameters_cell(notebook) -> Any:
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("the notebook has no cell tagged 'parameters'")


def execute_notebook(
    path: str | Path,
    parameters: dict[str, Any],
    html: Optional[str | Path] = None,
    timeout: int = 600,
    identity: str = "",
):
    """Run the notebook at `path` with `parameters` (name -> Python literal value) in a fresh kernel;
    write it as HTML to `html` if given, its head naming the score file and its `identity`. Returns the
    executed notebook (the file itself is untouched)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(str(path), as_version=4)
    _parameters_cell(notebook).source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(Path(path).parent)}},
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    )  # no kernel chatter on the user's terminal
    client.execute(env={**os.environ, "TQDM_DISABLE": "1"})  # progress bars would be widgets ("IProgress not found")
    if html is not None:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(notebook)
        marks = f"{MARK}\n{made_of_marks(parameters['SCORES'], identity)}"
        body = body.replace("<head>", f"<head>\n{marks}", 1)
        refuse_link(html, "the HTML file")
        write_atomic(html, lambda handle: handle.write(body.encode()))
    return notebook


def skip_reason(path: Path, store) -> Optional[str]:
    """Why the notebook at `path` does not apply to the score file (its first unmet need), or None."""
    import nbformat

    needs = nbformat.read(str(path), as_version=4).metadata.get("tracin", {}).get("needs", [])
    unknown = [name for name in needs if name not in NEEDS]
    if unknown:
        raise ValueError(f"{path.name} needs {', '.join(unknown)}, which tracin.cli.notebooks.NEEDS does not define")
    return next((NEEDS[name].missing for name in needs if not NEEDS[name].holds(store)), None)


def build_parser() -> Parser:
    return command_parser(
        "tracin-notebooks",
        "Execute the notebooks on a tracin-score file and write each as HTML (OUT_DIR/NAME.html); a notebook that "
        "does not apply to the file (no flipped labels, say) is skipped with one line.",
        NotebooksOptions,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """tracin-notebooks SCORES OUT_DIR [DATA_ROOT]: every notebook that applies, to HTML in OUT_DIR."""
    args = build_parser().parse_args(arguments(argv))

    def work() -> None:
        from tracin.results.runs import refuse_linked_run

        refuse_linked_run(Path(args.scores))  # as given: the options resolve it through links
        options = options_from(NotebooksOptions, args, "tracin-notebooks")
        execute_all(Path(options.scores), Path(options.out_dir), options.data_root)

    return run_command("tracin-notebooks", work, "run the same command again")


def execute_all(scores: Path, out_dir: Path, data_root: Optional[str]) -> list[Path]:
    """Every notebook that applies to `scores`, as HTML in out_dir; returns the files written. The file is
    opened here first, so that a wrong path or a damaged file is one line, not a failed kernel."""
    from nbclient.exceptions import CellExecutionError

    from tracin.results.runs import open_trained_run, scored_run_folder
    from tracin.results.store import ScoreFile
    from tracin.results.store.checks import check_finished, replacement_notes

    with ScoreFile.open_read(scores) as store:
        check_finished(store)
        for note in replacement_notes(scores):  # round 29, R3: every other reader says it
            print(note, flush=True)
        # every notebook shows images: the run's data checked once here, not one failed kernel per notebook,
        # and a moved data root asked for as this command takes it (round 32, C12)
        open_trained_run(
            str(scored_run_folder(store)), data_root, flag="DATA_ROOT (tracin-notebooks SCORES OUT_DIR DATA_ROOT)"
        )
        skipped = {path: skip_reason(path, store) for path in sorted(notebook_folder().glob("*.ipynb"))}
        identity = store.identity
    refuse_link(out_dir, "OUT_DIR")  # the notebooks would land in the link's target (red-team X18)
    if out_dir.exists() and not out_dir.is_dir():
        raise TracinError(f"OUT_DIR {out_dir} exists and is not a folder")  # X14
    pages = [out_dir / f"{notebook.stem}.html" for notebook, reason in skipped.items() if reason is None]
    refuse_links(pages, "the HTML file")  # every page before the first notebook runs (X16, X17)
    for page in pages:
        _check_page(page, scores, identity)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, failed = [], []
    for notebook, reason in skipped.items():
        if reason is not None:
            print(f"notebook: {notebook.stem} skipped: {reason}", flush=True)
            continue
        html = out_dir / f"{notebook.stem}.html"
        try:
            execute_notebook(notebook, {"SCORES": str(scores), "DATA_ROOT": data_root}, html, identity=identity)
        except CellExecutionError as error:
            failed.append(f"{notebook.name} failed on {scores}: {error.ename}: {error.evalue}")  # F33: name the file
            continue
        written.append(html)
        print(f"notebook: {html}", flush=True)
    if failed:
        raise TracinError("; ".join(failed))
    return written


if __name__ == "__main__":
    raise SystemExit(main())
