"""Unlearning objectives: where a step's noisy latents come from, which frozen predictions it needs,
and its loss, read top to bottom. The loop that runs them all is engine.erase; adding one is one
class and one `register_objective` call.

Each loss gets a step (its draws and the frozen predictions it asked for) and a Toolbox (engine.py):
`predict` (the trained model's epsilon), `frozen` (the frozen model's), `compare` (the chosen
divergence), `measure` (KL, what constraints are stated in), `draw` (noisy latents from images) and
`deltas`. Notation: eps_theta is the trained model, eps_0 the frozen one (the same weights with the
deltas off), c* the concept's prompt, c_a its anchor's, 0 the empty prompt; D is the divergence.
"""
import math

import torch

from ..divergences import Parameter
from .closed_form_edit import uce_deltas
from .parameters import select_parameters
from .sources import FORGET_IMAGES, RETAIN_IMAGES, Trajectory

GUIDANCE = Parameter("guidance", 1.0, 0.0, 20.0, "ESD's eta: how far past the unconditional prediction the "
                                                  "concept is pushed (1: eps_0(0) - (eps_0(c*) - eps_0(0))).")
GAMMA = Parameter("gamma", 0.5, 0.0, 1.0, "VDU's balance: gamma x stability prior - (1 - gamma) x forget error.")
STOP_RATIO = Parameter("stop_ratio", 2.0, 1.0, 100.0, "VDU stops once the denoising error on the images to forget, "
                                                       "measured on a fixed bank of draws, reaches this multiple of "
                                                       "the original model's.")
RELATIVE_ERROR = Parameter("relative_error", 1, 0, 1, "1: each draw's forget error counts relative to the original "
                                                       "model's at the same draw, so that high noise levels, where the "
                                                       "class is decided, weigh as much as low ones; 0: the plain "
                                                       "epsilon error (DDPM's L_simple), most of which comes from low "
                                                       "noise levels.")
TRAJECTORY_STEPS = Parameter("trajectory_steps", 20, 2, 200, "Euler steps of the partial-sampling trajectories "
                                                              "that x_t is taken from.")
PRESERVE_SCALE = Parameter("preserve_scale", 30.0, 0.0, 1000.0, "UCE's weight of keeping the preserved prompts' "
                                                                 "keys and values where they are.")
REGULARISATION = Parameter("regularisation", 1.0, 1e-6, 100.0, "UCE's pull towards the original weights, relative "
                                                                "to the target prompts' own scale: higher edits less.")
UCE_GUIDANCE = Parameter("guidance", 0.25, 0.0, 5.0, "How far past the anchor the targets' keys and values move, "
                                                     "away from the concept's: 0 = onto the anchor's (UCE), 0.25 = a "
                                                     "quarter of the anchor-to-target gap beyond it.")
TRAJECTORY_CFG = Parameter("trajectory_cfg", 3.0, 0.0, 30.0, "CFG scale of those trajectories (ESD: 3).")


def dual_ascent(lam, violation, step_size, lam_max):
    """Projected dual ascent: lambda grows while the constraint is violated (violation > 0), shrinks once
    it holds, and stays in [0, lam_max]."""
    return min(max(lam + step_size * violation, 0.0), lam_max)


def per_sample_mse(pred, target):
    return (pred.float() - target.float()).square().flatten(1).mean(1)


EVALUATE_EVERY = 10   # steps between re-evaluations of a bank statistic (a constraint's or a stopping rule's)
FORGET_CLIP = 5.0     # the most a draw's forget error may count for, relative to the original model's


