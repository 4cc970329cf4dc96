"""Gauss quadrature rules built with torch alone (Golub-Welsch), so no numpy or scipy is needed."""
import functools

import torch


def _golub_welsch(off_diagonal: torch.Tensor, total_mass: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of the Gauss rule whose Jacobi matrix has zero diagonal."""
    n = off_diagonal.numel() + 1
    jacobi = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n - 1)
    jacobi[idx, idx + 1] = off_diagonal
    jacobi[idx + 1, idx] = off_diagonal
    nodes, vectors = torch.linalg.eigh(jacobi)
    return nodes, total_mass * vectors[0].square()


@functools.lru_cache(maxsize=None)
def gauss_hermite(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rule for E[f(Z)], Z ~ N(0, 1): sum(weights * f(nodes)), float64 on CPU."""
    k = torch.arange(1, n, dtype=torch.float64)
    return _golub_welsch(k.sqrt(), 1.0)


@functools.lru_cache(maxsize=None)
def gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rule for the integral of f over [-1, 1], float64 on CPU."""
    k = torch.arange(1, n, dtype=torch.float64)
    return _golub_welsch(k / (4 * k * k - 1).sqrt(), 2.0)
