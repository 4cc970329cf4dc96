"""Which weights an erasure trains: the presets a user picks from, and the weight names each selects.

A preset's meaning is the same in every model family (e.g. "where the prompt enters the image");
each family's profile (families.py) says which of its weight names that is.
"""
import re
from typing import TYPE_CHECKING, Optional

from .deltas import WeightKey

if TYPE_CHECKING:
    from .families import FamilyProfile

PRESETS = {
    "cross_attention_kv": "The key/value projections of the text entering the image: the Ablating Concepts / "
                          "f-DMU default, smallest and safest.",
    "text_input": "The first linear weights that read the text encoder's states (UNets: the cross-attention keys "
                  "and values; DiTs: the text embedder): what closed-form edits change.",
    "cross_attention": "Every weight of the text-to-image attention (ESD-x): stronger for styles and objects.",
    "attention": "Self- and cross-attention: Ablating Concepts' choice for nudity.",
    "full": "Every weight of the diffusion model: strongest, biggest, and most likely to disturb other concepts.",
    "lora": "A LoRA on every attention projection, the usual LoRA targets: small files to share.",
}


def select_parameters(names: list[str], preset: str, profile: Optional["FamilyProfile"] = None,
                      shapes: Optional[dict[str, tuple[int, ...]]] = None) -> list:
    """What a preset trains in a model family (default: Stable Diffusion 1.x, whose names diffusers' UNets
    share), in the order of `names`: weight names, or for a preset of fused-projection parts (a DiT's text
    key/value rows of a fused qkv) weight slices (name, (0, start, rows)), which need `shapes` (name -> shape)."""
    from .families import SD1, FusedParts

    patterns = (profile or SD1).presets
    if preset not in patterns:
        raise ValueError(f"parameters preset '{preset}' is unknown; choose one of: {', '.join(patterns)}")
    chosen = patterns[preset]
    if not isinstance(chosen, FusedParts):
        pattern = re.compile(chosen)
        return [name for name in names if pattern.search(name)]
    pattern = re.compile(chosen.pattern)
    return [slice_ for name in names if pattern.search(name) for slice_ in chosen.slices(name, shapes[name])]


def weight_name(target: WeightKey) -> str:
    """The weight a trained target changes: the target itself, or the weight of a slice (name, (dim, start, size))."""
    return target[0] if isinstance(target, tuple) else target
