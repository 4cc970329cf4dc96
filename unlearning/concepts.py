"""Concept/anchor pairs as users write them: one target per line, one shared anchor or one per target."""
from dataclasses import dataclass
from typing import Any


@dataclass
class ConceptPair:
    target_text: str
    anchor_text: str
    target_cond: Any = None   # the model-family conditioning of each prompt (opaque to the engine)
    anchor_cond: Any = None
    empty_cond: Any = None    # the empty prompt's, e.g. the negative when sampling anchor images


def pair_prompts(target: str, anchor: str) -> list:
    """[(target, anchor), ...] from the two text boxes; raises ValueError naming the input to fix."""
    targets = [line.strip() for line in target.splitlines() if line.strip()]
    anchors = [line.strip() for line in anchor.splitlines() if line.strip()]
    if not targets:
        raise ValueError("target is empty: write the concept to erase, one per line (e.g. 'Van Gogh').")
    if not anchors:
        anchors = [""]  # map onto the empty prompt, as f-DMU's "empty" anchor
    if len(anchors) == 1:
        anchors = anchors * len(targets)
    if len(anchors) != len(targets):
        raise ValueError(
            f"anchor has {len(anchors)} lines but target has {len(targets)}: give one anchor line shared "
            f"by every target, or exactly one anchor line per target.")
    return list(zip(targets, anchors))
