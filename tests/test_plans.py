"""The per-layer cost model."""

from tracin.engine.plans import FACTORED, FLAT, LayerShape, choose_representation


def test_cost_model_factors_linear_layers_and_small_maps_but_not_large_maps():
    many = dict(n_rows=2048, n_cols=512)
    assert choose_representation(LayerShape(1, 1, 513, 10), **many) == FACTORED  # a classifier head
    assert choose_representation(LayerShape(1, 1024, 145, 16), **many) == FLAT  # 32x32 map, 3x3x16 conv
    assert choose_representation(LayerShape(1, 16, 4608, 512), **many) == FACTORED  # 4x4 map, 512 channels
    assert choose_representation(LayerShape(flat_dim=32), **many) == FLAT  # BatchNorm
