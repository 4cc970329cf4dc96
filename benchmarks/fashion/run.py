"""The offline erasure benchmark: erase "a sneaker" -> "a sandal" from the committed base model with
each divergence and objective of the pack's engine; is the concept gone, is the rest intact, at what cost.

Per run: the classifier's accuracy on samples of the target's canonical prompt, its three synonyms and
a template never used in training or erasure (lower = erased; and where those samples go instead);
the mean and worst accuracy on the nine other classes and their drop from the original model (same
seeds); the Frechet distance of classifier features between the erased and the original model's
samples of those classes; the erasure's steps, seconds and peak memory. Sweeps of the learning rate
and the temperature draw each divergence's erasure-vs-preservation curve.

    python benchmarks/fashion/run.py            # the whole table, about 11 minutes on 2 CPU cores (two runs side by side)
    python benchmarks/fashion/run.py --quick    # kl at the pack's defaults only, under a minute
    python benchmarks/fashion/run.py --table held_out                 # judged on prompts the edit never saw
    python benchmarks/fashion/run.py --table held_out --model dit     # the same on the DiT twin (dit.py)
"""
import argparse
import contextlib
import functools
import json
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional
from pathlib import Path

import torch

import task
from common import RESULTS, by_label, markdown_row, markdown_table, read_peak, reset_peak, stats
from train import frechet_distance

from comfyui_unlearn.divergences import DIVERGENCES, closed_forms  # noqa: E402
from comfyui_unlearn.unlearning import (OBJECTIVES, Concept, ErasureConfig, Neighbourhood, WeightDeltas, erase,  # noqa: E402
                                        expanded_pairs, pair_prompts, phrasings_of, preset_shapes, prompt_lines,
                                        resolve)
from comfyui_unlearn.unlearning.suggestions import Vocabulary, kept_lines, mean_embedding, suggest  # noqa: E402

TARGET, ANCHOR = 7, 5          # sneaker -> sandal
ANCHOR_IMAGES = 4              # the node's default number of sampled anchor images
SWEEP_LR = (8e-4, 1.5e-3, 3e-3)
PARAPHRASES = Path(__file__).resolve().parent / "paraphrases.txt"   # the concept table's probe prompts
DESCRIPTIONS = Path(__file__).resolve().parent / "descriptions.txt"   # sneakers described without any of their names
TRAJECTORY_OBJECTIVES = ("esd", "constrained_reverse_kl", "constrained_likelihood")   # the slow ones: start first


@dataclass(frozen=True)
class Run:
    label: str
    group: str                 # "defaults", "sweep", "variational", "objectives", "concept"
    config: ErasureConfig = field(default_factory=ErasureConfig)
    in_grid: bool = False      # a row of the picture
    targets: tuple = (task.prompt(TARGET),)     # the concept pair as a user writes it: target lines,
    anchor: str = task.prompt(ANCHOR)           # the anchor,
    preserve: tuple = ()                        # prompts to preserve,
    phrasings: bool = False                     # and the pair node's phrasings switch
    keep_vocabulary: int = 0                    # and its keep_vocabulary: words of MiniLM's vocabulary kept
    start_with: Optional[ErasureConfig] = None  # an erasure whose result this one starts from (Unlearn Start From)
    sample_shift: int = 0      # the seeds of every sample (training images, the judge's samples) are shifted by this


@dataclass(frozen=True)
class Sizes:
    canonical: int = 32
    synonym: int = 16
    held_out: int = 32
    other: int = 96            # per other class: one sample is about one point


def eval_prompts():
    """(group, prompt) pairs whose samples are judged."""
    groups = [("canonical", task.prompt(TARGET))]
    groups += [("synonyms", task.prompt(TARGET, i)) for i in (1, 2, 3)]
    groups += [("held_out", task.HELD_OUT_TEMPLATE.format(task.CLASSES[TARGET][0]))]
    groups += [(f"class_{c}", task.prompt(c)) for c in range(10) if c != TARGET]
    return groups


def samples_of(denoiser, encoder, sizes):
    counts = {"canonical": sizes.canonical, "synonyms": sizes.synonym, "held_out": sizes.held_out}
    out = {}
    for group, text in eval_prompts():
        out[(group, text)] = task.sample(denoiser, encoder.cond(text), counts.get(group, sizes.other),
                                         task.stable_seed(text))
    return out


def judge(classifier, samples, original=None):
    """Accuracies (and, against the original model's samples, the preservation measures)."""
    predictions = {key: classifier(images).argmax(1) for key, images in samples.items()}
    target = {g: torch.cat([p for (group, _), p in predictions.items() if group == g]) for g in ("canonical", "synonyms", "held_out")}
    erased = torch.cat(list(target.values()))
    instead = torch.bincount(erased[erased != TARGET], minlength=10)
    others = {int(g[6:]): (p == int(g[6:])).float().mean().item() for (g, _), p in predictions.items() if g.startswith("class_")}
    result = {
        "target_accuracy": {g: (p == TARGET).float().mean().item() for g, p in target.items()},
        "goes_to": {task.CLASSES[c][0]: round(n / len(erased), 3) for c, n in enumerate(instead.tolist()) if n},
        "other_accuracy_mean": sum(others.values()) / len(others),
        "other_accuracy_worst": min(others.values()),
        "other_accuracy": {task.CLASSES[c][0]: a for c, a in others.items()},
    }
    if original is not None:
        keys = [k for k in samples if k[0].startswith("class_")]
        result["frechet_distance_others"] = frechet_distance(
            classifier.features(torch.cat([samples[k] for k in keys])),
            classifier.features(torch.cat([original[k] for k in keys])))
    return result


