"""The erasure loop, shared by every objective.

Each step draws noisy latents (from a concept's images, or from partial sampling trajectories of the
frozen or the trained model), gets the frozen model's predictions the objective asks for (batched
over the coming steps: the frozen model never changes), and lets the objective turn the trainable
model's predictions into a loss; then one Adam step on the deltas, the critic's step where the
divergence has one, the objective's own update (a dual variable, say), and a record.
"""
import contextlib
import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import torch

from ..divergences import get_divergence
from .config import ErasurePlan
from .deltas import WeightDeltas
from .neighbourhood import NeighbourhoodSampler
from .sampling import euler_sample
from .schedule import NoiseSchedule
from .sources import BANK_SIZE, Trajectory


class Denoiser(Protocol):
    """A diffusion model as the engine drives it."""

    schedule: NoiseSchedule
    device: torch.device

    def predict_x0(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """The denoised estimate of x_t at noise level sigma under conditioning cond, for any batch size
        (cond describes one prompt)."""

    def text_states(self, cond: Any) -> torch.Tensor:
        """The text encoder's token states inside cond [1, tokens, width] (what the neighbourhood moves)."""

    def with_text_states(self, cond: Any, states: torch.Tensor) -> Any:
        """cond with its token states replaced."""

    def base_weight(self, key: str) -> torch.Tensor:
        """The model's weight under `key` as loaded, without the deltas (what a closed-form edit starts from)."""


@dataclass
class StepRecord:
    step: int
    loss: float
    m: float          # batch mean of the Mahalanobis term the divergence saw
    sigma: float      # batch mean noise level
    seconds: float
    terms: dict = field(default_factory=dict)   # the loss's parts and the objective's state, e.g. lambda
    preview: Optional[torch.Tensor] = None      # every preview_every steps: the trained model's x0 (see ErasureRun)


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Draw:
    """Noisy latents of one step: x_t at sigma, and the noise that made it (None on a trajectory)."""

    x_t: torch.Tensor
    sigma: torch.Tensor
    percent: torch.Tensor
    noise: Optional[torch.Tensor] = None

    def split(self, sizes):
        """Draws of `sizes` consecutive rows each (an int: chunks of that many)."""
        parts = [t.split(sizes) if t is not None else None for t in (self.x_t, self.sigma, self.percent, self.noise)]
        count = len(parts[0])
        return [Draw(*(p[i] if p is not None else None for p in parts)) for i in range(count)]


@dataclass
class Bank:
    """A fixed set of draws for the statistics that constraints and stopping rules read, re-evaluated on the same
    (image, noise, noise level) every time, so that a change in a statistic is the model's and not the draws'. (One
    draw's denoising error swings by an order of magnitude with its noise level, so a statistic of a few fresh
    draws moved more than the erasure did.) The concepts take the draws in turn; `draw` holds them all, concept
    by concept, `sizes` rows each."""

    draw: Draw
    concepts: list
    sizes: list

    def parts(self):
        return zip(self.concepts, self.draw.split(self.sizes))


@dataclass
class Step:
    """What one step trains on; drawn ahead so that the frozen passes of several steps run as one."""

    concept: Any
    target: Any = None                            # a point of the concept's neighbourhood, or the concept's own conditioning
    draws: dict = field(default_factory=dict)     # draw name -> Draw
    preserve: Any = None                          # the conditioning of the prompt preserved this step
    frozen: dict = field(default_factory=dict)    # (draw name, conditioning role) -> the frozen epsilon


def _autocast(device, dtype):
    return torch.autocast(torch.device(device).type, dtype, enabled=dtype is not None)


class Toolbox:
    """What an objective's loss may use: the trained and the frozen model's epsilon, noisy-latent draws,
    the chosen divergence (`compare`), KL (`measure`, what constraints are stated in) and the deltas;
    and, for closed forms, the model family and the whole erasure's concepts and preserved prompts."""

    def __init__(self, denoiser, deltas, divergence, config, generator, family=None, concepts=(), preserve=()):
        self.denoiser, self.deltas, self.divergence = denoiser, deltas, divergence
        self.family, self.concepts, self.preserve = family, list(concepts), list(preserve)
        self.schedule = denoiser.schedule
        self.kl = get_divergence("kl").bind(config.temperature, config.reduction)
        self.mse = get_divergence("kl").bind()
        self.autocast_dtype, self.batch_size, self.generator = config.autocast_dtype, config.batch_size, generator
        self.frozen_batch = config.frozen_batch
        self.compared = None     # (pred, target, percent) of the last `compare`: what a critic learns from

    def denoised(self, x_t, sigma, cond):
        """The model's denoised estimate x0, in the configured precision."""
        with _autocast(self.denoiser.device, self.autocast_dtype):
            return self.denoiser.predict_x0(x_t, sigma, cond)

    def predict(self, draw, cond):
        """The trained model's epsilon at a draw (with gradients)."""
        return self.schedule.eps_from_x0(draw.x_t, self.denoised(draw.x_t, draw.sigma, cond), draw.sigma)

    def frozen(self, draw, cond):
        """The frozen model's epsilon at a draw: the deltas switched off, no gradients."""
        with torch.no_grad(), self.deltas.disabled():
            return self.predict(draw, cond)

    def compare(self, pred, target, draw):
        """(loss, per-sample m) of the chosen divergence between the trained prediction and its target."""
        self.compared = (pred.detach(), target, draw.percent)
        return self.divergence(pred, target, draw.percent, self._step_weight(self.divergence, draw, pred))

    def measure(self, pred, target, draw):
        """(KL, per-sample m) under the same reduction and temperature, whichever divergence trains."""
        return self.kl(pred, target, draw.percent, self._step_weight(self.kl, draw, pred))

    def _step_weight(self, loss, draw, pred):
        return self.schedule.step_weight(draw.percent).to(pred.device) if loss.needs_step_weight else None

    def draw(self, latents):
        """batch_size of the latents, noised at uniform random noise levels."""
        batch, device = self.batch_size, self.denoiser.device
        pick = torch.randint(len(latents), (batch,), generator=self.generator)
        x0 = latents[pick].to(device, torch.float32)
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        percent = self.schedule.sample_percent(batch, self.generator)
        sigma = self.schedule.sigma_at(percent).to(device, torch.float32)
        return Draw(self.schedule.add_noise(x0, noise, sigma), sigma, percent, noise)

    def bank(self, images, size=BANK_SIZE):
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

    def renoised(self, bank, x0):
        """The bank's noise at its noise levels, added to other clean latents (one per row)."""
        draw = bank.draw
        return dataclasses.replace(bank, draw=dataclasses.replace(draw, x_t=self.schedule.add_noise(x0, draw.noise, draw.sigma)))

    def over_bank(self, bank, predict, role="target"):
        """predict(draw, conditioning) (self.predict or self.frozen) at every draw of the bank, each concept's under
        its `role` conditioning, frozen_batch rows at a time, without gradients: [rows, ...]."""
        with torch.no_grad():
            return torch.cat([predict(chunk, getattr(concept, role)) for concept, part in bank.parts()
                              for chunk in part.split(self.frozen_batch)])

    def sample(self, noise, cond, steps, cfg, empty):
        """The trained model's clean samples from `noise` (Euler, `steps` steps, CFG `cfg` against `empty`)."""
        schedule = self.schedule
        percent = torch.linspace(0, 1, steps, dtype=torch.float64).clamp(schedule.percent_per_step, 1 - schedule.percent_per_step)
        sigmas = torch.cat([schedule.sigma_at(percent), torch.zeros(1, dtype=torch.float64)]).to(noise.device, torch.float32)
        with _autocast(self.denoiser.device, self.autocast_dtype):
            return torch.cat([euler_sample(self.denoiser, cond, chunk, sigmas, cfg, empty)
                              for chunk in noise.split(self.frozen_batch)]).float()


def conditioning(step, role):
    """A step's conditioning by role: "target", "anchor", "empty" or "preserve"."""
    return step.preserve if role == "preserve" else getattr(step.concept, role)


class StepPlanner:
    """Draws the coming steps: concepts and preserved prompts in turn, each draw from its source, and
    every frozen prediction they need in batched passes."""

    def __init__(self, tools, concepts, preserve, objective, frozen_batch, near=None):
        self.tools, self.concepts, self.preserve, self.objective = tools, concepts, list(preserve), objective
        self.frozen_batch, self.near = frozen_batch, near

    def steps(self, first, end):
        """The Steps of first .. end - 1, planned frozen_batch latents ahead."""
        ahead = max(1, self.frozen_batch // self.tools.batch_size)
        for start in range(first, end, ahead):
            yield from self.plan(start, min(ahead, end - start))

    def plan(self, first, count):
        steps = []
        for index in range(first, first + count):
            kept = self.preserve[index % len(self.preserve)] if self.preserve else None
            concept = self.concepts[index % len(self.concepts)]
            step = Step(concept, target=concept.target, preserve=kept)
            if self.near is not None:
                step.target = self.near.random_point(concept.target)
                step.preserve = kept if kept is None else self.near.random_point(kept)
            for name, source in self.objective.draws.items():
                if not isinstance(source, Trajectory):
                    step.draws[name] = self.tools.draw(source.of(step.concept))
            steps.append(step)
        for name, source in self.objective.draws.items():
            if isinstance(source, Trajectory):
                self.draw_trajectories(steps, name, source)
        self.fill_frozen(steps)
        return steps

    def draw_trajectories(self, steps, name, trajectory):
        """x_t from partial sampling, each sample stopped at a random grid step; all samples of a concept
        run batched."""
        tools, batch = self.tools, self.tools.batch_size
        schedule, device = tools.schedule, tools.denoiser.device
        grid = torch.linspace(0, 1, trajectory.steps + 1, dtype=torch.float64)[:-1].clamp_min(schedule.percent_per_step)
        sigmas = schedule.sigma_at(grid).to(device, torch.float32)
        for concept in {id(s.concept): s.concept for s in steps}.values():
            own = [s for s in steps if s.concept is concept]
            noise = torch.randn((len(own) * batch, *concept.latent_shape()), generator=tools.generator).to(device)
            stops = torch.randint(trajectory.steps, (len(own) * batch,), generator=tools.generator).to(device)
            with (contextlib.nullcontext() if trajectory.trained else tools.deltas.disabled()), \
                    _autocast(device, tools.autocast_dtype):
                states = euler_sample(tools.denoiser, concept.target, noise, sigmas, trajectory.cfg, concept.empty, stops)
            for i, step in enumerate(own):
                rows = slice(i * batch, (i + 1) * batch)
                step.draws[name] = Draw(states[rows], sigmas[stops[rows]], grid[stops[rows].cpu()])

    def fill_frozen(self, steps):
        """Every frozen epsilon the objective asks for, one batched pass per (draw name, conditioning)."""
        main = next(iter(self.objective.draws), None)      # None: an objective that draws nothing (closed form)
        requests = [(step, name, role) for step in steps for name, role in self.objective.frozen]
        requests += [(step, main, "preserve") for step in steps if step.preserve is not None and main is not None]
        groups = {}
        for step, name, role in requests:
            groups.setdefault((name, id(conditioning(step, role))), []).append((step, name, role))
        for members in groups.values():
            draws = [step.draws[name] for step, name, _ in members]
            x_t, sigma = torch.cat([d.x_t for d in draws]), torch.cat([d.sigma for d in draws])
            cond = conditioning(members[0][0], members[0][2])
            eps = torch.cat([self.tools.frozen(Draw(x, s, None), cond)
                             for x, s in zip(x_t.split(self.frozen_batch), sigma.split(self.frozen_batch))])
            for (step, name, role), part in zip(members, eps.split([len(d.x_t) for d in draws])):
                step.frozen[(name, role)] = part


def preservation(step, tools):
    """MSE between the trained and the frozen model's epsilon for the step's preserved prompt, at the
    step's first draw: holds that prompt where the frozen model has it."""
    main = next(iter(step.draws))
    kept = tools.predict(step.draws[main], step.preserve)
    return tools.mse(kept, step.frozen[(main, "preserve")])[0]


def warm_up_critic(divergence, objective, tools, steps):
    """A variational divergence's critic learns alone first (f-DMU: 30 steps), on the pairs the
    objective would compare."""
    for step in steps:
        with torch.no_grad():
            objective.loss(step, tools)
        divergence.critic_step(*tools.compared)


class ErasureRun:
    """One erasure's state between steps: the deltas, the optimiser, the random stream and the steps
    drawn ahead, the objective's and the critic's state, the records so far. `train` runs the loop;
    interrupted (an exception from on_step, after a whole step), the run can `train` again later and
    continues exactly where it stopped, as if it had never been interrupted."""

    def __init__(self, denoiser, deltas, concepts, plan: ErasurePlan, preserve=()):
        if not concepts:
            raise ValueError("no concepts to erase")
        self.plan, self.deltas, self.concepts = plan, deltas, concepts
        config = plan.config
        self.tools = Toolbox(denoiser, deltas, plan.divergence, config, torch.Generator().manual_seed(config.seed),
                             plan.family, concepts, preserve)
        self.optimizer = torch.optim.Adam(deltas.parameters(), lr=config.learning_rate)
        self.scaler = torch.amp.GradScaler(torch.device(denoiser.device).type, enabled=config.loss_scaling)
        self.trains_critic = plan.divergence.trains_critic and plan.objective.uses_divergence
        self.warmup = plan.divergence.warmup if self.trains_critic else 0
        self.near = NeighbourhoodSampler(config.neighbourhood, self.tools) \
            if config.neighbourhood.active else None
        self.steps = StepPlanner(self.tools, concepts, preserve, plan.objective, config.frozen_batch, self.near).steps(
            -self.warmup, config.steps)
        self.records, self.started, self.finished = [], False, False
        self.preview_noise = None

    def use(self, denoiser):
        """Continue on another Denoiser of the same model (a fresh ComfyUI patcher after an interrupt)."""
        self.tools.denoiser = denoiser

    def start(self):
        config, objective, divergence = self.plan.config, self.plan.objective, self.plan.divergence
        first = next(self.steps)
        divergence.start(self.concepts[0].latent_shape(), self.tools.denoiser.device, config.seed)
        objective.start(first, self.tools)
        if config.preview_every:   # a noise of its own, so that previews leave the run's random stream alone
            generator = torch.Generator().manual_seed(config.seed)
            self.preview_noise = torch.randn((1, *self.concepts[0].latent_shape()), generator=generator)
        self.steps = itertools.chain([first], self.steps)
        warm_up_critic(divergence, objective, self.tools, itertools.islice(self.steps, self.warmup))
        self.started = True

    def preview(self):
        """The trained model's denoised estimate, for the first concept's target, of a fixed pure noise."""
        schedule, device = self.tools.schedule, self.tools.denoiser.device
        noise = self.preview_noise.to(device)
        sigma = schedule.sigma_at(torch.tensor([schedule.percent_per_step], dtype=torch.float64)).to(device, torch.float32)
        x_t = schedule.add_noise(torch.zeros_like(noise), noise, sigma)
        with torch.no_grad():
            return self.tools.denoised(x_t, sigma, self.concepts[0].target).float()

    def train(self, on_step: Optional[Callable[[StepRecord], None]] = None) -> list:
        """Train until the last step, or until the objective says it has finished; returns the records."""
        if not self.started:
            self.start()
        config, objective, divergence, tools = self.plan.config, self.plan.objective, self.plan.divergence, self.tools
        last = time.perf_counter()
        while not self.finished and (step := next(self.steps, None)) is not None:
            if self.near is not None and config.neighbourhood.adversarial_steps:
                step.target = self.near.adversarial_point(
                    step.concept.target, lambda near: objective.loss(dataclasses.replace(step, target=near), tools)[0])
            loss, terms, m = objective.loss(step, tools)
            if step.preserve is not None and step.draws:
                held = preservation(step, tools)
                terms["preserve"] = held.detach()
                loss = loss + config.preserve_weight * held

            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"the loss became {loss.item()} at step {len(self.records) + 1}: lower learning_rate "
                    f"(now {config.learning_rate:g}) or raise temperature (now {config.temperature:g})")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.deltas.parameters(), config.max_grad_norm)
            self.scaler.step(self.optimizer)   # skipped, and the scale halved, if float16 gradients overflowed
            self.scaler.update()
            if self.trains_critic:
                terms["critic_bound"] = divergence.critic_step(*tools.compared)

            state = objective.update(terms, tools)
            sigma = next(iter(step.draws.values())).sigma if step.draws else torch.full((1,), float("nan"))
            now = time.perf_counter()
            self.records.append(StepRecord(len(self.records) + 1, loss.item(), m.mean().item(), sigma.mean().item(),
                                           now - last, {**{k: float(v) for k, v in terms.items()}, **state}))
            last = now
            if config.preview_every and len(self.records) % config.preview_every == 0:
                self.records[-1].preview = self.preview()
            self.finished = objective.finished()
            if on_step is not None:
                on_step(self.records[-1])
        return self.records


def erase(
    denoiser: Denoiser,
    deltas: WeightDeltas,
    concepts: list,
    plan: ErasurePlan,
    on_step: Optional[Callable[[StepRecord], None]] = None,
    preserve: list = (),
) -> list:
    """Train `deltas` so the denoiser forgets each concept; returns one record per step.

    `plan` comes from config.resolve. `preserve` holds conditionings whose predictions must stay the
    frozen model's (one per step, in turn, at the step's noisy latents). `on_step` runs after every
    step and may raise to stop the run (interrupt). The objective may stop early (VDU). Same seed,
    same inputs, same device -> the same deltas.
    """
    return ErasureRun(denoiser, deltas, concepts, plan, preserve).train(on_step)
