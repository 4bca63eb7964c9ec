"""Per-layer plans: how each selected layer's per-sample gradient becomes features, and the cost model.

Each selected layer is represented, per example, in one of two exact forms or a projected one:

    flat       the materialised gradient, Tensor[n, D]; inner products are one matrix product
    factored   Factors(A, G) of a Linear/Conv2d layer; <dW_n, dW'_m> = sum_g sum_{t,s} (a_t.a'_s)(g_t.g'_s),
               cheaper than flat when positions^2 * (d_in + d_out) < d_in * d_out (late, small feature maps,
               and every Linear layer)
    projected  flat, after a seeded Kronecker projection of A and G (never forming dW) or a projection of
               other layers' flat gradients, through tracin.engine.projection's Projector

`choose_representation` is the per-layer cost model (FLOPs of features plus all pairwise products).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from tracin.engine.features import Features
from tracin.engine.grads import Call, Target, layer_factors, layer_flat, output_grads, projected_inputs
from tracin.engine.projection import Projector, kronecker_dims, make_projector

FLAT, FACTORED, PROJECTED = "flat", "factored", "projected"


@dataclass(frozen=True)
class LayerShape:
    """Sizes of one layer's per-sample gradient: groups, positions (output positions summed over, all
    calls), d_in (inputs incl. bias column), d_out; flat_dim for layers that are always flat."""

    groups: int = 1
    positions: int = 1
    d_in: int = 0
    d_out: int = 0
    flat_dim: int = 0

    @property
    def factorable(self) -> bool:
        return self.d_out > 0


def probe_shape(target: Target, calls: Sequence[Call]) -> LayerShape:
    """The layer's sizes, from a probe batch (torch.func layers are checked against the batched output
    here, once, rather than on every batch)."""
    if target.handler.factorable:
        factors = layer_factors(target, calls)
        _, groups, positions, d_in = factors.A.shape
        return LayerShape(groups, positions, d_in + factors.bias, factors.G.shape[-1])
    return LayerShape(flat_dim=layer_flat(target, calls, verify=True).shape[1])


def choose_representation(shape: LayerShape, n_rows: int, n_cols: int, self_only: bool = False) -> str:
    """FLAT or FACTORED for an exact factorable layer, whichever needs fewer multiply-adds to produce
    all n_rows x n_cols inner products (n_rows self products when self_only)."""
    if not shape.factorable:
        return FLAT
    g, t, d_in, d_out = shape.groups, shape.positions, shape.d_in, shape.d_out
    pairs = n_rows if self_only else n_rows * n_cols
    examples = n_rows if self_only else n_rows + n_cols
    flat = g * d_in * d_out * (t * examples + pairs)
    factored = g * t * t * (d_in + d_out) * pairs
    return FACTORED if factored < flat else FLAT


@dataclass
class LayerPlan:
    """How one target's per-sample gradients become features. A PROJECTED factorable layer keeps two
    projectors, project_in [d_in (+1 bias) -> k_in] and project_out [d_out -> k_out] (Kronecker); other
    projected layers project their flat gradient with project_flat."""

    target: Target
    representation: str
    project_in: Optional[Projector] = None
    project_out: Optional[Projector] = None
    project_flat: Optional[Projector] = None

    def flat_features(self, calls: Sequence[Call]) -> Tensor:
        """Tensor[n, D'] for FLAT and PROJECTED layers."""
        if self.project_in is not None:
            return sum(self._kronecker(call) for call in calls).flatten(1)
        flat = layer_flat(self.target, calls)
        return flat if self.project_flat is None else self.project_flat.project(flat)

    def _kronecker(self, call: Call) -> Tensor:
        """Tensor[n, groups, k_out, k_in] = sum_t (P_out^T g_t)(P_in^T a_t)^T."""
        a = projected_inputs(self.target, call, self.project_in)
        g = self.project_out.project(output_grads(self.target, call))
        return torch.einsum("ngto,ngti->ngoi", g, a)

    def feature_dim(self, shape: LayerShape) -> int:
        """Floats per example this plan keeps."""
        if self.representation == FACTORED:
            return shape.groups * shape.positions * (shape.d_in + shape.d_out)
        if self.project_in is not None:
            return shape.groups * self.project_in.out_dim * self.project_out.out_dim
        if self.project_flat is not None:
            return self.project_flat.out_dim
        return shape.flat_dim or shape.groups * shape.d_in * shape.d_out


def _layer_seed(seed: int, layer: int, side: int) -> int:
    return (seed * 1_000_003 + 3 * layer + side) % (2**63)


def _projected_plan(
    target: Target, shape: LayerShape, proj_dim: int, seed: int, layer: int, device, kind: str
) -> LayerPlan:
    if not shape.factorable:
        projector = make_projector(shape.flat_dim, proj_dim, _layer_seed(seed, layer, 0), device, kind=kind)
        return LayerPlan(target, PROJECTED, project_flat=projector)
    k_in, k_out = kronecker_dims(shape.d_in, shape.d_out, proj_dim)
    if (k_in, k_out) == (shape.d_in, shape.d_out):
        return LayerPlan(target, FLAT)
    project_in = make_projector(shape.d_in, k_in, _layer_seed(seed, layer, 1), device, kind=kind)
    project_out = make_projector(shape.d_out, k_out, _layer_seed(seed, layer, 2), device, kind=kind)
    return LayerPlan(target, PROJECTED, project_in=project_in, project_out=project_out)


def make_plans(
    targets: Sequence[Target],
    shapes: Sequence[LayerShape],
    n_rows: int,
    n_cols: int,
    *,
    proj_dim: Optional[int] = None,
    projector: str = "gaussian",
    seed: int = 0,
    representation: str = "auto",
    self_only: bool = False,
    device: torch.device | str = "cpu",
) -> list[LayerPlan]:
    """One plan per target: projected (by the `projector` kind) when proj_dim is given, else exact with
    the representation forced or chosen by the cost model."""
    plans = []
    for i, (target, shape) in enumerate(zip(targets, shapes)):
        if proj_dim is not None:
            plans.append(_projected_plan(target, shape, proj_dim, seed, i, device, projector))
        elif not shape.factorable or representation == FLAT:
            plans.append(LayerPlan(target, FLAT))
        elif representation == FACTORED:
            plans.append(LayerPlan(target, FACTORED))
        else:
            plans.append(LayerPlan(target, choose_representation(shape, n_rows, n_cols, self_only)))
    return plans


def compute_features(plans: Sequence[LayerPlan], calls: Sequence[Sequence[Call]]) -> Features:
    """Features of one batch from its recorded calls (one list per plan's target)."""
    flats, factored = [], []
    for plan, target_calls in zip(plans, calls):
        if plan.representation == FACTORED:
            factored.append(layer_factors(plan.target, target_calls))
        else:
            flats.append(plan.flat_features(target_calls))
    return Features(flats, factored)
