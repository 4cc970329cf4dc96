"""Many concepts in one erasure: 10, 50 and 100 phrases of five classes erased at once from the committed base
model, by the UCE closed form (the recommended setting) and by a training objective (`anchor` with kl, as the
iterative setting without its neighbourhood). Is each erased class gone, how far do the kept ones drift, and what
does the erasure cost as the count grows?

The erased classes are t-shirt, pullover, coat, shirt and bag; the kept ones trouser, dress, sandal, sneaker and
ankle boot. The concepts are the erased classes' names (four each) in the five training sentence frames, 100 in
all, taken frame by frame so that every count covers every erased class alike (10: "a photo of a ..." with the
first two names of each). Each maps onto the empty prompt; one UCE row also lists the kept classes' canonical
names ("a trouser", ...) as prompts to preserve, as a user who names what to keep would. Every class is judged on
its four names in the held-out frame ("a grayscale snapshot of a ..."), which no erasure edits or trains on: for an
erased class the share of
samples the classifier still calls that class, for a kept class its accuracy and its change from the original
model's on the same noise. Mean of `--seeds` seeds (each erases with its seed and draws every sample from seeds
shifted by it), with the spread; seconds and peak memory of the erasure itself. Time and memory on full-size
shapes: `benchmarks/closed_form_speed.py --counts 10 50 100`.

    python benchmarks/fashion/many_concepts.py [--seeds 3] [--counts 10 50 100]
"""
import argparse
import json
from dataclasses import replace
from types import SimpleNamespace

import torch

import task
from common import RESULTS, markdown_table, stats
from run import ANCHOR_IMAGES, ITERATIVE, MODELS, RECOMMENDED, run_erasure

from comfyui_unlearn.unlearning import Concept, ErasureConfig  # noqa: E402

ERASED, KEPT = (0, 2, 4, 6, 8), (1, 3, 5, 7, 9)
SAMPLES = 8             # per judged prompt: 32 per class, 160 per five classes
# label -> (configuration, whether the kept classes' names are listed as prompts to preserve)
SETTINGS = {"uce (recommended)": (RECOMMENDED, False),
            "uce (recommended), kept classes preserved": (RECOMMENDED, True),
            "anchor kl, 600 steps": (replace(ErasureConfig(), learning_rate=ITERATIVE.learning_rate,
                                             steps=ITERATIVE.steps), False)}


def erased_phrases() -> list[str]:
    """The 100 concepts, frame by frame, then name by name, then class by class."""
    return [template.format(task.CLASSES[c][name]) for template in task.TRAIN_TEMPLATES for name in range(4)
            for c in ERASED]


def judged_prompts() -> dict[int, list[str]]:
    """{class: its four names in the held-out frame}."""
    return {c: [task.HELD_OUT_TEMPLATE.format(name) for name in names] for c, names in enumerate(task.CLASSES)}


class Setup:
    """The base model, the judge and the prompts' conditionings, at one seed shift."""

    def __init__(self, shift: int):
        task.SEED_SHIFT = shift
        self.encoder, self.spec = task.PromptEncoder(), MODELS["unet"]()
        self.module = self.spec.load()
        self.classifier = task.load(task.Classifier(), task.CLASSIFIER)
        self.empty = self.cond("")
        self.anchor_images = task.sample(self.spec.denoiser(self.module), self.empty, ANCHOR_IMAGES,
                                         task.stable_seed("images of the empty prompt"))

    def cond(self, text):
        return self.encoder.cond(text)

    def rates(self, denoiser) -> dict[int, float]:
        """{class: the share of its held-out prompts' samples the classifier calls that class}."""
        return {c: torch.cat([self.classifier(task.sample(denoiser, self.cond(text), SAMPLES, task.stable_seed(text)))
                              .argmax(1) for text in texts]).eq(c).float().mean().item()
                for c, texts in judged_prompts().items()}

    def erase(self, config: ErasureConfig, count: int, preserved: bool) -> dict:
        concepts = [Concept(self.cond(text), self.empty, self.anchor_images, text, "", empty=self.empty)
                    for text in erased_phrases()[:count]]
        kept = [self.cond(task.prompt(c, template="a {}")) for c in KEPT] if preserved else []
        denoiser, _, seconds, memory = run_erasure(SimpleNamespace(module=self.module, spec=self.spec), concepts, kept,
                                                   [config])
        return {"rates": self.rates(denoiser), "seconds": seconds, "peak_memory_bytes": memory}


def summary(rows: list[dict], original: dict[int, dict[int, float]]) -> dict:
    """Per row: the erased classes' mean rate, the kept classes' mean and worst change from the original."""
    erased = [sum(r["rates"][c] for c in ERASED) / len(ERASED) for r in rows]
    kept = [sum(r["rates"][c] - original[r["seed"]][c] for c in KEPT) / len(KEPT) for r in rows]
    worst = [min(r["rates"][c] - original[r["seed"]][c] for c in KEPT) for r in rows]
    return {"erased_rate": stats(erased), "kept_change": stats(kept), "kept_worst_change": stats(worst),
            "seconds": stats([r["seconds"] for r in rows]),
            "peak_memory_mib": stats([r["peak_memory_bytes"] / 2 ** 20 for r in rows])}


def cache_prompts(judged: set) -> None:
    """Encode every prompt this benchmark reads into the committed cache, so that later runs need no MiniLM."""
    encoder = task.PromptEncoder()
    texts = [*erased_phrases(), *sorted(judged), *(task.prompt(c, template="a {}") for c in KEPT), ""]
    if any(f"{text}|states" not in encoder.cache for text in texts):
        encoder(texts)
        encoder.save()


