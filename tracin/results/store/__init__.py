"""The HDF5 result file of tracin-score: layout, resume bookkeeping and provenance checks.

This package is the only one that imports h5py. Everything else reads and writes the file through the typed
readers and writers of ScoreFile (header facts, model pairs' comparison tables, named tables, tracin-validate's
record) and ModelScores (one model's scores, bookkeeping and top-k tables), so a layout change is this package
and tests/test_store.py. Its modules: file (ScoreFile: opening, creating, resuming, publishing), model_scores
(ModelScores), tables (the named-table registry and the comparisons), validation_record (/validation), salvage
(damage found and repaired), layout (the fixed names, and a file checked against this layout), checks (a
finished file checked before anything reads it: check_finished) and hdf5 (opening and allocating at the lowest
level).

Layout (format "tracin-scores", version 5; version 4's attribute digests and version 3's digests were not bound
to their file, version 2 had no attribute digests, version 1 no digests: none is read, since a file stripped of
its digests would pass for one):

    /                       attrs: format, format_version, tracin_version, created, command, run, dataset,
                            mode, proj_dim, proj_seed, layers (JSON), loss (and test_label beside it when the
                            test side's cross-entropy is on the "prediction"), precision (and shortcut_mode
                            "inherit" with the replica-0 teacher's shortcut_class, in that mode), label_noise,
                            classes (JSON), fine_classes (JSON), variants (JSON), settings (JSON; everything that must match
                            to resume),
                            status ("partial" | "complete"), members (JSON: the top-level
                            datasets and groups when tracin-score finished the file), attrs_digest (the others' sha256)
    /train_index, /test_index         int64 [n]: indices into the original torchvision data set
    /train_labels, /test_labels       int64 [n]: labels scored with (train: after label noise)
    /train_clean_labels               int64 [n_train]: the data set's own labels
    /noisy                            bool [n_train]: label flipped by --label-noise
    /train_fine_labels, /test_fine_labels  int64 [n]: the data set's own labels (attr fine_classes; they
                            differ from the labels with tracin-train --coarse-labels)
    /train_stamped, /test_stamped     bool [n]: stamped with the planted shortcut (--shortcut-class; in
                            "inherit" mode the students' stamped images, of every class)
    /<model>/               attrs: role, parameters (JSON), n_parameter_tensors, row_chunk, test_block, status,
                            scoring_seconds (wall time over invocations: per pair, / n_train n_test),
                            variants (JSON: the score variants held, the first in scores), attrs_digest (when complete)
        checkpoints/{path, epoch, lr, sha256}   [n_ckpt]: what was replayed, lr = TracIn weight
        scores              float32 [n_train, n_test]: sum_c lr_c <g_train, g_test>, chunked (attr variant)
        scores_<variant>    float32 [n_train, n_test]: each other variant (cosine, train-normalised, VARIANT@GROUP
                            of one layer group; attr variant)
        per_checkpoint      float32 [n_ckpt, n_train, n_test]: each lr_c-weighted term (--per-checkpoint)
        self_influence      float32 [n_train]: sum_c lr_c |g_train|^2
        self_influence_groups  float32 [n_groups, n_train], attrs groups: each layer group's part of
                            self_influence (stem, layer1, ..., head), the raw@GROUP variants' self-influence
        self_influence_train-normalised  float32 [n_train]: sum_c lr_c |g_train| (the train-normalised
                            variant's self-influence; the cosine variant's is sum_c lr_c for all)
        self_influence_groups_train-normalised  float32 [n_groups, n_train], attrs groups: sum_c lr_c
                            |g_train,group|, the train-normalised@GROUP variants' self-influence
        last_loss           float32 [n_train]: each train example's loss at the last checkpoint
        test_prediction     int64 [n_test]: the predicted class of each test example at the last checkpoint
        test_confidence     float32 [n_test]: its softmax probability (both absent in files from before them)
        done                bool [row chunks, test blocks]: blocks written (the resume mask)
        block_digests       S64 [row chunks, test blocks]: the sha256 (hex) of each block written, checked by a
                            resume, which scores again a block that differs (ModelScores.block_digest)
        topk/               K = largest --topk, positions into train/test arrays, values float32:
            test_top_index, test_top_score         [n_test, K]  proponents of each test example (index int32)
            test_bottom_index, test_bottom_score   [n_test, K]  opponents of each test example
            train_top_index, train_top_score       [n_train, K] test examples each train example raises most
            train_bottom_index, train_bottom_score [n_train, K] test examples it lowers most
        topk_epoch/epoch_NNN/   the same tables from single checkpoints (with --per-checkpoint)
        topk_variant/<variant>/ the same tables from each other variant's scores
    /quality                compound [rows]: per model and variant, identical-class rate of the top-1 and top-k
                            proponents, top-1 concentration, distinct proponents (tracin.results.quality)
    /agreement              compound [rows]: per variant, statistic (overlap@k, spearman) and comparison
                            (teacher–student, replicas' own, normalised, own − other teacher), mean over test
                            examples with its bootstrap CI; own − other teacher also its permutation p over the
                            replica pairings and the difference they would detect (tracin.results.agreement)
    /detection              compound [rows]: mislabel detection per ranking (self-influence raw and
                            train-normalised, last-checkpoint loss, random): area under the curve, found at
                            10% and 20% inspected (with label noise only; tracin.results.detection)
    /randomization          compound [rows], attrs settings (JSON), seconds: model, variant, the layers re-initialised, test
                            row and the Spearman correlation of trained and randomized scores (tracin-report)
    /quality_report         compound [rows], attrs provenance (JSON: machine, finished, seconds): every sanity
                            check per model and variant, mean with bootstrap CI and chance (tracin.results.sanity,
                            tracin-report)
    /validation/            attrs: settings (JSON), status, provenance (JSON: machine, finished); tracin-validate (tracin.results.validation):
        units               compound [n_units]: model, condition, test_row, subset, seed of each retraining
        margins             float32 [n_units, n_test]: logit margins of the scored test examples after it
        seconds             float64 [n_units]: each retraining's wall time
        done                bool [n_units]: retrainings finished (the resume mask)
        unit_digests        S64 [n_units]: the sha256 (hex) of each retraining written, checked by a resume,
                            which retrains a unit that differs (ValidationRecord.unit_digest)
        leave_out, lds      compound [rows]: the leave-top-k-out and LDS tables
    /comparison/<a>__<b>/   attrs: ks, max_rows, seed (the comparison's options), attrs_digest
        <table>             compound [rows], one per table of tracin.results.comparison.TABLES (overlap,
                            rank_correlation, ks, self_influence), columns as registered, "scope" first

Every dataset but the resume masks (`done`, `block_digests`) carries attr digests (JSON: the sha256 of each
block of about 16 MB of its values, bound to the file by the root's attributes as it was made: format version 4) and attr
attrs_digest (the sha256 of its other attributes; the root, a complete model's group, /validation and each
comparison's group carry one too, covering the names under them, status and scoring_seconds left out; all
but the root's bound to the file too: format version 5) from
when it was finished: the header arrays when the file is made, a model's datasets when it is complete, a
table when written, /validation's when its tables are. Every reader refuses a file whose values differ from them
(check_finished; ScoreFile.open_checked in Python; tracin.results.store.digests).

/quality, /agreement, /detection, /randomization and /quality_report are the named tables of
tracin.results.store.tables (ScoreFile.write_table and read_table, their attributes registered with them).

All datasets are allocated when created and never compressed, so writing a block touches raw data only;
a block is marked done only after its data are flushed. A `kill -9` therefore loses at most the block
in flight, and the file stays readable.
"""

from tracin.results.store.checks import check_finished
from tracin.results.store.file import DataArrays, ScoreFile, replacing_path, salvage_own_damage
from tracin.results.store.hdf5 import hdf5_files_open_for_writing, hdf5_open_for_writing
from tracin.results.store.layout import SELF_INFLUENCES, VALIDATION, layout_problems
from tracin.results.store.model_scores import ModelScores, rank_matrix, rankings_name, to_numpy
from tracin.results.store.salvage import Salvage, find_damage
from tracin.results.store.tables import QUALITY_REPORT, RANDOMIZATION
from tracin.results.store.validation_record import ValidationRecord

__all__ = [
    "check_finished",
    "DataArrays",
    "ModelScores",
    "QUALITY_REPORT",
    "RANDOMIZATION",
    "SELF_INFLUENCES",
    "Salvage",
    "ScoreFile",
    "VALIDATION",
    "ValidationRecord",
    "find_damage",
    "hdf5_files_open_for_writing",
    "hdf5_open_for_writing",
    "layout_problems",
    "rank_matrix",
    "rankings_name",
    "replacing_path",
    "salvage_own_damage",
    "to_numpy",
]
