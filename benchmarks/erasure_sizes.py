"""How big a saved erasure is, per `parameters` preset and LoRA rank, for SD1.5, SD2.x, SDXL and the tiny test model.

Sizes are computed from the UNets' weight shapes (ComfyUI's own classes on the meta device) and
measured by writing the very files UnlearnSaveErasure writes (same keys, dtype and metadata layout),
filled with zeros: a file's size does not depend on the values.

    python benchmarks/erasure_sizes.py
"""
import math
import tempfile
from pathlib import Path

import torch
from common import load_comfyui, print_table, write_json

LORA_RANKS = (4, 8)


def unet_shapes(config_name):
    import comfy.ops
    import random_models
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**getattr(random_models, config_name), operations=comfy.ops.disable_weight_init)
    return {f"diffusion_model.{name}": p.shape for name, p in unet.named_parameters()}


def file_size(exported, dtype):
    from comfyui_unlearn.unlearning import lora_state_dict, write_erasure

    with tempfile.TemporaryDirectory() as folder:
        path = write_erasure(Path(folder) / "erasure.safetensors", lora_state_dict(exported, dtype), {"size": "probe"})
        return path.stat().st_size


def main():
    load_comfyui("cpu")
    from comfyui_unlearn.unlearning import select_parameters

    rows, results = [], []
    for model, config in [("sd15", "SD15_UNET"), ("sd2", "SD2_UNET"), ("sdxl", "SDXL_UNET"), ("tiny_sd15", "TINY_SD15_UNET")]:
        shapes = unet_shapes(config)
        cases = [(preset, None) for preset in ("cross_attention_kv", "cross_attention", "attention")]
        cases += [("lora", rank) for rank in LORA_RANKS]
        for preset, rank in cases:
            keys = select_parameters(list(shapes), preset)
            if rank is None:
                exported = {k: torch.zeros(shapes[k]) for k in keys}
                params = sum(math.prod(shapes[k]) for k in keys)
            else:
                exported = {k: (torch.zeros(shapes[k][0], rank), torch.zeros(rank, shapes[k][1]), float(rank)) for k in keys}
                params = sum(rank * (shapes[k][0] + shapes[k][1]) for k in keys)
            sizes = {name: file_size(exported, dtype) for name, dtype in (("float16", torch.float16), ("float32", torch.float32))}
            label = preset if rank is None else f"lora rank {rank}"
            results.append({"model": model, "parameters": label, "trained_values": params,
                            "computed_float16_bytes": 2 * params, "file_float16_bytes": sizes["float16"],
                            "file_float32_bytes": sizes["float32"]})
            rows.append([model, label, f"{params / 1e6:.2f} M", f"{2 * params / 1e6:.1f}",
                         f"{sizes['float16'] / 1e6:.1f}", f"{sizes['float32'] / 1e6:.1f}"])
    print_table(["model", "parameters", "trained values", "computed MB (fp16)", "file MB (fp16)", "file MB (fp32)"], rows)
    write_json("erasure_sizes.json", {"cases": results})


if __name__ == "__main__":
    main()
