"""Euler sampling (as ComfyUI's `euler` sampler) with classifier-free guidance, for any Denoiser.

x <- x + (sigma_next - sigma) (x - x0_hat) / sigma holds for epsilon-, v- and flow-prediction models
alike in ComfyUI's parameterisation, so one sampler serves the engine (partial trajectories) and
the benchmarks (whole samples).
"""
from typing import TYPE_CHECKING, Any, Optional

import torch

if TYPE_CHECKING:
    from .engine import Denoiser


def euler_sample(denoiser: "Denoiser", cond: Any, noise: torch.Tensor, sigmas: torch.Tensor, cfg: float = 1.0,
                 empty: Any = None, stops: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sample from `noise` (unit Gaussian) down the descending `sigmas` (a final 0 gives clean samples).

    cfg > 1 needs `empty`, the unconditional conditioning. With `stops` (a grid index per sample),
    each sample's state when it reaches its index is returned instead of the end (partial sampling).
    Runs under no_grad; the caller decides whether the model's deltas are on.
    """
    schedule = denoiser.schedule
    x = schedule.add_noise(torch.zeros_like(noise), noise, sigmas[:1].expand(len(noise)))
    stopped = x.clone() if stops is not None else None
    with torch.no_grad():
        for k in range(len(sigmas) - 1):
            if stops is not None:
                stopped[stops == k] = x[stops == k]
                if bool((stops <= k).all()):
                    return stopped
            sigma = sigmas[k].expand(len(x))
            denoised = denoiser.predict_x0(x, sigma, cond)
            if cfg != 1.0:
                unconditional = denoiser.predict_x0(x, sigma, empty)
                denoised = unconditional + cfg * (denoised - unconditional)
            x = x + (sigmas[k + 1] - sigmas[k]) * (x - denoised) / sigmas[k]
    if stops is not None:
        stopped[stops == len(sigmas) - 1] = x[stops == len(sigmas) - 1]
        return stopped
    return x
