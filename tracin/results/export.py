"""tracin-explore --export: the tables behind the page, as numpy columns (topk_table, overlap_table), pandas
DataFrames (frames), and CSV or Parquet files (write_tables).

An export folder holds topk.csv and overlap.csv (and .parquet where pyarrow is installed) and
tracin-export.json, which names the score file they are of (its resolved path and ScoreFile.identity). A
table is replaced only where its columns are those written here and the record names the same score file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tracin.errors import TracinError
from tracin.files import another_score_file, refuse_link, resolved, write_atomic, write_json_atomic
from tracin.results.explore import comparisons, overlap_counts, proponents, shown_models
from tracin.results.store import ScoreFile
from tracin.results.store.checks import check_finished
from tracin.schemas import EXPORT_JSON, load_json

EXPORT_COLUMNS = {  # of --export's tables, in order
    "topk": ("model", "variant", "test_index", "side", "rank", "train_index", "score", "flipped"),
    "overlap": ("comparison", "variant", "test_index", "k", "overlap"),
}
EXPORTS = ("topk.csv", "overlap.csv", "topk.parquet", "overlap.parquet")  # what --export writes
EXPORT_RECORD = "tracin-export.json"  # beside the tables: the score file they are of


def topk_table(store: ScoreFile, models: Sequence[str], k: int, variant: Optional[str] = None) -> dict[str, np.ndarray]:
    """Columns of the top-k lists, a row per (model, test example, side, rank): model, variant, test_index,
    side ("proponent" | "opponent"), rank (1 = strongest), train_index, score (float32 as stored), flipped."""
    columns: dict[str, list[np.ndarray]] = {name: [] for name in EXPORT_COLUMNS["topk"]}
    for name in models:
        scores = store.model(name)
        chosen = variant or scores.variants[0]
        if chosen not in scores.variants:
            continue
        ranking = scores.variant_rankings(chosen)[0]
        if k > ranking.top_index.shape[1]:
            raise TracinError(f"k = {k}: the file holds the top {ranking.top_index.shape[1]} of each test example")
        for side, index, score in (
            ("proponent", ranking.top_index, ranking.top_score),
            ("opponent", ranking.bottom_index, ranking.bottom_score),
        ):
            rows = np.asarray(index[:, :k])
            n = rows.size
            columns["model"].append(np.full(n, name, dtype=object))
            columns["variant"].append(np.full(n, chosen, dtype=object))
            columns["test_index"].append(np.repeat(store.test_index, k))
            columns["side"].append(np.full(n, side, dtype=object))
            columns["rank"].append(np.tile(np.arange(1, k + 1), len(rows)))
            columns["train_index"].append(store.train_index[rows.ravel()])
            columns["score"].append(np.asarray(score[:, :k]).ravel().astype(np.float32))
            columns["flipped"].append(store.noisy[rows.ravel()])
    return {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in columns.items()}


def overlap_table(
    store: ScoreFile, models: Sequence[str], k: int, variant: Optional[str] = None
) -> dict[str, np.ndarray]:
    """Columns of the per-test-example overlaps, a row per (comparison, test example): comparison, variant,
    test_index, k, overlap (shared top-k proponents / k, averaged over the comparison's model pairs)."""
    chosen = variant or store.model(models[0]).variants[0]
    columns: dict[str, list[np.ndarray]] = {name: [] for name in EXPORT_COLUMNS["overlap"]}
    holders = [name for name in models if chosen in store.model(name).variants]
    tops = proponents(store, holders, chosen)
    for comparison, pairs in comparisons(holders).items():
        values = overlap_counts(tops, pairs, k) / k
        columns["comparison"].append(np.full(len(values), comparison, dtype=object))
        columns["variant"].append(np.full(len(values), chosen, dtype=object))
        columns["test_index"].append(store.test_index)
        columns["k"].append(np.full(len(values), k))
        columns["overlap"].append(values)
    return {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in columns.items()}


def frames(path: str | Path, k: int = 10, variant: Optional[str] = None, models: Optional[Sequence[str]] = None):
    """(top-k lists, per-test overlaps) of a finished score file as pandas DataFrames (topk_table and
    overlap_table's columns). Needs pandas."""
    try:
        import pandas
    except ImportError:
        raise TracinError("frames() needs pandas: pip install pandas") from None
    with ScoreFile.open_read(Path(path)) as store:
        check_finished(store)
        chosen = shown_models(store, models)
        return (
            pandas.DataFrame(topk_table(store, chosen, k, variant)),
            pandas.DataFrame(overlap_table(store, chosen, k, variant)),
        )


def _exported(path: Path) -> bool:
    """Whether the file at `path` is a table --export wrote: its columns (a CSV's header, a Parquet file's
    schema) are those of EXPORT_COLUMNS (round 13, Z2: a colleague's topk.csv was replaced)."""
    columns = list(EXPORT_COLUMNS[path.stem])
    if not path.is_file():  # a FIFO is never opened (it would wait for a writer)
        return False
    try:
        if path.suffix == ".csv":
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.readline().rstrip("\r\n") == ",".join(columns)
        import pyarrow.parquet

        return pyarrow.parquet.read_schema(path).names == columns
    except Exception:  # unreadable, not Parquet, or no pyarrow to read it: not known to be ours
        return False


def write_tables(store: ScoreFile, models: Sequence[str], folder: Path, k: int) -> list[str]:
    """topk.csv and overlap.csv in `folder` (and topk.parquet, overlap.parquet where pyarrow is installed),
    after EXPORT_RECORD naming the score file (the folder checked again first: check_export); returns one
    line per file written, and one saying why Parquet was not."""
    check_export(folder, store.path, store.identity)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"written_by": "tracin-explore", "scores": resolved(store.path), "scores_sha256": store.identity}
    write_json_atomic(record, folder / EXPORT_RECORD)  # first: a table written is never one of another file
    said = []
    tables = {"topk": topk_table(store, models, k), "overlap": overlap_table(store, models, k)}
    for name, columns in tables.items():
        path = folder / f"{name}.csv"
        refuse_link(path, "the CSV file")
        write_atomic(path, lambda handle, columns=columns: _csv(handle, columns))
        said.append(f"explore: {path} ({len(next(iter(columns.values())))} rows)")
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        return said + ["explore: Parquet not written (pyarrow is not installed)"]
    for name, columns in tables.items():
        path = folder / f"{name}.parquet"
        refuse_link(path, "the Parquet file")
        table = pyarrow.table({c: list(v) if v.dtype == object else v for c, v in columns.items()})
        write_atomic(path, lambda handle, table=table: pyarrow.parquet.write_table(table, handle))
        said.append(f"explore: {path}")
    return said


