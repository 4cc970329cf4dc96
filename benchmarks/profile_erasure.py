"""Where an erasure step's time goes: torch.profiler over a few steps, top operators by self time;
or, with --python, cProfile: the Python functions by self time and each step's time split between
compiled operators and the Python that drives them (ComfyUI's modules, torch's Python, the pack).

    python benchmarks/profile_erasure.py --device cuda --model sd15 --size 512
    python benchmarks/profile_erasure.py --device cpu --model sd15 --size 64 --steps 12 --python
"""
import argparse
from collections import defaultdict

from common import clean_latents, device_name, load_comfyui, random_unet, synthetic_concepts, write_json


def python_split(stats, steps):
    """Seconds per step by where the self time was spent: compiled code (builtins and C methods, shown
    by cProfile as '~') or Python, by the package its file belongs to."""
    split = defaultdict(float)
    for (filename, _, _), (_, _, self_time, _, _) in stats.stats.items():
        if filename == "~":
            place = "torch operators and other compiled code"
        elif "/comfy/" in filename:
            place = "Python: ComfyUI (modules, weight casts, attention)"
        elif "/torch/" in filename:
            place = "Python: torch (nn.Module calls, autograd, optimiser)"
        else:
            place = "Python: the pack and the rest"
        split[place] += self_time / steps
    return dict(split)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="sd15")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--python", action="store_true", help="profile Python functions (cProfile) instead of operators")
    args = parser.parse_args()
    load_comfyui(args.device)
    from torch.profiler import ProfilerActivity, profile, schedule

    from comfyui_unlearn.nodes.comfy_model import train_deltas, trainable_keys, training_precision
    from comfyui_unlearn.unlearning import SD1, ErasureConfig, resolve

    patcher = random_unet(args.model)
    if args.python:
        import cProfile
        import pstats

        run = lambda steps: train_deltas(  # noqa: E731
            patcher, synthetic_concepts(args.model, clean_latents(args.model, args.size)), [],
            trainable_keys(patcher, SD1, "cross_attention_kv"), resolve(ErasureConfig(steps, 1e-5, **training_precision(patcher))), None)
        run(2)
        profiler = cProfile.Profile()
        profiler.runcall(run, args.steps)
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(30)
        split = python_split(stats, args.steps)
        for place, seconds in sorted(split.items(), key=lambda kv: -kv[1]):
            print(f"{seconds * 1000:9.1f} ms/step  {place}")
        write_json(f"profile_erasure_{args.device}_{args.model}_{args.size}.json", {
            "device": device_name(args.device), "model": args.model, "size": args.size, "steps": args.steps,
            "seconds_per_step_by_place": split})
        return
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities, schedule=schedule(wait=1, warmup=2, active=args.steps - 3)) as prof:
        train_deltas(patcher, synthetic_concepts(args.model, clean_latents(args.model, args.size)), [],
                     trainable_keys(patcher, SD1, "cross_attention_kv"),
                     resolve(ErasureConfig(args.steps, 1e-5, **training_precision(patcher))), lambda r: prof.step())
    sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main()
