"""Variational f-divergences: the f-GAN lower bound with a trained critic (f-DMU's min-max form).

D_f(P || Q) >= E_P[g(V(x))] - E_Q[f*(g(V(x)))] for any critic V, with equality at the optimal one;
g maps the critic's raw output into the conjugate's domain (Nowozin et al., arXiv 1606.00709). Here P
is the frozen model's prediction for the anchor and Q the trained model's for the concept: the
critic maximises the bound, the model minimises it.
"""
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from .discrepancy import ClosedFormLoss

LOGIT_CLAMP = 20.0   # exp(20) is the largest value the exponential conjugates can produce


@dataclass(frozen=True)
class FGanPair:
    name: str
    activation: Callable     # g: critic output v -> t in dom f*
    conjugate_of_activation: Callable   # f*(g(v)), written to stay finite
    estimates: str           # what the bound estimates, in terms of the closed forms


PAIRS = {p.name: p for p in [
    FGanPair("kl", lambda v: v, lambda v: torch.exp(v - 1), "kl"),
    FGanPair("reverse_kl", lambda v: -torch.exp(-v), lambda v: v - 1, "reverse_kl"),
    FGanPair("hellinger", lambda v: -torch.expm1(-v), torch.expm1, "hellinger"),
    FGanPair("jensen_shannon", lambda v: math.log(2) - F.softplus(-v), lambda v: F.softplus(v) - math.log(2),
             "2 x jensen_shannon"),
    FGanPair("pearson_chi2", lambda v: v, lambda v: v * v / 4 + v, "pearson_chi2"),
    FGanPair("total_variation", lambda v: torch.tanh(v) / 2, lambda v: torch.tanh(v) / 2, "total_variation"),
]}


def variational_bound(pair: FGanPair, critic_real: torch.Tensor, critic_fake: torch.Tensor) -> torch.Tensor:
    """E_P[g(V)] - E_Q[f*(g(V))] from the critic's outputs on samples of P (real) and Q (fake)."""
    real, fake = critic_real.clamp(-LOGIT_CLAMP, LOGIT_CLAMP), critic_fake.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
    return pair.activation(real).mean() - pair.conjugate_of_activation(fake).mean()


