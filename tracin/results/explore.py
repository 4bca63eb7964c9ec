"""tracin-explore: one web page per score file, where a person picks a test image and sees, model beside
model, the training examples each one leans on.

The page opens from disk in any browser, with no server and no network: script and style are inline, and
so are the data while they stay under `max_inline_mb`. Beyond that (a full CIFAR-10 run: 10,000 test x 50,000
train examples, 6 models) the page itself stays small and its data go to a folder beside it, STEM_files/:

- block_NNNN.js: the lists of one block of BLOCK test examples, each a script that a <script> tag loads when
  a test example of the block is picked (browsers allow that from disk; fetch() they do not);
- img/tROW.png and img/rROW.png: each test image and each train image some list shows, loaded when shown.
- written-by-tracin-explore.txt (FOLDER_MARK), written first: a folder without it is not explore's, and
  is refused.

What the page shows comes from the file's own tables; only overlaps and counts are computed here:
- every test example: data-set index, label, stamp, and each model's prediction and confidence (filters);
- per variant, model and test example: the `depth` strongest proponents and opponents (train row and the
  float32 score as stored, bit for bit);
- per variant and comparison (tracin.results.agreement's pairs: teacher-student, student-baseline, the
  replicas' own, the ensembles'): overlap@k of each test example for every k of the run's --topk, and the
  run's mean with its bootstrap CI; the replicas' own (teacher-teacher') is the floor;
- per variant and model: the train examples most often among the test examples' top-k proponents, and
  those of highest self-influence;
- the quality report's verdicts and table (tracin-report), when the file has one;
- with --run, a note at the top for each model that has not finished training (its scores are of the
  checkpoints it had).

The tables behind the page are also the export (tracin.results.export); the command is
tracin.commands.explore.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tracin.config import replicas_by_role
from tracin.errors import TracinError
from tracin.files import (
    check_made_of,
    head_holds,
    is_temporary,
    made_of_marks,
    refuse_link,
    refuse_links_under,
    write_atomic,
    write_in_place,
)
from tracin.results import sanity, statistics
from tracin.results.agreement import select_agreement_pairs
from tracin.results.grids import Images
from tracin.results.markdown import report_verdicts
from tracin.results.store import ScoreFile
from tracin.version import __version__

BLOCK = 250  # test examples per data file when the data do not fit inline
DEPTH = 10  # proponents and opponents shown per model and test example, unless asked otherwise
FREQUENT = 12  # train examples listed as most frequent proponents, and as highest self-influence
FLOOR = "teacher-teacher'"  # the comparison whose run mean is the replica floor


def _b64(array: np.ndarray) -> str:
    """Little-endian bytes of `array` in base64: the page reads them as a typed array, bit for bit."""
    return base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).decode()


def png(image: np.ndarray) -> bytes:
    """uint8 [C, H, W] (C = 1 or 3) as PNG bytes."""
    from PIL import Image

    picture = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def shown_models(store: ScoreFile, models: Optional[Sequence[str]]) -> list[str]:
    """The models the page shows: `models` checked against the file, or all of them."""
    if not models:
        return store.models
    missing = [name for name in models if name not in store.models]
    if missing:
        raise TracinError(f"--models {','.join(missing)}: not in {store.path} (it has {', '.join(store.models)})")
    return list(models)


def comparisons(models: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """The comparisons of tracin.results.agreement among `models`, each with its model pairs."""
    return select_agreement_pairs(replicas_by_role(list(models)), models)


def proponents(store: ScoreFile, models: Sequence[str], variant: str) -> dict[str, np.ndarray]:
    """{model: int [n_test, K] train rows of each test example's top-K proponents} for `variant`."""
    return {name: store.model(name).variant_rankings(variant)[0].top_index for name in models}


def overlap_counts(tops: dict[str, np.ndarray], pairs: Sequence[tuple[str, str]], k: int) -> np.ndarray:
    """float64 [n_test]: the shared top-k proponents of each test example (tops: proponents()), averaged
    over `pairs`."""
    return np.mean([statistics.overlap_at_k(tops[a], tops[b], k) * k for a, b in pairs], axis=0)


def _overlaps(tops: dict[str, np.ndarray], pairs: Sequence[tuple[str, str]], k: int, seed: int = 0) -> dict:
    """A comparison's overlap@k per test example (float32, base64) with the run's mean and its bootstrap CI."""
    values = overlap_counts(tops, pairs, k) / k
    low, high = statistics.bootstrap_ci([values], seed=seed)
    return {
        "values": _b64(values.astype(np.float32)),
        "mean": float(np.mean(values)),
        "low": float(low),
        "high": float(high),
    }


def frequent_proponents(top_index: np.ndarray, count: int = FREQUENT) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, how many test examples' lists hold each) of the `count` train rows most often among the
    proponents in `top_index` (int [n_test, k]), most often first (ties: lower row first)."""
    counts = np.bincount(top_index.ravel(), minlength=int(top_index.max()) + 1 if top_index.size else 0)
    order = np.lexsort((np.arange(len(counts)), -counts))[:count]
    order = order[counts[order] > 0]
    return order, counts[order]


def highest_self_influence(
    store: ScoreFile, name: str, variant: str, count: int = FREQUENT
) -> tuple[np.ndarray, np.ndarray, str]:
    """(train rows, values, the variant they are of) of the `count` highest self-influences of a model for
    `variant`; raw's where the file holds none for it (cosine: every example's is the same)."""
    scores = store.model(name)
    values, which = scores.variant_self_influence(variant), variant
    if values is None:
        values, which = scores.self_influence, "raw"
    order = np.argsort(-values, kind="stable")[:count]
    return order, values[order], which


def _quality(store: ScoreFile) -> dict:
    """The quality report's verdicts and table (rows of the first variant and of each other variant), or
    the line saying how to make it."""
    try:
        table = store.read_table("quality_report")
    except TracinError as error:
        return {"missing": f"{error}"}
    table = table[np.char.find(table["variant"], b"@") < 0]
    models = sanity.report_models(table)
    tables = []
    for variant in dict.fromkeys(table["variant"]):
        rows = table[table["variant"] == variant]
        body = []
        for check in dict.fromkeys(rows["check"]):
            cells = [rows[(rows["check"] == check) & (rows["model"] == m.encode())] for m in models]
            body.append([check.decode(), *(sanity.format_cell(c[0]) if len(c) else "-" for c in cells)])
        tables.append({"variant": variant.decode(), "models": models, "rows": body})
    return {"verdicts": report_verdicts(store, store.read_table("quality_report")), "tables": tables}


@dataclass
class Page:
    """The page's data: `head` (always inline), the lists of each block of test examples, and which images
    (test rows, train rows) the page shows."""

    head: dict
    blocks: list[dict]
    test_rows: np.ndarray
    train_rows: np.ndarray


def page_data(
    store: ScoreFile,
    models: Sequence[str],
    depth: Optional[int] = None,
    seed: int = 0,
    run: Optional[Path] = None,
    notes: Sequence[str] = (),
) -> Page:
    """Everything the page shows, from a finished score file (see the module's docstring); `depth` lists
    per model and test example (None: DEPTH, or fewer where the file holds fewer); `run`: the run folder
    named (default: the one the file records: a copied or moved run was named by its old folder); `notes`:
    lines shown above everything (a model that has not finished training)."""
    rankings = {
        name: {v: store.model(name).variant_rankings(v)[0] for v in store.model(name).variants} for name in models
    }
    stored_k = min(r.top_index.shape[1] for by_variant in rankings.values() for r in by_variant.values())
    depth = min(DEPTH, stored_k) if depth is None else depth
    if not 1 <= depth <= stored_k:
        raise TracinError(
            f"--depth {depth}: the file holds the top {stored_k} of each test example; choose 1..{stored_k}"
        )
    pairs = store.comparison_pairs()  # the ks of tracin-score's comparison tables (its --topk)
    ks = [int(k) for k in (store.comparison_settings(*pairs[0])["ks"] if pairs else []) if k <= stored_k] or [stored_k]
    variants = list(dict.fromkeys(v for name in models for v in store.model(name).variants))
    found = comparisons(models)
    head = {
        "tracin": __version__,
        "scores": str(store.path),
        "run": str(Path(run).resolve() if run is not None else store.run_path),
        "classes": store.classes,
        "n_train": store.n_train,
        "n_test": store.n_test,
        "depth": depth,
        "ks": ks,
        "block": BLOCK,
        "models": list(models),
        "variants": {name: store.model(name).variants for name in models},
        "variant_order": variants,
        "floor": FLOOR,
        "notes": list(notes),
        "test": {
            "index": store.test_index.tolist(),
            "label": store.test_labels.tolist(),
            "stamped": store.test_stamped.astype(int).tolist(),
        },
        "train": {
            "index": _b64(store.train_index.astype(np.int32)),
            "label": _b64(store.train_labels.astype(np.int16)),
            "clean": _b64(store.train_clean_labels.astype(np.int16)),
            "stamped": _b64(store.train_stamped.astype(np.uint8)),
        },
        "predictions": {},
        "comparisons": {},
        "frequent": {},
        "self_influence": {},
        "quality": _quality(store),
    }
    for name in models:
        predictions = store.model(name).predictions
        if predictions is not None:
            head["predictions"][name] = {
                "class": _b64(predictions[0].astype(np.int16)),
                "confidence": _b64(predictions[1].astype(np.float32)),
            }
    shown = [np.arange(0)]
    for variant in variants:
        holders = [name for name in models if variant in rankings[name]]
        pairs = {c: p for c, p in found.items() if all(n in holders for pair in p for n in pair)}
        tops = {name: rankings[name][variant].top_index for name in holders}
        head["comparisons"][variant] = {
            c: {"pairs": [list(pair) for pair in p], "k": {str(k): _overlaps(tops, p, k, seed) for k in ks}}
            for c, p in pairs.items()
        }
        head["frequent"][variant], head["self_influence"][variant] = {}, {}
        for name in holders:
            rows, counts = frequent_proponents(rankings[name][variant].top_index[:, : ks[-1]])
            head["frequent"][variant][name] = {"rows": rows.tolist(), "counts": counts.tolist(), "k": ks[-1]}
            rows_si, values, which = highest_self_influence(store, name, variant)
            head["self_influence"][variant][name] = {
                "rows": rows_si.tolist(),
                "values": _b64(values.astype(np.float32)),
                "of": which,
            }
            shown += [rows, rows_si]
    blocks = []
    for start in range(0, store.n_test, BLOCK):
        rows = slice(start, min(start + BLOCK, store.n_test))
        lists = {}
        for variant in variants:
            lists[variant] = {}
            for name in models:
                if variant not in rankings[name]:
                    continue
                ranking = rankings[name][variant]
                parts = (ranking.top_index, ranking.top_score, ranking.bottom_index, ranking.bottom_score)
                lists[variant][name] = [
                    _b64(np.asarray(part[rows, :depth]).astype(dtype))
                    for part, dtype in zip(parts, (np.int32, np.float32, np.int32, np.float32))
                ]
                shown += [
                    np.asarray(ranking.top_index[rows, :depth]).ravel(),
                    np.asarray(ranking.bottom_index[rows, :depth]).ravel(),
                ]
        blocks.append({"start": start, "stop": rows.stop, "lists": lists})
    return Page(head, blocks, np.arange(store.n_test), np.unique(np.concatenate(shown).astype(np.int64)))


def template() -> str:
    """The page's HTML, script and style (explore.html beside this module), with a slot for the data."""
    return resources.files("tracin.results").joinpath("explore.html").read_text(encoding="utf-8")


def _script_json(values) -> str:
    """JSON safe inside a <script> element (no '</' can close it)."""
    return json.dumps(values, separators=(",", ":")).replace("</", "<\\/")


def write_page(
    store: ScoreFile,
    images: Images,
    out: Path,
    models: Sequence[str],
    depth: Optional[int] = None,
    max_inline_mb: float = 25.0,
    run: Optional[Path] = None,
    notes: Sequence[str] = (),
) -> dict:
    """Write the page to `out` (and its folder beside it when the data are over max_inline_mb MB), `notes`
    shown at its top; returns
    {"page": path, "folder": path or None, "bytes": size of everything written, "images": images written,
    "depth": lists per model and test example}."""
    folder = out.with_name(f"{out.stem}_files")
    check_page_destination(out, store.path, store.identity)
    refuse_link(folder, "the page's data folder")
    page = page_data(store, models, depth, run=run, notes=notes)
    encoded = {f"t{row}": png(images.test[row]) for row in page.test_rows}
    encoded.update({f"r{row}": png(images.train[row]) for row in page.train_rows})
    blocks = [_script_json(block) for block in page.blocks]
    inline_bytes = sum(len(b) for b in blocks) + sum(4 * len(data) // 3 + 30 for data in encoded.values())
    inline = inline_bytes <= max_inline_mb * 2**20
    if inline:
        head = {
            **page.head,
            "inline": True,
            "images": {key: base64.b64encode(data).decode() for key, data in encoded.items()},
        }
        data = f"TRACIN.head = {_script_json(head)};\n" + "".join(
            f"TRACIN.blocks[{i}] = {text};\n" for i, text in enumerate(blocks)
        )
        written = 0
    else:
        head = {**page.head, "inline": False, "folder": folder.name}
        written = _write_folder(folder, blocks, encoded)
        data = f"TRACIN.head = {_script_json(head)};\n"
    text = (
        template()
        .replace("/*DATA*/", data)
        .replace("<head>", f"<head>\n{made_of_marks(store.path, store.identity)}", 1)
    )
    write_atomic(out, lambda handle: handle.write(text.encode()))
    return {
        "page": out,
        "folder": None if inline else folder,
        "bytes": len(text.encode()) + written,
        "images": len(encoded),
        "depth": page.head["depth"],
    }


def _write_folder(folder: Path, blocks: Sequence[str], images: dict[str, bytes]) -> int:
    """The data files of a page too large to hold them inline; returns the bytes written. Files of an
    earlier page in the folder are replaced, none is followed through a link. FOLDER_MARK, written first,
    tells the folder from a colleague's of the same name (round 19, E11: their file there was replaced)."""
    write_atomic(
        folder / FOLDER_MARK,
        lambda handle: handle.write(f"{MARK}: this folder holds the data of the page beside it\n".encode()),
    )
    (folder / "img").mkdir(parents=True, exist_ok=True)
    refuse_link(folder / "img", "the page's image folder")
    written = 0
    for i, text in enumerate(blocks):
        data = f"TRACIN.blocks[{i}] = {text};\nTRACIN.loaded({i});\n".encode()
        write_atomic(folder / f"block_{i:04d}.js", lambda handle: handle.write(data))
        written += len(data)
    for key, data in images.items():
        path = folder / "img" / f"{key}.png"
        write_in_place(path, data)
        written += len(data)
    return written


MARK = "Written by tracin-explore"  # in every page's head: a file without it is never replaced
FOLDER_MARK = "written-by-tracin-explore.txt"  # in a page's data folder: a folder without it is never written


def check_page_destination(out: Path, scores: Optional[Path] = None, identity: Optional[str] = None) -> None:
    """Refuse, before any work, to write through a link, onto a folder, or over a file that is not a page
    tracin-explore wrote (a mistyped --out naming the score file must not destroy it), or, given the score
    file at `scores` and its `identity`, a page of another score file (round 18, M3b: replaced without a
    word)."""
    refuse_link(out, "the page")
    if out.is_dir():
        raise TracinError(f"the page {out} is a folder: name the page's file with --out (e.g. {out / 'explore.html'})")
    if out.exists() and not head_holds(out, MARK):
        raise TracinError(
            f"the page {out} exists and is not a page tracin-explore wrote; it is left as it is (choose another --out)"
        )
    if scores is not None and identity is not None:
        check_made_of(out, scores, identity, "the page", "move it away, or choose another --out")
    folder = out.with_name(f"{out.stem}_files")
    refuse_link(folder, "the page's data folder")
    if folder.exists() and not folder.is_dir():
        raise TracinError(f"{folder} exists and is not a folder: the page's data would go there (choose another --out)")
    held = folder.is_dir() and any(not is_temporary(p) for p in folder.iterdir())  # a killed write's: removed
    if held and not head_holds(folder / FOLDER_MARK, MARK):
        raise TracinError(
            f"{folder} holds files tracin-explore did not write, where the page's data would go; they are left as "
            "they are (move the folder away, or choose another --out)"
        )
    if folder.is_dir():  # round 20, P7: a link at a block file was replaced without a word (one at an image refused)
        refuse_links_under(folder, "in the page's data folder,")


__all__ = [
    "FOLDER_MARK",
    "MARK",
    "Page",
    "check_page_destination",
    "comparisons",
    "overlap_counts",
    "page_data",
    "proponents",
    "shown_models",
    "write_page",
]
