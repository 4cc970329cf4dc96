"""Noise schedules as the engine sees them: x_t = a(sigma) x_0 + b(sigma) noise.

Any model family fits this: epsilon- and v-prediction (a = 1, b = sigma in ComfyUI's k-diffusion
parameterisation) and rectified flow (a = 1 - sigma, b = sigma). The engine reads a and b off the
schedule's own `add_noise`, so one code path serves them all.
"""
import torch


class NoiseSchedule:
    """Subclasses give `sigma_at` (fraction of the way through denoising -> sigma) and `add_noise`."""

    num_steps = 1000  # timesteps t = 0 .. num_steps - 1; percent = 1 - t / (num_steps - 1), as in ComfyUI

    def sigma_at(self, percent: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample_percent(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Uniform noise levels, kept one timestep away from both ends (sigma = 0 and sigma = max)."""
        margin = self.percent_per_step
        return margin + (1 - 2 * margin) * torch.rand(batch, generator=generator, dtype=torch.float64)

    def stratified_percent(self, count: int, generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """`count` noise levels in [low, high] (kept one timestep away from both ends), one uniform in each of
        `count` equal slices, in the order of the slices: the fixed banks that statistics are read on."""
        low, high = max(low, self.percent_per_step), min(high, 1 - self.percent_per_step)
        slices = (torch.arange(count, dtype=torch.float64) + torch.rand(count, generator=generator, dtype=torch.float64)) / count
        return low + (high - low) * slices

    @property
    def percent_per_step(self) -> float:
        return 1.0 / (self.num_steps - 1)

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) of x_t = a x_0 + b noise, per sample."""
        ones, zeros = torch.ones_like(sigma), torch.zeros_like(sigma)
        return self.add_noise(ones, zeros, sigma), self.add_noise(zeros, ones, sigma)

    def eps_from_x0(self, x_t: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The noise a denoised estimate x0 implies at x_t: (x_t - a x0) / b."""
        a, b = (c.view(-1, *([1] * (x_t.ndim - 1))).to(x_t) for c in self.coefficients(sigma))
        return (x_t - a * x0) / b

    def snr(self, sigma: torch.Tensor) -> torch.Tensor:
        a, b = self.coefficients(sigma)
        return (a / b).square()

    def step_weight(self, percent: torch.Tensor) -> torch.Tensor:
        """SNR(t-1) / SNR(t) - 1: the factor c_t in m_t = c_t |eps - eps'|^2, the Mahalanobis term between
        two DDPM reverse-step Gaussians whose epsilon predictions differ by eps - eps' (checked against
        beta_t / ((1 - beta_t)(1 - alpha_bar_{t-1})) in tests/test_engine.py)."""
        sigma = self.sigma_at(percent)
        previous = self.sigma_at(percent + self.percent_per_step)
        return self.snr(previous) / self.snr(sigma) - 1


class DiscreteVPSchedule(NoiseSchedule):
    """The DDPM variance-preserving schedule (SD 1.x: scaled_linear, 0.00085 -> 0.012), epsilon-style.

    Uses sigma = sqrt((1 - alpha_bar) / alpha_bar) and x_t = x_0 + sigma noise, as ComfyUI does, so
    that plain torch models (tests, benchmarks) and ComfyUI models share the engine's conventions.
    """

    def __init__(self, num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_steps, dtype=torch.float64).square()
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.num_steps = num_steps
        self.log_sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().log()

    def sigma_at(self, percent):
        t = ((1 - torch.as_tensor(percent, dtype=torch.float64)) * (self.num_steps - 1)).clamp(0, self.num_steps - 1)
        low, high = t.floor().long(), t.ceil().long()
        frac = t - low
        return ((1 - frac) * self.log_sigmas[low] + frac * self.log_sigmas[high]).exp()

    def timestep(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Continuous DDPM timestep t of sigma (what a diffusers UNet takes)."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float64).log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        high = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, self.num_steps - 1)
        low = high - 1
        frac = (log_sigma - self.log_sigmas[low]) / (self.log_sigmas[high] - self.log_sigmas[low])
        return low + frac

    def add_noise(self, x0, noise, sigma):
        return x0 + noise * sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0)


class FlowSchedule(NoiseSchedule):
    """Rectified flow (Flux, SD3, Chroma, Qwen-Image, Wan): x_t = (1 - sigma) x_0 + sigma noise, sigma in [0, 1].

    ComfyUI's CONST prediction: the model predicts the velocity v = noise - x_0, and x_0 = x_t - sigma v.
    sigma = shift t / (1 + (shift - 1) t) at t = 1 - percent, ComfyUI's `time_snr_shift` (ModelSamplingDiscreteFlow's
    `shift`; ModelSamplingFlux's `shift` mu is log(shift) here); shift 1 gives sigma = 1 - percent. A flow model
    takes its timestep in sigma's own units: Flux's is sigma, SD3's sigma * 1000 (`timestep`'s multiplier).
    """

    def __init__(self, shift: float = 1.0, num_steps: int = 1000, multiplier: float = 1.0):
        self.shift, self.num_steps, self.multiplier = shift, num_steps, multiplier

    def sigma_at(self, percent: torch.Tensor) -> torch.Tensor:
        t = (1 - torch.as_tensor(percent, dtype=torch.float64)).clamp(0, 1)
        return self.shift * t / (1 + (self.shift - 1) * t)

    def timestep(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """The timestep the model takes at sigma (ModelSamplingFlux.timestep: sigma itself)."""
        return torch.as_tensor(sigma) * self.multiplier

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0)
        return (1 - sigma) * x0 + sigma * noise
