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
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

import torch

from .closed_form import ClosedFormEdit, EditInputs
from .config import ErasurePlan
from .deltas import WeightDeltas
from .draws import Draw, FrozenPass, Role, Step
from .neighbourhood import NeighbourhoodSampler
from .objectives import Loss, Objective
from .sampling import euler_sample
from .schedule import NoiseSchedule
from .sources import Trajectory
from .toolbox import Comparison, Toolbox, autocast


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

    def pooled_states(self, cond: Any) -> Optional[torch.Tensor]:
        """The pooled text vector in cond [1, width] (ComfyUI's y), or None where the family takes none."""

    def submodule(self, path: str) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        """The diffusion model's module at `path` (e.g. "txt_norm") as a function of a tensor, without the deltas;
        None where the model has none (what a closed-form edit runs the text states through first)."""


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


class StepPlanner:
    """Draws the coming steps: concepts and preserved prompts in turn, each draw from its source, and
    every frozen prediction they need in batched passes."""

    def __init__(self, tools: Toolbox, concepts: list, preserve: list, objective: Objective, frozen_batch: int,
                 near: Optional[NeighbourhoodSampler] = None):
        self.tools, self.concepts, self.preserve, self.objective = tools, concepts, list(preserve), objective
        self.frozen_batch, self.near = frozen_batch, near

    def steps(self, first: int, end: int) -> Iterator[Step]:
        """The Steps of first .. end - 1, planned frozen_batch latents ahead."""
        ahead = max(1, self.frozen_batch // self.tools.batch_size)
        for start in range(first, end, ahead):
            yield from self.plan(start, min(ahead, end - start))

    def plan(self, first: int, count: int) -> list[Step]:
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

    def draw_trajectories(self, steps: list[Step], name: str, trajectory: Trajectory) -> None:
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
                    autocast(device, tools.autocast_dtype):
                states = euler_sample(tools.denoiser, concept.target, noise, sigmas, trajectory.cfg, concept.empty, stops)
            for i, step in enumerate(own):
                rows = slice(i * batch, (i + 1) * batch)
                step.draws[name] = Draw(states[rows], sigmas[stops[rows]], grid[stops[rows].cpu()])

    def fill_frozen(self, steps: list[Step]) -> None:
        """Every frozen epsilon the objective declares, and the preserved prompt's on the preservation draw,
        one batched pass per (draw, conditioning)."""
        preserved = FrozenPass(self.objective.preserve_on, Role.PRESERVE)
        requests = [(step, wanted) for step in steps for wanted in self.objective.frozen]
        requests += [(step, preserved) for step in steps if step.preserve is not None]
        groups: dict[tuple, list[tuple[Step, FrozenPass]]] = {}
        for step, wanted in requests:
            groups.setdefault((wanted.draw, id(step.conditioning(wanted.role))), []).append((step, wanted))
        for members in groups.values():
            draws = [step.draws[wanted.draw] for step, wanted in members]
            x_t, sigma = torch.cat([d.x_t for d in draws]), torch.cat([d.sigma for d in draws])
            cond = members[0][0].conditioning(members[0][1].role)
            eps = torch.cat([self.tools.frozen(Draw(x, s, None), cond)
                             for x, s in zip(x_t.split(self.frozen_batch), sigma.split(self.frozen_batch))])
            for (step, wanted), part in zip(members, eps.split([len(d.x_t) for d in draws])):
                step.frozen[wanted] = part


def preservation(step: Step, tools: Toolbox, draw: str) -> torch.Tensor:
    """MSE between the trained and the frozen model's epsilon for the step's preserved prompt, at the
    step's draw `draw`: holds that prompt where the frozen model has it."""
    kept = tools.predict(step.draws[draw], step.preserve)
    return tools.mse(kept, step.frozen[FrozenPass(draw, Role.PRESERVE)])[0]


def critic_step(divergence: Any, compared: tuple[Comparison, ...]) -> float:
    """One critic step on every pair a loss compared (joined into one batch)."""
    join = lambda part: torch.cat([getattr(c, part) for c in compared])  # noqa: E731
    return divergence.critic_step(join("pred"), join("target"), join("percent"))


def warm_up_critic(divergence: Any, objective: Objective, tools: Toolbox, steps: Iterable[Step]) -> None:
    """A variational divergence's critic learns alone first (f-DMU: 30 steps), on the pairs the
    objective would compare."""
    for step in steps:
        with torch.no_grad():
            loss = objective.loss(step, tools)
        critic_step(divergence, loss.compared)


class ErasureRun:
    """One erasure's state between steps: the deltas, the optimiser, the random stream and the steps
    drawn ahead, the objective's and the critic's state, the records so far. `train` runs the loop;
    interrupted (an exception from on_step, after a whole step), the run can `train` again later and
    continues exactly where it stopped, as if it had never been interrupted."""

    def __init__(self, denoiser: Denoiser, deltas: WeightDeltas, concepts: list, plan: ErasurePlan,
                 preserve: list = ()):
        self.plan, self.deltas, self.concepts = plan, deltas, concepts
        config = plan.config
        self.tools = Toolbox(denoiser, deltas, plan.divergence, config, torch.Generator().manual_seed(config.seed),
                             concepts)
        self.optimizer = torch.optim.Adam(deltas.parameters(), lr=config.learning_rate)
        self.scaler = torch.amp.GradScaler(torch.device(denoiser.device).type, enabled=config.loss_scaling)
        self.trains_critic = plan.divergence.trains_critic and plan.objective.uses_divergence
        self.warmup = plan.divergence.warmup if self.trains_critic else 0
        self.near = NeighbourhoodSampler(config.neighbourhood, self.tools) \
            if config.neighbourhood.active else None
        self.steps = StepPlanner(self.tools, concepts, preserve, plan.objective, config.frozen_batch, self.near).steps(
            -self.warmup, config.steps)
        self.records: list[StepRecord] = []
        self.started = self.finished = False
        self.preview_noise = None

    def use(self, denoiser: Denoiser) -> None:
        """Continue on another Denoiser of the same model (a fresh ComfyUI patcher after an interrupt)."""
        self.tools.denoiser = denoiser

    def start(self) -> None:
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

    def preview(self) -> torch.Tensor:
        """The trained model's denoised estimate, for the first concept's target, of a fixed pure noise."""
        schedule, device = self.tools.schedule, self.tools.denoiser.device
        noise = self.preview_noise.to(device)
        sigma = schedule.sigma_at(torch.tensor([schedule.percent_per_step], dtype=torch.float64)).to(device, torch.float32)
        x_t = schedule.add_noise(torch.zeros_like(noise), noise, sigma)
        with torch.no_grad():
            return self.tools.denoised(x_t, sigma, self.concepts[0].target).float()

    def step_loss(self, step: Step) -> Loss:
        """The objective's loss at the step, plus the preservation term where the step preserves a prompt."""
        objective, tools, config = self.plan.objective, self.tools, self.plan.config
        if self.near is not None and config.neighbourhood.adversarial_steps:
            step.target = self.near.adversarial_point(
                step.concept.target, lambda near: objective.loss(dataclasses.replace(step, target=near), tools).value)
        loss = objective.loss(step, tools)
        if step.preserve is not None:
            held = preservation(step, tools, objective.preserve_on)
            loss.terms["preserve"] = held.detach()
            loss.value = loss.value + config.preserve_weight * held
        if not torch.isfinite(loss.value):
            raise NonFiniteLossError(
                f"the loss became {loss.value.item()} at step {len(self.records) + 1}: lower learning_rate "
                f"(now {config.learning_rate:g}) or raise temperature (now {config.temperature:g})")
        return loss

    def optimise(self, loss: Loss) -> None:
        """One Adam step on the deltas (gradients clipped; with loss scaling where the model computes in float16)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.value).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.deltas.parameters(), self.plan.config.max_grad_norm)
        self.scaler.step(self.optimizer)   # skipped, and the scale halved, if float16 gradients overflowed
        self.scaler.update()

    def train(self, on_step: Optional[Callable[[StepRecord], None]] = None) -> list[StepRecord]:
        """Train until the last step, or until the objective says it has finished; returns the records."""
        if not self.started:
            self.start()
        config, objective = self.plan.config, self.plan.objective
        last = time.perf_counter()
        while not self.finished and (step := next(self.steps, None)) is not None:
            loss = self.step_loss(step)
            self.optimise(loss)
            if self.trains_critic:
                loss.terms["critic_bound"] = critic_step(self.plan.divergence, loss.compared)
            state = objective.update(self.tools)
            now = time.perf_counter()
            self.records.append(StepRecord(len(self.records) + 1, loss.value.item(), loss.m.mean().item(),
                                           step.draws[objective.preserve_on].sigma.mean().item(), now - last,
                                           {**{k: float(v) for k, v in loss.terms.items()}, **state}))
            last = now
            if config.preview_every and len(self.records) % config.preview_every == 0:
                self.records[-1].preview = self.preview()
            self.finished = objective.finished()
            if on_step is not None:
                on_step(self.records[-1])
        return self.records


class EditRun:
    """A closed-form edit as a run: solved once on the first `train`, recorded as one step; the same interface
    as ErasureRun, so that the nodes run either alike."""

    def __init__(self, denoiser: Denoiser, deltas: WeightDeltas, concepts: list, plan: ErasurePlan,
                 preserve: list = ()):
        self.denoiser, self.deltas, self.concepts, self.plan, self.preserve = denoiser, deltas, concepts, plan, preserve
        self.records: list[StepRecord] = []

    def use(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser

    def train(self, on_step: Optional[Callable[[StepRecord], None]] = None) -> list[StepRecord]:
        if self.records:
            return self.records
        method: ClosedFormEdit = self.plan.objective
        method.check_deltas(self.deltas.is_lora)
        started = time.perf_counter()
        edit = method.edit(EditInputs(self.denoiser, self.deltas.weight_keys(), self.plan.family, self.concepts,
                                      list(self.preserve)))
        with torch.no_grad():
            for key, delta in edit.deltas.items():
                self.deltas.tensors[key].copy_(delta)
        nan = float("nan")    # no divergence and no noise level: an edit draws nothing
        self.records.append(StepRecord(1, edit.loss, nan, nan, time.perf_counter() - started, dict(edit.terms)))
        if on_step is not None:
            on_step(self.records[-1])
        return self.records


def new_run(denoiser: Denoiser, deltas: WeightDeltas, concepts: list, plan: ErasurePlan,
            preserve: list = ()) -> ErasureRun | EditRun:
    """The run of the plan's objective: a training loop, or a closed-form edit."""
    if not concepts:
        raise ValueError("no concepts to erase")
    kind = EditRun if isinstance(plan.objective, ClosedFormEdit) else ErasureRun
    return kind(denoiser, deltas, concepts, plan, preserve)


def erase(
    denoiser: Denoiser,
    deltas: WeightDeltas,
    concepts: list,
    plan: ErasurePlan,
    on_step: Optional[Callable[[StepRecord], None]] = None,
    preserve: list = (),
) -> list[StepRecord]:
    """Train `deltas` so the denoiser forgets each concept; returns one record per step.

    `plan` comes from config.resolve. `preserve` holds conditionings whose predictions must stay the
    frozen model's (one per step, in turn, at the step's noisy latents). `on_step` runs after every
    step and may raise to stop the run (interrupt). The objective may stop early (VDU). Same seed,
    same inputs, same device -> the same deltas.
    """
    return new_run(denoiser, deltas, concepts, plan, preserve).train(on_step)
