"""Peak memory of an erasure, per `parameters` preset, relative to plain sampling of the same model.

On the CPU each case runs in its own process and the figure is the process's peak resident memory
(VmHWM, reset after the model is loaded, so it counts the model, Python and the run itself); on a
GPU it is torch's peak allocated memory. Sampling is what a KSampler does (CFG 7, batch 1); the
erasure trains with the node's defaults on wired latents (no anchor sampling).

    python benchmarks/erasure_memory.py                         # CPU: tiny SD1.5 at 256 px, SD1.5 at 128 px
    python benchmarks/erasure_memory.py --device cuda --models sd15 --size 512
"""
import argparse
import json
import subprocess
import sys

import torch
from common import (clean_latents, device_name, load_comfyui, print_table, random_unet, read_peak, reset_peak,
                    synthetic_concepts, synthetic_pair, write_json)

CASES = ["sampling", "cross_attention_kv", "cross_attention", "attention", "full"]
STEPS = 3


def run_case(case, name, size, device):
    if case == "sampling":
        import comfy.sample

        patcher = random_unet(name, dtype=torch.float16 if device == "cuda" else torch.float32)
        pair = synthetic_pair(name)
        latent = torch.zeros(1, 4, size // 8, size // 8)
        reset_peak(device)
        comfy.sample.sample(patcher, torch.randn_like(latent), STEPS, 7.0, "euler", "normal", pair.target_cond,
                            pair.empty_cond, latent, disable_pbar=True, seed=0)
    else:
        from comfyui_unlearn.nodes.comfy_model import train_deltas, trainable_keys, training_precision
        from comfyui_unlearn.unlearning import SD1, ErasureConfig, resolve

        patcher = random_unet(name, dtype=torch.float16 if device == "cuda" else torch.float32)
        reset_peak(device)
        train_deltas(patcher, synthetic_concepts(name, clean_latents(name, size)), [], trainable_keys(patcher, SD1, case),
                     resolve(ErasureConfig(STEPS, 1e-5, **training_precision(patcher))), None)
    return read_peak(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--case", help=argparse.SUPPRESS)   # one case in a child process (CPU)
    args = parser.parse_args()
    if args.case:
        load_comfyui(args.device)
        print(json.dumps({"peak": run_case(args.case, args.models[0], args.size, args.device)}))
        return
    plan = [(m, args.size) for m in args.models] if args.models else [("tiny_sd15", 256), ("sd15", 128)]
    if args.device == "cuda":
        load_comfyui("cuda")
    rows, results = [], []
    for name, size in plan:
        size = size or 512
        peaks = {}
        for case in CASES:
            if args.device == "cuda":
                peaks[case] = run_case(case, name, size, "cuda")
                torch.cuda.empty_cache()
            else:
                child = subprocess.run([sys.executable, __file__, "--case", case, "--models", name, "--size", str(size)],
                                       capture_output=True, text=True)
                if child.returncode != 0:   # killed for memory, typically: the full preset of a big model
                    results.append({"model": name, "px": size, "case": case, "failed": child.returncode})
                    rows.append([name, f"{size} px", case, f"did not run (exit {child.returncode})", ""])
                    continue
                peaks[case] = json.loads(child.stdout.strip().splitlines()[-1])["peak"]
            ratio = peaks[case] / peaks["sampling"]
            results.append({"model": name, "px": size, "case": case, "peak_bytes": peaks[case], "vs_sampling": ratio})
            rows.append([name, f"{size} px", case, f"{peaks[case] / 2**30:.2f}", f"{ratio:.2f}"])
    print(f"\ndevice: {device_name(args.device)}, torch {torch.__version__}; {STEPS} steps, batch 1")
    print_table(["model", "image", "run", "peak GiB", "vs sampling"], rows)
    write_json(f"erasure_memory_{args.device}.json", {"device": device_name(args.device), "cases": results})


if __name__ == "__main__":
    main()
