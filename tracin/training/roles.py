"""The models of a run: which roles need a teacher, each role's architecture and initial weights, the
replicas' seeds, and `train_role`, which trains one of them with tracin.training.trainer.fit.

Both students start from the same weights: `seed + 1` and, with --student-init teacher, the trained
teacher's stem and stages. A replica is the same role trained again with its seed moved by
REPLICA_SEED_STRIDE (initial weights, data order, augmentation), on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from torch import Tensor, nn

from tracin.config import ModelConfig, TrainConfig, model_name, replica_seed
from tracin.errors import CheckpointError
from tracin.options import RunOptions
from tracin.runtime import Runtime
from tracin.training.checkpoints import load_model, teacher_record
from tracin.training.data import RunData
from tracin.training.models import copy_shared_stages, student_config, teacher_config
from tracin.training.run_folder import RunPaths, pending_entry
from tracin.training.trainer import ModelJob, RunContext, fit, freeze, seeded_model

TEACHER_SEED_OFFSET, STUDENT_SEED_OFFSET = 0, 1  # initial weights: teacher from seed, students from seed + 1


@dataclass
class Teacher:
    """A trained teacher: frozen module on the device, its CPU state dict, and its provenance."""

    module: nn.Module
    state: dict[str, Tensor]
    info: dict


def needs_teacher(role: str, config: TrainConfig) -> bool:
    distils = role == "student" and config.distill == "teacher"
    return role != "teacher" and (distils or config.student_init == "teacher")


def model_configs(config: TrainConfig, data: RunData) -> dict[str, ModelConfig]:
    """Architecture of each role: the teacher has 4 stages, the students `student_stages`, one width."""
    teacher = teacher_config(config.arch, config.width, data.in_channels, data.num_classes)
    student = student_config(
        config.student_arch or config.arch, config.width, config.student_stages, data.in_channels, data.num_classes
    )
    return {"teacher": teacher, "student": student, "student_baseline": student}


def teacher_path(options: RunOptions, paths: RunPaths, config: TrainConfig, replica: int = 0) -> Path:
    """What the students of a replica distil from: --teacher, or the same replica's final teacher."""
    return Path(options.teacher) if options.teacher else paths.checkpoint(model_name("teacher", replica), config.epochs)


def load_teacher(path: Path, data: RunData, runtime: Runtime) -> Teacher:
    """A teacher checkpoint (role teacher), checked to fit the data's channels and classes."""
    module, payload = load_model(path, role="teacher")
    config = ModelConfig.from_dict(payload["model_config"])
    if (config.in_channels, config.num_classes) != (data.in_channels, data.num_classes):
        raise CheckpointError(
            f"teacher {path} takes {config.in_channels} channels and {config.num_classes} classes; "
            f"the data has {data.in_channels} and {data.num_classes}"
        )
    frozen = freeze(module.to(runtime.device, memory_format=runtime.memory_format))
    return Teacher(frozen, payload["model"], teacher_record(path, payload))


def make_job(role: str, replica: int, run: RunContext, teacher: Optional[Teacher]) -> ModelJob:
    """What to train for `role` in `run` (whose config carries the replica's seed). Both students start
    from the same weights: seed + 1 and, with --student-init teacher, the teacher's stem and stages."""
    config, name = run.config, model_name(role, replica)
    model_config = model_configs(config, run.data)[role]
    if role == "teacher":
        initial = seeded_model(model_config, config.seed + TEACHER_SEED_OFFSET).state_dict()
        return ModelJob(role, name, model_config, initial)
    model = seeded_model(model_config, config.seed + STUDENT_SEED_OFFSET)
    if config.student_init == "teacher":
        copy_shared_stages(model, teacher.state)
    distils = role == "student" and config.distill == "teacher"
    self_distill = role == "student" and config.distill == "self"
    info = teacher.info if distils else ("self" if self_distill else None)
    return ModelJob(
        role, name, model_config, model.state_dict(), teacher.module if distils else None, self_distill, info
    )


def replica_run(run: RunContext, replica: int) -> RunContext:
    """The run as replica `replica` trains it: the same data and configuration, with the seed (initial
    weights, data order, augmentation) moved by replica * REPLICA_SEED_STRIDE."""
    return replace(run, config=replace(run.config, seed=replica_seed(run.config.seed, replica)))


def train_role(role: str, replica: int, run: RunContext, options: RunOptions) -> None:
    """Train one model of the run (a role's replica), unless run.json says it is done already."""
    name = model_name(role, replica)
    run = replica_run(run, replica)
    entry = run.record["models"].setdefault(name, pending_entry(run.config.epochs))
    if entry["status"] == "done" and run.paths.checkpoint(name, run.config.epochs).is_file():
        run.runtime.log(f"{name}: done already, skipped")
        return
    teacher = None
    if needs_teacher(role, run.config):
        teacher = load_teacher(teacher_path(options, run.paths, run.config, replica), run.data, run.runtime)
    job = make_job(role, replica, run, teacher)
    model = job.model_config
    run.runtime.log(
        f"{name}: seed {run.config.seed}, {run.config.epochs} epochs, {model.arch} cut after {model.stages} stage(s), width {model.width}"
    )
    fit(job, run)
