"""The erasure loop: pull the model's prediction for a concept onto the frozen prediction for its anchor.

At the same noisy latent x_t and noise level, the trainable model conditioned on the target
concept is pulled toward the frozen model's prediction for the anchor (stop-gradient on the anchor
side), with a divergence applied to the discrepancy in epsilon space (Ablating Concepts' model-based
loss, generalised to f-divergences by f-DMU).
"""
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import torch

from ..divergences import REDUCTIONS, divergence_loss, get_divergence
from .deltas import WeightDeltas
from .schedule import NoiseSchedule


class Denoiser(Protocol):
    """A diffusion model as the engine drives it."""

    schedule: NoiseSchedule
    device: torch.device

    def predict_x0(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """The denoised estimate of x_t at noise level sigma under conditioning cond, for any batch size
        (cond describes one prompt)."""


@dataclass
class Concept:
    """One concept to erase: its conditioning, its anchor's, and clean latents to noise."""

    target: Any
    anchor: Any
    latents: torch.Tensor
    target_text: str = ""
    anchor_text: str = ""


@dataclass
class ErasureConfig:
    steps: int = 200
    learning_rate: float = 5e-5
    seed: int = 0
    divergence: str = "kl"
    divergence_params: dict = field(default_factory=dict)
    temperature: float = 1.0
    reduction: str = "mean"
    batch_size: int = 1
    max_grad_norm: float = 1.0
    autocast_dtype: Optional[torch.dtype] = None   # e.g. torch.bfloat16: mixed precision for the model passes
    loss_scaling: bool = False    # dynamic loss scaling, for models that compute in float16
    frozen_batch: int = 8         # latents per frozen (anchor) pass; the steps they cover are drawn ahead
    preserve_weight: float = 1.0  # weight of the preservation term (when there are prompts to preserve)

    def validate(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite positive number, got {self.learning_rate}; try 5e-5")
        if not (math.isfinite(self.preserve_weight) and self.preserve_weight >= 0):
            raise ValueError(f"preserve_weight must be a finite number >= 0, got {self.preserve_weight}; try 1.0")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite positive number, got {self.temperature}; try 1.0")
        if self.batch_size < 1 or self.frozen_batch < 1:
            raise ValueError(f"batch_size and frozen_batch must be at least 1, got {self.batch_size}, {self.frozen_batch}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction '{self.reduction}' is unknown; choose one of: {', '.join(REDUCTIONS)}")
        get_divergence(self.divergence)


@dataclass
class StepRecord:
    step: int
    loss: float
    m: float          # batch mean of the Mahalanobis term the divergence saw
    sigma: float      # batch mean noise level
    seconds: float
    terms: dict = field(default_factory=dict)   # the loss's parts, e.g. {"erase": ..., "preserve": ...}


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Sample:
    """One step's noisy latents; drawn ahead so that the frozen passes of several steps run as one."""

    concept: Concept
    x_t: torch.Tensor
    sigma: torch.Tensor
    percent: torch.Tensor
    preserve: Any = None                          # the conditioning of the prompt preserved this step
    frozen: dict = field(default_factory=dict)    # "anchor" / "preserve" -> the frozen model's epsilon


def draw_samples(concepts, preserve, first_step, count, denoiser, config, generator) -> list:
    """The samples of steps first_step .. first_step + count - 1 (concepts and preserved prompts in turn)."""
    schedule, samples = denoiser.schedule, []
    for step in range(first_step, first_step + count):
        concept = concepts[step % len(concepts)]
        pick = torch.randint(len(concept.latents), (config.batch_size,), generator=generator)
        x0 = concept.latents[pick].to(denoiser.device, torch.float32)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        percent = schedule.sample_percent(config.batch_size, generator)
        sigma = schedule.sigma_at(percent).to(denoiser.device, torch.float32)
        kept = preserve[step % len(preserve)] if preserve else None
        samples.append(Sample(concept, schedule.add_noise(x0, noise, sigma), sigma, percent, kept))
    return samples


def frozen_eps(denoiser, deltas, requests, config) -> list:
    """The frozen model's epsilon for each (x_t, sigma, cond) request, in batched passes per cond.

    The frozen model never changes, so its predictions for the coming steps can be computed
    together: one pass instead of one per step (measured: such passes are CPU-bound on a GPU).
    """
    schedule, results, by_cond = denoiser.schedule, [None] * len(requests), {}
    for index, (_, _, cond) in enumerate(requests):
        by_cond.setdefault(id(cond), []).append(index)
    with _autocast(denoiser.device, config.autocast_dtype), torch.no_grad(), deltas.disabled():
        for indices in by_cond.values():
            x_t = torch.cat([requests[i][0] for i in indices])
            sigma = torch.cat([requests[i][1] for i in indices])
            cond = requests[indices[0]][2]
            eps = torch.cat([schedule.eps_from_x0(x, denoiser.predict_x0(x, s, cond), s)
                             for x, s in zip(x_t.split(config.frozen_batch), sigma.split(config.frozen_batch))])
            for i, chunk in zip(indices, eps.split([len(requests[i][0]) for i in indices])):
                results[i] = chunk
    return results


def prepare_frozen(denoiser, deltas, samples, config):
    """Fill sample.frozen with the frozen model's epsilon for each sample's anchor and preserved prompt."""
    requests = [(s.x_t, s.sigma, s.concept.anchor, s, "anchor") for s in samples]
    requests += [(s.x_t, s.sigma, s.preserve, s, "preserve") for s in samples if s.preserve is not None]
    for (_, _, _, sample, role), eps in zip(requests, frozen_eps(denoiser, deltas, [r[:3] for r in requests], config)):
        sample.frozen[role] = eps


def _autocast(device, dtype):
    return torch.autocast(torch.device(device).type, dtype, enabled=dtype is not None)


def erase(
    denoiser: Denoiser,
    deltas: WeightDeltas,
    concepts: list,
    config: ErasureConfig,
    on_step: Optional[Callable[[StepRecord], None]] = None,
    preserve: list = (),
) -> list:
    """Train `deltas` so the denoiser forgets each concept; returns one record per step.

    `preserve` holds conditionings whose predictions must stay the frozen model's (one per step, in
    turn, at the same noisy latents). `on_step` runs after every step and may raise to stop the run
    (interrupt). Same seed, same inputs, same device -> the same deltas.
    """
    config.validate()
    if not concepts:
        raise ValueError("no concepts to erase")
    schedule = denoiser.schedule
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(deltas.parameters(), lr=config.learning_rate)
    scaler = torch.amp.GradScaler(torch.device(denoiser.device).type, enabled=config.loss_scaling)
    steps_ahead = max(1, config.frozen_batch // config.batch_size)
    records, upcoming = [], []
    for step in range(config.steps):
        started = time.perf_counter()
        if not upcoming:
            upcoming = draw_samples(concepts, preserve, step, min(steps_ahead, config.steps - step), denoiser, config, generator)
            prepare_frozen(denoiser, deltas, upcoming, config)
        sample = upcoming.pop(0)
        x_t, sigma = sample.x_t, sample.sigma

        with _autocast(x_t.device, config.autocast_dtype):
            target_eps = schedule.eps_from_x0(x_t, denoiser.predict_x0(x_t, sigma, sample.concept.target), sigma)
        step_weight = schedule.step_weight(sample.percent).to(x_t.device) if config.reduction == "step" else None
        loss, m = divergence_loss(
            target_eps, sample.frozen["anchor"], config.divergence, temperature=config.temperature,
            reduction=config.reduction, step_weight=step_weight, **config.divergence_params)
        terms = {"erase": loss.detach()}
        if sample.preserve is not None:
            with _autocast(x_t.device, config.autocast_dtype):
                kept_eps = schedule.eps_from_x0(x_t, denoiser.predict_x0(x_t, sigma, sample.preserve), sigma)
            terms["preserve"], _ = divergence_loss(kept_eps, sample.frozen["preserve"], "kl")
            loss = loss + config.preserve_weight * terms["preserve"]

        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at step {step + 1}: lower learning_rate "
                f"(now {config.learning_rate:g}) or raise temperature (now {config.temperature:g})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(deltas.parameters(), config.max_grad_norm)
        scaler.step(optimizer)      # skipped, and the scale halved, if float16 gradients overflowed
        scaler.update()

        record = StepRecord(step + 1, loss.item(), m.mean().item(), sigma.mean().item(), time.perf_counter() - started,
                            {name: value.item() for name, value in terms.items()})
        records.append(record)
        if on_step is not None:
            on_step(record)
    return records