def probe_accuracy(denoiser, classifier, probes, count):
    """{prompt: the share of its samples the judge calls the target class} for probe prompts ({text: cond})."""
    return {text: (classifier(task.sample(denoiser, cond, count, task.stable_seed(text))).argmax(1) == TARGET)
            .float().mean().item() for text, cond in probes.items()}


def read_probes(path, encoder):
    """{prompt: conditioning} of a probe file: one prompt per line, each naming the target class."""
    lines = prompt_lines(Path(path).read_text())
    if not lines:
        raise SystemExit(f"--probe-file {path} has no prompts: write one prompt per line")
    return encoded_probes(lines, encoder)


def encoded_probes(lines, encoder):
    return {text: encoder.cond(text) for text in dict.fromkeys(lines)}


@dataclass(frozen=True)
class Model:
    """A benchmark model: its weights, its adapter to the engine, its family (ComfyUI's config name) and what
    training through it needs."""

    load: Callable[[], torch.nn.Module]
    denoiser: Callable[..., object]                     # (module, deltas=None) -> the engine's Denoiser
    family: str
    training: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def unet_model():
    return Model(lambda: task.load(task.build_unet(), task.BASE_MODEL), task.denoiser, "SD15")


def dit_model():
    """The DiT twin (ComfyUI's own Flux class; dit.py), trained through as the node trains a Flux model."""
    import dit

    return Model(dit.load_dit, dit.denoiser, "Flux", dit.training)


MODELS = {"unet": unet_model, "dit": dit_model}


def run_erasure(model, concepts, preserve, configs):
    """Erase with each configuration in turn, each starting from the last one's deltas, on the weights their
    plans' parameters presets select (a closed form: its family's text_input); returns (a denoiser with the learned
    deltas on, the records of all, seconds, bytes)."""
    plans = [resolve(config) for config in configs]
    shapes = {}
    for plan in plans:
        shapes.update(preset_shapes(model.module, plan.config.parameters, plan.family))
    deltas = WeightDeltas(shapes)
    denoiser = model.spec.denoiser(model.module, deltas)
    reset_peak("cpu")
    started = time.perf_counter()
    with model.spec.training():
        records = [r for plan in plans for r in erase(denoiser, deltas, concepts, plan, preserve=preserve)]
    return denoiser, records, time.perf_counter() - started, read_peak("cpu")


def plan(quick, table="full"):
    """The runs of a table. full: the pack's defaults per divergence, sweeps, variational divergences,
    objectives. concept: what erases the concept rather than the phrase (concept_plan).

    The sweeps use a temperature at which m is of order 10 at the start (m is about 0.01 at
    temperature 1 on this model), so that the bounded divergences' weights differ from MSE's;
    pearson_chi2 (log-space form) reweights samples only within a batch, so it is swept at batch 4,
    beside kl at batch 4. total_variation keeps temperature 1: its loss is TV itself, not MSE-like.
    """
    default = ErasureConfig()
    if quick:
        return [Run("kl", "defaults")]
    if table == "concept":
        return concept_plan()
    if table == "objectives":
        return objectives_plan()
    if table == "held_out":
        return held_out_plan()
    runs = [Run(name, "defaults", replace(default, divergence=name), in_grid=name in ("kl", "total_variation"))
            for name in closed_forms()]
    sweeps = [("kl", 1.0, 1, (2e-4, 8e-4, 1.5e-3, 3e-3)), ("kl", 1.0, 4, (8e-4, 3e-3))]
    sweeps += [(name, 1e-3, 1, SWEEP_LR) for name in ("hellinger", "jensen_shannon")]
    sweeps += [("pearson_chi2", 1e-3, 4, SWEEP_LR), ("total_variation", 1.0, 1, SWEEP_LR)]
    for name, temperature, batch, rates in sweeps:
        for lr in rates:
            runs.append(Run(f"{name} t={temperature:g} b={batch} lr={lr:g}", "sweep", replace(
                default, divergence=name, temperature=temperature, batch_size=batch, learning_rate=lr),
                in_grid=lr == 1.5e-3))
    runs += [Run(name, "variational", replace(default, divergence=name), in_grid=name == "variational_hellinger")
             for name, divergence in DIVERGENCES.items() if divergence.variational]
    runs.append(Run("esd", "objectives", replace(default, objective="esd"), in_grid=True))
    return runs


# The recommended setting: the concept pair lists the synonyms a user knows of and keeps the neighbour they
# care about, with phrasings on; the UCE objective at its defaults edits the cross-attention keys and values
# over all of them, past the anchor (guidance 0.5). ITERATIVE: the same pair with the anchor objective, in
# a concept neighbourhood, at a learning rate for this 2 M-parameter model (Stable Diffusion's default is
# 5e-5) and 600 steps (the phrasings make 4 x 8 pairs to cover).
RECOMMENDED_PAIR = dict(targets=("a sneaker", "a trainer", "a running shoe", "a tennis shoe"), anchor="a sandal",
                        preserve=("a boot",), phrasings=True)
