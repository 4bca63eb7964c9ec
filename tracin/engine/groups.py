"""Layer groups: which depth of a network a layer's gradient belongs to.

The default groups are a ResNet's stages, from the modules' names: "stem" (conv1, bn1: torchvision's
names and ours), "layer1" ... "layer4", and "head" (fc); any other module is grouped by the first part of
its name ("features", "classifier", ...). The engine sums each group's part of the squared gradient norms
separately (TracIn.iter_blocks: group self-influence), from the same features as every other score.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from tracin.engine.plans import FACTORED, LayerPlan

STEM, HEAD = ("conv1", "bn1"), ("fc",)


def stage_of(module_name: str) -> str:
    """The group of a module (its name in the model): stem, layerN, head, or its first name part."""
    first = module_name.split(".", 1)[0] or "model"
    return "stem" if first in STEM else ("head" if first in HEAD else first)


def group_names(module_names: Sequence[str]) -> list[str]:
    """The groups of these modules, each once, in model order."""
    return list(dict.fromkeys(stage_of(name) for name in module_names))


def part_groups(plans: Sequence[LayerPlan], names: Sequence[str]) -> Tensor:
    """int64 [n_parts]: the position in `names` of the group of each part of a Features built from
    `plans` (Features.self_dot_parts order: flat and projected layers, then factored ones)."""
    ordered = [p for p in plans if p.representation != FACTORED] + [p for p in plans if p.representation == FACTORED]
    return torch.tensor([names.index(stage_of(p.target.name)) for p in ordered], dtype=torch.int64)
