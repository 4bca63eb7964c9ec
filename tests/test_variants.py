"""The score-variant registry (tracin.variants): every variant is one registered object that the engine, its
float64 reference, the configuration and the score file's self-influence read; checked against the
variants' formulas written out here, and with a variant registered inside the test."""

import numpy as np
import pytest
import torch

from tracin.config import ScoreConfig
from tracin.engine.reference import func_per_sample_grads, func_tracin_scores
from tracin.engine.tracin import TracIn
from tracin.errors import TracinError
from tracin.results.store import ScoreFile
from tracin.variants import SCORE_VARIANTS, ScoreVariant, register_variant, score_variant

from conftest import RTOL
from models_for_tests import perturbed_states, relative_error, tiny_resnet

LRS = (0.1, 0.03)


@pytest.fixture(scope="module")
def setup():
    model = tiny_resnet()
    checkpoints = perturbed_states(model, LRS)
    generator = torch.Generator().manual_seed(4)
    train = (torch.randn(12, 1, 10, 10, generator=generator), torch.randint(0, 10, (12,), generator=generator))
    test = (torch.randn(5, 1, 10, 10, generator=generator), torch.randint(0, 10, (5,), generator=generator))
    return model, checkpoints, train, test


def written_out(model, checkpoints, train, test, train_power: int, test_power: int) -> torch.Tensor:
    """sum_c lr_c <g, g'> / (|g|^train_power |g'|^test_power), the formula itself, in float64."""
    import copy

    total = 0
    for state, lr in checkpoints:
        copied = copy.deepcopy(model)
        copied.load_state_dict(state)
        g, h = func_per_sample_grads(copied, *train), func_per_sample_grads(copied, *test)
        total = total + lr * (g @ h.T) / (g.norm(dim=1)[:, None] ** train_power * h.norm(dim=1)[None, :] ** test_power)
    return total


@pytest.fixture
def test_normalised():
    """A variant the package does not have, registered for one test: test gradients divided by their norm."""
    variant = register_variant(
        ScoreVariant(name="test-normalised", normalise_train=False, normalise_test=True, description="test-normalised")
    )
    yield variant
    del SCORE_VARIANTS[variant.name]


@pytest.mark.parametrize("name, train_power, test_power", [("raw", 0, 0), ("cosine", 1, 1), ("train-normalised", 1, 0)])
def test_the_built_in_variants_are_their_formulas(setup, name, train_power, test_power):
    """The registry's entries, the reference that reads them and the engine, against the formula."""
    model, checkpoints, train, test = setup
    expected = written_out(model, checkpoints, train, test, train_power, test_power)
    assert relative_error(func_tracin_scores(model, checkpoints, train, test, variant=name), expected) < 1e-12
    assert (
        relative_error(TracIn(model, checkpoints, ScoreConfig(variants=(name,))).scores(train, test), expected) < RTOL
    )
    assert score_variant(name).self_influence_power == 2 - train_power - test_power


def test_a_registered_variant_is_scored_checked_and_read_end_to_end(setup, test_normalised, tiny_scores):
    model, checkpoints, train, test = setup
    expected = written_out(model, checkpoints, train, test, 0, 1)
    config = ScoreConfig(variants=("raw", "test-normalised", "test-normalised@head"))  # accepted by the configuration
    engine = TracIn(model, checkpoints, config)
    scores = engine.scores_by_variant(train, test)
    assert relative_error(scores["test-normalised"], expected) < RTOL
    assert (
        relative_error(
            scores["test-normalised"], func_tracin_scores(model, checkpoints, train, test, variant="test-normalised")
        )
        < RTOL
    )
    head = func_tracin_scores(model, checkpoints, train, test, layers=["fc"], variant="test-normalised")
    assert relative_error(scores["test-normalised@head"], head) < RTOL
    # its self-influence, <g, g/|g|> = |g|, is the one train-normalised has: read from the same stored sums
    assert test_normalised.self_influence_power == 1
    with ScoreFile.open_read(tiny_scores) as store:
        scores_of = store.model("teacher")
        assert scores_of.normalised_self_influence is not None  # sum_c lr_c |g|, beside raw's sum_c lr_c |g|^2
        assert not np.array_equal(scores_of.normalised_self_influence, scores_of.self_influence)
        np.testing.assert_array_equal(
            scores_of.variant_self_influence("test-normalised"), scores_of.normalised_self_influence
        )
        np.testing.assert_array_equal(scores_of.variant_self_influence("raw"), scores_of.self_influence)
        assert scores_of.variant_self_influence("cosine") is None  # power 0: the same sum for every example


def test_an_unknown_variant_is_refused_never_guessed():
    with pytest.raises(TracinError, match="variant must be one of raw, cosine, train-normalised, got 'cosin'"):
        ScoreConfig(variants=("cosin",))
    with pytest.raises(TracinError, match="got 'cosin'"):
        score_variant("cosin")
    with pytest.raises(TracinError, match="already registered"):
        register_variant(ScoreVariant(name="raw", normalise_train=True, normalise_test=True, description="again"))
    for bad in ("raw@head", "a/b", "x" * 33, ""):  # a group is not a variant; HDF5 and table names bound the rest
        with pytest.raises(TracinError, match="up to 32 letters, digits"):
            register_variant(ScoreVariant(name=bad, normalise_train=False, normalise_test=False, description=""))
    assert list(SCORE_VARIANTS) == ["raw", "cosine", "train-normalised"]
