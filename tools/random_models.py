"""Models with real architectures and seeded random weights, for tests, demos and benchmarks.

The weights are shaped by ComfyUI's own model classes (built on the meta device) and detected by
ComfyUI's loaders as what they imitate:
- a tiny SD1.5 checkpoint under the original LDM key names: the UNet keeps SD1.5's 320 channels,
  8 heads and 768-dim cross-attention but has one level and no middle block; TAESD stands in for
  the KL VAE;
- a tiny SD2.x checkpoint on the same layout, with SD2's 1024-dim text, linear projections, 64-channel
  heads and OpenCLIP-H's text encoder;
- a tiny SDXL checkpoint: SDXL's transformer depths and conditioning at 320 channels on every level, no
  middle block, with CLIP-L and OpenCLIP-bigG's text encoders;
- full-size SD1.5, SD2.x and SDXL UNets (diffusion model only, for speed and memory benchmarks);
- a tiny SD3 MMDiT of depth 2, a tiny Flux.1 and a tiny Chroma (one double and one single block at the fixed 3072
  width), a tiny Qwen-Image (one block at its fixed 3072 width) and a tiny Wan 2.1 text-to-video (two blocks, 128
  wide), diffusion models only, and CLIP-L's text encoder on its own (what ComfyUI's CLIPLoader reads as SD3's text);
- a tiny Hunyuan-DiT, a family the pack does not train, for the error that says so.
Needs ComfyUI importable (tools/comfy_harness.import_comfyui does that).
"""
import dataclasses
import json
import math
from pathlib import Path

import torch

UNET_COMMON = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, use_spatial_transformer=True,
                   legacy=False)
TINY_SD15_UNET = dict(UNET_COMMON, num_res_blocks=[1], channel_mult=[1], transformer_depth=[1],
                      transformer_depth_output=[1, 1], transformer_depth_middle=-2, num_heads=8, context_dim=768,
                      use_linear_in_transformer=False)
# SD2.x: what ComfyUI's SD20 config pins (1024-dim text, linear projections, 64-channel heads), on the tiny layout.
TINY_SD2_UNET = dict(TINY_SD15_UNET, num_heads=-1, num_head_channels=64, context_dim=1024, use_linear_in_transformer=True)
# SDXL: what ComfyUI's SDXL config pins (320 channels, transformer depths 0, 0, 2, 2, 10, 10 over three levels of
# two blocks, 2048-dim text, the 2816-dim size and pooled-text vector), every level at 320 channels, no middle block,
# the decoder's attention only at the coarsest level (where SDXL has its ten-block stacks).
TINY_SDXL_UNET = dict(UNET_COMMON, num_res_blocks=[2, 2, 2], channel_mult=[1, 1, 1], num_classes="sequential",
                      adm_in_channels=2816, transformer_depth=[0, 0, 2, 2, 10, 10],
                      transformer_depth_output=[1, 1, 1, 0, 0, 0, 0, 0, 0], transformer_depth_middle=-2,
                      num_head_channels=64, context_dim=2048, use_linear_in_transformer=True)
SD15_UNET = dict(UNET_COMMON, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                 transformer_depth_middle=1, num_heads=8, context_dim=768, use_linear_in_transformer=False)
SD2_UNET = dict(SD15_UNET, num_heads=-1, num_head_channels=64, context_dim=1024, use_linear_in_transformer=True)
SDXL_UNET = dict(UNET_COMMON, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], num_classes="sequential",
                 adm_in_channels=2816, transformer_depth=[0, 0, 2, 2, 10, 10],
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10,
                 num_head_channels=64, context_dim=2048, use_linear_in_transformer=True)
