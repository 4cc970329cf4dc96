"""How long the UCE closed form takes on each family's full-size `text_input` weights: 100 concepts of 8 tokens
(800 target rows), 200 preserved rows, random weights of the real shapes (ComfyUI's own model classes, built on the
meta device for their shapes) and random rows of the real text width. Times the solve (uce_operator) and the deltas
with their recorded residuals (uce_deltas, uce_residuals), what the Unlearn Model node runs after encoding the prompts; the best
of `--repeats` runs, each model in a fresh process, and the memory the edit takes above what the weights already
hold (the process's peak resident set on a CPU, torch's peak allocation on a GPU). With several `--counts`, each
model at each number of concepts (closed_form_scaling_<device>.json). A family whose pooled text vector enters
through a weight of its own (SD3's y_embedder, Flux's vector_in) has that weight solved as UCE does, over one row
per prompt (100 target and 200 preserved rows).

    python benchmarks/closed_form_speed.py [--device cuda] [--counts 100] [--tokens 8] [--preserved 200]
    python benchmarks/closed_form_speed.py --counts 10 50 100 --models sd15 flux_dev      # how it scales
"""
import argparse
import concurrent.futures
import math
import multiprocessing
import re
import time

import torch
from common import device_name, load_comfyui, print_table, read_peak, reset_peak, write_json
from erasure_sizes import CONFIG_NAMES, model_shapes

MODELS = [name for name in CONFIG_NAMES if not name.startswith("tiny_")]


def timed_edit(spaces: list, preserved: int, device: str, repeats: int) -> dict:
    """Best times of the edit over `spaces`: (shapes of the weights that read the same rows, target rows) each."""
    generator = torch.Generator().manual_seed(0)
    edits = [random_edit(shapes, targets, preserved, device, generator) for shapes, targets in spaces]
    best = {"extra_memory_mib": 0.0}
    for _ in range(repeats):
        reset_peak(device)
        held = read_peak(device)
        solve, deltas = map(sum, zip(*(timed_solve(*edit, device) for edit in edits)))
        best["extra_memory_mib"] = max(best["extra_memory_mib"], (read_peak(device) - held) / 2 ** 20)
        for name, seconds in (("solve_s", solve), ("deltas_s", deltas), ("total_s", solve + deltas)):
            best[name] = min(best.get(name, seconds), seconds)
    return {"weights": sum(len(shapes) for shapes, _ in spaces),
            "values": sum(math.prod(shape) for shapes, _ in spaces for shape in shapes.values()),
            "width": spaces[0][0][next(iter(spaces[0][0]))][1], **best}


def timed_apart(*args) -> dict:
    """timed_edit in a fresh process, so that the memory it measures is its own: memory another edit freed stays in
    the process, and a later edit would reuse it unseen."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_timed_edit_with_the_pack, *args).result()


def _timed_edit_with_the_pack(*args) -> dict:
    from pack_import import import_pack

    import_pack()
    return timed_edit(*args)


def random_edit(shapes: dict, targets: int, preserved: int, device: str, generator: torch.Generator) -> tuple:
    """Random float16 weights of these shapes and random rows as wide as they read."""
    from comfyui_unlearn.unlearning.closed_form.uce import EditRows

    weights = {key: (torch.randn(shape, generator=generator) * 0.02).to(device, torch.float16)
               for key, shape in shapes.items()}
    width = next(iter(shapes.values()))[1]
    rows = [torch.randn(count, width, generator=generator, dtype=torch.float64)
            for count in (targets, targets, preserved)]
    return weights, EditRows(rows[0], rows[0] + 0.3 * rows[1], rows[2])


def timed_solve(weights: dict, rows, device: str) -> tuple[float, float]:
    """(solve, deltas and residuals) seconds of one UCE edit of `weights` over `rows`."""
    from comfyui_unlearn.unlearning.closed_form.uce import uce_deltas, uce_operator, uce_residuals

    class Weights:
        base_weight = staticmethod(weights.__getitem__)

    started = time.perf_counter()
    operator = uce_operator(*rows, 30.0, 1.0)
    solved = time.perf_counter()
    uce_deltas(Weights, list(weights), operator)
    uce_residuals(operator, rows)
    if device == "cuda":
        torch.cuda.synchronize()
    return solved - started, time.perf_counter() - solved


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--counts", type=int, nargs="+", default=[100], help="numbers of concepts (default 100)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--preserved", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_comfyui(args.device)
    from comfyui_unlearn.unlearning import family_for, select_parameters

    results = []
    for model in args.models:
        shapes = model_shapes(model)
        family = family_for(CONFIG_NAMES[model])
        keys = select_parameters(list(shapes), "text_input", family)
        pooled = [key for key in keys if family.pooled_input and re.search(family.pooled_input, key)]
        for concepts in args.counts:
            spaces = [({key: tuple(shapes[key]) for key in group}, rows) for group, rows in
                      (([key for key in keys if key not in pooled], concepts * args.tokens), (pooled, concepts))
                      if group]
            timing = timed_apart(spaces, args.preserved, args.device, args.repeats)
            results.append({"model": model, "family": CONFIG_NAMES[model], "concepts": concepts,
                            "target_rows": concepts * args.tokens,
                            "keys": keys[:2] + (["..."] if len(keys) > 2 else []), **timing})
            print(results[-1])
    print_table(["model", "concepts", "text_input weights", "width", "changed values", "solve", "deltas and residuals",
                 "total", "memory above the weights"],
                [[r["model"], r["concepts"], r["weights"], r["width"], f"{r['values'] / 1e6:.1f} M",
                  f"{r['solve_s']:.2f} s", f"{r['deltas_s']:.2f} s", f"**{r['total_s']:.2f} s**",
                  f"{r['extra_memory_mib']:.0f} MiB"] for r in results])
    name = "closed_form_speed" if args.counts == [100] else "closed_form_scaling"
    write_json(f"{name}_{args.device}.json", {
        "device": device_name(args.device), "torch_threads": torch.get_num_threads(), "preserved_rows": args.preserved,
        "tokens_per_concept": args.tokens, "results": results})


if __name__ == "__main__":
    main()
