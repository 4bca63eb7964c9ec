"""tracin: TracIn influence analysis for teacher and student image classifiers.

Public API:
    TracIn                 the batched per-sample-gradient TracInCP engine (tracin.engine.tracin)
    CrossEntropy, Distillation   the loss objects TracIn and the trainer share (tracin.training.losses)
    TopK, ScoreBlock       what TracIn.top_k and TracIn.iter_blocks return
    per_sample_grads       per-example gradients of selected parameters (tracin.engine.grads)
    Checkpoint             a model state and the learning rate that weights it
    checkpoints_from_loader   checkpoints of any layout through a captum-style load function
    ScoreFile              a tracin-score HDF5 result file (tracin.results.store)
    TracinError            base class of the errors a user can fix
    DataConfig, ModelConfig, TrainConfig, ScoreConfig, EngineConfig   typed configuration
    build_model, load_data
"""

__version__ = "0.1.0"

from tracin.training.checkpoints import Checkpoint, checkpoints_from_loader  # noqa: E402
from tracin.config import DataConfig, EngineConfig, ModelConfig, ScoreConfig, TrainConfig  # noqa: E402
from tracin.training.data import load_data  # noqa: E402
from tracin.errors import TracinError  # noqa: E402
from tracin.engine.grads import per_sample_grads  # noqa: E402
from tracin.training.losses import CrossEntropy, Distillation  # noqa: E402
from tracin.training.models import build_model  # noqa: E402
from tracin.engine.tracin import ScoreBlock, TopK, TracIn  # noqa: E402
from tracin.results.store import ScoreFile  # noqa: E402

__all__ = [
    "Checkpoint",
    "CrossEntropy",
    "DataConfig",
    "Distillation",
    "EngineConfig",
    "ModelConfig",
    "ScoreBlock",
    "ScoreConfig",
    "ScoreFile",
    "TopK",
    "TracIn",
    "TrainConfig",
    "TracinError",
    "build_model",
    "checkpoints_from_loader",
    "load_data",
    "per_sample_grads",
]
