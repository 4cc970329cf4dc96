"""Are the statistics that VDU's stop rule and constrained_forward_kl's constraint read trustworthy? Each is read
on the fixed bank the engine builds (the images to forget, noise levels stratified) for 20 bank seeds, at 16 and at
the engine's 64 draws, against the same statistic on 4,096 draws (the truth):

- the original model's mean forget error (the reference of VDU's plain error, `relative_error` 0);
- the forget-error ratio (each draw's error relative to the original model's at the same draw; 1 on the original
  model), on a model erased with the anchor objective (100 steps at 8e-4), where it is above 1.

    python benchmarks/fashion/bank_check.py      # about a minute on 2 CPU cores
"""
import json

import torch

import task
from common import RESULTS, markdown_table
from run import ANCHOR, ANCHOR_IMAGES, TARGET

from comfyui_unlearn.unlearning import Concept, ErasureConfig, WeightDeltas, erase, preset_shapes, resolve  # noqa: E402
from comfyui_unlearn.unlearning.engine import Toolbox  # noqa: E402
from comfyui_unlearn.unlearning.objectives import ForgetError  # noqa: E402

BANK_SEEDS = 20
SIZES = (16, 64)
TRUTH = 4096


def forget_errors(denoiser, deltas, concept, seed, size):
    """(the original model's mean forget error, the ratio of the model with deltas) on a bank of `size` draws."""
    tools = Toolbox(denoiser, deltas, None, ErasureConfig(frozen_batch=64), torch.Generator().manual_seed(seed),
                    concepts=[concept])
    error = ForgetError(tools, relative=True, bank_size=size)
    return error.mean_original.item(), error.measure(tools)


def main():
    torch.set_num_threads(2)
    encoder, unet = task.PromptEncoder(), task.load(task.build_unet(), task.BASE_MODEL)

    def cond(text):
        return tuple(t[:1] for t in encoder([text]))

    frozen = task.denoiser(unet)
    images = {c: task.sample(frozen, cond(task.prompt(c)), ANCHOR_IMAGES, task.stable_seed("images " + task.prompt(c)))
              for c in (TARGET, ANCHOR)}
    concept = Concept(cond(task.prompt(TARGET)), cond(task.prompt(ANCHOR)), images[ANCHOR], task.prompt(TARGET),
                      task.prompt(ANCHOR), empty=cond(""), forget_latents=images[TARGET])
    deltas = WeightDeltas(preset_shapes(unet, "cross_attention_kv"))
    denoiser = task.denoiser(unet, deltas)
    erase(denoiser, deltas, [concept], resolve(ErasureConfig(steps=100, learning_rate=8e-4)))

    truth = forget_errors(denoiser, deltas, concept, 10**6, TRUTH)
    rows, results = [], []
    for index, name in enumerate(("original model's mean forget error", "forget-error ratio, erased model")):
        for size in SIZES:
            relative = sorted(forget_errors(denoiser, deltas, concept, seed, size)[index] / truth[index]
                              for seed in range(BANK_SEEDS))
            results.append({"statistic": name, "draws": size, "truth": truth[index], "bank_over_truth": relative})
            rows.append([name, size, f"{truth[index]:.4f}", f"{relative[len(relative) // 2]:.3f}",
                         f"{relative[0]:.3f}-{relative[-1]:.3f}"])
    table = markdown_table(["statistic", "draws", f"truth ({TRUTH} draws)", "bank / truth: median",
                            f"range over {BANK_SEEDS} banks"], rows)
    print(table)
    (RESULTS / "fashion_bank_check.json").write_text(json.dumps({"bank_seeds": BANK_SEEDS, "truth_draws": TRUTH,
                                                                 "cases": results}, indent=1) + "\n")
    (RESULTS / "fashion_bank_check.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
