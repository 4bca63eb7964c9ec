"""Per-sample-gradient features and their inner products, as matrix products.

Each selected layer is represented, per example, in one of two exact forms or a projected one:

    flat       the materialised gradient, Tensor[n, D]; inner products are one matrix product
    factored   Factors(A, G) of a Linear/Conv2d layer; <dW_n, dW'_m> = sum_g sum_{t,s} (a_t.a'_s)(g_t.g'_s),
               cheaper than flat when positions^2 * (d_in + d_out) < d_in * d_out (late, small feature maps,
               and every Linear layer)
    projected  flat, after a seeded Kronecker projection of A and G (never forming dW) or a dense
               Gaussian projection of other layers' flat gradients

`choose_representation` is the per-layer cost model (FLOPs of features plus all pairwise products).
Scoring a block is one matrix product per layer, accumulated in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from tracin.engine.grads import FACTORABLE, Call, Factors, Target, layer_factors, layer_flat, output_grads, projected_inputs
from tracin.engine.projection import IdentityProjector, Projector, kronecker_dims, make_projector

FLAT, FACTORED, PROJECTED = "flat", "factored", "projected"
REPRESENTATIONS = ("auto", FLAT, FACTORED)


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
    if target.kind in FACTORABLE:
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


def _matrix(projector: Projector, device) -> Tensor:
    if isinstance(projector, IdentityProjector):
        return torch.eye(projector.in_dim, device=device)
    return projector.matrix


@dataclass
class LayerPlan:
    """How one target's per-sample gradients become features. A PROJECTED factorable layer keeps
    matrices in_matrix [d_in (+1 bias), k_in] and out_matrix [d_out, k_out]; other projected layers
    project_flat."""

    target: Target
    representation: str
    in_matrix: Optional[Tensor] = None
    out_matrix: Optional[Tensor] = None
    project_flat: Optional[Projector] = None

    def flat_features(self, calls: Sequence[Call]) -> Tensor:
        """Tensor[n, D'] for FLAT and PROJECTED layers."""
        if self.in_matrix is not None:
            return sum(self._kronecker(call) for call in calls).flatten(1)
        flat = layer_flat(self.target, calls)
        return flat if self.project_flat is None else self.project_flat.project(flat)

    def _kronecker(self, call: Call) -> Tensor:
        """Tensor[n, groups, k_out, k_in] = sum_t (out_matrix^T g_t)(in_matrix^T a_t)^T."""
        a = projected_inputs(self.target, call, self.in_matrix)
        g = output_grads(self.target, call) @ self.out_matrix
        return torch.einsum("ngto,ngti->ngoi", g, a)

    def feature_dim(self, shape: LayerShape) -> int:
        """Floats per example this plan keeps."""
        if self.representation == FACTORED:
            return shape.groups * shape.positions * (shape.d_in + shape.d_out)
        if self.in_matrix is not None:
            return shape.groups * self.in_matrix.shape[1] * self.out_matrix.shape[1]
        if self.project_flat is not None:
            return self.project_flat.out_dim
        return shape.flat_dim or shape.groups * shape.d_in * shape.d_out


def _layer_seed(seed: int, layer: int, side: int) -> int:
    return (seed * 1_000_003 + 3 * layer + side) % (2**63)


def _projected_plan(target: Target, shape: LayerShape, proj_dim: int, seed: int, layer: int, device) -> LayerPlan:
    if not shape.factorable:
        projector = make_projector(shape.flat_dim, proj_dim, _layer_seed(seed, layer, 0), device)
        return LayerPlan(target, PROJECTED, project_flat=projector)
    k_in, k_out = kronecker_dims(shape.d_in, shape.d_out, proj_dim)
    if (k_in, k_out) == (shape.d_in, shape.d_out):
        return LayerPlan(target, FLAT)
    in_matrix = _matrix(make_projector(shape.d_in, k_in, _layer_seed(seed, layer, 1), device), device)
    out_matrix = _matrix(make_projector(shape.d_out, k_out, _layer_seed(seed, layer, 2), device), device)
    return LayerPlan(target, PROJECTED, in_matrix=in_matrix, out_matrix=out_matrix)


def make_plans(
    targets: Sequence[Target],
    shapes: Sequence[LayerShape],
    n_rows: int,
    n_cols: int,
    *,
    proj_dim: Optional[int] = None,
    seed: int = 0,
    representation: str = "auto",
    self_only: bool = False,
    device: torch.device | str = "cpu",
) -> list[LayerPlan]:
    """One plan per target: projected when proj_dim is given, else exact with the representation
    forced or chosen by the cost model."""
    plans = []
    for i, (target, shape) in enumerate(zip(targets, shapes)):
        if proj_dim is not None:
            plans.append(_projected_plan(target, shape, proj_dim, seed, i, device))
        elif not shape.factorable or representation == FLAT:
            plans.append(LayerPlan(target, FLAT))
        elif representation == FACTORED:
            plans.append(LayerPlan(target, FACTORED))
        else:
            plans.append(LayerPlan(target, choose_representation(shape, n_rows, n_cols, self_only)))
    return plans


@dataclass
class Features:
    """The per-sample gradients of n examples at one checkpoint.

    flats: one Tensor[n, D_l] per flat or projected layer (kept apart: joining them would copy every
    gradient once more); factored: Factors per factored layer.
    """

    flats: list[Tensor]
    factored: list[Factors]

    def __len__(self) -> int:
        return (self.flats or [self.factored[0].G])[0].shape[0]

    def kept_as(self, dtype: torch.dtype) -> "Features":
        """These features with the flat ones in `dtype` (bfloat16 halves what a kept test block needs;
        factored layers stay float32: their pairwise Gram products would lose more)."""
        return Features([flat.to(dtype) for flat in self.flats], self.factored)

    def dot(self, other: "Features", max_elements: int = 2**26) -> Tensor:
        """Tensor[n, m] float32: inner products of every example here with every example of `other`,
        accumulated layer by layer (one matrix product each). Flat layers are multiplied in the dtype
        `other` keeps them in: a bfloat16 product accumulates in float32 inside the matrix product and
        is rounded once, before it joins the float32 sum over layers."""
        reference = (self.flats or [self.factored[0].G])[0]
        out = reference.new_zeros(len(self), len(other), dtype=torch.float32)
        for mine, theirs in zip(self.flats, other.flats):
            if theirs.dtype == torch.float32:
                out.addmm_(mine, theirs.T)
            else:
                out += mine.to(theirs.dtype) @ theirs.T
        for mine, theirs in zip(self.factored, other.factored):
            out += factored_dot(mine, theirs, max_elements)
        return out

    def self_dot(self) -> Tensor:
        """Tensor[n]: each example's squared gradient norm."""
        parts = [torch.linalg.vector_norm(flat, dim=1).square() for flat in self.flats]
        parts += [factored_self_dot(factors) for factors in self.factored]
        return torch.stack(parts).sum(0)

    @staticmethod
    def cat(parts: Sequence["Features"]) -> "Features":
        """Features of consecutive batches joined along examples."""
        if len(parts) == 1:
            return parts[0]
        flats = [torch.cat(layer) for layer in zip(*(p.flats for p in parts))]
        factored = [
            Factors(torch.cat([f.A for f in layer]), torch.cat([f.G for f in layer]), layer[0].bias)
            for layer in zip(*(p.factored for p in parts))
        ]
        return Features(flats, factored)


def compute_features(plans: Sequence[LayerPlan], calls: Sequence[Sequence[Call]]) -> Features:
    """Features of one batch from its recorded calls (one list per plan's target)."""
    flats, factored = [], []
    for plan, target_calls in zip(plans, calls):
        if plan.representation == FACTORED:
            factored.append(layer_factors(plan.target, target_calls))
        else:
            flats.append(plan.flat_features(target_calls))
    return Features(flats, factored)


def _gram(x: Tensor, y: Tensor) -> Tensor:
    return torch.bmm(x, y.transpose(1, 2))


def factored_dot(x: Factors, y: Factors, max_elements: int = 2**26) -> Tensor:
    """Tensor[n, m] = sum_g sum_{t,s} (A_x[n,g,t] . A_y[m,g,s] + bias) (G_x[n,g,t] . G_y[m,g,s]),
    computed as batched matrix products over column chunks of at most ~max_elements intermediates."""
    n, groups, t, _ = x.A.shape
    m, _, s, _ = y.A.shape
    if groups == 1 and t == 1 and s == 1:
        return (x.A[:, 0, 0] @ y.A[:, 0, 0].T + x.bias) * (x.G[:, 0, 0] @ y.G[:, 0, 0].T)
    xa = x.A.transpose(0, 1).reshape(groups, n * t, -1)
    xg = x.G.transpose(0, 1).reshape(groups, n * t, -1)
    step = max(1, max_elements // max(1, groups * n * t * s))
    columns = []
    for start in range(0, m, step):
        ya = y.A[start : start + step].transpose(0, 1).reshape(groups, -1, xa.shape[-1])
        yg = y.G[start : start + step].transpose(0, 1).reshape(groups, -1, xg.shape[-1])
        product = (_gram(xa, ya) + x.bias) * _gram(xg, yg)
        columns.append(product.view(groups, n, t, -1, s).sum(dim=(0, 2, 4)))
    return torch.cat(columns, dim=1)


def factored_self_dot(x: Factors) -> Tensor:
    """Tensor[n]: sum_g sum_{t,s} (a_t.a_s + bias)(g_t.g_s) for each example."""
    n, groups, t, d_in = x.A.shape
    a = x.A.reshape(n * groups, t, d_in)
    g = x.G.reshape(n * groups, t, -1)
    return ((_gram(a, a) + x.bias) * _gram(g, g)).view(n, -1).sum(1)
