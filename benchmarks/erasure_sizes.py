"""How big a saved erasure is, per `parameters` preset and LoRA rank, for SD1.5, SD2.x, SDXL, SD3.5 Large, Flux.1
dev, Chroma, Qwen-Image, Wan 2.1 1.3B and 14B, and the tiny test model.

Sizes are computed from the diffusion models' weight shapes (ComfyUI's own classes on the meta device) and
measured by writing the very files UnlearnSaveErasure writes (same keys, dtype and metadata layout),
filled with zeros: a file's size does not depend on the values.

    python benchmarks/erasure_sizes.py
"""
import math
import tempfile
from pathlib import Path

import torch
from common import load_comfyui, model_module, print_table, write_json

LORA_RANKS = (4, 8)
# Files of more values are not written (a 14B model's `attention` is 8 billion of them: more than this machine's
# memory); their size is the computed one, which the written files match to within their header's kilobytes.
MAX_WRITTEN_VALUES = 2 * 10**9
CONFIG_NAMES = {"sd15": "SD15", "sd2": "SD20", "sdxl": "SDXL", "sd35_large": "SD3", "flux_dev": "Flux",
                "chroma": "Chroma", "qwen_image": "QwenImage", "wan_1_3b": "WAN21_T2V", "wan_14b": "WAN21_T2V",
                "tiny_sd15": "SD15"}   # ComfyUI's model-config name of each benchmarks/common.MODELS model


def model_shapes(name):
    """{weight name: shape} of a benchmarks/common.MODELS model, built on the meta device."""
    return {f"diffusion_model.{name}": p.shape for name, p in model_module(name).named_parameters()}


def file_size(exported, dtype):
    from comfyui_unlearn.unlearning import lora_state_dict, write_erasure

    # Slices are saved under ComfyUI's names for them ("lora_transformer_..."); a stand-in name changes a file by bytes.
    names = {key: f"lora_transformer_slice_{i}" for i, key in enumerate(k for k in exported if isinstance(k, tuple))}
    with tempfile.TemporaryDirectory() as folder:
        path = write_erasure(Path(folder) / "erasure.safetensors", lora_state_dict(exported, dtype, names),
                             {"size": "probe"})
        return path.stat().st_size


def main():
    load_comfyui("cpu")
    from comfyui_unlearn.unlearning import family_for, select_parameters
    from comfyui_unlearn.unlearning.deltas import target_shape
    from comfyui_unlearn.unlearning.parameters import weight_name

    rows, results = [], []
    for model, config_name in CONFIG_NAMES.items():
        weights = model_shapes(model)
        cases = [(preset, None) for preset in ("cross_attention_kv", "cross_attention", "attention")]
        cases += [("lora", rank) for rank in LORA_RANKS]
        for preset, rank in cases:
            keys = select_parameters(list(weights), preset, family_for(config_name), weights)
            shapes = {k: target_shape(k, weights[weight_name(k)]) for k in keys}
            if rank is None:
                params = sum(math.prod(shapes[k]) for k in keys)
                exported = lambda: {k: torch.zeros(shapes[k]) for k in keys}  # noqa: E731
            else:
                params = sum(rank * (shapes[k][0] + shapes[k][1]) for k in keys)
                exported = lambda: {k: (torch.zeros(shapes[k][0], rank), torch.zeros(rank, shapes[k][1]),  # noqa: E731
                                        float(rank)) for k in keys}
            written = params <= MAX_WRITTEN_VALUES
            sizes = {name: file_size(exported(), dtype) if written else None
                     for name, dtype in (("float16", torch.float16), ("float32", torch.float32))}
            label = preset if rank is None else f"lora rank {rank}"
            results.append({"model": model, "parameters": label, "trained_values": params,
                            "computed_float16_bytes": 2 * params, "file_float16_bytes": sizes["float16"],
                            "file_float32_bytes": sizes["float32"]})
            rows.append([model, label, f"{params / 1e6:.2f} M", f"{2 * params / 1e6:.1f}",
                         *(f"{size / 1e6:.1f}" if written else "not written" for size in sizes.values())])
    print_table(["model", "parameters", "trained values", "computed MB (fp16)", "file MB (fp16)", "file MB (fp32)"], rows)
    write_json("erasure_sizes.json", {"cases": results})


if __name__ == "__main__":
    main()
