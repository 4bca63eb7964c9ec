"""tracin: TracIn influence analysis for teacher and student image classifiers.

Public API (imported on first use, so that `import tracin` and every command's --help stay light: no
torch, torchvision, h5py or matplotlib until a name below is used):
    TracIn                 the batched per-sample-gradient TracInCP engine (tracin.engine.tracin)
    CrossEntropy, Distillation   the loss objects TracIn and the trainer share (tracin.training.losses)
    TopK, ScoreBlock       what TracIn.top_k and TracIn.iter_blocks return
    per_sample_grads       per-example gradients of selected parameters (tracin.engine.grads)
    Checkpoint             a model state and the learning rate that weights it
    load_checkpoints       checkpoints from a folder, a glob or a list; prefix= picks one model of several
    checkpoints_from_loader   checkpoints of any layout through a captum-style load function
    ScoreFile              a tracin-score HDF5 result file (tracin.results.store)
    ScoreVariant, register_variant   a new way of normalising scores (tracin.variants)
    TracinError            base class of the errors a user can fix
    DataConfig, ModelConfig, TrainConfig, ScoreConfig, EngineConfig   typed configuration
    build_model, load_data
"""

from __future__ import annotations

import importlib
from typing import Any

from tracin.version import __version__  # noqa: F401 (the package face carries it)

_PUBLIC = {  # name -> the module that defines it
    "Checkpoint": "tracin.training.checkpoints",
    "checkpoints_from_loader": "tracin.training.checkpoints",
    "load_checkpoints": "tracin.training.checkpoints",
    "CrossEntropy": "tracin.training.losses",
    "Distillation": "tracin.training.losses",
    "DataConfig": "tracin.config",
    "EngineConfig": "tracin.config",
    "ModelConfig": "tracin.config",
    "ScoreConfig": "tracin.config",
    "TrainConfig": "tracin.config",
    "ScoreBlock": "tracin.engine.tracin",
    "TopK": "tracin.engine.topk",
    "TracIn": "tracin.engine.tracin",
    "ScoreFile": "tracin.results.store",
    "ScoreVariant": "tracin.variants",
    "register_variant": "tracin.variants",
    "TracinError": "tracin.errors",
    "build_model": "tracin.training.models",
    "load_data": "tracin.training.data",
    "per_sample_grads": "tracin.engine.grads",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    """The public names, each imported from its module on first use (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tracin' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
