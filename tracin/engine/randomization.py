"""Model randomization (Hanawa et al., ICLR 2021): the checkpoints with some layer groups' weights
re-initialised, so the same TracIn engine scores a model that learned nothing in those layers.

An attribution that ranks the training data alike with trained and with random weights explains the
data (e.g. image similarity), not what the model learned.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from tracin.engine.groups import Groups, group_of
from tracin.errors import TracinError
from tracin.training.checkpoints import Checkpoint


def module_of(key: str) -> str:
    """The module name of a state-dict entry ("layer1.0.bn1.weight" -> "layer1.0.bn1")."""
    return key.rsplit(".", 1)[0] if "." in key else ""


def randomized_checkpoints(
    fresh: nn.Module, checkpoints: Sequence[Checkpoint], randomized: Sequence[str], groups: Groups = ()
) -> list[Checkpoint]:
    """Copies of `checkpoints` whose state entries (parameters and buffers: BatchNorm's running statistics
    too) of the modules in the layer groups `randomized` (tracin.engine.groups.group_of) are `fresh`'s, a
    newly initialised model of the same architecture. Every checkpoint gets the same random weights and
    keeps its lr weight."""
    fresh_state = fresh.state_dict()
    keys = [key for key in fresh_state if group_of(module_of(key), groups) in set(randomized)]
    if not keys:
        raise TracinError(f"the model has no layers in the groups {', '.join(randomized)} to re-initialise")
    out = []
    for checkpoint in checkpoints:
        state = dict(checkpoint.state)
        missing = [key for key in keys if key not in state]
        if missing:
            raise TracinError(
                f"checkpoint {checkpoint.path or '(in memory)'} lacks {missing[0]}: not the model's own checkpoint"
            )
        state.update({key: fresh_state[key].detach().clone().to(state[key].device) for key in keys})
        out.append(Checkpoint(state, checkpoint.lr, checkpoint.path, checkpoint.epoch))
    return out


def fresh_model(build, seed: int) -> nn.Module:
    """build() with its own initialiser, seeded: the random weights of the randomization test."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
