"""Factored inner products and the per-layer cost model."""

import torch

from tracin.engine.features import Features, factored_dot, factored_self_dot
from tracin.engine.grads import Factors

from models_for_tests import relative_error


def random_factors(n, groups, positions, d_in, d_out, seed):
    generator = torch.Generator().manual_seed(seed)
    return Factors(
        torch.randn(n, groups, positions, d_in, generator=generator, dtype=torch.float64),
        torch.randn(n, groups, positions, d_out, generator=generator, dtype=torch.float64),
    )


def test_factored_dot_equals_materialized_dot():
    for groups, positions in ((1, 1), (1, 9), (3, 5)):
        x, y = random_factors(6, groups, positions, 7, 4, 0), random_factors(5, groups, positions, 7, 4, 1)
        expected = x.materialize() @ y.materialize().T
        assert relative_error(factored_dot(x, y), expected) < 1e-12
        assert relative_error(factored_dot(x, y, max_elements=10), expected) < 1e-12  # column chunks


def test_factored_self_dot_equals_squared_norm():
    x = random_factors(6, 2, 5, 7, 4, 0)
    assert relative_error(factored_self_dot(x), x.materialize().pow(2).sum(1)) < 1e-12
    for max_elements in (10, 200):  # chunks of 1 and of 4 examples (each Gram pair holds 2 * 5 * 5 values)
        assert relative_error(factored_self_dot(x, max_elements=max_elements), x.materialize().pow(2).sum(1)) < 1e-12


def test_features_kept_in_bfloat16_keep_their_float32_norms():
    """The normalised variants divide by norms taken before the cast (in float32, bit for bit); norms of
    the bfloat16 copy differ by ~1e-3, which a score tolerance could not tell apart."""
    generator = torch.Generator().manual_seed(0)
    features = Features([torch.randn(6, 50, generator=generator), torch.randn(6, 30, generator=generator)], [])
    kept = features.kept_as(torch.bfloat16, norms=True)
    assert all(flat.dtype == torch.bfloat16 for flat in kept.flats)
    float32_norms = features.self_dot_parts().float()
    assert torch.equal(kept.squared_parts_float32(), float32_norms)
    bf16_norms = Features([flat.bfloat16() for flat in features.flats], []).self_dot_parts().float()
    assert not torch.allclose(bf16_norms, float32_norms, rtol=1e-4, atol=0)  # what a slip to bf16 norms would give


def test_gathered_batches_equal_joined_batches():
    """Kept test features are copied batch by batch into one allocation (the full-size H200 run ran out of
    memory joining them at the end): the result equals the joined batches, flat, factored and norms."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for first, n in ((10, 4), (14, 4), (18, 3)):
        factors = random_factors(n, 2, 3, 5, 4, first)
        flat = torch.randn(n, 7, generator=generator, dtype=torch.float64)
        batches.append((first, Features([flat], [factors]).kept_as(torch.float64, norms=True)))
    gathered = Features.gather(iter(batches), 10, 11)
    parts = [features for _, features in batches]
    assert torch.equal(gathered.flats[0], torch.cat([p.flats[0] for p in parts]))
    assert torch.equal(gathered.factored[0].A, torch.cat([p.factored[0].A for p in parts]))
    assert torch.equal(gathered.factored[0].G, torch.cat([p.factored[0].G for p in parts]))
    assert torch.equal(gathered.squared_parts, torch.cat([p.squared_parts for p in parts], dim=1))
