"""Seeded random projections behind a one-method interface.

A Gaussian matrix P [d, k] with entries N(0, 1/k) satisfies E[P P^T] = I, so projected inner products
are unbiased: E[<P^T u, P^T v>] = <u, v>. For a layer gradient dW = sum_t g_t a_t^T the projection is
Kronecker-structured, P_out^T dW P_in = sum_t (P_out^T g_t)(P_in^T a_t)^T, which never forms dW; with P_in
and P_out independent, E[<P_out^T dW P_in, P_out^T dW' P_in>] = <dW, dW'>.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor


class Projector(Protocol):
    """Maps Tensor[..., in_dim] to Tensor[..., out_dim]."""

    in_dim: int
    out_dim: int

    def project(self, x: Tensor) -> Tensor: ...


class IdentityProjector:
    """No projection: used where the exact vector is no larger than the requested dimension."""

    def __init__(self, dim: int):
        self.in_dim = self.out_dim = dim

    def project(self, x: Tensor) -> Tensor:
        return x


class GaussianProjector:
    """x @ P with P [in_dim, out_dim] ~ N(0, 1/out_dim), drawn on the CPU from `seed` so that the
    same seed gives the same matrix on every device."""

    def __init__(self, in_dim: int, out_dim: int, seed: int, device: torch.device | str, dtype: torch.dtype):
        generator = torch.Generator().manual_seed(seed)
        matrix = torch.randn(in_dim, out_dim, generator=generator, dtype=torch.float64) / math.sqrt(out_dim)
        self.matrix = matrix.to(device=device, dtype=dtype)
        self.in_dim, self.out_dim = in_dim, out_dim

    def project(self, x: Tensor) -> Tensor:
        return x @ self.matrix


def make_projector(in_dim: int, out_dim: int, seed: int, device, dtype=torch.float32) -> Projector:
    if out_dim >= in_dim:
        return IdentityProjector(in_dim)
    return GaussianProjector(in_dim, out_dim, seed, device, dtype)


def kronecker_dims(d_in: int, d_out: int, proj_dim: int) -> tuple[int, int]:
    """(k_in, k_out) with k_in * k_out <= max(proj_dim, 1), each side at most its own size; a side that
    fits entirely is left unprojected. Used for a layer whose gradient is d_out x d_in."""
    if d_in * d_out <= proj_dim:
        return d_in, d_out
    k_out = min(d_out, max(1, math.isqrt(proj_dim)))
    k_in = min(d_in, max(1, proj_dim // k_out))
    if k_in == d_in:
        k_out = min(d_out, max(1, proj_dim // d_in))
    return k_in, k_out
