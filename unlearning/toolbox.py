"""What an objective's loss may use (Toolbox): the trained and the frozen model's epsilon, noisy-latent draws
and fixed banks of them, the chosen divergence (`compare`), KL (`measure`, what constraints are stated in),
sampling, and the deltas."""
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ..divergences import get_divergence
from .draws import Bank, Draw, Role
from .sampling import euler_sample
from .sources import BANK_SIZE


@dataclass(frozen=True)
class Comparison:
    """The chosen divergence between the trained model's prediction and its target at a draw: the loss, the
    per-sample m it saw, and the pair itself (detached prediction), which is what a critic learns from."""

    loss: torch.Tensor
    m: torch.Tensor
    pred: torch.Tensor
    target: torch.Tensor
    percent: torch.Tensor


def autocast(device: torch.device | str, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """Mixed precision for the model passes where `dtype` is set."""
    return torch.autocast(torch.device(device).type, dtype, enabled=dtype is not None)


class Toolbox:
    """The models, draws and measures an objective works with (see the module's docstring)."""

    def __init__(self, denoiser: Any, deltas: Any, divergence: Any, config: Any, generator: torch.Generator,
                 concepts: list = ()):
        self.denoiser, self.deltas, self.divergence, self.concepts = denoiser, deltas, divergence, list(concepts)
        self.schedule = denoiser.schedule
        self.kl = get_divergence("kl").bind(config.temperature, config.reduction)
        self.mse = get_divergence("kl").bind()
        self.autocast_dtype, self.batch_size, self.generator = config.autocast_dtype, config.batch_size, generator
        self.frozen_batch = config.frozen_batch

    def denoised(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """The model's denoised estimate x0, in the configured precision."""
        with autocast(self.denoiser.device, self.autocast_dtype):
            return self.denoiser.predict_x0(x_t, sigma, cond)

    def predict(self, draw: Draw, cond: Any) -> torch.Tensor:
        """The trained model's epsilon at a draw (with gradients)."""
        return self.schedule.eps_from_x0(draw.x_t, self.denoised(draw.x_t, draw.sigma, cond), draw.sigma)

    def frozen(self, draw: Draw, cond: Any) -> torch.Tensor:
        """The frozen model's epsilon at a draw: the deltas switched off, no gradients."""
        with torch.no_grad(), self.deltas.disabled():
            return self.predict(draw, cond)

    def compare(self, pred: torch.Tensor, target: torch.Tensor, draw: Draw) -> Comparison:
        """The chosen divergence between the trained prediction and its target."""
        loss, m = self.divergence(pred, target, draw.percent, self._step_weight(self.divergence, draw, pred))
        return Comparison(loss, m, pred.detach(), target, draw.percent)

    def measure(self, pred: torch.Tensor, target: torch.Tensor, draw: Draw) -> tuple[torch.Tensor, torch.Tensor]:
        """(KL, per-sample m) under the same reduction and temperature, whichever divergence trains."""
        return self.kl(pred, target, draw.percent, self._step_weight(self.kl, draw, pred))

    def _step_weight(self, loss, draw, pred):
        return self.schedule.step_weight(draw.percent).to(pred.device) if loss.needs_step_weight else None

    def draw(self, latents: torch.Tensor) -> Draw:
        """batch_size of the latents, noised at uniform random noise levels."""
        batch, device = self.batch_size, self.denoiser.device
        pick = torch.randint(len(latents), (batch,), generator=self.generator)
        x0 = latents[pick].to(device, torch.float32)
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        percent = self.schedule.sample_percent(batch, self.generator)
        sigma = self.schedule.sigma_at(percent).to(device, torch.float32)
        return Draw(self.schedule.add_noise(x0, noise, sigma), sigma, percent, noise)

    def bank(self, images: Any, size: int = BANK_SIZE) -> Bank:
        """A Bank of `size` draws (at least one per concept) of `images` (a source, or a function of a concept
        giving clean latents), its noise levels stratified: one in each of `size` equal slices of the range."""
        concepts, device = self.concepts, self.denoiser.device
        size = max(size, len(concepts))
        turns = [torch.arange(k, size, len(concepts)) for k in range(len(concepts))]   # each concept's slices
        percent = self.schedule.stratified_percent(size, self.generator)[torch.cat(turns)]
        clean_of = images.of if hasattr(images, "of") else images
        sizes = [len(t) for t in turns]
        images_of = [clean_of(c) for c in concepts]
        x0 = torch.cat([latents[torch.arange(n) % len(latents)] for latents, n in zip(images_of, sizes)]).to(device, torch.float32)
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        sigma = self.schedule.sigma_at(percent).to(device, torch.float32)
        return Bank(Draw(self.schedule.add_noise(x0, noise, sigma), sigma, percent, noise), concepts, sizes)

    def renoised(self, bank: Bank, x0: torch.Tensor) -> Bank:
        """The bank's noise at its noise levels, added to other clean latents (one per row)."""
        draw = bank.draw
        return dataclasses.replace(bank, draw=dataclasses.replace(draw, x_t=self.schedule.add_noise(x0, draw.noise, draw.sigma)))

    def over_bank(self, bank: Bank, predict: Callable[[Draw, Any], torch.Tensor], role: Role = Role.TARGET) -> torch.Tensor:
        """predict(draw, conditioning) (self.predict or self.frozen) at every draw of the bank, each concept's under
        its `role` conditioning, frozen_batch rows at a time, without gradients: [rows, ...]."""
        with torch.no_grad():
            return torch.cat([predict(chunk, getattr(concept, role.value)) for concept, part in bank.parts()
                              for chunk in part.split(self.frozen_batch)])

    def sample(self, noise: torch.Tensor, cond: Any, steps: int, cfg: float, empty: Any) -> torch.Tensor:
        """The trained model's clean samples from `noise` (Euler, `steps` steps, CFG `cfg` against `empty`)."""
        schedule = self.schedule
        percent = torch.linspace(0, 1, steps, dtype=torch.float64).clamp(schedule.percent_per_step, 1 - schedule.percent_per_step)
        sigmas = torch.cat([schedule.sigma_at(percent), torch.zeros(1, dtype=torch.float64)]).to(noise.device, torch.float32)
        with autocast(self.denoiser.device, self.autocast_dtype):
            return torch.cat([euler_sample(self.denoiser, cond, chunk, sigmas, cfg, empty)
                              for chunk in noise.split(self.frozen_batch)]).float()
