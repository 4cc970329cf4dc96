"""The divergences the pack offers, by name: one registry for the closed forms and their variational
(critic-based) forms, each turned into a bound loss by `bind` once per erasure.

Adding a closed form is one function g(m) in closed_form.py plus one `Divergence` entry below;
adding a variational form is one f-GAN pair in variational.py. `register` adds one from outside.
The tests then ask, by name, for what they check it against: its integrand in tests/test_divergences.py
and its row in docs/divergences.md (tests/test_docs.py).
"""
import math
from dataclasses import dataclass, replace
from typing import Callable, Optional, Union

import torch

from . import closed_form
from .discrepancy import ClosedFormLoss
from .variational import PAIRS, CriticSettings, FGanPair, VariationalLoss


@dataclass(frozen=True)
class Parameter:
    name: str
    default: float
    minimum: float
    maximum: float
    description: str
    # (value, why it is refused and what to use instead): points inside the bounds that the owner cannot take.
    excluded: tuple[tuple[float, str], ...] = ()

    def check(self, value: float, owner: str) -> None:
        """Raises ValueError naming this parameter, its owner (e.g. "renyi divergence"), the value and the fix."""
        if not (math.isfinite(value) and self.minimum <= value <= self.maximum):
            raise ValueError(f"{self.name} must be between {self.minimum} and {self.maximum} for the {owner}, got "
                             f"{value}; {self.description}")
        for point, reason in self.excluded:
            if value == point:
                raise ValueError(f"{self.name} = {value} cannot be used with the {owner}: {reason}")


@dataclass(frozen=True)
class Divergence:
    name: str
    description: str                        # one line; the node's tooltip
    formula: str                            # g(m), as docs/divergences.md's table shows it (tests/test_docs.py)
    value: Callable[..., torch.Tensor]      # exact g(m)
    slope_at_zero: Optional[Callable[..., float]]  # g'(0); None where it is infinite
    parameters: tuple[Parameter, ...] = ()
    # Alpha-family members (g = (1 - exp(-kappa m)) / (2 kappa)) get a log-space loss for kappa < 0.
    kappa: Optional[Callable[..., float]] = None
    # The f-DMU code's own loss value for m (flosses.py), where it has one.
    reference: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    variational = False

    def bind(self, temperature: float = 1.0, reduction: str = "mean", params: Optional[dict] = None,
             critic: Optional[CriticSettings] = None) -> ClosedFormLoss:
        """This divergence as a loss on two predictions, its settings checked once."""
        if critic is not None:
            raise ValueError(f"critic settings apply to the variational_* divergences only, and divergence is "
                             f"'{self.name}': choose a variational_<name> divergence or remove the critic options")
        return ClosedFormLoss(self, temperature, reduction, **(params or {}))

    def resolve(self, params: dict) -> dict:
        """This divergence's parameters from `params`, defaults filled in and checked (ValueError naming the
        parameter and the fix: outside its bounds, not finite, or a value this divergence cannot take);
        other names are ignored (the node passes alpha to every divergence)."""
        resolved = {p.name: params.get(p.name, p.default) for p in self.parameters}
        for p in self.parameters:
            p.check(resolved[p.name], f"{self.name} divergence")
        return resolved

    def batch_loss(self, m: torch.Tensor, params: dict) -> torch.Tensor:
        """Batch training loss for per-sample m and resolved parameters, scaled so that it equals mean(m) for
        small m.

        Its gradient gives sample i the weight g'(m_i) relative to MSE's; only that weighting (and
        not a constant factor, which Adam ignores) is what distinguishes the divergences.
        """
        if self.kappa is not None:
            return alpha_family_loss(m, self.kappa(**params))
        return (self.value(m, **params) * self._scale(params)).mean()

    def gradient_weight(self, m: torch.Tensor, **params: float) -> torch.Tensor:
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
# The Amari alpha-divergence is defined at alpha = 0 and 1 as its limit, KL (closed_form.alpha_divergence and
# alpha_family_loss take kappa = 0 there). Renyi's order 0 is not: D_0 = -log Q(p > 0) = 0 for any two Gaussians,
# so g(m) = alpha m / 2 is zero and g'(0) = 0: the loss's normalisation 1 / g'(0) divides by zero. (Its limit,
# mean(m), is kl's loss, but the divergence asked for is identically zero: refusing it names kl instead of
# silently training kl under another name.)
_RENYI_ALPHA = replace(_ALPHA, excluded=((0.0, "the Renyi divergence of order 0 is zero between any two Gaussians "
                                               "(alpha m / 2), so there is nothing to train on; use alpha != 0 "
                                               "(every nonzero order trains exactly like kl), or the kl divergence, "
                                               "which is the Renyi divergence's limit as alpha -> 1"),))

