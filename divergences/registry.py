"""The divergences the pack offers, by name.

Adding a divergence is one function g(m) in closed_form.py plus one `Divergence` entry below.
"""
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import closed_form


@dataclass(frozen=True)
class Parameter:
    name: str
    default: float
    minimum: float
    maximum: float
    description: str


@dataclass(frozen=True)
class Divergence:
    name: str
    display_name: str
    description: str                        # one line; the node's tooltip
    formula: str                            # g(m), for the README
    value: Callable[..., torch.Tensor]      # exact g(m)
    slope_at_zero: Optional[Callable[..., float]]  # g'(0); None where it is infinite
    parameters: tuple = ()
    # Alpha-family members (g = (1 - exp(-kappa m)) / (2 kappa)) get a log-space loss for kappa < 0.
    kappa: Optional[Callable[..., float]] = None
    # The f-DMU code's own loss value for m (flosses.py), where it has one.
    reference: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def resolve(self, params: dict) -> dict:
        """This divergence's parameters from `params`, defaults filled in; other names are ignored
        (the node passes alpha to every divergence)."""
        return {p.name: params.get(p.name, p.default) for p in self.parameters}

    def loss(self, m: torch.Tensor, **params) -> torch.Tensor:
        """Batch training loss for per-sample m, scaled so that it equals mean(m) for small m.

        Its gradient gives sample i the weight g'(m_i) relative to MSE's; only that weighting (and
        not a constant factor, which Adam ignores) is what distinguishes the divergences.
        """
        params = self.resolve(params)
        if self.kappa is not None:
            return alpha_family_loss(m, self.kappa(**params))
        return (self.value(m, **params) * self._scale(params)).mean()

    def gradient_weight(self, m: torch.Tensor, **params) -> torch.Tensor:
        """g'(m) / g'(0): how hard a sample with this m pulls, relative to MSE (for reports)."""
        params = self.resolve(params)
        m = m.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.value(m, **params).sum(), m)
        return grad * self._scale(params)

    def _scale(self, params: dict) -> float:
        # Total variation has g'(0) = infinity: its loss is TV itself.
        return 1.0 if self.slope_at_zero is None else 1.0 / self.slope_at_zero(**params)


def alpha_family_loss(m: torch.Tensor, kappa: float) -> torch.Tensor:
    """Normalised batch loss of g_kappa(m) = (1 - exp(-kappa m)) / (2 kappa).

    kappa >= 0 (KL, Hellinger): mean of g / g'(0), bounded by 1 / kappa. kappa < 0 (chi^2): exp
    overflows float32 at m = 88, so the loss is log(1 + |kappa| mean(g / g'(0))) / |kappa|, computed
    as a log-sum-exp: the same minimiser and per-sample weights exp(|kappa| m_i), finite for any m.
    """
    if kappa == 0:
        return m.mean()
    if kappa > 0:
        return (-torch.expm1(-kappa * m) / kappa).mean()
    growth = -kappa
    return (torch.logsumexp(growth * m, dim=0) - math.log(m.numel())) / growth


_ALPHA = Parameter("alpha", 0.5, -10.0, 10.0, "Order alpha of the alpha / Renyi divergence.")

DIVERGENCES = {
    d.name: d
    for d in [
        Divergence(
            "kl", "KL (MSE)",
            "KL divergence = the MSE of Ablating Concepts / ESD: every sample pulls equally.",
            "m / 2", closed_form.kl, lambda: 0.5, kappa=lambda: 0.0,
            reference=lambda m: m),
        Divergence(
            "reverse_kl", "Reverse KL",
            "KL(model || anchor); with equal covariances it equals KL, so it trains exactly like kl.",
            "m / 2", closed_form.reverse_kl, lambda: 0.5),
        Divergence(
            "hellinger", "Squared Hellinger",
            "Bounded: samples already far from the anchor pull less (weight exp(-m/8)); gentler on the rest.",
            "2 (1 - exp(-m / 8))", closed_form.hellinger, lambda: 0.25, kappa=lambda: 1 / 8,
            reference=lambda m: -torch.exp(-m / 8)),
        Divergence(
            "alpha", "Amari alpha",
            "Amari alpha-divergence: 0<alpha<1 damps far samples (1/2 = Hellinger), alpha>1 or <0 amplifies them.",
            "(1 - exp(-alpha (1 - alpha) m / 2)) / (alpha (1 - alpha))", closed_form.alpha_divergence,
            lambda alpha: 0.5, parameters=(_ALPHA,), kappa=lambda alpha: alpha * (1 - alpha) / 2),
        Divergence(
            "renyi", "Renyi",
            "Renyi divergence of order alpha: alpha * m / 2, so it trains exactly like kl.",
            "alpha m / 2", closed_form.renyi, lambda alpha: alpha / 2, parameters=(_ALPHA,)),
        Divergence(
            "bhattacharyya", "Bhattacharyya",
            "Bhattacharyya distance m / 8: trains exactly like kl.",
            "m / 8", closed_form.bhattacharyya, lambda: 1 / 8),
        Divergence(
            "pearson_chi2", "Pearson chi-squared",
            "Exponential weight exp(m): samples still close to the concept dominate; the most aggressive.",
            "exp(m) - 1", closed_form.pearson_chi2, lambda: 1.0, kappa=lambda: -1.0,
            reference=lambda m: torch.exp(m.clamp_max(80.0))),
        Divergence(
            "total_variation", "Total variation",
            "Total variation: weight ~ 1/sqrt(m) near the anchor, vanishing far from it; loss is TV itself.",
            "erf(sqrt(m) / (2 sqrt 2))", closed_form.total_variation, None),
        Divergence(
            "jensen_shannon", "Jensen-Shannon",
            "Jensen-Shannon (at most log 2): like Hellinger, far samples pull less, and a little less still.",
            "log 2 - E[softplus(U)], U ~ N(-m/2, m)", closed_form.jensen_shannon, lambda: 1 / 8),
    ]
}


def get_divergence(name: str) -> Divergence:
    try:
        return DIVERGENCES[name]
    except KeyError:
        raise ValueError(f"divergence '{name}' is unknown; choose one of: {', '.join(DIVERGENCES)}") from None
