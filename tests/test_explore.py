"""tracin-explore: the page's data equal the score file's own tables, the page shows them in a real browser
(headless Chromium from the system's packages, driven by Selenium), and the export holds the same rows.

The run: the tiny run's settings with 2 replicas (a replica floor) and a planted shortcut (stamped examples),
scored for every model; its page is opened inline and with its data in a folder beside it."""

from __future__ import annotations

import base64
import collections
import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tracin.errors import TracinError
from tracin.results import statistics
from tracin.results.explore import comparisons, frequent_proponents, overlap_counts, page_data, proponents, write_page
from tracin.results.export import frames, topk_table, write_tables
from tracin.results.grids import load_images
from tracin.results.store import ScoreFile

from conftest import REPO, TINY_RUN_ARGS, run_tracin_score, run_tracin_train, subprocess_env

DEPTH = 5
SCREENSHOT = REPO / "docs" / "explore.png"  # docs/cli.md's picture of the page, from each run of the tests


@pytest.fixture(scope="module")
def explore_run(fashion_mnist_root, tmp_path_factory) -> Path:
    """A finished run with replicas and a planted shortcut, scored for all six models and the three replica ensembles (raw and cosine)."""
    out_root = tmp_path_factory.mktemp("explore")
    result = run_tracin_train(
        [
            "--run",
            "explore",
            "--out-root",
            out_root,
            "--data-root",
            fashion_mnist_root,
            *TINY_RUN_ARGS,
            "--replicas",
            "2",
            "--shortcut-class",
            "1",
        ]
    )
    assert result.returncode == 0, result.stderr
    run = out_root / "explore"
    result = run_tracin_score(
        [
            "--run",
            run,
            "--models",
            "teacher,student,student_baseline",
            "--variants",
            "raw,cosine",
            "--train-subset",
            "128",
            "--test-subset",
            "24",
            "--topk",
            "3,8",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert result.returncode == 0, result.stderr
    return run


def explore_command(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("tracin-explore")), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=subprocess_env())


def decode(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype).newbyteorder("<"))


# --- the page's data --------------------------------------------------------------------------------------


def test_the_page_data_are_the_files_own_lists_and_overlaps(explore_run):
    with ScoreFile.open_read(explore_run / "tracin.h5") as store:
        models = store.models
        assert len(models) == 9 and store.train_stamped.any() and store.noisy.any()
        page = page_data(store, models, DEPTH)
        for variant in ("raw", "cosine"):
            for name in models:
                ranking = store.model(name).variant_rankings(variant)[0]
                parts = [
                    np.concatenate(
                        [decode(block["lists"][variant][name][i], dtype).reshape(-1, DEPTH) for block in page.blocks]
                    )
                    for i, dtype in enumerate((np.int32, np.float32, np.int32, np.float32))
                ]
                for got, stored in zip(
                    parts, (ranking.top_index, ranking.top_score, ranking.bottom_index, ranking.bottom_score)
                ):
                    np.testing.assert_array_equal(got, stored[:, :DEPTH])  # bit for bit
                assert set(ranking.top_index[:, :DEPTH].ravel()) <= set(page.train_rows)
            for comparison, pairs in comparisons(models).items():
                for k in (3, 8):
                    entry = page.head["comparisons"][variant][comparison]["k"][str(k)]
                    direct = np.mean(
                        [
                            statistics.overlap_at_k(
                                store.model(a).variant_rankings(variant)[0].top_index,
                                store.model(b).variant_rankings(variant)[0].top_index,
                                k,
                            )
                            for a, b in pairs
                        ],
                        axis=0,
                    )
                    np.testing.assert_allclose(decode(entry["values"], np.float32), direct, rtol=1e-6)
                    assert entry["low"] <= entry["mean"] <= entry["high"] and entry["mean"] == pytest.approx(
                        direct.mean()
                    )
        assert page.head["ks"] == [3, 8]
        assert {"teacher-student", "teacher-teacher'", "teacher'-student"} <= set(page.head["comparisons"]["raw"])
        np.testing.assert_array_equal(decode(page.head["train"]["stamped"], np.uint8), store.train_stamped)
        np.testing.assert_array_equal(
            decode(page.head["predictions"]["student"]["class"], np.int16), store.model("student").predictions[0]
        )


