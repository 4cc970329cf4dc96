"""From two denoiser outputs to the per-sample Mahalanobis term m, and a closed-form divergence bound to
its settings as a loss on them."""
import math
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:   # registry.py imports this module
    from .registry import Divergence

REDUCTIONS = {
    "mean": "per-element mean of the squared difference: independent of resolution and channel count",
    "channel_sum": "channel-summed, pixel-averaged (Ablating Concepts / f-DMU): C x mean",
    "sum": "per-sample sum: the exact Gaussian m for the chosen temperature; grows with resolution",
    "step": "per-sample sum times the per-step factor SNR(t-1)/SNR(t) - 1: the exact m of one DDPM step",
    "fdmu_reference": "f-DMU code exactly: channel_sum m and its loss values (-exp(-m/8), exp(m), m)",
    "element": "no reduction: each latent element is its own m, so a divergence weighs the elements of one sample "
               "differently (closed forms only; the per-sample m recorded is their mean)",
}


def check_settings(reduction: str, temperature: float) -> None:
    """Raises ValueError naming the setting to fix."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction '{reduction}' is unknown; choose one of: {', '.join(REDUCTIONS)}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature}; try 1.0")


def _reduced(pred: torch.Tensor, target: torch.Tensor, reduction: str, temperature: float,
             step_weight: Optional[torch.Tensor]) -> torch.Tensor:
    dtype = torch.promote_types(pred.dtype, torch.float32)
    squared = (pred.to(dtype) - target.to(dtype)).square().flatten(1)
    if reduction == "mean":
        e = squared.mean(1)
    elif reduction in ("channel_sum", "fdmu_reference"):
        e = squared.mean(1) * pred.shape[1]
    elif reduction == "sum":
        e = squared.sum(1)
    elif reduction == "element":
        e = squared
    else:
        if step_weight is None:
            raise ValueError("the 'step' reduction needs the per-sample step_weight of the noise schedule")
        e = squared.sum(1) * step_weight.to(dtype)
    return e / temperature


def mahalanobis(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean", temperature: float = 1.0,
                step_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """m_i = reduce((pred_i - target_i)^2) / temperature, in float32 at least (float16 inputs too);
    [batch, elements] under the "element" reduction.

    temperature is the variance sigma^2 of the two Gaussians; step_weight (shape [batch]) is the
    per-step factor that the "step" reduction needs.
    """
    check_settings(reduction, temperature)
    return _reduced(pred, target, reduction, temperature, step_weight)


class ClosedFormLoss:
    """A closed-form divergence with its settings bound once: (pred, target) -> (batch loss, per-sample m).

    The loss is temperature x the divergence's normalised batch loss, so that with `kl` it is the
    plain MSE for every temperature; `fdmu_reference` returns the f-DMU code's own values instead.
    """

    trains_critic = False
    warmup = 0

    def __init__(self, divergence: "Divergence", temperature: float = 1.0, reduction: str = "mean",
                 **params: float) -> None:
        check_settings(reduction, temperature)
        self.divergence, self.temperature, self.reduction = divergence, temperature, reduction
        self.params = divergence.resolve(params)
        self.needs_step_weight = reduction == "step"
        self.reference = divergence.reference if reduction == "fdmu_reference" else None

    def start(self, latent_shape: tuple[int, ...], device: torch.device | str, seed: int) -> None:
        """Nothing to set up: a closed form has no state."""

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, percent: Optional[torch.Tensor] = None,
                 step_weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch loss, per-sample m); percent, the noise level, is for the variational forms' critic only."""
        m = _reduced(pred, target, self.reduction, self.temperature, step_weight)
        if self.reference is not None:
            return self.reference(m).mean(), m
        loss = self.temperature * self.divergence.batch_loss(m.flatten(), self.params)
        return loss, m.mean(1) if m.dim() > 1 else m

    def settings_record(self) -> dict:
        """What the erasure's metadata records of this divergence."""
        return {"temperature": self.temperature, "reduction": self.reduction, "divergence_params": self.params}
