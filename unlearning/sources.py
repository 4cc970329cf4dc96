"""Where a step's noisy latents come from: a concept's images (noised at random noise levels), or
partial sampling trajectories of the frozen or the trained model. Objectives declare these; the
step planner (engine.py) draws them, and the node samples the images a source needs if none are wired.
"""
from dataclasses import dataclass
from typing import Any, Protocol

import torch

BANK_SIZE = 64      # draws in a fixed bank of a source's images, which constraints and stop rules read


class ImageSource(Protocol):
    """A kind of image a concept carries: how to read and set its clean latents, and the prompt to sample them from."""

    def of(self, concept: Any) -> torch.Tensor: ...

    def put(self, concept: Any, latents: torch.Tensor) -> None: ...

    def prompt(self, pair: Any) -> tuple[str, Any]: ...


class RetainImages:
    """Clean latents of what the concept should become (anchor images), or of what must be kept."""

    @staticmethod
    def of(concept: Any) -> torch.Tensor:
        return concept.latents

    @staticmethod
    def put(concept: Any, latents: torch.Tensor) -> None:
        concept.latents = latents

    @staticmethod
    def prompt(pair: Any) -> tuple[str, Any]:
        """(text, conditioning) to sample these images from when none are wired: the anchor's as written."""
        return pair.written.anchor_text, pair.written.anchor_cond


class ForgetImages:
    """Clean latents of the images to forget."""

    @staticmethod
    def of(concept: Any) -> torch.Tensor:
        return concept.forget_latents

    @staticmethod
    def put(concept: Any, latents: torch.Tensor) -> None:
        concept.forget_latents = latents

    @staticmethod
    def prompt(pair: Any) -> tuple[str, Any]:
        """(text, conditioning) to sample these images from when none are wired: the target's as written."""
        return pair.written.target_text, pair.written.target_cond


RETAIN_IMAGES: ImageSource = RetainImages()
FORGET_IMAGES: ImageSource = ForgetImages()


@dataclass(frozen=True)
class Trajectory:
    """Euler trajectories from pure noise with CFG (the concept against the empty prompt), each sample
    stopped at a random step: of the frozen model (off-policy, ESD) or the trained one (on-policy)."""

    trained: bool
    steps: int
    cfg: float


Source = ImageSource | Trajectory     # where a draw's noisy latents come from
