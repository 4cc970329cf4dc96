"""How long the UCE closed form takes on each family's full-size `text_input` weights: 100 concepts of 8 tokens
(800 target rows), 200 preserved rows, random weights of the real shapes (ComfyUI's own model classes, built on the
meta device for their shapes) and random rows of the real text width. Times the solve (uce_operator) and the deltas
with their recorded residuals (uce_deltas), what the Unlearn Model node runs after encoding the prompts; the best
of `--repeats` runs.

    python benchmarks/closed_form_speed.py [--device cuda] [--concepts 100] [--tokens 8] [--preserved 200]
"""
import argparse
import time

import torch
from common import device_name, load_comfyui, print_table, write_json
from erasure_sizes import CONFIG_NAMES, model_shapes

MODELS = [name for name in CONFIG_NAMES if not name.startswith("tiny_")]


def timed_edit(shapes: dict, targets: int, preserved: int, device: str, repeats: int) -> dict:
    from comfyui_unlearn.unlearning.closed_form.uce import EditRows, uce_deltas, uce_operator

    generator = torch.Generator().manual_seed(0)
    weights = {key: (torch.randn(shape, generator=generator) * 0.02).to(device, torch.float16)
               for key, shape in shapes.items()}
    width = next(iter(shapes.values()))[1]
    rows = [torch.randn(count, width, generator=generator, dtype=torch.float64) for count in (targets, targets, preserved)]
    rows = EditRows(rows[0], rows[0] + 0.3 * rows[1], rows[2])

    class Weights:
        base_weight = staticmethod(weights.__getitem__)

    best = {}
    for _ in range(repeats):
        started = time.perf_counter()
        operator = uce_operator(*rows, 30.0, 1.0)
        solved = time.perf_counter()
        deltas, _ = uce_deltas(Weights, list(weights), operator, rows)
        if device == "cuda":
            torch.cuda.synchronize()
        done = time.perf_counter()
        for name, seconds in (("solve_s", solved - started), ("deltas_s", done - solved), ("total_s", done - started)):
            best[name] = min(best.get(name, seconds), seconds)
    return {"weights": len(weights), "values": sum(d.numel() for d in deltas.values()), "width": width, **best}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concepts", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--preserved", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_comfyui(args.device)
    from comfyui_unlearn.unlearning import family_for, select_parameters

    targets, results = args.concepts * args.tokens, []
    for model in MODELS:
        shapes = model_shapes(model)
        keys = select_parameters(list(shapes), "text_input", family_for(CONFIG_NAMES[model]))
        timing = timed_edit({key: tuple(shapes[key]) for key in keys}, targets, args.preserved, args.device,
                            args.repeats)
        results.append({"model": model, "family": CONFIG_NAMES[model], "keys": keys[:2] + (["..."] if len(keys) > 2
                                                                                         else []), **timing})
        print(results[-1])
    print_table(["model", "text_input weights", "width", "changed values", "solve", "deltas and residuals", "total"],
                [[r["model"], r["weights"], r["width"], f"{r['values'] / 1e6:.1f} M", f"{r['solve_s']:.2f} s",
                  f"{r['deltas_s']:.2f} s", f"**{r['total_s']:.2f} s**"] for r in results])
    write_json(f"closed_form_speed_{args.device}.json", {
        "device": device_name(args.device), "torch_threads": torch.get_num_threads(), "target_rows": targets,
        "preserved_rows": args.preserved, "concepts": args.concepts, "tokens_per_concept": args.tokens,
        "results": results})


if __name__ == "__main__":
    main()
