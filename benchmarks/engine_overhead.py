"""Engine overhead: erasure steps through the pack's engine vs a bare hand-written torch loop.

Both loops compute the same loss (the MSE between the UNet's epsilon for the target prompt with
trainable cross-attention K/V deltas and its epsilon for the anchor prompt without them) on the same
module, with the same latents, noise and noise levels, and take the same Adam steps. The engine goes
the node's way (ComfyUI ModelPatcher, weight wrappers, apply_model, model_sampling); the bare loop
calls the UNet directly through torch.func.functional_call. Their final deltas must agree, which
proves they did the same work; the table gives the median step time of each and the ratio.

    python benchmarks/engine_overhead.py                      # CPU: tiny SD1.5 at 64 px, SD1.5 at 128 px
    python benchmarks/engine_overhead.py --device cuda --size 512
"""
import argparse
import statistics
import time

import torch
from common import clean_latents, device_name, load_comfyui, print_table, random_unet, synthetic_pair, write_json

LEARNING_RATE = 1e-4


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def engine_steps(patcher, pair, latents, steps, device, frozen_batch=8):
    from comfyui_unlearn.nodes.comfy_model import train_deltas, trainable_keys
    from comfyui_unlearn.unlearning import SD1, Concept, ErasureConfig, resolve

    times = []

    def timed(record):
        sync(device)
        times.append(time.perf_counter())

    times.append(time.perf_counter())
    keys = trainable_keys(patcher, SD1, "cross_attention_kv")
    concepts = [Concept(pair.target_cond, pair.anchor_cond, latents)]
    config = resolve(ErasureConfig(steps, LEARNING_RATE, frozen_batch=frozen_batch))
    deltas, _ = train_deltas(patcher, concepts, [], keys, config, timed)
    return deltas, [b - a for a, b in zip(times, times[1:])]


def bare_steps(patcher, pair, latents, steps, device):
    """The same erasure written by hand against the raw UNet module."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    unet = patcher.model.diffusion_model.requires_grad_(False)   # ComfyUI loads its weights with requires_grad=True
    sampling = patcher.model.model_sampling
    target, anchor = (c[0][0].to(device) for c in (pair.target_cond, pair.anchor_cond))
    weights = dict(unet.named_parameters())
    keys = [k for k in weights if ".attn2.to_k." in k or ".attn2.to_v." in k]
    deltas = {k: torch.zeros_like(weights[k], dtype=torch.float32, requires_grad=True) for k in keys}
    optimizer = torch.optim.Adam(deltas.values(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(0)
    times = [time.perf_counter()]
    for _ in range(steps):
        x0 = latents[torch.randint(len(latents), (1,), generator=generator)].to(device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        percent = 1 / 999 + (1 - 2 / 999) * torch.rand(1, generator=generator, dtype=torch.float64)
        sigma = torch.tensor([sampling.percent_to_sigma(float(percent))], device=device)
        x_t = x0 + noise * sigma
        x_in, t = x_t * (sigma ** 2 + 1).rsqrt(), sampling.timestep(sigma).float()
        with torch.no_grad():
            eps_anchor = unet(x_in, t, context=anchor)
        overrides = {k: weights[k] + d.to(weights[k].dtype) for k, d in deltas.items()}
        eps_target = torch.func.functional_call(unet, overrides, (x_in, t), {"context": target})
        loss = torch.nn.functional.mse_loss(eps_target.float(), eps_anchor.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(deltas.values()), 1.0)
        optimizer.step()
        sync(device)
        times.append(time.perf_counter())
    unet.requires_grad_(True)
    return {"diffusion_model." + k: d.detach().cpu() for k, d in deltas.items()}, [b - a for a, b in zip(times, times[1:])]


def relative_difference(a, b):
    num = sum((a[k] - b[k]).square().sum() for k in a)
    den = sum(b[k].square().sum() for k in a)
    return (num / den).sqrt().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=None, help="image size in px for the SD1.5 case (default 128 on CPU)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load_comfyui(args.device)
    cases = [("tiny_sd15", 64, args.steps or 30), ("sd15", args.size or 128, args.steps or 8)]
    rows, results = [], []
    for name, size, steps in cases:
        patcher = random_unet(name, dtype=torch.float32)
        pair, latents = synthetic_pair(name), clean_latents(name, size)
        engine_times, unbatched_times, bare_times = [], [], []
        for _ in range(args.repeats):   # interleaved, so drifts in machine load hit every loop alike
            engine_deltas, times = engine_steps(patcher, pair, latents, steps, args.device)
            engine_times += times[1:]   # the first step also loads and warms up
            _, times = engine_steps(patcher, pair, latents, steps, args.device, frozen_batch=1)
            unbatched_times += times[1:]
            bare_deltas, times = bare_steps(patcher, pair, latents, steps, args.device)
            bare_times += times[1:]
        engine, unbatched, bare = (statistics.median(t) for t in (engine_times, unbatched_times, bare_times))
        agreement = relative_difference(engine_deltas, bare_deltas)
        results.append({"model": name, "image_px": size, "steps": steps, "engine_step_s": engine,
                        "engine_frozen_pass_every_step_s": unbatched, "bare_step_s": bare, "ratio": engine / bare,
                        "ratio_frozen_pass_every_step": unbatched / bare, "deltas_relative_difference": agreement})
        rows.append([name, f"{size} px", steps, f"{engine * 1e3:.1f}", f"{unbatched * 1e3:.1f}", f"{bare * 1e3:.1f}",
                     f"{engine / bare:.3f}", f"{unbatched / bare:.3f}", f"{agreement:.1e}"])
        del patcher
    print(f"\ndevice: {device_name(args.device)}, torch {torch.__version__}")
    print_table(["model", "image", "steps", "engine ms/step", "engine, frozen pass every step", "bare ms/step",
                 "ratio", "ratio, frozen pass every step", "deltas rel. diff"], rows)
    write_json(f"engine_overhead_{args.device}.json", {"device": device_name(args.device), "cases": results})


if __name__ == "__main__":
    main()
