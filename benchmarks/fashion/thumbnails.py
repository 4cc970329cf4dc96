"""The template browser's thumbnails: workflows/<title>.jpg beside each workflows/<title>.json, each a real result of
that workflow's job on the offline benchmark ("a sneaker" -> "a sandal", run.py's RECOMMENDED_PAIR); those that a node
help page shows (tools/node_docs.py's PAGES) also as js/docs/pictures/<API name>.jpg.

What a thumbnail shows comes from its template's API graph (workflows/api/), by one rule for all:
- the model: the DiT twin (ComfyUI's Flux class, dit.py) where the graph's empty latent is a DiT family's
  (EmptySD3LatentImage: SD3.5, Flux, Chroma, Qwen-Image; EmptyHunyuanLatentVideo: Wan), else the UNet (SD1.5, SDXL);
- the erasure: UCE at run.py's RECOMMENDED setting where the graph has Unlearn Objective UCE; otherwise the anchor
  objective with the Unlearn Model node's divergence (the pack's default where the graph only loads a saved
  erasure) at run.py's ITERATIVE rate and length, 8e-4 and 600 steps: the node's own 5e-5 is for full-size models
  and barely moves this 2 M-parameter one; hellinger at temperature 1e-3, as run.py's held-out table runs it;
- the picture: the sneaker share and a sample per strength (Unlearn Strength Curve), rows of samples at strengths
  0, 0.5 and 1 (a saved erasure loaded: Load LoRA or Unlearn Load Erasure without Unlearn Model), the original vs
  erased samples with the judge's verdict (Unlearn Report), the original, erased and attacked samples with their
  verdicts (Unlearn Attack, at the graph's attack steps and rate), or the original vs erased samples.
Samples of the original and the erased model share their seeds; the judge is the benchmark's classifier.

    cd benchmarks/fashion && COMFYUI_PATH=/path/to/ComfyUI python thumbnails.py     # about 11 CPU-minutes, one thread
    python thumbnails.py suggest_erase_attack                                   # one template's picture
"""
import argparse
import functools
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch
from PIL import Image, ImageDraw, ImageFont

import task
from run import (ITERATIVE, RECOMMENDED, RECOMMENDED_PAIR, TARGET, Bench, Run, Sizes, judge,
                 run_erasure, samples_of)
from node_docs import PAGES                # tools/ is on the path: run imports common, which puts it there
from ui_workflow import TEMPLATE_TITLES

from comfyui_unlearn.unlearning import ErasureConfig
from comfyui_unlearn.unlearning.evaluation.attack import ATTACK_IMAGES, invert_concept

WORKFLOWS = task.HERE.parents[1] / "workflows"
HELP_PICTURES = task.HERE.parents[1] / "js" / "docs" / "pictures"   # beside the help pages (tools/node_docs.py)
HELP_SHOWN = {page["picture"] for page in PAGES.values() if "picture" in page}
SIZES = Sizes(canonical=32, synonym=1, held_out=1, other=2)   # 32 judged sneakers; 2 of each other class shown
OTHERS = (0, 8)                                                # t-shirt, bag
CURVE_STRENGTHS, ROW_STRENGTHS = (0, 0.25, 0.5, 0.75, 1), (0, 0.5, 1)
MODEL_NAMES = {"unet": "UNet benchmark model", "dit": "Flux-class DiT benchmark model"}
FONTS = Path("/usr/share/fonts/truetype/dejavu")
SIDE, MARGIN = 512, 12
TOP = 56          # the template browser of frontend 1.49 lays a "Node graph" badge over each card's top-left corner


@dataclass(frozen=True)
class Setting:
    model: str                   # a key of run.MODELS
    divergence: Optional[str]    # None: UCE
    picture: str                 # "curve", "strengths", "report", "attack" or "compare"
    attack: tuple = ()           # Unlearn Attack's (attack_steps, learning_rate) where the graph attacks


