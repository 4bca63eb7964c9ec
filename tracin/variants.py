"""Score variants: how TracIn's per-checkpoint inner products are normalised, one registered object each.

A variant divides each train gradient by its norm, each test gradient by its norm, both or neither:

    raw                sum_c lr_c <g, g'>                    TracInCP as published
    cosine             sum_c lr_c <g, g'> / (|g| |g'|)       direction alone
    train-normalised   sum_c lr_c <g, g'> / |g|              RelatIF-style: outlier train examples damped

Its self-influence (the score of a train example with itself, used to rank suspects) follows from the same
two choices: sum_c lr_c |g_c|^p with p = 2 - (normalised sides), so raw's is |g|^2, a one-sided variant's
|g|, and cosine's the constant sum_c lr_c (no ranking). The engine (tracin.engine.tracin), its float64
reference (tracin.engine.reference), the configuration's checks and the score file's self-influence all
read this registry; a new variant is one `register_variant` call (docs/extending.md). A base module: no
torch, nothing above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tracin.errors import TracinError


@dataclass(frozen=True, kw_only=True)
class ScoreVariant:
    """One way of normalising scores: `normalise_train` divides by |g_train|, `normalise_test` by
    |g_test| (per checkpoint, before the sum over checkpoints)."""

    name: str
    normalise_train: bool
    normalise_test: bool
    description: str

    @property
    def self_influence_power(self) -> int:
        """p in the self-influence sum_c lr_c |g_c|^p: 2, 1, or 0 (a constant: no self-influence ranking)."""
        return 2 - int(self.normalise_train) - int(self.normalise_test)

    @property
    def normalised(self) -> bool:
        """Whether any gradient norm is needed."""
        return self.normalise_train or self.normalise_test


SCORE_VARIANTS: dict[str, ScoreVariant] = {}


def register_variant(variant: ScoreVariant) -> ScoreVariant:
    """Add a variant. Its name is new, and up to 32 letters, digits, '_' and '-': it names HDF5 datasets
    (scores_NAME) and table fields, and '@' separates a layer group."""
    if variant.name in SCORE_VARIANTS:
        raise TracinError(f"score variant {variant.name!r} is already registered")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", variant.name):
        raise TracinError(f"a score variant is named by up to 32 letters, digits, '_' and '-', got {variant.name!r}")
    SCORE_VARIANTS[variant.name] = variant
    return variant


def score_variant(name: str) -> ScoreVariant:
    """The registered variant of this (base) name; an unknown name is refused, never guessed."""
    try:
        return SCORE_VARIANTS[name]
    except KeyError:
        raise TracinError(f"variant must be one of {', '.join(SCORE_VARIANTS)}, got {name!r}") from None


register_variant(ScoreVariant(name="raw", normalise_train=False, normalise_test=False, description="raw TracInCP"))
register_variant(ScoreVariant(name="cosine", normalise_train=True, normalise_test=True, description="cosine TracInCP"))
register_variant(
    ScoreVariant(
        name="train-normalised", normalise_train=True, normalise_test=False, description="train-normalised TracInCP"
    )
)