CLOSED_FORMS = [
    Divergence(
        "kl",
        "KL divergence = the MSE of Ablating Concepts / ESD: every sample pulls equally.",
        "m / 2", closed_form.kl, lambda: 0.5, kappa=lambda: 0.0,
        reference=lambda m: m),
    Divergence(
        "reverse_kl",
        "KL(model || anchor); with equal covariances it equals KL, so it trains exactly like kl.",
        "m / 2", closed_form.reverse_kl, lambda: 0.5),
    Divergence(
        "hellinger",
        "Bounded: samples already far from the anchor pull less (weight exp(-m/8)).",
        "2 (1 - exp(-m / 8))", closed_form.hellinger, lambda: 0.25, kappa=lambda: 1 / 8,
        reference=lambda m: -torch.exp(-m / 8)),
    Divergence(
        "alpha",
        "Amari alpha-divergence: 0<alpha<1 damps far samples (1/2 = Hellinger), alpha>1 or <0 amplifies them.",
        "(1 - exp(-alpha (1 - alpha) m / 2)) / (alpha (1 - alpha))", closed_form.alpha_divergence,
        lambda alpha: 0.5, parameters=(_ALPHA,), kappa=lambda alpha: alpha * (1 - alpha) / 2),
    Divergence(
        "renyi",
        "Renyi divergence of order alpha: alpha * m / 2, so it trains exactly like kl.",
        "alpha m / 2", closed_form.renyi, lambda alpha: alpha / 2, parameters=(_RENYI_ALPHA,)),
    Divergence(
        "bhattacharyya",
        "Bhattacharyya distance m / 8: trains exactly like kl.",
        "m / 8", closed_form.bhattacharyya, lambda: 1 / 8),
    Divergence(
        "pearson_chi2",
        "Exponential weight exp(m): samples still close to the concept dominate the batch.",
        "exp(m) - 1", closed_form.pearson_chi2, lambda: 1.0, kappa=lambda: -1.0,
        reference=lambda m: torch.exp(m.clamp_max(80.0))),
    Divergence(
        "total_variation",
        "Total variation: weight ~ 1/sqrt(m) near the anchor, vanishing far from it; loss is TV itself.",
        "erf(sqrt(m) / (2 sqrt 2))", closed_form.total_variation, None),
    Divergence(
        "jensen_shannon",
        "Jensen-Shannon (at most log 2): like Hellinger, far samples pull less, and a little less still.",
        "log 2 - E[softplus(U)], U ~ N(-m/2, m)", closed_form.jensen_shannon, lambda: 1 / 8),
]


@dataclass(frozen=True)
class VariationalForm:
    """The min-max (f-GAN) form of a divergence: a critic estimates it, the model minimises the estimate."""

    pair: FGanPair
    variational = True

    @property
    def name(self) -> str:
        return "variational_" + self.pair.name

    @property
    def description(self) -> str:
        return (f"{self.pair.name}, estimated by a critic trained alongside the model (its min-max f-GAN form): "
                f"compares distributions of predictions")

    def bind(self, temperature: float = 1.0, reduction: str = "mean", params: Optional[dict] = None,
             critic: Optional[CriticSettings] = None) -> VariationalLoss:
        """The model's side of the bound, with the critic's settings; m (for the record and the
        constraints) is the closed-form KL term under the same reduction and temperature."""
        if reduction == "element":
            raise ValueError(f"the element reduction applies to closed forms only; {self.name} learns a critic per "
                             f"sample: choose another reduction or a closed-form divergence")
        return VariationalLoss(self.pair, critic or CriticSettings(), DIVERGENCES["kl"].bind(temperature, reduction))


DivergenceEntry = Union[Divergence, VariationalForm]
DIVERGENCES: dict[str, DivergenceEntry] = {}


def register(divergence: DivergenceEntry) -> DivergenceEntry:
    """Add a Divergence or a VariationalForm; the node's combo and the engine pick it up by name."""
    DIVERGENCES[divergence.name] = divergence
    return divergence


for _divergence in CLOSED_FORMS + [VariationalForm(pair) for pair in PAIRS.values()]:
    register(_divergence)


def closed_forms() -> list[str]:
    """The names of the closed-form divergences."""
    return [name for name, d in DIVERGENCES.items() if not d.variational]


def get_divergence(name: str) -> DivergenceEntry:
    try:
        return DIVERGENCES[name]
    except KeyError:
        raise ValueError(f"divergence '{name}' is unknown; choose one of: {', '.join(DIVERGENCES)}") from None


def divergence_loss(pred: torch.Tensor, target: torch.Tensor, divergence: str = "kl", *, temperature: float = 1.0,
                    reduction: str = "mean", step_weight: Optional[torch.Tensor] = None,
                    **params: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-sample m) of a closed-form divergence by name: a one-off `bind` and call."""
    return get_divergence(divergence).bind(temperature, reduction, params)(pred, target, step_weight=step_weight)
