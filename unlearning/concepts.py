"""What to erase and what to keep: as users write it (one target per line, one shared anchor or one
per target, prompts to preserve), and as the engine trains on it (a Concept per pair)."""
from dataclasses import dataclass, field
from typing import Any, Optional

import torch


@dataclass
class ConceptPair:
    target_text: str
    anchor_text: str
    target_cond: Any = None   # the model-family conditioning of each prompt (opaque to the engine)
    anchor_cond: Any = None
    empty_cond: Any = None    # the empty prompt's, e.g. the negative when sampling anchor images
    phrasing_of: Optional["ConceptPair"] = None   # the pair as written, when this is a template phrasing of it
    # The token id behind each row of each prompt's text states (from the text encoder's own tokenizer), which UCE
    # pairs the rows by; None where unknown (then rows pair by position).
    target_tokens: Optional[torch.Tensor] = None
    anchor_tokens: Optional[torch.Tensor] = None

    @property
    def written(self) -> "ConceptPair":
        """The pair as the user wrote it: whose images every phrasing of it shares."""
        return self.phrasing_of or self


@dataclass
class PreservedPrompt:
    text: str
    cond: Any = None


@dataclass
class ConceptSet:
    """The UNLEARN_CONCEPTS of the nodes: pairs to erase, and prompts whose predictions must not move."""

    pairs: list = field(default_factory=list)       # ConceptPair
    preserve: list = field(default_factory=list)    # PreservedPrompt

    def merged(self, other: "ConceptSet") -> "ConceptSet":
        return ConceptSet(self.pairs + other.pairs, self.preserve + other.preserve)


def prompt_lines(text: str) -> list:
    return [line.strip() for line in text.splitlines() if line.strip()]


ARROW = "->"   # a line "target -> anchor" names its own anchor


def pair_prompts(target: str, anchor: str) -> list:
    """[(target, anchor), ...] from the two text boxes; raises ValueError naming the input to fix. A target line
    written "target -> anchor" carries its own anchor (a list of many concepts is written that way, in the box or
    in a file); the anchor box serves the other lines: one line shared by all of them, or one line each."""
    lines = [line.partition(ARROW) for line in prompt_lines(target)]
    if not lines:
        raise ValueError("target is empty: write the concept to erase, one per line (e.g. 'Van Gogh', or "
                         "'Van Gogh -> a painting').")
    if any(arrow and not line.strip() for line, arrow, _ in lines):
        raise ValueError(f"target has a line with nothing before '{ARROW}': write it as 'target {ARROW} anchor'.")
    unpaired = [line.strip() for line, arrow, _ in lines if not arrow]
    anchors = prompt_lines(anchor) or [""]   # empty: map onto the empty prompt, as f-DMU's "empty" anchor
    if len(anchors) == 1:
        anchors = anchors * len(unpaired)
    if unpaired and len(anchors) != len(unpaired):
        raise ValueError(
            f"anchor has {len(anchors)} lines but target has {len(unpaired)} line{'s' * (len(unpaired) != 1)} "
            f"without '{ARROW}': give one anchor line shared by every target, exactly one anchor line per target, "
            f"or write each target line as 'target {ARROW} anchor'.")
    remaining = iter(anchors)
    return [(line.strip(), own.strip()) if arrow else (line.strip(), next(remaining)) for line, arrow, own in lines]


# Phrasings a concept is also erased in (and a preserved prompt held in) when the pair node expands it:
# where the concept appears in a prompt changes its text states, and an erasure trained on one sentence
# carries over only partly to others.
PHRASING_TEMPLATES = ("a photo of {}", "a picture of {}", "an image of {}", "{} in a scene", "a close-up of {}",
                      "a drawing of {}", "a photograph showing {}")


def phrasings_of(text: str, templates: tuple[str, ...] = PHRASING_TEMPLATES) -> list:
    """The text as written, then through each template (the empty prompt stays as it is)."""
    return [text] + [t.format(text) for t in templates] if text else [text]


def expanded_pairs(pairs: list, templates: tuple[str, ...] = PHRASING_TEMPLATES) -> list:
    """[(target, anchor, index of the pair as written)]: each pair as written, then the same template around
    target and anchor alike (an empty anchor stays empty)."""
    expanded = []
    for index, (target, anchor) in enumerate(pairs):
        anchors = phrasings_of(anchor, templates) if anchor else [anchor] * (len(templates) + 1)
        expanded += [(t, a, index) for t, a in zip(phrasings_of(target, templates), anchors)]
    return expanded


@dataclass
class Concept:
    """One concept as the engine trains on it: its conditionings and its images (clean latents)."""

    target: Any
    anchor: Any
    latents: Optional[torch.Tensor]          # images of what to keep or map onto (retain data: anchor images)
    target_text: str = ""
    anchor_text: str = ""
    empty: Any = None                        # the empty prompt's conditioning (ESD, CFG in trajectories)
    forget_latents: Optional[torch.Tensor] = None   # images to forget (constrained_forward_kl, vdu)
    shape: Optional[tuple] = None            # (C, H, W) of the latents, where no latents are given
    target_tokens: Optional[torch.Tensor] = None    # the token id behind each row of target's text states (ConceptPair)
    anchor_tokens: Optional[torch.Tensor] = None

    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape[1:]) if self.latents is not None else tuple(self.shape)