# SD3: hidden width 64 per block of depth, 4096-wide text (CLIP-L and -G padded, or T5), a 2048-wide pooled vector.
TINY_MMDIT = dict(
    input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=2, adm_in_channels=2048,
    context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
    num_patches=256, pos_embed_max_size=16, pos_embed_scaling_factor=None,
)
# Flux.1 dev: ComfyUI fixes the width (3072, 24 heads) and the 4096-wide text; one block of each kind. The pooled
# vector is 2048 wide (Flux's is CLIP-L's 768), so that the SD3 text encoder's CLIP-L-only output can drive it: a
# T5-XXL (4.7 billion weights at a size ComfyUI fixes) is beyond a CPU test.
TINY_FLUX = dict(in_channels=16, out_channels=16, vec_in_dim=2048, context_in_dim=4096, hidden_size=3072,
                 mlp_ratio=4.0, num_heads=24, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000,
                 qkv_bias=True, guidance_embed=True, patch_size=2)
# Full size (diffusion models only, for speed and memory benchmarks): SD3.5 Large (38 joint blocks, 2432 wide, RMS
# q/k norms) and Flux.1 dev (19 double and 38 single blocks; CLIP-L's 768-wide pooled vector).
SD35_LARGE_MMDIT = dict(TINY_MMDIT, depth=38, qk_norm="rms", pos_embed_max_size=192, num_patches=36864,
                        context_embedder_config={"target": "torch.nn.Linear",
                                                 "params": {"in_features": 4096, "out_features": 2432}})
FLUX_DEV = dict(TINY_FLUX, vec_in_dim=768, depth=19, depth_single_blocks=38)
# Chroma: Flux's blocks without per-block modulation, and the modulation network whose size ComfyUI fixes (five
# 5120-wide layers); one block of each kind, or Chroma's 19 and 38.
TINY_CHROMA = dict(in_channels=64, out_channels=64, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
                   num_heads=24, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
                   qkv_bias=True, in_dim=64, out_dim=3072, hidden_dim=5120, n_layers=5)