def test_the_page_names_the_run_folder_it_was_given(explore_run, tmp_path):
    """Round 14, G1 (and round 10, H11): a page made with --run of a copied run named the folder the file was
    scored in; it names the folder given, and the recorded one only when none is."""
    with ScoreFile.open_read(explore_run / "tracin.h5") as store:
        assert page_data(store, store.models[:1], 2).head["run"] == str(store.run_path)
        assert page_data(store, store.models[:1], 2, run=tmp_path / "copy").head["run"] == str(tmp_path / "copy")


def test_frequent_proponents_count_every_list():
    rng = np.random.default_rng(0)
    top = np.stack([rng.choice(40, size=6, replace=False) for _ in range(30)])
    rows, counts = frequent_proponents(top, count=5)
    counted = collections.Counter(top.ravel().tolist())
    expected = sorted(counted.items(), key=lambda item: (-item[1], item[0]))[:5]
    assert list(zip(rows.tolist(), counts.tolist())) == expected


def test_a_large_page_keeps_its_data_in_a_folder_beside_it(explore_run, tmp_path):
    with ScoreFile.open_read(explore_run / "tracin.h5") as store:
        images = load_images(store)
        result = write_page(store, images, tmp_path / "page.html", store.models, DEPTH, max_inline_mb=0)
    folder = tmp_path / "page_files"
    assert result["folder"] == folder and (folder / "block_0000.js").is_file()
    assert len(list((folder / "img").glob("t*.png"))) == 24 and result["images"] == len(
        list((folder / "img").glob("*.png"))
    )
    assert (tmp_path / "page.html").stat().st_size < 100_000  # the page itself holds no list and no image


# --- the command ------------------------------------------------------------------------------------------