class ForgetError:
    """The trained model's denoising error on the images to forget, each draw's relative to a reference: the original
    model's error at the same draw (`relative`), or its mean error (DDPM's L_simple). A draw counts for at most
    FORGET_CLIP x its reference: gradient ascent on an unbounded error runs away (SISS clips likewise), and clipping
    per draw leaves every noise level in play (one clip at 5 x the mean error zeroed a quarter of the draws, the
    low-noise ones, whose error is largest). `ratio`: the same measure, unclipped, on a fixed bank of draws of the
    images, where the original model scores 1."""

    def __init__(self, tools, relative):
        self.relative, self.bank = relative, tools.bank(FORGET_IMAGES)
        self.original = self.errors(tools, tools.frozen)
        self.mean_original, self.ratio = self.original.mean(), 1.0

    def errors(self, tools, predict):
        return per_sample_mse(tools.over_bank(self.bank, predict), self.bank.draw.noise)

    def reference(self, original):
        return original.clamp_min(1e-12) if self.relative else self.mean_original.expand_as(original)

    def __call__(self, tools, step):
        """(clipped mean error to ascend, per-draw error) at the step's forget draw, relative to the reference."""
        forget = step.draws["forget"]
        error = per_sample_mse(tools.predict(forget, step.concept.target), forget.noise)
        error = error / self.reference(per_sample_mse(step.frozen[("forget", "target")], forget.noise))
        return error.clamp_max(FORGET_CLIP).mean(), error

    def measure(self, tools):
        """Re-evaluate `ratio` on the bank."""
        self.ratio = (self.errors(tools, tools.predict) / self.reference(self.original)).mean().item()
        return self.ratio


def concept_weighted_target(step, tools, draw, erased, anchor):
    """The training target at a point c' near the concept: `erased` (the concept's erased target) as far as
    the frozen model treats c' as the concept, its own frozen prediction as far as it does not:
    w = 1 - |eps_0(c') - eps_0(c*)|^2 / |eps_0(c_a) - eps_0(c*)|^2, clipped to [0, 1], per sample (`anchor`
    is eps_0(c_a)). So a neighbourhood that reaches other concepts erases only what behaves like c* and
    holds the rest."""
    near, concept = tools.frozen(draw, step.target), tools.frozen(draw, step.concept.target)
    weight = (1 - per_sample_mse(near, concept) / per_sample_mse(anchor, concept).clamp_min(1e-12)).clamp(0, 1)
    weight = weight.view(-1, *[1] * (near.dim() - 1)).to(near)
    return weight * erased + (1 - weight) * near


class Objective:
    name = ""
    title = ""                    # the option node's name: "Unlearn Objective: <title>"
    description = ""              # one line: the node's tooltip
    formula = ""                  # for the docs
    parameters = ()
    needs = (RETAIN_IMAGES,)      # the images a concept must carry
    frozen = ()                   # (draw name, conditioning role) the loss reads from the frozen model
    uses_divergence = True
    full_deltas_only = False      # its loss is per weight, which LoRA factors do not have
    trains_near = False           # also trains at points of the concept's neighbourhood (step.target)

    def __init__(self, **params):
        self.params = self.resolve(params)
        self.draws = self.sources()

    def sources(self) -> dict:
        """Draw name -> where its noisy latents come from (sources.py); the first is where preserved
        prompts are held."""
        return {"main": RETAIN_IMAGES}

    @classmethod
    def resolve(cls, params):
        """The parameters with defaults filled in; ValueError naming the one to fix."""
        known = {p.name: p for p in cls.parameters}
        for name in params:
            if name not in known:
                raise ValueError(f"the {cls.name} objective has no parameter '{name}'"
                                 + (f"; its parameters: {', '.join(known)}" if known else ""))
        resolved = {p.name: params.get(p.name, p.default) for p in cls.parameters}
        for p in cls.parameters:
            p.check(resolved[p.name], f"{cls.name} objective")
        return resolved

    @classmethod
    def check_deltas(cls, lora: bool):
        """Raises ValueError naming the fix where this objective cannot train LoRA factors."""
        if lora and cls.full_deltas_only:
            raise ValueError(f"the {cls.name} objective needs full weight deltas (its loss is per weight): choose "
                             f"a parameters preset other than lora")

    @classmethod
    def check_family(cls, family):
        """Raises ValueError naming the fix where this objective cannot train a model of `family`."""

    @property
    def wired_images(self):
        """Which of a concept's images the node's wired LATENT or IMAGE stands for."""
        return FORGET_IMAGES if FORGET_IMAGES in self.needs else RETAIN_IMAGES

    def start(self, step, tools):
        """Before the first step (given it): reset the run's state, measure baselines."""

    def loss(self, step, tools):
        """(loss, terms, m): the loss to minimise, its named parts, and the per-sample m for the record."""
        raise NotImplementedError

    def update(self, terms, tools) -> dict:
        """After the optimiser step: update own state (a dual variable); returns what to record."""
        return {}

    def finished(self) -> bool:
        return False


