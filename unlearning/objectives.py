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
BUDGET = Parameter("budget", 1.0, 0.0, 10.0, "The constraint's bound, relative: 1 = as far from the concept as "
                                              "the anchor is (reverse KL, likelihood), or twice its denoising "
                                              "error on the data to forget (forward KL).")
DUAL_STEP = Parameter("dual_step", 0.05, 0.0, 1.0, "Step size of the dual ascent on lambda, per training step.")
GAMMA = Parameter("gamma", 0.9, 0.0, 1.0, "VDU's balance: gamma x stability prior - (1 - gamma) x forget error.")
STOP_RATIO = Parameter("stop_ratio", 2.0, 1.0, 100.0, "VDU stops once the denoising error on the data to forget "
                                                       "reaches this multiple of where it started.")
TRAJECTORY_STEPS = Parameter("trajectory_steps", 20, 2, 200, "Euler steps of the partial-sampling trajectories "
                                                              "that x_t is taken from.")
PRESERVE_SCALE = Parameter("preserve_scale", 30.0, 0.0, 1000.0, "UCE's weight of keeping the preserved prompts' "
                                                                 "keys and values where they are.")
REGULARISATION = Parameter("regularisation", 0.1, 1e-6, 100.0, "UCE's pull towards the original weights, relative to "
                                                                "the prompts' own scale: higher edits less.")
UCE_GUIDANCE = Parameter("guidance", 0.5, 0.0, 5.0, "How far past the anchor the targets' keys and values move, away "
                                                    "from the concept's: 0 = onto the anchor's (UCE), 0.5 = half the "
                                                    "anchor-to-target gap beyond it.")
TRAJECTORY_CFG = Parameter("trajectory_cfg", 3.0, 0.0, 30.0, "CFG scale of those trajectories (ESD: 3).")


def dual_ascent(lam, violation, step_size, lam_max):
    """Projected dual ascent: lambda grows while the constraint is violated (violation > 0), shrinks once
    it holds, and stays in [0, lam_max]."""
    return min(max(lam + step_size * violation, 0.0), lam_max)


def per_sample_mse(pred, target):
    return (pred.float() - target.float()).square().flatten(1).mean(1)


class ForgetError:
    """The trained model's denoising error on the images to forget, clipped at 5 x its starting value e_0
    (gradient ascent on an unbounded error would run away; SISS clips it likewise), and its running mean.

    One step's error swings by an order of magnitude with the noise level it drew, so e_0 is the mean
    over `baseline_draws` draws at the start, and stopping rules read the running mean (EMA 0.9, from e_0).
    """
    baseline_draws = 16

    def __init__(self, tools, concept):
        with torch.no_grad():
            draws = [tools.draw(concept.forget_latents) for _ in range(self.baseline_draws)]
            errors = [per_sample_mse(tools.predict(d, concept.target), d.noise) for d in draws]
        self.initial = self.running = torch.cat(errors).mean().item()

    def __call__(self, tools, step):
        """(clipped mean error to ascend, per-sample error)."""
        forget = step.draws["forget"]
        error = per_sample_mse(tools.predict(forget, step.concept.target), forget.noise)
        self.running = 0.9 * self.running + 0.1 * error.mean().item()
        return torch.minimum(error, torch.full_like(error, 5 * self.initial)).mean(), error

    @property
    def ratio(self):
        """The running error over e_0."""
        return self.running / self.initial


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
            value = resolved[p.name]
            if not (math.isfinite(value) and p.minimum <= value <= p.maximum):
                raise ValueError(f"{p.name} must be between {p.minimum} and {p.maximum} for the {cls.name} "
                                 f"objective, got {value}; {p.description}")
        return resolved

    @classmethod
    def check_deltas(cls, lora: bool):
        """Raises ValueError naming the fix where this objective cannot train LoRA factors."""
        if lora and cls.full_deltas_only:
            raise ValueError(f"the {cls.name} objective needs full weight deltas (its loss is per weight): choose "
                             f"a parameters preset other than lora")

    @property
    def wired_images(self):
        """Which of a concept's images the node's wired LATENT or IMAGE stands for."""
        return FORGET_IMAGES if FORGET_IMAGES in self.needs else RETAIN_IMAGES

    def start(self, step, tools):
        """Before the first step (given it): reset the run's state, measure baselines."""

    def loss(self, step, tools):
        """(loss, terms, m): the loss to minimise, its named parts, and the per-sample m for the record."""
        raise NotImplementedError

    def update(self, terms) -> dict:
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