def test_tracin_explore_writes_the_page_and_the_export(explore_run, tmp_path):
    result = explore_command("--run", explore_run, "--depth", DEPTH, "--export", tmp_path / "export")
    assert result.returncode == 0, result.stderr
    page = explore_run / "explore.html"
    assert page.is_file() and str(page) in result.stdout and "open it in a browser" in result.stdout
    with ScoreFile.open_read(explore_run / "tracin.h5") as store:
        with open(tmp_path / "export" / "topk.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 9 * 24 * DEPTH * 2
        ranking = store.model("teacher.r1").rankings()[0]
        mine = [
            r
            for r in rows
            if r["model"] == "teacher.r1" and r["side"] == "opponent" and r["test_index"] == str(store.test_index[7])
        ]
        assert [int(r["train_index"]) for r in mine] == store.train_index[ranking.bottom_index[7, :DEPTH]].tolist()
        assert [np.float32(r["score"]) for r in mine] == ranking.bottom_score[7, :DEPTH].tolist()
        assert [r["flipped"] == "True" for r in mine] == store.noisy[ranking.bottom_index[7, :DEPTH]].tolist()
        top, overlaps = frames(explore_run / "tracin.h5", k=DEPTH)
        assert len(top) == len(rows) and top["score"].dtype == np.float32
        teacher_student = overlaps[overlaps["comparison"] == "teacher-student"]["overlap"].to_numpy()
        tops = proponents(store, store.models, "raw")
        np.testing.assert_allclose(
            teacher_student, overlap_counts(tops, comparisons(store.models)["teacher-student"], DEPTH) / DEPTH
        )
        lines = write_tables(store, store.models, tmp_path / "again", DEPTH)
    try:
        import pyarrow  # noqa: F401

        assert (tmp_path / "again" / "topk.parquet").is_file()
    except ImportError:
        assert lines[-1] == "explore: Parquet not written (pyarrow is not installed)"


@pytest.mark.parametrize(
    "args, said",
    [
        (("--depth", "9"), "--depth 9: the file holds the top 8 of each test example; choose 1..8"),
        (("--models", "teacher,nobody"), "--models nobody: not in"),
        (("--scores", "missing.h5"), "missing.h5 does not exist: no score file there"),
    ],
)
def test_a_users_mistake_is_one_line(explore_run, args, said):
    result = explore_command("--run", explore_run, *args)
    assert result.returncode == 2 and said in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_page_planted_as_a_link_is_refused(explore_run, tmp_path):
    colleague = tmp_path / "colleague.html"
    colleague.write_text("theirs")
    (tmp_path / "explore.html").symlink_to(colleague)
    result = explore_command("--run", explore_run, "--out", tmp_path / "explore.html")
    assert result.returncode == 2 and "link" in result.stderr and colleague.read_text() == "theirs"


def test_an_export_folder_planted_as_a_link_is_refused(explore_run, tmp_path):
    """Red-team find L20: --export through a link wrote topk.csv and overlap.csv into the link's target."""
    colleague = tmp_path / "colleague"
    colleague.mkdir()
    (tmp_path / "export").symlink_to(colleague, target_is_directory=True)
    result = explore_command("--run", explore_run, "--out", tmp_path / "e.html", "--export", tmp_path / "export")
    assert result.returncode == 2 and "--export" in result.stderr and "symbolic link" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and list(colleague.iterdir()) == []
    assert not (tmp_path / "e.html").exists()  # refused before any work


@pytest.mark.parametrize("planted", ["export/overlap.csv", "e_files"])
def test_a_link_inside_the_export_or_at_the_data_folder_is_refused_before_the_page(explore_run, tmp_path, planted):
    """Red-team borderline K07: a link at an exported table was refused only after the page was written."""
    colleague = tmp_path / "colleague"
    colleague.mkdir()
    (tmp_path / "export").mkdir()
    (tmp_path / planted).symlink_to(colleague, target_is_directory=True)
    result = explore_command("--run", explore_run, "--out", tmp_path / "e.html", "--export", tmp_path / "export")
    assert result.returncode == 2 and "symbolic link" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and list(colleague.iterdir()) == []
    assert not (tmp_path / "e.html").exists() and not (tmp_path / "export" / "topk.csv").exists()


def test_a_page_is_never_written_over_a_file_it_did_not_write(explore_run, tmp_path):
    """A mistyped --out naming the score file (or any other file) leaves it as it was; an earlier page is
    replaced."""
    scores = explore_run / "tracin.h5"
    before = scores.read_bytes()
    result = explore_command("--run", explore_run, "--out", scores)
    assert (
        result.returncode == 2
        and "is not a page tracin-explore wrote" in result.stderr
        and scores.read_bytes() == before
    )
    result = explore_command("--run", explore_run, "--out", tmp_path)
    assert result.returncode == 2 and "is a folder" in result.stderr
    for _ in range(2):
        result = explore_command("--run", explore_run, "--out", tmp_path / "page.html", "--depth", 2)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("table", ["topk.csv", "overlap.parquet"])
def test_an_export_never_replaces_a_table_it_did_not_write(explore_run, tmp_path, table):
    """Round 13, Z2: --export into a colleague's folder replaced their topk.csv without a word; a table there
    is replaced only when its columns are those --export writes (so exporting again still works)."""
    export = tmp_path / "export"
    assert explore_command("--run", explore_run, "--out", tmp_path / "p.html", "--export", export).returncode == 0
    assert explore_command("--run", explore_run, "--out", tmp_path / "p.html", "--export", export).returncode == 0
    (export / table).write_text("a,b\n1,2\n")
    before = {path.name: path.read_bytes() for path in export.iterdir()}
    result = explore_command("--run", explore_run, "--out", tmp_path / "q.html", "--export", export)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"tracin-explore: error: --export: {export / table} exists and is not a table tracin-explore wrote; it "
        "is left as it is (choose another folder)"
    ]
    assert {path.name: path.read_bytes() for path in export.iterdir()} == before and not (tmp_path / "q.html").exists()


def test_a_page_another_process_is_writing_is_refused(explore_run, tmp_path):
    from tracin.files import exclusive_lock

    with exclusive_lock(tmp_path / "page.html", "the page"):
        result = explore_command("--run", explore_run, "--out", tmp_path / "page.html")
    assert result.returncode == 2 and "is in use by process" in result.stderr and not (tmp_path / "page.html").exists()