RECOMMENDED = replace(ErasureConfig(), objective="uce")
ITERATIVE = replace(ErasureConfig(), learning_rate=8e-4, steps=600, neighbourhood=Neighbourhood(0.5))
UCE_AS_PUBLISHED = replace(RECOMMENDED, objective_params={"guidance": 0.0})    # onto the anchor, not past it
# The training objectives at ITERATIVE's rate and length: ESD (negative guidance, no anchor) and the anchor objective
# with a bounded divergence (Hellinger at the temperature the concept table uses).
ANCHOR_HELLINGER = replace(ITERATIVE, divergence="hellinger", temperature=1e-3)
ESD_600 = replace(ErasureConfig(), objective="esd", learning_rate=ITERATIVE.learning_rate, steps=ITERATIVE.steps)
# Candidates for an erasure that holds against the conditioning-space attack (attack.py): ITERATIVE on every weight,
# so that the image pathway changes too, and the same with adversarial training in a ball as wide as each token
# (three ascent steps per step: RACE, arXiv 2405.16341; AdvUnlearn, arXiv 2405.15234). At ITERATIVE's rate every
# weight moves far enough to break the model; ROBUST_FULL_SLOW trains every weight at Stable Diffusion's own
# fine-tuning rate (5e-5), 16 times lower, ROBUST_FULL_MID at 2e-4, near the two rates' geometric mean, and
# ROBUST_ADVERSARIAL_SLOW with the adversarial points at 5e-5.
ROBUST_FULL = replace(ITERATIVE, parameters="full")
ROBUST_ADVERSARIAL = replace(ROBUST_FULL, neighbourhood=Neighbourhood(1.0, 3))
ROBUST_FULL_SLOW = replace(ROBUST_FULL, learning_rate=5e-5)
ROBUST_FULL_MID = replace(ROBUST_FULL, learning_rate=2e-4)
ROBUST_ADVERSARIAL_SLOW = replace(ROBUST_ADVERSARIAL, learning_rate=ROBUST_FULL_SLOW.learning_rate)
ROBUSTNESS = {"anchor kl, full parameters": ROBUST_FULL,
              "anchor kl, full parameters, adversarial r=1 k=3": ROBUST_ADVERSARIAL,
              "anchor kl, full parameters, lr 5e-5": ROBUST_FULL_SLOW,
              "anchor kl, full parameters, lr 2e-4": ROBUST_FULL_MID,
              "anchor kl, full parameters, lr 5e-5, adversarial r=1 k=3": ROBUST_ADVERSARIAL_SLOW}


def concept_plan():
    """Each mechanism alone on the canonical pair (and each divergence remedy beside `kl` there), the
    iterative objective on the recommended pair, then `recommended` and what each of its parts adds."""
    fast = replace(ErasureConfig(), learning_rate=8e-4)
    one = dict(targets=("a sneaker",), anchor="a sandal")
    listed = dict(targets=RECOMMENDED_PAIR["targets"], anchor="a sandal")
    runs = [
        Run("kl defaults", "concept", ErasureConfig(), in_grid=True),
        Run("kl lr=8e-4", "concept", fast),
        Run("hellinger t=0.001 lr=8e-4", "concept", replace(fast, divergence="hellinger", temperature=1e-3)),
        Run("total_variation lr=8e-4", "concept", replace(fast, divergence="total_variation")),
        Run("hellinger t=0.01 element lr=8e-4", "concept", replace(fast, divergence="hellinger", temperature=1e-2,
                                                                    reduction="element")),
        Run("phrasings", "concept", fast, **one, phrasings=True),
        Run("neighbourhood r=0.5", "concept", replace(fast, neighbourhood=Neighbourhood(0.5)), **one),
        Run("adversarial r=0.1 k=1", "concept", replace(fast, neighbourhood=Neighbourhood(0.1, 1)), **one),
        Run("synonyms listed", "concept", fast, **listed),
        Run("anchor, 600 steps, neighbourhood", "concept", ITERATIVE, in_grid=True, **RECOMMENDED_PAIR),
        Run("anchor, 600 steps", "concept", replace(ITERATIVE, neighbourhood=Neighbourhood()), **RECOMMENDED_PAIR),
        Run("uce guidance=0 (as published), then anchor", "concept", ITERATIVE, **RECOMMENDED_PAIR,
            start_with=UCE_AS_PUBLISHED),
        Run("uce guidance=0 (as published)", "concept", UCE_AS_PUBLISHED,
            **RECOMMENDED_PAIR),
        Run("recommended", "concept", RECOMMENDED, in_grid=True, **RECOMMENDED_PAIR),
        Run("recommended, no preserve", "concept", RECOMMENDED, **{**RECOMMENDED_PAIR, "preserve": ()}),
        Run("recommended, no phrasings", "concept", RECOMMENDED, **{**RECOMMENDED_PAIR, "phrasings": False}),
        Run("recommended, no synonyms listed", "concept", RECOMMENDED, **{**RECOMMENDED_PAIR, "targets": ("a sneaker",)}),
        Run("uce guidance=0.5", "concept", replace(RECOMMENDED, objective_params={"guidance": 0.5}),
            **RECOMMENDED_PAIR),
        Run("uce regularisation=0.1", "concept", replace(RECOMMENDED, objective_params={"regularisation": 0.1}),
            **RECOMMENDED_PAIR),
    ]
    return runs


# The held-out table: the pair lists two of the target's four names, so that the others, the held-out sentence
# frame and the descriptions are judged on prompts the edit never saw (held_out_groups checks it).
HELD_OUT_PAIR = dict(targets=("a sneaker", "a trainer"), anchor="a sandal", preserve=("a boot",), phrasings=True)
GROUPS = {}     # the held-out table's judged prompt groups beyond the standard ones (main sets it): group -> prompts


# UCE past the anchor with everyday words of the encoder's vocabulary kept (Unlearn Concept Pair's keep_vocabulary):
# (guidance, words) points of the trade-off, picked in a sweep on the DiT twin's own held-out groups (so their DiT
# numbers are in-sample for the choice; held_out_second.txt, written after it, checks them).
KEPT_VOCABULARY = ((2.0, 32), (3.0, 64), (4.0, 64))