def erase_all(seeds: int, counts: list[int]) -> tuple[dict, list[dict]]:
    """({seed: the original model's rates}, a row per setting, count and seed)."""
    original, rows = {}, []
    for seed in range(seeds):
        setup = Setup(seed)
        original[seed] = setup.rates(setup.spec.denoiser(setup.module))
        for label, (config, preserved) in SETTINGS.items():
            for count in counts:
                rows.append({"label": label, "count": count, "seed": seed,
                             **setup.erase(replace(config, seed=seed, family="SD15"), count, preserved)})
                print(label, count, seed, {task.CLASSES[c][0]: round(v, 3) for c, v in rows[-1]["rates"].items()},
                      f"{rows[-1]['seconds']:.1f} s")
    return original, rows


def markdown(results: list[dict], original: dict) -> str:
    """The table: the original model's rates, then each setting and count with the seeds' range."""
    rates = {c: sum(o[c] for o in original.values()) / len(original) for c in range(len(task.CLASSES))}

    def cell(spread, scale=100, unit="%", digits=0):
        return (f"{spread['mean'] * scale:.{digits}f}{unit} "
                f"({spread['min'] * scale:.{digits}f} to {spread['max'] * scale:.{digits}f})")

    first = ["original model", "", f"{100 * sum(rates[c] for c in ERASED) / len(ERASED):.0f}%",
             f"{100 * sum(rates[c] for c in KEPT) / len(KEPT):.0f}% (accuracy)", "", "", ""]
    rows = [[r["label"], r["count"], cell(r["erased_rate"]), cell(r["kept_change"], unit=" pts"),
             cell(r["kept_worst_change"], unit=" pts"), cell(r["seconds"], 1, "", 1),
             f"{r['peak_memory_mib']['mean']:.0f}"] for r in results]
    return markdown_table(["setting", "concepts", "erased classes kept (held-out frame)", "kept classes: mean change",
                           "kept classes: worst change", "erasure s", "peak MiB"], [first] + rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 50, 100])
    args = parser.parse_args()
    if max(args.counts) > len(erased_phrases()):
        raise SystemExit(f"--counts: at most {len(erased_phrases())} concepts (the erased classes' phrases)")
    judged = {text for texts in judged_prompts().values() for text in texts}
    assert not judged & set(erased_phrases()), "a judged prompt is in the edit set"
    torch.set_num_threads(2)
    cache_prompts(judged)
    original, rows = erase_all(args.seeds, args.counts)
    results = [{"label": label, "count": count,
                **summary([r for r in rows if (r["label"], r["count"]) == (label, count)], original)}
               for label in SETTINGS for count in args.counts]
    table = markdown(results, original)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fashion_many_concepts.md").write_text(table + "\n")
    (RESULTS / "fashion_many_concepts.json").write_text(json.dumps({
        "erased_classes": [task.CLASSES[c][0] for c in ERASED], "kept_classes": [task.CLASSES[c][0] for c in KEPT],
        "samples_per_prompt": SAMPLES, "seeds": args.seeds, "judged": judged_prompts(),
        "concepts": erased_phrases()[:max(args.counts)], "original_rates": original, "results": results,
        "runs": rows}, indent=1) + "\n")
    plot(results, RESULTS / "fashion_many_concepts.png")


COLOURS = ("#d62728", "#ff7f0e", "#1f77b4")


def plot(results: list[dict], path):
    """Two panels against the number of concepts: the erased classes' rate and the kept classes' mean change, a line
    per setting (mean) with bars over the seeds' range."""
    from PIL import Image, ImageDraw

    width, height, left, top = 400, 260, 48, 24
    inner_w, inner_h = width - left - 20, height - top - 40
    canvas = Image.new("RGB", (2 * width, height + 18 * (len(SETTINGS) + 1)), "white")
    draw = ImageDraw.Draw(canvas)
    counts = sorted({r["count"] for r in results})
    panels = (("erased_rate", "erased classes kept (held-out frame)", 0.0, 1.0),
              ("kept_change", "kept classes: mean change", -0.5, 0.1))
    for panel, (key, title, low, high) in enumerate(panels):
        x0 = panel * width + left

        def xy(count, value):
            at = counts.index(count) / max(len(counts) - 1, 1)
            return x0 + 20 + (inner_w - 40) * at, top + inner_h * (high - value) / (high - low)

        for colour, label in zip(COLOURS, SETTINGS):
            rows = [r for r in results if r["label"] == label]
            draw.line([xy(r["count"], r[key]["mean"]) for r in rows], fill=colour, width=2)
            for r in rows:
                x, _ = xy(r["count"], 0)
                draw.line([(x, xy(r["count"], r[key]["min"])[1]),
                           (x, xy(r["count"], r[key]["max"])[1])], fill=colour, width=1)
        draw.rectangle([x0, top, x0 + inner_w, top + inner_h], outline="black")
        draw.text((x0, 5), title, fill="black")
        for value in (low, (low + high) / 2, high):
            draw.text((x0 - 40, xy(counts[0], value)[1] - 6), f"{value:+.0%}" if low < 0 else f"{value:.0%}",
                      fill="black")
        for count in counts:
            draw.text((xy(count, low)[0] - 8, top + inner_h + 4), str(count), fill="black")
        draw.text((x0 + inner_w // 2 - 60, top + inner_h + 18), "concepts erased at once", fill="black")
    draw.text((left, height), "line: mean over seeds; bar: range", fill="black")
    for i, (colour, label) in enumerate(zip(COLOURS, SETTINGS), 1):
        y = height + 18 * i
        draw.line([left, y + 7, left + 24, y + 7], fill=colour, width=3)
        draw.text((left + 32, y), label, fill="black")
    canvas.save(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