def setting_of(graph: dict) -> Setting:
    """What a template's thumbnail shows, read from its API graph."""
    nodes = {node["class_type"]: node["inputs"] for node in graph.values()}
    latent = next((name for name in nodes if name.startswith("Empty") and "Latent" in name), "EmptyLatentImage")
    uce = "UnlearnObjectiveUCE" in nodes
    divergence = None if uce else nodes.get("UnlearnModel", {}).get("divergence", ErasureConfig().divergence)
    loads = bool({"LoraLoaderModelOnly", "UnlearnLoadErasure"} & set(nodes)) and "UnlearnModel" not in nodes
    attack = nodes.get("UnlearnAttack")
    picture = ("curve" if "UnlearnStrengthCurve" in nodes else "strengths" if loads
               else "report" if "UnlearnReport" in nodes else "attack" if attack else "compare")
    return Setting("unet" if latent == "EmptyLatentImage" else "dit", divergence, picture,
                   (attack["attack_steps"], attack["learning_rate"]) if attack else ())


@functools.lru_cache
def bench(model: str) -> Bench:
    """The model, the judge, the anchor images and the original samples, loaded once per model."""
    return Bench(SIZES, 1, model=model)


@functools.lru_cache
def erasure(model: str, divergence: Optional[str]):
    """(a denoiser with the learned deltas on, those deltas as trained, what the setting is called), once per
    model and erasure: several templates show the same one."""
    b = bench(model)
    config = RECOMMENDED if divergence is None else replace(
        ITERATIVE, divergence=divergence, temperature=1e-3 if divergence == "hellinger" else ITERATIVE.temperature)
    config = replace(config, family=b.spec.family)
    denoiser, records, seconds, _ = run_erasure(b, *b.concepts(Run("", "", config, **RECOMMENDED_PAIR)), [config])
    name = (f"UCE closed form, {seconds:.1f} s" if divergence is None
            else f"anchor objective, {divergence}, {len(records)} steps")
    return denoiser, denoiser.deltas.export(), name


@functools.lru_cache
def samples_at(model: str, divergence: Optional[str], strength: float) -> dict:
    """The judged samples with the erasure's deltas scaled by `strength` (what a LoRA strength does); at 0, the
    original model's, sampled already (on the same seeds)."""
    if strength == 0:
        return bench(model).original
    denoiser, trained, _ = erasure(model, divergence)
    denoiser.deltas.start_from({key: value * strength for key, value in trained.items()})
    return samples_of(denoiser, bench(model).encoder, SIZES)


def sneakers(samples):
    return samples[("canonical", task.prompt(TARGET))]


def others(samples):
    return torch.cat([samples[(f"class_{c}", task.prompt(c))][:2] for c in OTHERS])


def sneaker_share(model: str, samples) -> float:
    return judge(bench(model).classifier, samples)["target_accuracy"]["canonical"]


