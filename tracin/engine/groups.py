"""Layer groups: which depth of a network a layer's gradient belongs to.

The default groups are a ResNet's stages, from the modules' names: "stem" (conv1, bn1: torchvision's
names and ours), "layer1" ... "layer4", and "head" (fc); any other module is grouped by the first part of
its name ("features", "classifier", ...). A user names their own groups as module-name prefixes
(ScoreConfig.groups); a module in none of them is in "other". The engine splits each example's squared
gradient norm and each inner product by group (TracIn.iter_blocks: group self-influence and the
`VARIANT@GROUP` scores), from the same features as every other score.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from tracin.config import EVERY_GROUP, GROUP_SEPARATOR, split_variant
from tracin.engine.plans import FACTORED, LayerPlan
from tracin.errors import TracinError

STEM, HEAD = ("conv1", "bn1"), ("fc",)
OTHER = "other"  # the group of a module in none of the user's named groups
Groups = Sequence[tuple[str, Sequence[str]]]  # (group name, module-name prefixes), as ScoreConfig.groups


def stage_of(module_name: str) -> str:
    """The default group of a module (its name in the model): stem, layerN, head, or its first name part."""
    first = module_name.split(".", 1)[0] or "model"
    return "stem" if first in STEM else ("head" if first in HEAD else first)


def group_of(module_name: str, groups: Groups = ()) -> str:
    """The module's group: the first named group with a prefix of its name (on dot boundaries, as
    --layers), "other" if none has; its stage (stage_of) without named groups."""
    if not groups:
        return stage_of(module_name)
    for name, prefixes in groups:
        if any(module_name == p or module_name.startswith(p + ".") for p in prefixes):
            return name
    return OTHER


def group_names(module_names: Sequence[str], groups: Groups = ()) -> list[str]:
    """The groups of these modules, each once, in model order."""
    return list(dict.fromkeys(group_of(name, groups) for name in module_names))


def part_groups(plans: Sequence[LayerPlan], names: Sequence[str], groups: Groups = ()) -> Tensor:
    """int64 [n_parts]: the position in `names` of the group of each part of a Features built from
    `plans` (Features.self_dot_parts order: flat and projected layers, then factored ones)."""
    ordered = [p for p in plans if p.representation != FACTORED] + [p for p in plans if p.representation == FACTORED]
    return torch.tensor([names.index(group_of(p.target.name, groups)) for p in ordered], dtype=torch.int64)


def expand_variants(variants: Sequence[str], names: Sequence[str]) -> list[str]:
    """The variants with `VARIANT@*` written out for every group in `names` (in order); a variant of a
    group the model does not have is refused, naming the groups it has."""
    expanded = []
    for variant in variants:
        base, group = split_variant(variant)
        if group == EVERY_GROUP:
            expanded += [f"{base}{GROUP_SEPARATOR}{name}" for name in names]
            continue
        if group is not None and group not in names:
            raise TracinError(
                f"score variant {variant!r}: the scored parameters have no layer group {group!r}; "
                f"their groups are {', '.join(names)}"
            )
        expanded.append(variant)
    return list(dict.fromkeys(expanded))
