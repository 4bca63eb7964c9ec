"""Random projections: seeded, unbiased, and structured per layer."""

import pytest
import torch

from tracin.config import ScoreConfig
from tracin.engine.projection import (
    PROJECTORS,
    GaussianProjector,
    IdentityProjector,
    Projector,
    RademacherProjector,
    kronecker_dims,
    make_projector,
    register,
)
from tracin.engine.tracin import TracIn
from tracin.errors import TracinError

from models_for_tests import tiny_resnet


def test_same_seed_same_matrix_different_seed_different():
    a, b = GaussianProjector(50, 8, 3, "cpu", torch.float32), GaussianProjector(50, 8, 3, "cpu", torch.float32)
    assert torch.equal(a.matrix, b.matrix)
    assert not torch.equal(a.matrix, GaussianProjector(50, 8, 4, "cpu", torch.float32).matrix)


def test_projected_inner_products_are_unbiased():
    generator = torch.Generator().manual_seed(0)
    u, v = torch.randn(2, 200, generator=generator, dtype=torch.float64)
    estimates = torch.stack(
        [
            (
                GaussianProjector(200, 16, s, "cpu", torch.float64).project(u)
                * GaussianProjector(200, 16, s, "cpu", torch.float64).project(v)
            ).sum()
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


def test_rademacher_entries_are_signs_and_inner_products_unbiased():
    projector = make_projector(300, 20, 5, "cpu", torch.float64, kind="rademacher")
    assert isinstance(projector, RademacherProjector)
    assert torch.allclose(projector.matrix.abs(), torch.full((300, 20), 20**-0.5, dtype=torch.float64))
    generator = torch.Generator().manual_seed(1)
    u, v = torch.randn(2, 300, generator=generator, dtype=torch.float64)
    estimates = torch.stack(
        [
            make_projector(300, 20, s, "cpu", torch.float64, kind="rademacher").project(u)
            @ make_projector(300, 20, s, "cpu", torch.float64, kind="rademacher").project(v)
            for s in range(3000)
        ]
    )
    assert abs(estimates.mean() - u @ v) < 4 * estimates.std() / 3000**0.5


def test_a_registered_projector_is_what_projected_tracin_uses():
    """A new projection type is one class: the Kronecker sides and flat layers both go through it."""
    calls = []

    @register("scaled-identity-test")
    class Halving(Projector):
        """Keeps the first out_dim coordinates, times 1/2 (not dense: the generic path)."""

        def __init__(self, in_dim, out_dim, seed, device, dtype):
            self.in_dim, self.out_dim = in_dim, out_dim

        def project(self, x):
            calls.append(x.shape[-1])
            return x[..., : self.out_dim] / 2

    try:
        model = tiny_resnet()
        checkpoints = [(model.state_dict(), 1.0)]
        generator = torch.Generator().manual_seed(0)
        data = (torch.randn(6, 1, 8, 8, generator=generator), torch.randint(0, 10, (6,), generator=generator))
        config = ScoreConfig(mode="projected", proj_dim=8, projector="scaled-identity-test")
        scores = TracIn(model, checkpoints, config, device="cpu").scores(data, data)
    finally:
        del PROJECTORS["scaled-identity-test"]
    assert calls and torch.isfinite(scores).all()
    assert not torch.allclose(
        scores, TracIn(model, checkpoints, ScoreConfig(mode="projected", proj_dim=8), device="cpu").scores(data, data)
    )
    with pytest.raises(TracinError, match="projector must be one of gaussian, rademacher"):
        make_projector(10, 2, 0, "cpu", kind="scaled-identity-test")
