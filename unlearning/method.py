"""What a user picks as the objective of an erasure (Unlearn Model's objective option nodes): a training
objective, whose loss the engine's loop minimises (objectives/), or a closed-form edit, which the engine
applies once (closed_form/). Both declare their name, their parameters and the images they need here."""
from typing import Any, ClassVar

from ..divergences import Parameter
from .sources import FORGET_IMAGES, RETAIN_IMAGES, ImageSource

DESCRIBED_BY = ("name", "title", "description", "formula")    # what every method states about itself


class Method:
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""             # the option node's name: "Unlearn Objective: <title>"
    description: ClassVar[str] = ""       # one line: the node's tooltip
    formula: ClassVar[str] = ""           # for the docs and the node's description
    parameters: ClassVar[tuple[Parameter, ...]] = ()
    needs: ClassVar[tuple[ImageSource, ...]] = (RETAIN_IMAGES,)    # the images a concept must carry
    uses_divergence: ClassVar[bool] = True      # whether the divergence setting changes what it does
    full_deltas_only: ClassVar[bool] = False    # it works per weight, which LoRA factors do not have
    trains_near: ClassVar[bool] = False         # it also trains at points of the concept's neighbourhood

    def __init__(self, **params: Any):
        self.params = self.resolve(params)

    @classmethod
    def resolve(cls, params: dict) -> dict:
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
    def check_deltas(cls, lora: bool) -> None:
        """Raises ValueError naming the fix where this method cannot train LoRA factors."""
        if lora and cls.full_deltas_only:
            raise ValueError(f"the {cls.name} objective needs full weight deltas (its loss is per weight): choose "
                             f"a parameters preset other than lora")

    @classmethod
    def check_family(cls, family: Any) -> None:
        """Raises ValueError naming the fix where this method cannot erase from a model of `family`."""

    @classmethod
    def check_described(cls) -> None:
        """Raises TypeError naming what a new method class left out (at registration)."""
        missing = [attribute for attribute in DESCRIBED_BY if not getattr(cls, attribute)]
        if missing:
            raise TypeError(f"{cls.__name__} does not set {', '.join(missing)}: every objective states "
                            f"{', '.join(DESCRIBED_BY)} (see docs/architecture.md)")

    @property
    def wired_images(self) -> ImageSource:
        """Which of a concept's images the node's wired LATENT or IMAGE stands for."""
        return FORGET_IMAGES if FORGET_IMAGES in self.needs else RETAIN_IMAGES
