"""The contract between a training objective and the engine's loop.

An objective declares where its step's noisy latents come from (`sources()`: draw name -> source), the
frozen-model predictions its loss reads (`frozen`: FrozenPass(draw, role) values), and the draw on which the
step's preserved prompt is held (`preserve_on`); the engine draws those, runs the frozen passes batched over
several steps, and hands the loss a Step (step.draws[name], step.frozen[FrozenPass(...)]) and a Toolbox. The
loss returns a Loss: the value to minimise, its named terms, the divergence's m, and every Comparison it
made (what a variational divergence's critic learns from).

Notation: eps_theta is the trained model, eps_0 the frozen one (the same weights with the deltas off), c* the
concept's prompt, c_a its anchor's, 0 the empty prompt; D is the divergence.
"""
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..draws import FrozenPass, Step
from ..method import Method
from ..sources import RETAIN_IMAGES, Source, Trajectory
from ..toolbox import Comparison, Toolbox


@dataclass
class Loss:
    """What one step of an objective minimises, and what the run records of it."""

    value: torch.Tensor                         # the scalar the optimiser minimises
    terms: dict[str, torch.Tensor]              # its named parts, detached
    m: torch.Tensor                             # per-sample Mahalanobis term the divergence saw (for the record)
    compared: tuple[Comparison, ...] = field(default=())   # every comparison made: what a critic learns from

    @classmethod
    def of(cls, comparison: Comparison, name: str = "erase") -> "Loss":
        """The loss of one comparison, recorded under `name`."""
        return cls(comparison.loss, {name: comparison.loss.detach()}, comparison.m, (comparison,))


class Objective(Method):
    frozen: ClassVar[tuple[FrozenPass, ...]] = ()     # the frozen predictions the loss reads
    preserve_on: ClassVar[str] = "main"               # the draw where the step's preserved prompt is held

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.draws = self.sources()
        self.check_declared()

    def sources(self) -> dict[str, Source]:
        """Draw name -> where its noisy latents come from (sources.py)."""
        return {"main": RETAIN_IMAGES}

    def check_declared(self) -> None:
        """Raises TypeError naming a frozen pass or the preservation draw that reads a draw this objective does
        not declare in sources(), or a draw of images that `needs` does not list (the node would not provide
        them)."""
        for name, source in self.draws.items():
            if not isinstance(source, Trajectory) and source not in self.needs:
                raise TypeError(f"the {self.name} objective draws '{name}' from {type(source).__name__}, which its "
                                f"needs does not list: add it to needs, so that every concept carries those images")
        declared = ", ".join(self.draws) or "none"
        for wanted, reader in [(p.draw, f"its frozen pass {p.role.name} at") for p in self.frozen] + \
                              [(self.preserve_on, "preserve_on, the preservation draw, names")]:
            if wanted not in self.draws:
                raise TypeError(f"the {self.name} objective's {reader} draw '{wanted}', which its sources() does not "
                                f"declare (it declares: {declared}): add '{wanted}' to sources() or name a declared "
                                f"draw")

    def start(self, step: Step, tools: Toolbox) -> None:
        """Before the first step (given it): reset the run's state, measure baselines."""

    def loss(self, step: Step, tools: Toolbox) -> Loss:
        """The loss of one step."""
        raise NotImplementedError(f"the {self.name} objective does not define loss(step, tools)")

    def update(self, tools: Toolbox) -> dict[str, float]:
        """After the optimiser step: update own state (a dual variable); returns what to record."""
        return {}

    def finished(self) -> bool:
        """Whether the run stops here (a stopping rule met)."""
        return False
