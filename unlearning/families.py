"""Model-family profiles: everything the pack assumes about a family of diffusion models, in one place.

A profile says which weights each parameters preset trains (by the family's own weight names), the
default training size, how the node samples its own training images (steps, and CFG against the
empty prompt), how many latent pixels one frozen pass may hold, and where ComfyUI's model config
states the width of the text the model takes (or the width its model class fixes). The latent's
channels and time axis come from the model itself (ComfyUI's `latent_format`). Supporting a family is
one `register_family` call; `family_for` looks one up by ComfyUI's model-config name.
"""
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Sampling:
    """How training images and trajectories are sampled on this family."""

    steps: int = 20
    cfg: float = 7.0                  # classifier-free guidance scale against the empty prompt


@dataclass(frozen=True)
class FusedParts:
    """Some of the equal row blocks of fused projection weights, each trained and saved as its own slice
    (ComfyUI's patch key (name, (0, start, rows))): the key and value rows of a fused qkv are parts (1, 2) of 3."""

    pattern: str                      # regex over the fused weights' names
    parts: tuple                      # which row blocks
    of: int = 3                       # how many equal row blocks the weight stacks

    def slices(self, name: str, shape: tuple[int, ...]) -> list[tuple[str, tuple[int, int, int]]]:
        rows = shape[0] // self.of
        return [(name, (0, part * rows, rows)) for part in self.parts]


