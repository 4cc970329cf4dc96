"""What an erasure costs per supported model family: seconds per step and peak memory at the family's
default resolution, through the node's adapter (nodes/comfy_model.train_deltas) with the node's defaults
(cross_attention_kv, the family's frozen batch; peak memory as benchmarks/erasure_memory.py reads it, from
after the model is loaded), on random-weight diffusion models that ComfyUI's loader detects as
the family (latents with a time axis of one for the families whose latents have one).

    python benchmarks/families.py --models tiny_sd15 tiny_sd2       # CPU: the tiny test models
    python benchmarks/families.py --models tiny_sdxl --size 512     # CPU: 1024 px does not fit 24 GB
    python benchmarks/families.py --models tiny_chroma tiny_qwen_image tiny_wan --size 256   # CPU: the other DiTs
    python benchmarks/families.py --device cuda --models sd15 sd2 sdxl   # GPU: full size
    python benchmarks/families.py --device cuda --models flux_dev --weights float8_e4m3fn --preset lora \
        --checkpointing on                                          # GPU: Flux.1 dev on a float8 base
"""
import argparse
import dataclasses
import statistics
import time

import torch
from common import (device_name, load_comfyui, print_table, random_latents, random_unet, read_peak, reset_peak,
                    synthetic_concepts, write_json)



def erase(patcher, name, steps, size=None, preset="cross_attention_kv", checkpointing="auto"):
    """(family profile, "width x height" px, seconds per step (median), peak bytes) of one erasure of `preset` at
    `size` x `size` px (None: the family's default size)."""
    from comfyui_unlearn.nodes.comfy_model import (latent_shape, model_family, train_deltas, trainable_keys,
                                                   training_precision)
    from comfyui_unlearn.unlearning import ErasureConfig, family_for, resolve

    family = family_for(model_family(patcher))
    width, height = family.size(size or 0, size or 0)
    latents = random_latents(latent_shape(patcher, family, width, height))
    config = ErasureConfig(steps, 1e-5, family=model_family(patcher), frozen_batch=family.frozen_batch(latents.shape),
                           **training_precision(patcher))
    stamps, device = [], patcher.load_device.type
    reset_peak(device)
    config = dataclasses.replace(config, parameters=preset)
    train_deltas(patcher, synthetic_concepts(name, latents), [], trainable_keys(patcher, family, preset),
                 resolve(config), lambda record: stamps.append(time.perf_counter()), checkpointing)
    step = statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))
    return family, f"{width} x {height}", step, read_peak(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=["tiny_sd15", "tiny_sd2"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--size", type=int, help="pixels (default: each family's resolution; the tiny SDXL at 1024 px "
                                                 "needs more than 24 GB of memory on a CPU)")
    parser.add_argument("--weights", help="weight dtype (default: float16 on cuda, float32 on cpu), e.g. bfloat16 or "
                                          "float8_e4m3fn (ComfyUI's UNETLoader weight_dtype)")
    parser.add_argument("--preset", nargs="+", default=["cross_attention_kv"])
    parser.add_argument("--checkpointing", default="auto", choices=["auto", "on", "off"])
    args = parser.parse_args()
    load_comfyui(args.device)
    default_weights = torch.float16 if args.device == "cuda" else torch.float32
    weights = getattr(torch, args.weights) if args.weights else default_weights
    rows, results = [], []
    for name in args.models:
        patcher = random_unet(name, dtype=weights, draw_on=args.device)
        for preset in args.preset:
            family, px, step, peak = erase(patcher, name, args.steps, args.size, preset, args.checkpointing)
            results.append({"model": name, "family": family.name, "px": px, "weights": str(weights), "preset": preset,
                            "checkpointing": args.checkpointing, "step_s": step, "steps_500_s": 500 * step,
                            "peak_bytes": peak})
            rows.append([name, family.name, px, str(weights).split(".")[-1], preset, args.checkpointing, f"{step:.2f}",
                         f"{500 * step / 60:.0f}", f"{peak / 2**30:.2f}"])
        del patcher
    print(f"\ndevice: {device_name(args.device)}, torch {torch.__version__}")
    print_table(["model", "family", "px", "weights", "preset", "checkpointing", "s/step", "500 steps (min)",
                 "peak GiB"], rows)
    suffix = f"_{'_'.join(args.models)}_{args.size}" if args.size else ""
    if args.weights or args.preset != ["cross_attention_kv"] or args.checkpointing != "auto":
        suffix += f"_{'_'.join(args.models)}_{args.weights or 'default'}_{'_'.join(args.preset)}_{args.checkpointing}"
    write_json(f"families_{args.device}{suffix}.json", {"device": device_name(args.device), "steps": args.steps, "cases": results})


if __name__ == "__main__":
    main()
