"""Which weights an erasure trains: the presets a user picks from, and the weight names each selects.

A preset's meaning is the same in every model family (e.g. "where the prompt enters the image");
each family's profile (families.py) says which of its weight names that is.
"""
import re

PRESETS = {
    "cross_attention_kv": "The key/value projections of the text entering the image: the Ablating Concepts / "
                          "f-DMU default, smallest and safest.",
    "cross_attention": "Every weight of the text-to-image attention (ESD-x): stronger for styles and objects.",
    "attention": "Self- and cross-attention: Ablating Concepts' choice for nudity.",
    "full": "Every weight of the diffusion model: strongest, biggest, and most likely to disturb other concepts.",
    "lora": "A LoRA on every attention projection, the usual LoRA targets: small files to share.",
}


def select_parameters(names, preset: str, profile=None) -> list:
    """The names (in order) that a preset trains in a model family (default: Stable Diffusion 1.x, whose
    names diffusers' UNets share)."""
    from .families import SD1

    patterns = (profile or SD1).presets
    if preset not in patterns:
        raise ValueError(f"parameters preset '{preset}' is unknown; choose one of: {', '.join(patterns)}")
    pattern = re.compile(patterns[preset])
    return [name for name in names if pattern.search(name)]
