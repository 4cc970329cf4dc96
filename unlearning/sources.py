"""Where a step's noisy latents come from: a concept's images (noised at random noise levels), or
partial sampling trajectories of the frozen or the trained model. Objectives declare these; the
step planner (engine.py) draws them, and the node samples the images a source needs if none are wired.
"""
from dataclasses import dataclass

BANK_SIZE = 64      # draws in a fixed bank of a source's images, which constraints and stop rules read


class RetainImages:
    """Clean latents of what the concept should become (anchor images), or of what must be kept."""

    @staticmethod
    def of(concept):
        return concept.latents

    @staticmethod
    def put(concept, latents):
        concept.latents = latents

    @staticmethod
    def prompt(pair):
        """(text, conditioning) to sample these images from when none are wired: the anchor's as written."""
        return pair.written.anchor_text, pair.written.anchor_cond


class ForgetImages:
    """Clean latents of the images to forget."""

    @staticmethod
    def of(concept):
        return concept.forget_latents

    @staticmethod
    def put(concept, latents):
        concept.forget_latents = latents

    @staticmethod
    def prompt(pair):
        """(text, conditioning) to sample these images from when none are wired: the target's as written."""
        return pair.written.target_text, pair.written.target_cond


RETAIN_IMAGES, FORGET_IMAGES = RetainImages(), ForgetImages()


@dataclass(frozen=True)
class Trajectory:
    """Euler trajectories from pure noise with CFG (the concept against the empty prompt), each sample
    stopped at a random step: of the frozen model (off-policy, ESD) or the trained one (on-policy)."""

    trained: bool
    steps: int
    cfg: float
