"""Constrained unlearning (arXiv 2605.30825): stay near the original model for the concept, subject to a constraint
on how far it moves, with one Lagrange multiplier updated by projected dual ascent.

Each constraint's statistic is evaluated every EVALUATE_EVERY steps on a fixed bank of draws and stated relative
to the original model's value on the same bank. ETA_MAX caps the effective guidance lambda puts on the concept at
3: ESD erases with 1 to 2, and past 3 the concept's prediction leaves the range the model was trained on.
"""
import math

import torch

from ...divergences import Parameter
from ..draws import FrozenPass, Role, Step
from ..sources import FORGET_IMAGES, RETAIN_IMAGES
from ..toolbox import Toolbox
from .contract import Loss, Objective
from .statistics import EVALUATE_EVERY, FORGET_AT, ConceptEvidence, ForgetError
from .trajectories import TRAJECTORY_CFG, TRAJECTORY_STEPS, trajectory

CONCEPT, UNCONDITIONAL = FrozenPass("main", Role.TARGET), FrozenPass("main", Role.EMPTY)


def dual_ascent(lam: float, violation: float, step_size: float, lam_max: float) -> float:
    """Projected dual ascent: lambda grows while the constraint is violated (violation > 0), shrinks once
    it holds, and stays in [0, lam_max]."""
    return min(max(lam + step_size * violation, 0.0), lam_max)


def tilt(step: Step, eta: float) -> torch.Tensor:
    """The original model's prediction for the concept, tilted away from it along its own guidance direction:
    eps_0(c*) - eta (eps_0(c*) - eps_0(0)). eta = 1 is the empty prompt's prediction; ESD's target is this with the
    empty prompt's prediction as its base."""
    concept, unconditional = step.frozen[CONCEPT], step.frozen[UNCONDITIONAL]
    return concept - eta * (concept - unconditional)


def _dual_step(default: float) -> Parameter:
    return Parameter("dual_step", default, 0.0, 10.0, "Step size of the dual ascent on lambda, per evaluation of the "
                                                      "constraint on its fixed bank of draws.")


class Constrained(Objective):
    """A Lagrangian with one multiplier lambda (see the module's docstring); a subclass states its statistic, the
    violation of its bound, and its loss."""

    ETA_MAX = 3.0
    lambda_max = ETA_MAX
    evaluate_every = EVALUATE_EVERY

    def start(self, step, tools):
        self.lam, self.updates = self.initial_lambda(), 0
        with tools.deltas.disabled():       # the original model's value (a run may start from an earlier erasure)
            self.original = self.statistic(tools)
        starts_at_original = not any(d.any() for d in tools.deltas.parameters())
        self.estimate = self.original if starts_at_original else self.statistic(tools)
        self.dual_update()
        self.next_evaluation = self.interval()

    def initial_lambda(self) -> float:
        return 0.0

    def statistic(self, tools: Toolbox) -> float:
        """The constraint's statistic for the trained model, on the objective's bank."""
        raise NotImplementedError(f"the {self.name} objective does not define statistic(tools)")

    def violation(self, estimate: float) -> float:
        """How far `estimate` violates the bound (> 0: violated), relative to the bound's scale."""
        raise NotImplementedError(f"the {self.name} objective does not define violation(estimate)")

    def dual_update(self) -> None:
        self.lam = dual_ascent(self.lam, self.violation(self.estimate), self.params["dual_step"], self.lambda_max)

    def interval(self) -> int:
        """Steps from this evaluation of the statistic to the next."""
        return self.evaluate_every

    def update(self, tools):
        self.updates += 1
        if self.updates >= self.next_evaluation:
            self.estimate = self.statistic(tools)
            self.dual_update()
            self.next_evaluation = self.updates + self.interval()
        return {"lambda": self.lam, "constraint_estimate": self.estimate}


