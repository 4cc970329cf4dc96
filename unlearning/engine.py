"""The erasure loop, shared by every objective.

Each step draws noisy latents (from clean latents, from the data to forget, or from a partial
sampling trajectory of the frozen or the trained model), gets the frozen model's predictions the
objective asks for (batched over the coming steps: the frozen model never changes), and lets the
objective turn the trainable model's predictions into a loss; then one Adam step on the deltas,
the objective's own update (a dual variable, say), and a record. The objectives are in objectives.py;
the default, `anchor`, is Ablating Concepts' model-based loss generalised to f-divergences (f-DMU).
"""
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import torch

from ..divergences import REDUCTIONS, divergence_loss, get_divergence
from ..divergences.variational import PAIRS, PatchCritic, VariationalDivergence
from .deltas import WeightDeltas
from .objectives import get_objective
from .sampling import euler_sample
from .schedule import NoiseSchedule


VARIATIONAL_PREFIX = "variational_"
VARIATIONAL_DIVERGENCES = [VARIATIONAL_PREFIX + name for name in PAIRS]   # the min-max form of each f-GAN pair


class Denoiser(Protocol):
    """A diffusion model as the engine drives it."""

    schedule: NoiseSchedule
    device: torch.device

    def predict_x0(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """The denoised estimate of x_t at noise level sigma under conditioning cond, for any batch size
        (cond describes one prompt)."""


@dataclass
class Concept:
    """One concept to erase: its conditionings and the latents its objective trains on."""

    target: Any
    anchor: Any
    latents: Optional[torch.Tensor]          # clean latents to noise: anchor images (the retain data)
    target_text: str = ""
    anchor_text: str = ""
    empty: Any = None                        # the empty prompt's conditioning (ESD, CFG in trajectories)
    forget_latents: Optional[torch.Tensor] = None   # data to forget (constrained_forward_kl, vdu)
    shape: Optional[tuple] = None            # (C, H, W) of the latents, where no latents are given

    def latent_shape(self):
        return tuple(self.latents.shape[1:]) if self.latents is not None else tuple(self.shape)


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
    frozen_batch: int = 8         # latents per frozen pass; the steps they cover are drawn ahead
    preserve_weight: float = 1.0  # weight of the preservation term (when there are prompts to preserve)
    objective: str = "anchor"
    objective_params: dict = field(default_factory=dict)
    # For the variational_<name> divergences: the critic and its schedule (f-DMU: AdamW 1e-4, 30 warm-up steps).
    critic_learning_rate: float = 1e-4
    critic_warmup: int = 30
    critic_width: int = 64
    critic_noise_level: bool = True       # measured: see benchmarks/variational_critic.py

    @property
    def variational(self) -> Optional[str]:
        """The f-GAN pair of a variational_<name> divergence, else None."""
        return self.divergence[len(VARIATIONAL_PREFIX):] if self.divergence.startswith(VARIATIONAL_PREFIX) else None

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
        if self.variational is None:
            get_divergence(self.divergence)
        elif self.variational not in PAIRS:
            raise ValueError(f"divergence '{self.divergence}' is unknown; the variational ones are: "
                             f"{', '.join(VARIATIONAL_DIVERGENCES)}")
        if self.critic_warmup < 0 or not (math.isfinite(self.critic_learning_rate) and self.critic_learning_rate > 0):
            raise ValueError(f"critic_warmup must be >= 0 and critic_learning_rate positive, got "
                             f"{self.critic_warmup}, {self.critic_learning_rate}")
        get_objective(self.objective).check(self.objective_params)


@dataclass
class StepRecord:
    step: int
    loss: float
    m: float          # batch mean of the Mahalanobis term the divergence saw
    sigma: float      # batch mean noise level
    seconds: float
    terms: dict = field(default_factory=dict)   # the loss's parts and the objective's state, e.g. lambda


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Draw:
    """Noisy latents of one step: x_t at sigma, and the noise that made it (None on a trajectory)."""

    x_t: torch.Tensor
    sigma: torch.Tensor
    percent: torch.Tensor
    noise: Optional[torch.Tensor] = None


@dataclass
class Step:
    """What one step trains on; drawn ahead so that the frozen passes of several steps run as one."""

    concept: Concept
    draws: dict = field(default_factory=dict)     # draw name -> Draw
    preserve: Any = None                          # the conditioning of the prompt preserved this step
    frozen: dict = field(default_factory=dict)    # (draw name, conditioning role) -> the frozen epsilon


def _autocast(device, dtype):
    return torch.autocast(torch.device(device).type, dtype, enabled=dtype is not None)


def conditioning(step, role):
    """A step's conditioning by role: "target", "anchor", "empty" or "preserve"."""
    return step.preserve if role == "preserve" else getattr(step.concept, role)


class Trainer:
    """The state of one run: the denoiser, its deltas, the data and the sampling random stream."""

    def __init__(self, denoiser, deltas, concepts, config, preserve):
        self.denoiser, self.deltas, self.concepts, self.config = denoiser, deltas, concepts, config
        self.preserve = list(preserve)
        self.schedule = denoiser.schedule
        self.generator = torch.Generator().manual_seed(config.seed)
        self.objective = get_objective(config.objective)(config, self)
        self.critic = None            # the VariationalDivergence of a variational_<name> divergence
        self.critic_bound = None      # its last estimate of the divergence, for the record

    def epsilon(self, draw, cond, frozen=False):
        """The model's epsilon at a draw: trainable (with gradients) or frozen (deltas off, no gradients)."""
        with _autocast(self.denoiser.device, self.config.autocast_dtype):
            if frozen:
                with torch.no_grad(), self.deltas.disabled():
                    x0 = self.denoiser.predict_x0(draw.x_t, draw.sigma, cond)
            else:
                x0 = self.denoiser.predict_x0(draw.x_t, draw.sigma, cond)
        return self.schedule.eps_from_x0(draw.x_t, x0, draw.sigma)

    def divergence(self, pred, target, percent):
        """The configured divergence between the trained prediction `pred` and its target: (loss, per-sample m).

        A variational divergence first takes one critic step on (target, pred), then returns the
        model's side of the min-max; m is the closed-form Mahalanobis term either way, for the record.
        """
        config = self.config
        if config.variational is None:
            return self.closed_form(pred, target, percent, config.divergence, config.divergence_params)
        if self.critic is None:
            with torch.random.fork_rng(devices=[]):    # the critic's initial weights follow the seed, not the global RNG
                torch.manual_seed(config.seed)
                critic = PatchCritic(pred.shape[1], config.critic_width, config.critic_noise_level, min(pred.shape[-2:]))
            self.critic = VariationalDivergence(config.variational, critic.to(pred.device), config.critic_learning_rate)
        percent = percent.to(pred.device, torch.float32)
        self.critic_bound = self.critic.critic_step(target, pred, percent)
        return self.critic.generator_loss(pred, percent), self.measure(pred.detach(), target, percent)[1]

    def measure(self, pred, target, percent):
        """KL (the MSE) between two predictions, with the configured reduction and temperature: what the
        constraints are stated in, whichever divergence trains."""
        return self.closed_form(pred, target, percent, "kl", {})

    def closed_form(self, pred, target, percent, name, params):
        """(loss, per-sample m) of a closed-form divergence with the configured reduction and temperature."""
        config = self.config
        step_weight = self.schedule.step_weight(percent).to(pred.device) if config.reduction == "step" else None
        return divergence_loss(pred, target, name, temperature=config.temperature, reduction=config.reduction,
                               step_weight=step_weight, **params)

    def draw_from_latents(self, latents):
        batch, device = self.config.batch_size, self.denoiser.device
        pick = torch.randint(len(latents), (batch,), generator=self.generator)
        x0 = latents[pick].to(device, torch.float32)
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        percent = self.schedule.sample_percent(batch, self.generator)
        sigma = self.schedule.sigma_at(percent).to(device, torch.float32)
        return Draw(self.schedule.add_noise(x0, noise, sigma), sigma, percent, noise)

    def plan(self, first_step, count):
        """The Steps of first_step .. first_step + count - 1: concepts and preserved prompts in turn."""
        steps = []
        for index in range(first_step, first_step + count):
            concept = self.concepts[index % len(self.concepts)]
            kept = self.preserve[index % len(self.preserve)] if self.preserve else None
            step = Step(concept, preserve=kept)
            for name, source in self.objective.draws.items():
                if source in ("latents", "forget_latents"):
                    step.draws[name] = self.draw_from_latents(getattr(concept, source))
            steps.append(step)
        for name, source in self.objective.draws.items():
            if source in ("frozen_trajectory", "model_trajectory"):
                self.draw_from_trajectories(steps, name, frozen=source == "frozen_trajectory")
        self.fill_frozen(steps)
        return steps

    def draw_from_trajectories(self, steps, name, frozen):
        """x_t from partial sampling: Euler from pure noise with CFG (the step's target prompt against the
        empty one), each sample stopped at a random grid step; all samples of a concept run batched."""
        params = self.objective.params
        count, cfg, batch = int(params["trajectory_steps"]), params["trajectory_cfg"], self.config.batch_size
        device = self.denoiser.device
        grid = torch.linspace(0, 1, count + 1, dtype=torch.float64)[:-1].clamp_min(self.schedule.percent_per_step)
        sigmas = self.schedule.sigma_at(grid).to(device, torch.float32)
        for concept in {id(s.concept): s.concept for s in steps}.values():
            own = [s for s in steps if s.concept is concept]
            noise = torch.randn((len(own) * batch, *concept.latent_shape()), generator=self.generator).to(device)
            stops = torch.randint(count, (len(own) * batch,), generator=self.generator).to(device)
            with (self.deltas.disabled() if frozen else contextlib.nullcontext()), \
                    _autocast(device, self.config.autocast_dtype):
                states = euler_sample(self.denoiser, concept.target, noise, sigmas, cfg, concept.empty, stops)
            for i, step in enumerate(own):
                rows = slice(i * batch, (i + 1) * batch)
                step.draws[name] = Draw(states[rows], sigmas[stops[rows]], grid[stops[rows].cpu()])

    def fill_frozen(self, steps):
        """Every frozen epsilon the objective asks for, one batched pass per (draw name, conditioning)."""
        requests = [(step, name, role) for step in steps for name, role in self.objective.frozen_roles]
        requests += [(step, self.objective.main_draw, "preserve") for step in steps if step.preserve is not None]
        groups = {}
        for step, name, role in requests:
            groups.setdefault((name, id(conditioning(step, role))), []).append((step, name, role))
        chunk = self.config.frozen_batch
        for members in groups.values():
            draws = [step.draws[name] for step, name, _ in members]
            joined = Draw(torch.cat([d.x_t for d in draws]), torch.cat([d.sigma for d in draws]), None)
            cond = conditioning(members[0][0], members[0][2])
            eps = torch.cat([self.epsilon(Draw(x, s, None), cond, frozen=True)
                             for x, s in zip(joined.x_t.split(chunk), joined.sigma.split(chunk))])
            for (step, name, role), part in zip(members, eps.split([len(d.x_t) for d in draws])):
                step.frozen[(name, role)] = part


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
    turn, at the step's noisy latents). `on_step` runs after every step and may raise to stop the run
    (interrupt). The objective may stop early (VDU). Same seed, same inputs, same device -> the same
    deltas.
    """
    config.validate()
    if not concepts:
        raise ValueError("no concepts to erase")
    trainer = Trainer(denoiser, deltas, concepts, config, preserve)
    objective = trainer.objective
    optimizer = torch.optim.Adam(deltas.parameters(), lr=config.learning_rate)
    scaler = torch.amp.GradScaler(torch.device(denoiser.device).type, enabled=config.loss_scaling)
    steps_ahead = max(1, config.frozen_batch // config.batch_size)
    warmup = config.critic_warmup if config.variational and objective.uses_divergence else 0
    records, upcoming = [], []
    for index in range(-warmup, config.steps):
        started = time.perf_counter()
        if not upcoming:
            upcoming = trainer.plan(index, min(steps_ahead, config.steps - index))
        step = upcoming.pop(0)
        if index < 0:       # a variational divergence's critic learns alone first (f-DMU: 30 steps)
            with torch.no_grad():
                objective.loss(step)
            continue

        loss, terms, m = objective.loss(step)
        if trainer.critic_bound is not None:
            terms["critic_bound"] = trainer.critic_bound
        if step.preserve is not None:
            main = objective.main_draw
            kept = trainer.epsilon(step.draws[main], step.preserve)
            preserve_loss, _ = divergence_loss(kept, step.frozen[(main, "preserve")], "kl")
            terms["preserve"] = preserve_loss.detach()
            loss = loss + config.preserve_weight * preserve_loss

        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at step {index + 1}: lower learning_rate "
                f"(now {config.learning_rate:g}) or raise temperature (now {config.temperature:g})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(deltas.parameters(), config.max_grad_norm)
        scaler.step(optimizer)      # skipped, and the scale halved, if float16 gradients overflowed
        scaler.update()

        state = objective.update(terms)
        sigma = next(iter(step.draws.values())).sigma
        record = StepRecord(index + 1, loss.item(), m.mean().item(), sigma.mean().item(),
                            time.perf_counter() - started, {**{k: float(v) for k, v in terms.items()}, **state})
        records.append(record)
        if on_step is not None:
            on_step(record)
        if objective.finished():
            break
    return records
