"""Shared by the cost benchmarks: ComfyUI as a library, random-weight UNets, synthetic prompts.

The models are ComfyUI's own UNet classes with seeded random weights, loaded through ComfyUI's loader
into a ModelPatcher, and erased through the same adapter the Unlearn Model node uses
(nodes/comfy_model.train_deltas). Prompt conditioning is random (no text encoder is needed to time
or size an erasure).
"""
import json
import platform
import re
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tools"))
from pack_import import import_pack  # noqa: E402

import_pack()


def load_comfyui(device):
    """Import ComfyUI (COMFYUI_PATH, ~/ComfyUI, or a copy in .comfyui/ for the GPU machine)."""
    from comfy_harness import default_comfyui_path, import_comfyui

    path = default_comfyui_path()
    if path is None and (ROOT / ".comfyui" / "comfy" / "model_patcher.py").is_file():
        path = ROOT / ".comfyui"
    if path is None:
        sys.exit("ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout, or put one in ~/ComfyUI")
    import_comfyui(path, tempfile.mkdtemp(), cpu=(device == "cpu"))


MODELS = {  # name -> (random_models module function and config, latent channels, context dim, pooled dim or None,
    #          text tokens: CLIP's 77; SD3's CLIP and T5 77 each; T5 and umT5 padded to 512; a short Qwen-Image prompt)
    "tiny_sd15": ("unet_module", "TINY_SD15_UNET", 4, 768, None, 77),
    "sd15": ("unet_module", "SD15_UNET", 4, 768, None, 77),
    "tiny_sd2": ("unet_module", "TINY_SD2_UNET", 4, 1024, None, 77),
    "sd2": ("unet_module", "SD2_UNET", 4, 1024, None, 77),
    "sdxl": ("unet_module", "SDXL_UNET", 4, 2048, 1280, 77),
    "tiny_sdxl": ("unet_module", "TINY_SDXL_UNET", 4, 2048, 1280, 77),
    "tiny_sd3": ("mmdit_module", "TINY_MMDIT", 16, 4096, 2048, 154),
    "sd35_large": ("mmdit_module", "SD35_LARGE_MMDIT", 16, 4096, 2048, 154),
    "tiny_flux": ("flux_module", "TINY_FLUX", 16, 4096, 2048, 512),
    "flux_dev": ("flux_module", "FLUX_DEV", 16, 4096, 768, 512),
    "tiny_chroma": ("chroma_module", "TINY_CHROMA", 16, 4096, None, 512),
    "chroma": ("chroma_module", "CHROMA", 16, 4096, None, 512),
    "tiny_qwen_image": ("qwen_image_module", "TINY_QWEN_IMAGE", 16, 3584, None, 77),
    "qwen_image": ("qwen_image_module", "QWEN_IMAGE", 16, 3584, None, 77),
    "tiny_wan": ("wan_module", "TINY_WAN", 16, 4096, None, 512),
    "wan_1_3b": ("wan_module", "WAN_1_3B", 16, 4096, None, 512),
    "wan_14b": ("wan_module", "WAN_14B", 16, 4096, None, 512),
}


def reset_peak(device):
    """Start counting the peak memory from now: torch's peak allocation on a GPU, the process's resident set's
    high-water mark on a CPU (back to the current resident size)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")


def read_peak(device):
    """Bytes at the peak since reset_peak (right after it: the bytes held then)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def model_module(name):
    """The named diffusion model as ComfyUI's class builds it on the meta device (names and shapes, no memory)."""
    import random_models

    function, config = MODELS[name][:2]
    return getattr(random_models, function)(getattr(random_models, config))


def random_unet(name, dtype=torch.float16, seed=0, draw_on="cpu"):
    """A ComfyUI ModelPatcher for the named diffusion model with random weights stored in `dtype` (float8 too),
    drawn on the `draw_on` device and loaded like a real file."""
    import comfy.sd
    import random_models

    module = model_module(name)
    state_dict = random_models.random_state_dict({"": module}, seed=seed, dtype=dtype, device=draw_on)
    return comfy.sd.load_diffusion_model_state_dict(state_dict, model_options={"dtype": dtype})


def synthetic_pair(name, seed=0):
    """A ConceptPair whose CONDITIONINGs are random prompt embeddings of the model's shape."""
    from comfyui_unlearn.unlearning import ConceptPair

    _, _, _, context, pooled, tokens = MODELS[name]
    g = torch.Generator().manual_seed(seed)

    def cond():
        # CLIPTextEncode's conditioning always has the key (None from text encoders without a pooled vector).
        extra = {"pooled_output": None if pooled is None else torch.randn(1, pooled, generator=g)}
        return [[torch.randn(1, tokens, context, generator=g), extra]]

    return ConceptPair("target", "anchor", cond(), cond(), cond())


def synthetic_concepts(name, latents, seed=0):
    """One engine Concept (ComfyUI conditionings) of the synthetic pair, training on `latents`."""
    from comfyui_unlearn.unlearning import Concept

    pair = synthetic_pair(name, seed)
    return [Concept(pair.target_cond, pair.anchor_cond, latents, "target", "anchor", pair.empty_cond)]


def clean_latents(name, size, count=4, seed=0):
    return random_latents((MODELS[name][2], size // 8, size // 8), count, seed)


def random_latents(shape, count=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(count, *shape, generator=g)


def device_name(device):
    """The GPU's name, or the CPU's model with the widest vector instructions torch uses on it and the threads: CPU
    timings differ by those several times over (matrix products on an AVX-512 Xeon against an AVX2 EPYC)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else []
    model = names[0] if names else platform.processor() or platform.machine()
    return f"{model} CPU ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"


def write_json(name, payload):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path}")


def markdown_row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def stats(values):
    """The mean of `values` and their range: {"mean", "min", "max"} (a measure over seeds)."""
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def by_label(results):
    """{label: its runs}, the labels in the order they first come."""
    grouped = {}
    for result in results:
        grouped.setdefault(result["label"], []).append(result)
    return grouped


def markdown_table(header, rows):
    return "\n".join([markdown_row(header), "|" + "---|" * len(header)] + [markdown_row(row) for row in rows])


def print_table(header, rows):
    print(markdown_table(header, rows))
