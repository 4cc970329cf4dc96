"""Model-family profiles: everything the pack assumes about a family of diffusion models, in one place.

A profile says which weights each parameters preset trains (by the family's own weight names), the
default training resolution, how the node samples its own training images (steps, and CFG against the
empty prompt), how many latent pixels one frozen pass may hold, and where ComfyUI's model config
states the width of the text the model takes. The latent channels come from the model itself (ComfyUI's `latent_format`). Supporting a
family is one `register_family` call; `family_for` looks one up by ComfyUI's model-config name.
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampling:
    """How training images and trajectories are sampled on this family."""

    steps: int = 20
    cfg: float = 7.0                  # classifier-free guidance scale against the empty prompt


@dataclass(frozen=True)
class FamilyProfile:
    name: str                         # shown to users, e.g. "Stable Diffusion 1.x"
    model_configs: tuple              # ComfyUI's model-config class names of the family (supported_models.py)
    presets: dict                     # parameters preset -> regex over the diffusion model's weight names
    resolution: int = 512             # default width and height of training images, in pixels
    latent_downscale: int = 8         # pixels per latent pixel
    sampling: Sampling = field(default_factory=Sampling)
    frozen_pass_area: int = 8 * 64 * 64   # latent pixels per batched frozen pass (8 latents at 512 px)
    text_width_key: str = "context_dim"   # the key of ComfyUI's unet_config holding the text width it takes

    def latent_size(self, width: int, height: int) -> tuple:
        """(height, width) of the latent for an image of width x height pixels."""
        return height // self.latent_downscale, width // self.latent_downscale

    def frozen_batch(self, latent_shape) -> int:
        """Latents per frozen pass for latents of latent_shape (..., H, W): capped at 64."""
        return max(1, min(64, self.frozen_pass_area // (latent_shape[-1] * latent_shape[-2])))


# UNet names (ComfyUI's openaimodel and diffusers' UNet2DConditionModel alike): cross-attention is
# attn2 with to_q/to_k/to_v/to_out projections, self-attention attn1.
UNET_PRESETS = {
    "cross_attention_kv": r"\.attn2\.to_[kv]\.",
    "cross_attention": r"\.attn2\.",
    "attention": r"attn",
    "full": r"",
    "lora": r"\.attn[12]\.to_(q|k|v|out\.0)\.weight$",
}

SD1 = FamilyProfile("Stable Diffusion 1.x", ("SD15",), UNET_PRESETS)
# SD2.x: the same UNet names; 1024-dim text (OpenCLIP-H), 768 px for the v-prediction 768-v models (ComfyUI
# reads epsilon or v from the checkpoint into model_sampling, which the engine follows either way).
SD2 = FamilyProfile("Stable Diffusion 2.x", ("SD20",), UNET_PRESETS, resolution=768)
# SDXL and the distilled SDXL UNets ComfyUI conditions the same way (SSD-1B, Vega, KOALA): the same UNet names,
# 2048-dim text (CLIP-L and OpenCLIP-bigG) with a pooled vector and the size embedding, which ComfyUI's extra_conds
# add; 1024 px.
SDXL = FamilyProfile("Stable Diffusion XL", ("SDXL", "SSD1B", "Segmind_Vega", "KOALA_700M", "KOALA_1B"), UNET_PRESETS,
                     resolution=1024)

FAMILIES = {}


def register_family(profile: FamilyProfile) -> FamilyProfile:
    for config_name in profile.model_configs:
        FAMILIES[config_name] = profile
    return profile


register_family(SD1)
register_family(SD2)
register_family(SDXL)


def family_for(model_config: str) -> FamilyProfile:
    """The profile of a ComfyUI model-config name; ValueError naming the supported families otherwise."""
    try:
        return FAMILIES[model_config]
    except KeyError:
        supported = ", ".join(sorted({p.name for p in FAMILIES.values()}))
        raise ValueError(f"model is a {model_config} model, which this pack cannot train yet (supported: "
                         f"{supported}). Load a checkpoint of a supported family.") from None
