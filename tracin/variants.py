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

from dataclasses import dataclass

from tracin.errors import TracinError


@dataclass(frozen=True)
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
    """Add a variant; its name must be new and contain no '@' (that separates a layer group) or ','."""
    if variant.name in SCORE_VARIANTS:
        raise TracinError(f"score variant {variant.name!r} is already registered")
    if not variant.name or any(c in variant.name for c in "@,"):
        raise TracinError(f"a score variant's name is non-empty without '@' or ',', got {variant.name!r}")
    SCORE_VARIANTS[variant.name] = variant
    return variant


def score_variant(name: str) -> ScoreVariant:
    """The registered variant of this (base) name; an unknown name is refused, never guessed."""
    try:
        return SCORE_VARIANTS[name]
    except KeyError:
        raise TracinError(f"variant must be one of {', '.join(SCORE_VARIANTS)}, got {name!r}") from None


register_variant(ScoreVariant("raw", False, False, "raw TracInCP"))
register_variant(ScoreVariant("cosine", True, True, "cosine TracInCP"))
register_variant(ScoreVariant("train-normalised", True, False, "train-normalised TracInCP"))