class Anchor(Objective):
    name, title = "anchor", "Anchor"
    description = "Ablating Concepts / f-DMU: the concept's prediction is pulled onto the frozen anchor's."
    formula = "D(eps_theta(x_t, c*), eps_0(x_t, c_a)), x_t from noised anchor images"
    frozen = (("main", "anchor"),)
    trains_near = True

    def loss(self, step, tools):
        draw = step.draws["main"]
        anchor = step.frozen[("main", "anchor")]
        erase, m = tools.compare(tools.predict(draw, step.concept.target), anchor, draw)
        if step.target is not step.concept.target:     # and at a point of the concept's neighbourhood
            near_target = concept_weighted_target(step, tools, draw, anchor, anchor)
            erase = (erase + tools.compare(tools.predict(draw, step.target), near_target, draw)[0]) / 2
        return erase, {"erase": erase.detach()}, m


def _trajectory(params, trained):
    return Trajectory(trained, int(params["trajectory_steps"]), params["trajectory_cfg"])


class ESD(Objective):
    name, title = "esd", "ESD"
    description = "ESD: the concept is pushed away from itself, past the unconditional prediction (no anchor)."
    formula = ("D(eps_theta(x_t, c*), eps_0(x_t, 0) - eta (eps_0(x_t, c*) - eps_0(x_t, 0))), x_t from the frozen "
               "model's trajectories")
    parameters = (GUIDANCE, TRAJECTORY_STEPS, TRAJECTORY_CFG)
    needs = ()
    frozen = (("main", "target"), ("main", "empty"))

    def sources(self):
        return {"main": _trajectory(self.params, trained=False)}

    def loss(self, step, tools):
        draw = step.draws["main"]
        unconditional, concept = step.frozen[("main", "empty")], step.frozen[("main", "target")]
        target = unconditional - self.params["guidance"] * (concept - unconditional)
        erase, m = tools.compare(tools.predict(draw, step.concept.target), target, draw)
        return erase, {"erase": erase.detach()}, m


def _dual_step(default):
    return Parameter("dual_step", default, 0.0, 10.0, "Step size of the dual ascent on lambda, per evaluation of the "
                                                      "constraint on its fixed bank of draws.")


class _Constrained(Objective):
    """A Lagrangian with one multiplier lambda, updated by projected dual ascent on a statistic of the constraint
    evaluated every EVALUATE_EVERY steps on a fixed bank of draws (each statistic is stated relative to the original
    model's value on the same bank). ETA_MAX caps the effective guidance lambda puts on the concept at 3: ESD erases
    with 1 to 2, and past 3 the concept's prediction leaves the range the model was trained on."""

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

    def statistic(self, tools) -> float:
        """The constraint's statistic for the trained model, on the objective's bank."""
        raise NotImplementedError

    def violation(self, estimate) -> float:
        raise NotImplementedError

    def dual_update(self):
        self.lam = dual_ascent(self.lam, self.violation(self.estimate), self.params["dual_step"], self.lambda_max)

    def interval(self) -> int:
        """Steps from this evaluation of the statistic to the next."""
        return self.evaluate_every

    def update(self, terms, tools):
        self.updates += 1
        if self.updates >= self.next_evaluation:
            self.estimate = self.statistic(tools)
            self.dual_update()
            self.next_evaluation = self.updates + self.interval()
        return {"lambda": self.lam, "constraint_estimate": self.estimate}


