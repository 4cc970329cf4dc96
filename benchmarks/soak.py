"""Soak: twenty consecutive erasures of different concepts in one ComfyUI process (CPU), each followed
by sampling both branches and saving the erasure. Does the process grow, leak file handles or leave
temporary files, and does the loaded MODEL still sample exactly as at the start?

    python benchmarks/soak.py [--runs 20]

Runs the example workflow (workflows/api/erase_concept.json) through ComfyUI's own executor on the
tiny SD1.5-layout checkpoint at 64 px, as `tools/demo.sh` does, with a new concept and anchor each
run. Prints a row per run and writes benchmarks/results/soak_cpu.json.
"""
import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, print_table, write_json

from comfy_harness import default_comfyui_path, output_dir, start_comfyui
from random_models import write_tiny_sd15
from run_workflow import TINY, TINY_SETTINGS

CONCEPTS = [("Van Gogh", "a painting"), ("Snoopy", "a dog"), ("Grumpy Cat", "a cat"), ("Mickey Mouse", "a mouse"),
            ("the Eiffel Tower", "a tower"), ("Monet", "a painting"), ("Pikachu", "a creature"),
            ("a Ferrari", "a car"), ("Picasso", "a painting"), ("Darth Vader", "a man"), ("Hello Kitty", "a cat"),
            ("a Tesla", "a car"), ("Big Ben", "a clock tower"), ("Garfield", "a cat"), ("Batman", "a man"),
            ("Hokusai", "a print"), ("Mario", "a plumber"), ("the Mona Lisa", "a portrait"),
            ("a Labrador", "a dog"), ("Frida Kahlo", "a woman")]


def resident_bytes():
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def open_files():
    return len(os.listdir("/proc/self/fd"))


def stray_files(*folders):
    """Temporary files left behind: ComfyUI's temp folder and partial erasure files."""
    return sorted(str(p) for folder in folders for p in Path(folder).rglob("*")
                  if p.is_file() and (p.suffix == ".tmp" or "temp" in p.parts))


def workflow(index, concept, anchor):
    graph = json.loads((ROOT / "workflows" / "api" / "erase_concept.json").read_text())
    for key, value in {**TINY_SETTINGS, "1.ckpt_name": TINY}.items():
        node, _, field = key.partition(".")
        graph[node]["inputs"][field] = value
    graph["2"]["inputs"].update(target=concept, anchor=anchor, preserve="")
    graph["3"]["inputs"]["seed"] = index
    graph["13"]["inputs"]["filename_prefix"] = f"soak/{index:02d}"
    graph["20"] = {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "soak/original"}}
    return graph


def untouched_latent(result):
    from safetensors.torch import load_file

    entry = result.outputs["20"]["latents"][0]
    return load_file(str(output_dir() / entry["subfolder"] / entry["filename"]))["latent_tensor"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=len(CONCEPTS))
    args = parser.parse_args()
    comfyui = default_comfyui_path() or sys.exit("ComfyUI not found: set COMFYUI_PATH or put a checkout in ~/ComfyUI")
    base = Path(tempfile.mkdtemp(prefix="unlearn-soak-"))
    runner = start_comfyui(comfyui, base)
    write_tiny_sd15(base / "models" / "checkpoints" / TINY)
    rows, first_latent = [], None
    for index in range(args.runs):
        concept, anchor = CONCEPTS[index % len(CONCEPTS)]
        started = time.perf_counter()
        result = runner.run(workflow(index, concept, anchor))
        if not result.success:
            sys.exit(f"run {index + 1} failed: {result.error}")
        gc.collect()
        untouched = untouched_latent(result)
        first_latent = untouched if first_latent is None else first_latent
        rows.append({"run": index + 1, "concept": concept, "seconds": time.perf_counter() - started,
                     "resident_bytes": resident_bytes(), "open_files": open_files(),
                     "untouched_branch_as_at_first": bool((untouched == first_latent).all())})
        print(f"run {index + 1:2d} {concept:18s} {rows[-1]['seconds']:5.1f} s  {rows[-1]['resident_bytes'] / 2**20:7.1f} MiB  "
              f"{rows[-1]['open_files']} open files", flush=True)
    second, last = rows[min(1, len(rows) - 1)], rows[-1]
    summary = {
        "runs": len(rows),
        "resident_growth_second_to_last": last["resident_bytes"] / second["resident_bytes"] - 1,
        "open_files_second_to_last": [second["open_files"], last["open_files"]],
        "stray_files": stray_files(base / "temp", base / "models" / "loras"),
        "untouched_branch_bit_identical_throughout": all(r["untouched_branch_as_at_first"] for r in rows),
    }
    print_table(["run", "concept", "s", "resident MiB", "open files", "untouched branch as at first"],
                [[r["run"], r["concept"], f"{r['seconds']:.1f}", f"{r['resident_bytes'] / 2**20:.1f}", r["open_files"],
                  r["untouched_branch_as_at_first"]] for r in rows])
    print(json.dumps(summary, indent=1))
    write_json("soak_cpu.json", {"summary": summary, "runs": rows})
    shutil.rmtree(base)


if __name__ == "__main__":
    main()
