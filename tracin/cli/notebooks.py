"""Execute the notebooks in notebooks/ on a score file, and export them to HTML.

Each notebook's first code cell (tagged "parameters") names the HDF5 file; it is replaced by the values
given here before the notebook runs in a fresh kernel (nbclient). A cell that raises fails the run.
Needs the `dev` extra (nbclient, nbformat, nbconvert, ipykernel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from tracin.errors import TracinError

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _parameters_cell(notebook) -> Any:
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("the notebook has no cell tagged 'parameters'")


def execute_notebook(path: str | Path, parameters: dict[str, Any], html: Optional[str | Path] = None, timeout: int = 600):
    """Run the notebook at `path` with `parameters` (name -> Python literal value) in a fresh kernel;
    write it as HTML to `html` if given. Returns the executed notebook (the file itself is untouched)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(str(path), as_version=4)
    _parameters_cell(notebook).source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    if html is not None:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(notebook)
        Path(html).write_text(body)
    return notebook


def main(argv: Optional[list[str]] = None) -> int:
    """tracin-notebooks SCORES OUT_DIR [DATA_ROOT]: both notebooks to HTML in OUT_DIR."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3) or any(a.startswith("-") for a in args):
        print("usage: tracin-notebooks SCORES OUT_DIR [DATA_ROOT]  (both notebooks, executed, as HTML in OUT_DIR)", file=sys.stderr)
        return 2
    from tracin.cli.main import run_command

    scores, out_dir = Path(args[0]).resolve(), Path(args[1])
    data_root = args[2] if len(args) > 2 else None
    return run_command("tracin-notebooks", lambda: execute_all(scores, out_dir, data_root), "run the same command again")


def execute_all(scores: Path, out_dir: Path, data_root: Optional[str]) -> None:
    """Both notebooks on `scores`, as HTML in out_dir. The file is opened here first, so that a wrong
    path or a damaged file is one line, not a failed kernel; a cell that fails is named in one line."""
    from nbclient.exceptions import CellExecutionError

    from tracin.results.store import ScoreFile

    from tracin.results.report import check_finished

    with ScoreFile.open_read(scores) as store:
        check_finished(store)
    out_dir.mkdir(parents=True, exist_ok=True)
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        html = out_dir / f"{notebook.stem}.html"
        try:
            execute_notebook(notebook, {"SCORES": str(scores), "DATA_ROOT": data_root}, html)
        except CellExecutionError as error:
            raise TracinError(f"{notebook.name} failed: {error.ename}: {error.evalue}") from None
        print(f"notebook: {html}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
