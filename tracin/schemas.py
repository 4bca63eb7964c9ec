"""Every JSON file tracin reads, and the non-tensor part of its checkpoints, through one declared schema.

A file is checked against its JSON Schema (Draft 2020-12, validated by the `jsonschema` library) before any
field is used, so that a file edited by hand, truncated, or written by something else is one line naming
the file, the field and what was expected, never a KeyError deep inside a command. The values' meaning is
checked afterwards by the typed configurations (tracin.config: TrainConfig.from_dict, ...). The schemas are
also the documentation: `python -m tracin.schemas` writes docs/format.md, and a test keeps the two equal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from tracin.config import ROLES
from tracin.errors import TracinError
from tracin.files import not_a_file

_NAME = {"type": "string", "minLength": 1}
_COUNT = {"type": "integer", "minimum": 0}
_INDICES = {"type": "array", "items": _COUNT}
_SETTINGS = {"type": "object", "description": "the typed configuration's fields (tracin.config), checked there"}
_MODEL_NAME = "^(teacher|student|student_baseline)(\\.r[1-9][0-9]*)?$"

_MODEL_ENTRY = {
    "type": "object",
    "description": "one trained model's progress",
    "required": ["status", "epoch", "epochs", "checkpoints"],
    "properties": {
        "status": {"enum": ["pending", "partial", "done"]},
        "epoch": _COUNT,
        "epochs": {"type": "integer", "minimum": 1},
        "checkpoints": {
            "type": "array",
            "items": {"type": "string", "pattern": "^epoch_[0-9]{3,}\\.pt$"},
            "uniqueItems": True,
        },
        "metrics": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        "best_epoch": _COUNT,
        "sha256": {
            "type": "object",
            "description": "each checkpoint's sha256 when saved, init.pt's too (runs from before it have none)",
            "propertyNames": {"pattern": "^(epoch_[0-9]{3,}|init)\\.pt$"},
            "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        },
    },
}

RUN_JSON = {
    "title": "run.json",
    "description": "A run folder's record, written by tracin-train: its configuration, data and models.",
    "type": "object",
    "required": [
        "format",
        "version",
        "config",
        "data_config",
        "data_fingerprint",
        "models",
        "model_configs",
        "param_counts",
    ],
    "properties": {
        "format": {"const": "tracin-run"},
        "version": _NAME,
        "config": _SETTINGS,
        "data_config": _SETTINGS,
        "data_fingerprint": {
            "type": "object",
            "required": ["digest", "n_train", "n_test"],
            "properties": {"digest": _NAME, "n_train": _COUNT, "n_test": _COUNT},
        },
        "teacher_checkpoint": {"type": ["object", "string", "null"]},
        "models": {
            "type": "object",
            "description": "every role's entry (pending until it trains), and each replica's once it starts",
            "required": list(ROLES),
            "propertyNames": {"pattern": _MODEL_NAME},
            "additionalProperties": _MODEL_ENTRY,
        },
        "model_configs": {
            "type": "object",
            "required": list(ROLES),
            "propertyNames": {"enum": list(ROLES)},
            "additionalProperties": _SETTINGS,
        },
        "param_counts": {
            "type": "object",
            "required": list(ROLES),
            "propertyNames": {"enum": list(ROLES)},
            "additionalProperties": _COUNT,
        },
        "invocations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["argv"],
                "properties": {"argv": {"type": "array", "items": {"type": "string"}}},
            },
        },
    },
}

DATA_JSON = {
    "title": "data.json",
    "description": "The examples a run trained and tested on, written by tracin-train: indices into the data set, "
    "flipped labels and stamped examples.",
    "type": "object",
    "required": ["classes", "train_index", "test_index"],
    "properties": {
        "classes": {"type": "array", "minItems": 2, "uniqueItems": True, "items": {"type": "string"}},
        "fine_classes": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
        "train_index": _INDICES,
        "test_index": _INDICES,
        "train_fine_labels": _INDICES,
        "test_fine_labels": _INDICES,
        "flipped_index": _INDICES,
        "flipped_original_labels": _INDICES,
        "flipped_new_labels": _INDICES,
        "stamped_train_index": _INDICES,
        "stamped_test_index": _INDICES,
    },
}

SWEEP_JSON = {
    "title": "sweep.json",
    "description": "How a sweep was made, written by tracin-sweep: its command line, its grid, when it finished, "
    "and where.",
    "type": "object",
    "required": ["command", "vary", "finished", "machine"],
    "additionalProperties": False,  # round 35, SJ01: a key tracin-sweep does not write was read without a word
    "properties": {
        "command": {"type": "array", "items": {"type": "string"}},
        "vary": {
            "type": "object",
            "description": "the grid: each varied setting and its values",
            "minProperties": 1,
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "finished": {
            "type": "string",
            "description": "local date and time, ISO 8601 to the second (as Python's datetime.isoformat writes it)",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}$",
        },
        "machine": {"type": "object"},
    },
}

SCORE_SETTINGS = {
    "title": "score file settings (attribute settings of a tracin-score file)",
    "description": "What a score file's scores depend on, as JSON; a resume compares it whole. tracin-report "
    "rebuilds the scoring from these fields.",
    "type": "object",
    "required": ["checkpoints", "batch_size", "score.loss"],
    "properties": {
        "checkpoints": {"type": "string", "minLength": 1},
        "batch_size": {"type": "integer", "minimum": 1},
        "score.loss": {"type": "string"},
        "score.test_label": {"type": "string"},
        "models": {"type": "array", "items": {"type": "string"}},
    },
}

CLASS_MAP = {
    "title": "class map (tracin-eval --class-map)",
    "description": "Which class of the run each class of the evaluated data set counts as.",
    "type": "object",
    "minProperties": 1,
    "additionalProperties": {"type": "string", "minLength": 1},
}

CHECKPOINT = {
    "title": "tracin-train checkpoint (epoch_NNN.pt)",
    "description": "A dict saved with torch.save and read with torch.load(weights_only=True); `model` is the "
    "state dict (checked as tensors apart), every other field is checked here.",
    "type": "object",
    "required": ["format", "role", "model", "model_config", "epoch", "step", "lr", "config", "data_fingerprint"],
    "properties": {
        "format": {"const": "tracin-checkpoint"},
        "role": {"enum": list(ROLES)},
        "model": {"description": "state dict: parameter name -> tensor"},
        "model_config": {"type": "object", "required": ["arch", "stages", "width", "in_channels", "num_classes"]},
        "epoch": _COUNT,
        "step": _COUNT,
        "lr": {"type": "number", "minimum": 0, "maximum": 3.4e38},  # a float32 number
        "lr_at_save": {"type": "number"},
        "config": _SETTINGS,
        "data_config": _SETTINGS,
        "data_fingerprint": {"type": "object"},
        "metrics": {"type": "object"},
        "history": {"type": "array", "items": {"type": "object"}},
    },
}

EXPORT_JSON = {
    "title": "tracin-export.json",
    "description": "Beside tracin-explore --export's tables: the score file they are of, by its resolved path and "
    "its identity (the sha256 of its root's attributes, ScoreFile.identity). Tables of another file are not replaced.",
    "type": "object",
    "required": ["written_by", "scores", "scores_sha256"],
    "properties": {
        "written_by": {"const": "tracin-explore"},
        "scores": {"type": "string", "minLength": 1},
        "scores_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
}

SCHEMAS = {
    schema["title"]: schema
    for schema in (RUN_JSON, DATA_JSON, SWEEP_JSON, SCORE_SETTINGS, CLASS_MAP, CHECKPOINT, EXPORT_JSON)
}


def check(instance: Any, schema: dict, source: str) -> Any:
    """`instance` if it satisfies `schema`, else a TracinError of one line: the file, the field, what was
    expected (the most relevant of the failures, jsonschema's best_match)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema).iter_errors(instance))
    if error is None:
        return instance
    field = "/".join(map(str, error.absolute_path)) or "(the whole file)"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    raise TracinError(f"{source}: {field}: {message} (see docs/format.md: {schema['title']})")


def load_json(path, schema: dict, source: Optional[str] = None) -> Any:
    """A JSON file read and checked against `schema`; a path that is no regular file (a FIFO is not waited
    on), unreadable or invalid JSON, or a key given twice in one object is one line too, naming `source`
    (default: the path)."""
    path, source = Path(path), source or str(path)
    if not path.is_file():
        raise TracinError(not_a_file(path) if source == str(path) else f"{source}: {not_a_file(path)}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise TracinError(f"{source}: not readable ({error})") from None
    try:
        instance = json.loads(text, object_pairs_hook=_once_each)
    except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than the parser goes
        raise TracinError(f"{source}: not valid JSON ({error})") from None
    return check(instance, schema, source)


def _once_each(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are distinct (json keeps the last of a key given twice, without a word)."""
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"key {', '.join(map(repr, twice))} given twice in one object")
    return dict(pairs)


def markdown() -> str:
    """docs/format.md: each schema, as the code checks it."""
    parts = [
        "# File formats",
        "",
        "Generated by `python -m tracin.schemas > docs/format.md` from tracin/schemas.py, the schemas every file",
        "is checked against before use; the score file's HDF5 layout is in tracin/results/store/__init__.py.",
        "",
    ]
    for title, schema in SCHEMAS.items():
        parts += [f"## {title}", "", schema["description"], "", "```json", json.dumps(schema, indent=2), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown(), end="")
