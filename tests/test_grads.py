"""Per-sample gradients from hooks against torch.func (vmap of grad), every parameter kind."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from tracin.engine.grads import last_linear_target, per_sample_grads, select_targets, settle_targets
from tracin.engine.layers import KINDS, Call, LayerKind, register
from tracin.engine.reference import func_per_sample_grads, func_tracin_scores
from tracin.engine.tracin import TracIn
from tracin.errors import NonFiniteError, TracinError

from conftest import ATOL, RTOL
from models_for_tests import (
    ChangesInputInPlace,
    EveryLayer,
    MixesExamples,
    SequenceFirst,
    TiedAndSubclassed,
    TiedHead,
    randomize_batchnorm,
    relative_error,
    tiny_resnet,
)


def func_grads(model, x, y):
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


@pytest.fixture
def every_layer():
    torch.manual_seed(0)
    return randomize_batchnorm(EveryLayer()).double().eval()


@pytest.mark.parametrize("conv_method", ["auto", "grouped", "patches"])
def test_every_parameter_kind_matches_torch_func_in_float64(every_layer, conv_method):
    x, y = torch.randn(7, 3, 12, 12, dtype=torch.float64), torch.randint(0, 5, (7,))
    expected = func_grads(every_layer, x, y)
    actual = per_sample_grads(every_layer, x, y, conv_method=conv_method)
    assert set(actual) == set(expected) == {n for n, _ in every_layer.named_parameters()}
    for name in expected:
        assert actual[name].shape == expected[name].shape, name
        assert relative_error(actual[name], expected[name]) < 1e-12, name


def test_float32_resnet_with_batchnorm_matches_float64_reference():
    model = tiny_resnet()
    x, y = torch.randn(5, 1, 10, 10), torch.randint(0, 10, (5,))
    expected = func_grads(model.double(), x.double(), y)
    actual = per_sample_grads(model.float(), x, y)
    assert any("bn" in name for name in actual)
    for name in expected:
        torch.testing.assert_close(actual[name].double(), expected[name], rtol=RTOL, atol=ATOL)


def test_layer_prefixes_select_on_dot_boundaries():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])
    names = [n for t in select_targets(model, ["1"]) for n in t.param_names]
    assert names == ["1.weight", "1.bias"]  # not 10.*
    names = [n for t in select_targets(model, ["10.bias", "0"]) for n in t.param_names]
    assert names == ["0.weight", "0.bias", "10.bias"]


def test_unknown_layer_is_a_user_error():
    with pytest.raises(TracinError, match="selects no trainable parameter"):
        select_targets(tiny_resnet(), ["layer9"])


def test_unknown_conv_method_is_a_user_error():
    with pytest.raises(TracinError, match="conv_method must be one of"):
        per_sample_grads(tiny_resnet(), torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), conv_method="fft")


def test_frozen_parameters_are_not_selected():
    model = tiny_resnet()
    model.conv1.weight.requires_grad_(False)
    names = [n for t in select_targets(model) for n in t.param_names]
    assert "conv1.weight" not in names and "bn1.weight" in names


def test_last_linear_target_is_the_final_linear_weight():
    target = last_linear_target(tiny_resnet())
    assert target.param_names == ["fc.weight"]


def test_batchnorm_in_training_mode_is_refused():
    model = tiny_resnet().train()
    with pytest.raises(TracinError, match="eval mode"):
        per_sample_grads(model, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))


def test_non_finite_loss_is_reported():
    model = tiny_resnet()
    with pytest.raises(NonFiniteError):
        per_sample_grads(model, torch.full((2, 1, 8, 8), float("nan")), torch.tensor([0, 1]))


# --- models as users bring them: in-place operations, tuples and dicts, tied and container parameters ---


def test_examples_in_dimension_one_and_attention_tuples_match_torch_func():
    torch.manual_seed(0)
    model = SequenceFirst().double().eval()
    x, y = torch.randn(5, 24, dtype=torch.float64), torch.randint(0, 4, (5,))
    expected, actual = func_grads(model, x, y), per_sample_grads(model, x, y)
    assert set(actual) == set(expected)  # out_proj's parameters although out_proj is never called
    for name in expected:
        assert relative_error(actual[name], expected[name]) < 1e-12, name


def test_tied_weights_subclassed_linear_and_dict_outputs_match_torch_func():
    torch.manual_seed(0)
    model = TiedAndSubclassed().double().eval()
    x, y = torch.randn(6, 6, dtype=torch.float64), torch.randint(0, 4, (6,))
    expected, actual = func_grads(model, x, y), per_sample_grads(model, x, y)
    assert set(actual) == set(expected)
    for name in expected:
        assert relative_error(actual[name], expected[name]) < 1e-12, name


def test_a_module_changing_its_input_in_place_after_running_is_recorded_as_it_was():
    torch.manual_seed(0)
    model = ChangesInputInPlace().eval()
    reference_model = ChangesInputInPlace(in_place=False).eval()
    reference_model.load_state_dict(model.state_dict())
    x, y = torch.randn(7, 6), torch.randint(0, 4, (7,))
    train, test = (x[:4], y[:4]), (x[4:], y[4:])
    expected = func_tracin_scores(reference_model, [(model.state_dict(), 0.5)], train, test)
    actual = TracIn(model, [(model.state_dict(), 0.5)]).scores(train, test)
    assert relative_error(actual, expected) < RTOL


def test_examples_that_interact_inside_a_module_are_an_error_not_a_number():
    model = MixesExamples().eval()
    with pytest.raises(TracinError, match="examples interact"):
        per_sample_grads(model, torch.randn(4, 6), torch.randint(0, 4, (4,)), layers=["scale"])


def test_a_weight_also_read_outside_its_module_gets_every_use():
    torch.manual_seed(0)
    model = TiedHead().double().eval()
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 6, (5,))
    expected, actual = func_grads(model, x, y), per_sample_grads(model, x, y)
    for name in expected:
        assert relative_error(actual[name], expected[name]) < 1e-12, name


# --- a layer kind is one registered class ---------------------------------------------------------------


@pytest.fixture
def layernorm_kind():
    """A closed form for nn.LayerNorm, registered for one test and removed after it."""

    @register
    class LayerNormKind(LayerKind):
        """dgamma_n = sum_t g_nt * xhat_nt, dbeta_n = sum_t g_nt (t: positions before the normalised dims)."""

        name = "layernorm"
        module_type = nn.LayerNorm

        def record(self, target, leaves, spec, outputs, copy):
            norm = target.module  # xhat is a new tensor: nothing downstream can change it in place
            return Call(outputs, (F.layer_norm(leaves[0].detach(), norm.normalized_shape, None, None, norm.eps),))

        def call_flat(self, target, call):
            xhat, g = call.inputs[0], call.grad
            n, d = g.shape[0], target.module.weight.numel()
            pieces = {"weight": g * xhat, "bias": g}
            return torch.cat([pieces[p].reshape(n, -1, d).sum(1) for p in target.params], dim=1)

    try:
        yield LayerNormKind
    finally:
        KINDS.pop(LayerNormKind.name)


def test_a_registered_layer_kind_is_used_and_matches_the_reference(layernorm_kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Flatten(), nn.Linear(40, 4)).double().eval()
    with torch.no_grad():  # away from LayerNorm's initial 1/0, so gamma and beta matter
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x, y = torch.randn(7, 5, 6, dtype=torch.float64), torch.randint(0, 4, (7,))
    targets, grads = settle_targets(model, select_targets(model), x, y)
    assert [t.kind for t in targets] == ["linear", layernorm_kind.name, "linear"]
    actual = torch.cat([grads[name].flatten(1) for name, _ in model.named_parameters()], dim=1)
    assert relative_error(actual, func_per_sample_grads(model, x, y)) < 1e-12
