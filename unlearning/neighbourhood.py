"""Training on the concept's neighbourhood in conditioning space, so that the erasure covers the
concept rather than one phrasing of it.

Each step the anchor objective erases the target at its text states c* and at a point c* + delta near
them: delta random inside a ball whose radius is `radius` times each token's own norm (RealEra, arXiv
2410.09140), or, with `adversarial_steps`, moved from a random start by that many steps of projected
gradient ascent on the objective's loss, towards where the erasure holds least (RACE, arXiv
2405.16341; AdvUnlearn, arXiv 2405.15234). The preserved prompts are held on random points of their
own balls. It acts on the conditioning's text tensor only (`Denoiser.text_states`), so it is the same
for every model family.
"""
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .toolbox import Toolbox


@dataclass(frozen=True)
class Neighbourhood:
    radius: float = 0.0             # relative to each token's norm; 0: train on the prompt itself
    adversarial_steps: int = 0      # ascent steps on delta per training step (each one forward and backward)

    @property
    def active(self) -> bool:
        return self.radius > 0


class NeighbourhoodSampler:
    """Points near a conditioning, drawn from the run's own random stream."""

    def __init__(self, settings: Neighbourhood, tools: Toolbox):
        self.settings, self.tools = settings, tools

    def ball(self, states: torch.Tensor) -> torch.Tensor:
        """Per-token scale of the ball around text states [.., tokens, width]."""
        return self.settings.radius * states.norm(dim=-1, keepdim=True)

    def random_point(self, cond: Any) -> Any:
        """cond with its text states moved to a uniformly random point of the ball."""
        states = self.tools.denoiser.text_states(cond)
        return self.tools.denoiser.with_text_states(cond, states + self._random_delta(states))

    def _random_delta(self, states):
        direction = torch.randn(states.shape, generator=self.tools.generator).to(states)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # uniform in the ball: radius scaled by u^(1/d)
        depth = torch.rand((*states.shape[:-1], 1), generator=self.tools.generator).to(states) ** (1 / states.shape[-1])
        return self.ball(states) * depth * direction

    def adversarial_point(self, cond: Any, loss_at: Callable[[Any], torch.Tensor]) -> Any:
        """A random point, then projected ascent steps on loss_at(cond') (the objective's loss there)."""
        states = self.tools.denoiser.text_states(cond).detach()
        ball = self.ball(states)
        delta = self._random_delta(states)
        for _ in range(self.settings.adversarial_steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                loss = loss_at(self.tools.denoiser.with_text_states(cond, states + delta))
                grad, = torch.autograd.grad(loss, delta)
            step = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            delta = delta.detach() + 0.5 * ball * step
            delta = delta * (ball / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp_max(1.0)
        return self.tools.denoiser.with_text_states(cond, states + delta.detach())
