"""Variational Diffusion Unlearning (VDU, arXiv 2510.04058): raise the denoising error of a few images to forget,
held by a Gaussian prior on the weights whose precision is the diagonal Fisher of the anchor images' loss."""
import torch

from ...divergences import Parameter
from ..sources import FORGET_IMAGES, RETAIN_IMAGES
from ..toolbox import Toolbox
from .contract import Loss, Objective
from .statistics import EVALUATE_EVERY, FORGET_AT, ForgetError, per_sample_mse

GAMMA = Parameter("gamma", 0.5, 0.0, 1.0, "VDU's balance: gamma x stability prior - (1 - gamma) x forget error.")
STOP_RATIO = Parameter("stop_ratio", 2.0, 1.0, 100.0, "VDU stops once the denoising error on the images to forget, "
                                                       "measured on a fixed bank of draws, reaches this multiple of "
                                                       "the original model's.")
RELATIVE_ERROR = Parameter("relative_error", 1, 0, 1, "1: each draw's forget error counts relative to the original "
                                                       "model's at the same draw, so that high noise levels, where the "
                                                       "class is decided, weigh as much as low ones; 0: the plain "
                                                       "epsilon error (DDPM's L_simple), most of which comes from low "
                                                       "noise levels.")


class VDU(Objective):
    name, title = "vdu", "VDU"
    description = "VDU: raise the denoising error of a few images to forget, held by a prior on the weights."
    formula = ("gamma sum(F_a D^2) / 2 - (1 - gamma) min(e(x_f), 5), e the forget error (relative to the original "
               "model's at the same draw, or to its mean), F_a the diagonal Fisher of the anchor images' denoising "
               "loss (floored), D the weight deltas; stops at stop_ratio on a bank of the images to forget")
    parameters = (GAMMA, STOP_RATIO, RELATIVE_ERROR)
    needs = (RETAIN_IMAGES, FORGET_IMAGES)
    frozen = (FORGET_AT,)
    preserve_on = "forget"      # its only draw
    uses_divergence = False
    full_deltas_only = True
    fisher_draws = 32

    def sources(self):
        return {"forget": FORGET_IMAGES}

    def start(self, step, tools):
        self.check_deltas(tools.deltas.is_lora)
        self.precision = self.fisher_precision(tools)
        self.forget_error, self.updates = ForgetError(tools, relative=bool(self.params["relative_error"])), 0

    def fisher_precision(self, tools: Toolbox) -> list[torch.Tensor]:
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
        return Loss(gamma * prior - (1 - gamma) * plasticity, {"prior": prior.detach(), "forget": plasticity.detach()},
                    error)

    def update(self, tools):
        self.updates += 1
        if self.updates % EVALUATE_EVERY == 0:
            self.forget_error.measure(tools)
        return {"forget_error_ratio": self.forget_error.ratio}

    def finished(self):
        return self.forget_error.ratio >= self.params["stop_ratio"]