def tilt(step, draw, eta):
    """The original model's prediction for the concept, tilted away from it along its own guidance direction:
    eps_0(c*) - eta (eps_0(c*) - eps_0(0)). eta = 1 is the empty prompt's prediction; ESD's target is this with the
    empty prompt's prediction as its base."""
    concept, unconditional = step.frozen[(draw, "target")], step.frozen[(draw, "empty")]
    return concept - eta * (concept - unconditional)


class ConstrainedReverseKL(_Constrained):
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
    frozen = (("main", "target"), ("main", "empty"))
    lambda_max = _Constrained.ETA_MAX / (1 + _Constrained.ETA_MAX)    # eta = lambda / (1 - lambda) <= ETA_MAX

    def sources(self):
        return {"main": _trajectory(self.params, trained=True)}

    def start(self, step, tools):
        self.bank = tools.bank(FORGET_IMAGES)
        concept, unconditional = tools.over_bank(self.bank, tools.frozen), tools.over_bank(self.bank, tools.frozen, "empty")
        self.tilted_towards = 2 * concept - unconditional
        super().start(step, tools)

    def initial_lambda(self):
        """Where the constraint holds for a model that matches its target exactly (eta = budget): the dual ascent
        starts there and corrects for the model's fit, instead of winding up from 0 while the model lags behind
        (from 0, lambda overshot to eta 2.5 for a budget of 1 on the benchmark, and the erasure with it)."""
        return min(self.params["budget"] / (1 + self.params["budget"]), self.lambda_max)

    def statistic(self, tools):
        """KL from the trained model to the concept tilted towards itself, eps_u, on the bank."""
        return tools.measure(tools.over_bank(self.bank, tools.predict), self.tilted_towards, self.bank.draw)[1].mean().item()

    def loss(self, step, tools):
        eta = self.lam / (1 - self.lam)
        erase, m = tools.compare(tools.predict(step.draws["main"], step.concept.target), tilt(step, "main", eta),
                                 step.draws["main"])
        return (1 - self.lam) * erase, {"erase": erase.detach()}, m

    def violation(self, estimate):
        bound = (1 + self.params["budget"]) ** 2 * self.original
        return (bound - estimate) / max(bound, 1e-12)


class ConceptEvidence:
    """How much the trained model's own samples of the concept look like the concept to the original model, a
    diffusion classifier: the mean of |eps_0(x_t, 0) - eps|^2 - |eps_0(x_t, c*) - eps|^2 (the ELBO estimate of
    log p(x | c*) - log p(x), unweighted) over the samples, each noised `noisings` times. Fixed banks: the same
    starting noises, and the same noises and levels for each sample, at every evaluation."""

    noisings = 4      # one noising per sample left the estimate about as noisy as its value on the benchmark

    def __init__(self, tools, steps, cfg):
        self.steps, self.cfg = steps, cfg
        self.banks = [tools.bank(lambda concept: torch.zeros((1, *concept.latent_shape())))
                      for _ in range(self.noisings)]
        self.start_noise = torch.randn(self.banks[0].draw.x_t.shape, generator=tools.generator).to(self.banks[0].draw.x_t)

    def __call__(self, tools):
        noises = self.start_noise.split(self.banks[0].sizes)
        samples = torch.cat([tools.sample(noise, concept.target, self.steps, self.cfg, concept.empty)
                             for (concept, _), noise in zip(self.banks[0].parts(), noises)])
        evidence = []
        for bank in self.banks:
            noised = tools.renoised(bank, samples)
            noise = noised.draw.noise
            unconditional = per_sample_mse(tools.over_bank(noised, tools.frozen, "empty"), noise)
            evidence.append(unconditional - per_sample_mse(tools.over_bank(noised, tools.frozen), noise))
        return torch.cat(evidence).mean().item()


