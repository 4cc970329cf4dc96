"""Ablating Concepts (arXiv 2303.13516) with any divergence (f-DMU, arXiv 2509.21167): the concept's prediction is
pulled onto the frozen model's prediction for the anchor, at noised anchor images."""
import torch

from ..draws import Draw, FrozenPass, Role, Step
from ..toolbox import Toolbox
from .contract import Loss, Objective
from .statistics import per_sample_mse

ANCHOR_AT_MAIN = FrozenPass("main", Role.ANCHOR)


def concept_weighted_target(step: Step, tools: Toolbox, draw: Draw, erased: torch.Tensor,
                            anchor: torch.Tensor) -> torch.Tensor:
    """The training target at a point c' near the concept: `erased` (the concept's erased target) as far as
    the frozen model treats c' as the concept, its own frozen prediction as far as it does not:
    w = 1 - |eps_0(c') - eps_0(c*)|^2 / |eps_0(c_a) - eps_0(c*)|^2, clipped to [0, 1], per sample (`anchor`
    is eps_0(c_a)). So a neighbourhood that reaches other concepts erases only what behaves like c* and
    holds the rest."""
    near, concept = tools.frozen(draw, step.target), tools.frozen(draw, step.concept.target)
    weight = (1 - per_sample_mse(near, concept) / per_sample_mse(anchor, concept).clamp_min(1e-12)).clamp(0, 1)
    weight = weight.view(-1, *[1] * (near.dim() - 1)).to(near)
    return weight * erased + (1 - weight) * near


class Anchor(Objective):
    name, title = "anchor", "Anchor"
    description = "Ablating Concepts / f-DMU: the concept's prediction is pulled onto the frozen anchor's."
    formula = "D(eps_theta(x_t, c*), eps_0(x_t, c_a)), x_t from noised anchor images"
    frozen = (ANCHOR_AT_MAIN,)
    trains_near = True

    def loss(self, step, tools):
        draw, anchor = step.draws["main"], step.frozen[ANCHOR_AT_MAIN]
        erase = tools.compare(tools.predict(draw, step.concept.target), anchor, draw)
        if step.target is step.concept.target:
            return Loss.of(erase)
        # and at a point of the concept's neighbourhood, held as far as the frozen model does not treat it as c*
        near = tools.compare(tools.predict(draw, step.target), concept_weighted_target(step, tools, draw, anchor, anchor),
                             draw)
        both = (erase.loss + near.loss) / 2
        return Loss(both, {"erase": both.detach()}, erase.m, (erase, near))
