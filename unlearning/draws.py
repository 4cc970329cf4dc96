"""What a step trains on: noisy latents (Draw), fixed banks of them for statistics (Bank), the step
itself (Step), and whose conditioning a prediction is made under (Role)."""
import enum
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import torch


class Role(enum.Enum):
    """Whose conditioning a prediction is made under."""

    TARGET = "target"        # the concept's prompt c* (or the point of its neighbourhood a step trains at)
    ANCHOR = "anchor"        # what the concept becomes, c_a
    EMPTY = "empty"          # the empty prompt
    PRESERVE = "preserve"    # the prompt the step preserves


@dataclass(frozen=True)
class FrozenPass:
    """A frozen-model prediction an objective reads: at its draw `draw` (a name its `sources()` declares), under
    the conditioning of `role`. The engine computes every declared pass before the loss, batched over steps."""

    draw: str
    role: Role


@dataclass
class Draw:
    """Noisy latents of one step: x_t at sigma, and the noise that made it (None on a trajectory)."""

    x_t: torch.Tensor
    sigma: torch.Tensor
    percent: Optional[torch.Tensor]
    noise: Optional[torch.Tensor] = None

    def split(self, sizes: int | Sequence[int]) -> list["Draw"]:
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
    sizes: list[int]

    def parts(self) -> Iterator[tuple[Any, Draw]]:
        return zip(self.concepts, self.draw.split(self.sizes))


class Draws(dict[str, Draw]):
    """A step's draws by name; asking for one the objective did not declare names the fix."""

    def __missing__(self, name: str) -> Draw:
        raise KeyError(f"this step has no draw '{name}' (it has: {', '.join(self) or 'none'}): declare '{name}' in "
                       f"the objective's sources()")


@dataclass
class Step:
    """What one step trains on; drawn ahead so that the frozen passes of several steps run as one."""

    concept: Any                                  # the engine Concept this step erases
    target: Any = None                            # a point of the concept's neighbourhood, or its own conditioning
    draws: Draws = field(default_factory=Draws)                    # draw name -> Draw
    preserve: Any = None                          # the conditioning of the prompt preserved this step
    frozen: dict[FrozenPass, torch.Tensor] = field(default_factory=dict)    # the frozen epsilons declared

    def conditioning(self, role: Role) -> Any:
        """The conditioning a role stands for at this step (the concept's own for TARGET)."""
        return self.preserve if role is Role.PRESERVE else getattr(self.concept, role.value)