def _csv(handle, columns: dict[str, np.ndarray]) -> None:
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    values = [v.tolist() for v in columns.values()]
    writer.writerows(zip(*values))
    text.flush()
    text.detach()


def check_export(export: Path, scores: Optional[Path], identity: Optional[str]) -> None:
    """Refuse --export into a link or over a file tracin-explore did not write there, or over tables of another
    score file than `identity`'s (as EXPORT_RECORD names: round 19, E5, the tables of another file were
    replaced without a word). Checked before any page is made, and again as the tables are written."""
    refuse_link(export, "--export")  # its tables would land in the link's target (red-team find L20)
    if export.exists() and not export.is_dir():
        raise TracinError(f"--export {export} exists and is not a folder")
    for name in EXPORTS:
        refuse_link(export / name, "an exported table")
        if (export / name).exists() and not _exported(export / name):
            raise TracinError(
                f"--export: {export / name} exists and is not a table tracin-explore wrote; it is left as it "
                "is (choose another folder)"
            )
    record = export / EXPORT_RECORD
    refuse_link(record, "the export's record")
    tables = [export / name for name in EXPORTS if (export / name).exists()]
    if not record.exists():
        if tables:
            raise TracinError(
                f"--export: {tables[0]} is not known to be a table of this score file (no {EXPORT_RECORD} beside it); "
                "it is left as it is (move it away, or choose another folder)"
            )
        return
    try:
        written = load_json(record, EXPORT_JSON)
    except TracinError as error:  # a colleague's file at the record's name, or one edited out of shape
        raise TracinError(
            f"--export: {record} is not a record tracin-explore wrote ({error}); it is left as it is (choose "
            "another folder)"
        ) from None
    if tables and identity is not None and written["scores_sha256"] != identity:  # no table: nothing to keep
        whose = another_score_file(same_path=written["scores"] == resolved(scores))
        raise TracinError(
            f"--export: {export} holds the tables of {whose}; they are left as they are (move them away, or "
            "choose another folder)"
        )


__all__ = [
    "EXPORTS",
    "EXPORT_COLUMNS",
    "EXPORT_RECORD",
    "check_export",
    "frames",
    "overlap_table",
    "topk_table",
    "write_tables",
]
