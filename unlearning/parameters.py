"""Which weights an erasure trains, by preset, matched on state-dict names.

The names are those of the diffusion model (ComfyUI's and diffusers' UNets both call cross-attention
`attn2` with `to_q/to_k/to_v/to_out` projections).
"""
import re

PARAMETER_PRESETS = {
    "cross_attention_kv": (
        r"\.attn2\.to_[kv]\.",
        "Cross-attention key/value projections (attn2.to_k, attn2.to_v): where the prompt enters the "
        "image; the Ablating Concepts / f-DMU default, smallest and safest.",
    ),
    "cross_attention": (
        r"\.attn2\.",
        "Every cross-attention weight (attn2.*), as ESD-x: stronger for styles and objects.",
    ),
    "attention": (
        r"attn",
        "Self- and cross-attention (attn1.*, attn2.*): Ablating Concepts' choice for nudity.",
    ),
    "full": (
        r"",
        "Every weight of the diffusion model: strongest, biggest, and most likely to disturb other concepts.",
    ),
    "lora": (
        r"\.attn[12]\.to_(q|k|v|out\.0)\.weight$",
        "A LoRA (rank `rank`) on every attention projection, the usual LoRA targets: small files to share.",
    ),
}


def select_parameters(names, preset: str) -> list:
    """The names (in order) that a preset trains."""
    if preset not in PARAMETER_PRESETS:
        raise ValueError(f"parameters preset '{preset}' is unknown; choose one of: {', '.join(PARAMETER_PRESETS)}")
    pattern = re.compile(PARAMETER_PRESETS[preset][0])
    return [name for name in names if pattern.search(name)]