# Drawing: 512 x 512 px, which the browser shows at about half that, so text is 19 px and up where it matters.
def font(size, bold=False):
    return ImageFont.truetype(str(FONTS / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")), size)


def fitted(draw, text, size, width, bold=False):
    """The font of `size` or smaller in which `text` fits `width` pixels."""
    while draw.textlength(text, font=font(size, bold)) > width and size > 10:
        size -= 1
    return font(size, bold)


def line(draw, y, text, size, bold=False, fill="black"):
    draw.text((MARGIN, y), text, fill=fill, font=fitted(draw, text, size, SIDE - 2 * MARGIN, bold))
    return y + size + 8


def paste_samples(canvas, x, y, images, cell, gap=4):
    for i, image in enumerate(((images + 1) * 127.5).round().clamp(0, 255).byte()):
        picture = Image.fromarray(image[0].numpy()).resize((cell, cell), Image.BICUBIC)
        canvas.paste(picture, (x + i * (cell + gap), y))


def sample_rows(canvas, y, rows, cell, label_width=128):
    """Rows of (label, small text under it or "", images): labels on the left, samples to their right."""
    draw = ImageDraw.Draw(canvas)
    label_font = min((fitted(draw, label, 21, label_width - 6, True) for label, _, _ in rows), key=lambda f: f.size)
    for label, note, images in rows:
        draw.text((MARGIN, y + cell // 2 - 22), label, fill="black", font=label_font)
        draw.text((MARGIN, y + cell // 2 + 4), note, fill="#444", font=fitted(draw, note, 18, label_width - 6))
        paste_samples(canvas, MARGIN + label_width, y, images, cell)
        y += cell + 6
    return y


def new_canvas(setting: Setting, name: str):
    canvas = Image.new("RGB", (SIDE, SIDE), "white")
    draw = ImageDraw.Draw(canvas)
    y = line(draw, TOP, f"{RECOMMENDED_PAIR['targets'][0][2:]} \u2192 {RECOMMENDED_PAIR['anchor'][2:]}", 30, bold=True)
    y = line(draw, y, name, 20)
    y = line(draw, y - 4, MODEL_NAMES[setting.model], 20, fill="#444")
    line(draw, SIDE - 24, "offline benchmark (Fashion-MNIST), real erasure through the pack's engine", 14, fill="#666")
    return canvas, draw, y + 4


def compare_picture(setting, name, report):
    """Original vs erased sneakers (same seeds), and two other classes that should not change."""
    canvas, draw, y = new_canvas(setting, name)
    original, erased = (samples_at(setting.model, setting.divergence, s) for s in (0, 1))
    shares = [sneaker_share(setting.model, s) for s in (original, erased)]
    notes = [f"sneaker {share:.0%}" for share in shares] if report else ["", ""]
    y = sample_rows(canvas, y, [("original", notes[0], sneakers(original)[:4]),
                                ("erased", notes[1], sneakers(erased)[:4])], 80)
    if report:
        y = line(draw, y, f"judged a sneaker: {shares[0]:.0%} \u2192 {shares[1]:.0%}", 22, bold=True)
    y = line(draw, y + 2, "others unchanged (t-shirt, bag):", 19)
    small = 46 if report else 52     # the verdict's line takes the room
    sample_rows(canvas, y, [("original", "", others(original)), ("erased", "", others(erased))], small)
    return canvas, shares


def strengths_picture(setting, name):
    """The saved erasure's samples at strengths 0, 0.5 and 1, each row with its judged sneaker share."""
    canvas, draw, y = new_canvas(setting, name)
    samples = [samples_at(setting.model, setting.divergence, s) for s in ROW_STRENGTHS]
    shares = [sneaker_share(setting.model, s) for s in samples]
    y = line(draw, y, "'a photo of a sneaker', the erasure at", 19)
    sample_rows(canvas, y, [(f"strength {s:g}", f"sneaker {share:.0%}", sneakers(x)[:4])
                            for s, share, x in zip(ROW_STRENGTHS, shares, samples)], 80)
    return canvas, [shares[0], shares[-1]]


def curve_picture(setting, name):
    """The judged sneaker share against the strength, drawn as a line above one sample per strength, each point
    over its sample."""
    canvas, draw, y = new_canvas(setting, name)
    samples = [samples_at(setting.model, setting.divergence, s) for s in CURVE_STRENGTHS]
    shares = [sneaker_share(setting.model, s) for s in samples]
    y = line(draw, y, "judged a sneaker, by strength:", 19)
    cell, gap = 88, (SIDE - 2 * MARGIN - 5 * 88) // 4
    columns = [MARGIN + i * (cell + gap) for i in range(5)]
    top, bottom = y + 8, y + 130
    draw.rectangle([columns[0] + cell // 2, top, columns[-1] + cell // 2, bottom], outline="#999")
    for value in (0, 0.5, 1):
        draw.text((MARGIN, bottom - value * (bottom - top) - 9), f"{value:.0%}", fill="#444", font=font(15))
    points = [(x + cell // 2, bottom - share * (bottom - top)) for x, share in zip(columns, shares)]
    draw.line(points, fill="#d62728", width=4)
    for x, yy in points:
        draw.ellipse([x - 6, yy - 6, x + 6, yy + 6], fill="#d62728")
    y, bold = bottom + 12, font(20, True)
    for x, s, images in zip(columns, CURVE_STRENGTHS, samples):
        paste_samples(canvas, x, y, sneakers(images)[:1], cell)
        label = f"{s:g}"
        draw.text((x + (cell - draw.textlength(label, font=bold)) // 2, y + cell + 4), label, fill="black", font=bold)
    return canvas, [shares[0], shares[-1]]


def attack_picture(setting, name):
    """Sneakers of the original model, of the erased one, and of the erased one from the conditioning Unlearn Attack
    learns with the graph's settings (as the node does: from the target's own states, on 4 images of the target
    that the original model samples), each row with its judged sneaker share."""
    canvas, draw, y = new_canvas(setting, name)
    b, target = bench(setting.model), RECOMMENDED_PAIR["targets"][0]
    original, erased = (samples_at(setting.model, setting.divergence, s) for s in (0, 1))
    denoiser, trained, _ = erasure(setting.model, setting.divergence)
    denoiser.deltas.start_from(trained)           # at strength 1, whichever strength a cached picture left it at
    images = task.sample(b.spec.denoiser(b.module), b.cond(target), ATTACK_IMAGES, task.stable_seed("attack"))
    steps, learning_rate = setting.attack
    with b.spec.training():
        states = invert_concept(denoiser, images, b.cond(target), steps, learning_rate)
    attacked = task.sample(denoiser, denoiser.with_text_states(b.cond(target), states), SIZES.canonical,
                           task.stable_seed("attacked"))
    shares = [sneaker_share(setting.model, s) for s in (original, erased)]
    shares.append((b.classifier(attacked).argmax(1) == TARGET).float().mean().item())
    y = line(draw, y, f"'{target[2:]}', then the attack ({steps} steps) learns its conditioning:", 19)
    sample_rows(canvas, y, [(label, f"sneaker {share:.0%}", images_of[:4]) for label, share, images_of in
                            zip(("original", "erased", "attacked"), shares,
                                (sneakers(original), sneakers(erased), attacked))], 80)
    return canvas, [shares[0], shares[-1]]


def thumbnail(graph: dict):
    """(the picture, (sneaker share of the original, of the erased model), the setting, its name)."""
    setting = setting_of(graph)
    name = erasure(setting.model, setting.divergence)[2]
    if setting.picture == "curve":
        canvas, shares = curve_picture(setting, name)
    elif setting.picture == "attack":
        canvas, shares = attack_picture(setting, name)
    elif setting.picture == "strengths":
        canvas, shares = strengths_picture(setting, name)
    else:
        canvas, shares = compare_picture(setting, name, report=setting.picture == "report")
    return canvas, shares, setting, name


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("templates", nargs="*", metavar="TEMPLATE",
                        help="only these templates' pictures (their API file names without .json; default: all)")
    chosen = parser.parse_args().templates or list(TEMPLATE_TITLES)
    if set(chosen) - set(TEMPLATE_TITLES):
        parser.error(f"no template {sorted(set(chosen) - set(TEMPLATE_TITLES))}; they are: {', '.join(TEMPLATE_TITLES)}")
    torch.set_num_threads(1)       # one core: the machine's other one is for what else runs
    started = time.perf_counter()
    for stem in chosen:
        title = TEMPLATE_TITLES[stem]
        graph = json.loads((WORKFLOWS / "api" / f"{stem}.json").read_text())
        canvas, (before, after), setting, name = thumbnail(graph)
        path = WORKFLOWS / f"{title}.jpg"
        canvas.save(path, quality=90)
        if stem in HELP_SHOWN:
            canvas.save(HELP_PICTURES / f"{stem}.jpg", quality=90)
        print(f"{path.name}: {setting.model}, {name}, {setting.picture}; judged a sneaker {before:.0%} -> {after:.0%}"
              f" ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
