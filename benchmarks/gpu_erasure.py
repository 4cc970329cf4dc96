"""Erasure cost on a GPU at real size: SD1.5 (512 px) and SDXL (1024) UNets with random weights.

Per model and training setting: seconds per step (median), a 500-step erasure's seconds, peak GPU
memory (max allocated), and the fraction of the GPU's bf16 matrix peak the steps reach (FLOPs of
one step counted by torch's FlopCounterMode, over the rate of a large bf16 matrix product measured
in the same run). Peak memory of plain sampling (CFG, batch 1) of the same model is the yardstick for
memory. Everything goes through the node's adapter (nodes/comfy_model.train_deltas).

    python benchmarks/gpu_erasure.py [--models sd15 sdxl] [--steps 30]
"""
import argparse
import statistics
import time

import torch
from common import clean_latents, device_name, load_comfyui, print_table, random_unet, synthetic_concepts, synthetic_pair, write_json

SIZES = {"sd15": 512, "sdxl": 1024}
SETTINGS = {  # name -> (weight dtype, ErasureConfig fields, compute in float32, gradient checkpointing)
    "default (fp16, loss scaling)": (torch.float16, {"loss_scaling": True}, False, "auto"),
    "frozen pass every step": (torch.float16, {"loss_scaling": True, "frozen_batch": 1}, False, "auto"),
    "checkpointing on": (torch.float16, {"loss_scaling": True}, False, "on"),
    "fp16 weights, bf16 autocast": (torch.float16, {"autocast_dtype": torch.bfloat16}, False, "auto"),
    "bf16 weights": (torch.bfloat16, {}, False, "auto"),
    "fp16 weights, fp32 compute": (torch.float16, {}, True, "auto"),
}
DEFAULT = "default (fp16, loss scaling)"


def matmul_peak_tflops():
    a, b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16), torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192 ** 3 * 20 / (time.perf_counter() - start) / 1e12


def erase(patchers, name, size, steps, setting, preset):
    """(step times, peak bytes, wall seconds) of one erasure run."""
    from comfyui_unlearn.nodes.comfy_model import train_deltas, trainable_keys
    from comfyui_unlearn.unlearning import SD1, ErasureConfig, resolve

    weights, fields, fp32_compute, checkpointing = SETTINGS[setting]
    model = patchers[weights].clone()
    if fp32_compute:
        model.set_model_compute_dtype(torch.float32)
    latents = clean_latents(name, size)
    fields = {"frozen_batch": SD1.frozen_batch(latents.shape), **fields}
    stamps = []
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train_deltas(model, synthetic_concepts(name, latents), [], trainable_keys(model, SD1, preset),
                 resolve(ErasureConfig(steps, 1e-5, **fields)),
                 lambda r: (torch.cuda.synchronize(), stamps.append(time.perf_counter())), checkpointing,
                 (8, 8.0) if preset == "lora" else None)
    wall = time.perf_counter() - start
    return [b - a for a, b in zip(stamps, stamps[1:])], torch.cuda.max_memory_allocated(), wall


def step_flops(patchers, name, size, setting, preset):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        erase(patchers, name, size, 1, setting, preset)
    return counter.get_total_flops()


def sampling_peak(patcher, name, size):
    import comfy.sample

    pair = synthetic_pair(name)
    latent = torch.zeros(1, 4, size // 8, size // 8)
    torch.cuda.reset_peak_memory_stats()
    comfy.sample.sample(patcher, torch.randn_like(latent), 4, 7.0, "euler", "normal", pair.target_cond,
                        pair.empty_cond, latent, disable_pbar=True, seed=0)
    return torch.cuda.max_memory_allocated()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["sd15", "sdxl"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--preset", default="cross_attention_kv", help="parameters preset (lora: rank 8)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--full-run", type=int, default=500, help="steps of the one real end-to-end run (sd15)")
    args = parser.parse_args()
    load_comfyui("cuda")
    peak = matmul_peak_tflops()
    rows, results = [], []
    for name in args.models:
        size = SIZES[name]
        patchers = {dtype: random_unet(name, dtype) for dtype in {SETTINGS[s][0] for s in args.settings}}
        sampling = sampling_peak(patchers[torch.float16], name, size)
        rows.append([name, "plain sampling (fp16, CFG, 4 steps)", "", "", f"{sampling / 2**30:.2f}", "1.00", ""])
        for setting in args.settings:
            times, peak_bytes, _ = erase(patchers, name, size, args.steps, setting, args.preset)
            step = statistics.median(times[2:])
            flops = step_flops(patchers, name, size, setting, args.preset)
            mfu = flops / step / 1e12 / peak
            results.append({"model": name, "px": size, "preset": args.preset, "setting": setting, "step_s": step,
                            "steps_500_s": 500 * step,
                            "peak_gib": peak_bytes / 2**30, "sampling_peak_gib": sampling / 2**30,
                            "tflop_per_step": flops / 1e12, "fraction_of_bf16_peak": mfu})
            rows.append([name, setting, f"{step:.3f}", f"{500 * step:.0f}", f"{peak_bytes / 2**30:.2f}",
                         f"{peak_bytes / sampling:.2f}", f"{mfu:.1%}"])
        if name == "sd15" and args.full_run:
            times, peak_bytes, wall = erase(patchers, name, size, args.full_run, DEFAULT, args.preset)
            results.append({"model": name, "px": size, "setting": f"end to end, {args.full_run} steps",
                            "wall_s": wall, "peak_gib": peak_bytes / 2**30})
            rows.append([name, f"end to end, {args.full_run} steps, default", f"{statistics.median(times):.3f}",
                         f"{wall:.0f} (measured)", f"{peak_bytes / 2**30:.2f}", f"{peak_bytes / sampling:.2f}", ""])
        del patchers
        torch.cuda.empty_cache()
    print(f"\ndevice: {device_name('cuda')}, torch {torch.__version__}, bf16 matmul peak {peak:.0f} TFLOP/s")
    print_table(["model", "setting", "s/step", "500 steps (s)", "peak GiB", "vs sampling", "of bf16 peak"], rows)
    write_json(f"gpu_erasure_{'_'.join(args.models)}_{args.preset}.json", {"device": device_name("cuda"), "bf16_matmul_tflops": peak, "cases": results})


if __name__ == "__main__":
    main()
