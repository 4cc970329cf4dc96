"""Does the report's concept score (unlearning/evaluation/concept_score.py) rank erasures as the judge does?

Erasures of "a sneaker" -> "a sandal" made in several ways (each at strength 0, 0.5 and 1: the strength
slider's scale), probed with every phrasing of the target the benchmark has (canonical, synonyms, the
held-out template, two files of paraphrases). For each (erasure, strength, probe), the judge's share of
samples classified as the target and the concept score, in several variants: epsilon over all noise
levels (the pack's default), x0 over all levels, epsilon over the middle levels, and a 16x larger bank as
the large-sample truth. The Spearman correlation of each variant with the judge is the figure the README
reports; the plot shows the default's scatter.

    python benchmarks/fashion/concept_score.py      # about 20 minutes on 2 CPU cores
"""
import json
import time
from pathlib import Path

import torch

import task
from common import RESULTS, markdown_table
from run import ANCHOR, PARAPHRASES, TARGET, Bench, Sizes, concept_plan, eval_prompts, plan, read_probes, run_erasure

from comfyui_unlearn.unlearning import WeightDeltas
from comfyui_unlearn.unlearning.evaluation.concept_score import ERASED_BELOW, KEPT_ABOVE, SCORE_DRAWS, ConceptEnds, epsilon_at, score_draws

HERE = Path(__file__).resolve().parent
ERASURES = ("kl defaults", "kl lr=8e-4", "esd", "phrasings", "neighbourhood r=0.5", "synonyms listed", "recommended")
STRENGTHS = (0.5, 1.0)
CONCEPT_IMAGES = 4            # the report node's images of the target (the original model's own samples)
JUDGED = 32                   # samples the judge classifies per probe
TRUTH = 16                    # the large-sample truth: this many times the draws, and images
DEFAULT, TRUTH_NAME = "epsilon, all levels (default)", f"epsilon, {TRUTH}x draws and images (truth)"


def variants(schedule, images, truth_images):
    """name -> (draws, space): the score's variants."""
    return {
        DEFAULT: (score_draws(schedule, images, SCORE_DRAWS), "eps"),
        "x0, all levels": (score_draws(schedule, images, SCORE_DRAWS), "x0"),
        "epsilon, levels 0.2-0.8": (score_draws(schedule, images, SCORE_DRAWS, percents=(0.2, 0.8)), "eps"),
        TRUTH_NAME: (score_draws(schedule, truth_images, SCORE_DRAWS * TRUTH, seed=1), "eps"),
    }


def predictions(denoiser, draws, cond, space):
    eps = epsilon_at(denoiser, draws, cond, batch=64)
    if space == "eps":
        return eps
    a, b = denoiser.schedule.coefficients(draws.sigma)
    return (draws.x_t - b.view(-1, 1, 1, 1) * eps) / a.view(-1, 1, 1, 1)   # x0 from epsilon


def spearman(x, y):
    def ranks(values):
        values = torch.tensor(values, dtype=torch.float64)
        order = values.argsort()
        ranked = torch.empty_like(values)
        ranked[order] = torch.arange(len(values), dtype=torch.float64)
        for value in values.unique():            # ties share their mean rank
            tied = values == value
            ranked[tied] = ranked[tied].mean()
        return ranked

    rx, ry = ranks(x), ranks(y)
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def scaled(denoiser, strength):
    """The erased denoiser with its deltas times `strength` (what a LoRA loader's strength does)."""
    deltas = WeightDeltas({k: v.shape for k, v in denoiser.deltas.tensors.items()})
    deltas.start_from({key: value * strength for key, value in denoiser.deltas.export().items()})
    return task.denoiser(denoiser.module, deltas)


def main():
    torch.manual_seed(0)
    started = time.perf_counter()
    bench = Bench(Sizes(8, 8, 8, 8), threads=2)
    probes = {text: bench.cond(text) for group, text in eval_prompts() if not group.startswith("class_")}
    for path in (PARAPHRASES, HERE / "paraphrases_second.txt"):
        probes.update(read_probes(path, bench.encoder))
    frozen = task.denoiser(bench.unet)
    target, anchor = bench.cond(task.prompt(TARGET)), bench.cond(task.prompt(ANCHOR))
    images = task.sample(frozen, target, CONCEPT_IMAGES, task.stable_seed("report " + task.prompt(TARGET)))
    truth_images = task.sample(frozen, target, CONCEPT_IMAGES * TRUTH, task.stable_seed("truth " + task.prompt(TARGET)))
    scores = variants(frozen.schedule, images, truth_images)
    ends = {name: ConceptEnds(predictions(frozen, draws, target, space), predictions(frozen, draws, anchor, space))
            for name, (draws, space) in scores.items()}

    runs = {run.label: run for run in concept_plan() + plan(False)}
    models = [("original", 0.0, frozen)]
    for label in ERASURES:
        erased, *_ = run_erasure(bench.unet, *bench.concepts(runs[label]), [runs[label].config])
        models += [(label, strength, scaled(erased, strength)) for strength in STRENGTHS]
    points = []
    for label, strength, model in models:
        for text, cond in probes.items():
            samples = task.sample(model, cond, JUDGED, task.stable_seed(text))
            accuracy = (bench.classifier(samples).argmax(1) == TARGET).float().mean().item()
            point = {"erasure": label, "strength": strength, "probe": text, "judge_target_accuracy": accuracy}
            point.update({name: ends[name].score(predictions(model, draws, cond, space))
                          for name, (draws, space) in scores.items()})
            points.append(point)
        print(f"{label} x{strength:g}: judged {len(probes)} probes", flush=True)

    write(points, time.perf_counter() - started)