CHROMA = dict(TINY_CHROMA, depth=19, depth_single_blocks=38)
# Qwen-Image: ComfyUI fixes the width (3072, 24 heads) and the 3584-wide text; one block, or Qwen-Image's 60.
TINY_QWEN_IMAGE = dict(in_channels=64, num_layers=1)
QWEN_IMAGE = dict(TINY_QWEN_IMAGE, num_layers=60)
# Wan 2.1 text-to-video: the width is read from the weights (heads of 128 channels), the 4096-wide text is fixed;
# one 128-wide head and two blocks, or Wan 2.1's 1.3B and 14B.
TINY_WAN = dict(model_type="t2v", dim=128, ffn_dim=256, num_heads=1, num_layers=2, in_dim=16, out_dim=16)
WAN_1_3B = dict(TINY_WAN, dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
WAN_14B = dict(TINY_WAN, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)


def _random_like(name, shape, generator):
    """Seeded init: norms 1, biases 0, embeddings N(0, 0.02), everything else N(0, 1 / fan_in)."""
    leaf = name.rsplit(".", 1)[-1]
    device = generator.device
    if leaf == "vae_scale":
        return torch.ones(shape, device=device)
    if leaf in ("bias", "vae_shift") or len(shape) == 0:
        return torch.zeros(shape, device=device)
    if "norm" in name and len(shape) == 1:
        return torch.ones(shape, device=device)
    if "embedding" in name:
        return torch.randn(shape, generator=generator, device=device) * 0.02
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return torch.randn(shape, generator=generator, device=device) / math.sqrt(fan_in)


def random_state_dict(parts, seed, dtype, device="cpu"):
    """{prefix + name: random tensor on the CPU} for {prefix: meta-device module}, drawn on `device` (a GPU draws
    the billions of weights of a full-size DiT in seconds; other draws than the CPU's)."""
    generator = torch.Generator(device).manual_seed(seed)
    return {prefix + name: _random_like(name, tuple(t.shape), generator).to("cpu", dtype)
            for prefix, module in parts.items() for name, t in sorted(module.state_dict().items())}


def _meta_module(module_class, config):
    """module_class with this config on the meta device: its weights' names and shapes, no memory."""
    import comfy.ops

    with torch.device("meta"):
        return module_class(**config, operations=comfy.ops.disable_weight_init)


def unet_module(config):
    """ComfyUI's UNetModel with this config (on the meta device)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return _meta_module(UNetModel, config)


def unet_state_dict(config, seed=0, dtype=torch.float16, device="cpu"):
    """A diffusion-model-only state dict of ComfyUI's UNetModel with this config."""
    return random_state_dict({"": unet_module(config)}, seed, dtype, device)


def _tiny_checkpoint(unet_config, text_encoders, seed, dtype):
    """A checkpoint in the original LDM key names: the UNet, ComfyUI's full text encoders of the family
    ({key prefix: config file}; their sizes are fixed by ComfyUI's config files), and TAESD as the VAE."""
    import comfy.clip_model
    import comfy.ops
    import comfy.taesd.taesd

    parts = {"model.diffusion_model.": unet_module(unet_config)}
    with torch.device("meta"):
        for prefix, config_path in text_encoders.items():
            parts[prefix] = comfy.clip_model.CLIPTextModel(json.loads(Path(config_path).read_text()), torch.float32,
                                                           "meta", comfy.ops.disable_weight_init)
        parts["first_stage_model."] = comfy.taesd.taesd.TAESD()   # last: the seeded draws keep their order
    return random_state_dict(parts, seed, dtype)


def _comfy_file(module, name):
    return Path(module.__file__).parent / name


def tiny_sd15_state_dict(seed=0, dtype=torch.float16):
    import comfy.clip_model

    return _tiny_checkpoint(TINY_SD15_UNET, {"cond_stage_model.transformer.": _comfy_file(
        comfy.clip_model, "sd1_clip_config.json")}, seed, dtype)


def tiny_sd2_state_dict(seed=0, dtype=torch.float16):
    """SD2.x: OpenCLIP-H's text encoder (24 layers, 1024 wide) in the Hugging Face names that ComfyUI's SD20
    config maps cond_stage_model.model.* onto."""
    import comfy.text_encoders.sd2_clip

    return _tiny_checkpoint(TINY_SD2_UNET, {"cond_stage_model.model.transformer.": _comfy_file(
        comfy.text_encoders.sd2_clip, "sd2_clip_config.json")}, seed, dtype)


def tiny_sdxl_state_dict(seed=0, dtype=torch.float16):
    """SDXL: CLIP-L and OpenCLIP-bigG's text encoders (Hugging Face names, where ComfyUI's SDXL config maps
    conditioner.embedders.0 and .1 from)."""
    import comfy.clip_model

    return _tiny_checkpoint(TINY_SDXL_UNET, {
        "conditioner.embedders.0.transformer.": _comfy_file(comfy.clip_model, "sd1_clip_config.json"),
        "conditioner.embedders.1.model.transformer.": _comfy_file(comfy.clip_model, "clip_config_bigg.json")}, seed, dtype)


def mmdit_module(config=TINY_MMDIT):
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    return _meta_module(MMDiT, config)


def mmdit_state_dict(config=TINY_MMDIT, seed=0, dtype=torch.float16, device="cpu"):
    return random_state_dict({"": mmdit_module(config)}, seed, dtype, device)


def _with_later_fields(params_class, config):
    """config with the fields that later ComfyUI releases added to Flux's and Chroma's parameter dataclasses
    without a default (0.8: txt_ids_dims, and Chroma's vec_in_dim), at the values ComfyUI's model detection gives
    Flux.1 and Chroma, where this release's dataclass has them."""
    declared = {field.name for field in dataclasses.fields(params_class)}
    later = {"txt_ids_dims": [], "vec_in_dim": None}
    return {**{k: v for k, v in later.items() if k in declared}, **config}


def flux_module(config=TINY_FLUX):
    from comfy.ldm.flux.model import Flux, FluxParams

    return _meta_module(Flux, _with_later_fields(FluxParams, config))


def flux_state_dict(config=TINY_FLUX, seed=0, dtype=torch.float16, device="cpu"):
    return random_state_dict({"": flux_module(config)}, seed, dtype, device)


def chroma_module(config=TINY_CHROMA):
    from comfy.ldm.chroma.model import Chroma, ChromaParams

    return _meta_module(Chroma, _with_later_fields(ChromaParams, config))


def chroma_state_dict(config=TINY_CHROMA, seed=0, dtype=torch.float16, device="cpu"):
    return random_state_dict({"": chroma_module(config)}, seed, dtype, device)


def qwen_image_module(config=TINY_QWEN_IMAGE):
    from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

    return _meta_module(QwenImageTransformer2DModel, config)


def qwen_image_state_dict(config=TINY_QWEN_IMAGE, seed=0, dtype=torch.float16, device="cpu"):
    return random_state_dict({"": qwen_image_module(config)}, seed, dtype, device)


def wan_module(config=TINY_WAN):
    from comfy.ldm.wan.model import WanModel

    return _meta_module(WanModel, config)


def wan_state_dict(config=TINY_WAN, seed=0, dtype=torch.float16, device="cpu"):
    return random_state_dict({"": wan_module(config)}, seed, dtype, device)


def tiny_hunyuan_dit_state_dict(seed=0, dtype=torch.float16):
    from comfy.ldm.hydit.models import HunYuanDiT

    return random_state_dict({"": _meta_module(HunYuanDiT, dict(depth=2, hidden_size=128))}, seed, dtype)


def clip_l_config(**changes):
    """CLIP-L's text-model config (ComfyUI's sd1_clip_config.json), with `changes`."""
    import comfy.clip_model

    return {**json.loads(_comfy_file(comfy.clip_model, "sd1_clip_config.json").read_text()), **changes}


def clip_text_state_dict(config=None, seed=0, dtype=torch.float16):
    """A CLIP text encoder of `config` (CLIP-L's by default) in the Hugging Face names that ComfyUI's CLIPLoader
    detects."""
    import comfy.clip_model
    import comfy.ops

    with torch.device("meta"):
        module = comfy.clip_model.CLIPTextModel(config or clip_l_config(), torch.float32, "meta",
                                                comfy.ops.disable_weight_init)
    return random_state_dict({"": module}, seed, dtype)


def write_tiny_sd15(path, seed=0):
    """The tiny SD1.5 checkpoint (about 275 MiB, float16), for models/checkpoints; byte-identical per seed."""
    return _write(tiny_sd15_state_dict(seed), path)


def write_tiny_sd2(path, seed=0):
    """The tiny SD2.x checkpoint (about 700 MiB, float16, most of it the text encoder), for models/checkpoints."""
    return _write(tiny_sd2_state_dict(seed), path)


def write_tiny_sdxl(path, seed=0):
    """The tiny SDXL checkpoint (about 1.8 GiB, float16, most of it the two text encoders), for models/checkpoints."""
    return _write(tiny_sdxl_state_dict(seed), path)


def write_tiny_sd3(path, seed=0):
    """The tiny SD3 diffusion model (about 3 MiB, float16), for models/diffusion_models."""
    return _write(mmdit_state_dict(seed=seed), path)


def write_tiny_flux(path, seed=0):
    """The tiny Flux.1 dev diffusion model (about 1 GiB, float16: Flux's width is fixed), for
    models/diffusion_models."""
    return _write(flux_state_dict(seed=seed), path)


def write_tiny_chroma(path, seed=0):
    """The tiny Chroma diffusion model (about 1.2 GiB, float16: its width and modulation network are fixed), for
    models/diffusion_models."""
    return _write(chroma_state_dict(seed=seed), path)


def write_tiny_qwen_image(path, seed=0):
    """The tiny Qwen-Image diffusion model (about 0.7 GiB, float16: its width is fixed), for models/diffusion_models."""
    return _write(qwen_image_state_dict(seed=seed), path)


def write_tiny_wan(path, seed=0):
    """The tiny Wan 2.1 text-to-video diffusion model (about 6 MiB, float16), for models/diffusion_models."""
    return _write(wan_state_dict(seed=seed), path)


def write_tiny_hunyuan_dit(path, seed=0):
    """A tiny Hunyuan-DiT diffusion model (about 80 MiB, float16), for models/diffusion_models."""
    return _write(tiny_hunyuan_dit_state_dict(seed), path)


def write_clip_l(path, seed=0):
    """CLIP-L's text encoder (about 235 MiB, float16), for models/text_encoders."""
    return _write(clip_text_state_dict(seed=seed), path)


def _write(state_dict, path):
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, str(path))
    return path