def test_the_page_of_another_score_file_is_kept(explore_run, tiny_scores, tmp_path):
    """Round 18, M3b: --out naming the page of another score file replaced it without a word; a page names the
    file it shows by the file's identity, so the same file moved writes it again and another file is refused."""
    page = tmp_path / "page.html"
    assert explore_command("--run", explore_run, "--out", page).returncode == 0
    moved = tmp_path / "moved.h5"
    moved.write_bytes((explore_run / "tracin.h5").read_bytes())
    assert explore_command("--scores", moved, "--out", page).returncode == 0  # the same file, moved
    before = page.read_bytes()
    result = explore_command("--scores", tiny_scores, "--out", page)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"tracin-explore: error: {page} is the page of another score file; it is left as it is (move it away, or "
        "choose another --out)"
    ]
    assert page.read_bytes() == before
    moved.write_bytes(tiny_scores.read_bytes())  # round 19, E14: the file at the path scored again since
    result = explore_command("--scores", moved, "--out", page)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"tracin-explore: error: {page} is the page of an earlier score file at the same path (scored again "
        "since, or this output was edited); it is left as it is (move it away, or choose another --out)"
    ]
    assert page.read_bytes() == before


def test_an_export_of_another_score_file_is_kept(explore_run, tiny_scores, tmp_path):
    """Round 19, E5: --export into a folder of another score file's tables replaced them without a word (they
    were known by their columns only). tracin-export.json names the file they are of: the same file moved
    exports again; another file, or tables with no record beside them, are refused before any page."""
    export, moved = tmp_path / "export", tmp_path / "moved.h5"
    moved.write_bytes((explore_run / "tracin.h5").read_bytes())
    assert explore_command("--run", explore_run, "--out", tmp_path / "p.html", "--export", export).returncode == 0
    record = json.loads((export / "tracin-export.json").read_text())
    assert record["scores"] == str((explore_run / "tracin.h5").resolve()) and record["written_by"] == "tracin-explore"
    assert explore_command("--scores", moved, "--out", tmp_path / "m.html", "--export", export).returncode == 0
    before = {path.name: path.read_bytes() for path in export.iterdir()}
    result = explore_command("--scores", tiny_scores, "--out", tmp_path / "q.html", "--export", export)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"tracin-explore: error: --export: {export} holds the tables of another score file; they are left as they "
        "are (move them away, or choose another folder)"
    ]
    (export / "tracin-export.json").write_text('{"written_by": "someone"}')  # read through its schema
    result = explore_command("--scores", moved, "--out", tmp_path / "q.html", "--export", export)
    assert result.returncode == 2 and "is not a record tracin-explore wrote (" in result.stderr, result.stderr
    (export / "tracin-export.json").unlink()
    result = explore_command("--scores", moved, "--out", tmp_path / "q.html", "--export", export)
    assert result.returncode == 2 and "is not known to be a table of this score file" in result.stderr
    assert {path.name: path.read_bytes() for path in export.iterdir() if path.name != "tracin-export.json"} == {
        name: data for name, data in before.items() if name != "tracin-export.json"
    }
    assert not (tmp_path / "q.html").exists()
    for table in export.glob("*.*"):  # a record with no table beside it (an export killed after it) is taken
        table.unlink()
    (export / "tracin-export.json").write_text(json.dumps(record))
    result = explore_command("--scores", tiny_scores, "--out", tmp_path / "q.html", "--export", export)
    assert result.returncode == 0, result.stderr


def test_a_run_folder_that_is_a_link_is_refused_as_tracin_score_refuses_it(explore_run, tmp_path):
    """Round 20, PS2, PS6: tracin-score and tracin-report refuse a run folder that is a link; explore and the
    notebooks wrote their pages and tables through it."""
    link = tmp_path / "link"
    link.symlink_to(explore_run, target_is_directory=True)
    before = sorted(path.name for path in explore_run.iterdir())
    for result in (
        explore_command("--run", link, "--export", link / "exp"),
        explore_command("--scores", link / "tracin.h5"),
        subprocess.run(
            [str(Path(sys.executable).with_name("tracin-notebooks")), str(link / "tracin.h5"), str(link / "nb")],
            capture_output=True,
            text=True,
            env=subprocess_env(),
        ),
    ):
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"the run {link} is a symbolic link" in result.stderr
    assert sorted(path.name for path in explore_run.iterdir()) == before