def write(points, seconds):
    """The table (Spearman of each variant with the judge, its 5-95% bootstrap interval over the points; the
    default's distance to the truth; the judge's accuracy in each verdict band), the JSON and the plot."""
    judged = [p["judge_target_accuracy"] for p in points]
    names = [name for name in points[0] if name not in ("erasure", "strength", "probe", "judge_target_accuracy")]
    rhos = {name: spearman([p[name] for p in points], judged) for name in names}
    rows = [[name, f"{rhos[name]:.3f}", "%.3f-%.3f" % bootstrap(points, name),
             f"{sum(abs(p[name] - p[TRUTH_NAME]) for p in points) / len(points):.3f}" if name == DEFAULT else "-"]
            for name in names]
    table = markdown_table(["score", "Spearman with the judge's target accuracy", "5-95% (bootstrap)",
                            "mean abs. difference from the truth"], rows)
    table += "\n\n" + markdown_table(["default score (verdict)", "probes", "judge's target accuracy (mean)"],
                                      score_bands(points, DEFAULT))
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fashion_concept_score.md").write_text(table + "\n")
    (RESULTS / "fashion_concept_score.json").write_text(json.dumps(
        {"erasures": ERASURES, "strengths": STRENGTHS, "concept_images": CONCEPT_IMAGES, "judged_samples": JUDGED,
         "score_draws": SCORE_DRAWS, "seconds": seconds, "spearman": rhos, "points": points}, indent=1) + "\n")
    save_scatter(points, DEFAULT, RESULTS / "fashion_concept_score.png")


def bootstrap(points, name, resamples=1000):
    """The 5th and 95th percentile of the Spearman correlation over resamplings of the points."""
    generator = torch.Generator().manual_seed(0)
    values = sorted(spearman([points[i][name] for i in pick], [points[i]["judge_target_accuracy"] for i in pick])
                    for pick in torch.randint(len(points), (resamples, len(points)), generator=generator).tolist())
    return values[resamples // 20], values[resamples - resamples // 20 - 1]


def score_bands(points, name):
    """The judge's mean target accuracy in each band of the report's verdicts."""
    bands = [(f"score <= {ERASED_BELOW:g} (erased)", lambda s: s <= ERASED_BELOW),
             (f"{ERASED_BELOW:g} < score < {KEPT_ABOVE:g} (partly erased)", lambda s: ERASED_BELOW < s < KEPT_ABOVE),
             (f"score >= {KEPT_ABOVE:g} (kept)", lambda s: s >= KEPT_ABOVE)]
    rows = []
    for label, inside in bands:
        chosen = [p["judge_target_accuracy"] for p in points if inside(p[name])]
        rows.append([label, str(len(chosen)), f"{sum(chosen) / len(chosen):.0%}" if chosen else "-"])
    return rows


def save_scatter(points, name, path):
    """The judge's target accuracy against the score, a dot per (erasure, strength, probe), coloured by strength."""
    from PIL import Image, ImageDraw

    width, height, margin = 520, 380, 50
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = margin, 24, width - 16, height - margin
    scores = [p[name] for p in points]
    low, high = min(min(scores), -1.0), max(max(scores), 1.0)

    def xy(score, accuracy):
        return left + (right - left) * (score - low) / (high - low), bottom - (bottom - top) * accuracy

    draw.rectangle([left, top, right, bottom], outline="black")
    for value in (-1, 0, 1):
        x = xy(value, 0)[0]
        draw.line([x, top, x, bottom], fill="#dddddd")
        draw.text((x - 6, bottom + 4), f"{value:+d}", fill="black")
    for accuracy in (0, 0.5, 1):
        y = xy(low, accuracy)[1]
        draw.text((8, y - 6), f"{accuracy:.0%}", fill="black")
    colours = {0.0: "#1f77b4", 0.5: "#ff7f0e", 1.0: "#d62728"}
    for p in points:
        x, y = xy(p[name], p["judge_target_accuracy"])
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[p["strength"]])
    rho = spearman(scores, [p["judge_target_accuracy"] for p in points])
    draw.text((left, 6), f"concept score ({name}) vs judge: Spearman {rho:.2f}", fill="black")
    draw.text((left + 120, bottom + 24), "concept score (+1 target, -1 anchor)", fill="black")
    draw.text((left + 6, top + 4), "judge's target accuracy", fill="black")
    for i, (strength, colour) in enumerate(colours.items()):
        y = bottom - 50 + 14 * i          # bottom right: no erasure scores high and is judged a non-sneaker
        draw.ellipse([right - 110, y + 4, right - 104, y + 10], fill=colour)
        draw.text((right - 98, y), "original" if strength == 0 else f"strength {strength:g}", fill="black")
    canvas.save(path)


if __name__ == "__main__":
    main()