class ConstrainedReverseKL(Constrained):
    name, title = "constrained_reverse_kl", "Constrained Reverse KL"
    description = "Stay near the original model for the concept, but `budget` guidance steps away from it (no anchor)."
    formula = ("(1 - lam) D(eps_theta(c*), eps*), eps* = eps_0(c*) - eta (eps_0(c*) - eps_0(0)), eta = lam / (1 - lam), "
               "x_t on the trained model's trajectories; constraint KL(eps_theta(c*), eps_u) >= (1 + budget)^2 "
               "KL(eps_0(c*), eps_u), eps_u = eps_0(c*) + (eps_0(c*) - eps_0(0)), on a bank of the concept's images")
    parameters = (Parameter("budget", 1.0, 0.0, 2.5, "The separation to reach, in guidance steps: where the "
                                                     "constraint holds, eta = budget (1: the concept's prompt is "
                                                     "denoised as the empty prompt is; 0: no erasure)."),
                  _dual_step(0.1), TRAJECTORY_STEPS, TRAJECTORY_CFG)
    needs = (FORGET_IMAGES,)
    frozen = (CONCEPT, UNCONDITIONAL)
    lambda_max = Constrained.ETA_MAX / (1 + Constrained.ETA_MAX)    # eta = lambda / (1 - lambda) <= ETA_MAX

    def sources(self):
        return {"main": trajectory(self.params, trained=True)}

    def start(self, step, tools):
        self.bank = tools.bank(FORGET_IMAGES)
        concept, unconditional = tools.over_bank(self.bank, tools.frozen), tools.over_bank(self.bank, tools.frozen, Role.EMPTY)
        self.tilted_towards = 2 * concept - unconditional
        super().start(step, tools)

    def initial_lambda(self):
        """Where the constraint holds for a model that matches its target exactly (eta = budget): the dual ascent
        starts there and corrects for the model's fit, instead of winding up from 0 while the model lags behind
        (and overshooting, taking the erasure with it)."""
        return min(self.params["budget"] / (1 + self.params["budget"]), self.lambda_max)

    def statistic(self, tools):
        """KL from the trained model to the concept tilted towards itself, eps_u, on the bank."""
        return tools.measure(tools.over_bank(self.bank, tools.predict), self.tilted_towards, self.bank.draw)[1].mean().item()

    def loss(self, step, tools):
        eta = self.lam / (1 - self.lam)
        erase = tools.compare(tools.predict(step.draws["main"], step.concept.target), tilt(step, eta), step.draws["main"])
        return Loss((1 - self.lam) * erase.loss, {"erase": erase.loss.detach()}, erase.m, (erase,))

    def violation(self, estimate):
        bound = (1 + self.params["budget"]) ** 2 * self.original
        return (bound - estimate) / max(bound, 1e-12)


class ConstrainedLikelihood(Constrained):
    name, title = "constrained_likelihood", "Constrained Likelihood"
    description = "Stay near the original model for the concept, its samples holding `budget` less concept evidence."
    formula = ("D(eps_theta(c*), eps*), eps* = eps_0(c*) - lam (eps_0(c*) - eps_0(0)), x_t on the trained model's "
               "trajectories; constraint: E_{x ~ p_theta}[l(x)] <= (1 - budget) E_{x ~ p_0}[l(x)], l the original "
               "model's ELBO estimate of log p(x | c*) - log p(x), on a bank of samples from fixed noises")
    parameters = (Parameter("budget", 0.8, 0.0, 1.0, "The share of the concept evidence to remove from the model's "
                                                     "own samples (1: none left, as much as the average image "
                                                     "carries)."),
                  _dual_step(0.5), TRAJECTORY_STEPS, TRAJECTORY_CFG)
    needs = ()
    frozen = (CONCEPT, UNCONDITIONAL)
    evaluate_every = 2 * EVALUATE_EVERY     # each evaluation samples the whole bank

    def sources(self):
        return {"main": trajectory(self.params, trained=True)}

    def start(self, step, tools):
        self.evidence = ConceptEvidence(tools, int(self.params["trajectory_steps"]), self.params["trajectory_cfg"])
        super().start(step, tools)

    def statistic(self, tools):
        return self.evidence(tools)

    def loss(self, step, tools):
        draw = step.draws["main"]
        return Loss.of(tools.compare(tools.predict(draw, step.concept.target), tilt(step, self.lam), draw))

    def violation(self, estimate):
        scale = max(abs(self.original), 1e-12)
        return (estimate - (1 - self.params["budget"]) * self.original) / scale