class PatchCritic(nn.Module):
    """f-DMU's critic: a spectral-norm PatchGAN on the denoiser's outputs (64 -> 128 -> 256 -> 512 -> 1
    channels at width 64), one logit per patch. Differences from the reference: as many stride-2
    convolutions as the latent allows (three from 32 x 32 up), the last two convolutions 3 x 3 (the
    reference's 4 x 4 ones would shrink small latents away), and no mask channel (the pack trains on
    whole latents). With noise_level, the step's noise level (fraction of the way through denoising) is
    one more input channel."""

    def __init__(self, channels: int, width: int = 64, noise_level: bool = False, spatial: int = 64) -> None:
        super().__init__()
        self.noise_level = noise_level
        downsamples = max(0, min(3, int(math.log2(max(spatial, 1))) - 2))   # keep >= 4 x 4 for the last two convs
        layers, in_ch = [], channels + (1 if noise_level else 0)
        for i in range(downsamples):
            out = width * 2 ** i
            layers += [nn.utils.spectral_norm(nn.Conv2d(in_ch, out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            in_ch = out
        out = width * 2 ** downsamples
        layers += [nn.utils.spectral_norm(nn.Conv2d(in_ch, out, 3, 1, 1)), nn.LeakyReLU(0.2),
                   nn.Conv2d(out, 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, percent: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x.flatten(1, -3)          # a video latent's frames become channels
        if self.noise_level:
            x = torch.cat([x, percent.view(-1, 1, 1, 1).to(x).expand(-1, 1, *x.shape[2:])], dim=1)
        return self.net(x)


class VariationalDivergence:
    """A critic, its optimiser and the f-GAN pair: the min-max form of one f-divergence.

    critic_step and generator_loss each touch only their own side: the critic sees detached
    predictions and zeroes its gradients before its backward, and its parameters are frozen while the
    generator's loss is formed, so no gradient crosses from one update to the other (the reference
    code leaked the generator's gradient into the critic's next step).
    """

    def __init__(self, name: str, critic: nn.Module, learning_rate: float = 1e-4) -> None:
        self.pair = PAIRS[name]
        self.critic = critic
        self.optimizer = torch.optim.AdamW(critic.parameters(), lr=learning_rate)

    def critic_step(self, real: torch.Tensor, fake: torch.Tensor,
                    percent: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One ascent step of the critic on the bound; returns the bound before the step."""
        self.critic.requires_grad_(True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():   # also during the warm-up, which runs the model under no_grad
            bound = variational_bound(self.pair, self.critic(real.detach().float(), percent),
                                      self.critic(fake.detach().float(), percent))
            (-bound).backward()
        self.optimizer.step()
        return bound.detach()

    def generator_loss(self, fake: torch.Tensor, percent: Optional[torch.Tensor] = None) -> torch.Tensor:
        """-E_Q[f*(g(V))]: minimising it lowers the bound (the P term does not depend on the model)."""
        self.critic.requires_grad_(False)
        logits = self.critic(fake.float(), percent).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        return -self.pair.conjugate_of_activation(logits).mean()


@dataclass(frozen=True)
class CriticSettings:
    """The critic of a variational divergence and its schedule (f-DMU: AdamW 1e-4, 30 warm-up steps)."""

    learning_rate: float = 1e-4
    warmup: int = 30             # critic-only steps before the model trains
    width: int = 64              # channels of the first convolution
    noise_level: bool = True     # the step's noise level as one more critic input (why: docs/divergences.md)

    def __post_init__(self) -> None:
        if self.warmup < 0 or not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"critic_warmup must be >= 0 and critic_learning_rate positive, got "
                             f"{self.warmup}, {self.learning_rate}")


class VariationalLoss:
    """The model's side of a variational divergence, bound to its critic's settings.

    The loop sets the critic up (`start`), lets it learn alone for `warmup` steps, and takes one
    `critic_step` per model step on the pair the model was just compared on; calling the loss never
    trains the critic. m is the closed-form KL term of `measure`, for the record.
    """

    trains_critic = True

    def __init__(self, pair: FGanPair, settings: CriticSettings, measure: ClosedFormLoss) -> None:
        self.pair, self.settings, self.measure = pair, settings, measure
        self.warmup = settings.warmup
        self.needs_step_weight = measure.needs_step_weight
        self.critic = None

    def start(self, latent_shape: tuple[int, ...], device: torch.device | str, seed: int) -> None:
        """A fresh critic for latents of latent_shape (C, H, W) or (C, T, H, W); its initial weights follow the
        seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            channels = math.prod(latent_shape[:-2])
            network = PatchCritic(channels, self.settings.width, self.settings.noise_level, min(latent_shape[-2:]))
        self.critic = VariationalDivergence(self.pair.name, network.to(device), self.settings.learning_rate)

    def critic_step(self, pred: torch.Tensor, target: torch.Tensor, percent: torch.Tensor) -> torch.Tensor:
        """One ascent step of the critic with `target` as P and `pred` as Q; returns its bound."""
        return self.critic.critic_step(target, pred, percent.to(pred.device, torch.float32))

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, percent: Optional[torch.Tensor] = None,
                 step_weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the model's loss against the critic, per-sample m of the closed-form KL term)."""
        loss = self.critic.generator_loss(pred, percent.to(pred.device, torch.float32))
        return loss, self.measure(pred.detach(), target, step_weight=step_weight)[1]

    def settings_record(self) -> dict:
        """What the erasure's metadata records of this divergence: the measure's settings and the critic's."""
        return {"temperature": self.measure.temperature, "reduction": self.measure.reduction,
                "divergence_params": {f"critic_{k}": v for k, v in vars(self.settings).items()}}
