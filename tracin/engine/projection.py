"""Seeded random projections behind one interface, and the registry `tracin-score --projector` chooses from.

A random matrix P [d, k] with E[P P^T] = I makes projected inner products unbiased:
E[<P^T u, P^T v>] = <u, v>. For a layer gradient dW = sum_t g_t a_t^T the projection is
Kronecker-structured, P_out^T dW P_in = sum_t (P_out^T g_t)(P_in^T a_t)^T, which never forms dW; with P_in
and P_out independent, E[<P_out^T dW P_in, P_out^T dW' P_in>] = <dW, dW'>. Both the Kronecker sides and
the flat gradients of other layers go through `Projector.project`.

A new projection type is one class here: subclass Projector, decorate it with @register("name").
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, Optional

import torch
from torch import Tensor

from tracin.errors import TracinError


class Projector(ABC):
    """Maps Tensor[..., in_dim] to Tensor[..., out_dim], the same map on every device for one seed."""

    in_dim: int
    out_dim: int

    @abstractmethod
    def project(self, x: Tensor) -> Tensor: ...

    def dense(self) -> Optional[Tensor]:
        """Tensor[in_dim, out_dim] when the projection is a dense matrix product (a conv layer then
        projects its inputs as one convolution with the projected kernel), else None."""
        return None


PROJECTORS: dict[str, Callable[..., Projector]] = {}


def register(name: str):
    """Class decorator: make a Projector(in_dim, out_dim, seed, device, dtype) choosable by `name`."""

    def add(cls):
        PROJECTORS[name] = cls
        return cls

    return add


class IdentityProjector(Projector):
    """No projection: used where the exact vector is no larger than the requested dimension."""

    def __init__(self, dim: int):
        self.in_dim = self.out_dim = dim

    def project(self, x: Tensor) -> Tensor:
        return x


class _DenseProjector(Projector):
    """x @ P with P [in_dim, out_dim] drawn on the CPU in float64 from `seed` (same matrix on every device)."""

    def __init__(self, in_dim: int, out_dim: int, seed: int, device: torch.device | str, dtype: torch.dtype):
        generator = torch.Generator().manual_seed(seed)
        self.matrix = self.draw(in_dim, out_dim, generator).to(device=device, dtype=dtype)
        self.in_dim, self.out_dim = in_dim, out_dim

    @staticmethod
    @abstractmethod
    def draw(in_dim: int, out_dim: int, generator: torch.Generator) -> Tensor: ...

    def project(self, x: Tensor) -> Tensor:
        return x @ self.matrix

    def dense(self) -> Tensor:
        return self.matrix


@register("gaussian")
class GaussianProjector(_DenseProjector):
    """Entries N(0, 1/out_dim)."""

    @staticmethod
    def draw(in_dim: int, out_dim: int, generator: torch.Generator) -> Tensor:
        return torch.randn(in_dim, out_dim, generator=generator, dtype=torch.float64) / math.sqrt(out_dim)


@register("rademacher")
class RademacherProjector(_DenseProjector):
    """Entries +-1/sqrt(out_dim) with equal probability (Achlioptas 2003): the same unbiasedness, and a
    smaller variance of the estimated inner products than Gaussian entries."""

    @staticmethod
    def draw(in_dim: int, out_dim: int, generator: torch.Generator) -> Tensor:
        signs = torch.randint(0, 2, (in_dim, out_dim), generator=generator, dtype=torch.int64) * 2 - 1
        return signs.to(torch.float64) / math.sqrt(out_dim)


def check_projector(kind: str) -> None:
    """Refuse a projector name the registry does not hold."""
    if kind not in PROJECTORS:
        raise TracinError(f"projector must be one of {', '.join(sorted(PROJECTORS))}, got {kind!r}")


def make_projector(
    in_dim: int, out_dim: int, seed: int, device, dtype=torch.float32, kind: str = "gaussian"
) -> Projector:
    """A `kind` projector from in_dim to out_dim, or the identity when out_dim >= in_dim."""
    check_projector(kind)
    if out_dim >= in_dim:
        return IdentityProjector(in_dim)
    return PROJECTORS[kind](in_dim, out_dim, seed, device, dtype)


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
