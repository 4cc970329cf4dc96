"""Statistics that objectives measure on fixed banks of draws: the denoising error on the images to forget
(ForgetError) and the concept evidence in the trained model's own samples (ConceptEvidence)."""
from typing import Any, Callable

import torch

from ..draws import Bank, Draw, FrozenPass, Role, Step
from ..sources import FORGET_IMAGES
from ..toolbox import Toolbox

EVALUATE_EVERY = 10   # steps between re-evaluations of a bank statistic (a constraint's or a stopping rule's)
FORGET_CLIP = 5.0     # the most a draw's forget error may count for, relative to the original model's
FORGET_AT = FrozenPass("forget", Role.TARGET)     # the original model's prediction at the forget draw


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).square().flatten(1).mean(1)


class ForgetError:
    """The trained model's denoising error on the images to forget, each draw's relative to a reference: the original
    model's error at the same draw (`relative`), or its mean error (DDPM's L_simple). A draw counts for at most
    FORGET_CLIP x its reference: gradient ascent on an unbounded error runs away (SISS clips likewise), and clipping
    per draw leaves every noise level in play. `ratio`: the same measure, unclipped, on a fixed bank of draws of the
    images, where the original model scores 1. An objective using it declares FORGET_AT among its frozen passes."""

    def __init__(self, tools: Toolbox, relative: bool):
        self.relative, self.bank = relative, tools.bank(FORGET_IMAGES)
        self.original = self.errors(tools, tools.frozen)
        self.mean_original, self.ratio = self.original.mean(), 1.0

    def errors(self, tools: Toolbox, predict: Callable[[Draw, Any], torch.Tensor]) -> torch.Tensor:
        return per_sample_mse(tools.over_bank(self.bank, predict), self.bank.draw.noise)

    def reference(self, original: torch.Tensor) -> torch.Tensor:
        return original.clamp_min(1e-12) if self.relative else self.mean_original.expand_as(original)

    def __call__(self, tools: Toolbox, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """(clipped mean error to ascend, per-draw error) at the step's forget draw, relative to the reference."""
        forget = step.draws[FORGET_AT.draw]
        error = per_sample_mse(tools.predict(forget, step.concept.target), forget.noise)
        error = error / self.reference(per_sample_mse(step.frozen[FORGET_AT], forget.noise))
        return error.clamp_max(FORGET_CLIP).mean(), error

    def measure(self, tools: Toolbox) -> float:
        """Re-evaluate `ratio` on the bank."""
        self.ratio = (self.errors(tools, tools.predict) / self.reference(self.original)).mean().item()
        return self.ratio


class ConceptEvidence:
    """How much the trained model's own samples of the concept look like the concept to the original model, a
    diffusion classifier: the mean of |eps_0(x_t, 0) - eps|^2 - |eps_0(x_t, c*) - eps|^2 (the ELBO estimate of
    log p(x | c*) - log p(x), unweighted) over the samples, each noised `noisings` times. Fixed banks: the same
    starting noises, and the same noises and levels for each sample, at every evaluation."""

    noisings = 4      # noisings per sample: one left the estimate about as noisy as its value

    def __init__(self, tools: Toolbox, steps: int, cfg: float):
        self.steps, self.cfg = steps, cfg
        self.banks: list[Bank] = [tools.bank(lambda concept: torch.zeros((1, *concept.latent_shape())))
                                  for _ in range(self.noisings)]
        self.start_noise = torch.randn(self.banks[0].draw.x_t.shape, generator=tools.generator).to(self.banks[0].draw.x_t)

    def __call__(self, tools: Toolbox) -> float:
        noises = self.start_noise.split(self.banks[0].sizes)
        samples = torch.cat([tools.sample(noise, concept.target, self.steps, self.cfg, concept.empty)
                             for (concept, _), noise in zip(self.banks[0].parts(), noises)])
        evidence = []
        for bank in self.banks:
            noised = tools.renoised(bank, samples)
            noise = noised.draw.noise
            unconditional = per_sample_mse(tools.over_bank(noised, tools.frozen, Role.EMPTY), noise)
            evidence.append(unconditional - per_sample_mse(tools.over_bank(noised, tools.frozen), noise))
        return torch.cat(evidence).mean().item()