class _Constrained(Objective):
    """A Lagrangian with one multiplier lambda, updated by projected dual ascent on the constraint's
    running estimate (an exponential moving average: the per-step estimates are noisy)."""

    lambda_max = 1.0

    def start(self, step, tools):
        self.lam, self.estimate = 0.0, None

    def violation(self, estimate) -> float:
        raise NotImplementedError

    def update(self, terms):
        value = float(terms["constraint"])
        self.estimate = value if self.estimate is None else 0.9 * self.estimate + 0.1 * value
        self.lam = dual_ascent(self.lam, self.violation(self.estimate), self.params["dual_step"], self.lambda_max)
        return {"lambda": self.lam, "constraint_estimate": self.estimate}


class ConstrainedReverseKL(_Constrained):
    name, title = "constrained_reverse_kl", "Constrained Reverse KL"
    description = "Stay close to the anchor while keeping at least `budget` x the anchor's KL from the concept."
    formula = ("(1 - lam) D(eps_theta, eps*), eps* = eps_0(c_a) - lam/(1-lam) (eps_0(c*) - eps_0(c_a)); "
               "constraint KL(eps_theta, eps_0(c*)) >= budget KL(eps_0(c_a), eps_0(c*)); x_t on the trained "
               "model's trajectories")
    parameters = (BUDGET, DUAL_STEP, TRAJECTORY_STEPS, TRAJECTORY_CFG)
    needs = ()
    frozen = (("main", "anchor"), ("main", "target"))
    lambda_max = 0.95    # lambda / (1 - lambda) diverges at 1

    def sources(self):
        return {"main": _trajectory(self.params, trained=True)}

    def start(self, step, tools):
        super().start(step, tools)
        anchor, concept = step.frozen[("main", "anchor")], step.frozen[("main", "target")]
        self.bound = self.params["budget"] * tools.measure(anchor, concept, step.draws["main"])[0].item()

    def loss(self, step, tools):
        draw = step.draws["main"]
        anchor, concept = step.frozen[("main", "anchor")], step.frozen[("main", "target")]
        target = anchor - self.lam / (1 - self.lam) * (concept - anchor)
        pred = tools.predict(draw, step.concept.target)
        primal, m = tools.compare(pred, target, draw)
        separation, _ = tools.measure(pred.detach(), concept, draw)
        return (1 - self.lam) * primal, {"erase": primal.detach(), "constraint": separation}, m

    def violation(self, estimate):
        return (self.bound - estimate) / max(self.bound, 1e-12)


class ConstrainedLikelihood(_Constrained):
    name, title = "constrained_likelihood", "Constrained Likelihood"
    description = "Tilt the model away from the concept until its predictions carry less concept evidence than `budget` allows."
    formula = ("D(eps_theta, eps*), eps* = eps_0(c_a) - lam (eps_0(c*) - eps_0(c_a)); constraint: evidence "
               "(|eps_theta - eps_0(c_a)|^2 - |eps_theta - eps_0(c*)|^2) / |eps_0(c*) - eps_0(c_a)|^2 <= 1 - 2 budget; "
               "x_t on the trained model's trajectories")
    parameters = (BUDGET, DUAL_STEP, TRAJECTORY_STEPS, TRAJECTORY_CFG)
    needs = ()
    frozen = (("main", "anchor"), ("main", "target"))
    lambda_max = 10.0

    def sources(self):
        return {"main": _trajectory(self.params, trained=True)}

    def loss(self, step, tools):
        draw = step.draws["main"]
        anchor, concept = step.frozen[("main", "anchor")], step.frozen[("main", "target")]
        pred = tools.predict(draw, step.concept.target)
        erase, m = tools.compare(pred, anchor - self.lam * (concept - anchor), draw)
        with torch.no_grad():
            evidence = (per_sample_mse(pred, anchor) - per_sample_mse(pred, concept)) / per_sample_mse(concept, anchor).clamp_min(1e-12)
        return erase, {"erase": erase.detach(), "constraint": evidence.mean()}, m

    def violation(self, estimate):
        return estimate - (1 - 2 * min(self.params["budget"], 1.0))