def kept_vocabulary_run(guidance: float, count: int) -> Run:
    """UCE past the anchor by `guidance` with `count` words of MiniLM's vocabulary kept, on HELD_OUT_PAIR."""
    return Run(f"uce guidance={guidance:g}, {count} words kept", "held_out",
               replace(RECOMMENDED, objective_params={"guidance": guidance}), **HELD_OUT_PAIR, keep_vocabulary=count)


def held_out_plan():
    """The recommended setting and UCE as published, each on HELD_OUT_PAIR; the recommended setting with only the
    canonical name listed, and with it the Unlearn Concept Suggestions node's default suggestions for it; UCE past
    the anchor by a whole step, and further with everyday words kept; the training objectives and the robustness
    candidates, each on HELD_OUT_PAIR."""
    alone = {**HELD_OUT_PAIR, "targets": HELD_OUT_PAIR["targets"][:1]}
    return [Run("recommended", "held_out", RECOMMENDED, in_grid=True, **HELD_OUT_PAIR),
            Run("uce guidance=0 (as published)", "held_out", UCE_AS_PUBLISHED,
                **HELD_OUT_PAIR),
            Run("recommended, no synonyms listed", "held_out", RECOMMENDED, **alone),
            Run("recommended, suggested synonyms", "held_out", RECOMMENDED, **{**alone, "targets": suggested_targets(
                alone["targets"][0], (alone["anchor"], *alone["preserve"]))}),
            Run("uce guidance=1", "held_out", replace(RECOMMENDED, objective_params={"guidance": 1.0}),
                **HELD_OUT_PAIR),
            *(kept_vocabulary_run(guidance, count) for guidance, count in KEPT_VOCABULARY),
            Run("iterative (anchor kl, 600 steps, neighbourhood)", "held_out", ITERATIVE, **HELD_OUT_PAIR),
            Run("anchor hellinger, 600 steps, neighbourhood", "held_out", ANCHOR_HELLINGER, **HELD_OUT_PAIR),
            Run("esd, 600 steps", "held_out", ESD_600, **HELD_OUT_PAIR),
            *(Run(label, "held_out", config, **HELD_OUT_PAIR) for label, config in ROBUSTNESS.items())]


@functools.cache
def minilm_vocabulary():
    """(Vocabulary, words -> the mean input embedding of their tokens) of MiniLM, as the nodes make them of a CLIP."""
    tokenizer, model = task.load_minilm("the text encoder's vocabulary")
    table = model.embeddings.word_embeddings.weight.detach()
    return Vocabulary.from_tokenizer(tokenizer, table), functools.partial(mean_embedding, tokenizer, table)


