"""Divergences between the trainable and the frozen denoiser's per-step Gaussians (pure torch)."""
from .discrepancy import REDUCTIONS, divergence_loss, mahalanobis
from .registry import DIVERGENCES, Divergence, Parameter, alpha_family_loss, get_divergence

__all__ = [
    "DIVERGENCES", "Divergence", "Parameter", "REDUCTIONS",
    "alpha_family_loss", "divergence_loss", "get_divergence", "mahalanobis",
]