def test_a_killed_explores_temporary_files_are_removed_by_the_next(explore_run, tmp_path):
    """Round 20, XK3 (and round 19, G18, G22): a killed export left .tracin-export.json.*.tmp, a killed page
    .PAGE.*.tmp, after the next explore had finished. Round 31, Q4: a user's own .topk.csv.mine.tmp in the
    export folder was removed as one of them; only those named as this tool names its temporaries go."""
    export, folder = tmp_path / "export", tmp_path / "p_files"
    export.mkdir()
    folder.mkdir()
    (folder / "written-by-tracin-explore.txt").write_text("Written by tracin-explore: ...")
    stale = [export / ".tracin-export.json.tracin-x1.tmp", export / ".topk.csv.tracin-x2.tmp"]
    stale += [tmp_path / ".p.html.tracin-x3.tmp", folder / ".block_0000.js.tracin-x4.tmp"]
    mine = [export / ".topk.csv.mine.tmp", tmp_path / ".p.html.notes.tmp"]
    for path in (*stale, *mine):
        path.write_text("half")
    result = explore_command("--run", explore_run, "--out", tmp_path / "p.html", "--export", export)
    assert result.returncode == 0, result.stderr
    assert not [path for path in stale if path.exists()]
    assert [path.read_text() for path in mine] == ["half", "half"]


def test_a_data_folder_explore_did_not_make_is_kept(explore_run, tmp_path):
    """Round 19, E11: a colleague's block_0000.js in PAGE_files/ (no page yet) was replaced by the page's data;
    a folder explore writes carries its mark, and one with files but no mark is refused before any work."""
    folder = tmp_path / "page_files"
    folder.mkdir()
    (folder / "block_0000.js").write_text("theirs")
    result = explore_command("--run", explore_run, "--out", tmp_path / "page.html", "--max-inline-mb", "0")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"tracin-explore: error: {folder} holds files tracin-explore did not write, where the page's data would "
        "go; they are left as they are (move the folder away, or choose another --out)"
    ]
    assert (folder / "block_0000.js").read_text() == "theirs" and not (tmp_path / "page.html").exists()
    (folder / "block_0000.js").unlink()  # an empty folder is taken, and written again
    for _ in range(2):
        result = explore_command("--run", explore_run, "--out", tmp_path / "page.html", "--max-inline-mb", "0")
        assert result.returncode == 0, result.stderr
    assert (folder / "written-by-tracin-explore.txt").is_file() and (folder / "block_0000.js").is_file()
    result = explore_command("--run", explore_run, "--out", tmp_path / "page.html")  # inline: round 21, XF5
    assert result.returncode == 0 and f"explore: {folder}/ holds an earlier page's data" in result.stdout
    colleague = tmp_path / "colleague.js"  # round 20, P7: a link at a block file was replaced without a word
    colleague.write_text("theirs")
    (folder / "block_0000.js").unlink()
    (folder / "block_0000.js").symlink_to(colleague)
    result = explore_command("--run", explore_run, "--out", tmp_path / "page.html", "--max-inline-mb", "0")
    assert result.returncode == 2 and "in the page's data folder," in result.stderr and "symbolic link" in result.stderr
    assert (folder / "block_0000.js").is_symlink() and colleague.read_text() == "theirs"