class ConstrainedLikelihood(_Constrained):
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
    frozen = (("main", "target"), ("main", "empty"))
    evaluate_every = 2 * EVALUATE_EVERY     # each evaluation samples the whole bank

    def sources(self):
        return {"main": _trajectory(self.params, trained=True)}

    def start(self, step, tools):
        self.evidence = ConceptEvidence(tools, int(self.params["trajectory_steps"]), self.params["trajectory_cfg"])
        super().start(step, tools)

    def statistic(self, tools):
        return self.evidence(tools)

    def loss(self, step, tools):
        draw = step.draws["main"]
        erase, m = tools.compare(tools.predict(draw, step.concept.target), tilt(step, "main", self.lam), draw)
        return erase, {"erase": erase.detach()}, m

    def violation(self, estimate):
        scale = max(abs(self.original), 1e-12)
        return (estimate - (1 - self.params["budget"]) * self.original) / scale


class ConstrainedForwardKL(_Constrained):
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
    frozen = (("retain", "anchor"), ("retain", "empty"), ("forget", "target"))
    lambda_max = 0.9    # the forget term's weight against the retain term
    kept_roles = ("anchor", "empty")
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
        ascent runs at the full learning rate whatever lambda weighs it, and it ran on to 4-8x the bound once lambda
        was 0, so the run stops there instead (as VDU's does). Tried and dropped on the benchmark: drawing each
        draw's error ratio to the bound as a setpoint (it kept about half of the concept at twice this damage), and
        a regression onto the forward-KL target at the draw, eps_0 + eta (eps_0 - eps) (it deepens the model's own
        errors on these images instead of moving off the class)."""
        retain = step.draws["retain"]
        kept = [tools.compare(tools.predict(retain, getattr(step.concept, role)), step.frozen[("retain", role)], retain)
                for role in self.kept_roles]
        held = sum(loss for loss, _ in kept) / len(kept)
        forgotten, _ = self.forget_error(tools, step)
        return held - self.lam * forgotten, {"retain": held.detach(), "forget": forgotten.detach()}, kept[0][1]

    @property
    def bound(self):
        return 1 + self.params["budget"]

    def violation(self, estimate):
        return (self.bound - estimate) / self.bound

    def interval(self):
        """Sooner as the error nears the bound, in proportion to what is left of the way: between two evaluations
        10 steps apart the error overshot the bound (on the benchmark at learning rate 8e-4 the other classes lost
        5.4 points with an evaluation every 10 steps, 2.5 with this schedule)."""
        left = (self.bound - self.estimate) / max(self.bound - 1, 1e-12)
        return max(self.min_interval, min(self.evaluate_every, math.ceil(self.evaluate_every * left)))

    def finished(self):
        return self.estimate >= self.bound


class VDU(Objective):
    name, title = "vdu", "VDU"
    description = "VDU: raise the denoising error of a few images to forget, held by a prior on the weights."
    formula = ("gamma sum(F_a D^2) / 2 - (1 - gamma) min(e(x_f), 5), e the forget error (relative to the original "
               "model's at the same draw, or to its mean), F_a the diagonal Fisher of the anchor images' denoising "
               "loss (floored), D the weight deltas; stops at stop_ratio on a bank of the images to forget")
    parameters = (GAMMA, STOP_RATIO, RELATIVE_ERROR)
    needs = (RETAIN_IMAGES, FORGET_IMAGES)
    frozen = (("forget", "target"),)
    uses_divergence = False
    full_deltas_only = True
    fisher_draws = 32

    def sources(self):
        return {"forget": FORGET_IMAGES}

    def start(self, step, tools):
        self.check_deltas(tools.deltas.is_lora)
        self.precision = self.fisher_precision(tools)
        self.forget_error, self.updates = ForgetError(tools, relative=bool(self.params["relative_error"])), 0

    def fisher_precision(self, tools):
        """Diagonal Fisher of the anchor images' denoising loss at the pretrained weights, over a bank of draws one
        at a time: the prior's precision (how much each weight matters to what must be kept). Floored at 1e-3 x
        its median so that no weight is left entirely free."""
        bank, fisher = tools.bank(RETAIN_IMAGES, self.fisher_draws), None
        for concept, part in bank.parts():
            for draw in part.split(1):
                loss = per_sample_mse(tools.predict(draw, concept.anchor), draw.noise).mean()
                squares = [g.float().square() for g in torch.autograd.grad(loss, tools.deltas.parameters())]
                fisher = squares if fisher is None else [f + s for f, s in zip(fisher, squares)]
        flat = torch.cat([f.flatten() for f in fisher])
        mean, floor = flat.mean().item(), 1e-3 * flat.median().item()
        return [f.clamp_min(floor) / mean for f in fisher]

    def loss(self, step, tools):
        plasticity, error = self.forget_error(tools, step)
        prior = sum((p * d.square()).sum() for p, d in zip(self.precision, tools.deltas.parameters())) / 2
        gamma = self.params["gamma"]
        return gamma * prior - (1 - gamma) * plasticity, {"prior": prior.detach(), "forget": plasticity.detach()}, error

    def update(self, terms, tools):
        self.updates += 1
        if self.updates % EVALUATE_EVERY == 0:
            self.forget_error.measure(tools)
        return {"forget_error_ratio": self.forget_error.ratio}

    def finished(self):
        return self.forget_error.ratio >= self.params["stop_ratio"]


class UCE(Objective):
    name, title = "uce", "UCE"
    description = "UCE: a closed-form edit of the cross-attention keys and values over all targets and preserved prompts."
    formula = ("W' = (W V^T T + s_p W P^T P + lam W)(T^T T + s_p P^T P + lam I)^-1 for each key and value projection "
               "W; T: the targets' token states, A: the anchors', V = A + eta (A - T); P: the preserved prompts' and "
               "the anchors' own")
    parameters = (PRESERVE_SCALE, REGULARISATION, UCE_GUIDANCE)
    needs = ()
    uses_divergence = False
    full_deltas_only = True

    def sources(self):
        return {}

    @classmethod
    def check_family(cls, family):
        if not family.projections_read_text:
            raise ValueError(f"the uce objective edits projections that read the text encoder's states, and in "
                             f"{family.name} the text is transformed on its way to them (by a text stream or a shared "
                             f"MLP): choose an iterative objective (anchor or esd)")

    def start(self, step, tools):
        self.check_deltas(tools.deltas.is_lora)
        keys = select_parameters(tools.deltas.weight_keys(), "cross_attention_kv", tools.family)
        if not keys:
            raise ValueError("UCE edits the cross-attention keys and values, and the parameters preset trains none "
                             "of them: choose parameters 'cross_attention_kv'")
        # The anchors keep their own keys and values: what the concept becomes must not move with it (without this,
        # the benchmark's sandal, the anchor, lost 13 points).
        anchors = {c.anchor_text or id(c.anchor): c.anchor for c in tools.concepts}
        edit = uce_deltas(tools.denoiser, keys, [(c.target, c.anchor) for c in tools.concepts],
                          [*tools.preserve, *anchors.values()], self.params["preserve_scale"],
                          self.params["regularisation"], self.params["guidance"])
        with torch.no_grad():
            for key, delta in edit.items():
                tools.deltas.tensors[key].copy_(delta)

    def loss(self, step, tools):
        """Nothing left to train: a zero loss (so the one recorded step leaves the edit as it is)."""
        zero = sum(d.sum() for d in tools.deltas.parameters()) * 0.0
        return zero, {}, torch.zeros(1)

    def finished(self):
        return True


OBJECTIVES = {}


def register_objective(objective):
    """Add an Objective class; the node's option nodes and the engine pick it up by name."""
    OBJECTIVES[objective.name] = objective
    return objective


for _objective in (Anchor, ESD, ConstrainedReverseKL, ConstrainedForwardKL, ConstrainedLikelihood, VDU, UCE):
    register_objective(_objective)


def get_objective(name):
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"objective '{name}' is unknown; choose one of: {', '.join(OBJECTIVES)}") from None
