"""Closed-form f-divergences between two Gaussians of equal covariance.

For P = N(mu_1, s^2 I) and Q = N(mu_2, s^2 I) every f-divergence is a function of the
Mahalanobis term m = |mu_1 - mu_2|^2 / s^2 alone (it depends on the likelihood ratio only, which is
a function of the projection on mu_1 - mu_2). Each function below maps a tensor of m >= 0 to that
divergence, g(m), exactly; tests/test_divergences.py checks the derivations against numerical
quadrature in one and two dimensions.
"""
import math

import torch

from .quadrature import gauss_hermite, gauss_legendre


def kl(m: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) = m / 2: the MSE objective of Ablating Concepts and ESD."""
    return m / 2


def reverse_kl(m: torch.Tensor) -> torch.Tensor:
    """KL(Q || P) = m / 2: equal to KL when the covariances are equal."""
    return m / 2


def renyi(m: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Renyi divergence of order alpha: alpha * m / 2."""
    return alpha * m / 2


def bhattacharyya(m: torch.Tensor) -> torch.Tensor:
    """Bhattacharyya distance -log integral sqrt(p q) = m / 8."""
    return m / 8


def hellinger(m: torch.Tensor) -> torch.Tensor:
    """Squared Hellinger distance integral (sqrt p - sqrt q)^2 = 2 (1 - exp(-m / 8))."""
    return -2 * torch.expm1(-m / 8)


def alpha_divergence(m: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Amari alpha-divergence (1 - integral p^a q^(1-a)) / (a (1 - a)) = (1 - exp(-k m)) / (2 k), k = a (1 - a) / 2.

    alpha = 1/2 is twice the squared Hellinger distance, alpha = 2 or -1 half the Pearson chi^2,
    and alpha -> 0 or 1 is KL.
    """
    kappa = alpha * (1 - alpha) / 2
    if kappa == 0:
        return m / 2
    return -torch.expm1(-kappa * m) / (2 * kappa)


def pearson_chi2(m: torch.Tensor) -> torch.Tensor:
    """Pearson chi^2 = integral (p - q)^2 / q = exp(m) - 1 (equal to Neyman chi^2 here)."""
    return torch.expm1(m)


def total_variation(m: torch.Tensor) -> torch.Tensor:
    """Total variation 1/2 integral |p - q| = erf(sqrt(m) / (2 sqrt 2))."""
    # The clamp keeps the derivative finite at m = 0, where the gradient of m itself is zero.
    return torch.erf(m.clamp_min(1e-12).sqrt() / (2 * math.sqrt(2)))


def jensen_shannon(m: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (KL(P || M) + KL(Q || M)) / 2, M = (P + Q) / 2; at most log 2.

    It has no elementary closed form: with U ~ N(-m/2, m) the log-likelihood ratio,
    JS(m) = log 2 - E[softplus(U)] and dJS/dm = E[sigmoid(U)^2] / 2, both evaluated by Gauss
    quadrature in float64 (see _js_value_and_slope).
    """
    return _JensenShannon.apply(m)


_JS_SMALL_M = 2.0     # below: Gauss-Hermite in z; above: Gauss-Legendre in u around the kink at 0
_JS_HERMITE_NODES = 80
_JS_LEGENDRE_NODES = 96
_JS_HALF_WIDTH = 40.0  # log1p(exp(-40)) and sigmoid(-40)^2 are below float64 resolution of the sums


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2))


def _js_value_and_slope(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """JS(m) and dJS/dm for a float64 CPU tensor m >= 0."""
    value, slope = torch.empty_like(m), torch.empty_like(m)
    small = m <= _JS_SMALL_M
    if small.any():
        z, w = gauss_hermite(_JS_HERMITE_NODES)
        ms = m[small, None]
        u = -ms / 2 + ms.sqrt() * z
        value[small] = math.log(2) - (torch.nn.functional.softplus(u) * w).sum(-1)
        slope[small] = (torch.sigmoid(u).square() * w).sum(-1) / 2
    large = ~small
    if large.any():
        # E[f(U)] = E[step(U)] + integral (f - step)(u) N(u) du: the step part in closed form, the
        # remainder decays like exp(-|u|) and is integrated on [-L, 0] and [0, L] separately.
        ml = m[large, None]
        mean, std = -ml / 2, ml.sqrt()
        x, w = gauss_legendre(_JS_LEGENDRE_NODES)
        u = torch.cat([(x - 1) * _JS_HALF_WIDTH / 2, (x + 1) * _JS_HALF_WIDTH / 2])
        w = torch.cat([w, w]) * _JS_HALF_WIDTH / 2
        density = torch.exp(-((u - mean) / std).square() / 2) / (std * math.sqrt(2 * math.pi))
        positive_mass = _normal_cdf(mean / std)                        # P(U > 0)
        relu_mean = mean * positive_mass + std * torch.exp(-(mean / std).square() / 2) / math.sqrt(2 * math.pi)
        softplus_rest = torch.log1p(torch.exp(-u.abs()))
        sigmoid_sq_rest = torch.sigmoid(u).square() - (u > 0).double()
        value[large] = math.log(2) - (relu_mean + (softplus_rest * density * w).sum(-1, keepdim=True)).squeeze(-1)
        slope[large] = (positive_mass + (sigmoid_sq_rest * density * w).sum(-1, keepdim=True)).squeeze(-1) / 2
    return value, slope


class _JensenShannon(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, m: torch.Tensor) -> torch.Tensor:
        # Per-sample scalars only: evaluating them in float64 on the CPU costs nothing and works on
        # every device (MPS has no float64).
        value, slope = _js_value_and_slope(m.detach().to("cpu", torch.float64).clamp_min(0))
        ctx.save_for_backward(slope.to(m.device, m.dtype))
        return value.to(m.device, m.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (slope,) = ctx.saved_tensors
        return grad * slope