@dataclass(frozen=True)
class FamilyProfile:
    name: str                         # shown to users, e.g. "Stable Diffusion 1.x"
    model_configs: tuple              # ComfyUI's model-config class names of the family (supported_models.py)
    presets: dict                     # parameters preset -> regex over the diffusion model's weight names (or FusedParts)
    resolution: int | tuple = 512     # default training image size in pixels: width = height, or (width, height)
    latent_downscale: int = 8         # pixels per latent pixel
    sampling: Sampling = field(default_factory=Sampling)
    frozen_pass_area: int = 8 * 64 * 64   # latent pixels per batched frozen pass (8 latents at 512 px)
    text_width_key: str = "context_dim"   # where ComfyUI's unet_config holds the text width it takes (dotted path)
    fixed_text_width: int | None = None   # the text width ComfyUI's model class fixes, where unet_config has none
    # The modules (paths in the diffusion model) that the text encoder's states pass through before the `text_input`
    # preset's weights read them, each applied where the model has it (Qwen-Image's txt_norm): a closed-form edit
    # solves over the rows those weights actually read.
    text_input_through: tuple = ()
    # The `text_input` weights that read the pooled text vector (ComfyUI's `y`, its first columns as wide as the
    # weight) rather than the token states: a closed form solves them apart, over one row per prompt.
    pooled_input: str | None = None
    # Whether the family's blocks add to tensors in place that autograd saved for the backward pass (Flux's residual
    # `x += ...`): training then copies such a tensor before it changes (torch's allow_mutation_on_saved_tensors).
    mutates_saved_tensors: bool = False

    def size(self, width: int = 0, height: int = 0) -> tuple:
        """(width, height) of training images in pixels: the given ones, each 0 replaced by the family's default."""
        default = self.resolution if isinstance(self.resolution, tuple) else (self.resolution, self.resolution)
        return width or default[0], height or default[1]

    def latent_size(self, width: int, height: int) -> tuple:
        """(height, width) of the latent for an image of width x height pixels."""
        return height // self.latent_downscale, width // self.latent_downscale

    def text_width(self, unet_config: dict) -> int | None:
        """The width of the text states a model of this family with ComfyUI's `unet_config` takes, or None."""
        value = unet_config
        for part in self.text_width_key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return self.fixed_text_width if value is None else value

    def frozen_batch(self, latent_shape: tuple[int, ...]) -> int:
        """Latents per frozen pass for latents of latent_shape (..., H, W): capped at 64."""
        return max(1, min(64, self.frozen_pass_area // (latent_shape[-1] * latent_shape[-2])))


# UNet names (ComfyUI's openaimodel and diffusers' UNet2DConditionModel alike): cross-attention is
# attn2 with to_q/to_k/to_v/to_out projections, self-attention attn1.
UNET_PRESETS = {
    "cross_attention_kv": r"\.attn2\.to_[kv]\.",
    "text_input": r"\.attn2\.to_[kv]\.weight$",
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

# MMDiT (SD3, SD3.5; ComfyUI's mmdit names): each joint block has a text stream (context_block) and an image stream
# (x_block, with a second self-attention attn2 on SD3.5 Medium) whose attentions run jointly over both streams' tokens;
# each stream's q, k and v are one fused qkv weight. The text enters the image through the text stream's keys and
# values: the k and v rows of context_block.attn.qkv. 16-channel latents, 1024 px, rectified flow; CFG against the
# empty prompt. Its text width sits in the context embedder's config. The one linear layer that reads the text
# encoder's joint states (CLIP-L and G zero-padded to 4096, then T5's tokens) is `context_embedder`: text_input.
# The pooled CLIP vectors enter through the first layer of another MLP, `y_embedder.mlp.0`: text_input too.
MMDIT_PRESETS = {
    "cross_attention_kv": FusedParts(r"\.context_block\.attn\.qkv\.weight$", (1, 2)),
    "text_input": r"(^|\.)(context_embedder|y_embedder\.mlp\.0)\.weight$",
    "cross_attention": r"\.context_block\.attn\.",
    "attention": r"\.attn2?\.",
    "full": r"",
    "lora": r"\.(context|x)_block\.attn2?\.(qkv|proj)\.weight$",
}
SD3 = FamilyProfile("Stable Diffusion 3 / 3.5", ("SD3",), MMDIT_PRESETS, resolution=1024, sampling=Sampling(28, 4.5),
                    text_width_key="context_embedder_config.params.in_features",
                    pooled_input=r"(^|\.)y_embedder\.mlp\.0\.weight$")

# Flux.1 (ComfyUI's flux names): double blocks with a text stream (txt_attn) and an image stream (img_attn), each with a
# fused qkv, then single blocks where text and image tokens share one weight that fuses q, k, v and the MLP's input
# (linear1) and one that fuses the attention output and the MLP's output (linear2). The text enters through the double
# blocks' text keys and values (rows 1 and 2 of txt_attn.qkv). The single blocks hold no text-only weight, so the text
# presets leave them; `full` and `lora` (like the usual Flux LoRAs, linear1 and linear2 whole) train them. Dev is
# guidance-distilled: its images are sampled with cfg 1 (no negative) and the guidance embedding's default 3.5;
# schnell in 4 steps. The one linear layer that reads T5's token states is `txt_in` (after `txt_norm` in the models
# whose config has one), and the pooled CLIP-L vector through `vector_in.in_layer`: text_input.
FLUX_PRESETS = {
    "cross_attention_kv": FusedParts(r"\.double_blocks\.\d+\.txt_attn\.qkv\.weight$", (1, 2)),
    "text_input": r"(^|\.)(txt_in|vector_in\.in_layer)\.weight$",
    "cross_attention": r"\.txt_attn\.",
    "attention": r"\.double_blocks\.\d+\.(img|txt)_attn\.",
    "full": r"",
    "lora": r"(\.double_blocks\.\d+\.(img|txt)_attn\.(qkv|proj)|\.single_blocks\.\d+\.linear[12])\.weight$",
}
FLUX_DEV = FamilyProfile("Flux.1 dev", ("Flux",), FLUX_PRESETS, resolution=1024, sampling=Sampling(20, 1.0),
                         text_width_key="context_in_dim", text_input_through=("txt_norm",),
                         pooled_input=r"(^|\.)vector_in\.in_layer\.weight$", mutates_saved_tensors=True)
FLUX_SCHNELL = replace(FLUX_DEV, name="Flux.1 schnell", model_configs=("FluxSchnell",), sampling=Sampling(4, 1.0))
# Chroma: Flux.1 schnell's blocks under the same names, its modulation computed by one shared network
# (distilled_guidance_layer, trained by `full` only), T5-XXL's text alone; not guidance-distilled: CFG against
# the empty prompt, 26 steps at CFG 4 as ComfyUI's Chroma examples sample.
CHROMA = replace(FLUX_DEV, name="Chroma", model_configs=("Chroma",), sampling=Sampling(26, 4.0))

# Qwen-Image (ComfyUI's qwen_image names, diffusers' own): MMDiT blocks whose text stream has its own unfused
# projections (attn.add_q_proj, add_k_proj, add_v_proj, to_add_out) beside the image stream's (to_q, to_k, to_v,
# to_out.0). The text enters the image through add_k_proj and add_v_proj. 16-channel latents with a time axis of one
# (Wan's VAE), 1328 px; CFG against the empty prompt, 20 steps at CFG 2.5 as ComfyUI's Qwen-Image template samples.
# ComfyUI's model class fixes its text width at Qwen2.5-VL 7B's 3584. The text enters the model through `txt_in`,
# which reads `txt_norm(states)` (an RMSNorm with a learned scale): text_input, solved over the normed rows.
QWEN_IMAGE_PRESETS = {
    "cross_attention_kv": r"\.attn\.add_[kv]_proj\.weight$",
    "text_input": r"(^|\.)txt_in\.weight$",
    "cross_attention": r"\.attn\.(add_[qkv]_proj|to_add_out|norm_added_[qk])\.",
    "attention": r"\.attn\.",
    "full": r"",
    "lora": r"\.attn\.(to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)\.weight$",
}
QWEN_IMAGE = FamilyProfile("Qwen-Image", ("QwenImage",), QWEN_IMAGE_PRESETS, resolution=1328,
                           sampling=Sampling(20, 2.5), fixed_text_width=3584, text_input_through=("txt_norm",))

# Wan 2.1 text-to-video (1.3B, 14B; Wan 2.2's 14B experts load as the same config): each block has a self-attention
# over the video's tokens and a true cross-attention (cross_attn.q/k/v/o) whose keys and values read the text after
# one shared MLP (text_embedding: Linear, GELU, Linear, applied to each token alone). text_input is that MLP's first
# layer, `text_embedding.0`: it reads the states themselves, and a token mapped onto another there is mapped onto it
# at every block's keys and values, for every step and frame; one 4096-wide weight where the blocks' keys and
# values are two per block (a far larger file). Training images are single frames (a time axis
# of one): the keys and values an erasure edits are the same for every frame of a video. 832 x 480 px (Wan's 480p),
# 30 steps at CFG 6 against the empty prompt, as ComfyUI's Wan examples sample; umT5-XXL's 4096-wide text (fixed by
# ComfyUI's model class).
WAN_PRESETS = {
    "cross_attention_kv": r"\.cross_attn\.[kv]\.weight$",
    "text_input": r"(^|\.)text_embedding\.0\.weight$",
    "cross_attention": r"\.cross_attn\.",
    "attention": r"\.(self|cross)_attn\.",
    "full": r"",
    "lora": r"\.(self|cross)_attn\.[qkvo]\.weight$",
}
WAN_T2V = FamilyProfile("Wan 2.1 / 2.2 text-to-video", ("WAN21_T2V",), WAN_PRESETS, resolution=(832, 480),
                        sampling=Sampling(30, 6.0), fixed_text_width=4096)

FAMILIES = {}


def register_family(profile: FamilyProfile) -> FamilyProfile:
    for config_name in profile.model_configs:
        FAMILIES[config_name] = profile
    return profile


register_family(SD1)
register_family(SD2)
register_family(SDXL)
register_family(SD3)
register_family(FLUX_DEV)
register_family(FLUX_SCHNELL)
register_family(CHROMA)
register_family(QWEN_IMAGE)
register_family(WAN_T2V)


def family_for(model_config: str) -> FamilyProfile:
    """The profile of a ComfyUI model-config name; ValueError naming the supported families otherwise."""
    try:
        return FAMILIES[model_config]
    except KeyError:
        supported = ", ".join(dict.fromkeys(p.name for p in FAMILIES.values()))
        raise ValueError(f"model is a {model_config} model, which this pack cannot train yet (supported: "
                         f"{supported}). Load a checkpoint of a supported family.") from None
