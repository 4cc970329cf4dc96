"""Run the example erasure workflow headless through ComfyUI's own executor.

    python tools/run_workflow.py                               # tiny built-in SD1.5 model, CPU, ~1 min
    python tools/run_workflow.py --checkpoint ~/models/v1-5-pruned-emaonly.safetensors --gpu
    python tools/run_workflow.py --set 3.divergence=kl --set 3.steps=100

Without --checkpoint it builds a tiny SD1.5-layout model with random weights (its images are noise,
but the whole graph runs) and shrinks the workflow to 64 px. Images land in <output>/output/unlearn/.
"""
import argparse
import json
import sys
from pathlib import Path

from comfy_harness import default_comfyui_path, output_dir, start_comfyui
from pack_import import PACK_ROOT

TINY = "tiny_sd15.safetensors"
TINY_SETTINGS = {  # what keeps the tiny default to about a minute on a laptop CPU
    "6.width": 64, "6.height": 64, "7.steps": 8, "8.steps": 8,
    "3.steps": 30, "3.learning_rate": 1e-4, "14.width": 64, "14.height": 64, "14.sampling_steps": 8,
}


def parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="an SD1.x checkpoint (.safetensors); default: a tiny random one")
    parser.add_argument("--workflow", type=Path, default=PACK_ROOT / "workflows" / "api" / "erase_concept.json")
    parser.add_argument("--base", type=Path, default=Path("unlearn-run"),
                        help="ComfyUI base directory for models, custom_nodes and output (default: ./unlearn-run)")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: CPU)")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="override a node input of the API workflow, e.g. 3.steps=100")
    args = parser.parse_args(argv)

    comfyui = default_comfyui_path()
    if comfyui is None:
        sys.exit("ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout, or put one in ~/ComfyUI")
    base = args.base.resolve()
    runner = start_comfyui(comfyui, base, cpu=not args.gpu)

    checkpoints = base / "models" / "checkpoints"
    overrides = {}
    if args.checkpoint is None:
        from random_models import write_tiny_sd15

        if not (checkpoints / TINY).exists():
            write_tiny_sd15(checkpoints / TINY)
        name = TINY
        overrides.update(TINY_SETTINGS)
    else:
        checkpoints.mkdir(parents=True, exist_ok=True)
        name = args.checkpoint.name
        if not (checkpoints / name).exists():
            (checkpoints / name).symlink_to(args.checkpoint.resolve())
    overrides["1.ckpt_name"] = name
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = parse_value(value)

    graph = json.loads(args.workflow.read_text())
    for key, value in overrides.items():
        node, _, field = key.partition(".")
        graph[node]["inputs"][field] = value
    result = runner.run(graph)
    if not result.success:
        sys.exit(f"the workflow failed: {result.error or 'interrupted'}")
    for node_id, output in sorted(result.outputs.items()):
        for image in output.get("images", []):
            print(f"{graph[node_id]['_meta']['title']}: {output_dir() / image['subfolder'] / image['filename']}")


if __name__ == "__main__":
    main()