def test_a_full_disk_while_a_page_image_is_written_names_the_file_and_the_same_command_finishes(explore_run, tmp_path):
    """Round 33, FDX: a full disk met while a page's image was written said 'No space left on device' and no
    file (written in place, outside write_atomic's naming)."""
    out = tmp_path / "page.html"
    command = [str(Path(sys.executable).with_name("tracin-explore")), "--run", str(explore_run), "--out", str(out)]
    command += ["--max-inline-mb", "0"]
    env = {**subprocess_env(), "TRACIN_FAULT": "file-in-place:2:enospc"}
    failed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and len(lines) == 1, failed.stderr
    assert f"No space left on device ({tmp_path / 'page_files' / 'img'}/" in lines[0], lines[0]
    again = explore_command("--run", explore_run, "--out", out, "--max-inline-mb", "0")
    assert again.returncode == 0 and out.is_file(), again.stderr


def test_topk_table_refuses_more_than_the_file_holds(explore_run):
    with ScoreFile.open_read(explore_run / "tracin.h5") as store, pytest.raises(TracinError, match="top 8"):
        topk_table(store, store.models, 9)


# --- in a real browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system's packages (scripts/setup installs chromium and chromium-driver
    where it can), driven by Selenium with the system's chromedriver: nothing is downloaded."""
    chromium, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no Chromium here (apt-get install chromium chromium-driver): the page is not tested in a browser")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


def open_page(browser, page: Path, fragment: str = ""):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page.as_uri() + fragment)
    WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".model[data-model='teacher'] .proponents .card")
    )
    return By


def cards(browser, model: str, side: str) -> list[dict]:
    from selenium.webdriver.common.by import By

    found = browser.find_elements(By.CSS_SELECTOR, f"#models .model[data-model='{model}'] .{side} .card")
    return [
        {name: card.get_attribute(f"data-{name}") for name in ("train-index", "score", "flipped", "stamped")}
        for card in found
    ]


def severe(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "folder"])
def test_the_browser_shows_the_stored_lists_and_flags(explore_run, browser, tmp_path, inline):
    with ScoreFile.open_read(explore_run / "tracin.h5") as store:
        page = tmp_path / "explore.html"
        notes = ["note: student has not finished training (partial, epoch 2 of 4) <b>"] if inline else []
        write_page(store, load_images(store), page, store.models, DEPTH, max_inline_mb=25 if inline else 0, notes=notes)
        row = int(np.flatnonzero(store.noisy[store.model("teacher").rankings()[0].top_index[:, :DEPTH]].any(axis=1))[0])
        open_page(browser, page, f"#test={int(store.test_index[row])}")
        assert browser.find_element("id", "title").text.startswith(f"test #{store.test_index[row]}: ")
        for name in ("teacher", "student"):
            ranking = store.model(name).rankings()[0]
            for side, index, score in (
                ("proponents", ranking.top_index, ranking.top_score),
                ("opponents", ranking.bottom_index, ranking.bottom_score),
            ):
                shown = cards(browser, name, side)
                rows = index[row, :DEPTH]
                assert [int(c["train-index"]) for c in shown] == store.train_index[rows].tolist()
                assert [float(c["score"]) for c in shown] == score[row, :DEPTH].tolist()  # float32 as stored, exactly
                assert [c["flipped"] == "1" for c in shown] == store.noisy[rows].tolist()
                assert [c["stamped"] == "1" for c in shown] == store.train_stamped[rows].tolist()
        shared = {
            int(e.get_attribute("data-train-index"))
            for e in browser.find_elements("css selector", ".model[data-model='teacher'] .proponents .card.shared")
        }
        both = set(store.model("teacher").rankings()[0].top_index[row, :DEPTH]) & set(
            store.model("student").rankings()[0].top_index[row, :DEPTH]
        )
        assert shared == set(store.train_index[sorted(both)].tolist())
        predicted = store.model("student").predictions[0][row]
        cells = browser.find_elements("css selector", "#predictions tr[data-model='student'] td")
        assert cells[1].text == store.classes[predicted]
        shown = browser.find_element("id", "notes")  # at the top, as text, and nothing where there is none
        assert (shown.text if shown.is_displayed() else None) == ("\n".join(notes) or None)
        assert not severe(browser)


