"""Erased Stable Diffusion (ESD, arXiv 2303.07345): the concept's prediction is pushed away from itself, past the
unconditional one, on the frozen model's own partial trajectories; no anchor."""
from ...divergences import Parameter
from ..draws import FrozenPass, Role
from .contract import Loss, Objective
from .trajectories import TRAJECTORY_CFG, TRAJECTORY_STEPS, trajectory

GUIDANCE = Parameter("guidance", 1.0, 0.0, 20.0, "ESD's eta: how far past the unconditional prediction the "
                                                  "concept is pushed (1: eps_0(0) - (eps_0(c*) - eps_0(0))).")
CONCEPT, UNCONDITIONAL = FrozenPass("main", Role.TARGET), FrozenPass("main", Role.EMPTY)


class ESD(Objective):
    name, title = "esd", "ESD"
    description = "ESD: the concept is pushed away from itself, past the unconditional prediction (no anchor)."
    formula = ("D(eps_theta(x_t, c*), eps_0(x_t, 0) - eta (eps_0(x_t, c*) - eps_0(x_t, 0))), x_t from the frozen "
               "model's trajectories")
    parameters = (GUIDANCE, TRAJECTORY_STEPS, TRAJECTORY_CFG)
    needs = ()
    frozen = (CONCEPT, UNCONDITIONAL)

    def sources(self):
        return {"main": trajectory(self.params, trained=False)}

    def loss(self, step, tools):
        draw = step.draws["main"]
        unconditional, concept = step.frozen[UNCONDITIONAL], step.frozen[CONCEPT]
        target = unconditional - self.params["guidance"] * (concept - unconditional)
        return Loss.of(tools.compare(tools.predict(draw, step.concept.target), target, draw))
