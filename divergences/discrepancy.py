"""From two denoiser outputs to the per-sample Mahalanobis term m, and from m to a loss."""
import math

import torch

from .registry import get_divergence

REDUCTIONS = {
    "mean": "per-element mean of the squared difference: independent of resolution and channel count",
    "channel_sum": "channel-summed, pixel-averaged (Ablating Concepts / f-DMU): C x mean",
    "sum": "per-sample sum: the exact Gaussian m for the chosen temperature; grows with resolution",
    "step": "per-sample sum times the per-step factor SNR(t-1)/SNR(t) - 1: the exact m of one DDPM step",
    "fdmu_reference": "f-DMU code exactly: channel_sum m and its loss values (-exp(-m/8), exp(m), m)",
}


def mahalanobis(pred, target, reduction="mean", temperature=1.0, step_weight=None):
    """m_i = reduce((pred_i - target_i)^2) / temperature, in float32 at least (float16 inputs too).

    temperature is the variance sigma^2 of the two Gaussians; step_weight (shape [batch]) is the
    per-step factor that the "step" reduction needs.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction '{reduction}' is unknown; choose one of: {', '.join(REDUCTIONS)}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    squared = (pred.to(dtype) - target.to(dtype)).square().flatten(1)
    if reduction == "mean":
        e = squared.mean(1)
    elif reduction in ("channel_sum", "fdmu_reference"):
        e = squared.mean(1) * pred.shape[1]
    elif reduction == "sum":
        e = squared.sum(1)
    else:
        if step_weight is None:
            raise ValueError("the 'step' reduction needs the per-sample step_weight of the noise schedule")
        e = squared.sum(1) * step_weight.to(dtype)
    return e / temperature


def divergence_loss(pred, target, divergence="kl", *, temperature=1.0, reduction="mean", step_weight=None, **params):
    """Loss pulling pred towards target (pass target detached), and the per-sample m.

    The loss is temperature x the divergence's normalised batch loss, so that with `kl` it is the
    plain MSE for every temperature; `fdmu_reference` returns the f-DMU code's own values instead.
    """
    div = get_divergence(divergence)
    m = mahalanobis(pred, target, reduction, temperature, step_weight)
    if reduction == "fdmu_reference" and div.reference is not None:
        return div.reference(m).mean(), m
    return temperature * div.loss(m, **params), m