def test_the_browser_filters_navigate_and_link(explore_run, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    with ScoreFile.open_read(explore_run / "tracin.h5") as store:
        page = tmp_path / "explore.html"
        write_page(store, load_images(store), page, store.models, DEPTH)
        By = open_page(browser, page)
        labels, predicted = store.test_labels, {n: store.model(n).predictions[0] for n in ("teacher", "student")}
        floor_pairs, pairs = comparisons(store.models)["teacher-teacher'"], comparisons(store.models)["teacher-student"]
        tops = proponents(store, store.models, "raw")
        ts = (overlap_counts(tops, pairs, 8) / 8).astype(np.float32)
        floor = float(np.mean(overlap_counts(tops, floor_pairs, 8) / 8))

    def matches() -> list[int]:
        return [int(b.get_attribute("data-row")) for b in browser.find_elements(By.CSS_SELECTOR, "#matches button")]

    assert matches() == list(range(24))
    label = int(labels[0])
    Select(browser.find_element(By.ID, "f-class")).select_by_value(str(label))
    assert matches() == np.flatnonzero(labels == label).tolist()
    Select(browser.find_element(By.ID, "f-class")).select_by_value("")
    Select(browser.find_element(By.CSS_SELECTOR, "#f-models select[data-model='teacher']")).select_by_value("wrong")
    assert matches() == np.flatnonzero(predicted["teacher"] != labels).tolist()
    Select(browser.find_element(By.CSS_SELECTOR, "#f-models select[data-model='teacher']")).select_by_value("any")
    browser.find_element(By.ID, "f-disagree").click()
    assert matches() == np.flatnonzero(predicted["teacher"] != predicted["student"]).tolist()
    browser.find_element(By.ID, "f-disagree").click()
    browser.find_element(By.ID, "f-floor").click()
    assert matches() == np.flatnonzero(ts < floor).tolist()
    browser.find_element(By.ID, "f-floor").click()
    browser.find_element(By.ID, "f-stamped").click()
    assert matches() == np.flatnonzero(store.test_stamped).tolist()
    browser.find_element(By.ID, "f-stamped").click()

    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)  # from test row 0 to row 1
    title = f"test #{int(store.test_index[1])}: "
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "title").text.startswith(title))
    assert re.search(rf"#test={int(store.test_index[1])}&", browser.current_url)
    search = browser.find_element(By.ID, "search")
    search.send_keys(str(int(store.test_index[5])), Keys.ENTER)
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "title").text.startswith(f"test #{int(store.test_index[5])}: ")
    )
    assert "tracin-report" in browser.find_element(By.ID, "quality").text  # no report made: the page says how
    assert not severe(browser)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.set_window_size(1400, 1000)
    assert browser.save_screenshot(str(SCREENSHOT))


@pytest.mark.parametrize("damage", ["classes", "test_labels", "train_labels"])
def test_a_score_file_naming_or_labelling_its_examples_otherwise_than_the_run_is_refused(tiny_scores, tmp_path, damage):
    """Round 8, H5: a classes attribute reversed by hand put every image of the page under another name."""
    import json

    import h5py

    path = tmp_path / "t.h5"
    shutil.copy(tiny_scores, path)
    with h5py.File(path, "r+") as h5:
        if damage == "classes":
            h5.attrs["classes"] = json.dumps(json.loads(h5.attrs["classes"])[::-1])
        else:
            h5[damage][0] = (h5[damage][0] + 1) % 10
    with ScoreFile.open_read(path) as store, pytest.raises(TracinError, match=f"{damage}.* (the run's data|differ)"):
        load_images(store)
    with ScoreFile.open_read(tiny_scores) as store:  # as written, it is the run's
        assert load_images(store).test.shape[0] == store.n_test


def test_a_score_file_of_another_run_is_refused(explore_run, tiny_scores, tmp_path):
    """Round 11, P10 (round 9, G4): --run named one run and --scores another's file; the page showed the
    file's run without a word. The file must have scored this run's checkpoints (sha256), as in tracin-report."""
    result = explore_command("--run", explore_run, "--scores", tiny_scores, "--out", tmp_path / "page.html")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"which {explore_run} does not hold (missing, or another file): give the score file of this run" in (
        result.stderr
    )
    assert not (tmp_path / "page.html").exists()