class ConstrainedForwardKL(_Constrained):
    name, title = "constrained_forward_kl", "Constrained Forward KL"
    description = "Data unlearning: keep denoising anchor images, make the images to forget harder to denoise."
    formula = ("D(eps_theta(x_r, c*), eps_r) - lam min(|eps_theta(x_f, c*) - eps_f|^2, 5 e_0); constraint: forget "
               "error >= (1 + budget) e_0; x_r noised anchor images, x_f noised images to forget")
    parameters = (BUDGET, DUAL_STEP)
    needs = (RETAIN_IMAGES, FORGET_IMAGES)
    lambda_max = 0.9

    def sources(self):
        return {"retain": RETAIN_IMAGES, "forget": FORGET_IMAGES}

    def start(self, step, tools):
        super().start(step, tools)
        self.forget_error = ForgetError(tools, step.concept)

    def loss(self, step, tools):
        retain = step.draws["retain"]
        kept, m = tools.compare(tools.predict(retain, step.concept.target), retain.noise, retain)
        forgotten, error = self.forget_error(tools, step)
        ratio = error.mean().detach() / self.forget_error.initial
        return kept - self.lam * forgotten, {"retain": kept.detach(), "forget": forgotten.detach(), "constraint": ratio}, m

    def violation(self, estimate):
        target = 1 + self.params["budget"]
        return (target - estimate) / target


class VDU(Objective):
    name, title = "vdu", "VDU"
    description = "VDU: raise the denoising error of a few images to forget, held by a prior on the weights."
    formula = ("gamma sum(F_a D^2) / 2 - (1 - gamma) min(|eps_theta(x_f, c*) - eps_f|^2, 5 e_0), F_a the diagonal "
               "Fisher of the anchor images' denoising loss (floored), D the weight deltas; stops at stop_ratio x e_0")
    parameters = (GAMMA, STOP_RATIO)
    needs = (RETAIN_IMAGES, FORGET_IMAGES)
    uses_divergence = False
    full_deltas_only = True
    fisher_samples = 8

    def sources(self):
        return {"forget": FORGET_IMAGES}

    def start(self, step, tools):
        self.check_deltas(tools.deltas.is_lora)
        self.precision = self.fisher_precision(step.concept, tools)
        self.forget_error = ForgetError(tools, step.concept)

    def fisher_precision(self, concept, tools):
        """Diagonal Fisher of the anchor images' denoising loss at the pretrained weights: the prior's
        precision (how much each weight matters to what must be kept). Floored at 1e-3 x its median so
        that no weight is left entirely free."""
        fisher = None
        for _ in range(self.fisher_samples):
            draw = tools.draw(concept.latents)
            loss = per_sample_mse(tools.predict(draw, concept.anchor), draw.noise).mean()
            squares = [g.float().square() for g in torch.autograd.grad(loss, tools.deltas.parameters())]
            fisher = squares if fisher is None else [f + s for f, s in zip(fisher, squares)]
        fisher = [f / self.fisher_samples for f in fisher]
        floor = 1e-3 * torch.cat([f.flatten() for f in fisher]).median().item()
        return [f.clamp_min(floor) for f in fisher]

    def loss(self, step, tools):
        plasticity, error = self.forget_error(tools, step)
        prior = sum((p * d.square()).sum() for p, d in zip(self.precision, tools.deltas.parameters())) / 2
        gamma = self.params["gamma"]
        return gamma * prior - (1 - gamma) * plasticity, {"prior": prior.detach(), "forget": plasticity.detach()}, error

    def update(self, terms):
        return {"forget_error_ratio": self.forget_error.ratio}

    def finished(self):
        return self.forget_error.ratio >= self.params["stop_ratio"]


class UCE(Objective):
    name, title = "uce", "UCE"
    description = "UCE: a closed-form edit of the cross-attention keys and values over all targets and preserved prompts."
    formula = ("W' = (W V^T T + s_p W P^T P + lam W)(T^T T + s_p P^T P + lam I)^-1 for each key and value projection "
               "W; T, P: the targets' and the preserved prompts' token states; V = A + eta (A - T), A the anchors'")
    parameters = (PRESERVE_SCALE, REGULARISATION, UCE_GUIDANCE)
    needs = ()
    uses_divergence = False
    full_deltas_only = True

    def sources(self):
        return {}

    def start(self, step, tools):
        self.check_deltas(tools.deltas.is_lora)
        keys = select_parameters(tools.deltas.weight_keys(), "cross_attention_kv", tools.family)
        if not keys:
            raise ValueError("UCE edits the cross-attention keys and values, and the parameters preset trains none "
                             "of them: choose parameters 'cross_attention_kv'")
        edit = uce_deltas(tools.denoiser, keys, [(c.target, c.anchor) for c in tools.concepts], tools.preserve,
                          self.params["preserve_scale"], self.params["regularisation"], self.params["guidance"])
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