class ConstrainedForwardKL(Constrained):
    name, title = "constrained_forward_kl", "Constrained Forward KL"
    description = "Data unlearning: the images to forget denoise worse under the concept; anchor and empty prompt stay."
    formula = ("sum_c D(eps_theta(x_r, c), eps_0(x_r, c)) / 2 over c in (c_a, 0) - lam min(e(x_f), 5), e the forget "
               "error under c* relative to the original model's at the same draw; constraint: e >= 1 + budget on a "
               "bank of the images to forget, where the run stops; x_r noised retain (anchor) images, x_f noised "
               "images to forget")
    parameters = (Parameter("budget", 1.0, 0.0, 4.0, "How much harder the images to forget must become to denoise: "
                                                     "their error (1 + budget) x the original model's, where the "
                                                     "run stops."),
                  _dual_step(0.1))
    needs = (RETAIN_IMAGES, FORGET_IMAGES)
    kept = (FrozenPass("retain", Role.ANCHOR), FrozenPass("retain", Role.EMPTY))   # held where the original has them
    frozen = (*kept, FORGET_AT)
    preserve_on = "retain"
    lambda_max = 0.9    # the forget term's weight against the retain term
    min_interval = 2    # evaluations of the bank at least this many steps apart (each costs a forward pass per draw)

    def sources(self):
        return {"retain": RETAIN_IMAGES, "forget": FORGET_IMAGES}

    def start(self, step, tools):
        self.forget_error = ForgetError(tools, relative=True)
        super().start(step, tools)

    def statistic(self, tools):
        return self.forget_error.measure(tools)

    def loss(self, step, tools):
        """Held: the original model's predictions for every prompt but the concept, on the retain images (holding the
        concept's own there, the reading for unconditional models, held the concept where its class is decided).
        Forgotten: the clipped forget error, ascended (SISS, NegGrad) until the bank meets the bound. Under Adam the
        ascent runs at the full learning rate whatever lambda weighs it, and it ran on far past the bound once
        lambda was 0, so the run stops there instead (as VDU's does). Tried and dropped: drawing each draw's error
        ratio to the bound as a setpoint, and a regression onto the forward-KL target at the draw,
        eps_0 + eta (eps_0 - eps) (it deepens the model's own errors on these images instead of moving off the
        class); docs/benchmark.md has the figures."""
        retain = step.draws["retain"]
        held = [tools.compare(tools.predict(retain, step.conditioning(p.role)), step.frozen[p], retain) for p in self.kept]
        held_loss = sum(c.loss for c in held) / len(held)
        forgotten, _ = self.forget_error(tools, step)
        return Loss(held_loss - self.lam * forgotten, {"retain": held_loss.detach(), "forget": forgotten.detach()},
                    held[0].m, tuple(held))

    @property
    def bound(self) -> float:
        return 1 + self.params["budget"]

    def violation(self, estimate):
        return (self.bound - estimate) / self.bound

    def interval(self):
        """Sooner as the error nears the bound, in proportion to what is left of the way: between two evaluations
        EVALUATE_EVERY steps apart the error overshot the bound."""
        left = (self.bound - self.estimate) / max(self.bound - 1, 1e-12)
        return max(self.min_interval, min(self.evaluate_every, math.ceil(self.evaluate_every * left)))

    def finished(self):
        return self.estimate >= self.bound
