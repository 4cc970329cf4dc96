"""Are the statistics that the stop rule and the constraints read trustworthy? Each is read on the fixed bank the
engine builds (noise levels stratified) for a number of bank seeds, at 16 and at the engine's 64 draws, against the
same statistic on many draws (the truth). Each gives the original model's value (what the bound is stated relative
to) and a model erased with the anchor objective (100 steps at 8e-4) relative to it:

- VDU's stop rule and constrained_forward_kl: the mean forget error, and the forget-error ratio (each draw's error
  relative to the original model's at the same draw) on the images to forget;
- constrained_reverse_kl: the KL to the concept tilted towards itself, on the images to forget;
- constrained_likelihood: the concept evidence of the model's own samples. It samples a trajectory for every draw,
  so its truth is 1,024 draws and it is read on 10 banks, where the others take 4,096 and 20.

    python benchmarks/fashion/bank_check.py      # about 14 minutes on 2 CPU cores, 12 of them the likelihood's
"""
import json

import torch

import task
from common import RESULTS, markdown_table
from run import ANCHOR, ANCHOR_IMAGES, TARGET

from comfyui_unlearn.unlearning import Concept, ErasureConfig, WeightDeltas, erase, preset_shapes, resolve  # noqa: E402
from comfyui_unlearn.unlearning import Toolbox  # noqa: E402
from comfyui_unlearn.unlearning.objectives import ConstrainedLikelihood, ConstrainedReverseKL  # noqa: E402
from comfyui_unlearn.unlearning.objectives.statistics import ForgetError  # noqa: E402

SIZES = (16, 64)


class SizedToolbox(Toolbox):
    """The engine's toolbox for one concept, every bank `size` draws from generator seed `seed`."""

    def __init__(self, denoiser, deltas, concept, seed, size):
        super().__init__(denoiser, deltas, None, ErasureConfig(frozen_batch=64), torch.Generator().manual_seed(seed),
                         concepts=[concept])
        self.size = size

    def bank(self, images, size=None):
        return super().bank(images, self.size)


def forget_error(tools):
    error = ForgetError(tools, relative=True)
    return error.mean_original.item(), error.measure(tools)


def constraint(objective):
    """The objective's statistic for the original model and the model with deltas relative to it, as its constraint
    compares them."""
    def read(tools):
        started = objective()
        started.start(None, tools)
        return started.original, started.estimate / started.original
    return read


STATISTICS = (("forget error", forget_error, 4096, 20),      # name, statistic, draws of the truth, bank seeds
              ("reverse KL's separation", constraint(ConstrainedReverseKL), 4096, 20),
              ("likelihood's concept evidence", constraint(ConstrainedLikelihood), 1024, 10))


def main():
    torch.set_num_threads(2)
    encoder, unet = task.PromptEncoder(), task.load(task.build_unet(), task.BASE_MODEL)
    frozen = task.denoiser(unet)
    images = {c: task.sample(frozen, encoder.cond(task.prompt(c)), ANCHOR_IMAGES,
                             task.stable_seed("images " + task.prompt(c))) for c in (TARGET, ANCHOR)}
    concept = Concept(encoder.cond(task.prompt(TARGET)), encoder.cond(task.prompt(ANCHOR)), images[ANCHOR],
                      task.prompt(TARGET), task.prompt(ANCHOR), empty=encoder.cond(""), forget_latents=images[TARGET])
    deltas = WeightDeltas(preset_shapes(unet, "cross_attention_kv"))
    denoiser = task.denoiser(unet, deltas)
    erase(denoiser, deltas, [concept], resolve(ErasureConfig(steps=100, learning_rate=8e-4)))

    rows, results = [], []
    for name, statistic, truth_draws, bank_seeds in STATISTICS:
        truth = statistic(SizedToolbox(denoiser, deltas, concept, 10**6, truth_draws))
        banks = {size: [statistic(SizedToolbox(denoiser, deltas, concept, seed, size)) for seed in range(bank_seeds)]
                 for size in SIZES}
        for index, what in enumerate(("original model", "erased / original")):
            for size in SIZES:
                relative = sorted(values[index] / truth[index] for values in banks[size])
                results.append({"statistic": f"{name}: {what}", "draws": size, "truth_draws": truth_draws,
                                "truth": truth[index], "bank_over_truth": relative})
                rows.append([f"{name}: {what}", size, f"{truth[index]:.4g} ({truth_draws})",
                             f"{relative[len(relative) // 2]:.3f}", f"{relative[0]:.3f}-{relative[-1]:.3f} "
                                                                    f"({bank_seeds})"])
        print(markdown_table(["statistic", "draws", "truth", "median", "range"], rows[-4:]), flush=True)
    table = markdown_table(["statistic", "draws", "truth (draws)", "bank / truth: median", "range (banks)"], rows)
    print(table)
    (RESULTS / "fashion_bank_check.json").write_text(json.dumps({"cases": results}, indent=1) + "\n")
    (RESULTS / "fashion_bank_check.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
