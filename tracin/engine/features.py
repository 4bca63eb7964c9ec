"""Per-sample-gradient features of a batch and their inner products, as matrix products.

A batch's Features hold one Tensor[n, D_l] per flat or projected layer and one Factors(A, G) per
factored layer (see tracin.engine.plans). Scoring a block is one matrix product per layer, accumulated
in place; factored layers use <dW_n, dW'_m> = sum_g sum_{t,s} (a_t.a'_s)(g_t.g'_s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor

from tracin.engine.grads import Factors

MAX_INTERMEDIATE = 2**26  # values (256 MiB of float32) per intermediate of a factored product


@dataclass
class Features:
    """The per-sample gradients of n examples at one checkpoint.

    flats: one Tensor[n, D_l] per flat or projected layer (kept apart: joining them would copy every
    gradient once more); factored: Factors per factored layer.
    """

    flats: list[Tensor]
    factored: list[Factors]
    squared_parts: Optional[Tensor] = None  # Tensor[n_parts, n] float32, taken before a cast to a lower precision

    def __len__(self) -> int:
        return (self.flats or [self.factored[0].G])[0].shape[0]

    def kept_as(self, dtype: torch.dtype, norms: bool = False) -> "Features":
        """These features with the flat ones in `dtype` (bfloat16 halves what a kept test block needs;
        factored layers stay float32: their pairwise Gram products would lose more); with norms, each
        layer's part of their squared norms is taken first, in float32, for the normalised score variants."""
        parts = self.self_dot_parts().float() if norms else None
        return Features([flat.to(dtype) for flat in self.flats], self.factored, parts)

    def squared_parts_float32(self) -> Tensor:
        """Tensor[n_parts, n] float32: the squared norms' parts kept by kept_as, else computed now."""
        return self.squared_parts if self.squared_parts is not None else self.self_dot_parts().float()

    def dot(self, other: "Features", max_elements: int = MAX_INTERMEDIATE) -> Tensor:
        """Tensor[n, m] float32: inner products of every example here with every example of `other`,
        accumulated layer by layer (one matrix product each). Flat layers are multiplied in the dtype
        `other` keeps them in: a bfloat16 product accumulates in float32 inside the matrix product and
        is rounded once, before it joins the float32 sum over layers."""
        return self.dot_by_group(other, None, 1, max_elements)[0]

    def dot_by_group(
        self,
        other: "Features",
        part_group: Optional[Sequence[int]],
        n_groups: int,
        max_elements: int = MAX_INTERMEDIATE,
    ) -> Tensor:
        """Tensor[n_groups, n, m] float32: the inner products split by layer group, part p (self_dot_parts
        order) adding into group part_group[p] (None: every part into group 0). Summed over groups, dot."""
        reference = (self.flats or [self.factored[0].G])[0]
        out = reference.new_zeros(n_groups, len(self), len(other), dtype=torch.float32)
        groups = [0] * (len(self.flats) + len(self.factored)) if part_group is None else list(part_group)
        for group, mine, theirs in zip(groups, self.flats, other.flats):
            if theirs.dtype == torch.float32:
                out[group].addmm_(mine, theirs.T)
            else:
                out[group] += mine.to(theirs.dtype) @ theirs.T
        for group, mine, theirs in zip(groups[len(self.flats) :], self.factored, other.factored):
            out[group] += factored_dot(mine, theirs, max_elements)
        return out

    def self_dot(self) -> Tensor:
        """Tensor[n]: each example's squared gradient norm."""
        return self.self_dot_parts().sum(0)

    def self_dot_parts(self) -> Tensor:
        """Tensor[n_layers, n]: each layer's part of the squared gradient norms (flat and projected
        layers first, then factored ones)."""
        parts = [torch.linalg.vector_norm(flat, dim=1).square() for flat in self.flats]
        parts += [factored_self_dot(factors) for factors in self.factored]
        return torch.stack(parts)

    @staticmethod
    def gather(batches: Iterable[tuple[int, "Features"]], start: int, n: int) -> "Features":
        """Features of the n examples from `start`, from consecutive batches (first example, Features),
        each copied into tensors allocated once and then dropped: at most one batch is held beside the
        result (joining all batches at the end would hold the block twice)."""
        out = None
        for first, part in batches:
            if out is None:
                out = Features(
                    [flat.new_empty((n, *flat.shape[1:])) for flat in part.flats],
                    [
                        Factors(f.A.new_empty((n, *f.A.shape[1:])), f.G.new_empty((n, *f.G.shape[1:])), f.bias)
                        for f in part.factored
                    ],
                    None if part.squared_parts is None else part.squared_parts.new_empty((len(part.squared_parts), n)),
                )
            rows = slice(first - start, first - start + len(part))
            for mine, theirs in zip(out.flats, part.flats):
                mine[rows] = theirs
            for mine, theirs in zip(out.factored, part.factored):
                mine.A[rows], mine.G[rows] = theirs.A, theirs.G
            if out.squared_parts is not None:
                out.squared_parts[:, rows] = part.squared_parts
        if out is None:
            raise ValueError("no batches to gather")
        return out


def _gram(x: Tensor, y: Tensor) -> Tensor:
    return torch.bmm(x, y.transpose(1, 2))


def factored_dot(x: Factors, y: Factors, max_elements: int = MAX_INTERMEDIATE) -> Tensor:
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


def factored_self_dot(x: Factors, max_elements: int = MAX_INTERMEDIATE) -> Tensor:
    """Tensor[n]: sum_g sum_{t,s} (a_t.a_s + bias)(g_t.g_s) for each example, over chunks of examples
    whose [groups, t, t] Gram matrices hold at most ~max_elements values."""
    n, groups, t, d_in = x.A.shape
    if n == 0:
        return x.A.new_zeros(0)
    step = max(1, max_elements // max(1, groups * t * t))
    norms = []
    for start in range(0, n, step):
        a = x.A[start : start + step].reshape(-1, t, d_in)
        g = x.G[start : start + step].reshape(-1, t, x.G.shape[-1])
        norms.append(((_gram(a, a) + x.bias) * _gram(g, g)).view(a.shape[0] // groups, -1).sum(1))
    return torch.cat(norms)