def suggested_targets(concept: str, exclude: tuple) -> tuple:
    """The target line, then what the Unlearn Concept Suggestions node adds to it at its defaults, by the same engine
    function over this benchmark's text encoder: MiniLM's vocabulary and token table, and the mean of the token
    states the UNet reads (MiniLM's own sentence vector)."""
    encoder = task.PromptEncoder()

    def sentence_vectors(texts):
        states, mask = encoder(texts)
        return (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    vocabulary, token_vector = minilm_vocabulary()
    shown = suggest(concept, token_vector, vocabulary, sentence_vectors, exclude=exclude)
    print(f"suggested for '{concept}':", ", ".join(f"{phrase} ({score:.3f})" for phrase, score in shown))
    return (concept, *(phrase for phrase, _ in shown))


def held_out_groups(pair):
    """{group: prompts} judged beyond the standard groups for a pair as written: its listed names in the held-out
    sentence frame, its unlisted names in a training frame, and the descriptions. Stops if one is in the pair's
    edit set, or if an unlisted name's prompt or a description contains a listed word."""
    names = task.CLASSES[TARGET]
    listed = [name for name in names if f"a {name}" in pair["targets"]]
    groups = {"held-out template": [task.HELD_OUT_TEMPLATE.format(name) for name in listed],
              "unlisted synonyms": [task.prompt(TARGET, names.index(name)) for name in names if name not in listed],
              "no listed word": prompt_lines(DESCRIPTIONS.read_text())}
    edit_set = set(Bench.texts(Run("", "", targets=pair["targets"], anchor=pair["anchor"], preserve=pair["preserve"],
                                   phrasings=pair["phrasings"])))
    listed_word = re.compile(r"\b(" + "|".join(re.escape(name) for name in listed) + r")s?\b")
    for group, texts in groups.items():
        for text in texts:
            if text in edit_set or (group != "held-out template" and listed_word.search(text)):
                raise SystemExit(f"held-out prompt '{text}' ({group}) is in the edit set or names a listed word")
    return groups


REVERSE_KL_BUDGETS = (0.25, 0.5, 1.0, 2.0)
FORWARD_KL_BUDGETS = (0.5, 2.0, 3.0)    # besides its default, 1
TRACED = ("constrained_reverse_kl budget=1", "constrained_likelihood", "constrained_forward_kl")   # lambda plotted


def objectives_plan():
    """The seed papers' objectives at their defaults (VDU also without the relative forget error), and sweeps of
    constrained_reverse_kl's and constrained_forward_kl's budgets."""
    default = replace(ErasureConfig(), learning_rate=8e-4)
    runs = [Run(name, "objectives", replace(default, objective=name), in_grid=True)
            for name in ("vdu", "constrained_forward_kl", "constrained_likelihood")]
    runs.insert(1, Run("vdu relative_error=0", "objectives", replace(default, objective="vdu",
                                                                     objective_params={"relative_error": 0})))
    runs += [Run(f"constrained_reverse_kl budget={budget:g}", "objectives", replace(
        default, objective="constrained_reverse_kl", objective_params={"budget": budget}), in_grid=budget == 1.0)
        for budget in REVERSE_KL_BUDGETS]
    runs += [Run(f"constrained_forward_kl budget={budget:g}", "objectives", replace(
        default, objective="constrained_forward_kl", objective_params={"budget": budget}))
        for budget in FORWARD_KL_BUDGETS]
    return runs


class Bench:
    """What every run needs: the base model, the judge, the prompts, the concept, the original samples
    (sampled here, or handed over by the process that sampled them)."""

    def __init__(self, sizes, threads, shift=0, images=None, original=None, probes=None, model="unet"):
        torch.set_num_threads(threads)
        task.SEED_SHIFT = shift
        self.sizes, self.encoder, self.probes, self.shift = sizes, task.PromptEncoder(), probes or {}, shift
        self.model_name, self.spec = model, MODELS[model]()
        self.module = self.spec.load()
        self.classifier = task.load(task.Classifier(), task.CLASSIFIER)
        frozen = self.spec.denoiser(self.module)
        self.images = images or {c: task.sample(frozen, self.cond(task.prompt(c)), ANCHOR_IMAGES,
                                                task.stable_seed("images " + task.prompt(c))) for c in (TARGET, ANCHOR)}
        self.original = original or samples_of(frozen, self.encoder, sizes)
        self.baseline = judge(self.classifier, self.original)
        if self.probes:
            self.baseline["probes"] = probe_accuracy(frozen, self.classifier, self.probes, sizes.synonym)

    def cond(self, text):
        return self.encoder.cond(text)

    @staticmethod
    def pairs_and_kept(run):
        """A run's concept pair as Unlearn Concept Pair expands it: [(target, anchor)], [preserved prompt]."""
        pairs = pair_prompts("\n".join(run.targets), run.anchor)
        kept = kept_lines(*minilm_vocabulary(), run.keep_vocabulary, pairs, run.preserve) if run.keep_vocabulary else []
        preserve = [*run.preserve, *kept]
        if run.phrasings:
            pairs = [(t, a) for t, a, _ in expanded_pairs(pairs)]
        return pairs, [text for line in preserve for text in (phrasings_of(line) if run.phrasings else [line])]

    @staticmethod
    def texts(run):
        pairs, kept = Bench.pairs_and_kept(run)
        return [text for pair in pairs for text in pair] + kept + [""]

    def concepts(self, run):
        """The engine's concepts and preserved prompts for a run (every phrasing shares the images sampled
        for the canonical anchor), each pair's rows with their token ids as Unlearn Concept Pair gives them."""
        pairs, kept = self.pairs_and_kept(run)
        concepts = [Concept(self.cond(t), self.cond(a), self.images[ANCHOR], t, a, empty=self.cond(""),
                            forget_latents=self.images[TARGET], target_tokens=self.encoder.ids(t),
                            anchor_tokens=self.encoder.ids(a)) for t, a in pairs]
        return concepts, [self.cond(text) for text in kept]

    def __call__(self, run):
        """One run's result row and its grid row."""
        task.SEED_SHIFT = self.shift
        configs = [replace(run.start_with, seed=run.config.seed)] if run.start_with else []
        denoiser, records, seconds, memory = run_erasure(self, *self.concepts(run), configs + [run.config])
        samples = samples_of(denoiser, self.encoder, self.sizes)
        verdict = judge(self.classifier, samples, self.original)
        verdict["other_accuracy_drop"] = self.baseline["other_accuracy_mean"] - verdict["other_accuracy_mean"]
        verdict["other_accuracy_worst_drop"] = max(self.baseline["other_accuracy"][name] - accuracy
                                                   for name, accuracy in verdict["other_accuracy"].items())
        if self.probes:
            verdict["probes"] = probe_accuracy(denoiser, self.classifier, self.probes, self.sizes.synonym)
        return {"label": run.label, "group": run.group, "seed": run.config.seed, "sample_shift": self.shift,
                "divergence": run.config.divergence,
                "objective": run.config.objective, "temperature": run.config.temperature,
                "batch_size": run.config.batch_size, "learning_rate": run.config.learning_rate,
                "steps": len(records), "trace": trace(records), "m_first_20_steps": sum(r.m for r in records[:20]) / len(records[:20]),
                "seconds": seconds, "peak_memory_bytes": memory, **verdict}, grid_row(samples)


def trace(records):
    """Per step, what an objective's state records (lambda, a constraint's estimate, a forget-error ratio)."""
    keys = ("lambda", "constraint_estimate", "forget_error_ratio")
    return {key: [r.terms[key] for r in records] for key in keys if key in records[0].terms}


_worker_benches = None


def _start_worker(sizes, sampled, probes, model):
    global _worker_benches
    _worker_benches = {shift: Bench(sizes, 1, shift, images, original, probes, model)
                       for shift, (images, original) in sampled.items()}


def _run_in_worker(run):
    return _worker_benches[run.sample_shift](run)


def run_all(runs, benches, workers):
    """Each run's (result, grid row) in plan order, printed as they come; `benches` by sample shift. With several
    workers, each is a process with one torch thread (two threads per process on a 2-core machine run slower)."""
    def report(item):
        print(markdown_row(cells(item[0])), flush=True)
        return item

    if workers == 1:
        return [report(benches[run.sample_shift](run)) for run in runs]
    import multiprocessing

    order = sorted(range(len(runs)), key=lambda i: runs[i].config.objective not in TRAJECTORY_OBJECTIVES)
    first = next(iter(benches.values()))
    sampled = {shift: (b.images, b.original) for shift, b in benches.items()}   # sampled once, not per worker
    shared = (first.sizes, sampled, first.probes, first.model_name)
    with multiprocessing.get_context("spawn").Pool(workers, _start_worker, shared) as pool:
        done = [report(item) for item in pool.imap(_run_in_worker, [runs[i] for i in order])]
    return [done[order.index(i)] for i in range(len(runs))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="kl at the pack's defaults, fewer samples (< 1 minute)")
    parser.add_argument("--table", choices=("full", "concept", "objectives", "held_out"), default="full",
                        help="full: every divergence, sweep and objective (default); concept: the mechanisms "
                             "that erase the concept rather than the phrase, and the recommended setting; "
                             "objectives: the seed papers' objectives and constrained_reverse_kl's budget sweep; "
                             "held_out: the recommended setting judged on prompts its edit never saw")
    parser.add_argument("--seeds", type=int, help="erasure seeds per row (default: 1 for full, 3 for the others)")
    parser.add_argument("--only", action="append", metavar="LABEL", help="run only this row (repeatable)")
    parser.add_argument("--update", action="store_true", help="with --only: put those rows' new runs into the "
                                                              "table's saved results in place of their old ones "
                                                              "(its JSON, table and pictures), keeping the other rows")
    parser.add_argument("--probe-file", metavar="F", help="also judge these prompts (one per line, each naming a "
                                                          "sneaker) on every row; default for --table concept: "
                                                          "paraphrases.txt next to this script; with --table "
                                                          "held_out, one more group, 'probe file'")
    parser.add_argument("--sample-seed", type=int, default=0,
                        help="shift the seeds of every sample (the anchor images and the judge's samples, of the "
                             "original model and the erased ones) by this, besides the shift by the seed that each "
                             "of a row's seeds brings (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="runs side by side, one thread each (default 2)")
    parser.add_argument("--model", choices=list(MODELS), default="unet",
                        help="unet: the diffusers UNet (default); dit: the DiT twin, ComfyUI's Flux class (dit.py; "
                             "needs ComfyUI: COMFYUI_PATH)")
    args = parser.parse_args()
    sizes = Sizes(16, 8, 16, 12) if args.quick else Sizes()
    runs = planned = plan(args.quick, args.table)
    if args.update and not args.only:
        raise SystemExit("--update needs the rows to rerun: pass them with --only")
    if args.only:
        unknown = set(args.only) - {run.label for run in runs}
        if unknown:
            raise SystemExit(f"--only: no row {sorted(unknown)} in the {args.table} table; its rows: "
                             + "; ".join(run.label for run in runs))
        runs = [run for run in runs if run.label in args.only]
    seeds = args.seeds or (1 if args.table == "full" else 3)
    # Seed k of a row erases with seed k and draws every sample (training images, the judge's samples of the original
    # and of the erased model) from seeds shifted by k: the spread holds the judge's sampling noise, and each erased
    # model is compared with the original on the same draws.
    family = MODELS[args.model]().family
    runs = [replace(run, config=replace(run.config, seed=seed, family=family), sample_shift=args.sample_seed + seed,
                    start_with=run.start_with and replace(run.start_with, family=family))
            for run in runs for seed in range(seeds)]
    encoder = task.PromptEncoder()
    cache_prompts(encoder, runs)
    probe_file = args.probe_file or (PARAPHRASES if args.table == "concept" else None)
    probes = probe_file and read_probes(probe_file, encoder)
    if args.table == "held_out":
        GROUPS.update(held_out_groups(HELD_OUT_PAIR))
        if args.probe_file:       # a further judged group, checked against every row's edit set as the others are
            GROUPS["probe file"] = prompt_lines(Path(args.probe_file).read_text())
        judged = {text for texts in GROUPS.values() for text in texts}
        for run in runs:
            if judged & set(Bench.texts(run)):
                raise SystemExit(f"{run.label} edits the judged prompts {sorted(judged & set(Bench.texts(run)))}")
        probes = encoded_probes([text for texts in GROUPS.values() for text in texts], encoder)
    benches = {shift: Bench(sizes, 2, shift, probes=probes, model=args.model)
               for shift in sorted({run.sample_shift for run in runs})}
    grid = {"original model": grid_row(next(iter(benches.values())).original)}
    results = []
    for run, (result, picture) in zip(runs, run_all(runs, benches, 1 if args.quick else args.workers)):
        results.append(result)
        if (run.in_grid or args.quick) and run.label not in grid:
            grid[run.label] = picture
    name = "fashion_erasure_quick" if args.quick else {"full": "fashion_erasure", "concept": "fashion_concept",
                                                        "objectives": "fashion_objectives",
                                                        "held_out": "fashion_held_out"}[args.table]
    name += "" if args.model == "unet" else f"_{args.model}"
    name += "_selected" if args.only and not args.update else ""
    name += f"_samples{args.sample_seed}" if args.sample_seed else ""
    RESULTS.mkdir(exist_ok=True)
    if args.update:
        results = merge_saved(RESULTS / name, results, grid, planned, seeds)
    else:
        save_grid(grid, RESULTS / f"{name}.png")
    rows = [original_row([bench.baseline for bench in benches.values()])] + summarise(results)
    payload = {"sizes": vars(sizes), "seeds": seeds, "sample_seed": args.sample_seed, "probe_file": probe_file and Path(probe_file).name,
               "groups": GROUPS, "rows": rows, "runs": results}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    if args.table == "objectives" and (args.update or not args.only):
        caps = {run.label: OBJECTIVES[run.config.objective].lambda_max for run in planned if run.label in TRACED}
        save_traces(results, RESULTS / f"{name}_lambda.png", caps)
    table = markdown_table(header(probes), [cells(r) for r in rows])
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print("\n" + table)
    if args.quick:
        check_quick(rows)
    return rows


def cache_prompts(encoder, runs):
    """Encode every prompt the runs train on into the committed cache (so that workers, and later runs,
    need no MiniLM); probe prompts are encoded apart and not cached."""
    # A kept vocabulary's hundreds of prompts are encoded where they are used: the cache's prompts are also the
    # statistics of attack.py's random conditioning.
    texts = list(dict.fromkeys(text for run in runs for text in Bench.texts(replace(run, keep_vocabulary=0))))
    missing = [t for t in texts if f"{t}|states" not in encoder.cache]
    untokenized = [t for t in texts if f"{t}|ids" not in encoder.cache]
    if missing:
        encoder(missing)
    for text in untokenized:
        encoder.ids(text)
    if missing or untokenized:
        encoder.save()


SPREAD = ("canonical", "synonyms", "held_out")


def original_row(baselines):
    """The original model's row: its judged samples' measures, the mean over the sample shifts."""
    def mean(values):
        return sum(values) / len(values)

    row = {"label": "original model", "group": "original",
           "target_accuracy": {g: mean([b["target_accuracy"][g] for b in baselines]) for g in SPREAD},
           "goes_to": {name: mean([b["goes_to"].get(name, 0) for b in baselines])
                       for name in {name for b in baselines for name in b["goes_to"]}},
           "other_accuracy_mean": mean([b["other_accuracy_mean"] for b in baselines]),
           "other_accuracy": {c: mean([b["other_accuracy"][c] for b in baselines])
                              for c in baselines[0]["other_accuracy"]}}
    if "probes" in baselines[0]:
        row["probes"] = {p: mean([b["probes"][p] for b in baselines]) for p in baselines[0]["probes"]}
        row["target_accuracy"].update(group_means(row["probes"]))
    return row


def group_means(probes):
    """{group: the mean target share over its prompts} of one run's probe shares."""
    return {group: sum(probes[text] for text in texts) / len(texts) for group, texts in GROUPS.items()}


def summarise(results):
    """One row per label: each measure's mean over the seeds, and its (min, max) for the table's spread."""
    summary = []
    for label, runs in by_label(results).items():
        row = {**runs[0], "seeds": [r["seed"] for r in runs]}
        row["target_accuracy"] = {g: sum(r["target_accuracy"][g] for r in runs) / len(runs) for g in SPREAD}
        row["spread"] = {g: stats([r["target_accuracy"][g] for r in runs]) for g in SPREAD}
        names = {name for r in runs for name in r["goes_to"]}
        row["goes_to"] = {name: sum(r["goes_to"].get(name, 0) for r in runs) / len(runs) for name in names}
        for key in ("other_accuracy_mean", "other_accuracy_drop", "other_accuracy_worst_drop",
                    "frechet_distance_others", "seconds"):
            row["spread"][key] = stats([r[key] for r in runs])
            row[key] = row["spread"][key]["mean"]
        if "probes" in runs[0]:
            row["probes"] = {p: sum(r["probes"][p] for r in runs) / len(runs) for p in runs[0]["probes"]}
            row["spread"]["probes"] = stats([sum(r["probes"].values()) / len(r["probes"]) for r in runs])
            for group in GROUPS:
                row["spread"][group] = stats([group_means(r["probes"])[group] for r in runs])
                row["target_accuracy"][group] = row["spread"][group]["mean"]
        summary.append(row)
    return summary


def check_quick(results):
    """The quick mode's claim: kl at the defaults lowers the target's accuracy and keeps the others."""
    original, erased = results[0], results[1]
    lowered = erased["target_accuracy"]["canonical"] <= original["target_accuracy"]["canonical"] - 0.25
    kept = erased["other_accuracy_drop"] <= 0.10
    print(f"quick check: target accuracy {original['target_accuracy']['canonical']:.0%} -> "
          f"{erased['target_accuracy']['canonical']:.0%} ({'lowered' if lowered else 'NOT lowered enough'}), "
          f"other classes drop {erased['other_accuracy_drop'] * 100:+.1f} points ({'kept' if kept else 'NOT kept'})")
    if not (lowered and kept):
        raise SystemExit(1)


GRID_CLASSES = (TARGET, ANCHOR, 0, 8)      # sneaker, sandal, t-shirt, bag


def grid_row(samples):
    """8 samples of the target's canonical prompt, then 4 each of three other classes."""
    picks = [samples[("canonical", task.prompt(TARGET))][:8]]
    picks += [samples[(f"class_{c}", task.prompt(c))][:4] for c in GRID_CLASSES[1:]]
    return torch.cat(picks)


GRID_LABEL_WIDTH, GRID_CELL = 215, task.SIZE * 3


def save_grid(rows, path):
    from PIL import Image, ImageDraw

    width = GRID_LABEL_WIDTH + GRID_CELL * len(next(iter(rows.values()))) + 3 * 6
    canvas = Image.new("L", (width, 18 + GRID_CELL * len(rows)), 255)
    draw = ImageDraw.Draw(canvas)
    headers = [(GRID_LABEL_WIDTH, "'a photo of a sneaker' (erased)")] + [
        (GRID_LABEL_WIDTH + GRID_CELL * (8 + 4 * i) + 6 * (i + 1), f"'a photo of a {task.CLASSES[c][0]}'")
        for i, c in enumerate(GRID_CLASSES[1:])]
    for x, text in headers:
        draw.text((x + 2, 3), text, fill=0)
    for r, (label, images) in enumerate(rows.items()):
        draw_grid_row(canvas, r, label, images)
    canvas.save(path)


def draw_grid_row(canvas, r, label, images):
    from PIL import Image, ImageDraw

    y = 18 + r * GRID_CELL
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, y, canvas.width - 1, y + GRID_CELL - 1], fill=255)
    draw.text((4, y + GRID_CELL // 3), label, fill=0)
    for i, image in enumerate(((images + 1) * 127.5).round().clamp(0, 255).byte()):
        x = GRID_LABEL_WIDTH + i * GRID_CELL + 6 * ((i >= 8) + (i >= 12) + (i >= 16))
        canvas.paste(Image.fromarray(image[0].numpy()).resize((GRID_CELL, GRID_CELL), Image.NEAREST), (x, y))


def merge_saved(path, results, grid, planned, seeds):
    """The saved table at `path` (its .json and .png) with the rows that `results` ran replaced: returns every
    run in the plan's order, and redraws those rows in the saved grid image."""
    from PIL import Image

    saved = json.loads(path.with_suffix(".json").read_text())
    if saved["seeds"] != seeds:
        raise SystemExit(f"--update: the saved table ran {saved['seeds']} seeds per row; pass --seeds {saved['seeds']}")
    rerun, labels = {r["label"] for r in results}, [run.label for run in planned]
    kept = [r for r in saved["runs"] if r["label"] not in rerun]
    runs = sorted(kept + results, key=lambda r: labels.index(r["label"]))
    shown = ["original model"] + [run.label for run in planned if run.in_grid]
    image = Image.open(path.with_suffix(".png")).convert("L")
    for label in rerun & set(grid):
        draw_grid_row(image, shown.index(label), label, grid[label])
    image.save(path.with_suffix(".png"))
    return runs


def save_traces(results, path, caps):
    """lambda per step for each label in `caps` (label -> lambda's cap), one panel each, a line per seed."""
    from PIL import Image, ImageDraw

    width, height, margin = 360, 200, 36
    canvas = Image.new("RGB", (width * len(caps), height + 24), "white")
    draw = ImageDraw.Draw(canvas)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for panel, (label, cap) in enumerate(caps.items()):
        runs = [r for r in results if r["label"] == label]
        left, top = panel * width + margin, 20
        inner_w, inner_h = width - margin - 10, height - 30
        top_value = cap * 1.1
        def xy(step, value, steps):
            return left + inner_w * step / max(steps - 1, 1), top + inner_h * (1 - value / top_value)
        draw.rectangle([left, top, left + inner_w, top + inner_h], outline="black")
        draw.text((left, 3), f"{label}: lambda per step", fill="black")
        steps = max(len(r["trace"]["lambda"]) for r in runs)
        y_cap = xy(0, cap, steps)[1]
        for x in range(left, left + inner_w, 8):
            draw.line([x, y_cap, x + 4, y_cap], fill="gray")
        draw.text((left + inner_w - 60, y_cap - 12), f"cap {cap:.2f}", fill="gray")
        draw.text((4 + panel * width, top + inner_h - 8), "0", fill="black")
        draw.text((4 + panel * width, y_cap - 6), f"{cap:.2f}", fill="black")
        draw.text((left, top + inner_h + 4), f"step 1 .. {steps}", fill="black")
        for colour, run in zip(colours, runs):
            values = run["trace"]["lambda"]
            draw.line([xy(i, v, len(values)) for i, v in enumerate(values)], fill=colour, width=2)
    canvas.save(path)


def header(probes):
    if GROUPS:
        return ["run", "trained prompt", *GROUPS, "samples go to", "others mean (change)", "others: worst change",
                "FD others", "steps", "s", "peak MiB"]
    return ["run", "target: canonical", "synonyms", "held-out template", *(["probes (mean)"] if probes else []),
            "samples go to", "others mean (change)", "others: worst change", "FD others", "steps", "s", "peak MiB"]


def percent(row, group, value):
    """A share as a percentage, with its spread over seeds where the row has one: 3% (0-6)."""
    spread = row.get("spread", {}).get(group)
    if spread is None or spread["min"] == spread["max"]:
        return f"{value:.0%}"
    return f"{value:.0%} ({spread['min'] * 100:.0f}-{spread['max'] * 100:.0f})"


def points(row, key):
    """A change in points (positive: better than the original), with its spread over seeds."""
    value, spread = -row[key] * 100, row.get("spread", {}).get(key)
    text = f"{round(value, 1) + 0.0:+.1f}"
    if spread is not None and spread["min"] != spread["max"]:
        text += f" ({-spread['max'] * 100:+.1f} to {-spread['min'] * 100:+.1f})"
    return text


def cells(r):
    """One result row's cells of the table."""
    t = r["target_accuracy"]
    goes = ", ".join(f"{k} {v:.0%}" for k, v in sorted(r["goes_to"].items(), key=lambda kv: -kv[1])[:2])
    probes = []
    if GROUPS:   # a run as it comes has its prompts' shares only; a summarised row, its groups' too
        shares = {**group_means(r["probes"]), **t}
        probes = [percent(r, group, shares[group]) for group in GROUPS]
    elif "probes" in r:
        probes = [percent(r, "probes", sum(r["probes"].values()) / len(r["probes"]))]
    others = f"{r['other_accuracy_mean']:.1%}" + (f" ({points(r, 'other_accuracy_drop')})" if "other_accuracy_drop" in r else "")
    worst = points(r, "other_accuracy_worst_drop") if "other_accuracy_worst_drop" in r else ""
    cost = [r.get("steps", ""), f"{r['seconds']:.1f}" if "seconds" in r else "",
            f"{r['peak_memory_bytes'] / 2**20:.0f}" if "peak_memory_bytes" in r else ""]
    fd = f"{r['frechet_distance_others']:.2f}" if "frechet_distance_others" in r else ""
    target = [percent(r, "canonical", t["canonical"])] if GROUPS else [percent(r, g, t[g]) for g in SPREAD]
    return [r["label"], *target, *probes, goes, others, worst, fd, *cost]


if __name__ == "__main__":
    main()
