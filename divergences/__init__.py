"""Divergences between the trainable and the frozen denoiser's per-step Gaussians (pure torch)."""
from .discrepancy import REDUCTIONS, ClosedFormLoss, mahalanobis
from .registry import (DIVERGENCES, Divergence, Parameter, VariationalForm, alpha_family_loss, closed_forms,
                       divergence_loss, get_divergence, register)
from .variational import CriticSettings, VariationalLoss

__all__ = [
    "DIVERGENCES", "ClosedFormLoss", "CriticSettings", "Divergence", "Parameter", "REDUCTIONS", "VariationalForm",
    "VariationalLoss", "alpha_family_loss", "closed_forms", "divergence_loss", "get_divergence", "mahalanobis",
    "register",
]
