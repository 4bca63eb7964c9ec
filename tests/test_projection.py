"""Random projections: seeded, unbiased, and structured per layer."""

import torch

from tracin.engine.projection import GaussianProjector, IdentityProjector, kronecker_dims, make_projector


def test_same_seed_same_matrix_different_seed_different():
    a, b = GaussianProjector(50, 8, 3, "cpu", torch.float32), GaussianProjector(50, 8, 3, "cpu", torch.float32)
    assert torch.equal(a.matrix, b.matrix)
    assert not torch.equal(a.matrix, GaussianProjector(50, 8, 4, "cpu", torch.float32).matrix)


def test_projected_inner_products_are_unbiased():
    generator = torch.Generator().manual_seed(0)
    u, v = torch.randn(2, 200, generator=generator, dtype=torch.float64)
    estimates = torch.stack(
        [
            (GaussianProjector(200, 16, s, "cpu", torch.float64).project(u) * GaussianProjector(200, 16, s, "cpu", torch.float64).project(v)).sum()
            for s in range(4000)
        ]
    )
    # mean within 4 standard errors of the truth; the spread itself is far from zero
    assert abs(estimates.mean() - u @ v) < 4 * estimates.std() / 4000**0.5
    assert estimates.std() > 0.1 * abs(u @ v)


def test_identity_when_the_vector_already_fits():
    assert isinstance(make_projector(10, 10, 0, "cpu"), IdentityProjector)
    assert isinstance(make_projector(10, 4, 0, "cpu"), GaussianProjector)


def test_kronecker_dims_respect_the_budget_and_each_side():
    assert kronecker_dims(10, 5, 100) == (10, 5)  # fits: exact
    for d_in, d_out, budget in ((577, 64, 1024), (513, 10, 1024), (4608, 512, 4096), (9, 3, 4)):
        k_in, k_out = kronecker_dims(d_in, d_out, budget)
        assert 1 <= k_in <= d_in and 1 <= k_out <= d_out and k_in * k_out <= budget
    assert kronecker_dims(513, 10, 1024) == (102, 10)  # the small side stays exact
